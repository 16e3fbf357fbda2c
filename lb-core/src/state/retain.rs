//! Removed backends retained: a removed backend's established flows live
//! on like a drained one's (second chance, issue 21). Pure.
//!
//! When an apply removes a backend from a VIP that stays (same name, same
//! table size, so the same VIP id), its id and its kernel entry are kept,
//! valid and in no table: the connection table's entries that name it keep
//! their flows there, as a draining backend's, and the fleet's held-flow
//! replication (`crate::held`) carries them to the other nodes, which all
//! applied the same revision and so retain the backend too (under their own
//! ids). A retained id is in use: next-fit (`ids`) never hands it out.
//!
//! Retention ends (the writer retires the id: its entry loses
//! `BACKEND_F_VALID` and the flows still remembered on it are hashed again)
//! at the first of:
//! - a connection-table count, begun after the backend was first counted
//!   retained, in which no entry names it;
//! - `RETENTION_SECONDS` after it was first counted retained;
//! - an apply that configures a backend of that name again under another
//!   MAC or address (a changed backend's old id is retired at once, as
//!   before), or removes its VIP or changes the VIP's id.
//!
//! A backend configured again with the same name, MAC and address gets its
//! retained id back: its remembered flows never moved.
//!
//! The types are here; the allocation's methods (`ids`, `id_of`,
//! `retained`, `expire_retained`), `Desired::retained_of` and `carried`
//! are in the state module itself, beside `Allocation`.

use std::net::IpAddr;

/// How long a removed backend's id is retained at most: the held records'
/// lease (`xlb_fleet::HELD_TTL_SECONDS`), so a removed backend's flows
/// outlive a node's loss as long as a drained one's records do. The
/// connection table (an LRU) has no idle timeout to take instead: a closed
/// connection's entry stays until it is evicted.
pub const RETENTION_SECONDS: u64 = 300;

/// A retained backend's id, and when a connection-table count first saw it
/// retained (Unix seconds; None until the first count after the apply).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retained {
    pub id: u32,
    pub since_unix_seconds: Option<u64>,
}

/// A retained backend, as status, plan and the held replication see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetainedBackend {
    pub vip: String,
    pub name: String,
    pub address: IpAddr,
    pub mac: [u8; 6],
    pub id: u32,
    pub since_unix_seconds: Option<u64>,
}
