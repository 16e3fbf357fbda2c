//! The kernel routing table through which a node announces its VIPs.
//!
//! xlb decides what is announced (`xlb_core::announce`); BIRD speaks BGP.
//! The coupling is one kernel routing table (`xlb run --announce-table`)
//! holding a `blackhole` route per announced VIP address (`/32`, `/128`),
//! with routing protocol number [`PROTOCOL`]. The node's BIRD learns that
//! table (`protocol kernel { kernel table N; learn; ... }`, async netlink,
//! no scan wait) and exports its routes over BGP with the node as next hop
//! (deploy/bird/). No `ip rule` points at the table, so the blackholes
//! never drop anything on the node itself: the XDP program takes the VIP's
//! packets before the stack routes them.
//!
//! Routes outlive the daemon on purpose: a daemon killed with SIGKILL
//! leaves forwarding running from its pins, and its routes announced; a
//! dead host is found by BGP's hold timer or BFD on the speaker.

use std::collections::BTreeSet;
use std::net::IpAddr;

use futures_util::TryStreamExt as _;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteType,
};
use rtnetlink::{Handle, RouteMessageBuilder};

/// The routing protocol number of xlb's routes (`ip route ... proto 248`;
/// BIRD's filter `krt_source = 248`). Unassigned in iproute2's
/// rt_protos (the numbers above 192 are free for local use).
pub const PROTOCOL: u8 = 248;

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("opening a netlink socket: {0}")]
    Open(#[source] std::io::Error),
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
}

/// Is `table` one xlb may announce through? Not 0 (unspecified) nor the
/// kernel's own default (253), main (254) and local (255) tables: a
/// blackhole there would drop the host's traffic.
pub fn check_table(table: u32) -> Result<u32, String> {
    match table {
        0 => Err("0 is not a routing table id".to_string()),
        253..=255 => Err(format!(
            "{table} is the kernel's {} table: a blackhole route there would drop this \
             host's own traffic; use a table of its own (for example 100)",
            ["default", "main", "local"][table as usize - 253]
        )),
        t => Ok(t),
    }
}

/// xlb's routes in one table.
#[derive(Clone, Debug)]
pub struct Routes {
    handle: Handle,
    table: u32,
}

/// What a `sync` changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Synced {
    pub added: Vec<IpAddr>,
    pub removed: Vec<IpAddr>,
}

fn prefix_len(address: IpAddr) -> u8 {
    if address.is_ipv4() { 32 } else { 128 }
}

impl Routes {
    /// A netlink connection in this thread's network namespace, driven by
    /// a task on the current tokio runtime.
    pub fn open(table: u32) -> Result<Self, RouteError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(RouteError::Open)?;
        tokio::spawn(connection);
        Ok(Self { handle, table })
    }

    pub fn table(&self) -> u32 {
        self.table
    }

    fn message(&self, address: IpAddr) -> RouteMessage {
        let builder = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(address, prefix_len(address))
            .expect("a host prefix is valid for its own family");
        builder
            .table_id(self.table)
            .protocol(RouteProtocol::Other(PROTOCOL))
            .kind(RouteType::BlackHole)
            .build()
    }

    /// The addresses xlb holds a route for in this table (host routes
    /// with protocol [`PROTOCOL`]; anything else there is not xlb's).
    pub async fn list(&self) -> Result<BTreeSet<IpAddr>, RouteError> {
        let mut found = BTreeSet::new();
        for family in [
            RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
            RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
        ] {
            let mut routes = self.handle.route().get(family).execute();
            while let Some(route) =
                routes
                    .try_next()
                    .await
                    .map_err(|source| RouteError::Netlink {
                        what: format!("listing the routes of table {}", self.table),
                        source,
                    })?
            {
                if let Some(address) = self.ours(&route) {
                    found.insert(address);
                }
            }
        }
        Ok(found)
    }

    /// `route`'s destination, if it is one of xlb's routes in this table.
    fn ours(&self, route: &RouteMessage) -> Option<IpAddr> {
        let table = route
            .attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::Table(t) => Some(*t),
                _ => None,
            })
            .unwrap_or(u32::from(route.header.table));
        if table != self.table || u8::from(route.header.protocol) != PROTOCOL {
            return None;
        }
        let address = route.attributes.iter().find_map(|a| match a {
            RouteAttribute::Destination(RouteAddress::Inet(a)) => Some(IpAddr::V4(*a)),
            RouteAttribute::Destination(RouteAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
            _ => None,
        })?;
        (route.header.destination_prefix_length == prefix_len(address)).then_some(address)
    }

    /// Hold a route for `address` (replacing one that is there).
    pub async fn add(&self, address: IpAddr) -> Result<(), RouteError> {
        self.handle
            .route()
            .add(self.message(address))
            .replace()
            .execute()
            .await
            .map_err(|source| RouteError::Netlink {
                what: format!("adding the route to {address} in table {}", self.table),
                source,
            })
    }

    /// Remove the route for `address`; a route already gone is no error.
    pub async fn remove(&self, address: IpAddr) -> Result<(), RouteError> {
        match self
            .handle
            .route()
            .del(self.message(address))
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            // ESRCH (IPv4) or ENOENT (IPv6): not there.
            Err(rtnetlink::Error::NetlinkError(e))
                if e.raw_code() == -libc::ESRCH || e.raw_code() == -libc::ENOENT =>
            {
                Ok(())
            }
            Err(source) => Err(RouteError::Netlink {
                what: format!("removing the route to {address} from table {}", self.table),
                source,
            }),
        }
    }

    /// Make the table hold exactly `want`: routes missing are added, xlb's
    /// routes not wanted are removed (other routes are left alone).
    pub async fn sync(&self, want: &BTreeSet<IpAddr>) -> Result<Synced, RouteError> {
        let have = self.list().await?;
        let mut synced = Synced::default();
        for &address in want.difference(&have) {
            self.add(address).await?;
            synced.added.push(address);
        }
        for &address in have.difference(want) {
            self.remove(address).await?;
            synced.removed.push(address);
        }
        Ok(synced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernels_own_tables_are_refused() {
        assert_eq!(check_table(100), Ok(100));
        assert_eq!(check_table(4200), Ok(4200));
        assert!(check_table(0).is_err());
        let main = check_table(254).unwrap_err();
        assert!(main.contains("main table"), "{main}");
        assert!(check_table(255).unwrap_err().contains("local"));
    }
}
