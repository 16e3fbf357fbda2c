//! Test support: the privilege check, frame building, namespaces, servers,
//! clients and the daemon, for the integration tests and the demo.

pub mod browser;
pub mod client;
pub mod confine;
pub mod cpu_time;
pub mod depth_frames;
pub mod echo;
pub mod etcd;
pub mod fleet;
pub mod fuzz_oracle;
pub mod haproxy;
pub mod logins;
pub mod loss;
pub mod netns;
pub mod packets;
pub mod privileges;
pub mod prom;
pub mod servers;
pub mod testbed;
pub mod tunnel;
pub mod xlbd;

/// Poll `f` every `every` until it is true or `limit` passed (then an
/// error saying `what` did not happen); how long it took.
pub fn wait_until(
    limit: std::time::Duration,
    every: std::time::Duration,
    what: &str,
    mut f: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<std::time::Duration> {
    let started = std::time::Instant::now();
    loop {
        if f()? {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            anyhow::bail!("{what}: not within {limit:?}");
        }
        std::thread::sleep(every);
    }
}

/// Run `f` in a fresh work directory `<tmp>/xlb-<name>-<pid>`; removed
/// after a success, kept (and named in the panic) after a failure.
pub fn in_workdir(name: &str, f: impl FnOnce(&std::path::Path) -> anyhow::Result<()>) {
    let dir = std::env::temp_dir().join(format!("xlb-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("work directory");
    match f(&dir) {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&dir);
        }
        Err(e) => panic!("{e:#}\n(files kept in {})", dir.display()),
    }
}
