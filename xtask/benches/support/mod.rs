//! What the data-plane benches share: pinning to a CPU, medians, the load
//! average to print beside the figures, the aux object's programs, and the
//! frames they send with the check of the balancer's output (`frames`).
//! Each bench includes this module with `mod support;` (cargo compiles every
//! bench as its own crate), so an item one bench does not use is allowed.
#![allow(
    dead_code,
    reason = "each bench includes this module and uses only part of it"
)]

pub mod frames;
pub mod katran;
pub mod scale;

use std::time::Duration;

use anyhow::Context as _;

/// Pin the calling thread to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> anyhow::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .with_context(|| format!("pinning to CPU {cpu}"))
}

/// CPUs this machine has online.
pub fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub fn median_duration(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The 1-minute load average, to print with the results: the machine is
/// shared, and figures taken under load are upper bounds on time.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// True when this process may load BPF programs; prints why a bench is
/// skipped when not.
pub fn root(bench: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        println!("{bench} bench: skipped (needs root for BPF and namespaces)");
    }
    root
}

/// Load the named XDP program of `ebpf` (it stays owned by `ebpf`).
pub fn load_xdp(ebpf: &mut aya::Ebpf, name: &str) -> anyhow::Result<()> {
    let prog: &mut aya::programs::Xdp = ebpf
        .program_mut(name)
        .with_context(|| format!("no program {name} in the object"))?
        .try_into()?;
    prog.load().with_context(|| format!("loading {name}"))
}

pub fn xdp<'a>(ebpf: &'a aya::Ebpf, name: &str) -> anyhow::Result<&'a aya::programs::Xdp> {
    Ok(ebpf
        .program(name)
        .with_context(|| format!("no program {name} in the object"))?
        .try_into()?)
}

pub fn xdp_mut<'a>(
    ebpf: &'a mut aya::Ebpf,
    name: &str,
) -> anyhow::Result<&'a mut aya::programs::Xdp> {
    Ok(ebpf
        .program_mut(name)
        .with_context(|| format!("no program {name} in the object"))?
        .try_into()?)
}
