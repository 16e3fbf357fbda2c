//! `xlb detach`: remove a stopped daemon's pinned link and maps.

use std::path::Path;

use xlb_core::api::{Request, Response};

use super::client;
use super::output::{Failure, Output, print_json};

/// `xlb detach --interface IF`: unpin the link and the maps of `interface`.
pub fn detach(socket: &Path, output: Output, interface: &str, bpffs: &Path) -> Result<(), Failure> {
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
        }));
    } else if !removed.link && removed.maps.is_empty() {
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
    Ok(())
}
