//! `xlb detach`: remove a stopped daemon's pinned link and maps.

use std::path::Path;

use xlb_core::api::{Request, Response};

use super::client;
use super::output::{Failure, Output, print_json};

/// `xlb detach --interface IF`: withdraw xlb's routes from
/// `announce_table` first (the routers stop sending before forwarding
/// stops), then unpin the link and the maps of `interface`.
pub fn detach(
    socket: &Path,
    output: Output,
    interface: &str,
    bpffs: &Path,
    announce_table: Option<u32>,
) -> Result<(), Failure> {
    if let Ok(Response::Status(s)) = client::call(socket, &Request::Status)
        && s.interface == interface
    {
        return Err(Failure {
            code: 1,
            message: format!(
                "the xlb daemon on {} serves {interface}: stop it first (SIGTERM leaves forwarding running), then detach",
                socket.display()
            ),
        });
    }
    let withdrawn = match announce_table {
        Some(table) => withdraw(table).map_err(Failure::internal)?,
        None => Vec::new(),
    };
    let removed = if xlb_dataplane::is_bpffs(bpffs) {
        xlb_dataplane::PinDir::new(bpffs, interface)
            .remove()
            .map_err(Failure::internal)?
    } else {
        xlb_dataplane::Removed {
            dir: xlb_dataplane::PinDir::new(bpffs, interface)
                .path()
                .display()
                .to_string(),
            ..Default::default()
        }
    };
    if output == Output::Json {
        print_json(&serde_json::json!({
            "schema_version": xlb_core::status::SCHEMA_VERSION,
            "interface": interface,
            "dir": removed.dir,
            "link_removed": removed.link,
            "maps_removed": removed.maps,
            "routes_withdrawn": withdrawn,
        }));
    } else {
        if let Some(table) = announce_table {
            println!(
                "withdrew {} route(s) of xlb from table {table}",
                withdrawn.len()
            );
        }
        print_removed(&removed, interface);
    }
    Ok(())
}

/// Remove every route of xlb from `table`: the addresses withdrawn.
fn withdraw(table: u32) -> anyhow::Result<Vec<std::net::IpAddr>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let routes = xlb_routes::Routes::open(table)?;
        let synced = routes.sync(&Default::default()).await?;
        Ok(synced.removed)
    })
}

fn print_removed(removed: &xlb_dataplane::Removed, interface: &str) {
    if !removed.link && removed.maps.is_empty() {
        println!(
            "nothing pinned in {}: {interface} has no xlb to detach",
            removed.dir
        );
    } else {
        println!(
            "detached xlb from {interface}: removed {}{} pinned maps from {}",
            if removed.link { "the link and " } else { "" },
            removed.maps.len(),
            removed.dir
        );
    }
}
