//! The spend guardrail end to end: `spec.budget` against the real controller and API server,
//! moto with IAM enforced, and the ECS agent played by the test support running the real worker.
//!
//! The hours already used are written into `status.budget` the way the operator records them,
//! as if earlier runs had used them; moving them back past 24 hours is the passing of time.

use crate::common::{FAST_DRAIN, Harness, depth, next_run, real_worker, send_messages, trigger};
use ecs_worker_operator::api::RunOutcome;
use ecs_worker_operator::plan::desired::Names;
use kube::api::{Patch, PatchParams};
use std::time::Duration;
use testbed::agent::Agent;

/// Writes `status.budget.hours`: `seconds` instance-seconds in the hour starting at `hour`.
async fn used(h: &Harness, name: &str, hour: i64, seconds: i64) -> anyhow::Result<()> {
    let hour = jiff::Timestamp::from_second(hour.div_euclid(3600) * 3600)?;
    let patch = serde_json::json!({ "status": { "budget": {
        "usedInstanceSeconds": seconds,
        "limitInstanceSeconds": 3600,
        "hours": [{ "hour": hour.to_string(), "instanceSeconds": seconds }],
    }}});
    h.api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

async fn desired(h: &Harness, names: &Names) -> anyhow::Result<i32> {
    let agent = Agent::new(&h.sdk, &names.cluster, &names.auto_scaling_group);
    Ok(agent.capacity().await?.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_budget_stops_scale_up_at_the_limit_says_when_it_resets_and_resumes_after()
-> anyhow::Result<()> {
    let mut h = Harness::strict("budget").await?;
    h.start_controller(Duration::from_secs(300));
    let name = "budget";
    let spec = format!("budget:\n  maxInstanceHoursPerDay: 1\n{FAST_DRAIN}");
    let (names, resources) = h.apply_ready(name, &spec).await?;
    let url = resources.queue_url.unwrap_or_default();
    send_messages(&h, &url, 3).await?;
    let sqs = aws_sdk_sqs::Client::new(&h.sdk);

    // An hour of instance time used half an hour ago: the limit is reached.
    let now = jiff::Timestamp::now().as_second();
    used(&h, name, now - 1800, 3600).await?;
    trigger(&h.api, name, "1").await?;

    let w = h
        .wait_for(
            name,
            Duration::from_secs(30),
            "Degraded BudgetExhausted",
            |w| {
                w.condition("Degraded")
                    .is_some_and(|c| c.status == "True" && c.reason == "BudgetExhausted")
            },
        )
        .await?;
    let resets = jiff::Timestamp::from_second((now - 1800).div_euclid(3600) * 3600 + 86_400)?;
    let condition = w.condition("Degraded").expect("degraded");
    assert!(
        condition.message.contains(&resets.to_string()),
        "{condition:?}"
    );
    let status = w.status.clone().expect("status");
    let budget = status.budget.expect("status.budget");
    assert!(budget.exhausted);
    assert_eq!(budget.resets_at.map(|t| t.0), Some(resets));
    assert_eq!(status.last_trigger.as_deref(), Some("1"));
    assert!(status.current_run.is_none());
    assert_eq!(desired(&h, &names).await?, 0);
    let events = h.events(name).await?;
    assert!(
        events.iter().any(|(t, r, m)| t == "Warning"
            && r == "BudgetExhausted"
            && m.contains("the queue is left as it is")),
        "{events:?}"
    );
    // The queue is intact.
    assert_eq!(depth(&sqs, &url).await?.0, 3);

    // A day later that hour has left the window: the next run-now starts a run, which drains
    // the queue, and the Degraded condition clears.
    used(&h, name, now - 86_400 - 3600, 3600).await?;
    let _player = real_worker(&h, &names)?;
    trigger(&h.api, name, "2").await?;
    let run = next_run(&h, name, None).await?;
    let w = h.api.get(name).await?;
    let status = w.status.clone().expect("status");
    assert_eq!(run.outcome, RunOutcome::Succeeded, "{run:?}");
    let budget = status.budget.expect("status.budget");
    assert!(!budget.exhausted);
    assert_eq!(budget.hours.len(), 1, "the old hour dropped: {budget:?}");
    assert!(budget.used_instance_seconds > 0 && budget.used_instance_seconds < 3600);
    assert!(
        w.condition("Degraded").is_some_and(|c| c.status == "False"),
        "{:?}",
        w.condition("Degraded")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn no_run_starts_inside_a_blackout_window() -> anyhow::Result<()> {
    let mut h = Harness::strict("blackout").await?;
    h.start_controller(Duration::from_secs(300));
    let name = "blackout";
    // Opens every minute for ten minutes: always open.
    let spec = format!(
        "budget:\n  blackoutWindows:\n    - start: '* * * * *'\n      durationMinutes: 10\n{FAST_DRAIN}"
    );
    let (names, resources) = h.apply_ready(name, &spec).await?;
    let url = resources.queue_url.unwrap_or_default();
    send_messages(&h, &url, 1).await?;
    trigger(&h.api, name, "1").await?;
    let w = h
        .wait_for(name, Duration::from_secs(30), "run-now acknowledged", |w| {
            w.status
                .as_ref()
                .is_some_and(|s| s.last_trigger.as_deref() == Some("1"))
        })
        .await?;
    assert!(w.status.and_then(|s| s.current_run).is_none());
    assert_eq!(desired(&h, &names).await?, 0);
    let events = h.events(name).await?;
    assert!(
        events.iter().any(|(t, r, m)| t == "Normal"
            && r == "BlackoutWindow"
            && m.contains("spec.budget.blackoutWindows")),
        "{events:?}"
    );

    // Without the window, the next run-now starts a run.
    let patch = serde_json::json!({ "spec": { "budget": null } });
    h.api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    trigger(&h.api, name, "2").await?;
    h.wait_for(name, Duration::from_secs(30), "a run started", |w| {
        w.status.as_ref().is_some_and(|s| s.current_run.is_some())
    })
    .await?;
    assert_eq!(desired(&h, &names).await?, 1);
    Ok(())
}
