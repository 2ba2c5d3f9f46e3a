//! Cost simulator: the EC2 instance-seconds a worker bills under this project's run cycle,
//! under the original CDK stack's policy, and at the physical limit, for seeded
//! message-arrival traces, with the time from each message's arrival to its handler's start.
//!
//! `make bench`, or `cargo bench --workspace --bench cost`. Nothing sleeps and nothing talks to
//! a network: a simulated clock drives the operator's real, pure decision
//! (`plan::cycle::decide`, with `schedule::Schedule`) against a model of EC2, ECS, SQS and the
//! worker, whose settings are the ones the operator's task definition passes
//! (`plan::desired::task_definition`), so the defaults are the crate's own. Method and results:
//! `docs/benchmarks.md`.

#[path = "cost/checks.rs"]
mod checks;
#[path = "cost/limit.rs"]
mod limit;
#[path = "cost/model.rs"]
mod model;
#[path = "cost/policies.rs"]
mod policies;
#[path = "cost/report.rs"]
mod report;
#[path = "cost/traces.rs"]
mod traces;
#[path = "cost/worker.rs"]
mod worker;

use anyhow::{Context, Result, bail, ensure};
use ecs_worker_contract::{env, termination};
use ecs_worker_operator::api::CapacityType;
use ecs_worker_operator::api::EcsSelfTerminatingWorkerSpec;
use ecs_worker_operator::plan::desired::{Names, TaskInputs, task_definition};
use model::{Bill, Market, Timings};
use policies::{Lambda, Operator, simulate, simulate_on};
use report::{Prices, SettingRow, TraceResult};
use std::time::Instant;
use testbed::env_number;
use traces::Trace;
use worker::{Behaviour, Termination};

/// The ratio to the limit the operator's policy is meant to stay within on every trace.
const TARGET: f64 = 1.10;

/// The worker settings compared in the settings table (the defaults are added when missing).
const SETTINGS: [(i64, u32); 8] = [
    (20, 2),
    (20, 1),
    (10, 2),
    (10, 1),
    (5, 2),
    (5, 1),
    (1, 2),
    (1, 1),
];

/// Simulates every trace and prints the report; without `--bench` (as `cargo test` runs it),
/// runs the self-checks instead.
///
/// Environment: `COST_DAYS` (simulated days per trace), `COST_SEED` (seed of the traces and
/// the boot times), `COST_BOOT_SECONDS` (mean time from launch until the instance joins the
/// cluster), `COST_BOOT_JITTER_SECONDS` (boot times are uniform within this of the mean),
/// `COST_TASK_START_SECONDS` (RunTask until the worker receives). Spot:
/// `COST_ON_DEMAND_PER_HOUR` (dollars per instance-hour; the default is a t3.medium in
/// us-east-1), `COST_SPOT_PRICE_RATIO` (Spot price over On-Demand),
/// `COST_SPOT_INTERRUPTIONS_PER_HOUR` (per Spot instance-hour), `COST_SPOT_SHORTAGE` (share of
/// hours without Spot capacity).
fn main() -> Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        return checks::run();
    }
    let days = env_number("COST_DAYS", 7)?;
    let seed = env_number("COST_SEED", 1)?;
    let timings = Timings {
        boot: env_number("COST_BOOT_SECONDS", 60)?,
        boot_jitter: env_number("COST_BOOT_JITTER_SECONDS", 10)?,
        boot_seed: u64::try_from(seed)?,
        task_start: env_number("COST_TASK_START_SECONDS", 10)?,
    };
    ensure!(days >= 1, "COST_DAYS must be at least 1");
    let prices = Prices {
        on_demand_per_hour: env_f64("COST_ON_DEMAND_PER_HOUR", 0.0416)?,
        spot_ratio: env_f64("COST_SPOT_PRICE_RATIO", 0.35)?,
    };
    let interruptions_per_hour = env_f64("COST_SPOT_INTERRUPTIONS_PER_HOUR", 0.05)?;
    let shortage = env_f64("COST_SPOT_SHORTAGE", 0.10)?;
    ensure!(
        prices.on_demand_per_hour > 0.0
            && prices.spot_ratio > 0.0
            && interruptions_per_hour >= 0.0
            && (0.0..=1.0).contains(&shortage),
        "prices must be positive, rates non-negative, the shortage a share"
    );
    let started = Instant::now();
    let default_spec = spec(None)?;
    let defaults = behaviour_of(&default_spec)?;
    let default_setting = (defaults.wait, defaults.empty_receives);
    let mut settings = SETTINGS.to_vec();
    if !settings.contains(&default_setting) {
        settings.push(default_setting);
    }
    let mut fixed_tail = default_spec.clone();
    fixed_tail.worker.adaptive_tail = false;
    let mut settings_rows: Vec<SettingRow> = settings
        .iter()
        .map(|&(wait, empty_receives)| SettingRow {
            wait,
            empty_receives,
            note: if (wait, empty_receives) == default_setting {
                "defaults"
            } else {
                ""
            },
            cells: Vec::new(),
        })
        .collect();
    let traces = traces::standard(days, u64::try_from(seed)?);

    let mut results = Vec::new();
    let mut spot_results = Vec::new();
    for (n, trace) in traces.iter().enumerate() {
        let limit = limit::limit(&trace.messages, timings.start_overhead());
        let ours = settings
            .iter()
            .map(|&setting| run_ours(trace, timings, &spec(Some(setting))?))
            .collect::<Result<Vec<Bill>>>()?;
        for (row, bill) in settings_rows.iter_mut().zip(&ours) {
            row.cells
                .push((report::ratio(bill, &limit), report::mean(&bill.latencies)));
        }
        let ours_with = |setting| {
            let i = settings.iter().position(|&s| s == setting);
            ours[i.expect("every row's setting is simulated")].clone()
        };
        let mut lambda = Lambda::new(60);
        let original = simulate(trace, timings, Behaviour::original(), &mut lambda)?;
        let market = Market {
            on_demand_percentage: 0,
            interruptions_per_hour,
            shortage,
            seed: u64::try_from(seed)? * 1_000 + n as u64,
        };
        let on_spot = |capacity_type| -> Result<Bill> {
            let mut spec = default_spec.clone();
            spec.capacity.capacity_type = capacity_type;
            let mut operator = Operator::new(spec)?;
            simulate_on(trace, timings, market, defaults, &mut operator)
                .with_context(|| format!("{}: {capacity_type:?}", trace.name))
        };
        spot_results.push(TraceResult {
            trace,
            limit: limit.clone(),
            policies: vec![
                ("original (On-Demand)".to_string(), original.clone()),
                ("ours, OnDemand".to_string(), ours_with(default_setting)),
                ("ours, Spot".to_string(), on_spot(CapacityType::Spot)?),
                (
                    "ours, SpotWithFallback".to_string(),
                    on_spot(CapacityType::SpotWithFallback)?,
                ),
            ],
        });
        results.push(TraceResult {
            trace,
            limit,
            policies: vec![
                (
                    format!(
                        "ours, defaults (wait {} s, {} empty receives, adaptive tail)",
                        default_setting.0, default_setting.1
                    ),
                    ours_with(default_setting),
                ),
                (
                    "ours, adaptiveTail: false".to_string(),
                    run_ours(trace, timings, &fixed_tail)?,
                ),
                ("original (rate 1 minute)".to_string(), original),
            ],
        });
    }
    let elapsed = started.elapsed();
    print_report(
        days,
        seed,
        timings,
        &default_spec,
        &traces,
        &results,
        &settings_rows,
    );
    println!("\n### Spot\n");
    println!(
        "The defaults above on Spot: {:.4} $/instance-hour On-Demand, Spot at {:.0} % of it, \
         {interruptions_per_hour} interruptions per Spot instance-hour (EC2's two-minute notice; \
         the operator stops the worker, which returns its message), no Spot capacity in \
         {:.0} % of the hours (the launch fails: `Spot` ends the run and tries again at the \
         next tick, `SpotWithFallback` continues On-Demand). The original and the limit are \
         priced On-Demand.\n",
        prices.on_demand_per_hour,
        prices.spot_ratio * 100.0,
        shortage * 100.0,
    );
    println!("{}", report::spot_table(&spot_results, &prices));
    println!(
        "\n{} simulations in {:.1} s",
        traces.len() * (settings.len() + 4),
        elapsed.as_secs_f64()
    );
    Ok(())
}

/// A decimal environment variable, or `default` when unset.
fn env_f64(name: &str, default: f64) -> Result<f64> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .with_context(|| format!("{name}={v:?} is not a number")),
        Err(_) => Ok(default),
    }
}

/// Runs the operator's policy for `spec` over `trace`.
fn run_ours(trace: &Trace, timings: Timings, spec: &EcsSelfTerminatingWorkerSpec) -> Result<Bill> {
    let behaviour = behaviour_of(spec)?;
    let mut operator = Operator::new(spec.clone())?;
    simulate(trace, timings, behaviour, &mut operator)
        .with_context(|| format!("{}: the operator's policy", trace.name))
}

/// A worker spec with every default and a 1-minute schedule; `worker` overrides
/// (`spec.queue.receiveWaitTimeSeconds`, `spec.worker.emptyReceives`).
fn spec(worker: Option<(i64, u32)>) -> Result<EcsSelfTerminatingWorkerSpec> {
    let mut spec = ecs_worker_operator::api::testing::spec_with(serde_json::json!({
        "memoryLimitMiB": 3072,
        "cronRate": "1_MINUTE",
    }));
    if let Some((wait, empty)) = worker {
        spec.queue.receive_wait_time_seconds = i32::try_from(wait)?;
        spec.worker.empty_receives = i32::try_from(empty)?;
    }
    Ok(spec)
}

/// The worker behaviour the operator's task definition sets up for `spec`.
fn behaviour_of(spec: &EcsSelfTerminatingWorkerSpec) -> Result<Behaviour> {
    ensure!(
        spec.max_instances == 1,
        "the physical limit is computed for one instance"
    );
    let names = Names::new("default", "cost");
    let definition = task_definition(
        spec,
        &TaskInputs {
            names: &names,
            queue_url: "https://sqs.us-east-1.amazonaws.com/123456789012/cost",
            task_role_arn: "arn:aws:iam::123456789012:role/task",
            execution_role_arn: "arn:aws:iam::123456789012:role/execution",
        },
    );
    let var = |name: &str| {
        definition
            .environment
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .with_context(|| format!("the task definition does not set {name}"))
    };
    ensure!(
        var(env::CONCURRENCY)? == "1",
        "the worker model runs one handler at a time"
    );
    let termination = match var(env::TERMINATION)? {
        termination::INSTANCE => Termination::OwnInstance,
        termination::GROUP => Termination::GroupToZero,
        other => bail!("the model has no capacity step for WORKER_TERMINATION={other}"),
    };
    // The tail is read from the definition as from a RunTask override.
    let tail = [env::EMPTY_RECEIVES, env::WAIT_SECONDS]
        .into_iter()
        .map(|name| Ok((name.to_string(), var(name)?.to_string())))
        .collect::<Result<Vec<_>>>()?;
    Behaviour::ours(0, 0, termination).overridden(&tail)
}

fn print_report(
    days: i64,
    seed: i64,
    timings: Timings,
    spec: &EcsSelfTerminatingWorkerSpec,
    traces: &[Trace],
    results: &[TraceResult],
    settings_rows: &[SettingRow],
) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("### Cost against the physical limit\n");
    println!(
        "Simulated {days} days per trace (seed {seed}) on a machine with {cores} cores. \
         Launch until the instance joins the cluster: {} ± {} s (uniform); RunTask until the \
         worker receives: {} s. Schedule `1_MINUTE` for both policies; the operator with every \
         other spec default (maxInstances {}, minMessages {}, worker concurrency {}).\n",
        timings.boot,
        timings.boot_jitter,
        timings.task_start,
        spec.max_instances,
        spec.scaling.min_messages,
        spec.worker.concurrency,
    );
    for t in traces {
        println!(
            "- **{}**: {} ({} messages, {} handler-seconds)",
            t.name,
            t.description,
            report::thousands(t.messages.len() as i64),
            report::thousands(t.busy())
        );
    }
    println!(
        "\n**Physical limit**: handler seconds, plus {} s (boot + task start) for every \
         instance start, plus the idle gaps an instance is kept across because that is cheaper \
         than a new start, billed with EC2's 60 s minimum — the cheapest bill of a clairvoyant \
         policy that runs every handler as soon as the one instance is free.\n",
        timings.start_overhead()
    );
    println!("{}", report::cost_table(results));
    println!(
        "A ratio below 1.00 means the policy held messages back and merged them into fewer \
         starts than the limit's; the time to first handling shows what that cost.\n"
    );
    for (row, label) in [(0, "its defaults"), (1, "adaptiveTail: false")] {
        let missed: Vec<&str> = results
            .iter()
            .filter(|r| report::ratio(&r.policies[row].1, &r.limit) > TARGET)
            .map(|r| r.trace.name)
            .collect();
        if missed.is_empty() {
            println!(
                "With {label} the operator is within {TARGET:.2}x of the limit on every trace."
            );
        } else {
            println!(
                "With {label} the operator is above {TARGET:.2}x of the limit on: {}.",
                missed.join(", ")
            );
        }
    }
    println!("\nWhere the billed instance-seconds go:\n");
    println!("{}", report::breakdown_table(results));
    println!(
        "The operator by worker setting (adaptive tail on, the default): billed / limit · mean \
         time to first handling:\n"
    );
    let trace_refs: Vec<&Trace> = traces.iter().collect();
    print!("{}", report::settings_table(&trace_refs, settings_rows));
}
