//! Child processes (simulator, appliance) behind Drop guards, and what `/proc` says
//! about them: CPU ticks (utime + stime), VmRSS, per-thread CPU by thread name.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{mpsc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// PIDs of every live child, so the watchdog and the signal handler can kill them even
/// when the Drop guards cannot run (the process is about to `exit`).
static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// SIGKILLs every child still registered (watchdog / signal path; Drop guards are the
/// normal path).
pub fn kill_all_children() {
    let pids = LIVE.lock().map(|v| v.clone()).unwrap_or_default();
    for &pid in &pids {
        // SAFETY: plain kill(2) on a PID we spawned and have not reaped yet.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
    for pid in pids {
        // Reap them so no zombie outlives us (ECHILD if the main thread got there first).
        // SAFETY: waitpid on our own child; a null status pointer is allowed.
        unsafe {
            libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0);
        }
    }
}

/// A child process that is terminated (SIGTERM, then SIGKILL after a grace period)
/// when dropped.
pub struct Child {
    pub name: String,
    pub pid: u32,
    child: std::process::Child,
    pub log: PathBuf,
    exited: Option<ExitStatus>,
}

/// How a child ended when we stopped it.
pub struct Stopped {
    pub status: Option<ExitStatus>,
    pub took: Duration,
    pub killed: bool,
}

impl Child {
    /// Spawns `cmd` with stdout piped (the first line is the ready line, returned) and
    /// stderr appended to `log`. Fails if no line comes within `ready_timeout`.
    pub fn spawn(
        name: &str,
        mut cmd: Command,
        log: &Path,
        ready_timeout: Duration,
    ) -> Result<(Child, String), String> {
        let log_file = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file));
        // SAFETY: prctl is async-signal-safe; it makes the kernel SIGKILL the child when
        // the spawning thread (our main thread) dies, even if we are SIGKILLed ourselves.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {name} ({:?}): {e}", cmd.get_program()))?;
        let pid = child.id();
        if let Ok(mut v) = LIVE.lock() {
            v.push(pid);
        }
        let stdout = child.stdout.take().expect("piped stdout");
        let mut guard = Child {
            name: name.to_owned(),
            pid,
            child,
            log: log.to_owned(),
            exited: None,
        };
        // Reads the ready line, then drains stdout so the child never blocks on a pipe.
        let (tx, rx) = mpsc::channel();
        thread::Builder::new()
            .name(format!("out-{name}"))
            .spawn(move || {
                let mut lines = BufReader::new(stdout).lines();
                let _ = tx.send(lines.next());
                for _ in lines {}
            })
            .map_err(|e| e.to_string())?;
        match rx.recv_timeout(ready_timeout) {
            Ok(Some(Ok(line))) => Ok((guard, line)),
            Ok(_) => {
                let status = guard.child.wait().ok();
                guard.exited = status;
                Err(format!(
                    "{name} exited before it was ready ({}); log {}:\n{}",
                    status.map_or("?".into(), |s| s.to_string()),
                    log.display(),
                    tail(log, 15)
                ))
            }
            Err(_) => Err(format!(
                "{name} printed no ready line within {ready_timeout:?}; log {}:\n{}",
                log.display(),
                tail(log, 15)
            )),
        }
    }

    /// `Err` with the exit status and the log's tail if the child has died.
    pub fn check_alive(&mut self) -> Result<(), String> {
        if self.exited.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exited = Some(status);
                unregister(self.pid);
            }
        }
        match self.exited {
            None => Ok(()),
            Some(status) => Err(format!(
                "{} (pid {}) died: {status}; log {}:\n{}",
                self.name,
                self.pid,
                self.log.display(),
                tail(&self.log, 15)
            )),
        }
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL. Idempotent.
    pub fn stop(&mut self, grace: Duration) -> Stopped {
        let start = Instant::now();
        if let Some(status) = self.exited {
            return Stopped {
                status: Some(status),
                took: Duration::ZERO,
                killed: false,
            };
        }
        // SAFETY: kill(2) on our own, not yet reaped child.
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
        }
        let mut killed = false;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if start.elapsed() < grace => thread::sleep(Duration::from_millis(20)),
                Ok(None) => {
                    killed = true;
                    let _ = self.child.kill();
                    break self.child.wait().ok();
                }
                Err(_) => break None,
            }
        };
        self.exited = status.or(self.exited);
        unregister(self.pid);
        Stopped {
            status,
            took: start.elapsed(),
            killed,
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
    }
}

fn unregister(pid: u32) {
    if let Ok(mut v) = LIVE.lock() {
        v.retain(|&p| p != pid);
    }
}

/// The last `n` lines of a log file (for error messages).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
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
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text).map(|(_, t)| t)
}

/// utime + stime of this process, in ticks.
pub fn self_ticks() -> Option<u64> {
    cpu_ticks(std::process::id())
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

/// VmRSS and its RssAnon / RssFile split (RssShmem is the small rest).
pub fn rss(pid: u32) -> Option<Rss> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
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

/// tid → (thread name, ticks).
pub type Threads = BTreeMap<u32, (String, u64)>;

/// tid → (thread name, ticks) for every live thread of `pid`.
pub fn thread_ticks(pid: u32) -> Threads {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
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
        if let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) {
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
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
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
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
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
