//! The `xlb` binary: everything lives in the library (`xlb::cli`).

/// mimalloc: the collector's once-a-second reports are many small short-lived
/// allocations, where glibc's malloc cost more than the detector's logic
/// (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` of mimalloc.h (the bindings name the options on
/// either side of it, 14 and 16, but not it): how long freed memory waits
/// before it is given back to the system.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// The purge delay, in milliseconds: longer than a request at the declared
/// limits takes (a plan or an apply of every VIP, under a second), so that
/// memory a request frees is used again by the same request instead of
/// given back and faulted in afresh a few milliseconds later; the request
/// gives everything back when it ends (`xlb::memory::give_back`).
/// Measured against 10 ms (mimalloc's default), by turns, a plan of every
/// VIP at 1,000 VIPs x 64 backends with a pool each: 8-10% less CPU
/// (docs/BENCHMARKS.md, issue 20, "Twelfth round").
const PURGE_DELAY_MS: std::ffi::c_long = 1000;

/// `mi_option_allow_thp` of mimalloc.h (v3, the one the bindings build;
/// not named by them either): whether its segments may be backed by
/// transparent huge pages.
const MI_OPTION_ALLOW_THP: libmimalloc_sys::mi_option_t = 43;

fn main() -> std::process::ExitCode {
    // Give freed memory back a second after it is freed (mimalloc's
    // default is 10 ms): given back at once, the parse of a large config
    // faulted in again each page it had just freed. A delayed purge runs
    // only when the freeing thread allocates again, so the daemon gives
    // back its pool's and its request's memory when a request ends
    // (`xlb::memory::give_back`); without that it kept a large apply's
    // peak (~300 MB more at 1,000 VIPs x 64 backends) for good.
    // SAFETY: sets one option value of the allocator, before any thread of
    // ours starts; any value is valid for this option.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    // No transparent huge pages for the heap: a 2 MiB page stays resident
    // whole while any of it is in use, and a purge cannot give back part of
    // it. At 1,000 VIPs x 64 backends the daemon held 48 MB more after 100
    // applies with them (AnonHugePages in smaps_rollup), for no measured
    // gain in apply or plan time (docs/BENCHMARKS.md, "Fifth round").
    // SAFETY: as above: one option value, before any thread; 0 is valid.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ALLOW_THP, 0) };
    // The option alone comes too late for the memory mimalloc has already
    // taken: the daemon turns THP off for the whole process when it starts
    // (`xlb::memory::no_huge_pages`). The other commands live for a moment
    // and keep them: a status or a config of tens of MB is faulted in by
    // 2 MiB pages.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    xlb::cli::main()
}
