//! `xlb run`: check what the daemon needs before it starts, then run it.

use std::path::{Path, PathBuf};

use xlb_core::change::{Candidate, Origin};

use crate::user::current_user;

use super::args::RunArgs;
use super::output::Failure;
use crate::daemon;

pub(super) fn run(socket: &Path, args: &RunArgs) -> Result<(), Failure> {
    let RunArgs {
        config: file,
        xdp_mode,
        metrics_address,
        state_dir,
        keep_revisions,
        bake_window,
        bake_hold,
        bake_tick,
        socket_group,
        bpffs,
        object,
        announce_table,
        announce_hold,
        withdraw_grace,
        fleet,
    } = args.clone();
    let socket_group = socket_group
        .map(|g| daemon::peer::SocketGroup::resolve(&g))
        .transpose()
        .map_err(Failure::bad_input)?;
    daemon::peer::preflight(socket, socket_group.as_ref()).map_err(Failure::bad_input)?;
    let text = std::fs::read_to_string(&file)
        .map_err(|e| Failure::bad_input(format!("{}: cannot read: {e}", file.display())))?;
    let origin = Origin::daemon(current_user(), "daemon start");
    let candidate =
        Candidate::parse(text, file.display().to_string(), origin).map_err(Failure::bad_input)?;
    // After the config: a bad file is bad input (`file:line:col:`) for
    // anyone who runs this, privileged or not.
    daemon::privileges::check("xlb run", daemon::privileges::DAEMON).map_err(Failure::internal)?;
    let state_dir = state_dir
        .unwrap_or_else(|| PathBuf::from("/var/lib/xlb").join(&candidate.config.interface));
    let fleet = match (&fleet.fleet, &fleet.node) {
        (Some(url), Some(node)) => Some(daemon::fleet::FleetOptions {
            address: fleet.tls.address(url).map_err(Failure::bad_input)?,
            node: node.clone(),
            state_dir: state_dir.clone(),
        }),
        _ => None,
    };
    daemon::run(daemon::RunOptions {
        candidate,
        socket: socket.to_path_buf(),
        mode: xdp_mode.into(),
        metrics_address,
        state_dir,
        keep_revisions: keep_revisions as usize,
        bake: daemon::controller::BakePolicy {
            window_seconds: bake_window.as_secs_f64(),
            hold_seconds: bake_hold.as_secs_f64(),
        },
        bake_tick,
        socket_group,
        bpffs,
        object,
        announce_table,
        announce_hold,
        withdraw_grace,
        fleet,
    })
    .map_err(|e| match e {
        daemon::start::StartError::BadInput(e) => Failure::bad_input(format!("{e:#}")),
        daemon::start::StartError::Failed(e) => Failure::internal(format!("{e:#}")),
    })
}
