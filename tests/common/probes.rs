//! What `/proc` says about a process (leak probes: threads and their names, file
//! descriptors, resident memory; CPU ticks, per thread too) and about the machine.

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::wait::{settled, try_wait_for};

/// Threads of process `pid` (entries of `/proc/PID/task`).
pub fn thread_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/task: {e}"))
        .count()
}

/// Open file descriptors of process `pid` (entries of `/proc/PID/fd`).
pub fn fd_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
        .count()
}

/// Names of the threads of `pid`, sorted (for failure messages).
pub fn thread_names(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| fs::read_to_string(e.path().join("comm")).ok())
                .map(|n| n.trim().to_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The thread count of `pid` once it has not changed for a second (threads of finished
/// work may still be winding down); panics if it keeps changing for 15 s.
#[track_caller]
pub fn settled_threads(pid: u32) -> usize {
    settled(
        Duration::from_secs(15),
        Duration::from_secs(1),
        "the thread count to settle",
        || thread_count(pid),
    )
}

/// Waits up to `timeout` until `pid` has at most `limit` threads (a leak probe);
/// panics with `what`, the count and the thread names (what is left over) otherwise.
/// Returns how long it took.
#[track_caller]
pub fn await_threads_at_most(pid: u32, limit: usize, timeout: Duration, what: &str) -> Duration {
    await_at_most(
        limit,
        timeout,
        what,
        || thread_count(pid),
        |n| format!("{n} threads > {limit}: {:?}", thread_names(pid)),
    )
}

/// Waits up to `timeout` until `pid` has at most `limit` open file descriptors (a leak
/// probe); panics with `what` and the count otherwise. Returns how long it took.
#[track_caller]
pub fn await_fds_at_most(pid: u32, limit: usize, timeout: Duration, what: &str) -> Duration {
    await_at_most(
        limit,
        timeout,
        what,
        || fd_count(pid),
        |n| format!("{n} fds > {limit}"),
    )
}

#[track_caller]
fn await_at_most(
    limit: usize,
    timeout: Duration,
    what: &str,
    mut count: impl FnMut() -> usize,
    over: impl Fn(usize) -> String,
) -> Duration {
    let started = Instant::now();
    let r = try_wait_for(timeout, what, || {
        let n = count();
        if n <= limit {
            Ok(())
        } else {
            Err(over(n))
        }
    });
    match r {
        Ok(()) => started.elapsed(),
        Err(e) => panic!("{e}"),
    }
}

/// Resident memory from `/proc/PID/status`, in KiB.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rss {
    pub total: u64,
    /// Heap, stacks, anonymous mappings (what the process allocated).
    pub anon: u64,
    /// Mapped files: mostly shared libraries' code and data (GStreamer plugins, codecs).
    pub file: u64,
}

/// VmRSS and its RssAnon / RssFile split (RssShmem is the small rest); `None` when the
/// process is gone.
pub fn rss(pid: u32) -> Option<Rss> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    Some(Rss {
        total: field("VmRSS:")?,
        anon: field("RssAnon:").unwrap_or(0),
        file: field("RssFile:").unwrap_or(0),
    })
}

/// Resident memory of process `pid` in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> u64 {
    rss(pid)
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
        .total
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, normally 100).
pub fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// (comm, utime + stime) from a `/proc/.../stat` file.
fn parse_stat(text: &str) -> Option<(String, u64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_owned();
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // Fields after the comm start at field 3 (state); utime is field 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

/// utime + stime of a whole process (all its threads, dead ones included), in ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text).map(|(_, t)| t)
}

/// utime + stime of this process, in ticks.
pub fn self_ticks() -> Option<u64> {
    cpu_ticks(std::process::id())
}

/// tid → (thread name, ticks).
pub type Threads = BTreeMap<u32, (String, u64)>;

/// tid → (thread name, ticks) for every live thread of `pid`.
pub fn thread_ticks(pid: u32) -> Threads {
    let mut out = BTreeMap::new();
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(text) = fs::read_to_string(entry.path().join("stat")) {
            if let Some(parsed) = parse_stat(&text) {
                out.insert(tid, parsed);
            }
        }
    }
    out
}

/// Thread-name group: digit runs become `#`, so `wstx-3` and `wstx-12` add up.
/// GStreamer's streaming threads (`element:pad`) keep their exact name: `appsrc0:src`
/// and `appsrc1:src` are different pipelines.
pub fn thread_group(name: &str) -> String {
    if name.contains(':') {
        return name.to_owned();
    }
    let mut out = String::with_capacity(name.len());
    let mut in_digits = false;
    for c in name.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('#');
            }
            in_digits = true;
        } else {
            out.push(c);
            in_digits = false;
        }
    }
    out
}

/// Per-group CPU (% of one core) between two thread snapshots over `secs`; threads born
/// during the window count from zero. Returns (group, threads, cpu %), biggest first.
pub fn thread_breakdown(before: &Threads, after: &Threads, secs: f64) -> Vec<(String, usize, f64)> {
    let tck = clk_tck();
    let mut groups: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    for (tid, (name, ticks)) in after {
        let start = before.get(tid).map_or(0, |(_, t)| *t);
        let g = groups.entry(thread_group(name)).or_default();
        g.0 += 1;
        g.1 += ticks.saturating_sub(start);
    }
    let mut v: Vec<(String, usize, f64)> = groups
        .into_iter()
        .map(|(name, (n, ticks))| (name, n, ticks as f64 / tck / secs * 100.0))
        .collect();
    v.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
    v
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> (f64, f64, f64) {
    let text = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = text
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(f64::NAN));
    (
        it.next().unwrap_or(f64::NAN),
        it.next().unwrap_or(f64::NAN),
        it.next().unwrap_or(f64::NAN),
    )
}

/// Busy share of all CPUs from `/proc/stat` (user+nice+system+irq+softirq+steal over
/// everything), as (busy, total) jiffies; diff two of them for machine load.
pub fn machine_jiffies() -> (u64, u64) {
    let text = fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().next() else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 8 {
        return (0, 0);
    }
    let idle = v[3] + v[4];
    let total: u64 = v[..8].iter().sum();
    (total - idle, total)
}

/// Send and receive queue (bytes) of the IPv4 TCP socket from `local` to `peer`, from
/// `/proc/net/tcp`; `None` when there is no such socket (any more).
pub fn tcp_queues(local: SocketAddr, peer: SocketAddr) -> Option<(u64, u64)> {
    fn hex(a: SocketAddr) -> Option<String> {
        match a {
            SocketAddr::V4(a) => Some(format!(
                "{:08X}:{:04X}",
                u32::from_le_bytes(a.ip().octets()),
                a.port()
            )),
            SocketAddr::V6(_) => None,
        }
    }
    let (l, p) = (hex(local)?, hex(peer)?);
    let table = fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 5 || cols[1] != l || cols[2] != p {
            return None;
        }
        let (tx, rx) = cols[4].split_once(':')?;
        Some((
            u64::from_str_radix(tx, 16).ok()?,
            u64::from_str_radix(rx, 16).ok()?,
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_and_parens_in_comm() {
        let line = "42 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 100 23 0 0";
        assert_eq!(parse_stat(line), Some(("a (b) c".into(), 123)));
    }

    #[test]
    fn groups() {
        assert_eq!(thread_group("wstx-12"), "wstx-#");
        assert_eq!(thread_group("cam-cam3"), "cam-cam#");
        assert_eq!(thread_group("appsrc1:src"), "appsrc1:src");
    }
}
