//! What `/proc` says about a process: resident memory and CPU time, and a sampler that keeps
//! the peak RSS while a scenario runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Clock ticks per second of `/proc/<pid>/stat` times (Linux: `getconf CLK_TCK`, 100).
const CLOCK_TICKS: f64 = 100.0;

/// `VmRSS` of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// Fields of `/proc/<pid>/stat` after the command name (field 3 onwards).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn field(fields: &[String], number: usize) -> u64 {
    // `number` is the 1-based field number of proc(5); fields[0] is field 3.
    fields
        .get(number.saturating_sub(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of `pid`, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let fields = stat_fields(pid)?;
    Some((field(&fields, 14) + field(&fields, 15)) as f64 / CLOCK_TICKS)
}

/// CPU seconds of a process tree: `root` itself, its reaped children (cutime + cstime), and
/// every live descendant. Used for Postfix, whose master forks short-lived daemons.
pub fn tree_cpu_seconds(root: u32) -> f64 {
    let mut ticks = 0;
    let mut tree = vec![root];
    let mut index = 0;
    let all: Vec<(u32, u32)> = processes_with_parents();
    while let Some(&pid) = tree.get(index) {
        index += 1;
        if let Some(fields) = stat_fields(pid) {
            ticks +=
                field(&fields, 14) + field(&fields, 15) + field(&fields, 16) + field(&fields, 17);
        }
        tree.extend(all.iter().filter(|(_, ppid)| *ppid == pid).map(|(p, _)| *p));
        if tree.len() > 10_000 {
            break;
        }
    }
    ticks as f64 / CLOCK_TICKS
}

/// `Pss` of `pid` in KiB (its share of pages it shares with other processes).
fn pss_kib(pid: u32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    rollup
        .lines()
        .find_map(|line| line.strip_prefix("Pss:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// Proportional set size of a process tree in KiB (Postfix: master and its daemons), so that
/// shared libraries are not counted once per process.
pub fn tree_pss_kib(root: u32) -> u64 {
    let all = processes_with_parents();
    let mut tree = vec![root];
    let mut index = 0;
    let mut total = 0;
    while let Some(&pid) = tree.get(index) {
        index += 1;
        total += pss_kib(pid).unwrap_or(0);
        tree.extend(all.iter().filter(|(_, ppid)| *ppid == pid).map(|(p, _)| *p));
        if tree.len() > 10_000 {
            break;
        }
    }
    total
}

fn processes_with_parents() -> Vec<(u32, u32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter_map(|pid| {
            let fields = stat_fields(pid)?;
            Some((pid, field(&fields, 4) as u32))
        })
        .collect()
}

/// Samples a process's RSS every few milliseconds and keeps the peak.
pub struct PeakRss {
    peak: Arc<AtomicU64>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl PeakRss {
    pub fn start(pid: u32, every: Duration) -> PeakRss {
        let peak = Arc::new(AtomicU64::new(rss_kib(pid).unwrap_or(0)));
        let stop = CancellationToken::new();
        let (sink, token) = (Arc::clone(&peak), stop.clone());
        let task = tokio::spawn(async move {
            // Bounded: at most one hour of sampling.
            let limit = (3600.0 / every.as_secs_f64().max(0.001)) as u64;
            for _ in 0..limit {
                if let Some(kib) = rss_kib(pid) {
                    sink.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::select! {
                    () = token.cancelled() => break,
                    () = tokio::time::sleep(every) => {}
                }
            }
        });
        PeakRss { peak, stop, task }
    }

    /// Stop sampling; the peak in KiB.
    pub async fn finish(self, pid: u32) -> u64 {
        self.stop.cancel();
        let _ = self.task.await;
        if let Some(kib) = rss_kib(pid) {
            self.peak.fetch_max(kib, Ordering::Relaxed);
        }
        self.peak.load(Ordering::Relaxed)
    }
}
