//! Hitless restart and upgrade: what `xlb run` does with the pins of an
//! earlier daemon, and SIGHUP.
//!
//! 1. After `start::check` (bpffs made sure of, the locks taken, every
//!    check that can fail done), what is pinned for the interface is
//!    checked against the object about to be loaded (`inspect`: layout
//!    version, map shapes), read only: a mismatch stops the start before
//!    anything is created, loaded or attached, naming `xlb detach`.
//! 2. The object is loaded over the pinned maps (connection table, counters,
//!    tables, backends), and its program put under the pinned link with one
//!    bpf_link_update: the old program forwards until the new one replaces
//!    it. Without a link pin, the program is attached and its link pinned.
//! 3. The first apply (`first_apply`): maps some daemon wrote are adopted
//!    under the live revision recorded in the state directory (its ids read
//!    back from the maps, `adopt::adopt`), so nothing is rewritten; a bake
//!    it was in resumes (`Controller::resume_bake`); then `--config` is
//!    judged against it (`xlb_core::reload`, `sync_file`): applied through
//!    plan and the safety checks like `xlb apply` only when that reverts no
//!    change made through the daemon, else kept out and said to differ
//!    (status, log, `xlb_config_file_differs`). Fresh maps get `--config`
//!    as the startup revision, as a first start always did.
//!
//! SIGHUP (`reload`) judges the file the same way.
//!
//! SIGTERM, SIGINT and SIGKILL leave the pins, so forwarding goes on with
//! the last applied tables until the next start; `xlb detach` removes them.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;

use xlb_core::change::{ApplyOptions, Candidate, Origin};
use xlb_core::clock::unix_now;
use xlb_core::reload::{ConfigFileStatus, Verdict, judge};

use crate::daemon::controller::{ApplyError, Controller};
use crate::daemon::start::{self, StartError};
use xlb_core::revision::Kind;
use xlb_core::state::Prebuilt;
use xlb_dataplane::{Attached, Dataplane, DataplaneError, PinDir, Pinned, balancer_object};

/// Ignore SIGHUP until the reload handler is installed (its default action
/// would end the daemon during the start).
pub fn ignore_hangup_for_now() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: SIG_IGN runs no code of ours.
    let _ = unsafe { signal(Signal::SIGHUP, SigHandler::SigIgn) };
}

/// Step 1, read only: the object this start will load, and what is pinned
/// for `interface` under `bpffs` (which `start::check` made sure of),
/// checked against it. Nothing is created, loaded or attached.
pub struct Inspected {
    pins: PinDir,
    object: Cow<'static, [u8]>,
    conn_table_size: u32,
    pub pinned: Pinned,
}

pub fn inspect(
    interface: &str,
    conn_table_size: u32,
    bpffs: &Path,
    object: Option<&Path>,
) -> Result<Inspected, StartError> {
    let pins = PinDir::new(bpffs, interface);
    let object: Cow<'static, [u8]> = match object {
        Some(path) => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("--object {}: cannot read", path.display()))
                .map_err(StartError::BadInput)?;
            log::info!("balancer object from {}", path.display());
            Cow::Owned(bytes)
        }
        None => Cow::Borrowed(balancer_object()),
    };
    let pinned = match pins.inspect(&object, conn_table_size) {
        Ok(pinned) => pinned,
        Err(DataplaneError::Pin(e)) => return Err(start::pin_error(e)),
        Err(e) => return Err(StartError::failed(e)),
    };
    Ok(Inspected {
        pins,
        object,
        conn_table_size,
        pinned,
    })
}

/// Step 2: the inspected balancer loaded over the pins and attached; what
/// was pinned before.
pub fn load_and_attach(
    inspected: Inspected,
    interface: &str,
    mode: xlb_dataplane::AttachMode,
) -> anyhow::Result<(Dataplane, Pinned)> {
    let Inspected {
        pins,
        object,
        conn_table_size,
        pinned,
    } = inspected;
    pins.create()?;
    if pinned.holds_state() || pinned.link {
        log::info!(
            "{}: {} pinned maps{}; adopting them",
            pins.path().display(),
            pinned.maps.len(),
            if pinned.link { " and the link" } else { "" }
        );
    }
    let mut dataplane = Dataplane::load_pinned(&object, conn_table_size, &pins)
        .context("loading the XDP program")?;
    match dataplane.attach_pinned(interface, mode, &pins)? {
        Attached::Fresh { program_id } => log::info!(
            "attached xlb_balancer (program {program_id}) to {interface}; link pinned at {}",
            pins.link_path().display()
        ),
        Attached::Replaced {
            old_program_id,
            program_id,
        } => log::info!(
            "program {program_id} replaced program {old_program_id} under the pinned link on {interface} (no gap)"
        ),
    }
    Ok((dataplane, pinned))
}

/// Step 3: the startup candidate (the config file, parsed where it entered
/// the daemon) adopted or applied. Returns the revision in force.
pub fn first_apply(
    controller: &mut Controller,
    pinned: &Pinned,
    candidate: Candidate,
    ahead: Option<Prebuilt>,
) -> anyhow::Result<u64> {
    let file = candidate.file.clone();
    if pinned.holds_state() {
        let live = match controller.revisions().map(|s| s.latest_applied()) {
            Some(Ok(rev)) => rev,
            Some(Err(e)) => {
                log::warn!("reading the live revision: {e}");
                None
            }
            None => None,
        };
        if let Some(rev) = live {
            let adopted =
                Candidate::parse(&rev.config_text, &rev.config_file, candidate.origin.clone())
                    .map_err(ApplyError::from)
                    .and_then(|recorded| controller.adopt(&recorded, Some(rev.number)));
            match adopted {
                Ok(differences) => {
                    log::info!(
                        "adopted revision {} from the pinned maps ({})",
                        rev.number,
                        if differences.is_empty() {
                            "they hold exactly it".to_string()
                        } else {
                            format!("{} differences rewritten", differences.len())
                        }
                    );
                    let history = history(controller);
                    controller.resume_bake(&rev, &history);
                    let text = candidate.text.clone();
                    let candidate = Candidate {
                        origin: Origin::daemon(
                            candidate.origin.user,
                            format!("daemon start: {file} differs from revision {}", rev.number),
                        ),
                        ..candidate
                    };
                    return Ok(match sync_file(controller, &file, &text, Ok(candidate)) {
                        Ok(Reload::Unchanged(n)) => {
                            log::info!("{file} is revision {n}: nothing to apply");
                            n
                        }
                        Ok(Reload::Applied(n)) => {
                            log::info!(
                                "{file} differed from revision {}: applied through plan as revision {n}",
                                rev.number
                            );
                            n
                        }
                        Ok(Reload::Kept(n)) => n,
                        Err(e) => {
                            log::warn!(
                                "{file} not applied at start: {e}; serving revision {} (`xlb apply` it to retry)",
                                rev.number
                            );
                            rev.number
                        }
                    });
                }
                Err(e) => log::warn!(
                    "revision {} cannot be adopted ({e}); adopting the pinned maps for {file} instead",
                    rev.number
                ),
            }
        } else {
            log::warn!(
                "the pinned maps hold state but no live revision is recorded: adopting them for {file}"
            );
        }
        controller
            .adopt(&candidate, None)
            .context("adopting the pinned maps")?;
    }
    let text = candidate.text.clone();
    let revision = controller
        .apply_prebuilt(candidate, ApplyOptions::unchecked(Kind::Startup), ahead)
        .map(|applied| applied.revision)
        .context("applying the initial config")?;
    controller.set_config_file(ConfigFileStatus::in_sync(
        &file,
        &text,
        revision,
        unix_now(),
    ));
    Ok(revision)
}

/// What a SIGHUP (or the start) did with the config file.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    /// The file is the live revision.
    Unchanged(u64),
    /// The file was applied as this revision.
    Applied(u64),
    /// The file would revert a change made through the daemon: the live
    /// revision is kept (`xlb_core::reload`), and the status says so.
    Kept(u64),
}

/// Every recorded revision (empty, and logged, when the store cannot be
/// read: then no revision counts as applied from the file, and the live
/// revision is kept).
fn history(controller: &Controller) -> Vec<xlb_core::revision::Revision> {
    match controller.revisions().map(|s| s.list()) {
        Some(Ok(revs)) => revs,
        Some(Err(e)) => {
            log::warn!("reading the recorded revisions: {e}");
            Vec::new()
        }
        None => Vec::new(),
    }
}

/// The config file `file` (its `text`, and what it parsed into) judged
/// against the live revision (`xlb_core::reload::judge`): in sync, nothing
/// happens; kept, the controller says the file differs; otherwise it is
/// applied through plan and the safety checks, as `xlb apply` (refused or
/// broken: an error, and the file differs).
fn sync_file(
    controller: &mut Controller,
    file: &str,
    text: &str,
    candidate: Result<Candidate, String>,
) -> Result<Reload, String> {
    let now = unix_now();
    let Some(live) = controller
        .live_revision()
        .map_err(|e| format!("reading the live revision's text: {e}"))?
    else {
        // Nothing applied yet: the file is all there is.
        let candidate = candidate?;
        return controller
            .apply(candidate, ApplyOptions::operator(Kind::Apply, false, None))
            .map(|applied| Reload::Applied(applied.revision))
            .map_err(|e| e.to_string());
    };
    match judge(file, text, &live, &history(controller)) {
        Verdict::InSync => {
            controller.set_config_file(ConfigFileStatus::in_sync(file, text, live.number, now));
            Ok(Reload::Unchanged(live.number))
        }
        Verdict::Keep {
            last_applied,
            reason,
        } => {
            controller.set_config_file(ConfigFileStatus::kept(
                file,
                text,
                live.number,
                last_applied,
                reason,
                now,
            ));
            Ok(Reload::Kept(live.number))
        }
        Verdict::Apply { last_applied } => {
            let not_applied = |controller: &mut Controller, reason: String| {
                controller.set_config_file(ConfigFileStatus::kept(
                    file,
                    text,
                    live.number,
                    Some(last_applied),
                    reason.clone(),
                    now,
                ));
                reason
            };
            let candidate = match candidate {
                Ok(c) => c,
                Err(e) => return Err(not_applied(controller, e)),
            };
            match controller.apply(candidate, ApplyOptions::operator(Kind::Apply, false, None)) {
                Ok(applied) => {
                    controller.set_config_file(ConfigFileStatus::in_sync(
                        file,
                        text,
                        applied.revision,
                        now,
                    ));
                    Ok(Reload::Applied(applied.revision))
                }
                Err(e) => Err(not_applied(controller, e.to_string())),
            }
        }
    }
}

/// Re-read `file` and judge it against the live revision: applied through
/// plan and the safety checks, as `xlb apply` would (all or nothing), only
/// when that reverts no change made through the daemon (`sync_file`); an
/// error says why nothing changed.
pub fn reload(controller: &mut Controller, file: &Path) -> Result<Reload, String> {
    let name = file.display().to_string();
    let text = std::fs::read_to_string(file).map_err(|e| format!("{name}: cannot read: {e}"))?;
    let origin = Origin::daemon(
        crate::user::current_user(),
        format!("SIGHUP: reload of {name}"),
    );
    let candidate = Candidate::parse(text.clone(), name.clone(), origin).map_err(|e| e.to_string());
    sync_file(controller, &name, &text, candidate)
}

/// On each SIGHUP, `reload` the config file; the outcome is logged.
pub async fn reload_on_hangup(
    controller: Arc<Mutex<Controller>>,
    file: PathBuf,
) -> anyhow::Result<()> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    while hup.recv().await.is_some() {
        let (controller, file) = (controller.clone(), file.clone());
        let outcome = tokio::task::spawn_blocking(move || {
            let mut c = controller.lock().unwrap_or_else(|p| p.into_inner());
            let outcome = reload(&mut c, &file);
            (outcome, file)
        })
        .await?;
        match outcome {
            (Ok(Reload::Unchanged(n)), file) => {
                log::info!("SIGHUP: {} is revision {n} already", file.display())
            }
            (Ok(Reload::Applied(n)), file) => {
                log::info!("SIGHUP: applied {} as revision {n}", file.display())
            }
            (Ok(Reload::Kept(n)), file) => log::warn!(
                "SIGHUP: {} differs from live revision {n} and would revert a change made through the daemon: keeping revision {n} (`xlb apply {}` applies the file)",
                file.display(),
                file.display()
            ),
            (Err(e), _) => log::warn!("SIGHUP: reload refused, nothing changed: {e}"),
        }
    }
    Ok(())
}
