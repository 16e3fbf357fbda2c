//! What every XDP program of xlb shares (the balancer, src/main.rs; the
//! decap program, src/decap.rs; the aux programs, src/aux.rs): bounds-checked
//! packet access and the header constants (`packet`), and the panic handler
//! and license each eBPF object needs, written once here.
//!
//! lb-dataplane also names this crate as a build dependency, so cargo
//! rebuilds the objects when it changes (as aya-template); the items that
//! only make sense in an eBPF object are compiled for the BPF target only.
#![no_std]

pub mod packet;

/// eBPF code cannot unwind or print; the verifier refuses a program that
/// could reach this loop, so a reachable panic fails at load, not at run.
#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// The license the kernel checks before it lets a program call GPL-only
/// helpers (`bpf_fib_lookup` among them).
#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
#[used]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
