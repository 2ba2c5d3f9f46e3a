//! Fleet scale: many provisioned, idle workers on a 1-minute schedule, against the real
//! kube-apiserver + etcd and moto, with the operator running as its own process.
//!
//! `make bench`, or `cargo bench --workspace --bench fleet`; `FLEET_WORKERS` (default 1000),
//! `FLEET_IDLE_SECONDS` (the measured idle window, default 300) and `FLEET_CREATES_IN_FLIGHT`
//! (concurrent creates while applying, default 32) change the run. It prints the time until
//! every applied worker is Ready, the operator's memory and CPU, and the AWS calls of the idle
//! window, counted by a recording proxy between the operator and moto. What each figure means,
//! and the results: `docs/benchmarks.md` (Fleet scale).

use anyhow::{Context, Result, ensure};
use ecs_worker_operator::api::EcsSelfTerminatingWorker;
use futures::{StreamExt, TryStreamExt, stream};
use kube::api::{Api, ListParams, PostParams};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use testbed::proxy::{Faults, Proxy};
use testbed::{ControlPlane, Moto};

const NS: &str = "fleet";
const TICK: Duration = Duration::from_secs(60);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One idle worker with a 1-minute schedule.
fn worker(i: usize) -> EcsSelfTerminatingWorker {
    let mut worker = ecs_worker_operator::api::testing::minimal_worker(&format!("w{i:04}"));
    worker.spec.cron_rate = Some("1_MINUTE".into());
    worker
}

/// CPU time (user + system) and resident memory of a process, from `/proc`.
struct Usage {
    cpu: Duration,
    rss_kib: u64,
    peak_rss_kib: u64,
}

fn usage(pid: u32, clock_ticks: u64) -> Result<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("malformed /proc stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(key))
            .with_context(|| format!("{key} missing"))?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .context("no value")?
            .parse()?)
    };
    Ok(Usage {
        cpu: Duration::from_secs_f64(ticks as f64 / clock_ticks as f64),
        rss_kib: kib("VmRSS:")?,
        peak_rss_kib: kib("VmHWM:")?,
    })
}

fn clock_ticks() -> Result<u64> {
    let out = Command::new("getconf").arg("CLK_TCK").output()?;
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

fn is_read(operation: &str) -> bool {
    ["Describe", "List", "Get", "Receive"]
        .iter()
        .any(|p| operation.starts_with(p))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

async fn ready_count(api: &Api<EcsSelfTerminatingWorker>) -> Result<usize> {
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|w| w.condition("Ready").is_some_and(|c| c.status == "True"))
        .count())
}

/// The idle window's calls are counted per pass of the run cycle: each pass reads the queue
/// depth once. The operator's full check of every owned resource runs hourly by default (and as
/// each run starts), so a default window holds none; a shorter `--drift-interval-seconds` would
/// show its reads here, by operation.
#[tokio::main]
async fn main() -> Result<()> {
    testbed::control_plane::install_crypto_provider();
    let workers: usize = env_or("FLEET_WORKERS", 1000);
    let idle = Duration::from_secs(env_or("FLEET_IDLE_SECONDS", 300));
    let in_flight: usize = env_or("FLEET_CREATES_IN_FLIGHT", 32);
    let clock_ticks = clock_ticks()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    let cp = ControlPlane::start().await?;
    let moto = Moto::start().await?;
    let proxy = Proxy::start(moto.endpoint(), Faults::none())?;
    let client = cp.client().await?;
    let crd = testbed::repo_root().join("crds");
    let out = cp
        .kubectl()
        .args(["apply", "-f", &crd.display().to_string()])
        .output()?;
    ensure!(out.status.success(), "installing the CRD failed");
    let out = cp.kubectl().args(["create", "namespace", NS]).output()?;
    ensure!(out.status.success(), "creating the namespace failed");

    let log = cp.kubeconfig_path().with_file_name("fleet-operator.log");
    let binary = Path::new(env!("CARGO_BIN_EXE_ecs-worker-operator"));
    let command =
        testbed::operator::command(binary, &cp.kubeconfig_path(), NS, proxy.endpoint(), &log)?;
    let mut operator = testbed::process::spawn("operator", command)?;
    let pid = operator.pid();

    // Apply the fleet and wait until every worker is Ready.
    let api: Api<EcsSelfTerminatingWorker> = Api::namespaced(client, NS);
    let applied = Instant::now();
    let manifests: Vec<_> = (0..workers).map(worker).collect();
    stream::iter(manifests)
        .map(|w| {
            let api = api.clone();
            async move { api.create(&PostParams::default(), &w).await }
        })
        .buffer_unordered(in_flight)
        .try_collect::<Vec<_>>()
        .await?;
    let created = applied.elapsed();
    let deadline = applied + Duration::from_secs(60 * 60);
    let mut ready = 0;
    while ready < workers {
        ensure!(
            Instant::now() < deadline && !operator.exited(),
            "{ready} of {workers} Ready after {:?}; operator log: {}",
            applied.elapsed(),
            log.display()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        ready = ready_count(&api).await?;
    }
    let all_ready = applied.elapsed();
    let provisioning_calls = proxy.request_count();

    // Let the first tick after provisioning pass, then measure whole ticks of an idle fleet.
    tokio::time::sleep(TICK).await;
    let start_seq = proxy.request_count();
    let before = usage(pid, clock_ticks)?;
    let began = Instant::now();
    let mut idle_rss_kib = before.rss_kib;
    while began.elapsed() < idle {
        tokio::time::sleep(Duration::from_secs(1)).await;
        idle_rss_kib = idle_rss_kib.max(usage(pid, clock_ticks)?.rss_kib);
    }
    let window = began.elapsed();
    let after = usage(pid, clock_ticks)?;
    let calls = proxy.requests_since(start_seq);
    let still_ready = ready_count(&api).await?;
    operator.stop();

    let worker_ticks = workers as f64 * window.as_secs_f64() / TICK.as_secs_f64();
    let mut by_operation: BTreeMap<(bool, String), u64> = BTreeMap::new();
    for c in &calls {
        *by_operation
            .entry((
                is_read(&c.operation),
                format!("{}:{}", c.service, c.operation),
            ))
            .or_default() += 1;
    }
    let reads: u64 = calls.iter().filter(|c| is_read(&c.operation)).count() as u64;
    let writes = calls.len() as u64 - reads;
    // Every pass of the run cycle reads the queue depth once: the passes that ran.
    let passes = calls
        .iter()
        .filter(|c| c.operation == "GetQueueAttributes")
        .count() as f64;
    let cpu = (after.cpu - before.cpu).as_secs_f64() / window.as_secs_f64();

    println!("## Fleet scale ({workers} idle workers, 1-minute schedule, {cores} cores)\n");
    println!("| measure | value | target |");
    println!("|---|---|---|");
    println!(
        "| time until all {workers} applied workers are Ready | {:.0} s (creates sent in {:.1} s; {provisioning_calls} AWS calls) | |",
        all_ready.as_secs_f64(),
        created.as_secs_f64()
    );
    println!(
        "| operator peak RSS (whole run) | {:.1} MiB | ≤ 64 MiB |",
        mib(after.peak_rss_kib)
    );
    println!(
        "| operator largest RSS while idle | {:.1} MiB | |",
        mib(idle_rss_kib)
    );
    println!(
        "| operator CPU while idle ({:.0} s) | {:.2}% of a core | < 5% |",
        window.as_secs_f64(),
        cpu * 100.0
    );
    println!(
        "| ticks that ran a pass (queue reads / worker-ticks due) | {:.0} of {worker_ticks:.0} ({:.0}%) | all |",
        passes,
        100.0 * passes / worker_ticks
    );
    println!(
        "| AWS reads per pass | {:.3} | 1 (the queue depth) |",
        reads as f64 / passes.max(1.0)
    );
    println!(
        "| AWS writes per pass | {:.3} | 0 |",
        writes as f64 / passes.max(1.0)
    );
    println!("| workers still Ready at the end | {still_ready} of {workers} | all |");
    println!("\nIdle-window AWS calls by operation ({passes:.0} passes):\n");
    println!("| operation | kind | calls | per pass |");
    println!("|---|---|---|---|");
    for ((read, operation), n) in &by_operation {
        println!(
            "| {operation} | {} | {n} | {:.4} |",
            if *read { "read" } else { "write" },
            *n as f64 / passes.max(1.0)
        );
    }
    ensure!(still_ready == workers, "workers left Ready while idle");
    Ok(())
}
