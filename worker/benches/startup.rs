//! Per-message overhead of a handler whose start-up is expensive: a Python handler that sleeps
//! 2 s when it starts (standing in for loading a model), run by the `ecs-worker` binary in each
//! handler mode, next to the original system's in-process loop (the model loaded once, then the
//! one-message-at-a-time receive/delete loop of `benches/drain.rs`, the handler a function call).
//!
//! - `command`: `benches/handlers/slow_start_command.py`, started once per message, so every
//!   message pays the 2 s (fewer messages, BENCH_COMMAND_MESSAGES, default 5);
//! - `http`: `examples/http_handler.py`, started once by the worker, which waits for
//!   `GET /healthz` and then POSTs each message;
//! - `stdio`: `examples/stdio_handler.py`, started once, one JSON line per message each way.
//!
//! The worker's configuration is the environment of the task definition the operator writes for
//! a spec with only the handler settings (`worker.handler`, `worker.handlerMode`,
//! `worker.handlerUrl` on a free local port, `worker.handlerReadyPath`) and
//! `env: MODEL_LOAD_SECONDS=2`; the bench replaces the queue URL, the endpoint and
//! `WORKER_TERMINATION` (`none`). Times run from starting the process (or the original's model
//! load) to the answer of the last delete; per message = (time − one 2 s start-up) / messages
//! for the long-lived modes and the original, time / messages for command mode, whose start-up
//! is per message. SQS calls go through the test bed's proxy with BENCH_LATENCY_MS added
//! (default 0).
//!
//! `cargo bench -p ecs-worker --bench startup` (`make bench`). BENCH_MESSAGES: messages for
//! http, stdio and the original (default 200); BENCH_VERBOSE=1 shows the worker's and the
//! handlers' logs. Prints a table; asserts that every run drained.

mod common;

use std::time::{Duration, Instant};

use common::{fill, operator_environment, original_loop, run_worker, shown};
use testbed::proxy::{Faults, Proxy};

const STARTUP: Duration = Duration::from_secs(2);

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

struct Row {
    what: &'static str,
    messages: usize,
    took: Duration,
    /// Start-ups paid once (long-lived modes, the original) are not per-message work.
    startup_once: bool,
}

impl Row {
    fn per_message(&self) -> Duration {
        let work = if self.startup_once {
            self.took.saturating_sub(STARTUP)
        } else {
            self.took
        };
        work / self.messages as u32
    }
}

async fn run() -> anyhow::Result<()> {
    let messages: usize = env_or("BENCH_MESSAGES", "200").parse()?;
    let command_messages: usize = env_or("BENCH_COMMAND_MESSAGES", "5").parse()?;
    let latency_ms: u64 = env_or("BENCH_LATENCY_MS", "0").parse()?;
    let moto = testbed::Moto::start().await?;
    let direct = aws_sdk_sqs::Client::new(&moto.sdk_config().await);
    let faults = if latency_ms == 0 {
        Faults::none()
    } else {
        Faults::none().delayed(1.0, Duration::from_millis(latency_ms))
    };
    let proxy = Proxy::start(moto.endpoint(), faults)?;
    let sqs = aws_sdk_sqs::Client::new(&proxy.sdk_config());
    let worker_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    println!(
        "start-up benchmark: handler start-up {} s, {messages} messages ({command_messages} in \
         command mode), {latency_ms} ms added per SQS request",
        STARTUP.as_secs()
    );

    let mut rows = Vec::new();

    // The original: load once, then receive 1 / handle in process / delete 1.
    let url = fill(&direct, "original", messages).await?;
    let started = Instant::now();
    tokio::time::sleep(STARTUP).await;
    let drained = original_loop(&sqs, &url).await?;
    anyhow::ensure!(drained == messages, "the original loop drained {drained}");
    rows.push(Row {
        what: "original in-process loop",
        messages,
        took: started.elapsed(),
        startup_once: true,
    });

    let port = free_port()?;
    let handler_url = format!("http://127.0.0.1:{port}/");
    let cases = [
        (
            "command",
            command_messages,
            serde_json::json!({
                "handler": format!("python3 {}", worker_dir.join("benches/handlers/slow_start_command.py").display()),
            }),
        ),
        (
            "http",
            messages,
            serde_json::json!({
                "handler": format!("python3 {}", worker_dir.join("examples/http_handler.py").display()),
                "handlerMode": "http",
                "handlerUrl": handler_url,
                "handlerReadyPath": "/healthz",
            }),
        ),
        (
            "stdio",
            messages,
            serde_json::json!({
                "handler": format!("python3 {}", worker_dir.join("examples/stdio_handler.py").display()),
                "handlerMode": "stdio",
            }),
        ),
    ];
    for (mode, n, worker) in cases {
        let env = operator_environment(
            worker,
            serde_json::json!([{ "name": "MODEL_LOAD_SECONDS", "value": STARTUP.as_secs().to_string() }]),
        )?;
        let carries_mode = mode == "command"
            || env
                .iter()
                .any(|(k, v)| k == "WORKER_HANDLER_MODE" && v == mode);
        anyhow::ensure!(
            carries_mode,
            "the operator's task definition does not carry handler mode {mode}"
        );
        println!("  {mode}: {:?}", shown(&env));
        let url = fill(&direct, &format!("startup-{mode}"), n).await?;
        let run = run_worker(&proxy, &direct, &url, env, &[], n).await?;
        rows.push(Row {
            what: match mode {
                "command" => "worker, command mode (the handler starts per message)",
                "http" => "worker, http mode",
                _ => "worker, stdio mode",
            },
            messages: n,
            took: run.took,
            startup_once: mode != "command",
        });
    }

    let original = rows[0].per_message();
    println!("\n| handler | messages | total | per message | added per message vs the original |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        let per = r.per_message();
        let added = per.as_secs_f64() * 1000.0 - original.as_secs_f64() * 1000.0;
        println!(
            "| {} | {} | {:.2} s | {:.1} ms | {} |",
            r.what,
            r.messages,
            r.took.as_secs_f64(),
            per.as_secs_f64() * 1000.0,
            if std::ptr::eq(r, &rows[0]) {
                "–".to_owned()
            } else {
                format!("{added:+.1} ms")
            }
        );
    }
    Ok(())
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
