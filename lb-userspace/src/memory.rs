//! Memory the daemon's threads freed, given back to the system when a
//! large piece of work ends, instead of at once on every free.
//!
//! The allocator (mimalloc, `main.rs`) gives back freed memory
//! `purge_delay` after it is freed, and only when the thread that freed it
//! allocates again. Given back at once (a delay of 0), the parse of a
//! 5.8 MB config faulted in afresh every page it had freed a moment before:
//! half of a plan's parse at 1,000 VIPs x 64 backends was the kernel
//! zeroing pages (docs/BENCHMARKS.md, issue 20, "Seventh round: the plan of
//! every VIP"). With a delay, a thread that then sleeps (a worker of the
//! pool that parsed and built the tables, the request's own thread) would
//! keep what it freed; [`give_back`] is called when such work ends.

/// No transparent huge pages for this process, from now on and for every
/// mapping, those made before included. For the daemon, before it reads
/// its config: the runtime allocates before `main`, so mimalloc started
/// with THP allowed and asked for huge pages on its whole first arena (1
/// GiB reserved), and a 2 MiB page stays resident whole while any of it is
/// in use: 28-41 MB of huge pages were resident after 100 applies, 31-35
/// MB of anonymous RSS (docs/BENCHMARKS.md, "Seventh round: memory").
/// Best effort: an error leaves THP as it was.
pub fn no_huge_pages() {
    // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integers and
    // changes only this process's THP flag.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

/// Give back what this thread and every worker of the rayon pool (which
/// parses configs and builds Maglev tables) freed and hold unused.
pub fn give_back() {
    give_back_here();
    rayon::broadcast(|_| give_back_here());
}

/// Give back what this thread freed and holds unused (a thread that built
/// a status document and now waits for the next).
pub fn give_back_here() {
    // SAFETY: mi_collect only walks and purges the calling thread's own
    // heap (and abandoned segments); any thread may call it at any time.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// Drop `value` on a short-lived thread of its own (inline when no thread
/// can be made): freeing a large structure then costs the caller nothing
/// (at 1,000 VIPs x 64 backends a parsed config or a plan document is
/// ~10 ms of frees).
pub fn drop_aside<T: Send + 'static>(value: T) {
    // A spawn that fails drops its closure, and `value` with it, here.
    let _ = std::thread::Builder::new()
        .name("xlb-drop".into())
        .spawn(move || {
            drop(value);
            // What it freed goes back before the thread ends (its heap
            // would be abandoned with the memory held).
            give_back_here();
        });
}
