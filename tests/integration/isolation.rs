//! One bad object never stalls the others, and its errors back off. Three workers fail for
//! good — a region moto does not serve (every call is an HTTP 500, the way an unreachable
//! region fails on AWS: retryable), a Secret without its secret key, a cron expression that
//! never fires — while four good ones become Ready; the retryable failure is retried on the
//! error policy's exponential schedule, and the operator as a whole stays quiet.

use crate::common::{Harness, worker_yaml};
use ecs_worker_operator::api::EcsSelfTerminatingWorker;
use ecs_worker_operator::api::conditions::{self, reason};
use ecs_worker_operator::controller::backoff;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use std::time::{Duration, Instant};

/// The sum of `reconcile_errors_total` over every reason, from the metrics text.
fn errors_total(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("ecs_worker_operator_reconcile_errors_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn degraded_by(w: &EcsSelfTerminatingWorker, r: &str) -> bool {
    w.condition(conditions::DEGRADED)
        .is_some_and(|c| c.status == "True" && c.reason == r)
}

#[tokio::test]
async fn failing_workers_back_off_and_never_delay_good_ones() -> anyhow::Result<()> {
    let began = Instant::now();
    let mut h = Harness::new("isolation").await?;
    h.start_controller(Duration::from_secs(300));
    // Failed reconciles, timed by watching the errors counter of /metrics (the only workers
    // whose reconciles fail are the unreachable region's: the others end in a condition).
    let failures = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Duration>::new()));
    let sampler = {
        let (metrics, failures) = (h.metrics.clone(), failures.clone());
        tokio::spawn(async move {
            let start = Instant::now();
            let mut seen = 0;
            loop {
                let now = errors_total(&metrics.encode());
                for _ in seen..now {
                    failures
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(start.elapsed());
                }
                seen = now;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let secrets: Api<Secret> = Api::namespaced(h.client.clone(), &h.ns);
    let half: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "half-keys" },
        "stringData": { "AWS_ACCESS_KEY_ID": "AKIAISOLATIONTEST001" },
    }))?;
    secrets.create(&PostParams::default(), &half).await?;
    h.apply_yaml(&worker_yaml("bad-region", "").replace("region: us-east-1", "region: us-east-9"))
        .await?;
    h.apply_yaml(&worker_yaml(
        "bad-secret",
        "credentials:\n  secretRef:\n    name: half-keys",
    ))
    .await?;
    h.apply_yaml(&worker_yaml("bad-cron", "schedule: \"0 0 31 2 *\""))
        .await?;
    // The good ones arrive once the unreachable region has failed for the first time.
    let deadline = Instant::now() + Duration::from_secs(30);
    while errors_total(&h.metrics.encode()) == 0 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the bad workers were never reconciled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let good_from = Instant::now();
    let good = ["good-0", "good-1", "good-2", "good-3"];
    for name in good {
        h.apply_yaml(&worker_yaml(name, "")).await?;
    }
    let mut ready_after = Vec::new();
    for name in good {
        h.wait_ready(name).await?;
        ready_after.push(good_from.elapsed());
    }

    // Each bad one holds its own terminal condition; no AWS resource was asked for in its name.
    h.wait_for(
        "bad-region",
        Duration::from_secs(30),
        "AwsUnavailable",
        |w| degraded_by(w, reason::AWS_UNAVAILABLE),
    )
    .await?;
    h.wait_for(
        "bad-secret",
        Duration::from_secs(30),
        "SecretInvalid",
        |w| degraded_by(w, reason::SECRET_INVALID),
    )
    .await?;
    h.wait_for("bad-cron", Duration::from_secs(30), "InvalidSpec", |w| {
        degraded_by(w, reason::INVALID_SPEC)
    })
    .await?;

    // Watch the retries from the first failure long enough for the backoff periods after the
    // second and third failures (10 s and 20 s, +20 % jitter, plus each attempt's own retries).
    let window_start = (Instant::now(), h.metrics.reconciles.get());
    let watch_until = good_from + Duration::from_secs(55);
    tokio::time::sleep(watch_until.saturating_duration_since(Instant::now())).await;
    let reconciles_in_window = h.metrics.reconciles.get() - window_start.1;
    let window = window_start.0.elapsed();
    sampler.abort();
    let failures = failures.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let gaps: Vec<Duration> = failures.windows(2).map(|w| w[1] - w[0]).collect();
    let error_series: Vec<String> = h
        .metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with("ecs_worker_operator_reconcile_errors_total{"))
        .map(str::to_owned)
        .collect();
    println!(
        "good workers Ready after {ready_after:?}; failed reconciles at {failures:?} \
         (gaps {gaps:?}; {error_series:?}); {reconciles_in_window} reconciles of all 7 workers \
         in the last {:.0} s; {:.1} s",
        window.as_secs_f64(),
        began.elapsed().as_secs_f64()
    );

    for (name, after) in good.iter().zip(&ready_after) {
        assert!(
            *after < Duration::from_secs(30),
            "{name} became Ready only after {after:?}"
        );
    }
    // The first failure writes the status, a change that is itself a reason to look at once;
    // after that each retry waits at least the policy's delay for that many failures.
    assert!(
        failures.len() >= 3,
        "the unreachable region was not retried: failures at {failures:?}"
    );
    for (i, gap) in gaps.iter().enumerate().skip(1) {
        let due = backoff(i as u32 + 1, 0.0);
        assert!(
            *gap + Duration::from_millis(300) >= due,
            "retry {} came {gap:?} after the previous failure, before its backoff {due:?} \
             (failures at {failures:?})",
            i + 2
        );
    }
    assert!(
        failures.len() <= 6,
        "{} failed attempts in 60 s is not a backoff: {failures:?}",
        failures.len()
    );
    assert!(
        gaps.last() > gaps.get(1),
        "the delay between retries does not grow: {gaps:?}"
    );
    // A hot loop anywhere would show here: seven workers, a handful of reconciles.
    assert!(
        reconciles_in_window <= 12,
        "{reconciles_in_window} reconciles while nothing changed"
    );
    Ok(())
}
