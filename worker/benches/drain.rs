//! Drain throughput of the `ecs-worker` binary as the operator deploys it, next to a
//! one-message-at-a-time loop like the original system's (short poll for 1 message, delete it,
//! repeat until a receive comes back empty). Same moto server, same run, same number of
//! messages, no-op handlers.
//!
//! The worker's configuration is the container environment of the task definition the
//! operator's desired-state code writes ([`ecs_worker_operator::plan::desired::task_definition`])
//! for a default spec (only `worker.concurrency` set, and the handler mode where the spec has
//! one). The bench replaces only what points at this machine: the queue URL (a fresh queue per
//! run), the endpoint and dummy keys, `WORKER_TERMINATION=none` (there is no instance to
//! terminate) and, in http mode, the handler URL (a free local port).
//!
//! Every SQS call goes through the test bed's proxy ([`testbed::proxy`]), which adds a fixed
//! latency to each request (0, 10 and 20 ms by default) and records every call: a run's time is
//! from starting the worker process to the answer of its last DeleteMessageBatch (afterwards
//! the worker only confirms the queue is empty with its configured long polls, which is
//! waiting, not draining; the bench stops it with SIGTERM once moto shows the queue empty).
//! The original loop's time ends with its final empty receive.
//!
//! Handlers: command mode runs `true` through `/bin/sh -c` per message; http mode POSTs to a
//! server in this process that answers 200 at once (skipped, with a note, while the operator's
//! spec has no handler mode).
//!
//! `cargo bench -p ecs-worker --bench drain` (`make bench`). BENCH_MESSAGES: messages per run
//! (default 300); BENCH_LATENCY_MS: comma-separated added latencies (default `0,10,20`);
//! BENCH_MODES: `command,http` by default; BENCH_VERBOSE=1 shows the worker's log and the
//! mean answer time per SQS operation. Prints a table; asserts that every run drained
//! every message, nothing about speed.

mod common;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use common::{calls_since, fill, operator_environment, original_loop, run_worker, shown};
use testbed::proxy::{Faults, Proxy};

const CONCURRENCIES: [usize; 2] = [1, 8];

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

struct Row {
    latency_ms: u64,
    what: String,
    rate: Option<f64>,
    original: f64,
    receives: usize,
    deletes: usize,
    note: String,
}

async fn run() -> anyhow::Result<()> {
    let messages: usize = env_or("BENCH_MESSAGES", "300").parse()?;
    let latencies: Vec<u64> = env_or("BENCH_LATENCY_MS", "0,10,20")
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let modes: Vec<String> = env_or("BENCH_MODES", "command,http")
        .split(',')
        .map(|m| m.trim().to_owned())
        .filter(|m| !m.is_empty())
        .collect();
    let moto = testbed::Moto::start().await?;
    let direct = aws_sdk_sqs::Client::new(&moto.sdk_config().await);
    let http_handler = noop_http_server().await?;
    println!(
        "drain benchmark: {messages} messages per run, no-op handler, moto at {}, added latency \
         per SQS request {latencies:?} ms",
        moto.endpoint()
    );
    for mode in &modes {
        for concurrency in CONCURRENCIES {
            if let Some(env) = environment(concurrency, mode)? {
                println!(
                    "  operator's environment, {mode}, concurrency {concurrency}: {:?}",
                    shown(&env)
                );
            }
        }
    }

    let mut rows = Vec::new();
    let mut queue_number = 0;
    for &latency_ms in &latencies {
        let faults = if latency_ms == 0 {
            Faults::none()
        } else {
            Faults::none().delayed(1.0, Duration::from_millis(latency_ms))
        };
        let proxy = Proxy::start(moto.endpoint(), faults)?;
        let sqs = aws_sdk_sqs::Client::new(&proxy.sdk_config());

        queue_number += 1;
        let url = fill(&direct, &format!("original-{queue_number}"), messages).await?;
        let seq = proxy.request_count();
        let started = Instant::now();
        let drained = original_loop(&sqs, &url).await?;
        let took = started.elapsed();
        anyhow::ensure!(drained == messages, "the original loop drained {drained}");
        let original = messages as f64 / took.as_secs_f64();
        let calls = calls_since(&proxy, seq);
        rows.push(Row {
            latency_ms,
            what: "original loop (short poll 1, delete each)".into(),
            rate: Some(original),
            original,
            receives: calls.get("ReceiveMessage").copied().unwrap_or(0),
            deletes: calls.get("DeleteMessage").copied().unwrap_or(0),
            note: String::new(),
        });
        println!("{latency_ms:>3} ms  original loop: {original:.1} messages/s");

        for mode in &modes {
            for concurrency in CONCURRENCIES {
                let what = format!("worker, {mode}, concurrency {concurrency}");
                let Some(env) = environment(concurrency, mode)? else {
                    rows.push(Row {
                        latency_ms,
                        what,
                        rate: None,
                        original,
                        receives: 0,
                        deletes: 0,
                        note: format!("the operator's spec has no {mode} mode yet"),
                    });
                    continue;
                };
                queue_number += 1;
                let url = fill(&direct, &format!("worker-{queue_number}"), messages).await?;
                let overrides = [("WORKER_HANDLER_URL", http_handler.as_str())];
                let run = run_worker(&proxy, &direct, &url, env, &overrides, messages).await?;
                let rate = messages as f64 / run.took.as_secs_f64();
                println!(
                    "{latency_ms:>3} ms  {what}: {rate:.1} messages/s ({:.1}x)",
                    rate / original
                );
                rows.push(Row {
                    latency_ms,
                    what,
                    rate: Some(rate),
                    original,
                    receives: run.calls.get("ReceiveMessage").copied().unwrap_or(0),
                    deletes: run.calls.get("DeleteMessageBatch").copied().unwrap_or(0),
                    note: String::new(),
                });
            }
        }
    }

    println!(
        "\n| added latency per request | loop | messages/s | vs the original loop | receive calls | delete calls |"
    );
    println!("|---|---|---|---|---|---|");
    for r in &rows {
        match r.rate {
            Some(rate) => println!(
                "| {} ms | {} | {rate:.1} | {:.1}x | {} | {} |",
                r.latency_ms,
                r.what,
                rate / r.original,
                r.receives,
                r.deletes
            ),
            None => println!("| {} ms | {} | – | {} | | |", r.latency_ms, r.what, r.note),
        }
    }
    Ok(())
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// A no-op HTTP handler: answers 200 with an empty body to every request. Returns its URL.
async fn noop_http_server() -> anyhow::Result<String> {
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", listener.local_addr()?);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|request: hyper::Request<hyper::body::Incoming>| async {
                    // Read the body as a handler would.
                    let _ = http_body_util::BodyExt::collect(request.into_body()).await;
                    Ok::<_, Infallible>(hyper::Response::new(http_body_util::Empty::<
                        hyper::body::Bytes,
                    >::new()))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(url)
}

/// The operator's environment for a default spec with `worker.concurrency` and, but for
/// `command`, the handler mode; `None` when the spec does not carry that mode to the task.
fn environment(concurrency: usize, mode: &str) -> anyhow::Result<Option<Vec<(String, String)>>> {
    // Command mode runs `true` per message; in http mode the bench serves the handler itself.
    let mut worker = serde_json::json!({ "concurrency": concurrency });
    if mode == "command" {
        worker["handler"] = "true".into();
    } else {
        worker["handlerMode"] = mode.into();
    }
    let env = operator_environment(worker, serde_json::json!([]))?;
    let carries_mode = mode == "command"
        || env
            .iter()
            .any(|(k, v)| k == "WORKER_HANDLER_MODE" && v == mode);
    Ok(carries_mode.then_some(env))
}
