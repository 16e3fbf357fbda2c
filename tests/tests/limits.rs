//! The declared limits, end to end: the largest config `xlb validate`
//! accepts (1,024 VIPs, each on an address of its own with ICMP echo
//! answered, 64 backends each: 65,536 backends) starts the real daemon on
//! the namespace testbed and serves real TCP and pings to VIPs at the start,
//! middle and end of the file; one VIP or one backend more is refused by
//! `xlb validate`, naming the limit; renaming every backend at once needs
//! more backend ids than there are, which `xlb plan` says as `xlb apply`
//! does. A privileged test
//! (`tests::require_privileges!`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use lb_common::maps::{MAX_BACKENDS, MAX_VIPS};
use tests::client::{Proto, Tally, Until, drive};
use tests::servers::Servers;
use tests::testbed::{TCP_PORT, Testbed};
use tests::xlbd::{Daemon, describe, xlb_binary};

const PER_VIP: u32 = MAX_BACKENDS / MAX_VIPS;
/// The smallest table validation allows for 64 backends (100 slots each).
const TABLE_SIZE: u32 = 6421;

/// VIP `i`'s address: 198.18.100.1, ... (250 a /24).
fn vip_address(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 100 + (i / 250) as u8, (i % 250 + 1) as u8)
}

/// `vips` VIPs of `PER_VIP` backends (one VIP has `extra` more). Every
/// backend's frames go to the testbed's b1 or b2 by MAC (L2 DSR rewrites
/// only the MAC); their addresses, distinct per VIP, are never used.
fn config(vips: u32, extra: u32) -> String {
    config_named(vips, extra, "b")
}

/// [`config`], backend `j` named `{prefix}{j}`.
fn config_named(vips: u32, extra: u32, prefix: &str) -> String {
    let mut text = String::from("interface = \"eth0\"\nhash_seed = 1\nicmp_echo = \"reply\"\n");
    for i in 0..vips {
        text.push_str(&format!(
            "[[vip]]\nname = \"vip{i}\"\naddress = \"{}\"\nport = {TCP_PORT}\nprotocol = \"tcp\"\ntable_size = {TABLE_SIZE}\n",
            vip_address(i)
        ));
        let backends = PER_VIP + if i == 0 { extra } else { 0 };
        for j in 0..backends {
            text.push_str(&format!(
                "[[vip.backend]]\nname = \"{prefix}{j}\"\naddress = \"198.18.{}.{}\"\nmac = \"02:00:00:00:00:{}\"\n",
                2 + j / 250,
                j % 250 + 1,
                11 + j % 2
            ));
        }
    }
    text
}

fn validate(dir: &std::path::Path, name: &str, text: &str) -> std::process::Output {
    let file = dir.join(name);
    std::fs::write(&file, text).expect("write the config");
    std::process::Command::new(xlb_binary().expect("the xlb binary"))
        .arg("validate")
        .arg(&file)
        .output()
        .expect("run xlb validate")
}

#[test]
fn the_largest_valid_config_starts_and_serves() {
    tests::require_privileges!();
    let dir = std::env::temp_dir().join(format!("xlb-limits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    // One VIP or one backend past the limits: refused, naming the limit.
    let out = validate(&dir, "vips.toml", &config(MAX_VIPS + 1, 0));
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        describe(&out).contains(&format!("at most {MAX_VIPS}")),
        "{}",
        describe(&out)
    );
    let out = validate(&dir, "backends.toml", &config(MAX_VIPS, 1));
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        describe(&out).contains(&format!("at most {MAX_BACKENDS}")),
        "{}",
        describe(&out)
    );
    let text = config(MAX_VIPS, 0);
    let out = validate(&dir, "xlb.toml", &text);
    assert!(out.status.success(), "{}", describe(&out));

    let bed = Testbed::new("xlblim", 2).unwrap();
    // The VIPs past the testbed's 198.18.100.0/24 go via the LB too.
    for net in 101..=104 {
        bed.client
            .ns
            .ip(&[
                "route",
                "add",
                &format!("198.18.{net}.0/24"),
                "via",
                "198.18.0.2",
            ])
            .unwrap();
    }
    let probed = [0, MAX_VIPS / 2, MAX_VIPS - 1];
    for b in &bed.backends {
        for &i in &probed[1..] {
            b.ns.ip(&[
                "addr",
                "add",
                &format!("{}/32", vip_address(i)),
                "dev",
                "lo",
            ])
            .unwrap();
        }
    }
    let _servers = Servers::start(&bed).unwrap();
    let daemon = Daemon::start(&bed.lb.ns, &dir.join("xlb.toml"), &dir)
        .expect("the daemon starts with the largest valid config");
    let status = daemon.status().unwrap();
    assert_eq!(
        status["vips"].as_array().map(Vec::len),
        Some(MAX_VIPS as usize),
        "every VIP in the status"
    );

    for &i in &probed {
        let address = vip_address(i);
        let target = SocketAddr::new(IpAddr::V4(address), TCP_PORT);
        let exchanges = drive(&bed.client.ns, target, Proto::Tcp, 2, Until::Count(20));
        let tally = Tally::of(&exchanges);
        assert_eq!(
            tally.total_ok(),
            20,
            "vip{i} at {address}: every connection served: {tally:?}"
        );
        let ping = bed
            .client
            .ns
            .exec(&["ping", "-c", "1", "-W", "3", &address.to_string()]);
        assert!(ping.is_ok(), "vip{i} at {address} answers a ping: {ping:?}");
    }

    // Every backend renamed at once: 65,536 new ids beside the 65,536 the
    // live config holds. The plan fails as the apply does (bad input,
    // exit 2, naming the limit), and nothing is applied.
    let renamed = dir.join("renamed.toml");
    std::fs::write(&renamed, config_named(MAX_VIPS, 0, "r")).unwrap();
    let renamed = renamed.to_str().unwrap();
    let revision = daemon.status().unwrap()["revision"].clone();
    for args in [
        &["plan", "--force", renamed][..],
        &["apply", "--force", renamed],
    ] {
        let out = daemon.xlb(args).unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
        assert!(
            describe(&out).contains(&format!("out of backend ids (at most {MAX_BACKENDS}")),
            "{args:?}: {}",
            describe(&out)
        );
    }
    assert_eq!(daemon.status().unwrap()["revision"], revision);
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}
