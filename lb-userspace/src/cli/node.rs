//! `xlb node drain|undrain|status`: this node in its fleet. A drain
//! withdraws every VIP from the routers (the daemon's routes in its
//! `--announce-table`), waits until the routes are gone, and shows the
//! traffic still arriving (flows the routers have not moved yet, and
//! long-lived connections pinned here); the tables keep forwarding it.

use std::time::{Duration, Instant};

use xlb_core::announce::Reason;
use xlb_core::api::{NodeAction, Request};
use xlb_core::status::{self, SCHEMA_VERSION, Status};

use super::args::{Cli, NodeCommand};
use super::client::Client;
use super::output::{Failure, Output, print_json};
use crate::user::current_user;

/// How long `xlb node drain` waits for the routes to be withdrawn (the
/// daemon writes them at once; a second or two when it is busy).
const WITHDRAW_WAIT: Duration = Duration::from_secs(10);

pub(super) fn run(cli: &Cli, command: &NodeCommand) -> Result<(), Failure> {
    let client = Client::new(&cli.socket);
    let (action, message) = match command {
        NodeCommand::Status => return show(cli.output, &client.status()?),
        NodeCommand::Drain { message } => (NodeAction::Drain, message),
        NodeCommand::Undrain { message } => (NodeAction::Undrain, message),
    };
    let request = Request::Node {
        action,
        user: current_user(),
        message: message.clone(),
    };
    client.node(&request)?;
    // The daemon writes the routes on its next pass: wait for it, so
    // "drained" means withdrawn.
    let deadline = Instant::now() + WITHDRAW_WAIT;
    let status = loop {
        let s = client.status()?;
        if settled(&s, action) {
            break s;
        }
        if Instant::now() >= deadline {
            return Err(Failure::internal(format!(
                "the daemon took the {} but its routes did not follow within {}s: {}",
                match action {
                    NodeAction::Drain => "drain",
                    NodeAction::Undrain => "undrain",
                },
                WITHDRAW_WAIT.as_secs(),
                s.announce
                    .as_ref()
                    .and_then(|a| a.error.clone())
                    .unwrap_or_else(|| "see `xlb node status` and the daemon's log".to_string())
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    show(cli.output, &status)
}

/// The routes follow the node's state: none once drained; once undrained,
/// every address the decision announces.
fn settled(s: &Status, action: NodeAction) -> bool {
    let Some(a) = &s.announce else {
        return true;
    };
    if a.table.is_none() {
        return true;
    }
    match action {
        NodeAction::Drain => a.routes.is_empty(),
        // Decided since the undrain (no VIP still says "drained"), and
        // every announced address routed.
        NodeAction::Undrain => s.vips.iter().all(|v| match &v.announce {
            None => true,
            Some(x) if x.reason == Reason::NodeDrained => false,
            Some(x) => !x.announced || a.routes.iter().any(|r| r.to_string() == v.address),
        }),
    }
}

fn show(output: Output, s: &Status) -> Result<(), Failure> {
    if output == Output::Json {
        let (pps, nfs) = status::arriving(s);
        print_json(&serde_json::json!({
            "schema_version": SCHEMA_VERSION,
            "node": s.announce,
            "vips": s.vips.iter().map(|v| serde_json::json!({
                "name": v.name,
                "address": v.address,
                "announce": v.announce,
            })).collect::<Vec<_>>(),
            "arriving_packets_per_second": pps,
            "arriving_new_flows_per_second": nfs,
            "conn_table_entries": s.conn_table.as_ref().map(|c| c.entries),
        }));
    } else {
        print!("{}", status::render_node(s));
    }
    Ok(())
}
