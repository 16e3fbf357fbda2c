//! Rebuild when bpf-linker changes (a new nightly's LLVM means a new linker).
fn main() {
    if let Ok(path) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
