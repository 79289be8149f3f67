//! Measurements: HDR latency histograms, CPU (our own, the servers', every watched process
//! group's, the hypervisor's steal) read from /proc, server RSS, and the JSON record one
//! scenario run writes.

use std::collections::BTreeMap;
use std::sync::Mutex;

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::Value;

/// A latency histogram in microseconds (1 µs .. 120 s, 3 significant figures), shared by tasks.
pub struct Latency(Mutex<Histogram<u64>>);

impl Default for Latency {
    fn default() -> Self {
        Self(Mutex::new(
            Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds"),
        ))
    }
}

impl Latency {
    pub fn record_us(&self, us: u64) {
        let mut h = self.0.lock().expect("histogram lock");
        h.saturating_record(us.max(1));
    }

    /// The summary so far, and a fresh start (one histogram per ladder step).
    pub fn take(&self) -> Option<LatencySummary> {
        let mut h = self.0.lock().expect("histogram lock");
        let s = LatencySummary::of(&h);
        h.reset();
        s
    }
}

#[derive(Serialize, Clone, Debug)]
pub struct LatencySummary {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl LatencySummary {
    fn of(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(Self {
            count: h.len(),
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        })
    }
}

/// Clock ticks per second of /proc's CPU times (USER_HZ; 100 on every Linux we run on).
const TICKS: f64 = 100.0;

/// The machine's CPU counters (`cpu` line of /proc/stat): total and stolen ticks.
#[derive(Clone, Copy)]
pub struct MachineCpu {
    total: u64,
    steal: u64,
}

impl MachineCpu {
    pub fn now() -> Self {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let fields: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        Self {
            total: fields.iter().take(8).sum(),
            steal: fields.get(7).copied().unwrap_or(0),
        }
    }

    /// Percentage of all CPU time stolen by the hypervisor since `self`.
    pub fn steal_pct_since(&self) -> f64 {
        let now = Self::now();
        let total = now.total.saturating_sub(self.total);
        if total == 0 {
            return 0.0;
        }
        100.0 * now.steal.saturating_sub(self.steal) as f64 / total as f64
    }
}

/// user + system CPU seconds of a process (`self` for the generator).
pub fn process_cpu_s(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (t(11) + t(12)) as f64 / TICKS
}

/// A group of processes whose CPU every ladder step writes down (`--watch NAME=SPEC`). SPEC is
/// `PID+PID+…`, or `comm:NAME` for every process whose command name is NAME (all of Postgres's
/// backends: `comm:postgres`), counted with the CPU of the children they have reaped, so a
/// backend that exits during a step still counts (its time moves to the postmaster's).
#[derive(Clone, Debug)]
pub struct Watch {
    pub name: String,
    pids: Vec<u32>,
    comm: Option<String>,
}

impl std::str::FromStr for Watch {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (name, spec) = s
            .split_once('=')
            .ok_or("expected NAME=PID+PID or NAME=comm:NAME")?;
        let (pids, comm) = match spec.strip_prefix("comm:") {
            Some(comm) => (vec![], Some(comm.to_string())),
            None => {
                let pids = spec.split('+').map(str::parse).collect::<Result<_, _>>();
                (pids.map_err(|e| format!("{spec}: {e}"))?, None)
            }
        };
        Ok(Self {
            name: name.to_string(),
            pids,
            comm,
        })
    }
}

impl Watch {
    /// CPU seconds the group has used so far.
    pub fn cpu_s(&self) -> f64 {
        let Some(comm) = &self.comm else {
            return self
                .pids
                .iter()
                .map(|p| process_cpu_s(&p.to_string()))
                .sum();
        };
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return 0.0;
        };
        let mut ticks = 0;
        for entry in dir.flatten() {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // "pid (comm) state ppid …": utime, stime, cutime, cstime are fields 14-17.
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            if stat[open + 1..close] == *comm {
                let fields = stat[close + 1..].split_whitespace().skip(11).take(4);
                ticks += fields.filter_map(|v| v.parse::<u64>().ok()).sum::<u64>();
            }
        }
        ticks as f64 / TICKS
    }
}

/// Resident set size of a process, in KiB (None once it is gone).
pub fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// A server process of the cluster under test.
#[derive(Serialize, Clone)]
pub struct ServerRecord {
    pub name: String,
    pub pid: u32,
    pub rss_before_kb: Option<u64>,
    pub rss_after_kb: Option<u64>,
    pub cpu_s: f64,
}

/// One step of a rate ladder.
#[derive(Serialize, Default, Clone)]
pub struct Step {
    pub offered_rate: f64,
    pub duration_s: f64,
    pub sent: u64,
    pub acked: u64,
    pub delivered: u64,
    pub expected: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub errors: u64,
    pub delivered_rate: f64,
    pub acked_rate: f64,
    pub latency_ms: Option<LatencySummary>,
    pub ack_latency_ms: Option<LatencySummary>,
    pub steal_pct: f64,
    pub server_cpu_s: f64,
    pub generator_cpu_s: f64,
    /// CPU seconds of every watched group over the step (and the generator's, as `generator`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub cpu_s: BTreeMap<String, f64>,
}

#[derive(Serialize)]
pub struct Generator {
    pub cpu_s: f64,
    pub cpu_pct: f64,
}

/// What one scenario run writes (`<out>/<system>-<scenario>-<repeat>.json`).
#[derive(Serialize)]
pub struct RunRecord {
    pub system: String,
    pub scenario: String,
    pub repeat: u32,
    pub started_at: String,
    pub duration_s: f64,
    pub params: Value,
    pub generator: Generator,
    pub servers: Vec<ServerRecord>,
    pub steal_pct: f64,
    pub steps: Vec<Step>,
    pub summary: Value,
}

/// CPU of the servers and of the generator, and steal, over an interval (a step or a run).
pub struct CpuMeter {
    machine: MachineCpu,
    servers: Vec<(u32, f64)>,
    watched: Vec<(Watch, f64)>,
    generator: f64,
    started: std::time::Instant,
}

impl CpuMeter {
    pub fn start(pids: &[u32], watch: &[Watch]) -> Self {
        Self {
            machine: MachineCpu::now(),
            watched: watch.iter().map(|w| (w.clone(), w.cpu_s())).collect(),
            servers: pids
                .iter()
                .map(|p| (*p, process_cpu_s(&p.to_string())))
                .collect(),
            generator: process_cpu_s("self"),
            started: std::time::Instant::now(),
        }
    }

    pub fn steal_pct(&self) -> f64 {
        self.machine.steal_pct_since()
    }

    /// Sum of the servers' CPU seconds since the start (a killed server counts what it had).
    pub fn server_cpu_s(&self) -> f64 {
        self.per_server_cpu_s().iter().sum()
    }

    pub fn per_server_cpu_s(&self) -> Vec<f64> {
        self.servers
            .iter()
            .map(|(pid, before)| (process_cpu_s(&pid.to_string()) - before).max(0.0))
            .collect()
    }

    pub fn generator_cpu_s(&self) -> f64 {
        process_cpu_s("self") - self.generator
    }

    /// `step` with this interval's steal, server CPU, generator CPU and watched groups' CPU.
    pub fn measured(&self, step: Step) -> Step {
        let mut cpu_s: BTreeMap<String, f64> = self
            .watched
            .iter()
            .map(|(w, before)| (w.name.clone(), (w.cpu_s() - before).max(0.0)))
            .collect();
        if !cpu_s.is_empty() {
            cpu_s.insert("generator".into(), self.generator_cpu_s());
        }
        Step {
            steal_pct: self.steal_pct(),
            server_cpu_s: self.server_cpu_s(),
            generator_cpu_s: self.generator_cpu_s(),
            cpu_s,
            ..step
        }
    }

    pub fn elapsed_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}
