//! Measuring this process and this machine: peak memory, time, disk size, a line about the
//! machine and its load for the reports.

use std::path::Path;
use std::time::Instant;

/// A field of `/proc/PID/status` (`self` for this process) in bytes (`VmHWM`, `VmRSS`), when
/// available (Linux).
fn proc_status_bytes(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The peak resident set size of this process so far (`VmHWM`), in bytes; 0 if unknown.
pub fn peak_rss() -> u64 {
    proc_status_bytes("self", "VmHWM:").unwrap_or(0)
}

/// The current resident set size of this process (`VmRSS`), in bytes; 0 if unknown.
pub fn current_rss() -> u64 {
    proc_status_bytes("self", "VmRSS:").unwrap_or(0)
}

/// The resident set size of process `pid`, in bytes (Linux); `None` once it is gone.
pub fn rss_of(pid: u32) -> Option<u64> {
    proc_status_bytes(&pid.to_string(), "VmRSS:")
}

/// Seconds since `t`, as a float.
pub fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

/// One line about the machine: cores, CPU model, RAM.
pub fn machine_line() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map(|kb| format!("{:.1} GiB RAM", kb as f64 / (1024.0 * 1024.0)))
        .unwrap_or_else(|| "unknown RAM".into());
    format!("{cores} cores, {model}, {mem}")
}

/// The size of a file or of a directory's files, in bytes.
pub fn disk_size(path: &Path) -> u64 {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => m.len(),
        Ok(m) if m.is_dir() => std::fs::read_dir(path)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| disk_size(&e.path())).sum())
            .unwrap_or(0),
        _ => 0,
    }
}

/// The load average over 1, 5 and 15 minutes, as `/proc/loadavg` gives it (empty if unknown).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
