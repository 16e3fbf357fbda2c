//! What can go wrong in a staging run.

use std::path::PathBuf;

use aya::programs::ProgramError;
use xlb_core::state::StateError;

use crate::DataplaneError;

#[derive(Debug, thiserror::Error)]
pub enum StagingError {
    #[error("{0}")]
    Options(String),
    #[error("config: {0}")]
    State(#[from] StateError),
    #[error("loading the balancer program into the kernel (needs root: CAP_BPF): {0}")]
    Load(#[source] DataplaneError),
    #[error("filling the simulator's maps: {0}")]
    Apply(#[source] DataplaneError),
    #[error("reading the program's counters: {0}")]
    Counters(#[source] DataplaneError),
    #[error("BPF_PROG_TEST_RUN of {what}: {source}")]
    Run {
        what: String,
        #[source]
        source: ProgramError,
    },
    #[error("{}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: byte {offset}: {reason}", path.display())]
    Pcap {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
}

impl StagingError {
    /// The input was wrong (options, config, capture file), as opposed to
    /// the kernel or the program failing: exit 2 rather than 4.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Self::Options(_) | Self::State(_) | Self::Open { .. } | Self::Pcap { .. }
        )
    }
}
