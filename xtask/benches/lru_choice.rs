//! The connection table's LRU flavour, measured: a common LRU hash, an LRU
//! hash with BPF_F_NO_COMMON_LRU, an LRU per-CPU hash, and (issue 16,
//! eighteenth round) a set-associative table in a plain array of 4 or 8
//! ways a bucket, claimed with BPF cmpxchg, no kernel LRU, each with the
//! balancer's key (`FlowWords`), a u32 value (the balancer's `ConnEntry` is 8
//! bytes; the kernel rounds a 4-byte value up to 8, so the entries cost the
//! same) and size (262,144), beside
//! the bare MAC-swap floor. Programs: `xlb_lru_*` in lb-ebpf's aux object.
//!
//! Method: BPF_PROG_TEST_RUN with `REPEAT` runs per call (the kernel reports
//! the mean per run); the programs only swap MACs after their map work, so
//! repeat > 1 is sound. Rows:
//! - new flow: insert a key no run used before, into a table filled first
//!   (the steady state of a busy balancer: every insert evicts);
//! - hit: look up a key that is there;
//! - same flow again: insert one key (per CPU) over and over: the insert on
//!   a cache-hot key, as `dataplane`'s SYN rows measure it.
//!
//! The set-associative rows hash the key with the balancer's `flow_hash`
//! (the LRU hashes it in the kernel with jhash); the row "flow hash only"
//! is that part alone (a new key, its hash, the floor's work).
//! `XLB_LRU_SA_HOT_BUCKETS=<n>` (a power of two) puts every set-associative
//! flow in the first n buckets (the table stays its full size): with few
//! enough, the buckets stay in the cache, which shows the inserts' cost
//! apart from their cache misses (measurement only).
//!
//! Each row runs on one CPU alone, then on every CPU at once (one thread
//! pinned to each, started together): the common LRU's list lock is shared
//! by all CPUs, which is what BPF_F_NO_COMMON_LRU avoids. Rows interleaved,
//! `ROUNDS` rounds, medians.

mod support;

use std::sync::Barrier;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use aya::maps::Map;
use aya::programs::{TestRun, TestRunOptions, Xdp};
use etherparse::PacketBuilder;
use lb_common::{
    aux,
    maps::{BPF_F_NO_COMMON_LRU, CONN_TABLE_SIZE},
};

use support::{median_duration, pin_to_cpu};

const REPEAT: u32 = 100_000;
const ROUNDS: usize = 7;
/// Inserts per CPU before measuring: more than the table holds, so every
/// CPU's part of every table is full and each measured insert evicts.
const FILL_PER_CPU: u32 = CONN_TABLE_SIZE + CONN_TABLE_SIZE / 2;

const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

/// What kind of table a candidate is, with what the kernel must report.
enum Kind {
    /// An LRU hash of `CONN_TABLE_SIZE` entries: per-CPU values or not,
    /// its map flags.
    Lru { per_cpu_values: bool, flags: u32 },
    /// A set-associative array: `CONN_TABLE_SIZE / ways` buckets; its mask
    /// at `mask_index` of `aux::SA_MASK_MAP`.
    SetAssoc { ways: u32, mask_index: u32 },
}

/// A candidate: its label, its map and programs (lb_common::aux), its kind.
struct Candidate {
    label: &'static str,
    names: aux::LruCandidate,
    kind: Kind,
}

impl Candidate {
    /// The map's max_entries: entries for an LRU hash, buckets for a
    /// set-associative array.
    fn max_entries(&self) -> u32 {
        match self.kind {
            Kind::Lru { .. } => CONN_TABLE_SIZE,
            Kind::SetAssoc { ways, .. } => CONN_TABLE_SIZE / ways,
        }
    }
}

const CANDIDATES: [Candidate; 5] = [
    Candidate {
        label: "LRU hash, common LRU list",
        names: aux::LRU_COMMON,
        kind: Kind::Lru {
            per_cpu_values: false,
            flags: 0,
        },
    },
    Candidate {
        label: "LRU hash, BPF_F_NO_COMMON_LRU",
        names: aux::LRU_NO_COMMON,
        kind: Kind::Lru {
            per_cpu_values: false,
            flags: BPF_F_NO_COMMON_LRU,
        },
    },
    Candidate {
        label: "LRU per-CPU hash",
        names: aux::LRU_PERCPU,
        kind: Kind::Lru {
            per_cpu_values: true,
            flags: 0,
        },
    },
    Candidate {
        label: "set-assoc. array, 4 ways",
        names: aux::SA4,
        kind: Kind::SetAssoc {
            ways: aux::SA4_WAYS,
            mask_index: 0,
        },
    },
    Candidate {
        label: "set-assoc. array, 8 ways",
        names: aux::SA8,
        kind: Kind::SetAssoc {
            ways: aux::SA8_WAYS,
            mask_index: 1,
        },
    },
];

const FLOOR: &str = aux::MAC_SWAP_PROGRAM;

/// One measured row: a label and its program.
struct Row {
    label: String,
    program: &'static str,
}

fn rows() -> Vec<Row> {
    let mut rows = vec![Row {
        label: "bare MAC swap, XDP_TX (floor)".into(),
        program: FLOOR,
    }];
    rows.push(Row {
        label: "flow hash only (set-assoc. rows' hash)".into(),
        program: aux::SA_HASH_PROGRAM,
    });
    for c in &CANDIDATES {
        rows.push(Row {
            label: format!("{}: new flow", c.label),
            program: c.names.new_program,
        });
        rows.push(Row {
            label: format!("{}: hit", c.label),
            program: c.names.hit_program,
        });
        rows.push(Row {
            label: format!("{}: same flow again", c.label),
            program: c.names.renew_program,
        });
    }
    rows
}

fn frame() -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([198, 18, 0, 1], [198, 18, 100, 1], 64)
        .tcp(40000, 80, 1, 65535)
        .ack(1)
        .write(&mut out, &[0u8; 6])
        .expect("frame");
    out
}

/// Run `prog` `repeat` times on `frame`; the kernel's mean per run.
fn run(prog: &Xdp, frame: &[u8], repeat: u32) -> anyhow::Result<(u32, Duration)> {
    let mut out = vec![0u8; frame.len() + 256];
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..TestRunOptions::new()
        })
        .context("BPF_PROG_TEST_RUN")?;
    Ok((r.return_value, r.duration))
}

/// Run `prog` on every CPU in `cpus` at once (a thread pinned to each,
/// released together); each CPU's mean per run.
fn run_on_all(
    prog: &Xdp,
    frame: &[u8],
    repeat: u32,
    cpus: usize,
) -> anyhow::Result<Vec<(u32, Duration)>> {
    let start = Barrier::new(cpus);
    std::thread::scope(|s| {
        let threads: Vec<_> = (0..cpus)
            .map(|cpu| {
                let start = &start;
                s.spawn(move || {
                    pin_to_cpu(cpu)?;
                    start.wait();
                    run(prog, frame, repeat)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("bench thread panicked"))
            .collect()
    })
}

/// The map as the kernel made it must be the one the row names.
fn check_map(aux: &aya::Ebpf, c: &Candidate) -> anyhow::Result<()> {
    let (per_cpu_values, flags) = match c.kind {
        Kind::Lru {
            per_cpu_values,
            flags,
        } => (per_cpu_values, flags),
        Kind::SetAssoc { .. } => {
            let info = match aux.map(c.names.map) {
                Some(Map::Array(m)) => m.info()?,
                Some(_) => bail!("map {} has the wrong type", c.names.map),
                None => bail!("no map {} in the aux object", c.names.map),
            };
            ensure!(
                info.max_entries() == c.max_entries(),
                "map {}: {} buckets, expected {}",
                c.names.map,
                info.max_entries(),
                c.max_entries()
            );
            return Ok(());
        }
    };
    let info = match aux.map(c.names.map) {
        Some(Map::LruHashMap(m)) if !per_cpu_values => m.info()?,
        Some(Map::PerCpuLruHashMap(m)) if per_cpu_values => m.info()?,
        Some(_) => bail!("map {} has the wrong type", c.names.map),
        None => bail!("no map {} in the aux object", c.names.map),
    };
    ensure!(
        info.map_flags() == flags,
        "map {}: flags {:#x}, expected {:#x}",
        c.names.map,
        info.map_flags(),
        flags
    );
    // BPF_F_NO_COMMON_LRU rounds the size up to a multiple of the CPUs.
    ensure!(
        info.max_entries() >= CONN_TABLE_SIZE && info.max_entries() < CONN_TABLE_SIZE + 1024,
        "map {}: {} entries, expected {CONN_TABLE_SIZE}",
        c.names.map,
        info.max_entries()
    );
    Ok(())
}

/// The inserts the set-associative candidate at `mask_index` gave up so
/// far, summed over the CPUs.
fn sa_lost(aux: &aya::Ebpf, mask_index: u32) -> anyhow::Result<u64> {
    let lost: aya::maps::PerCpuArray<_, u64> = aya::maps::PerCpuArray::try_from(
        aux.map(aux::SA_LOST_MAP)
            .context("no set-associative lost-insert map")?,
    )?;
    Ok(lost.get(&mask_index, 0)?.iter().sum())
}

/// Each set-associative candidate's inserts given up: after the fill, and
/// since (the measured rounds of the new-flow rows, alone and on every
/// CPU; a hit row's miss files the flow uncounted).
fn print_lost(aux: &aya::Ebpf, after_fill: &[(u32, u64)], cpus: usize) -> anyhow::Result<()> {
    println!(
        "
inserts given up (a way's exchange lost, or every way held by a writer):"
    );
    for c in &CANDIDATES {
        let Kind::SetAssoc { mask_index, .. } = c.kind else {
            continue;
        };
        let filled = after_fill
            .iter()
            .find(|(i, _)| *i == mask_index)
            .map_or(0, |(_, n)| *n);
        let measured = sa_lost(aux, mask_index)? - filled;
        let runs = ROUNDS as u64 * REPEAT as u64 * (1 + if cpus > 1 { cpus as u64 } else { 0 });
        println!(
            "{:<44} fill: {filled} of {}; measured new flows: {measured} of {runs}",
            c.label,
            FILL_PER_CPU as u64 * cpus as u64
        );
    }
    Ok(())
}

/// Each measured program's size as the kernel reports it: instructions the
/// verifier processed, translated (xlated) and JIT-compiled bytes.
fn print_programs(aux: &aya::Ebpf, rows: &[Row]) -> anyhow::Result<()> {
    println!("\nprograms: instructions verified, B xlated, B jited");
    let show = |v: Option<u32>| v.map_or_else(|| "?".to_string(), |v| v.to_string());
    for row in rows {
        let info = support::xdp(aux, row.program)?.info()?;
        println!(
            "{:<44} {:>6} {:>6} {:>6}",
            row.program,
            show(info.verified_instruction_count()),
            show(info.size_translated()),
            info.size_jitted()
        );
    }
    Ok(())
}

fn print_table(title: &str, rows: &[Row], results: &[Vec<Duration>]) {
    let floor = median_duration(results[0].clone());
    println!("\n{title}");
    println!(
        "{:<44} {:>8} {:>11} {:>9}",
        "program / packet", "ns/run", "above floor", "vs floor"
    );
    for (row, r) in rows.iter().zip(results) {
        let m = median_duration(r.clone());
        println!(
            "{:<44} {:>8} {:>11} {:>8.2}x",
            row.label,
            m.as_nanos(),
            m.as_nanos() as i128 - floor.as_nanos() as i128,
            m.as_secs_f64() / floor.as_secs_f64()
        );
    }
}

fn main() -> anyhow::Result<()> {
    if !support::root("lru_choice") {
        return Ok(());
    }
    let cpus = support::online_cpus();
    let mut loader = aya::EbpfLoader::new();
    for c in &CANDIDATES {
        loader.map_max_entries(c.names.map, c.max_entries());
    }
    let mut aux = loader.load(xlb_dataplane::aux_object())?;
    for c in &CANDIDATES {
        check_map(&aux, c)?;
    }
    {
        let mut masks: aya::maps::Array<_, u32> = aya::maps::Array::try_from(
            aux.map_mut(aux::SA_MASK_MAP)
                .context("no set-associative mask map")?,
        )?;
        for c in &CANDIDATES {
            if let Kind::SetAssoc { ways, mask_index } = c.kind {
                let buckets = match std::env::var("XLB_LRU_SA_HOT_BUCKETS") {
                    Ok(n) => n.parse().context("XLB_LRU_SA_HOT_BUCKETS")?,
                    Err(_) => CONN_TABLE_SIZE / ways,
                };
                ensure!(
                    buckets.is_power_of_two() && buckets <= CONN_TABLE_SIZE / ways,
                    "{buckets} buckets"
                );
                println!("{}: {buckets} buckets in use", c.names.map);
                masks.set(mask_index, buckets - 1, 0)?;
            }
        }
    }
    let rows = rows();
    for row in &rows {
        support::load_xdp(&mut aux, row.program)?;
    }
    let frame = frame();

    // Fill every table from every CPU, so each measured insert evicts.
    for c in &CANDIDATES {
        let prog = support::xdp(&aux, c.names.new_program)?;
        for (cpu, (ret, _)) in run_on_all(prog, &frame, FILL_PER_CPU, cpus)?
            .into_iter()
            .enumerate()
        {
            ensure!(
                ret == XDP_TX,
                "{}: filling on CPU {cpu} returned {ret}",
                c.names.new_program
            );
        }
    }

    let mut after_fill = Vec::new();
    for c in &CANDIDATES {
        if let Kind::SetAssoc { mask_index, .. } = c.kind {
            after_fill.push((mask_index, sa_lost(&aux, mask_index)?));
        }
    }

    let check = |row: &Row, ret: u32| -> anyhow::Result<()> {
        match ret {
            XDP_TX => Ok(()),
            XDP_PASS if row.program.ends_with("_hit") => {
                bail!("{}: the last run missed the known flow", row.label)
            }
            other => bail!("{}: returned {other}, expected XDP_TX", row.label),
        }
    };

    pin_to_cpu(0)?;
    let mut alone: Vec<Vec<Duration>> = vec![Vec::new(); rows.len()];
    let mut together: Vec<Vec<Duration>> = vec![Vec::new(); rows.len()];
    for _ in 0..ROUNDS {
        for (i, row) in rows.iter().enumerate() {
            let prog = support::xdp(&aux, row.program)?;
            let (ret, d) = run(prog, &frame, REPEAT)?;
            check(row, ret)?;
            alone[i].push(d);
        }
        if cpus > 1 {
            for (i, row) in rows.iter().enumerate() {
                let prog = support::xdp(&aux, row.program)?;
                let per_cpu = run_on_all(prog, &frame, REPEAT, cpus)?;
                for (ret, _) in &per_cpu {
                    check(row, *ret)?;
                }
                // The mean over CPUs of each CPU's mean per run.
                let sum: Duration = per_cpu.iter().map(|(_, d)| *d).sum();
                together[i].push(sum / cpus as u32);
            }
        }
    }

    println!(
        "connection-table LRU choice: {} entries, key 40 B (FlowWords), value u32 \
         (set-assoc.: u64); \
         BPF_PROG_TEST_RUN repeat {REPEAT}, median of {ROUNDS} interleaved rounds; \
         tables full before measuring (new flows evict); load average {}",
        CONN_TABLE_SIZE,
        support::load_average()
    );
    print_table("one CPU (CPU 0), alone:", &rows, &alone);
    if cpus > 1 {
        print_table(
            &format!("all {cpus} CPUs at once (ns per run on each CPU, mean over CPUs):"),
            &rows,
            &together,
        );
    } else {
        println!("\none CPU online: no concurrent run");
    }
    print_lost(&aux, &after_fill, cpus)?;
    print_programs(&aux, &rows)?;
    Ok(())
}
