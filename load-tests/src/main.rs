//! `sb-load`: the Switchboard load generator. One invocation runs one scenario against one
//! cluster (Switchboard or the Node reference peer: both speak the `chat` dialect and serve
//! the integration API) and writes `<out>/<system>-<scenario>-<repeat>.json`.
//! `load-tests/bench.sh` (`make bench`) runs every scenario against both clusters.

mod progress;
mod provision;
mod scenarios;
mod sio;
mod stats;

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, ValueEnum};

use scenarios::{Cluster, Knobs};
use stats::{CpuMeter, Generator, RunRecord, ServerRecord, Watch, rss_kb};

#[derive(Copy, Clone, Debug, ValueEnum)]
enum Scenario {
    Idle,
    ConnectStorm,
    TypingFanout,
    PersistedSend,
    PresenceChurn,
    NodeKill,
}

#[derive(Parser, Debug)]
#[command(about = "Drive a chat-dialect Socket.IO cluster through one benchmark scenario")]
struct Args {
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// Name of the system under test, as written in the results (switchboard, node, ...).
    #[arg(long)]
    system: String,
    /// Gateway base URLs, comma separated; clients alternate between them.
    #[arg(long, value_delimiter = ',', required = true)]
    urls: Vec<String>,
    /// Server process ids, comma separated, in the order of --urls (RSS, CPU, node-kill victim).
    #[arg(long, value_delimiter = ',')]
    pids: Vec<u32>,
    /// Names of those processes (default: node-1, node-2, ...).
    #[arg(long, value_delimiter = ',')]
    names: Vec<String>,
    /// A process group whose CPU every ladder step writes down, per delivery or send in the
    /// report: NAME=PID+PID or NAME=comm:COMMAND (every process of that name, e.g. postgres).
    /// Repeatable.
    #[arg(long)]
    watch: Vec<Watch>,
    #[arg(long, env = "SB_ADMIN_TOKEN", default_value = "dev-admin-token")]
    admin_token: String,
    /// Directory the run's JSON goes to.
    #[arg(long, default_value = "docs/benchmarks/raw")]
    out: PathBuf,
    #[arg(long, default_value_t = 0)]
    repeat: u32,
    /// Scenario name in the results when it differs from --scenario (e.g. idle-one-node).
    #[arg(long)]
    label: Option<String>,
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    #[arg(long, default_value_t = 10)]
    room_size: usize,
    /// The ladder's rates: typing events/s, sends/s or churn cycles/s, by scenario.
    #[arg(long, value_delimiter = ',', default_value = "100,200,400")]
    rates: Vec<f64>,
    #[arg(long, default_value_t = 10)]
    step_secs: u64,
    #[arg(long, default_value_t = 2)]
    drain_secs: u64,
    /// Handshakes in flight at once while connecting.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    #[arg(long, default_value_t = 5)]
    settle_secs: u64,
    /// node-kill: sends per second during the run.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    #[arg(long, default_value_t = 10)]
    kill_after_secs: u64,
    #[arg(long, default_value_t = 20)]
    after_kill_secs: u64,
    #[arg(long, default_value_t = 500.0)]
    give_up_p99_ms: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Two workers, like the machine's cores: the generator shares them with the servers.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let scenario = args.label.clone().unwrap_or_else(|| {
        args.scenario
            .to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    });
    let urls = Arc::new(args.urls.clone());
    let names: Vec<String> = (0..args.pids.len().max(urls.len()))
        .map(|i| {
            args.names
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("node-{}", i + 1))
        })
        .collect();
    let started_at = time::OffsetDateTime::now_utc();
    let run_id = format!(
        "{}{}{}",
        &args.system[..1.min(args.system.len())],
        &scenario[..2],
        started_at.unix_timestamp() % 1_000_000
    );
    let cluster = Cluster {
        system: args.system.clone(),
        urls: urls.clone(),
        pids: args.pids.clone(),
        names,
        watch: args.watch.clone(),
        admin: provision::Admin::new(urls, args.admin_token.clone()),
        run: run_id,
    };
    let knobs = Knobs {
        clients: args.clients,
        room_size: args.room_size,
        rates: args.rates.clone(),
        step_secs: args.step_secs,
        drain_secs: args.drain_secs,
        concurrency: args.concurrency,
        settle_secs: args.settle_secs,
        rate: args.rate,
        kill_after_secs: args.kill_after_secs,
        after_kill_secs: args.after_kill_secs,
        give_up_p99_ms: args.give_up_p99_ms,
    };
    progress::log(format!(
        "{} / {scenario}: {:?} on {:?}",
        cluster.system, knobs, cluster.urls
    ));
    let rss_before: Vec<Option<u64>> = cluster.pids.iter().map(|p| rss_kb(*p)).collect();
    let meter = CpuMeter::start(&cluster.pids, &[]);
    let outcome = match args.scenario {
        Scenario::Idle => scenarios::idle::run(&cluster, &knobs).await?,
        Scenario::ConnectStorm => scenarios::connect_storm::run(&cluster, &knobs).await?,
        Scenario::TypingFanout => scenarios::typing_fanout::run(&cluster, &knobs).await?,
        Scenario::PersistedSend => scenarios::persisted_send::run(&cluster, &knobs).await?,
        Scenario::PresenceChurn => scenarios::presence_churn::run(&cluster, &knobs).await?,
        Scenario::NodeKill => scenarios::node_kill::run(&cluster, &knobs).await?,
    };
    let duration = meter.elapsed_s();
    let server_cpu = meter.per_server_cpu_s();
    let generator_cpu = meter.generator_cpu_s();
    let record = RunRecord {
        system: cluster.system.clone(),
        scenario: scenario.clone(),
        repeat: args.repeat,
        started_at: started_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        duration_s: duration,
        params: outcome.params,
        generator: Generator {
            cpu_s: generator_cpu,
            cpu_pct: 100.0 * generator_cpu / duration.max(1e-9),
        },
        servers: cluster
            .pids
            .iter()
            .enumerate()
            .map(|(i, pid)| ServerRecord {
                name: cluster.names[i].clone(),
                pid: *pid,
                rss_before_kb: rss_before[i],
                rss_after_kb: rss_kb(*pid),
                cpu_s: server_cpu[i],
            })
            .collect(),
        steal_pct: meter.steal_pct(),
        steps: outcome.steps,
        summary: outcome.summary,
    };
    std::fs::create_dir_all(&args.out)?;
    let path = args.out.join(format!(
        "{}-{scenario}-{}.json",
        cluster.system, args.repeat
    ));
    std::fs::write(&path, serde_json::to_string_pretty(&record)?)?;
    progress::log(format!(
        "wrote {} ({duration:.1} s, generator CPU {generator_cpu:.1} s, steal {:.1} %)",
        path.display(),
        record.steal_pct
    ));
    Ok(())
}
