//! The aux object's programs and maps (lb-ebpf/src/aux.rs): the helper XDP
//! programs of the testbed and the benchmarks. Their names live here like
//! the balancer's (maps.rs) and the decap program's (decap.rs), so the tests
//! and benches (tests/, xtask/benches/) never spell them as literals.

/// XDP_PASS: lets a veth accept XDP_TX frames from its peer.
pub const PASS_PROGRAM: &str = "xlb_pass";
/// The bare MAC-swap XDP_TX floor the benchmarks compare with.
pub const MAC_SWAP_PROGRAM: &str = "xlb_mac_swap";
/// The pps bench's generator: sends each frame that comes back to it out
/// again as `GEN_TEMPLATE_MAP`'s frame, cycling through `GEN_FLOWS` flows,
/// counting in `GEN_COUNT_MAP`; drops them while `GEN_STOP_MAP` is set.
pub const GEN_BOUNCE_PROGRAM: &str = "xlb_gen_bounce";
/// One IPv4 / IPv6 `bpf_fib_lookup` to `FIB_DST_MAP` / `FIB_DST6_MAP`, then
/// the floor's work.
pub const FIB_LOOKUP_PROGRAM: &str = "xlb_fib_lookup";
pub const FIB_LOOKUP6_PROGRAM: &str = "xlb_fib_lookup6";

/// Per-CPU u64: `GEN_BOUNCE_PROGRAM`'s counts, at `GEN_BOUNCED` and
/// `GEN_STOPPED`.
pub const GEN_COUNT_MAP: &str = "XLB_GEN_COUNT";
/// `GEN_COUNT_MAP`'s index of the frames sent back.
pub const GEN_BOUNCED: u32 = 0;
/// `GEN_COUNT_MAP`'s index of the frames dropped with the stop flag set.
pub const GEN_STOPPED: u32 = 1;
/// u32 (index 0): non-zero makes `GEN_BOUNCE_PROGRAM` drop every frame.
pub const GEN_STOP_MAP: &str = "XLB_GEN_STOP";
/// `[u8; GEN_FRAME_LEN]` (index 0): the frame the generator sends.
pub const GEN_TEMPLATE_MAP: &str = "XLB_GEN_TEMPLATE";
/// Per-CPU u64 (index 0): the generator's frame sequence.
pub const GEN_SEQ_MAP: &str = "XLB_GEN_SEQ";
/// Per-CPU u64 (index 0): the sequence the LRU "new flow" programs make
/// keys from.
pub const LRU_SEQ_MAP: &str = "XLB_LRU_SEQ";
/// u32 (index 0): the IPv4 destination `FIB_LOOKUP_PROGRAM` asks about.
pub const FIB_DST_MAP: &str = "XLB_FIB_DST";
/// `[u32; 4]` (index 0): the IPv6 destination `FIB_LOOKUP6_PROGRAM` asks about.
pub const FIB_DST6_MAP: &str = "XLB_FIB_DST6";

/// One candidate for the connection table (xtask/benches/lru_choice.rs): its
/// map and its three programs (insert a new flow; look up a known one;
/// insert the same flow again, on a cache-hot key). The
/// LRU hashes and the set-associative arrays (`SA4`, `SA8`) alike.
#[derive(Clone, Copy, Debug)]
pub struct LruCandidate {
    pub map: &'static str,
    pub new_program: &'static str,
    pub hit_program: &'static str,
    pub renew_program: &'static str,
}

/// One LRU list shared by all CPUs.
pub const LRU_COMMON: LruCandidate = LruCandidate {
    map: "XLB_LRU_COMMON",
    new_program: "xlb_lru_common_new",
    hit_program: "xlb_lru_common_hit",
    renew_program: "xlb_lru_common_renew",
};
/// BPF_F_NO_COMMON_LRU: each CPU evicts from its own list.
pub const LRU_NO_COMMON: LruCandidate = LruCandidate {
    map: "XLB_LRU_NO_COMMON",
    new_program: "xlb_lru_no_common_new",
    hit_program: "xlb_lru_no_common_hit",
    renew_program: "xlb_lru_no_common_renew",
};
/// An LRU per-CPU hash.
pub const LRU_PERCPU: LruCandidate = LruCandidate {
    map: "XLB_LRU_PERCPU",
    new_program: "xlb_lru_percpu_new",
    hit_program: "xlb_lru_percpu_hit",
    renew_program: "xlb_lru_percpu_renew",
};
/// A set-associative table in a plain array, 4 ways a bucket: an array of
/// `CONN_TABLE_SIZE / 4` buckets (lb-ebpf's aux.rs `SaBucket`), claimed with
/// a compare-and-exchange, no kernel LRU.
pub const SA4: LruCandidate = LruCandidate {
    map: "XLB_SA4",
    new_program: "xlb_sa4_new",
    hit_program: "xlb_sa4_hit",
    renew_program: "xlb_sa4_renew",
};
/// The same with 8 ways a bucket.
pub const SA8: LruCandidate = LruCandidate {
    map: "XLB_SA8",
    new_program: "xlb_sa8_new",
    hit_program: "xlb_sa8_hit",
    renew_program: "xlb_sa8_renew",
};
/// Ways a bucket of `SA4` and `SA8`.
pub const SA4_WAYS: u32 = 4;
pub const SA8_WAYS: u32 = 8;
/// u32 at index 0 (`SA4`) and 1 (`SA8`): the table's bucket count − 1 (a
/// power of two less one), written by the bench; 0 puts every flow in
/// bucket 0.
pub const SA_MASK_MAP: &str = "XLB_SA_MASK";
/// Per-CPU u64 at the same indexes as `SA_MASK_MAP`: the inserts a
/// set-associative candidate gave up (its way's compare-and-exchange lost
/// to another CPU, or every way of the bucket held by a writer).
pub const SA_LOST_MAP: &str = "XLB_SA_LOST";
/// A new flow's key and the set-associative tables' hash of it, then the
/// floor's work: the part of the `SA*` rows a table reusing the balancer's
/// flow hash would not pay.
pub const SA_HASH_PROGRAM: &str = "xlb_sa_hash";

/// Every candidate, as the smoke test (tests/bench_programs.rs) runs them.
pub const LRU_CANDIDATES: [LruCandidate; 5] = [LRU_COMMON, LRU_NO_COMMON, LRU_PERCPU, SA4, SA8];

/// Every map the aux object must define.
pub const MAPS: [&str; 14] = [
    GEN_COUNT_MAP,
    GEN_STOP_MAP,
    GEN_TEMPLATE_MAP,
    GEN_SEQ_MAP,
    LRU_SEQ_MAP,
    FIB_DST_MAP,
    FIB_DST6_MAP,
    LRU_COMMON.map,
    LRU_NO_COMMON.map,
    LRU_PERCPU.map,
    SA4.map,
    SA8.map,
    SA_MASK_MAP,
    SA_LOST_MAP,
];

/// Every program the aux object must define.
pub const PROGRAMS: [&str; 21] = [
    PASS_PROGRAM,
    MAC_SWAP_PROGRAM,
    GEN_BOUNCE_PROGRAM,
    FIB_LOOKUP_PROGRAM,
    FIB_LOOKUP6_PROGRAM,
    LRU_COMMON.new_program,
    LRU_COMMON.hit_program,
    LRU_NO_COMMON.new_program,
    LRU_NO_COMMON.hit_program,
    LRU_PERCPU.new_program,
    LRU_PERCPU.hit_program,
    SA4.new_program,
    SA4.hit_program,
    SA8.new_program,
    SA8.hit_program,
    SA_HASH_PROGRAM,
    LRU_COMMON.renew_program,
    LRU_NO_COMMON.renew_program,
    LRU_PERCPU.renew_program,
    SA4.renew_program,
    SA8.renew_program,
];

/// Distinct TCP source ports (flows) the generator cycles through.
pub const GEN_FLOWS: u16 = 1024;
/// First of those source ports.
pub const GEN_FIRST_PORT: u16 = 20000;
/// The generator's frame: Ethernet, IPv4 without options, a TCP ACK with 6
/// bytes of payload (64 bytes on a wire).
pub const GEN_FRAME_LEN: usize = 14 + 20 + 20 + 6;
