//! Staging validation (`xlb simulate`): a config's traffic split as the REAL
//! compiled XDP program makes it, before the config goes anywhere near an
//! interface.
//!
//! The balancer object is loaded into the kernel but never attached (its maps
//! are private to this process), filled from the config exactly as the
//! daemon fills its own, and fed frames with BPF_PROG_TEST_RUN: synthetic
//! connection openings (`flows` distinct random clients per VIP) or the
//! frames of a pcap capture. The split is read back from the program's own
//! per-backend counters (new flows: connection-table misses), not computed
//! in userspace, so a bug anywhere between the config and the kernel's
//! choice (Maglev build, id translation, map layout, flow hash, parser)
//! shows as a skew against the weights.

mod error;
mod flows;
mod pcap;
mod report;

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use aya::programs::{TestRun, TestRunOptions};
use lb_common::stats::XDP_PASS;

use crate::Dataplane;
use xlb_core::config::{BackendState, Config};
use xlb_core::state::{self, Allocation, DesiredVip};

pub use error::StagingError;
pub use flows::{SIM_IFACE_MAC, SIM_ROUTER_MAC, vip_flows, write_frame};
pub use pcap::PcapReader;
pub use report::{
    Judgement, SIGNIFICANCE_SIGMAS, SimBackend, SimReport, SimVip, beyond, judge, significant,
};

/// Version of the JSON document (`-o json`).
pub const SCHEMA_VERSION: u32 = 1;
/// Synthetic flows per VIP when not told otherwise: well under a point of
/// noise on a share (binomial sd 0.14 points at a 25% share), about a
/// second per VIP in a debug build and half that in release.
pub const DEFAULT_FLOWS: usize = 100_000;
/// The most synthetic flows per VIP: the duplicate check keeps a key per flow.
pub const MAX_FLOWS: usize = 10_000_000;
/// The seed of the synthetic flows when not told otherwise: the same config
/// simulates the same way every time.
pub const DEFAULT_SEED: u64 = 1;
/// Frames shorter than an Ethernet header: BPF_PROG_TEST_RUN refuses them,
/// and no driver would hand one to XDP.
const MIN_FRAME_LEN: usize = 14;
/// The linear part of a test-run frame on 4 KiB pages: a page less the XDP
/// headroom (256) and the skb_shared_info tailroom (320). The kernel puts
/// the rest of a longer frame in fragments the program does not see (its
/// byte counters count `data_end - data`), and refuses a frame past 17 of
/// them (ENOMEM); captures hold such frames (GRO/TSO aggregates, jumbo
/// frames), so they are cut to this length, which changes nothing the
/// program sees.
const MAX_FRAME_LEN: usize = 4096 - 256 - 320;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimulateOptions {
    /// Synthetic flows per VIP (ignored with `pcap`).
    pub flows: usize,
    /// Seed of the synthetic flows.
    pub seed: u64,
    /// Replay this classic pcap capture (Ethernet) instead.
    pub pcap: Option<PathBuf>,
}

impl Default for SimulateOptions {
    fn default() -> Self {
        Self {
            flows: DEFAULT_FLOWS,
            seed: DEFAULT_SEED,
            pcap: None,
        }
    }
}

/// Every VIP's synthetic flows as frames, by VIP name, in the order
/// `simulate` runs them: what a test needs to replay the same traffic
/// elsewhere. Holds them all in memory, which `simulate` does not.
pub fn synthetic_frames(config: &Config, opts: &SimulateOptions) -> Vec<(String, Vec<Vec<u8>>)> {
    config
        .vips
        .iter()
        .map(|vip| {
            let frames = vip_flows(config, vip, opts.flows, opts.seed)
                .iter()
                .map(|f| {
                    let mut buf = Vec::new();
                    write_frame(f, &mut buf);
                    buf
                })
                .collect();
            (vip.name.clone(), frames)
        })
        .collect()
}

/// Run `config`'s traffic through the real XDP program and report each
/// VIP's split. Needs CAP_BPF (loads a program; attaches nothing).
pub fn simulate(config: &Config, opts: &SimulateOptions) -> Result<SimReport, StagingError> {
    if opts.pcap.is_none() && !(1..=MAX_FLOWS).contains(&opts.flows) {
        return Err(StagingError::Options(format!(
            "flows: {} is not between 1 and {MAX_FLOWS}",
            opts.flows
        )));
    }
    let desired = state::desired(config, &Allocation::default())?;
    // Open the capture first: a wrong path or format is bad input, worth
    // saying before (and without) loading anything into the kernel.
    let capture = match &opts.pcap {
        Some(path) => Some(open_pcap(path)?),
        None => None,
    };
    let mut dp = Dataplane::load().map_err(StagingError::Load)?;
    dp.apply(SIM_IFACE_MAC, &desired, None)
        .map_err(StagingError::Apply)?;
    let (packets, unmatched_packets) = match capture {
        Some(reader) => replay_pcap(&dp, reader)?,
        None => run_synthetic(&dp, config, opts)?,
    };
    let vips = desired
        .vips
        .iter()
        .map(|v| vip_report(&dp, v))
        .collect::<Result<_, _>>()?;
    Ok(SimReport {
        schema_version: SCHEMA_VERSION,
        vips,
        packets,
        unmatched_packets,
    })
}

/// Run one frame; its XDP action.
fn run_frame(dp: &Dataplane, frame: &[u8], what: impl Fn() -> String) -> Result<u32, StagingError> {
    // No data_out: the rewritten frame is of no interest here, the counters
    // say where it went.
    let opts = TestRunOptions {
        data_in: Some(frame),
        repeat: 1,
        ..TestRunOptions::new()
    };
    match dp.program().test_run(opts) {
        Ok(r) => Ok(r.return_value),
        Err(source) => Err(StagingError::Run {
            what: what(),
            source,
        }),
    }
}

/// Each VIP's synthetic flows, one VIP at a time (only one VIP's flows are in
/// memory at once). Returns (packets, packets passed).
fn run_synthetic(
    dp: &Dataplane,
    config: &Config,
    opts: &SimulateOptions,
) -> Result<(u64, u64), StagingError> {
    let (mut packets, mut passed) = (0, 0);
    let mut buf = Vec::new();
    for vip in &config.vips {
        for (i, flow) in vip_flows(config, vip, opts.flows, opts.seed)
            .iter()
            .enumerate()
        {
            write_frame(flow, &mut buf);
            let what = || format!("synthetic flow {i} of vip {}", vip.name);
            passed += u64::from(run_frame(dp, &buf, what)? == XDP_PASS);
            packets += 1;
        }
    }
    Ok((packets, passed))
}

type Capture = PcapReader<BufReader<File>>;

/// `path` opened, its pcap header read and checked.
fn open_pcap(path: &Path) -> Result<Capture, StagingError> {
    let file = File::open(path).map_err(|source| StagingError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    PcapReader::new(BufReader::new(file), path)
}

/// Every frame of a capture, in order. Returns (packets, packets passed).
fn replay_pcap(dp: &Dataplane, mut reader: Capture) -> Result<(u64, u64), StagingError> {
    let (mut packets, mut passed) = (0, 0);
    let mut buf = Vec::new();
    let mut offset = reader.offset();
    while reader.next_frame(&mut buf)? {
        packets += 1;
        if buf.len() < MIN_FRAME_LEN {
            passed += 1;
        } else {
            buf.truncate(MAX_FRAME_LEN);
            let what = || format!("{} record at byte {offset}", reader.path().display());
            passed += u64::from(run_frame(dp, &buf, what)? == XDP_PASS);
        }
        offset = reader.offset();
    }
    Ok((packets, passed))
}

/// Each backend's weight over the active backends' weights.
fn expected_shares(vip: &DesiredVip) -> Vec<f64> {
    let active = |b: &xlb_core::config::Backend| b.state == BackendState::Active;
    let total: u64 = vip
        .config
        .backends
        .iter()
        .filter(|b| active(b))
        .map(|b| u64::from(b.weight))
        .sum();
    vip.config
        .backends
        .iter()
        .map(|b| {
            if active(b) && total > 0 {
                f64::from(b.weight) / total as f64
            } else {
                0.0
            }
        })
        .collect()
}

/// One VIP's part of the report, from the program's counters.
fn vip_report(dp: &Dataplane, vip: &DesiredVip) -> Result<SimVip, StagingError> {
    let snap = dp
        .snapshot([vip.id], vip.backend_ids.iter().copied())
        .map_err(StagingError::Counters)?;
    let counters: Vec<_> = vip
        .backend_ids
        .iter()
        .map(|id| snap.backends.get(id).copied().unwrap_or_default())
        .collect();
    let new_flows: u64 = counters.iter().map(|c| c.new_flows).sum();
    let forwarded: u64 = counters.iter().map(|c| c.packets).sum();
    let expected = expected_shares(vip);
    let judged: Vec<(f64, u64)> = expected
        .iter()
        .zip(&counters)
        .map(|(&e, c)| (e, c.new_flows))
        .collect();
    let max_ratio = vip.config.imbalance.max_ratio;
    let j = judge(&judged, max_ratio);
    let backends = vip
        .config
        .backends
        .iter()
        .zip(expected.iter().zip(&counters))
        .map(|(b, (&e, c))| SimBackend {
            name: b.name.clone(),
            expected_share_ratio: e,
            capacity_share_ratio: vip.config.capacity_share(b),
            simulated_share_ratio: (new_flows > 0).then(|| c.new_flows as f64 / new_flows as f64),
            new_flows: c.new_flows,
            packets: c.packets,
        })
        .collect();
    let packets = snap.vips.get(&vip.id).map_or(0, |c| c.packets);
    Ok(SimVip {
        name: vip.config.name.clone(),
        packets,
        // Every packet the program counts for a VIP is forwarded to one of
        // its backends or dropped.
        dropped: packets.saturating_sub(forwarded),
        new_flows,
        backends,
        worst_ratio: j.worst_ratio,
        worst_backend: j.worst.map(|i| vip.config.backends[i].name.clone()),
        max_ratio,
        over_threshold: j.over_threshold,
        max_capacity_ratio: vip.config.safety.max_capacity_ratio,
        over_capacity: report::over_capacity(
            &vip.config
                .backends
                .iter()
                .zip(&counters)
                .map(|(b, c)| (vip.config.capacity_share(b), c.new_flows))
                .collect::<Vec<_>>(),
            vip.config.safety.max_capacity_ratio,
        )
        .into_iter()
        .map(|i| vip.config.backends[i].name.clone())
        .collect(),
    })
}
