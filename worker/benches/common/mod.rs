//! Shared by the worker's benchmarks: queues filled through moto, the original system's loop,
//! the worker binary run with the environment of the operator's task definition, and the SQS
//! calls the test bed's proxy saw.

#![allow(dead_code)] // each benchmark uses a different part

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use ecs_worker_operator::api::EcsSelfTerminatingWorkerSpec;
use ecs_worker_operator::plan::desired::{Names, TaskInputs, task_definition};
use testbed::proxy::Proxy;

/// The worker container's environment in the task definition the operator writes for a default
/// spec with `worker` (and `env`) as given.
pub fn operator_environment(
    worker: serde_json::Value,
    env: serde_json::Value,
) -> anyhow::Result<Vec<(String, String)>> {
    let spec: EcsSelfTerminatingWorkerSpec = serde_json::from_value(serde_json::json!({
        "instanceType": "t3.medium", "memoryLimitMiB": 512, "region": testbed::moto::REGION,
        "image": "ecs-worker:bench", "cronRate": "1_MINUTE", "worker": worker, "env": env,
    }))?;
    let names = Names::new("bench", "worker");
    let td = task_definition(
        &spec,
        &TaskInputs {
            names: &names,
            queue_url: "replaced per run",
            task_role_arn: "arn:aws:iam::123456789012:role/task",
            execution_role_arn: "arn:aws:iam::123456789012:role/execution",
        },
    );
    Ok(td.environment)
}

/// The `WORKER_*` variables of an environment, but the queue URL, for printing.
pub fn shown(env: &[(String, String)]) -> Vec<String> {
    env.iter()
        .filter(|(k, _)| k.starts_with("WORKER_") && k != "WORKER_QUEUE_URL")
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
}

pub struct WorkerRun {
    /// From starting the process to the answer of its last DeleteMessageBatch.
    pub took: Duration,
    /// SQS calls per operation.
    pub calls: BTreeMap<String, usize>,
}

/// Runs the worker binary on `url` with the operator's environment (plus `overrides`) until moto
/// shows the queue empty, then stops it with SIGTERM.
pub async fn run_worker(
    proxy: &Proxy,
    direct: &aws_sdk_sqs::Client,
    url: &str,
    env: Vec<(String, String)>,
    overrides: &[(&str, &str)],
    messages: usize,
) -> anyhow::Result<WorkerRun> {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ecs-worker"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env)
        .env("WORKER_QUEUE_URL", url)
        .env("WORKER_TERMINATION", "none")
        .env("AWS_ENDPOINT_URL", proxy.endpoint())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", "warn")
        .envs(overrides.iter().copied())
        .stdout(std::process::Stdio::null())
        // The worker's and the handlers' logs: BENCH_VERBOSE=1 shows them.
        .stderr(if std::env::var_os("BENCH_VERBOSE").is_some() {
            std::process::Stdio::inherit()
        } else {
            std::process::Stdio::null()
        })
        .kill_on_drop(true);
    let seq = proxy.request_count();
    let started = Instant::now();
    let mut child = cmd.spawn()?;
    let deadline = started + Duration::from_secs(600);
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("the worker exited early: {status}");
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the worker did not drain in 10 minutes"
        );
        if depth(direct, url).await? == (0, 0) {
            break;
        }
    }
    // The last delete has reached moto; wait for its answer to be recorded.
    let mut last_delete = None;
    for _ in 0..100 {
        let deletes: Vec<_> = proxy
            .requests_since(seq)
            .into_iter()
            .filter(|r| r.operation == "DeleteMessageBatch")
            .collect();
        if !deletes.is_empty() && deletes.iter().all(|r| r.elapsed.is_some()) {
            last_delete = deletes
                .iter()
                .filter_map(|r| r.elapsed.map(|e| r.at + e))
                .max();
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let last_delete = last_delete.ok_or_else(|| anyhow::anyhow!("no DeleteMessageBatch seen"))?;
    let calls = calls_since(proxy, seq);
    if std::env::var_os("BENCH_VERBOSE").is_some() {
        eprintln!("answer times (ms): {:?}", answer_times(proxy, seq));
    }
    if let Some(pid) = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(rustix::process::Pid::from_raw)
    {
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)?;
    }
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait()).await??;
    anyhow::ensure!(
        matches!(status.code(), Some(0 | 4)),
        "the worker ended with {status}"
    );
    let deleted: usize = calls.get("DeleteMessageBatch").copied().unwrap_or(0);
    anyhow::ensure!(deleted * 10 >= messages, "too few delete calls: {deleted}");
    Ok(WorkerRun {
        took: last_delete.duration_since(started),
        calls,
    })
}

/// SQS calls per operation the proxy saw from request number `seq` on.
pub fn calls_since(proxy: &Proxy, seq: u64) -> BTreeMap<String, usize> {
    let mut calls = BTreeMap::new();
    for r in proxy.requests_since(seq) {
        *calls.entry(r.operation).or_default() += 1;
    }
    calls
}

/// Mean time to answer per operation (added latency included) from request `seq` on, in ms.
pub fn answer_times(proxy: &Proxy, seq: u64) -> BTreeMap<String, f64> {
    let mut sums: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for r in proxy.requests_since(seq) {
        if let Some(e) = r.elapsed {
            let s = sums.entry(r.operation).or_default();
            s.0 += e.as_secs_f64() * 1000.0;
            s.1 += 1;
        }
    }
    sums.into_iter()
        .map(|(op, (sum, n))| (op, sum / n as f64))
        .collect()
}

/// (visible, in flight) as moto reports them, asked directly (not through the proxy).
pub async fn depth(sqs: &aws_sdk_sqs::Client, url: &str) -> anyhow::Result<(u64, u64)> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await?;
    let attrs = out.attributes.unwrap_or_default();
    let n = |k: QueueAttributeName| -> u64 {
        attrs
            .get(&k)
            .and_then(|v| v.parse().ok())
            .unwrap_or(u64::MAX)
    };
    Ok((
        n(QueueAttributeName::ApproximateNumberOfMessages),
        n(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    ))
}

/// The original worker's loop with a no-op handler: short poll for one message, delete it.
pub async fn original_loop(sqs: &aws_sdk_sqs::Client, url: &str) -> anyhow::Result<usize> {
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

pub async fn fill(sqs: &aws_sdk_sqs::Client, name: &str, n: usize) -> anyhow::Result<String> {
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
