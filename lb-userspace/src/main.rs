//! The `xlb` binary: everything lives in the library (`xlb::cli`).

/// mimalloc: the collector's once-a-second reports are many small short-lived
/// allocations, where glibc's malloc cost more than the detector's logic
/// (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    xlb::cli::main()
}
