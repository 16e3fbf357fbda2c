//! Helper XDP programs for the testbed and the benchmarks; not part of the
//! balancer.
//!
//! - `xlb_pass`: lets a veth accept XDP_TX frames from its peer;
//! - `xlb_mac_swap`: the bare XDP_TX floor benchmarks compare with;
//! - `xlb_gen_bounce`: the generator of the packets-per-second bench
//!   (xtask/benches/veth_pps.rs), which also counts what comes back;
//! - `xlb_lru_*`: the connection-table LRU choice (xtask/benches/lru_choice.rs);
//! - `xlb_sa*`: a set-associative connection table in a plain array, the
//!   candidate without the kernel's LRU hash (the same bench);
//! - `xlb_fib_lookup`, `xlb_fib_lookup6`: the cost of the tunnels' next-hop lookup
//!   (xtask/benches/dataplane.rs).
#![no_std]
#![no_main]
// The BPF target has no compare-and-exchange on `AtomicU64` (it declares no
// CAS), but LLVM's `cmpxchg` lowers to BPF_ATOMIC | BPF_CMPXCHG (with
// bpf-linker's `--cpu generic` and LLVM 22; `bpftool prog dump xlated`
// shows `atomic64_cmpxchg`): the set-associative candidates call the
// intrinsic. The eBPF crates are built with nightly anyway (-Z build-std).
#![expect(internal_features, reason = "core_intrinsics: the BPF cmpxchg")]
#![feature(core_intrinsics)]

use aya_ebpf::{
    bindings::{bpf_fib_lookup, xdp_action},
    btf_maps::{Array, LruHashMap, LruPerCpuHashMap, PerCpuArray},
    helpers::{
        bpf_fib_lookup as fib_lookup, bpf_get_smp_processor_id, bpf_jiffies64, bpf_xdp_adjust_head,
    },
    macros::{btf_map, xdp},
    programs::XdpContext,
};
use lb_common::{
    aux::{GEN_BOUNCED, GEN_FIRST_PORT, GEN_FLOWS, GEN_FRAME_LEN, GEN_STOPPED},
    hash::{FlowWords, flow_hash},
    maps::BPF_F_NO_COMMON_LRU,
};
// The panic handler and the license (lb-ebpf's lib.rs), and the frame's
// bounds read as the balancer reads them (again after an adjust_head). The
// floor keeps its own two-line bounds check rather than packet::ptr_at, so
// its code, which every bench row is measured against, stays what the
// recorded figures used.
use lb_ebpf::packet::bounds;

use core::intrinsics::{AtomicOrdering, atomic_cxchg};

/// Lets a veth accept frames its peer sends with XDP_TX (see TESTBED.md).
#[xdp]
pub fn xlb_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Swap the Ethernet addresses in place; false when the frame is too short.
#[inline(always)]
fn swap_macs(ctx: &XdpContext) -> bool {
    let start = ctx.data();
    if start + 12 > ctx.data_end() {
        return false;
    }
    let eth = start as *mut [u8; 12];
    // SAFETY: the 12 bytes are inside the packet (checked above).
    unsafe {
        let old = *eth;
        let mut swapped = [0u8; 12];
        swapped[..6].copy_from_slice(&old[6..]);
        swapped[6..].copy_from_slice(&old[..6]);
        *eth = swapped;
    }
    true
}

/// The floor: swap the Ethernet addresses and send the frame back.
#[xdp]
pub fn xlb_mac_swap(ctx: XdpContext) -> u32 {
    floor(&ctx)
}

/// What the floor does: the MAC swap and XDP_TX (XDP_PASS for a frame too
/// short); the candidates' programs end with it after their map work.
#[inline(always)]
fn floor(ctx: &XdpContext) -> u32 {
    if swap_macs(ctx) {
        xdp_action::XDP_TX
    } else {
        xdp_action::XDP_PASS
    }
}

/// Ethernet + IPv4 without options: where the generator's TCP header starts.
const GEN_TCP_OFFSET: usize = 14 + 20;

/// The frame the generator sends, written by the bench (index 0). Copied
/// over every frame before it goes out again: the program under test has
/// rewritten it (a MAC swap, or an encapsulation that moved the headers up
/// and wrote its own).
#[btf_map]
pub static XLB_GEN_TEMPLATE: Array<[u8; GEN_FRAME_LEN], 1> = Array::new();

/// Per-CPU frame sequence of the generator (index 0).
#[btf_map]
pub static XLB_GEN_SEQ: PerCpuArray<u64, 1> = PerCpuArray::new();

/// The generator's stop flag (index 0), set by the bench: while non-zero,
/// `xlb_gen_bounce` drops every frame, so the frames in flight die out.
#[btf_map]
pub static XLB_GEN_STOP: Array<u32, 1> = Array::new();

/// Per-CPU counts of `xlb_gen_bounce`: index 0 the frames it sent back
/// (what the program under test delivered), index 1 those it dropped
/// because the stop flag was set (the frames still in flight then).
#[btf_map]
pub static XLB_GEN_COUNT: PerCpuArray<u64, 2> = PerCpuArray::new();

/// RFC 1624 incremental update of an Internet checksum when one 16-bit word
/// changes from `old` to `new` (all in network byte order as read).
#[inline(always)]
fn csum_replace(csum: u16, old: u16, new: u16) -> u16 {
    let mut sum = (!csum as u32) + (!old as u32 & 0xffff) + new as u32;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Add one to this CPU's count at `index` of `XLB_GEN_COUNT`.
#[inline(always)]
fn gen_count(index: u32) {
    if let Some(n) = XLB_GEN_COUNT.get_ptr_mut(index) {
        // SAFETY: this CPU's slot; XDP is not preempted by XDP on one CPU.
        unsafe { *n += 1 };
    }
}

/// The pps bench's generator, natively attached to the generator's veth:
/// each frame the program under test sent back (XDP_TX on the peer) is
/// counted, made `GEN_FRAME_LEN` bytes long again with
/// `bpf_xdp_adjust_head` (whatever an encapsulation added in front, so the
/// headroom it took is given back), overwritten with the template frame
/// (`XLB_GEN_TEMPLATE`: an IPv4 TCP ACK, no IP options), given the next of
/// `GEN_FLOWS` source ports with its TCP checksum kept valid, and sent back
/// to the peer with XDP_TX. So the frames the bench injected once circulate
/// between the two programs, and the program under test sees many flows,
/// like production, at a rate no socket reaches here. With the stop flag
/// set (`XLB_GEN_STOP`) it counts and drops every frame instead.
#[xdp]
pub fn xlb_gen_bounce(ctx: XdpContext) -> u32 {
    if XLB_GEN_STOP.get(0).is_none_or(|stop| *stop != 0) {
        gen_count(GEN_STOPPED);
        return xdp_action::XDP_DROP;
    }
    let (start, end) = bounds(&ctx);
    if start + GEN_FRAME_LEN != end {
        // Positive: shrink from the front (an encapsulation's headers).
        let delta = end as i64 - start as i64 - GEN_FRAME_LEN as i64;
        // SAFETY: the helper moves the frame's start within its buffer or
        // fails; nothing derived from the old start is used after it.
        if unsafe { bpf_xdp_adjust_head(ctx.ctx, delta as i32) } != 0 {
            return xdp_action::XDP_ABORTED;
        }
    }
    // Read again (volatile): the helper moved the start.
    let (start, end) = bounds(&ctx);
    if start + GEN_FRAME_LEN > end {
        return xdp_action::XDP_ABORTED;
    }
    // No template written (EtherType 0): the bench forgot; say so loudly.
    let Some(template) = XLB_GEN_TEMPLATE.get(0).filter(|t| t[12] != 0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: the frame holds GEN_FRAME_LEN bytes (checked above).
    unsafe { *(start as *mut [u8; GEN_FRAME_LEN]) = *template };
    let Some(seq) = XLB_GEN_SEQ.get_ptr_mut(0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: this CPU's slot; XDP is not preempted by XDP on one CPU.
    let n = unsafe {
        *seq += 1;
        *seq
    };
    let port = (GEN_FIRST_PORT + (n % GEN_FLOWS as u64) as u16).to_be();
    let tcp = (start + GEN_TCP_OFFSET) as *mut u16;
    // SAFETY: the 20-byte TCP header is inside the frame (checked above);
    // word 0 is the source port, word 8 the checksum.
    unsafe {
        let old = *tcp;
        *tcp.add(8) = csum_replace(*tcp.add(8), old, port);
        *tcp = port;
    }
    gen_count(GEN_BOUNCED);
    xdp_action::XDP_TX
}

/// Entries the LRU maps below are declared with. The bench sets the real
/// size (the balancer's, `lb_common::maps::CONN_TABLE_SIZE`) at load with
/// `EbpfLoader::map_max_entries`, so the tests that load this object for
/// `xlb_pass` do not preallocate ~100 MB of tables they never use.
const LRU_DECLARED_SIZE: usize = 1024;

/// The three candidates for the balancer's connection table, with its key and
/// value (flow -> backend id):
/// one LRU list shared by all CPUs (the balancer's choice before the bench);
#[btf_map]
pub static XLB_LRU_COMMON: LruHashMap<FlowWords, u32, LRU_DECLARED_SIZE> = LruHashMap::new();
/// one shared table, each CPU evicting from its own list;
#[btf_map]
pub static XLB_LRU_NO_COMMON: LruHashMap<
    FlowWords,
    u32,
    LRU_DECLARED_SIZE,
    { BPF_F_NO_COMMON_LRU as usize },
> = LruHashMap::new();
/// shared keys, a value per CPU (a packet on another CPU sees that CPU's
/// empty value).
#[btf_map]
pub static XLB_LRU_PERCPU: LruPerCpuHashMap<FlowWords, u32, LRU_DECLARED_SIZE> =
    LruPerCpuHashMap::new();

/// Per-CPU sequence the "new flow" programs make keys from (index 0).
#[btf_map]
pub static XLB_LRU_SEQ: PerCpuArray<u64, 1> = PerCpuArray::new();

/// Marks the first key word: new-flow keys and the known key never collide.
const NEW_FLOW_MARK: u32 = 0x4e45_5700;
const KNOWN_FLOW_MARK: u32 = 0x4b4e_4f00;
const RENEW_FLOW_MARK: u32 = 0x524e_5700;

#[inline(always)]
fn this_cpu() -> u32 {
    // SAFETY: a BPF helper without arguments; it only reads the CPU id.
    unsafe { bpf_get_smp_processor_id() }
}

/// A flow key no earlier run used: this CPU's next sequence number, and the
/// CPU, so two CPUs running at once never make the same key.
#[inline(always)]
fn new_flow_key() -> Option<FlowWords> {
    let seq = XLB_LRU_SEQ.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot; XDP is not preempted by XDP on one CPU.
    let n = unsafe {
        *seq += 1;
        *seq
    };
    Some(FlowWords {
        src: [NEW_FLOW_MARK, this_cpu(), n as u32, (n >> 32) as u32],
        dst: [0x0164_12c6, 0, 0, 0],
        ports: 0x5000_409c,
        proto: 6,
    })
}

/// The one flow the "hit" programs look up: one per CPU, as each CPU of a
/// real balancer serves its own flows.
#[inline(always)]
fn known_flow_key() -> FlowWords {
    FlowWords {
        src: [KNOWN_FLOW_MARK, this_cpu(), 0, 0],
        dst: [0x0164_12c6, 0, 0, 0],
        ports: 0x5000_409c,
        proto: 6,
    }
}

/// The one flow the "renew" programs file again and again, one per CPU.
#[inline(always)]
fn renew_flow_key() -> FlowWords {
    FlowWords {
        src: [RENEW_FLOW_MARK, this_cpu(), 0, 0],
        ..known_flow_key()
    }
}

/// For each candidate map, three programs that do the map work of one packet
/// and then what the floor does (MAC swap, XDP_TX), so their time above the
/// floor is the map's:
/// - `new`: insert a flow never seen (a full table evicts its oldest entry);
/// - `hit`: look up a flow that is there. A miss (only the first run, or
///   after other programs' inserts evicted the flow) inserts it and returns
///   XDP_PASS, so a bench sees a last run that missed;
/// - `renew`: insert the same flow again (one per CPU): the insert on a
///   cache-hot key, as the `dataplane` bench's SYN rows measure it (they
///   delete the flow before each run; an LRU hash's update of a present key
///   takes a free node and frees the old one, the same path).
macro_rules! lru_programs {
    ($map:ident, $new:ident, $hit:ident, $renew:ident) => {
        #[xdp]
        pub fn $renew(ctx: XdpContext) -> u32 {
            if $map.insert(&renew_flow_key(), &1, 0).is_err() {
                return xdp_action::XDP_DROP;
            }
            floor(&ctx)
        }

        #[xdp]
        pub fn $new(ctx: XdpContext) -> u32 {
            let Some(key) = new_flow_key() else {
                return xdp_action::XDP_ABORTED;
            };
            if $map.insert(&key, &1, 0).is_err() {
                return xdp_action::XDP_DROP;
            }
            floor(&ctx)
        }

        #[xdp]
        pub fn $hit(ctx: XdpContext) -> u32 {
            let key = known_flow_key();
            if $map.get_ptr(&key).is_none() {
                let _ = $map.insert(&key, &1, 0);
                return xdp_action::XDP_PASS;
            }
            floor(&ctx)
        }
    };
}

lru_programs!(
    XLB_LRU_COMMON,
    xlb_lru_common_new,
    xlb_lru_common_hit,
    xlb_lru_common_renew
);
lru_programs!(
    XLB_LRU_NO_COMMON,
    xlb_lru_no_common_new,
    xlb_lru_no_common_hit,
    xlb_lru_no_common_renew
);
lru_programs!(
    XLB_LRU_PERCPU,
    xlb_lru_percpu_new,
    xlb_lru_percpu_hit,
    xlb_lru_percpu_renew
);

/// A set-associative connection table in a plain array map: the candidate
/// that does not go through the kernel's LRU hash. One array element is a
/// bucket of `W` ways; a flow lives in the bucket its hash names, in any
/// way. The bucket keeps its ways' control words and hash tags together in
/// front (one cache line for 4 ways), so a lookup reads the keys only on a
/// tag match.
///
/// A way's control word (`words[i]`): the low 32 bits a sequence number,
/// odd while a writer owns the way, even when key and value are whole; the
/// high 32 bits the way's age stamp (the low 32 bits of `jiffies_64` when
/// it was written or last refreshed). 0: never written (free).
/// - insert: scan the ways for the key (update in place), a free way, or
///   the oldest way that no writer holds; claim it with one compare-and-
///   exchange of its control word (seq + 1, odd), write tag, key and value,
///   then store the word (seq + 2, even, the new stamp). A failed exchange
///   (another CPU claimed or refreshed the way since the scan) gives up:
///   the flow is not filed, as when the LRU insert fails.
/// - lookup: for each way with an even, non-zero word and the key's tag,
///   compare the key, read the value, read the word again: the same word
///   means no writer touched the way in between (a seqlock read); another
///   word is a miss. A hit whose stamp is more than `SA_REFRESH_JIFFIES`
///   old is refreshed with a compare-and-exchange of the word (same seq,
///   new stamp), so a busy flow is not the oldest of its bucket.
///
/// Ordering: the word's exchange is a full barrier; the plain stores and
/// loads around it are kept in program order by making every access to a
/// way volatile (LLVM's BPF backend cannot select a compiler fence), which
/// on x86 (TSO: no store-store or load-load reordering) makes them the
/// seqlock's order. A weaker CPU (arm64) would need the BPF load-acquire /
/// store-release instructions there.
///
/// Not handled (a prototype): a way being written is skipped by the scan,
/// so two CPUs filing the same new flow at once may file it twice (a
/// lookup finds the first); a torn read is a miss, not retried.
#[repr(C)]
pub struct SaBucket<const W: usize> {
    words: [u64; W],
    tags: [u32; W],
    keys: [FlowWords; W],
    values: [u64; W],
}

const _: () = assert!(core::mem::size_of::<SaBucket<4>>() == 240);
const _: () = assert!(core::mem::size_of::<SaBucket<8>>() == 480);

/// Buckets the set-associative tables are declared with; the bench sets the
/// real count (`CONN_TABLE_SIZE / W`) at load, as for the LRU maps.
const SA_DECLARED_BUCKETS: usize = 64;

/// 4 ways a bucket.
#[btf_map]
pub static XLB_SA4: Array<SaBucket<4>, SA_DECLARED_BUCKETS> = Array::new();
/// 8 ways a bucket.
#[btf_map]
pub static XLB_SA8: Array<SaBucket<8>, SA_DECLARED_BUCKETS> = Array::new();

/// The bucket masks (bucket count − 1) of `XLB_SA4` (index 0) and `XLB_SA8`
/// (index 1), written by the bench. 0 (not written: the tests) puts every
/// flow in bucket 0. A real table would have its size as a constant; an
/// array lookup of a constant index is inlined by the verifier.
#[btf_map]
pub static XLB_SA_MASK: Array<u32, 2> = Array::new();

/// Per-CPU count of the inserts each set-associative candidate gave up
/// (`XLB_SA4` at index 0, `XLB_SA8` at 1): the way's exchange lost to
/// another CPU's, or every way held by a writer. Such a flow is not filed;
/// its packet is still sent (as the balancer sends a flow whose insert
/// failed).
#[btf_map]
pub static XLB_SA_LOST: PerCpuArray<u64, 2> = PerCpuArray::new();

/// A hit refreshes its way's stamp when it is older than this (jiffies:
/// 0.1-1 s, 0.4 s at HZ 250), so a hit writes the shared line at most that often.
const SA_REFRESH_JIFFIES: u32 = 100;

/// The seed the set-associative candidates hash the key with.
const SA_SEED: u32 = 0x5a5a_0001;

/// This CPU's jiffies, low 32 bits: the ways' stamps.
#[inline(always)]
fn sa_now() -> u32 {
    // SAFETY: a BPF helper without arguments; the verifier inlines it as a
    // load of `jiffies_64`.
    unsafe { bpf_jiffies64() as u32 }
}

/// The flow's bucket in `map` (mask at `mask_index`) and its hash.
#[inline(always)]
fn sa_bucket<const W: usize>(
    map: &Array<SaBucket<W>, SA_DECLARED_BUCKETS>,
    mask_index: u32,
    key: &FlowWords,
) -> Option<(*mut SaBucket<W>, u32)> {
    let mask = *XLB_SA_MASK.get(mask_index)?;
    let hash = flow_hash(key, SA_SEED);
    Some((map.get_ptr_mut(hash & mask)?, hash))
}

/// Compare-and-exchange of a control word.
/// SAFETY: `word` points into a map value (8-byte aligned).
#[inline(always)]
unsafe fn sa_cmpxchg(word: *mut u64, old: u64, new: u64) -> bool {
    // SAFETY: as the caller promises.
    unsafe {
        atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(word, old, new)
    }
    .1
}

/// Find `key` in bucket `b`: its value.
/// SAFETY: `b` points to a bucket of a live array map.
#[inline(always)]
unsafe fn sa_lookup<const W: usize>(b: *mut SaBucket<W>, key: &FlowWords, tag: u32) -> Option<u64> {
    let now = sa_now();
    for i in 0..W {
        // SAFETY: (all of the block) fields of the bucket `b` points to.
        unsafe {
            let w1 = core::ptr::read_volatile(&raw const (*b).words[i]);
            if w1 & 1 != 0 || w1 == 0 || core::ptr::read_volatile(&raw const (*b).tags[i]) != tag {
                continue;
            }
            if core::ptr::read_volatile(&raw const (*b).keys[i]) != *key {
                continue;
            }
            let value = core::ptr::read_volatile(&raw const (*b).values[i]);
            let w2 = core::ptr::read_volatile(&raw const (*b).words[i]);
            if w1 != w2 {
                // A writer came in between: what was read may be torn.
                return None;
            }
            let stamp = (w1 >> 32) as u32;
            if now.wrapping_sub(stamp) > SA_REFRESH_JIFFIES {
                // A refresh that loses to a writer is left: the way is
                // that writer's now.
                let _ = sa_cmpxchg(
                    &raw mut (*b).words[i],
                    w1,
                    (now as u64) << 32 | (w1 & 0xffff_ffff),
                );
            }
            return Some(value);
        }
    }
    None
}

/// File `key` -> `value` in bucket `b`: in the key's way if it is there,
/// else a free way, else the oldest way no writer holds.
/// SAFETY: `b` points to a bucket of a live array map.
#[inline(always)]
unsafe fn sa_insert<const W: usize>(
    b: *mut SaBucket<W>,
    key: &FlowWords,
    tag: u32,
    value: u64,
) -> Result<(), ()> {
    let now = sa_now();
    let mut victim = W;
    let mut victim_word = 0u64;
    let mut oldest = 0u32;
    for i in 0..W {
        // SAFETY: (all of the block) fields of the bucket `b` points to.
        unsafe {
            let w = core::ptr::read_volatile(&raw const (*b).words[i]);
            if w & 1 != 0 {
                continue;
            }
            if w == 0 {
                victim = i;
                victim_word = 0;
                break;
            }
            if core::ptr::read_volatile(&raw const (*b).tags[i]) == tag
                && core::ptr::read_volatile(&raw const (*b).keys[i]) == *key
            {
                victim = i;
                victim_word = w;
                break;
            }
            let age = now.wrapping_sub((w >> 32) as u32);
            if victim == W || age > oldest {
                victim = i;
                victim_word = w;
                oldest = age;
            }
        }
    }
    // Unrolled: each way's writes at constant offsets, for the verifier.
    for i in 0..W {
        if i != victim {
            continue;
        }
        // SAFETY: (all of the block) fields of the bucket `b` points to.
        unsafe {
            let word = &raw mut (*b).words[i];
            let seq = victim_word as u32;
            let claimed = (victim_word & !0xffff_ffff) | seq.wrapping_add(1) as u64;
            if !sa_cmpxchg(word, victim_word, claimed) {
                return Err(());
            }
            core::ptr::write_volatile(&raw mut (*b).tags[i], tag);
            core::ptr::write_volatile(&raw mut (*b).keys[i], *key);
            core::ptr::write_volatile(&raw mut (*b).values[i], value);
            core::ptr::write_volatile(word, (now as u64) << 32 | seq.wrapping_add(2) as u64);
        }
        return Ok(());
    }
    // Every way held by a writer.
    Err(())
}

/// The set-associative candidates' programs, as `lru_programs!`'s: `new`
/// files a flow never seen (a full bucket gives up its oldest way; an
/// insert given up is counted in `XLB_SA_LOST` and the frame still sent),
/// `hit` finds the known flow (a miss files it and returns XDP_PASS),
/// `renew` files the same flow again (XDP_DROP when given up).
macro_rules! sa_programs {
    ($map:ident, $mask_index:expr, $new:ident, $hit:ident, $renew:ident) => {
        #[xdp]
        pub fn $renew(ctx: XdpContext) -> u32 {
            let key = renew_flow_key();
            let Some((b, tag)) = sa_bucket(&$map, $mask_index, &key) else {
                return xdp_action::XDP_ABORTED;
            };
            // SAFETY: `b` is a bucket of the map (sa_bucket).
            if unsafe { sa_insert(b, &key, tag, 1) }.is_err() {
                return xdp_action::XDP_DROP;
            }
            floor(&ctx)
        }

        #[xdp]
        pub fn $new(ctx: XdpContext) -> u32 {
            let Some(key) = new_flow_key() else {
                return xdp_action::XDP_ABORTED;
            };
            let Some((b, tag)) = sa_bucket(&$map, $mask_index, &key) else {
                return xdp_action::XDP_ABORTED;
            };
            // SAFETY: `b` is a bucket of the map (sa_bucket).
            if unsafe { sa_insert(b, &key, tag, 1) }.is_err()
                && let Some(lost) = XLB_SA_LOST.get_ptr_mut($mask_index)
            {
                // SAFETY: this CPU's slot; XDP is not preempted by XDP.
                unsafe { *lost += 1 };
            }
            floor(&ctx)
        }

        #[xdp]
        pub fn $hit(ctx: XdpContext) -> u32 {
            let key = known_flow_key();
            let Some((b, tag)) = sa_bucket(&$map, $mask_index, &key) else {
                return xdp_action::XDP_ABORTED;
            };
            // SAFETY: `b` is a bucket of the map (sa_bucket).
            if unsafe { sa_lookup(b, &key, tag) }.is_none() {
                // SAFETY: as above.
                let _ = unsafe { sa_insert(b, &key, tag, 1) };
                return xdp_action::XDP_PASS;
            }
            floor(&ctx)
        }
    };
}

sa_programs!(XLB_SA4, 0, xlb_sa4_new, xlb_sa4_hit, xlb_sa4_renew);
sa_programs!(XLB_SA8, 1, xlb_sa8_new, xlb_sa8_hit, xlb_sa8_renew);

/// The set-associative rows' hash alone: a new flow's key and its
/// `flow_hash`, then the floor's work. The balancer hashes every flow for
/// Maglev already; a table that reused that hash would not pay this again.
#[xdp]
pub fn xlb_sa_hash(ctx: XdpContext) -> u32 {
    let Some(key) = new_flow_key() else {
        return xdp_action::XDP_ABORTED;
    };
    if flow_hash(&key, SA_SEED) == 0x5a5a_5a5a {
        return xdp_action::XDP_PASS;
    }
    floor(&ctx)
}

/// The IPv4 address `xlb_fib_lookup` asks the FIB about (network order, as
/// read from the address's bytes), written by the bench (index 0).
#[btf_map]
pub static XLB_FIB_DST: Array<u32, 1> = Array::new();
/// The IPv6 address `xlb_fib_lookup6` asks about, likewise.
#[btf_map]
pub static XLB_FIB_DST6: Array<[u32; 4], 1> = Array::new();

/// One `bpf_fib_lookup`, as the balancer's tunnels make one for each packet
/// (forward.rs `route`): IPv4 to `XLB_FIB_DST` from the interface the frame
/// came in on, then what the floor does. Its time above the floor is the
/// lookup's. XDP_TX when the FIB named a next hop, XDP_DROP when not.
#[xdp]
pub fn xlb_fib_lookup(ctx: XdpContext) -> u32 {
    let Some(dst) = XLB_FIB_DST.get(0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: plain old data; all-zero is its "no options" value.
    let mut f: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    f.family = 2; // AF_INET
    f.__bindgen_anon_4.ipv4_dst = *dst;
    fib_then_swap(&ctx, &mut f)
}

/// `xlb_fib_lookup` for IPv6, to `XLB_FIB_DST6`.
#[xdp]
pub fn xlb_fib_lookup6(ctx: XdpContext) -> u32 {
    let Some(dst) = XLB_FIB_DST6.get(0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: plain old data; all-zero is its "no options" value.
    let mut f: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    f.family = 10; // AF_INET6
    f.__bindgen_anon_4.ipv6_dst = *dst;
    fib_then_swap(&ctx, &mut f)
}

/// Look `f` up from the ingress interface; swap the MACs and XDP_TX when
/// the FIB named a next hop, XDP_DROP when not.
#[inline(always)]
fn fib_then_swap(ctx: &XdpContext, f: &mut bpf_fib_lookup) -> u32 {
    // SAFETY: ctx.ctx is the kernel's xdp_md, valid for the whole run.
    f.ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    // SAFETY: `f` is a whole bpf_fib_lookup and the size passed is its size.
    let ret = unsafe {
        fib_lookup(
            ctx.ctx.cast(),
            f as *mut bpf_fib_lookup,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    if ret != 0 {
        return xdp_action::XDP_DROP;
    }
    floor(ctx)
}
