//! Lost packets, as TCP saw them: segments the client and the backends of a
//! testbed retransmitted (restart.rs, package.rs: a restart or an upgrade
//! under traffic loses none).

use anyhow::Context as _;

use crate::testbed::Testbed;

/// TCP segments the client and the backends retransmitted so far, after
/// a timeout or a duplicate ACK (a lost segment: TCP hides a short outage
/// from the connections, not from this count). Tail loss probes, which a
/// slow scheduler can send with nothing lost, are left out.
pub fn retransmitted(bed: &Testbed) -> anyhow::Result<i64> {
    // `name` in the "Prefix:" table of a /proc/net file: a header line of
    // names, then a line of values.
    fn field(text: &str, prefix: &str, name: &str) -> anyhow::Result<i64> {
        let mut lines = text.lines().filter(|l| l.starts_with(prefix));
        let (names, values) = (
            lines.next().context("header")?,
            lines.next().context("values")?,
        );
        let at = names
            .split_whitespace()
            .position(|n| n == name)
            .with_context(|| format!("no {name}"))?;
        Ok(values
            .split_whitespace()
            .nth(at)
            .context("value")?
            .parse()?)
    }
    let mut total = 0;
    for host in std::iter::once(&bed.client).chain(&bed.backends) {
        let snmp = host.ns.exec(&["cat", "/proc/net/snmp"])?;
        let netstat = host.ns.exec(&["cat", "/proc/net/netstat"])?;
        total +=
            field(&snmp, "Tcp:", "RetransSegs")? - field(&netstat, "TcpExt:", "TCPLossProbes")?;
    }
    Ok(total)
}
