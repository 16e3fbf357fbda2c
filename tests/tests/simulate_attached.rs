//! `xlb simulate` against the attached program: the same synthetic flows,
//! injected as frames on the client's wire in the namespace testbed, go
//! through the daemon's attached XDP program; each backend's share of those
//! new flows (the daemon's counters) matches what `simulate` reported,
//! within 1 point.

use std::os::fd::AsRawFd;

use anyhow::{Context as _, ensure};
use nix::libc;
use tests::testbed::{self, Testbed};
use tests::xlbd::Daemon;

const FLOWS: usize = 20_000;

#[test]
fn simulated_shares_match_the_attached_program() {
    tests::require_privileges!();
    tests::in_workdir("simulate-attached", run);
}

fn mac(text: &str) -> [u8; 6] {
    let v: Vec<u8> = text
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

/// Send `frames` out of `ifname` with a raw AF_PACKET socket (run inside the
/// namespace that has the interface).
fn inject(ifname: &str, frames: &[Vec<u8>]) -> anyhow::Result<usize> {
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    ensure!(
        fd >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: fd is a fresh, valid descriptor we own.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let name = std::ffi::CString::new(ifname)?;
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    ensure!(ifindex != 0, "no interface {ifname}");
    // SAFETY: zeroed sockaddr_ll is valid; fields set below.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = ifindex as i32;
    addr.sll_halen = 6;
    let mut sent = 0;
    for (i, frame) in frames.iter().enumerate() {
        addr.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: frame and addr outlive the call.
        let n = unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n == frame.len() as isize {
            sent += 1;
        }
        // A pause now and then, so the veth and the XDP path keep up.
        if i % 200 == 199 {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
    Ok(sent)
}

fn run(dir: &std::path::Path) -> anyhow::Result<()> {
    let bed = Testbed::new("xs", 3)?;
    let text = testbed::config(&[1, 1, 2]);
    let path = dir.join("xlb.toml");
    std::fs::write(&path, &text)?;
    let config = xlb_core::config::parse(&text, "xlb.toml")?;
    let daemon = Daemon::start_with(&bed.lb.ns, &path, dir, &["--bake-window", "0s"])?;

    // What simulate says, for web (IPv4, TCP).
    let opts = xlb_dataplane::staging::SimulateOptions {
        flows: FLOWS,
        seed: 7,
        pcap: None,
    };
    let report = xlb_dataplane::staging::simulate(&config, &opts)?;
    let web = report
        .vips
        .iter()
        .find(|v| v.name == "web")
        .context("web in the report")?;

    // The same flows, on the wire: to the LB's MAC, from the client's.
    let frames = xlb_dataplane::staging::synthetic_frames(&config, &opts)
        .into_iter()
        .find(|(name, _)| name == "web")
        .context("web's frames")?
        .1;
    let (lb_mac, client_mac) = (mac(&bed.lb.mac), mac(&bed.client.mac));
    let frames: Vec<Vec<u8>> = frames
        .into_iter()
        .map(|mut f| {
            f[..6].copy_from_slice(&lb_mac);
            f[6..12].copy_from_slice(&client_mac);
            f
        })
        .collect();
    let sent = tests::netns::Netns::in_named(&bed.client.ns.name, move || inject("eth0", &frames))?;
    ensure!(sent == FLOWS, "sent {sent} of {FLOWS} frames");
    std::thread::sleep(std::time::Duration::from_millis(500));

    let status = daemon.status()?;
    let live = status["vips"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "web")
        .context("web in status")?;
    let total: f64 = live["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["new_flows"].as_f64().unwrap())
        .sum();
    ensure!(
        total >= FLOWS as f64 * 0.95,
        "the attached program saw only {total} of {FLOWS} new flows"
    );
    for b in &web.backends {
        let got = live["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == b.name.as_str())
            .context("backend in status")?["new_flows"]
            .as_f64()
            .unwrap()
            / total;
        let simulated = b.simulated_share_ratio.context("simulated share")?;
        eprintln!("{}: simulate {simulated:.4}, attached {got:.4}", b.name);
        ensure!(
            (got - simulated).abs() <= 0.01,
            "{}: simulate said {simulated:.4}, the attached program did {got:.4}",
            b.name
        );
    }
    Ok(())
}
