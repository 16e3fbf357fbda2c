//! The one way a change is made: a `Candidate` (parsed once, where it
//! entered the daemon) planned, checked as its `ApplyOptions` say, written,
//! recorded as a revision, baked and audited. Adoption takes over the
//! pinned maps of an earlier daemon instead of writing them.

use std::borrow::Cow;
use std::time::{Instant, SystemTime};

use xlb_core::bake::{BakeState, BakeStatus};
use xlb_core::change::{ApplyOptions, Candidate, Checks};
use xlb_core::clock::unix_now;
use xlb_core::config::Config;
use xlb_core::config::keys::{RestartChange, restart_change};
use xlb_core::detect::Detector;
use xlb_core::plan::Plan;
use xlb_core::revision::{Kind, Outcome, Revision, text_hash};
use xlb_core::state::{self, Allocation, Desired, Prebuilt};

use super::rollback::{Kept, KeptText};
use super::{ApplyError, Controller, health};
use crate::store::PackedText;

/// What an apply made.
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    pub revision: u64,
    /// The plan it was checked against (operator changes only).
    pub plan: Option<Plan>,
}

impl Controller {
    /// The plan of changing from the applied config to `candidate`, against
    /// the live revision, and the candidate tables it built (for its apply
    /// and its held-flow section).
    fn plan(&self, candidate: &Candidate) -> Result<(Plan, Prebuilt), ApplyError> {
        let base = match &self.applied {
            Some(d) => Cow::Borrowed(&d.config),
            // Nothing applied yet: only the VIPs are new.
            None => Cow::Owned(Config {
                interface: self.interface.clone(),
                vips: vec![],
                ..candidate.config.clone()
            }),
        };
        // The applied tables stand for the base's; only changed VIPs'
        // tables are built.
        let (mut plan, tables) =
            xlb_core::plan::plan_keeping_tables(&base, self.applied.as_ref(), &candidate.config)?;
        plan.base_revision = Some(self.revision);
        // What this daemon runs with, not only what was applied: the
        // interface, the pinned table's size, the bound metrics address.
        plan.restart_only = self.restart_only(&candidate.config);
        Ok((plan, tables))
    }

    /// The live flows `candidate` would leave held by the connection table
    /// (the table walked against the candidate's state: `plan::held_after`),
    /// with this node's replicated count on a fleet; None before the first
    /// apply or when the table cannot be read (logged). `tables`: those the
    /// plan built for `candidate`.
    fn held_section(
        &self,
        candidate: &Candidate,
        tables: Prebuilt,
    ) -> Option<xlb_core::plan::PlanHeld> {
        let live = self.applied.as_ref()?;
        let entries = self
            .dataplane
            .conn_table()
            .entries()
            .inspect_err(|e| log::warn!("plan: reading the connection table for held flows: {e}"))
            .ok()?;
        let published = self.held.as_ref().map(|h| h.published);
        xlb_core::plan::held_after(live, &candidate.config, Some(tables), &entries, published)
            .inspect_err(|e| log::warn!("plan: held flows: {e}"))
            .ok()
    }

    /// The changes of `config` that this running daemon cannot take
    /// (`xlb_core::config::keys`): against the interface it is attached to,
    /// the size of its pinned connection table and the address it serves
    /// metrics on (unless `--metrics-address` overrides the config's).
    pub fn restart_only(&self, config: &Config) -> Vec<RestartChange> {
        let mut changes = Vec::new();
        changes.extend(restart_change(
            "interface",
            self.interface.clone(),
            config.interface.clone(),
        ));
        changes.extend(restart_change(
            "conn_table_size",
            self.dataplane.conn_table_size().to_string(),
            config.conn_table_size.to_string(),
        ));
        if let Some(bound) = self.metrics_bound {
            changes.extend(restart_change(
                "metrics_address",
                bound.to_string(),
                config.metrics_address.to_string(),
            ));
        }
        changes
    }

    /// Plan for an operator, and put it in the audit log.
    pub fn plan_audited(&mut self, candidate: &Candidate) -> Result<Plan, ApplyError> {
        // The ids the write would hand out: a change the id space cannot
        // take (new backends beside the ids the live config still holds)
        // fails its plan as its apply fails in the write.
        if let Some(applied) = &self.applied {
            state::allocate(&candidate.config, &applied.allocation, Some(applied))?;
        }
        let (mut plan, tables) = self.plan(candidate)?;
        plan.held = self.held_section(candidate, tables);
        let detail = if plan.refused() {
            format!("refused: {} safety findings", plan.lints.len())
        } else if plan.changed {
            "changes, no findings".to_string()
        } else {
            "no changes".to_string()
        };
        self.audit(
            "plan",
            &candidate.origin.user,
            plan.base_revision,
            Some(&candidate.file),
            Some(text_hash(&candidate.text)),
            Some(detail),
        );
        Ok(plan)
    }

    /// Apply `candidate` as a new revision. An operator's change
    /// (`Checks::Operator`) is refused when its reviewed plan is stale or the
    /// safety checks refuse it unforced, and is audited; every change is
    /// recorded with its outcome (bad input is refused before anything is
    /// written or recorded; a kernel failure is recorded as a failed
    /// revision). An operator's apply or edit that replaces a revision bakes.
    pub fn apply(
        &mut self,
        candidate: Candidate,
        options: ApplyOptions,
    ) -> Result<Applied, ApplyError> {
        self.apply_prebuilt(candidate, options, None)
    }

    /// [`Controller::apply`], with tables built ahead for `candidate`
    /// (`state::prebuild`: the start's); an operator's change takes its
    /// plan's instead.
    pub fn apply_prebuilt(
        &mut self,
        mut candidate: Candidate,
        options: ApplyOptions,
        ahead: Option<Prebuilt>,
    ) -> Result<Applied, ApplyError> {
        let (origin, file) = (&candidate.origin, &candidate.file);
        // Hashed once (at the declared limits the text is 6 to 28 MB): for
        // the revision, the audit log and the config file's status.
        let config_hash = text_hash(&candidate.text);
        let ApplyOptions { kind, checks } = options;
        // The tables the plan built (or built ahead), handed to the write.
        let mut prebuilt = ahead;
        let plan = match checks {
            Checks::Unchecked => None,
            Checks::Operator {
                force,
                expect_revision,
            } => {
                let refusal = match expect_revision {
                    Some(planned) if planned != self.revision => Some(ApplyError::Stale {
                        planned,
                        live: self.revision,
                    }),
                    _ => None,
                };
                let plan = match refusal {
                    Some(_) => None,
                    None => {
                        let (plan, tables) = self.plan(&candidate)?;
                        prebuilt = Some(tables);
                        Some(plan)
                    }
                };
                let refusal = refusal.or_else(|| {
                    plan.as_ref().filter(|p| p.refused() && !force).map(|p| {
                        let lines: Vec<String> = p
                            .lints
                            .iter()
                            .map(|l| format!("  {}: {}", l.vip, l.message))
                            .collect();
                        ApplyError::Refused(lines.join("\n"))
                    })
                });
                if let Some(e) = refusal {
                    self.audit(
                        "refused",
                        &origin.user,
                        None,
                        Some(file),
                        Some(config_hash),
                        Some(e.to_string()),
                    );
                    return Err(e);
                }
                if plan.as_ref().is_some_and(Plan::refused) {
                    log::warn!(
                        "{file}: safety checks overridden with --force by {}",
                        origin.user
                    );
                }
                plan
            }
        };
        // Planned (the watchdog's sign of life: notify.rs).
        self.metrics.progress.beat();
        let number = self
            .revisions
            .as_ref()
            .map_or(self.revision + 1, |s| s.next_number());
        // The config moves into the applied state (at 1,000 VIPs a copy
        // costs tens of milliseconds); the candidate keeps its text.
        let config = std::mem::replace(&mut candidate.config, Config::empty(String::new()));
        let previous_revision = self.revision;
        // The revision's body (the changed VIPs' plan and the text,
        // compressed: ~5 ms at the declared limits) is made while the
        // tables are written.
        let recorded_plan = plan.as_ref().map(Plan::recorded);
        let recording = self.revisions.is_some();
        let (written, body) = rayon::join(
            || self.write(config, file, number, prebuilt),
            || {
                recording
                    .then(|| crate::store::pack(number, recorded_plan.as_ref(), &candidate.text))
            },
        );
        // What the tables go back to if the new revision cannot be recorded.
        let (mut result, previous) = match written {
            Ok((n, previous)) => (Ok(n), previous.map(|d| (d.config, previous_revision))),
            Err(e) => (Err(e), None),
        };
        self.metrics.progress.beat();
        let baking = result.is_ok() && self.bakes(&kind, plan.as_ref());
        let mut packed = None;
        if let Some(store) = self.revisions.as_mut() {
            let outcome = match &result {
                Ok(_) if baking => Outcome::Baking,
                Ok(_) => Outcome::Applied,
                Err(e) if e.is_bad_input() => {
                    return result.map(|revision| Applied { revision, plan });
                }
                Err(e) => Outcome::Failed {
                    error: e.to_string(),
                },
            };
            // The text moves into the revision and back (at the declared
            // limits a copy is 6 to 28 MB).
            let rev = Revision {
                schema_version: xlb_core::revision::SCHEMA_VERSION,
                number,
                created_at_unix_seconds: unix_now(),
                user: candidate.origin.user.clone(),
                message: candidate.origin.message.clone(),
                config_file: candidate.file.clone(),
                config_text: std::mem::take(&mut candidate.text),
                config_hash: config_hash.clone(),
                kind: kind.clone(),
                // The summary and the changed VIPs only (`Plan::recorded`).
                plan: recorded_plan,
                outcome,
            };
            let recorded = body
                .unwrap_or_else(|| crate::store::pack(number, rev.plan.as_ref(), &rev.config_text))
                .and_then(|body| store.record_packed(&rev, body));
            candidate.text = rev.config_text;
            packed = recorded.as_ref().ok().cloned();
            if let Err(e) = recorded {
                if result.is_ok() {
                    // Not durably recorded, so not applied: the next start
                    // would return to the recorded revision anyway.
                    result = Err(self.unrecorded(number, &e, previous));
                } else {
                    log::error!("revision {number} failed and its failure is not recorded: {e}");
                }
            }
        }
        if result.is_ok()
            && let Some(c) = self.config_file.as_mut()
        {
            c.after_apply(number, &kind, &candidate.file, &config_hash);
        }
        if let (Checks::Operator { force, .. }, Some(plan)) = (checks, &plan) {
            self.audit_operator_apply(&candidate, config_hash, &kind, force, plan, &result);
        }
        if result.is_ok() {
            self.start_bake(candidate, baking, number, packed);
        }
        // Whoever applied it (the socket, SIGHUP, the fleet agent, a bake's
        // rollback): no status request is answered with the old document.
        self.metrics.invalidate_change();
        result.map(|revision| Applied { revision, plan })
    }

    /// Revision `number` is in the tables but `error` kept it from the store:
    /// put the tables back to `previous` (its config and revision; the
    /// writer's own path, a whole apply of it) and say so. A revision file
    /// that made it to disk anyway (only the directory sync failed) is
    /// marked failed, so no start adopts it.
    fn unrecorded(
        &mut self,
        number: u64,
        error: &crate::store::StoreError,
        previous: Option<(Config, u64)>,
    ) -> ApplyError {
        log::error!("revision {number} could not be recorded: {error}; undoing it");
        let restored = match previous {
            Some((config, revision)) => {
                let file = self
                    .current
                    .as_ref()
                    .map_or_else(|| format!("revision {revision}"), |c| c.file.clone());
                match self.write(config, &file, revision, None) {
                    Ok(_) => format!("the tables are back at revision {revision}"),
                    Err(e) => format!("putting revision {revision} back failed too: {e}"),
                }
            }
            None => "there was no earlier revision to put back".to_string(),
        };
        log::error!("revision {number}: {restored}");
        if let Some(store) = self.revisions.as_mut()
            && let Ok(Some(_)) = store.get(number)
            && let Err(e) = store.update_outcome(
                number,
                Outcome::Failed {
                    error: format!("not recorded durably: {error}"),
                },
            )
        {
            log::error!("marking revision {number} failed: {e}");
        }
        ApplyError::NotRecorded {
            number,
            cause: error.to_string(),
            restored,
        }
    }

    /// Whether an apply of `kind` with `plan` made now would bake: an
    /// operator's apply or edit that replaces a revision with another
    /// config (not `Plan::same_config`: re-applying what runs, as a fleet's
    /// first revision does, changes nothing to watch), with baking on.
    fn bakes(&self, kind: &Kind, plan: Option<&Plan>) -> bool {
        matches!(kind, Kind::Apply | Kind::Edit { .. })
            && self.current.is_some()
            && self.bake_policy.window_seconds > 0.0
            && !plan.is_some_and(Plan::same_config)
    }

    /// After a successful write: the new revision (its text moved from
    /// `candidate`; `packed`, as the store recorded it) replaces the live
    /// one, and bakes when `baking` (`bakes`).
    fn start_bake(
        &mut self,
        mut candidate: Candidate,
        baking: bool,
        number: u64,
        packed: Option<PackedText>,
    ) {
        self.current_cut = candidate.take_cut();
        let previous = self.current.replace(Kept {
            number,
            text: KeptText::of(packed, || candidate.text),
            file: candidate.file,
        });
        let Some(previous) = previous.filter(|_| baking) else {
            return;
        };
        let now = unix_now();
        self.bake = Some(BakeStatus {
            revision: number,
            state: BakeState::Baking,
            started_at_unix_seconds: now,
            until_unix_seconds: now + self.bake_policy.window_seconds,
            rollback_to: previous.number,
            reason: None,
            rollback_revision: None,
        });
        // Kept as the store recorded it: a rollback decompresses it.
        self.rollback_target = Some(previous);
        // The last bake's detector (windows of 64,000 backends at the
        // declared limits: ~2.5 ms to free, a tenth of a one-VIP apply's
        // own time) is freed on a thread of its own, not in the request's.
        let last = std::mem::replace(&mut self.capacity_detector, Detector::verdicts_only());
        crate::memory::drop_aside(last);
    }

    fn audit_operator_apply(
        &mut self,
        candidate: &Candidate,
        config_hash: String,
        kind: &Kind,
        force: bool,
        plan: &Plan,
        result: &Result<u64, ApplyError>,
    ) {
        let origin = &candidate.origin;
        let (event, revision, detail) = match result {
            Ok(n) => (
                "apply",
                Some(*n),
                match (force && plan.refused(), &origin.message) {
                    (true, m) => Some(format!(
                        "forced past {} safety findings; {}",
                        plan.lints.len(),
                        m.as_deref().unwrap_or("")
                    )),
                    (false, m) => m.clone(),
                },
            ),
            Err(e) => ("failed", None, Some(e.to_string())),
        };
        // An edit says which: `drain web b2; <message>`.
        let detail = match (kind, detail) {
            (Kind::Edit { command }, Some(d)) => Some(format!("{command}; {d}")),
            (Kind::Edit { command }, None) => Some(command.clone()),
            (_, d) => d,
        };
        self.audit(
            event,
            &origin.user,
            revision,
            Some(&candidate.file),
            Some(config_hash),
            detail,
        );
    }

    /// Take over what an earlier daemon left in the pinned maps: the applied
    /// state becomes `candidate`'s (the live revision `number`, when it is one)
    /// under the ids the maps hold (`adopt::adopt`), so the next apply moves
    /// only what changes. Where the maps differ from it (a daemon killed in
    /// the middle of an apply), they are rewritten to it first, each table
    /// swapped in whole. Returns those differences.
    pub fn adopt(
        &mut self,
        candidate: &Candidate,
        number: Option<u64>,
    ) -> Result<Vec<String>, ApplyError> {
        let (config, file) = (&candidate.config, &candidate.file);
        let live = self.dataplane.read_live()?;
        let adopted = xlb_core::adopt::adopt(config, &self.host, &live)?;
        if !adopted.differences.is_empty() {
            for d in &adopted.differences {
                log::warn!("adopting {file}: the pinned maps differ: {d}");
            }
            self.dataplane
                .reconcile(&self.host, &adopted.desired, &adopted.stray)?;
        }
        self.dataplane.adopt_tables(&adopted.desired)?;
        self.at_apply = self.packets_at(&adopted.desired);
        self.drift.clear();
        self.drift_checked_at.clear();
        self.applied = Some(adopted.desired);
        self.publish_counted();
        self.health_adopt(adopted.health);
        if let Some(n) = number {
            self.revision = n;
            self.current = Some(Kept::recorded(
                self.revisions.as_ref(),
                n,
                file.clone(),
                || candidate.text.clone(),
            ));
            self.current_cut = candidate
                .cut
                .clone()
                .or_else(|| xlb_core::config::TextCut::of(&candidate.text));
        }
        self.applied_at = SystemTime::now();
        self.applied_instant = Instant::now();
        Ok(adopted.differences)
    }

    /// Build the tables of `config` (those `prebuilt` holds are taken from
    /// there) and swap them in; nothing is written unless everything
    /// validated. Returns the revision and the state it replaced.
    fn write(
        &mut self,
        config: Config,
        file: &str,
        number: u64,
        prebuilt: Option<Prebuilt>,
    ) -> Result<(u64, Option<Desired>), ApplyError> {
        let changes = self.restart_only(&config);
        if !changes.is_empty() {
            return Err(ApplyError::RestartOnly {
                file: file.to_string(),
                changes,
            });
        }
        let empty = Allocation::default();
        let previous = self.applied.as_ref();
        // A sign of life once the tables are built and once they are
        // swapped, so a long apply that progresses is never taken for a
        // wedged one (notify.rs).
        let progress = self.metrics.progress.clone();
        let started = Instant::now();
        // Only the tables whose inputs changed are built again.
        let mut desired = state::desired_reusing(
            Cow::Owned(config),
            previous.map_or(&empty, |p| &p.allocation),
            previous,
            prebuilt,
            &|| progress.beat(),
        )?;
        // Backends the checks call down stay out of the new tables.
        let memberships =
            xlb_core::health::patch_desired(&health::lock(&self.health), &mut desired);
        self.metrics
            .maglev_build
            .observe(started.elapsed().as_secs_f64());
        self.metrics.progress.beat();
        let swaps = self
            .dataplane
            .apply_with_progress(self.host, &desired, previous, &|| progress.beat())?;
        for seconds in swaps {
            self.metrics.table_swap.observe(seconds);
        }
        self.at_apply = self.packets_at(&desired);
        // What the drift check compared is history now.
        self.drift.clear();
        self.drift_checked_at.clear();
        let replaced = self.applied.replace(desired);
        self.publish_counted();
        self.health_follow(memberships);
        self.revision = number;
        self.applied_at = SystemTime::now();
        self.applied_instant = Instant::now();
        log::info!("applied revision {} from {file}", self.revision);
        Ok((self.revision, replaced))
    }
}
