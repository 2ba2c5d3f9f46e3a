//! Reaction latency: how fast the operator acts at each step of the run cycle.
//!
//! `make bench`, or `cargo bench --workspace --bench latency`; `LATENCY_CYCLES` and
//! `LATENCY_SEED` change the run. The operator binary of the same build runs against a real
//! kube-apiserver + etcd and moto, every AWS call it makes through the test bed's recording
//! proxy; the bench plays the ECS agent and the worker directly against moto, so the proxy sees
//! only the operator. Each step (tick or run-now -> scale-up, instance joined -> RunTask, task
//! stopped -> capacity 0) is timed from its event to the arrival of the operator's call, and
//! printed, not asserted. Method and results: `docs/benchmarks.md` (Reaction latency).

use anyhow::{Context as _, Result, bail, ensure};
use aws_sdk_sqs::Client as Sqs;
use ecs_worker_operator::api::{
    EcsSelfTerminatingWorker, Phase, RunOutcome, RunRecord, TRIGGER_ANNOTATION,
};
use ecs_worker_operator::plan::desired::Names;
use jiff::Timestamp;
use kube::CustomResourceExt;
use kube::api::{Api, Patch, PatchParams};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::time::{Duration, Instant};
use testbed::agent::Agent;
use testbed::proxy::{Faults, Proxy, Request};
use testbed::{ControlPlane, Moto, TestNamespace, env_number};

/// The reaction time the operator is meant to stay within at every step.
const TARGET: Duration = Duration::from_secs(2);
/// The original stack's polling interval, for comparison.
const ORIGINAL_POLL: Duration = Duration::from_secs(10);
const WORKER: &str = "bench";
/// Ticks every 10 s: a tick cycle waits 5 s for its tick on average.
const RATE: &str = "10_SECONDS";
/// Longest wait for any one step before the bench gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the bench looks at the worker's status and the proxy's record.
const POLL: Duration = Duration::from_millis(20);
/// Operations that set the group's capacity.
const SCALING: [&str; 3] = [
    "SetDesiredCapacity",
    "UpdateAutoScalingGroup",
    "TerminateInstanceInAutoScalingGroup",
];

fn main() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

/// How a cycle starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Start {
    Tick,
    RunNow,
}

/// One reaction of the operator.
#[derive(Clone, Copy)]
struct Reaction {
    /// From the event to the operator's call.
    latency: Duration,
    /// The operator's AWS calls on the way: from the event (a polled step: from the queue read
    /// that began the reconcile that reacted) to that call.
    calls: usize,
    /// A polled step: from that queue read to the call.
    since_look: Option<Duration>,
}

/// One cycle's measurements.
struct Sample {
    start: Start,
    /// Tick due (or annotation patched) -> scale-up request.
    scale_up: Reaction,
    /// Container instance registered -> RunTask.
    run_task: Reaction,
    /// Task stopped -> the request that brought capacity to 0.
    scale_down: Reaction,
    /// That request's operation.
    scale_down_call: String,
    /// While the run was in progress: the gaps between the operator's successive queue reads
    /// (the first call of each of its reconciles).
    look_gaps: Vec<Duration>,
}

/// Everything a cycle talks to.
struct Bed {
    proxy: Proxy,
    api: Api<EcsSelfTerminatingWorker>,
    sqs: Sqs,
    agent: Agent,
    queue_url: String,
}

async fn run() -> Result<()> {
    testbed::control_plane::install_crypto_provider();
    let cycles = u64::try_from(env_number("LATENCY_CYCLES", 12)?)?;
    let seed = u64::try_from(env_number("LATENCY_SEED", 1)?)?;
    ensure!(cycles >= 2, "LATENCY_CYCLES must be at least 2");
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let cp = ControlPlane::shared()?;
    let ns = TestNamespace::new("latency").await?;
    testbed::crd::install(&ns.client, &EcsSelfTerminatingWorker::crd()).await?;
    let moto = Moto::start().await?;
    let proxy = Proxy::start(moto.endpoint(), Faults::none())?;
    let log = dir.path().join("operator.log");
    let binary = Path::new(env!("CARGO_BIN_EXE_ecs-worker-operator"));
    let command = testbed::operator::command(
        binary,
        &cp.kubeconfig_path(),
        &ns.name,
        proxy.endpoint(),
        &log,
    )?;
    // The operator binary of this build; every AWS call it makes goes through the proxy.
    let operator = testbed::process::spawn("operator", command)?;

    let api: Api<EcsSelfTerminatingWorker> = Api::namespaced(ns.client, &ns.name);
    let result = async {
        let queue_url = apply_worker(&api).await?;
        eprintln!(
            "worker Ready {:.1} s after the start",
            started.elapsed().as_secs_f64()
        );
        let sdk = moto.sdk_config().await;
        let names = Names::new(&ns.name, WORKER);
        let bed = Bed {
            proxy,
            api,
            sqs: Sqs::new(&sdk),
            agent: Agent::new(&sdk, &names.cluster, &names.auto_scaling_group),
            queue_url,
        };
        let mut rng = StdRng::seed_from_u64(seed);
        let mut samples = Vec::new();
        for i in 0..cycles {
            let start = if i % 2 == 0 {
                Start::Tick
            } else {
                Start::RunNow
            };
            let sample = bed
                .cycle(i, start, &mut rng)
                .await
                .with_context(|| format!("cycle {} ({start:?})", i + 1))?;
            eprintln!(
                "{:>5.1} s: cycle {:>2} {:<7} scale-up {:>6.3} s ({} calls), RunTask {:>6.3} s, \
                 {} {:>6.3} s",
                started.elapsed().as_secs_f64(),
                i + 1,
                format!("{start:?}"),
                sample.scale_up.latency.as_secs_f64(),
                sample.scale_up.calls,
                sample.run_task.latency.as_secs_f64(),
                sample.scale_down_call,
                sample.scale_down.latency.as_secs_f64()
            );
            samples.push(sample);
        }
        Ok::<_, anyhow::Error>(samples)
    }
    .await;
    drop(operator);
    let samples = match result {
        Ok(samples) => samples,
        Err(e) => {
            print_log_tail(&log);
            return Err(e);
        }
    };
    report(&samples, seed, started.elapsed());
    Ok(())
}

fn print_log_tail(log: &Path) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    eprintln!("--- operator log (last 40 lines) ---");
    for line in &lines[lines.len().saturating_sub(40)..] {
        eprintln!("{line}");
    }
}

/// Applies the worker (every spec default, ticking every 10 s) and returns its queue URL once
/// it is Ready.
async fn apply_worker(api: &Api<EcsSelfTerminatingWorker>) -> Result<String> {
    let worker: EcsSelfTerminatingWorker = serde_json::from_value(serde_json::json!({
        "apiVersion": "ecsworker.dev/v1alpha1",
        "kind": "EcsSelfTerminatingWorker",
        "metadata": {"name": WORKER},
        "spec": {
            "instanceType": "t3.medium",
            "memoryLimitMiB": 3072,
            "region": "us-east-1",
            "image": "worker:bench",
            "cronRate": RATE,
        },
    }))?;
    api.patch(
        WORKER,
        &PatchParams::apply("latency-bench").force(),
        &Patch::Apply(&worker),
    )
    .await?;
    let w = wait_status(api, "Ready=True", |w| {
        w.condition("Ready").is_some_and(|c| c.status == "True")
    })
    .await?;
    w.status
        .and_then(|s| s.resources.queue_url)
        .context("a Ready worker has a queue URL")
}

impl Bed {
    /// One whole cycle: a message, a start, the instance joining, the task running and
    /// stopping, capacity back at 0.
    async fn cycle(&self, index: u64, start: Start, rng: &mut StdRng) -> Result<Sample> {
        self.wait_idle().await.context("waiting for Idle")?;
        // 1. Scale-up: a message, then the tick or the run-now annotation.
        let lead = match start {
            // The message must be in the queue before the tick is due.
            Start::Tick => Duration::from_secs(1),
            // No tick between the annotation and the scale-up (were the tick to come first,
            // the sample would read at least this long: a miss would still show).
            Start::RunNow => Duration::from_secs(2),
        };
        let tick = self.next_tick_at_least(lead).await?;
        let seq_before = self.proxy.request_count();
        self.sqs
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(format!("{{\"cycle\": {index}}}"))
            .send()
            .await
            .context("SendMessage")?;
        let trigger = format!("bench-{index}");
        let from = match start {
            Start::Tick => instant_of(tick),
            Start::RunNow => {
                let from = Instant::now();
                let patch = serde_json::json!({
                    "metadata": {"annotations": {TRIGGER_ANNOTATION: trigger}}
                });
                self.api
                    .patch(WORKER, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .context("setting the run-now annotation")?;
                from
            }
        };
        let scale_up = self
            .first_request(
                seq_before,
                &["SetDesiredCapacity", "UpdateAutoScalingGroup"],
            )
            .await?;

        // 2. The instance joins at a random point of the operator's polling.
        sleep_random(rng, scale_up.at).await;
        let joined = loop {
            if !self.agent.sync().await.context("registering")?.is_empty() {
                break Instant::now();
            }
            ensure!(
                scale_up.at.elapsed() < STEP_TIMEOUT,
                "the instance never went InService"
            );
            tokio::time::sleep(POLL).await;
        };
        let run_task = self.first_request(scale_up.seq + 1, &["RunTask"]).await?;
        ensure!(
            run_task.at > joined,
            "RunTask arrived before the instance joined"
        );

        // 3. The worker drains the queue and exits; its instance stays (it could not remove
        //    it), so capacity is the operator's to bring back to 0.
        let task = self.running_task().await?;
        let run_id = task.started_by().unwrap_or_default().to_string();
        sleep_random(rng, run_task.at).await;
        self.drain().await.context("draining the queue")?;
        let seq = self.proxy.request_count();
        self.agent
            .end_task(
                task.task_arn().unwrap_or_default(),
                0,
                "Essential container in task exited",
            )
            .await
            .context("stopping the task")?;
        let stopped = Instant::now();
        let scale_down = self.first_request(seq, &SCALING).await?;

        // What must hold whatever the timing.
        let w = wait_status(&self.api, "the run recorded", |w| {
            last_run(w).is_some_and(|r| r.id == run_id)
        })
        .await?;
        let run = last_run(&w).context("recorded run")?;
        ensure!(
            run.outcome == RunOutcome::Succeeded && run.exit_code == Some(0),
            "run {run_id} recorded as {:?}, exit code {:?}",
            run.outcome,
            run.exit_code
        );
        ensure!(
            run.messages_after == Some(0),
            "{:?} messages left",
            run.messages_after
        );
        if start == Start::RunNow {
            let handled = w.status.as_ref().and_then(|s| s.last_trigger.as_deref());
            ensure!(
                handled == Some(trigger.as_str()),
                "run-now {trigger} not acknowledged"
            );
        }
        let during: Vec<Request> = self
            .proxy
            .requests_since(scale_up.seq)
            .into_iter()
            .filter(|r| r.seq <= scale_down.seq)
            .collect();
        let run_tasks = during.iter().filter(|r| r.operation == "RunTask").count();
        ensure!(run_tasks == 1, "{run_tasks} RunTask calls in one cycle");
        let (desired, _) = self.agent.capacity().await?;
        ensure!(
            desired == 0,
            "capacity is {desired}, not back at 0, after {}",
            scale_down.operation
        );
        let on_the_way = self
            .proxy
            .requests_since(seq_before)
            .iter()
            .filter(|r| r.at >= from && r.seq < scale_up.seq)
            .count();
        Ok(Sample {
            start,
            scale_up: Reaction {
                latency: scale_up.at.saturating_duration_since(from),
                calls: on_the_way,
                since_look: None,
            },
            run_task: polled(&during, &run_task, joined),
            scale_down: polled(&during, &scale_down, stopped),
            look_gaps: look_gaps(&during),
            scale_down_call: scale_down.operation,
        })
    }

    /// Receives and deletes every message, as the worker does.
    async fn drain(&self) -> Result<()> {
        loop {
            let out = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(0)
                .send()
                .await?;
            if out.messages().is_empty() {
                return Ok(());
            }
            for m in out.messages() {
                self.sqs
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .send()
                    .await?;
            }
        }
    }

    /// Waits until the worker is Idle with an empty group, and lets the agent deregister the
    /// container instance of the last cycle.
    async fn wait_idle(&self) -> Result<()> {
        let since = Instant::now();
        loop {
            let w = self.api.get(WORKER).await?;
            let idle = w.status.as_ref().and_then(|s| s.phase) == Some(Phase::Idle);
            if idle && self.agent.capacity().await? == (0, 0) {
                self.agent.sync().await?;
                return Ok(());
            }
            ensure!(since.elapsed() < STEP_TIMEOUT, "the worker never went Idle");
            tokio::time::sleep(POLL).await;
        }
    }

    /// The worker's next tick, once it is at least `lead` away.
    async fn next_tick_at_least(&self, lead: Duration) -> Result<Timestamp> {
        let since = Instant::now();
        loop {
            let w = self.api.get(WORKER).await?;
            if let Some(next) = w.status.and_then(|s| s.next_run_time) {
                let ahead = next.0.duration_since(Timestamp::now());
                if ahead.as_secs_f64() >= lead.as_secs_f64() {
                    return Ok(next.0);
                }
            }
            ensure!(
                since.elapsed() < STEP_TIMEOUT,
                "status.nextRunTime stands still"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The first request for one of `operations` from request number `seq` on.
    async fn first_request(&self, seq: u64, operations: &[&str]) -> Result<Request> {
        let since = Instant::now();
        loop {
            let found = self
                .proxy
                .requests_since(seq)
                .into_iter()
                .find(|r| operations.contains(&r.operation.as_str()));
            if let Some(r) = found {
                return Ok(r);
            }
            if since.elapsed() > STEP_TIMEOUT {
                bail!("no {} within {STEP_TIMEOUT:?}", operations.join(" or "));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The one task RunTask started, once ECS lists it.
    async fn running_task(&self) -> Result<aws_sdk_ecs::types::Task> {
        let since = Instant::now();
        loop {
            let tasks = self.agent.tasks("RUNNING").await?;
            ensure!(tasks.len() <= 1, "{} tasks running", tasks.len());
            if let Some(task) = tasks.into_iter().next() {
                return Ok(task);
            }
            ensure!(since.elapsed() < STEP_TIMEOUT, "no task in the cluster");
            tokio::time::sleep(POLL).await;
        }
    }
}

/// The gaps between the operator's queue reads among `requests` (each reconcile of the cycle
/// starts with one).
fn look_gaps(requests: &[Request]) -> Vec<Duration> {
    let at: Vec<Instant> = requests
        .iter()
        .filter(|r| r.operation == "GetQueueAttributes")
        .map(|r| r.at)
        .collect();
    at.windows(2).map(|w| w[1] - w[0]).collect()
}

/// The reaction `call` to an event at `event`, among the run's `requests`.
fn polled(requests: &[Request], call: &Request, event: Instant) -> Reaction {
    let look = requests
        .iter()
        .filter(|r| r.operation == "GetQueueAttributes" && r.seq < call.seq)
        .max_by_key(|r| r.seq);
    Reaction {
        latency: call.at.saturating_duration_since(event),
        calls: look.map_or(0, |l| (call.seq - l.seq) as usize),
        since_look: look.map(|l| call.at - l.at),
    }
}

fn last_run(w: &EcsSelfTerminatingWorker) -> Option<&RunRecord> {
    w.status.as_ref()?.last_run.as_ref()
}

/// Polls the worker until `pred` holds.
async fn wait_status(
    api: &Api<EcsSelfTerminatingWorker>,
    what: &str,
    pred: impl Fn(&EcsSelfTerminatingWorker) -> bool,
) -> Result<EcsSelfTerminatingWorker> {
    let since = Instant::now();
    loop {
        let w = api.get(WORKER).await?;
        if pred(&w) {
            return Ok(w);
        }
        if since.elapsed() > STEP_TIMEOUT {
            bail!(
                "no {what} within {STEP_TIMEOUT:?}; status: {}",
                serde_json::to_string(&w.status)?
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Sleeps until a random point 0.5–2.5 s after `after`.
async fn sleep_random(rng: &mut StdRng, after: Instant) {
    let delay = Duration::from_secs_f64(rng.random_range(0.5..2.5));
    tokio::time::sleep_until((after + delay).into()).await;
}

/// The monotonic instant of a wall-clock time.
fn instant_of(t: Timestamp) -> Instant {
    let (now, wall) = (Instant::now(), Timestamp::now());
    let ahead = t.duration_since(wall);
    let by = Duration::from_secs_f64(ahead.as_secs_f64().abs());
    if ahead.is_negative() {
        now - by
    } else {
        now + by
    }
}

/// Min, median and max.
fn spread(mut values: Vec<Duration>) -> (Duration, Duration, Duration) {
    values.sort();
    let n = values.len();
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2
    };
    (values[0], median, values[n - 1])
}

fn report(samples: &[Sample], seed: u64, elapsed: Duration) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let of = |start: Start, f: fn(&Sample) -> Reaction| -> Vec<Reaction> {
        samples.iter().filter(|s| s.start == start).map(f).collect()
    };
    let all = |f: fn(&Sample) -> Reaction| -> Vec<Reaction> { samples.iter().map(f).collect() };
    let mut calls: Vec<&str> = samples.iter().map(|s| s.scale_down_call.as_str()).collect();
    calls.sort();
    calls.dedup();
    let rows = [
        (
            "tick due -> SetDesiredCapacity".to_string(),
            of(Start::Tick, |s| s.scale_up),
        ),
        (
            "run-now annotation patched -> SetDesiredCapacity".to_string(),
            of(Start::RunNow, |s| s.scale_up),
        ),
        (
            "container instance registered -> RunTask".to_string(),
            all(|s| s.run_task),
        ),
        (
            format!("task stopped -> {} (capacity 0)", calls.join(" / ")),
            all(|s| s.scale_down),
        ),
    ];
    println!("### Reaction latency\n");
    println!(
        "{} cycles of one worker (`cronRate: {RATE}`, every other spec default), alternately \
         started by the tick and by the run-now annotation, on a machine with {cores} cores; \
         agent delays seeded with {seed}. Target: {} s per step (the original polled every \
         {} s).\n",
        samples.len(),
        TARGET.as_secs(),
        ORIGINAL_POLL.as_secs()
    );
    println!("| step | samples | min | median | max | AWS calls on the way | 2 s target |");
    println!("|---|---:|---:|---:|---:|---:|---|");
    let mut missed = Vec::new();
    for (step, reactions) in &rows {
        let n = reactions.len();
        let values: Vec<Duration> = reactions.iter().map(|r| r.latency).collect();
        let (min, median, max) = spread(values.clone());
        let mut calls: Vec<usize> = reactions.iter().map(|r| r.calls).collect();
        calls.sort();
        let calls = if calls[0] == calls[n - 1] {
            calls[0].to_string()
        } else {
            format!("{}–{}", calls[0], calls[n - 1])
        };
        let verdict = if max <= TARGET {
            "met".to_string()
        } else {
            missed.push(step.as_str());
            format!(
                "missed by {:.2} s ({} of {n} over)",
                (max - TARGET).as_secs_f64(),
                values.iter().filter(|v| **v > TARGET).count()
            )
        };
        println!(
            "| {step} | {n} | {:.2} s | {:.2} s | {:.2} s | {calls} | {verdict} |",
            min.as_secs_f64(),
            median.as_secs_f64(),
            max.as_secs_f64()
        );
    }
    let gaps: Vec<Duration> = samples.iter().flat_map(|s| s.look_gaps.clone()).collect();
    let acts: Vec<Duration> = samples
        .iter()
        .flat_map(|s| [s.run_task.since_look, s.scale_down.since_look])
        .flatten()
        .collect();
    let (_, gap_median, gap_max) = spread(gaps);
    let (_, act_median, act_max) = spread(acts);
    let bound = gap_max + act_max;
    println!(
        "\nThe operator notices a joined instance or a stopped task by polling. While a run was \
         in progress it read the queue (the first call of each reconcile) at most {:.2} s apart \
         (median {:.2} s), and each reacting call came {:.2} s (median; max {:.2} s) after the \
         read that began its reconcile. A change just after a read waits for the next one, so \
         the polled steps' worst case is about {:.2} s + {:.2} s = {:.2} s ({}).",
        gap_max.as_secs_f64(),
        gap_median.as_secs_f64(),
        act_median.as_secs_f64(),
        act_max.as_secs_f64(),
        gap_max.as_secs_f64(),
        act_max.as_secs_f64(),
        bound.as_secs_f64(),
        if bound <= TARGET {
            "within the target".to_string()
        } else {
            format!("{:.2} s over the target", (bound - TARGET).as_secs_f64())
        }
    );
    if missed.is_empty() {
        println!("\nEvery measured step is within {} s.", TARGET.as_secs());
    } else {
        println!(
            "\nOver {} s at its slowest: {}.",
            TARGET.as_secs(),
            missed.join("; ")
        );
    }
    println!("\nWhole bench: {:.0} s.", elapsed.as_secs_f64());
}
