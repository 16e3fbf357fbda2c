//! The plan's held-flow section: which live flows a change leaves held on
//! their backend by the connection table alone (second chance, issue 21;
//! docs/FLEET.md "Held flows"). A drain, a removal or a weight change
//! moves table slots away from backends that still carry connections;
//! those connections then rely on the connection table of the node that
//! saw them begin, and on a fleet on the held-flow replication.
//!
//! Counted by `crate::held::select` over the live connection table's
//! entries against the candidate's state, built with the live allocation
//! (so a backend the candidate removes is retained, as the apply will
//! retain it). Pure: the daemon reads the entries.

use lb_common::hash::FlowWords;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::held::{HeldCount, select};
use crate::state::{Desired, Prebuilt, StateError, desired_reusing};

/// What the change leaves held (`xlb plan`, `held` in JSON).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PlanHeld {
    /// Connection-table entries read.
    pub entries: u64,
    /// Live flows whose backend the candidate's table does not pick, in
    /// all and per VIP and backend (`removed`: a backend the candidate
    /// removes, retained).
    pub held: u64,
    pub per_backend: Vec<HeldCount>,
    /// Of them, flows held already under the live revision.
    pub held_today: u64,
    /// On a fleet node: the held flows this node last published to the
    /// store (none without `--fleet`).
    #[serde(default)]
    pub replicated: Option<u64>,
}

impl PlanHeld {
    /// `held flows: 70 live flows would rely on the connection table (5
    /// today): web/b3 70 (removed); 65 replicated by this node`.
    pub fn line(&self) -> String {
        let mut line = format!(
            "held flows: {} of {} live flows would rely on the connection table ({} today)",
            self.held, self.entries, self.held_today
        );
        if !self.per_backend.is_empty() {
            let parts: Vec<String> = self
                .per_backend
                .iter()
                .map(|c| {
                    format!(
                        "{}/{} {}{}",
                        c.vip,
                        c.backend,
                        c.flows,
                        if c.removed { " (removed)" } else { "" }
                    )
                })
                .collect();
            line.push_str(&format!(": {}", parts.join(", ")));
        }
        if let Some(n) = self.replicated {
            line.push_str(&format!(
                "; fleet: {n} held flows published by this node now"
            ));
        }
        line
    }
}

/// The held-flow section of changing from `live` to `candidate`, over the
/// connection table's `entries` (key words, backend id). `prebuilt`: the
/// candidate tables its plan built, taken instead of built again.
pub fn held_after(
    live: &Desired,
    candidate: &Config,
    prebuilt: Option<Prebuilt>,
    entries: &[(FlowWords, u32)],
    replicated: Option<u64>,
) -> Result<PlanHeld, StateError> {
    // An empty connection table leaves nothing held, whatever the
    // candidate's tables: its state is not built (at 1,000 VIPs x 64
    // backends, a tenth of a plan's time on one core).
    if entries.is_empty() {
        return Ok(PlanHeld {
            replicated,
            ..PlanHeld::default()
        });
    }
    let after = desired_reusing(
        std::borrow::Cow::Borrowed(candidate),
        &live.allocation,
        Some(live),
        prebuilt,
        &|| {},
    )?;
    let selection = select(&after, entries.iter().copied());
    Ok(PlanHeld {
        entries: selection.entries,
        held: selection.total() as u64,
        per_backend: selection.per_backend(&after),
        held_today: select(live, entries.iter().copied()).total() as u64,
        replicated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackendState, parse};
    use crate::simulate::{Flow, pick, pick_name};
    use crate::state::Allocation;

    fn config() -> Config {
        let mut text = String::from(
            "interface = \"eth0\"\nhash_seed = 5\n[[vip]]\nname = \"web\"\naddress = \"198.18.100.1\"\nport = 80\nprotocol = \"tcp\"\n",
        );
        for (i, w) in [1, 1, 2].iter().enumerate() {
            text.push_str(&format!(
                "[[vip.backend]]\nname = \"b{}\"\naddress = \"198.18.0.{}\"\nmac = \"02:00:00:00:00:0{}\"\nweight = {w}\n",
                i + 1,
                11 + i,
                i + 1
            ));
        }
        parse(&text, "t.toml").unwrap()
    }

    fn flows() -> Vec<Flow> {
        (0..3000u16)
            .map(|i| Flow {
                src: format!("198.18.3.{}", i % 200 + 1).parse().unwrap(),
                dst: "198.18.100.1".parse().unwrap(),
                src_port: 20_000 + i,
                dst_port: 80,
                proto: 6,
            })
            .collect()
    }

    #[test]
    fn a_drain_a_removal_and_a_reweight_each_count_the_flows_they_leave_held() {
        let live = crate::state::desired(&config(), &Allocation::default()).unwrap();
        let all = flows();
        let entries: Vec<(FlowWords, u32)> = all
            .iter()
            .map(|f| (f.words(), pick(&live, f).unwrap()))
            .collect();
        let on_b3 = all
            .iter()
            .filter(|f| pick_name(&live, f) == Some("b3"))
            .count() as u64;
        let of_b3 = |p: &PlanHeld| {
            p.per_backend
                .iter()
                .filter(|c| c.backend == "b3")
                .map(|c| (c.flows, c.removed))
                .next()
        };

        // Nothing changes: nothing held.
        let same = held_after(&live, &config(), None, &entries, None).unwrap();
        assert_eq!((same.entries, same.held, same.held_today), (3000, 0, 0));
        assert!(same.line().starts_with("held flows: 0 of 3000"));

        // b3 drained: all its flows, and the few Maglev moves among the others.
        let mut drained = config();
        drained.vip_mut(0).backends[2].state = BackendState::Draining;
        let p = held_after(&live, &drained, None, &entries, Some(7)).unwrap();
        assert_eq!(of_b3(&p), Some((on_b3, false)));
        assert!(p.held >= on_b3 && p.held - on_b3 < 30, "{p:?}");
        assert!(
            p.line()
                .ends_with("; fleet: 7 held flows published by this node now")
        );

        // An empty connection table: nothing held, whatever the change.
        let none = held_after(&live, &drained, None, &[], Some(3)).unwrap();
        assert_eq!(
            (none.entries, none.held, none.held_today, none.replicated),
            (0, 0, 0, Some(3))
        );
        assert!(none.per_backend.is_empty());

        // b3 removed: the same flows, on a retained backend.
        let mut removed = config();
        removed.vip_mut(0).backends.pop();
        let p = held_after(&live, &removed, None, &entries, None).unwrap();
        assert_eq!(of_b3(&p), Some((on_b3, true)));
        assert!(p.line().contains("web/b3 "), "{}", p.line());
        assert!(p.line().contains(" (removed)"), "{}", p.line());

        // b1 1 -> 4: exactly the flows whose pick moved.
        let mut reweighted = config();
        reweighted.vip_mut(0).backends[0].weight = 4;
        let after = crate::state::desired(&reweighted, &live.allocation).unwrap();
        let moved = all
            .iter()
            .filter(|f| pick_name(&live, f) != pick_name(&after, f))
            .count() as u64;
        let p = held_after(&live, &reweighted, None, &entries, None).unwrap();
        assert!(moved > 100);
        assert_eq!((p.held, p.held_today), (moved, 0));

        // The removal planned while the drain is live: the same table, so
        // the flows it leaves held are those held today.
        let live_drained = crate::state::desired(&drained, &live.allocation).unwrap();
        let p = held_after(&live_drained, &removed, None, &entries, None).unwrap();
        assert_eq!(of_b3(&p), Some((on_b3, true)));
        assert_eq!(p.held, p.held_today);
    }
}
