//! The `xlb` binary: everything lives in the library (`xlb::cli`).
fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    xlb::cli::main()
}
