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
//!    back from the maps, `adopt::adopt`), so nothing is rewritten; then
//!    `--config`, when its text differs from that revision, goes through
//!    plan and the safety checks like `xlb apply` (refused: logged, the
//!    adopted revision keeps serving). Fresh maps get `--config` as the
//!    startup revision, as a first start always did.
//!
//! SIGTERM, SIGINT and SIGKILL leave the pins, so forwarding goes on with
//! the last applied tables until the next start; `xlb detach` removes them.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;

use xlb_core::change::{ApplyOptions, Candidate, Origin};

use crate::daemon::controller::{ApplyError, Controller};
use crate::daemon::start::{self, StartError};
use xlb_core::revision::Kind;
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
                    if rev.config_text == candidate.text {
                        log::info!("{file} is revision {}: nothing to apply", rev.number);
                        return Ok(rev.number);
                    }
                    log::info!(
                        "{file} differs from revision {}: applying it through plan",
                        rev.number
                    );
                    let candidate = Candidate {
                        origin: Origin::daemon(
                            candidate.origin.user,
                            format!("daemon start: {file} differs from revision {}", rev.number),
                        ),
                        ..candidate
                    };
                    return match controller
                        .apply(candidate, ApplyOptions::operator(Kind::Apply, false, None))
                    {
                        Ok(applied) => Ok(applied.revision),
                        Err(e) => {
                            log::warn!(
                                "{file} not applied at start: {e}; serving revision {} (`xlb apply` it to retry)",
                                rev.number
                            );
                            Ok(rev.number)
                        }
                    };
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
    controller
        .apply(candidate, ApplyOptions::unchecked(Kind::Startup))
        .map(|applied| applied.revision)
        .context("applying the initial config")
}

/// What a SIGHUP did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    Unchanged(u64),
    Applied(u64),
}

/// Re-read `file` and apply it through plan and the safety checks, as `xlb
/// apply` would (all or nothing); an error says why nothing changed.
pub fn reload(controller: &mut Controller, file: &Path) -> Result<Reload, String> {
    let name = file.display().to_string();
    let text = std::fs::read_to_string(file).map_err(|e| format!("{name}: cannot read: {e}"))?;
    if let Some(live) = controller.live_revision()
        && live.text == text
    {
        return Ok(Reload::Unchanged(live.number));
    }
    let origin = Origin::daemon(
        crate::user::current_user(),
        format!("SIGHUP: reload of {name}"),
    );
    let candidate = Candidate::parse(text, name, origin).map_err(|e| e.to_string())?;
    controller
        .apply(candidate, ApplyOptions::operator(Kind::Apply, false, None))
        .map(|applied| Reload::Applied(applied.revision))
        .map_err(|e| e.to_string())
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
            (Err(e), _) => log::warn!("SIGHUP: reload refused, nothing changed: {e}"),
        }
    }
    Ok(())
}
