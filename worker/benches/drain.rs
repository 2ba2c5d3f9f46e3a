//! Drain throughput against moto: the worker with a no-op handler next to a one-message-at-a-time
//! loop like the original system's (short poll for 1 message, delete it, repeat until a receive
//! comes back empty). Same moto server, same run, same number of messages.
//!
//! `cargo bench -p ecs-worker --bench drain` (BENCH_MESSAGES sets the count, default 500).
//! Prints figures; asserts nothing about speed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use ecs_worker::aws::Clients;
use ecs_worker::{Config, Message, TerminationMode, Worker, from_fn};
use tokio_util::sync::CancellationToken;

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let messages: usize = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let moto = testbed::Moto::start().await?;
    let sdk = moto.sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);

    println!(
        "drain benchmark: {messages} messages per run, moto at {}",
        moto.endpoint()
    );
    let mut results = Vec::new();
    for (name, concurrency, prefetch) in [
        ("worker, concurrency 1, prefetch 9", 1, 9),
        ("worker, concurrency 10", 10, 0),
    ] {
        let url = fill(&sqs, &format!("bench-{concurrency}-{prefetch}"), messages).await?;
        let mut config = Config::new(&url);
        config.concurrency = concurrency;
        config.prefetch = prefetch;
        config.wait = Duration::from_secs(1);
        config.termination = TerminationMode::None;
        let worker = Worker::new(
            config,
            &Clients::new(&sdk),
            from_fn(|_m: Message| async { Ok::<(), std::io::Error>(()) }),
        );
        let counters = worker.counters();
        let started = Instant::now();
        let run = tokio::spawn(worker.run(CancellationToken::new()));
        // Time to the last delete: the worker then spends its configured empty long polls
        // confirming the queue is empty, which is waiting, not draining.
        while counters.snapshot().deleted < messages as u64 {
            anyhow::ensure!(!run.is_finished(), "the worker stopped early");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let drained = started.elapsed();
        let report = run.await?;
        let total = started.elapsed();
        anyhow::ensure!(report.counters.deleted == messages as u64, "{report:?}");
        let rate = messages as f64 / drained.as_secs_f64();
        println!(
            "{name}: {rate:.0} messages/s (drained in {:.2} s; exited after {:.2} s; {} receives)",
            drained.as_secs_f64(),
            total.as_secs_f64(),
            report.counters.receives
        );
        results.push((name, rate));
    }

    let url = fill(&sqs, "bench-original", messages).await?;
    let started = Instant::now();
    let drained = original_loop(&sqs, &url).await?;
    let elapsed = started.elapsed();
    anyhow::ensure!(drained == messages, "original loop drained {drained}");
    let original = messages as f64 / elapsed.as_secs_f64();
    println!(
        "original one-at-a-time loop: {original:.0} messages/s (drained in {:.2} s)",
        elapsed.as_secs_f64()
    );
    for (name, rate) in results {
        println!("ratio {name} / original: {:.1}x", rate / original);
    }
    Ok(())
}

/// The original worker's loop with a no-op handler: short poll for one message, delete it.
async fn original_loop(sqs: &aws_sdk_sqs::Client, url: &str) -> anyhow::Result<usize> {
    let mut drained = 0;
    loop {
        let out = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(1)
            .send()
            .await?;
        let Some(message) = out.messages.unwrap_or_default().into_iter().next() else {
            return Ok(drained);
        };
        let handle = message
            .receipt_handle
            .ok_or_else(|| anyhow::anyhow!("no receipt handle"))?;
        sqs.delete_message()
            .queue_url(url)
            .receipt_handle(handle)
            .send()
            .await?;
        drained += 1;
    }
}

async fn fill(sqs: &aws_sdk_sqs::Client, name: &str, n: usize) -> anyhow::Result<String> {
    let url = sqs
        .create_queue()
        .queue_name(name)
        .send()
        .await?
        .queue_url
        .ok_or_else(|| anyhow::anyhow!("no queue url"))?;
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for start in (0..n).step_by(10) {
        let entries = (start..(start + 10).min(n))
            .map(|i| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(format!("{{\"n\": {i}}}"))
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out = sqs
            .send_message_batch()
            .queue_url(&url)
            .set_entries(Some(entries))
            .send()
            .await?;
        sent.fetch_add(out.successful().len(), std::sync::atomic::Ordering::Relaxed);
    }
    anyhow::ensure!(
        sent.load(std::sync::atomic::Ordering::Relaxed) == n,
        "send failures"
    );
    Ok(url)
}
