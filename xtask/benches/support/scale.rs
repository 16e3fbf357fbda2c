//! The control plane at its declared scale: 1,000 VIPs x 64 backends, each
//! VIP on an address of its own, the backends shared by name.

pub const VIPS: usize = 1000;
pub const BACKENDS: usize = 64;
/// The smallest prime with 100 slots per backend (config validation's floor).
pub const TABLE_SIZE: u32 = 6421;

/// `header` (top-level keys, one per line), then `VIPS` VIPs of `BACKENDS`
/// backends; `weight` for the first backend of the first VIP, 1 elsewhere.
pub fn config(header: &str, weight: u32) -> String {
    config_of(header, weight, BACKENDS)
}

/// [`config`] with `backends` backends per VIP (at most `BACKENDS`; the
/// table size stays `TABLE_SIZE`).
pub fn config_of(header: &str, weight: u32, backends: usize) -> String {
    text(header, VIPS, backends, TABLE_SIZE, |v, b| {
        if v == 0 && b == 0 { weight } else { 1 }
    })
}

/// How the VIPs' backends are named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pools {
    /// `b0`, `b1`, ... in every VIP: one pool serves them all (with equal
    /// weights, one Maglev table for all).
    Shared,
    /// `v7b0`, `v7b1`, ... in VIP 7: a pool of its own per VIP, so a table
    /// of its own per VIP.
    Own,
}

/// `header`, then `vips` VIPs (each on an address of its own) of `backends`
/// backends (shared by name) in `table_size` slots, backend `b` of VIP `v`
/// at `weight(v, b)`.
pub fn text(
    header: &str,
    vips: usize,
    backends: usize,
    table_size: u32,
    weight: impl Fn(usize, usize) -> u32,
) -> String {
    text_of(header, vips, backends, table_size, weight, Pools::Shared)
}

/// [`text`], with the backends named as `pools` says.
pub fn text_of(
    header: &str,
    vips: usize,
    backends: usize,
    table_size: u32,
    weight: impl Fn(usize, usize) -> u32,
    pools: Pools,
) -> String {
    let mut text = header.to_string();
    for v in 0..vips {
        text.push_str(&format!(
            "[[vip]]\nname = \"vip{v}\"\naddress = \"198.18.{}.{}\"\nport = 80\nprotocol = \"tcp\"\ntable_size = {table_size}\n",
            100 + v / 250,
            v % 250 + 1
        ));
        let pool = match pools {
            Pools::Shared => String::new(),
            Pools::Own => format!("v{v}"),
        };
        for b in 0..backends {
            let w = weight(v, b);
            text.push_str(&format!(
                "[[vip.backend]]\nname = \"{pool}b{b}\"\naddress = \"198.18.0.{}\"\nmac = \"02:00:00:00:01:{b:02x}\"\nweight = {w}\n",
                b + 1
            ));
        }
    }
    text
}
