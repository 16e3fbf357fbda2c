//! CPU time from /proc, for benchmarks that say where the CPU went: a
//! process's user + system time, and the machine's softirq time.

use std::time::Duration;

use anyhow::Context as _;

/// Clock ticks per second of /proc's CPU times (USER_HZ).
fn ticks_per_second() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64
}

/// User + system CPU time of a process, from /proc/PID/stat.
pub fn process(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces), from field 3;
    // utime and stime are fields 14 and 15.
    let rest = stat
        .rsplit_once(") ")
        .with_context(|| format!("/proc/{pid}/stat: no command name"))?
        .1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i - 3)
            .with_context(|| format!("/proc/{pid}/stat: no field {i}"))?
            .parse()
            .with_context(|| format!("/proc/{pid}/stat: field {i}"))
    };
    let total = ticks(14)? + ticks(15)?;
    Ok(Duration::from_secs_f64(total as f64 / ticks_per_second()))
}

/// CPU time every CPU of the machine has spent in softirq (where XDP and
/// most of the veth and TCP receive work run), from /proc/stat.
pub fn softirq() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let cpu = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("/proc/stat: no cpu line")?;
    // cpu user nice system idle iowait irq softirq ...
    let ticks: u64 = cpu
        .split_whitespace()
        .nth(7)
        .context("/proc/stat: no softirq column")?
        .parse()
        .context("/proc/stat: softirq column")?;
    Ok(Duration::from_secs_f64(ticks as f64 / ticks_per_second()))
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn this_process_and_softirq_are_read() {
        // Burn a little CPU so the figure cannot be zero by accident of
        // tick rounding; /proc counts in 10 ms ticks.
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_mul(31).wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(process(std::process::id()).unwrap() > Duration::ZERO);
        assert!(softirq().is_ok());
    }
}
