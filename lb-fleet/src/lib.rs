//! The fleet's store in etcd: the only code that talks to etcd. Keys under
//! `/xlb/<fleet>/` (docs/FLEET.md):
//!
//! - `revisions/<n>`: a fleet revision (`FleetRevision`, JSON), immutable;
//! - `desired`: the fleet revision every node serves when no rollout runs;
//! - `rollout`: the rollout in progress or the last one (`Rollout`); every
//!   change of it is a transaction on its mod_revision, so two agents or
//!   CLIs never both move it;
//! - `nodes/<name>`: each node's report (`NodeReport`) under its lease;
//! - `held/<name>/<chunk>`: the flows only that node's connection table
//!   keeps on their backend (`xlb_core::held::HeldChunk`), under a lease of
//!   `HELD_TTL_SECONDS`, longer than the report's: a dead node's held flows
//!   must outlive it, since that is when the others need them.
//!
//! What a rollout does next is decided by `xlb_core::rollout`, not here.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity,
    LeaseKeepAliveStream, LeaseKeeper, PutOptions, TlsOptions, Txn, TxnOp,
};
use etcd_client::{DeleteOptions, EventType, WatchOptions, WatchStream};
use xlb_core::held::HeldChunk;
use xlb_core::rollout::{FleetRevision, NodeReport, Rollout, Step};

/// How long one request to etcd may take (a loaded etcd answers in well
/// under a second; 5 s rides out a busy host without hiding a dead store).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A node's report lives this long without a keep-alive.
pub const REPORT_TTL_SECONDS: i64 = 10;

/// A node's held flows live this long without a keep-alive: a node lost
/// mid-drain leaves its flows to the others for five minutes, longer than
/// a typical drain's connections last after it (docs/FLEET.md).
pub const HELD_TTL_SECONDS: i64 = 300;

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("fleet URL {url}: {why}")]
    Url { url: String, why: String },
    #[error("reading {file}: {source}")]
    File {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("etcd at {endpoints}: {source}")]
    Etcd {
        endpoints: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("etcd key {key}: not a valid record: {source}")]
    Record {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    /// A rollout is in progress: one at a time.
    #[error(
        "rollout {id} ({from} -> {to}) is {state}: wait for it, or `xlb fleet rollback` it first"
    )]
    Busy {
        id: u64,
        from: String,
        to: u64,
        state: &'static str,
    },
    /// Someone else changed the rollout between our read and our write.
    #[error("the rollout changed while this command ran: read it again")]
    Conflict,
    #[error("the fleet agent's task failed: {0}")]
    Agent(String),
    #[error("no fleet revision {0} (see `xlb fleet history`)")]
    NoRevision(u64),
}

/// Where the fleet's store is and how to reach it: `--fleet URL[,URL...]`
/// where a URL's path names the fleet (`http://198.18.0.1:2379/edge`;
/// none: `default`), plus the TLS files for `https://` endpoints.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FleetAddress {
    pub endpoints: Vec<String>,
    pub fleet: String,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl FleetAddress {
    /// Parse `--fleet` (comma-separated endpoints; every path must agree).
    pub fn parse(url: &str) -> Result<Self, FleetError> {
        let bad = |why: &str| FleetError::Url {
            url: url.to_string(),
            why: why.to_string(),
        };
        let mut endpoints = Vec::new();
        let mut fleet: Option<String> = None;
        for part in url.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let rest = part
                .strip_prefix("http://")
                .or_else(|| part.strip_prefix("https://"))
                .ok_or_else(|| bad("an endpoint must start with http:// or https://"))?;
            let scheme = &part[..part.len() - rest.len()];
            let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
            if host.is_empty() {
                return Err(bad("an endpoint has no host"));
            }
            let name = path.trim_matches('/');
            let name = if name.is_empty() { "default" } else { name };
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(bad(
                    "the fleet name (the URL's path) may hold only letters, digits, - and _",
                ));
            }
            match &fleet {
                Some(f) if f != name => return Err(bad("the endpoints name different fleets")),
                _ => fleet = Some(name.to_string()),
            }
            endpoints.push(format!("{scheme}{host}"));
        }
        let fleet = fleet.ok_or_else(|| bad("no endpoint"))?;
        Ok(Self {
            endpoints,
            fleet,
            ..Self::default()
        })
    }

    pub fn with_tls(
        mut self,
        ca: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> Self {
        (self.ca, self.cert, self.key) = (ca, cert, key);
        self
    }

    /// The key prefix of this fleet.
    pub fn prefix(&self) -> String {
        format!("/xlb/{}/", self.fleet)
    }
}

fn read(file: &PathBuf) -> Result<Vec<u8>, FleetError> {
    std::fs::read(file).map_err(|source| FleetError::File {
        file: file.display().to_string(),
        source,
    })
}

/// A connection to the fleet's store.
#[derive(Clone)]
pub struct FleetStore {
    client: Client,
    prefix: String,
    endpoints: String,
}

/// A record and the etcd revision it was last changed at (for a CAS).
#[derive(Clone, Debug, PartialEq)]
pub struct Versioned<T> {
    pub value: T,
    pub mod_revision: i64,
}

/// A node's lease, kept alive by `FleetStore::keep_alive`.
pub struct Lease {
    pub id: i64,
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
}

impl FleetStore {
    /// Connect (TLS when the files are given).
    pub async fn connect(address: &FleetAddress) -> Result<Self, FleetError> {
        let endpoints = address.endpoints.join(",");
        let mut options = ConnectOptions::new()
            .with_timeout(REQUEST_TIMEOUT)
            .with_connect_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), REQUEST_TIMEOUT);
        if address.ca.is_some() || address.cert.is_some() {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &address.ca {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            match (&address.cert, &address.key) {
                (Some(cert), Some(key)) => {
                    tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
                }
                (None, None) => {}
                _ => {
                    return Err(FleetError::Url {
                        url: endpoints,
                        why: "--fleet-cert and --fleet-key go together".into(),
                    });
                }
            }
            options = options.with_tls(tls);
        }
        let client = Client::connect(&address.endpoints, Some(options))
            .await
            .map_err(|source| FleetError::Etcd {
                endpoints: endpoints.clone(),
                source,
            })?;
        Ok(Self {
            client,
            prefix: address.prefix(),
            endpoints,
        })
    }

    fn etcd(&self) -> impl Fn(etcd_client::Error) -> FleetError + '_ {
        |source| FleetError::Etcd {
            endpoints: self.endpoints.clone(),
            source,
        }
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        rest: &str,
    ) -> Result<Option<Versioned<T>>, FleetError> {
        let key = self.key(rest);
        let mut client = self.client.clone();
        let got = client.get(key.clone(), None).await.map_err(self.etcd())?;
        let Some(kv) = got.kvs().first() else {
            return Ok(None);
        };
        let value = serde_json::from_slice(kv.value())
            .map_err(|source| FleetError::Record { key, source })?;
        Ok(Some(Versioned {
            value,
            mod_revision: kv.mod_revision(),
        }))
    }

    async fn list_json<T: serde::de::DeserializeOwned>(
        &self,
        rest: &str,
    ) -> Result<Vec<T>, FleetError> {
        let mut client = self.client.clone();
        let got = client
            .get(self.key(rest), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(self.etcd())?;
        got.kvs()
            .iter()
            .map(|kv| {
                serde_json::from_slice(kv.value()).map_err(|source| FleetError::Record {
                    key: String::from_utf8_lossy(kv.key()).into_owned(),
                    source,
                })
            })
            .collect()
    }

    pub async fn revision(&self, number: u64) -> Result<Option<FleetRevision>, FleetError> {
        Ok(self
            .get_json(&format!("revisions/{number:020}"))
            .await?
            .map(|v| v.value))
    }

    /// Every fleet revision, oldest first.
    pub async fn revisions(&self) -> Result<Vec<FleetRevision>, FleetError> {
        let mut all: Vec<FleetRevision> = self.list_json("revisions/").await?;
        all.sort_by_key(|r| r.number);
        Ok(all)
    }

    pub async fn desired(&self) -> Result<Option<u64>, FleetError> {
        Ok(self.get_json("desired").await?.map(|v| v.value))
    }

    pub async fn rollout(&self) -> Result<Option<Versioned<Rollout>>, FleetError> {
        self.get_json("rollout").await
    }

    /// Every live node's report, by name.
    pub async fn nodes(&self) -> Result<BTreeMap<String, NodeReport>, FleetError> {
        let all: Vec<NodeReport> = self.list_json("nodes/").await?;
        Ok(all.into_iter().map(|r| (r.node.clone(), r)).collect())
    }

    /// Record `revision` (numbered after the highest) and `rollout` to it
    /// in one transaction, unless another rollout is active or the rollout
    /// changed since `seen` (its mod_revision; 0: there was none).
    pub async fn start(
        &self,
        seen: i64,
        mut revision: FleetRevision,
        mut rollout: Rollout,
    ) -> Result<(FleetRevision, Rollout), FleetError> {
        let number = self.revisions().await?.last().map_or(1, |r| r.number + 1);
        revision.number = number;
        rollout.to = number;
        let rev_key = self.key(&format!("revisions/{number:020}"));
        let roll_key = self.key("rollout");
        let txn = Txn::new()
            .when([
                Compare::mod_revision(roll_key.clone(), CompareOp::Equal, seen),
                Compare::create_revision(rev_key.clone(), CompareOp::Equal, 0),
            ])
            .and_then([
                TxnOp::put(rev_key, json(&revision), None),
                TxnOp::put(roll_key, json(&rollout), None),
            ]);
        let mut client = self.client.clone();
        let done = client.txn(txn).await.map_err(self.etcd())?;
        if !done.succeeded() {
            return Err(FleetError::Conflict);
        }
        Ok((revision, rollout))
    }

    /// Move the rollout as `step` says, if it is still at `seen`; true when
    /// this call moved it (false: someone else did first).
    pub async fn advance(&self, seen: i64, step: &Step) -> Result<bool, FleetError> {
        let roll_key = self.key("rollout");
        let mut ops = vec![TxnOp::put(roll_key.clone(), json(&step.rollout), None)];
        if let Some(d) = step.desired {
            ops.push(TxnOp::put(self.key("desired"), d.to_string(), None));
        }
        let txn = Txn::new()
            .when([Compare::mod_revision(roll_key, CompareOp::Equal, seen)])
            .and_then(ops);
        let mut client = self.client.clone();
        let done = client.txn(txn).await.map_err(self.etcd())?;
        Ok(done.succeeded())
    }

    /// Grant a lease for a node's report.
    pub async fn lease(&self) -> Result<Lease, FleetError> {
        self.lease_for(REPORT_TTL_SECONDS).await
    }

    /// Grant a lease for a node's held flows (`HELD_TTL_SECONDS`).
    pub async fn held_lease(&self) -> Result<Lease, FleetError> {
        self.lease_for(HELD_TTL_SECONDS).await
    }

    async fn lease_for(&self, ttl: i64) -> Result<Lease, FleetError> {
        let mut client = self.client.clone();
        let granted = client.lease_grant(ttl, None).await.map_err(self.etcd())?;
        let (keeper, stream) = client
            .lease_keep_alive(granted.id())
            .await
            .map_err(self.etcd())?;
        Ok(Lease {
            id: granted.id(),
            keeper,
            stream,
        })
    }

    /// Renew `lease`; false when it had expired (grant a new one).
    pub async fn keep_alive(&self, lease: &mut Lease) -> Result<bool, FleetError> {
        lease.keeper.keep_alive().await.map_err(self.etcd())?;
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, lease.stream.message())
            .await
            .map_err(|_| FleetError::Etcd {
                endpoints: self.endpoints.clone(),
                source: etcd_client::Error::LeaseKeepAliveError(
                    "no keep-alive answer in time".into(),
                ),
            })?
            .map_err(self.etcd())?;
        Ok(answer.is_some_and(|a| a.ttl() > 0))
    }

    /// Put a node's report under `lease`.
    pub async fn report(&self, lease: &Lease, report: &NodeReport) -> Result<(), FleetError> {
        let mut client = self.client.clone();
        client
            .put(
                self.key(&format!("nodes/{}", report.node)),
                json(report),
                Some(PutOptions::new().with_lease(lease.id)),
            )
            .await
            .map_err(self.etcd())?;
        Ok(())
    }

    /// Publish `node`'s held flows under `lease`: each record put (one
    /// request each: a record is at most a few hundred KB), then the
    /// node's records beyond them deleted. Returns the bytes written.
    pub async fn publish_held(
        &self,
        lease: &Lease,
        node: &str,
        chunks: &[HeldChunk],
    ) -> Result<usize, FleetError> {
        let mut client = self.client.clone();
        let mut bytes = 0;
        for c in chunks {
            let value = json(c);
            bytes += value.len();
            client
                .put(
                    self.key(&format!("held/{node}/{:06}", c.chunk)),
                    value,
                    Some(PutOptions::new().with_lease(lease.id)),
                )
                .await
                .map_err(self.etcd())?;
        }
        // held/<node>/<n>.. up to the end of the node's prefix ('/' + 1).
        client
            .delete(
                self.key(&format!("held/{node}/{:06}", chunks.len())),
                Some(DeleteOptions::new().with_range(self.key(&format!("held/{node}0")))),
            )
            .await
            .map_err(self.etcd())?;
        Ok(bytes)
    }

    /// Every node's held-flow records.
    pub async fn held(&self) -> Result<Vec<HeldChunk>, FleetError> {
        self.list_json("held/").await
    }

    /// Watch the held-flow records from the etcd revision after `after`
    /// (0: from now).
    pub async fn watch_held(&self, after: i64) -> Result<HeldWatch, FleetError> {
        let mut client = self.client.clone();
        let mut options = WatchOptions::new().with_prefix();
        if after > 0 {
            options = options.with_start_revision(after + 1);
        }
        let stream = client
            .watch(self.key("held/"), Some(options))
            .await
            .map_err(self.etcd())?;
        Ok(HeldWatch {
            stream,
            endpoints: self.endpoints.clone(),
        })
    }

    /// Take a node's report away at once (a clean stop).
    pub async fn revoke(&self, lease: &Lease) -> Result<(), FleetError> {
        let mut client = self.client.clone();
        client.lease_revoke(lease.id).await.map_err(self.etcd())?;
        Ok(())
    }
}

/// Records put under `held/` as they come (`FleetStore::watch_held`).
pub struct HeldWatch {
    stream: WatchStream,
    endpoints: String,
}

impl HeldWatch {
    /// The records put in the next change the store sends (deletions are
    /// left out: entries already installed stay until the LRU evicts them);
    /// an error when the watch ended.
    pub async fn next(&mut self) -> Result<Vec<HeldChunk>, FleetError> {
        let message = self
            .stream
            .message()
            .await
            .map_err(|source| FleetError::Etcd {
                endpoints: self.endpoints.clone(),
                source,
            })?;
        let Some(response) = message else {
            return Err(FleetError::Agent(
                "the store ended the held-flow watch".into(),
            ));
        };
        let mut out = Vec::new();
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            if event.event_type() != EventType::Put {
                continue;
            }
            match serde_json::from_slice(kv.value()) {
                Ok(chunk) => out.push(chunk),
                Err(source) => {
                    return Err(FleetError::Record {
                        key: String::from_utf8_lossy(kv.key()).into_owned(),
                        source,
                    });
                }
            }
        }
        Ok(out)
    }
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Records are plain structs of strings and numbers: always encodable.
    serde_json::to_vec(value).unwrap_or_default()
}

/// One pass of "move the rollout if the reports say so": read the rollout
/// and the reports, decide (`xlb_core::rollout::step`), write with a CAS.
/// Any agent or CLI may call it; losing the race is not an error. Returns
/// the rollout as it stands after the pass.
pub async fn drive(store: &FleetStore) -> Result<Option<Rollout>, FleetError> {
    let Some(current) = store.rollout().await? else {
        return Ok(None);
    };
    let reports = store.nodes().await?;
    match xlb_core::rollout::step(&current.value, &reports) {
        Some(step) => {
            if store.advance(current.mod_revision, &step).await? {
                log::info!(
                    "fleet: rollout {} now {} (wave {}){}",
                    step.rollout.id,
                    step.rollout.state.name(),
                    step.rollout.wave,
                    step.rollout
                        .reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                );
                Ok(Some(step.rollout))
            } else {
                Ok(store.rollout().await?.map(|v| v.value))
            }
        }
        None => Ok(Some(current.value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fleet_url_names_its_endpoints_and_fleet() {
        let a = FleetAddress::parse("http://198.18.0.1:2379/edge").unwrap();
        assert_eq!(a.endpoints, vec!["http://198.18.0.1:2379"]);
        assert_eq!(a.prefix(), "/xlb/edge/");
        let b = FleetAddress::parse("https://198.18.0.1:2379,https://198.18.0.2:2379").unwrap();
        assert_eq!(b.endpoints.len(), 2);
        assert_eq!(b.fleet, "default");
        for bad in [
            "198.18.0.1:2379",
            "http://a/x,http://b/y",
            "http://a/../x",
            "",
            "http:///x",
        ] {
            assert!(FleetAddress::parse(bad).is_err(), "{bad}");
        }
    }
}
