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

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::{Allocation, BackendIdentity, Desired};

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

impl Allocation {
    /// Every backend id in use: configured and retained.
    pub(crate) fn ids(&self) -> BTreeSet<u32> {
        self.backends
            .values()
            .copied()
            .chain(self.retained.values().map(|r| r.id))
            .collect()
    }

    /// The id `ident` holds, configured or retained.
    pub(crate) fn id_of(&self, ident: &BackendIdentity) -> Option<u32> {
        self.backends
            .get(ident)
            .copied()
            .or_else(|| self.retained.get(ident).map(|r| r.id))
    }

    /// The retained backends, by VIP and name.
    pub fn retained(&self) -> Vec<RetainedBackend> {
        self.retained
            .iter()
            .map(|(i, r)| RetainedBackend {
                vip: i.vip.clone(),
                name: i.name.clone(),
                address: i.address,
                mac: i.mac,
                id: r.id,
                since_unix_seconds: r.since_unix_seconds,
            })
            .collect()
    }

    /// After a connection-table count (`by_backend`: entries per backend
    /// id; the count began at `scan_started` and ended at `now`, Unix
    /// seconds): the retained ids whose retention ends, taken out of this
    /// allocation (the caller retires their entries). A backend counted
    /// for the first time is stamped `now` and kept.
    pub fn expire_retained(
        &mut self,
        by_backend: &BTreeMap<u32, u64>,
        scan_started: f64,
        now: f64,
    ) -> BTreeSet<u32> {
        let mut out = BTreeSet::new();
        self.retained.retain(|_, r| {
            let Some(since) = r.since_unix_seconds else {
                r.since_unix_seconds = Some(now.max(0.0) as u64);
                return true;
            };
            let named = by_backend.get(&r.id).copied().unwrap_or(0);
            let expired = now - since as f64 >= RETENTION_SECONDS as f64
                || (named == 0 && scan_started >= since as f64);
            if expired {
                out.insert(r.id);
            }
            !expired
        });
        out
    }
}

impl Desired {
    /// The retained backends of the VIP named `vip`.
    pub fn retained_of(&self, vip: &str) -> Vec<RetainedBackend> {
        self.allocation
            .retained()
            .into_iter()
            .filter(|r| r.vip == vip)
            .collect()
    }
}

/// The retained backends of `now` (configured ids already chosen), from
/// `previous`: its backends removed now and its retained ones, each kept
/// when its VIP keeps its id and no backend of the VIP has its name.
pub(super) fn carried(
    previous: &Allocation,
    now: &Allocation,
) -> BTreeMap<BackendIdentity, Retained> {
    let kept_vips: BTreeSet<&str> = previous
        .vips
        .iter()
        .filter(|(i, id)| now.vips.get(*i) == Some(*id))
        .map(|(i, _)| i.name.as_str())
        .collect();
    let configured: BTreeSet<(&str, &str)> = now
        .backends
        .keys()
        .map(|i| (i.vip.as_str(), i.name.as_str()))
        .collect();
    let keep = |i: &BackendIdentity| {
        kept_vips.contains(i.vip.as_str()) && !configured.contains(&(&i.vip[..], &i.name[..]))
    };
    let removed = previous
        .backends
        .iter()
        .filter(|(i, _)| keep(i))
        .map(|(i, &id)| {
            (
                i.clone(),
                Retained {
                    id,
                    since_unix_seconds: None,
                },
            )
        });
    let still = previous
        .retained
        .iter()
        .filter(|(i, _)| keep(i))
        .map(|(i, r)| (i.clone(), *r));
    removed.chain(still).collect()
}

#[cfg(test)]
mod tests {
    use super::super::desired;
    use super::*;
    use crate::config::parse;

    /// VIP web (table `size`) over `backends` (name, MAC's last byte).
    fn config(backends: &[(&str, u8)], size: u32) -> crate::config::Config {
        let mut text = format!(
            "interface = \"eth0\"\nhash_seed = 3\n[[vip]]\nname = \"web\"\naddress = \"198.18.100.1\"\nport = 80\nprotocol = \"tcp\"\ntable_size = {size}\n"
        );
        for (name, mac) in backends {
            text.push_str(&format!(
                "[[vip.backend]]\nname = \"{name}\"\naddress = \"198.18.0.{}\"\nmac = \"02:00:00:00:00:{mac:02x}\"\n",
                10 + name.len()
            ));
        }
        parse(&text, "test.toml").unwrap()
    }

    fn ids(set: BTreeSet<u32>) -> Vec<u32> {
        set.into_iter().collect()
    }

    #[test]
    fn a_removed_backend_keeps_its_id_in_no_table_and_is_not_reused() {
        let first = desired(
            &config(&[("a", 1), ("bb", 2)], 1021),
            &Allocation::default(),
        )
        .unwrap();
        let second = desired(&config(&[("a", 1)], 1021), &first.allocation).unwrap();
        // bb is retained: not retired, in no table, id 1 still in use.
        assert!(second.retired_backend_ids(&first.allocation).is_empty());
        let kept = second.retained_of("web");
        assert_eq!(kept.len(), 1);
        assert_eq!((kept[0].name.as_str(), kept[0].id), ("bb", 1));
        assert_eq!(kept[0].since_unix_seconds, None);
        assert!(!second.vips[0].slots.contains(&1));
        // A new backend does not take id 1, even from the start of the space.
        let mut alloc = second.allocation.clone();
        alloc.next_backend_id = 0;
        let third = desired(&config(&[("a", 1), ("ccc", 3)], 1021), &alloc).unwrap();
        assert_eq!(third.vips[0].backend_ids, vec![0, 2]);
        assert_eq!(third.retained_of("web").len(), 1);
        // bb back with the same MAC and address: its own id again, nothing new.
        let back = desired(&config(&[("a", 1), ("bb", 2)], 1021), &second.allocation).unwrap();
        assert_eq!(back.vips[0].backend_ids, vec![0, 1]);
        assert!(back.new_backend_ids(&second.allocation).is_empty());
        assert!(back.retained_of("web").is_empty());
        assert!(back.retired_backend_ids(&second.allocation).is_empty());
    }

    #[test]
    fn retention_ends_with_a_new_mac_a_new_vip_id_or_the_vip_gone() {
        let first = desired(
            &config(&[("a", 1), ("bb", 2)], 1021),
            &Allocation::default(),
        )
        .unwrap();
        let removed = desired(&config(&[("a", 1)], 1021), &first.allocation).unwrap();
        // bb configured again under another MAC: the retained id goes.
        let changed = desired(&config(&[("a", 1), ("bb", 9)], 1021), &removed.allocation).unwrap();
        assert_eq!(
            ids(changed.retired_backend_ids(&removed.allocation)),
            vec![1]
        );
        assert!(changed.retained_of("web").is_empty());
        // The VIP's table size changes (a new VIP id): retired.
        let resized = desired(&config(&[("a", 1)], 2039), &removed.allocation).unwrap();
        assert!(ids(resized.retired_backend_ids(&removed.allocation)).contains(&1));
        assert!(resized.allocation.retained.is_empty());
    }

    #[test]
    fn counts_stamp_then_expire_on_no_entries_or_age() {
        let first = desired(
            &config(&[("a", 1), ("bb", 2)], 1021),
            &Allocation::default(),
        )
        .unwrap();
        let mut alloc = desired(&config(&[("a", 1)], 1021), &first.allocation)
            .unwrap()
            .allocation;
        let none = BTreeMap::new();
        // The first count stamps it, whatever it found.
        assert!(alloc.expire_retained(&none, 995.0, 1000.0).is_empty());
        assert_eq!(alloc.retained()[0].since_unix_seconds, Some(1000));
        // A count begun before the stamp says nothing of it.
        assert!(alloc.expire_retained(&none, 999.0, 1010.0).is_empty());
        // Entries name it: kept, until the retention is over.
        let named = BTreeMap::from([(1, 3)]);
        assert!(alloc.expire_retained(&named, 1001.0, 1010.0).is_empty());
        let mut old = alloc.clone();
        assert_eq!(
            ids(old.expire_retained(&named, 1200.0, 1000.0 + RETENTION_SECONDS as f64)),
            vec![1]
        );
        assert!(old.retained().is_empty());
        // No entry names it in a count begun after the stamp: retired.
        assert_eq!(ids(alloc.expire_retained(&none, 1001.0, 1011.0)), vec![1]);
        // Retired, the id is free for next-fit again, and an apply no
        // longer holds it.
        let again = desired(&config(&[("a", 1)], 1021), &alloc).unwrap();
        assert!(again.retained_of("web").is_empty());
        assert!(!again.allocation.ids().contains(&1));
    }
}
