//! A Spot interruption in the middle of a run, end to end: the real controller and API server,
//! moto with IAM enforced, and the ECS agent played by the test support running the real worker
//! binary.
//!
//! On AWS, with Spot Instance draining on (the operator's user data), ECS sets the container
//! instance DRAINING on EC2's two-minute interruption notice; it leaves RunTask's tasks running,
//! so the operator stops them (StopTask), the agent sends the worker SIGTERM, and the worker
//! returns its unfinished messages to the queue at once and exits 4. The run is recorded as
//! Interrupted, the instance goes, and the next run finishes the queue.
//! <https://docs.aws.amazon.com/AmazonECS/latest/developerguide/spot-instance-draining-linux-container.html>

use crate::common::{Harness, depth, trigger, worker_binary, worker_yaml};
use ecs_worker_operator::api::{Phase, RunOutcome};
use ecs_worker_operator::plan::desired::Names;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use testbed::agent::{Agent, Play, Player};

const MESSAGES: usize = 12;
/// Longer than the test: a message that is not returned at once stays invisible past its end.
const VISIBILITY_TIMEOUT: i64 = 600;

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut f: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await? {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_spot_interruption_mid_run_loses_no_message_and_the_next_run_finishes_the_queue()
-> anyhow::Result<()> {
    let mut h = Harness::strict("spot").await?;
    h.start_controller(Duration::from_secs(300));
    let dir = tempfile::tempdir()?;
    let started = dir.path().join("started");
    let done = dir.path().join("done");
    let hold = dir.path().join("hold");
    std::fs::write(&hold, "")?;
    // A slow handler: the first four messages are done at once; while `hold` exists, later
    // ones run until the worker gives up on them (its shutdown grace after SIGTERM).
    let handler = format!(
        "b=$(cat); echo \"$b\" >> {s}; if [ -e {h} ] && [ $(wc -l < {s}) -gt 4 ]; then sleep 300; fi; echo \"$b\" >> {d}",
        s = started.display(),
        h = hold.display(),
        d = done.display(),
    );
    let spec = format!(
        "queue:\n  receiveWaitTimeSeconds: 1\n  visibilityTimeoutSeconds: {VISIBILITY_TIMEOUT}\nworker:\n  emptyReceives: 1\n  concurrency: 3\n  handler: '{handler}'"
    );
    let name = "spot";
    h.apply_yaml(&worker_yaml(name, &spec)).await?;
    let w = h.wait_ready(name).await?;
    let resources = w.status.map(|s| s.resources).unwrap_or_default();
    let url = resources.queue_url.unwrap_or_default();
    let dlq = resources.dead_letter_queue_url.unwrap_or_default();
    let names = Names::new(&h.ns, name);
    let sqs = aws_sdk_sqs::Client::new(&h.sdk);
    for i in 0..MESSAGES {
        sqs.send_message()
            .queue_url(&url)
            .message_body(format!("m{i:02}"))
            .send()
            .await?;
    }

    let agent = Agent::new(&h.sdk, &names.cluster, &names.auto_scaling_group);
    // The worker's shutdown grace, shortened so the test does not wait the default 25 s.
    let player = Player::start(
        agent.clone(),
        Play::RealWorker {
            binary: worker_binary()?,
            endpoint: h.moto.endpoint().into(),
            extra_env: vec![("WORKER_SHUTDOWN_GRACE".into(), "2".into())],
        },
    );
    trigger(&h.api, name, "1").await?;

    // Mid-run: some messages handled and deleted, three held by running handlers.
    let mid_run = wait_until("3 messages in flight", Duration::from_secs(120), || async {
        let (s, d) = (lines(&started).len(), lines(&done).len());
        Ok(d >= 3 && s >= d + 3)
    })
    .await;
    if let Err(e) = mid_run {
        let status = h.api.get(name).await?.status;
        let events = h.events(name).await?;
        let ended = player
            .ended
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        anyhow::bail!(
            "{e}: started {:?}, done {:?}, tasks ended {ended:?}, status {status:?}, events {events:?}",
            lines(&started),
            lines(&done),
        );
    }
    let (visible, in_flight) = depth(&sqs, &url).await?;
    assert!(in_flight >= 3, "{visible} visible, {in_flight} in flight");
    let running = agent.tasks("RUNNING").await?;
    assert_eq!(running.len(), 1, "{running:?}");
    let task_arn = running[0].task_arn().unwrap_or_default().to_string();
    let registered = agent.registered().await?;
    let instance_id = registered
        .iter()
        .find(|r| Some(r.container_instance_arn.as_str()) == running[0].container_instance_arn())
        .map(|r| r.instance_id.clone())
        .expect("the task's instance is registered");

    // EC2's interruption notice: ECS drains the instance.
    let interrupted_at = Instant::now();
    agent.spot_interruption(&instance_id).await?;

    // The worker is stopped and every message it held is visible again at once: long before
    // the visibility timeout.
    wait_until("the task stopped", Duration::from_secs(60), || async {
        Ok(agent
            .tasks("STOPPED")
            .await?
            .iter()
            .any(|t| t.task_arn() == Some(task_arn.as_str()) && t.last_status() == Some("STOPPED")))
    })
    .await?;
    let stopped_after = interrupted_at.elapsed();
    let handled: BTreeSet<String> = lines(&done).into_iter().collect();
    wait_until(
        "the held messages visible again",
        Duration::from_secs(10),
        || async {
            let (visible, in_flight) = depth(&sqs, &url).await?;
            Ok(in_flight == 0 && visible == (MESSAGES - handled.len()) as i64)
        },
    )
    .await?;
    let returned_after = interrupted_at.elapsed();
    eprintln!(
        "spot interruption: task stopped after {stopped_after:?}, every held message visible after {returned_after:?}; {} handled before",
        handled.len()
    );
    assert!(
        returned_after < Duration::from_secs(30),
        "returned after {returned_after:?}"
    );
    // Nothing was deleted that was not handled: what left the queue is exactly what `done` has.
    assert_eq!(
        lines(&done).len(),
        handled.len(),
        "a message handled twice in run 1"
    );
    let held: BTreeSet<String> = lines(&started)
        .into_iter()
        .filter(|b| !handled.contains(b))
        .collect();
    assert!(held.len() >= 3, "held: {held:?}");

    // ECS's record of the stop: StopTask's code and reason, the worker's exit code.
    let task = agent
        .tasks("STOPPED")
        .await?
        .into_iter()
        .find(|t| t.task_arn() == Some(task_arn.as_str()))
        .expect("stopped");
    assert_eq!(task.stop_code().map(|c| c.as_str()), Some("UserInitiated"));
    assert_eq!(
        task.stopped_reason(),
        Some(format!("Container instance {instance_id} is draining").as_str())
    );
    assert_eq!(task.containers()[0].exit_code(), Some(4));
    let ended = player
        .ended
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    assert!(
        ended
            .iter()
            .any(|e| e.task_arn == task_arn && e.exit_code == 4 && e.reported),
        "{ended:?}"
    );

    // The run is recorded as interrupted, not failed; the instance goes.
    let w = h
        .wait_for(name, Duration::from_secs(60), "run 1 recorded, idle", |w| {
            w.status.as_ref().is_some_and(|s| {
                s.last_run.is_some() && s.current_run.is_none() && s.phase == Some(Phase::Idle)
            })
        })
        .await?;
    let run1 = w
        .status
        .as_ref()
        .and_then(|s| s.last_run.clone())
        .expect("run");
    assert_eq!(run1.outcome, RunOutcome::Interrupted, "{run1:?}");
    assert_eq!(run1.exit_code, Some(4));
    assert_eq!(run1.messages_before, MESSAGES as i64);
    assert_eq!(run1.messages_after, Some((MESSAGES - handled.len()) as i64));
    assert!(
        run1.stop_reason
            .as_deref()
            .is_some_and(|r| r.contains("draining")),
        "{run1:?}"
    );
    assert!(
        w.condition("Degraded").is_none_or(|c| c.status != "True"),
        "{:?}",
        w.condition("Degraded")
    );
    assert_eq!(agent.capacity().await?, (0, 0));
    let events = h.events(name).await?;
    for (reason, wanted) in [
        ("InstanceDraining", "is draining"),
        ("TaskStopped", "interrupted before the queue was drained"),
    ] {
        assert!(
            events
                .iter()
                .any(|(t, r, n)| t == "Warning" && r == reason && n.contains(wanted)),
            "no Warning {reason} saying {wanted:?}: {events:?}"
        );
    }

    // The next run finishes the queue: every message handled, none dead-lettered.
    std::fs::remove_file(&hold)?;
    trigger(&h.api, name, "2").await?;
    let w = h
        .wait_for(name, Duration::from_secs(120), "run 2 recorded", |w| {
            w.status.as_ref().is_some_and(|s| {
                s.phase == Some(Phase::Idle) && s.last_run.as_ref().is_some_and(|r| r.id != run1.id)
            })
        })
        .await?;
    let run2 = w.status.and_then(|s| s.last_run).expect("run");
    assert_eq!(run2.outcome, RunOutcome::Succeeded, "{run2:?}");
    assert_eq!(run2.messages_after, Some(0));
    let all: BTreeSet<String> = lines(&done).into_iter().collect();
    let expected: BTreeSet<String> = (0..MESSAGES).map(|i| format!("m{i:02}")).collect();
    assert_eq!(all, expected, "every message handled");
    assert!(held.is_subset(&all));
    assert_eq!(depth(&sqs, &url).await?, (0, 0));
    assert_eq!(depth(&sqs, &dlq).await?, (0, 0), "nothing dead-lettered");
    player.stop().await;

    // The stop went through the right principals: the operator's StopTask, the agent's
    // report as the instance role.
    let iam = h.iam.as_ref().expect("a strict harness");
    let decisions = iam.decisions().await?;
    let allowed =
        |principal: &str, action: &str| testbed::iam::was_allowed(&decisions, principal, action);
    let operator = format!(":user/{}", testbed::iam::OPERATOR_USER);
    let instance_role = format!(":assumed-role/{}/", names.instance_role);
    for (principal, action) in [
        (operator.as_str(), "ecs:StopTask"),
        (instance_role.as_str(), "ecs:SubmitTaskStateChange"),
    ] {
        assert!(
            allowed(principal, action),
            "no allowed {action} by {principal}"
        );
    }
    Ok(())
}
