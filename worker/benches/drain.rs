//! Drain throughput against moto: the worker with a no-op handler next to a one-message-at-a-time
//! loop like the original system's (short poll for 1 message, delete it, repeat until a receive
//! comes back empty). Same moto server, same run, same number of messages.
//!
//! moto answers in a few milliseconds, far faster than SQS over a network, and spends time
//! proportional to the queue length on every message; so each comparison also runs through a
//! small proxy that delays every request by a fixed latency, closer to what a worker sees in AWS.
//!
//! `cargo bench -p ecs-worker --bench drain`
//! (BENCH_MESSAGES: messages per run, default 300; BENCH_LATENCY_MS: comma-separated added
//! latencies, default `0,10`). Prints figures; asserts nothing about speed.

use std::time::{Duration, Instant};

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use ecs_worker::aws::Clients;
use ecs_worker::{Config, Message, TerminationMode, Worker, from_fn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
        .unwrap_or(300);
    let latencies: Vec<u64> = std::env::var("BENCH_LATENCY_MS")
        .unwrap_or_else(|_| "0,10".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let moto = testbed::Moto::start().await?;
    let direct = aws_sdk_sqs::Client::new(&moto.sdk_config().await);
    let upstream = moto.endpoint().trim_start_matches("http://").to_owned();
    println!("drain benchmark: {messages} messages per run, no-op handler, moto at {upstream}");

    let mut queue_number = 0;
    for latency_ms in latencies {
        let endpoint = latency_proxy(upstream.clone(), Duration::from_millis(latency_ms)).await?;
        let sdk = testbed::moto::sdk_config_for(&endpoint);
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        println!("\n-- added latency per request: {latency_ms} ms");

        queue_number += 1;
        let url = fill(&direct, &format!("original-{queue_number}"), messages).await?;
        let started = Instant::now();
        let drained = original_loop(&sqs, &url).await?;
        anyhow::ensure!(drained == messages, "the original loop drained {drained}");
        let original = messages as f64 / started.elapsed().as_secs_f64();
        println!("original loop (short poll, 1 message, delete each): {original:>7.1} messages/s");

        for (name, concurrency, prefetch) in [
            ("worker, concurrency 1, prefetch 9", 1, 9),
            ("worker, concurrency 10, prefetch 0", 10, 0),
        ] {
            queue_number += 1;
            let url = fill(&direct, &format!("worker-{queue_number}"), messages).await?;
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
            // Time to the last delete: afterwards the worker spends its configured empty long
            // polls confirming the queue is empty, which is waiting, not draining.
            while counters.snapshot().deleted < messages as u64 {
                anyhow::ensure!(!run.is_finished(), "the worker stopped early");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let drained = started.elapsed();
            let report = run.await?;
            anyhow::ensure!(report.counters.deleted == messages as u64, "{report:?}");
            let rate = messages as f64 / drained.as_secs_f64();
            println!(
                "{name}: {rate:>7.1} messages/s  ({:.1}x the original; {} receives)",
                rate / original,
                report.counters.receives
            );
        }
    }
    Ok(())
}

/// Forwards TCP connections to `upstream`, holding each chunk the client sends for `delay`.
async fn latency_proxy(upstream: String, delay: Duration) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let requests = async {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = client_read.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        tokio::time::sleep(delay).await;
                        if server_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = server_write.shutdown().await;
                };
                let responses = tokio::io::copy(&mut server_read, &mut client_write);
                let _ = tokio::join!(requests, responses);
            });
        }
    });
    Ok(format!("http://{address}"))
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
    let mut sent = 0;
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
        sent += out.successful().len();
    }
    anyhow::ensure!(sent == n, "send failures");
    Ok(url)
}
