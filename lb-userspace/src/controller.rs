//! The daemon's state machine: the loaded dataplane, what it holds, and the
//! counters at the last apply. Every change goes through `apply`, which
//! validates first and writes nothing unless everything validated.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::config::{self, Config};
use crate::dataplane::{CounterSnapshot, Dataplane, DataplaneError};
use crate::state::{self, Allocation, Desired};
use crate::status::{self, Status, StatusContext};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    #[error(
        "{file}: interface: the running daemon is attached to {running}; a config for {wanted} needs a restart"
    )]
    InterfaceChange {
        file: String,
        running: String,
        wanted: String,
    },
    #[error("{0}")]
    State(#[from] state::StateError),
    #[error("{0}")]
    Dataplane(#[from] DataplaneError),
}

impl ApplyError {
    /// Bad input (the operator's to fix) or a failure of the daemon/kernel.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Self::Config(_) | Self::InterfaceChange { .. } | Self::State(_)
        )
    }
}

pub struct Controller {
    dataplane: Dataplane,
    interface: String,
    iface_mac: [u8; 6],
    applied: Option<Desired>,
    revision: u64,
    applied_at: SystemTime,
    applied_instant: Instant,
    at_apply: CounterSnapshot,
}

impl Controller {
    pub fn new(dataplane: Dataplane, interface: String, iface_mac: [u8; 6]) -> Self {
        Self {
            dataplane,
            interface,
            iface_mac,
            applied: None,
            revision: 0,
            applied_at: SystemTime::now(),
            applied_instant: Instant::now(),
            at_apply: CounterSnapshot::default(),
        }
    }

    pub fn dataplane_mut(&mut self) -> &mut Dataplane {
        &mut self.dataplane
    }

    /// Validate config text and apply it. On any error nothing is written.
    pub fn apply_text(&mut self, text: &str, file: &str) -> Result<u64, ApplyError> {
        let config = config::parse(text, file)?;
        self.apply(config, file)
    }

    pub fn apply(&mut self, config: Config, file: &str) -> Result<u64, ApplyError> {
        if config.interface != self.interface {
            return Err(ApplyError::InterfaceChange {
                file: file.to_string(),
                running: self.interface.clone(),
                wanted: config.interface,
            });
        }
        let empty = Allocation::default();
        let previous = self.applied.as_ref();
        let desired = state::desired(&config, previous.map_or(&empty, |p| &p.allocation))?;
        self.dataplane.apply(self.iface_mac, &desired, previous)?;
        self.at_apply = self.snapshot(&desired)?;
        self.applied = Some(desired);
        self.revision += 1;
        self.applied_at = SystemTime::now();
        self.applied_instant = Instant::now();
        log::info!("applied revision {} from {file}", self.revision);
        Ok(self.revision)
    }

    fn snapshot(&self, desired: &Desired) -> Result<CounterSnapshot, DataplaneError> {
        self.dataplane.snapshot(
            desired.vips.iter().map(|v| v.id),
            desired
                .vips
                .iter()
                .flat_map(|v| v.backend_ids.iter().copied()),
        )
    }

    pub fn status(&self) -> Result<Status, DataplaneError> {
        let empty = Desired {
            config: Config {
                interface: self.interface.clone(),
                hash_seed: 0,
                vips: vec![],
            },
            vips: vec![],
            allocation: Allocation::default(),
        };
        let desired = self.applied.as_ref().unwrap_or(&empty);
        let now = self.snapshot(desired)?;
        let ctx = StatusContext {
            interface: &self.interface,
            revision: self.revision,
            applied_at_unix_seconds: self
                .applied_at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            observed_seconds: self.applied_instant.elapsed().as_secs_f64(),
        };
        Ok(status::build(&ctx, desired, &now, &self.at_apply))
    }
}
