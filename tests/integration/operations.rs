//! Running like a production operator: leader election between two replicas and the
//! Prometheus endpoint.

use crate::common::{Harness, worker_yaml};
use ecs_worker_operator::aws::ClientFactory;
use ecs_worker_operator::controller::{Config, Context, leader};
use ecs_worker_operator::http::{self, Health};
use ecs_worker_operator::metrics::Metrics;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// One operator replica: its own context and metrics, running under leader election.
struct Replica {
    metrics: Arc<Metrics>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

fn replica(h: &Harness, identity: &str) -> Replica {
    let metrics = Arc::new(Metrics::default());
    let factory = ClientFactory::new(
        Some(h.moto.endpoint().to_string()),
        Some(ClientFactory::emulator_credentials()),
        metrics.clone(),
    );
    let config = Config {
        namespace: Some(h.ns.clone()),
        label_selector: None,
        drift_interval: Duration::from_secs(300),
        instance: Some(identity.into()),
        ..Config::default()
    };
    let ctx = Arc::new(Context::new(
        h.client.clone(),
        factory,
        metrics.clone(),
        config,
    ));
    let (client, ns, identity) = (h.client.clone(), h.ns.clone(), identity.to_string());
    let task = tokio::spawn(async move {
        let never = tokio_util::sync::CancellationToken::new();
        leader::run_as_leader(client, &ns, &identity, ctx, never).await
    });
    Replica { metrics, task }
}

#[tokio::test]
async fn exactly_one_replica_reconciles_and_a_standby_takes_over() -> anyhow::Result<()> {
    let h = Harness::new("leader").await?;
    let a = replica(&h, "replica-a");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let b = replica(&h, "replica-b");
    h.apply_yaml(&worker_yaml("led", "")).await?;
    h.wait_ready("led").await?;
    // Several more reconciles while both run.
    for _ in 0..3 {
        h.poke("led").await?;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let (ra, rb) = (a.metrics.reconciles.get(), b.metrics.reconciles.get());
    assert!(
        ra > 0 && rb == 0 || rb > 0 && ra == 0,
        "exactly one replica reconciles: a={ra} b={rb}"
    );
    let (leader, standby) = if ra > 0 { (a, b) } else { (b, a) };

    // The leader dies without releasing the Lease (a crash, not a shutdown).
    leader.task.abort();
    let died = Instant::now();
    let before = standby.metrics.reconciles.get();
    let deadline = died + Duration::from_secs(60);
    while standby.metrics.reconciles.get() == before {
        h.poke("led").await?;
        anyhow::ensure!(Instant::now() < deadline, "the standby never took over");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let handover = died.elapsed();
    println!(
        "leader hand-over after a crash: {:.1} s (lease {} s)",
        handover.as_secs_f64(),
        leader::LEASE_SECONDS
    );
    assert!(
        handover <= Duration::from_secs(leader::LEASE_SECONDS + 10),
        "hand-over took {handover:?}"
    );
    standby.task.abort();
    Ok(())
}

#[tokio::test]
async fn metrics_endpoint_serves_the_named_series() -> anyhow::Result<()> {
    let mut h = Harness::new("metrics").await?;
    h.start_controller(Duration::from_secs(300));
    h.apply_yaml(&worker_yaml("measured", "")).await?;
    h.wait_ready("measured").await?;
    let port = testbed::free_port();
    let health = Health {
        metrics: h.metrics.clone(),
        ready: Arc::new(AtomicBool::new(true)),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(http::serve(
        ([127, 0, 0, 1], port).into(),
        health,
        async move {
            let _ = stopped.await;
        },
    ));
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut body = String::new();
    for _ in 0..50 {
        if let Ok(r) = client.get(format!("{base}/metrics")).send().await {
            body = r.text().await?;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for series in [
        "ecs_worker_operator_reconciles_total",
        "ecs_worker_operator_reconcile_duration_seconds_bucket",
        "ecs_worker_operator_aws_calls_total{service=\"SQS\",operation=\"CreateQueue\",outcome=\"ok\"}",
        "ecs_worker_operator_aws_calls_total{service=\"Auto Scaling\",operation=\"CreateAutoScalingGroup\",outcome=\"ok\"}",
        "ecs_worker_operator_queue_depth{namespace=",
        // `runs_total{outcome=...}` appears with the first finished run (asserted by the cycle tests).
        "# TYPE ecs_worker_operator_run_duration_seconds histogram",
        "ecs_worker_operator_instance_seconds_total",
    ] {
        assert!(body.contains(series), "missing {series} in:\n{body}");
    }
    let reconciles: f64 = body
        .lines()
        .find(|l| l.starts_with("ecs_worker_operator_reconciles_total "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(reconciles >= 1.0, "reconciles {reconciles}");
    assert_eq!(
        client
            .get(format!("{base}/healthz"))
            .send()
            .await?
            .text()
            .await?,
        "ok"
    );
    assert_eq!(
        client
            .get(format!("{base}/readyz"))
            .send()
            .await?
            .status()
            .as_u16(),
        200
    );
    let _ = stop.send(());
    server.await??;
    Ok(())
}
