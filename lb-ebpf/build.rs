//! Rebuild when bpf-linker changes (a new nightly's LLVM means a new linker),
//! and tell bpf-linker (which generates the code: rustc hands it bitcode)
//! what to generate the balancer for.
fn main() {
    if let Ok(path) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    // The balancer only: loads and stores of u16/u32/u64 at addresses LLVM
    // cannot prove aligned (packet bytes, byte arrays in map values) become
    // one instruction each instead of one per byte plus shifts, and copies
    // of byte arrays words instead of a byte loop: ~25% fewer instructions
    // and ~25% less time per packet (docs/BENCHMARKS.md). x86-64 and arm64
    // kernels allow misaligned packet and map-value access; the verifier
    // still refuses a misaligned *stack* access, which LLVM may then emit
    // for a stack variable of alignment < 8 (it did in the aux programs'
    // LRU keys), so a balancer change that trips on it fails
    // `verifier_accepts_the_balancer` (tests/tests/object.rs).
    println!("cargo:rustc-link-arg-bin=lb-ebpf=--cpu-features=+allows-misaligned-mem-access");
}
