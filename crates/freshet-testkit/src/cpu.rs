//! CPU time from `/proc`, for benches that print CPU per event or per request: one
//! process's, or the whole machine's (every process on every core).

use std::process::Command;
use std::sync::OnceLock;

/// Clock ticks per second of `/proc`'s CPU times (`getconf CLK_TCK`, 100 if unknown).
fn ticks_per_second() -> f64 {
    static TICKS_PER_SECOND: OnceLock<f64> = OnceLock::new();
    *TICKS_PER_SECOND.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// CPU time (user and system) process `pid` has used so far, in seconds.
pub fn process_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/stat: {e}"));
    // Fields after the command name (which may hold spaces) in parentheses: utime and
    // stime are the 12th and 13th.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("a stat line") + 2..]
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / ticks_per_second()
}

/// CPU time the whole machine has been busy so far (every core, every process: all of
/// `/proc/stat`'s times but idle and iowait), in seconds.
pub fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    // cpu user nice system idle iowait irq softirq steal ...
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .expect("a cpu line")
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().unwrap())
        .collect();
    [0, 1, 2, 5, 6, 7].iter().map(|&i| ticks[i]).sum::<f64>() / ticks_per_second()
}
