//! CPU time from /proc, in clock ticks: of one process, of this process's reaped children
//! (wrk, once waited for), and of the whole machine (to see other load on shared cores).

use std::{fs, io, process::Command, sync::OnceLock};

/// Clock ticks per second (`getconf CLK_TCK`, almost always 100).
pub fn ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Fields of /proc/<pid>/stat after the command name (which may hold spaces): index 0 is
/// field 3 (state), so field N is at N - 3.
fn stat_fields(pid: &str) -> io::Result<Vec<u64>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| io::Error::other("unexpected /proc stat format"))?;
    Ok(rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect())
}

/// User + system time of a running process, all threads.
pub fn process_ticks(pid: u32) -> io::Result<u64> {
    let f = stat_fields(&pid.to_string())?;
    Ok(f[14 - 3] + f[15 - 3])
}

/// User + system time of this process's children that have been waited for.
pub fn reaped_children_ticks() -> io::Result<u64> {
    let f = stat_fields("self")?;
    Ok(f[16 - 3] + f[17 - 3])
}

/// Busy ticks of the machine, summed over all cores (user, nice, system, irq, softirq,
/// steal).
pub fn machine_busy_ticks() -> io::Result<u64> {
    let stat = fs::read_to_string("/proc/stat")?;
    let cpu = stat
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .ok_or_else(|| io::Error::other("unexpected /proc/stat format"))?;
    let f: Vec<u64> = cpu
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal
    Ok(f[0] + f[1] + f[2] + f[5] + f[6] + f.get(7).copied().unwrap_or(0))
}
