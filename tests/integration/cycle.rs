//! The run cycle end to end: the real controller, the real API server, moto, and the ECS
//! agent played by the test support (running the real worker binary for each task).

use crate::common::{Harness, trigger, worker_binary, worker_yaml};
use ecs_worker_operator::api::{Phase, RunOutcome};
use ecs_worker_operator::plan::desired::{self, Names};
use std::time::Duration;
use testbed::agent::{Agent, Play, Player};

async fn send(h: &Harness, url: &str, n: usize) -> anyhow::Result<()> {
    let sqs = aws_sdk_sqs::Client::new(&h.sdk);
    for i in 0..n {
        sqs.send_message()
            .queue_url(url)
            .message_body(format!("{{\"n\": {i}}}"))
            .send()
            .await?;
    }
    Ok(())
}

async fn group(h: &Harness, names: &Names) -> anyhow::Result<(i32, usize)> {
    let asg = aws_sdk_autoscaling::Client::new(&h.sdk);
    let out = asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(&names.auto_scaling_group)
        .send()
        .await?;
    let g = out
        .auto_scaling_groups()
        .first()
        .ok_or_else(|| anyhow::anyhow!("no group"))?;
    Ok((g.desired_capacity().unwrap_or(-1), g.instances().len()))
}

async fn stopped_tasks(h: &Harness, names: &Names) -> anyhow::Result<usize> {
    let ecs = aws_sdk_ecs::Client::new(&h.sdk);
    Ok(ecs
        .list_tasks()
        .cluster(&names.cluster)
        .desired_status(aws_sdk_ecs::types::DesiredStatus::Stopped)
        .send()
        .await?
        .task_arns()
        .len())
}

fn run_calls(h: &Harness) -> u64 {
    h.aws_call_counts()
        .iter()
        .filter(|(l, _)| l.operation == "RunTask")
        .map(|(_, n)| n)
        .sum()
}

/// Applies worker `name` with `spec`, waits until it is Ready and returns its queue URL and
/// AWS names.
async fn ready(h: &Harness, name: &str, spec: &str) -> anyhow::Result<(String, Names)> {
    h.apply_yaml(&worker_yaml(name, spec)).await?;
    let w = h.wait_ready(name).await?;
    let url = w
        .status
        .and_then(|s| s.resources.queue_url)
        .unwrap_or_default();
    Ok((url, Names::new(&h.ns, name)))
}

/// Plays the ECS agent of a worker, running the real worker binary for each task with the
/// task's environment plus `extra_env`.
fn real_worker(
    h: &Harness,
    names: &Names,
    extra_env: Vec<(String, String)>,
) -> anyhow::Result<Player> {
    Ok(Player::start(
        Agent::new(&h.sdk, &names.cluster, &names.auto_scaling_group),
        Play::RealWorker {
            binary: worker_binary()?,
            endpoint: h.moto.endpoint().into(),
            extra_env,
        },
    ))
}

const FAST_WORKER: &str = "queue:\n  receiveWaitTimeSeconds: 1\n  visibilityTimeoutSeconds: 30\nworker:\n  emptyReceives: 1";

#[tokio::test]
async fn full_cycle_runs_the_real_worker_and_returns_to_zero() -> anyhow::Result<()> {
    let mut h = Harness::strict("cycle").await?;
    h.start_controller(Duration::from_secs(300));
    let out = tempfile::NamedTempFile::new()?;
    let handler = format!(
        "worker:\n  emptyReceives: 1\n  handler: \"cat >> {0}; echo >> {0}\"",
        out.path().display()
    );
    let spec =
        format!("queue:\n  receiveWaitTimeSeconds: 1\n  visibilityTimeoutSeconds: 30\n{handler}");
    let (url, names) = ready(&h, "full", &spec).await?;
    send(&h, &url, 20).await?;
    let player = real_worker(&h, &names, vec![])?;
    trigger(&h.api, "full", "1").await?;

    let w = h
        .wait_for("full", Duration::from_secs(120), "a recorded run", |w| {
            w.status
                .as_ref()
                .and_then(|s| s.last_run.as_ref())
                .is_some()
        })
        .await?;
    let status = w.status.clone().expect("status");
    let run = status.last_run.clone().expect("run");
    assert_eq!(run.outcome, RunOutcome::Succeeded, "{run:?}");
    assert_eq!(run.exit_code, Some(0));
    assert_eq!(run.messages_before, 20);
    assert_eq!(run.messages_after, Some(0));
    assert!(run.started_at.is_some());
    assert_eq!(status.last_trigger.as_deref(), Some("1"));
    let handled = std::fs::read_to_string(out.path())?;
    assert_eq!(
        handled.lines().filter(|l| l.contains("\"n\"")).count(),
        20,
        "every message handled once: {handled}"
    );

    // Capacity back at zero, no instance left, exactly one task ran.
    let w = h
        .wait_for("full", Duration::from_secs(30), "phase Idle", |w| {
            w.status.as_ref().and_then(|s| s.phase) == Some(Phase::Idle)
        })
        .await?;
    assert_eq!(group(&h, &names).await?, (0, 0));
    assert_eq!(stopped_tasks(&h, &names).await?, 1);
    assert_eq!(w.status.and_then(|s| s.queue).map(|q| q.visible), Some(0));
    let reasons: Vec<String> = h.events("full").await?.into_iter().map(|e| e.1).collect();
    for r in [
        "ScalingUp",
        "InstanceJoined",
        "TaskStarted",
        "TaskStopped",
        "ScaledToZero",
    ] {
        assert!(
            reasons.iter().any(|x| x == r),
            "missing Event {r}: {reasons:?}"
        );
    }
    let metrics = h.metrics.encode();
    assert!(
        metrics.contains(&format!(
            "ecs_worker_operator_runs_total{{namespace=\"{}\",name=\"full\",outcome=\"succeeded\"}} 1",
            h.ns
        )),
        "{metrics}"
    );
    player.stop().await;

    // Each principal signed its own calls and was authorized: the operator as its user, the
    // worker as its task role, the ECS agent as the instance role (the worker's instance went
    // down before the agent could report its exit: the agent's SubmitTaskStateChange is checked
    // where the host stays up).
    let iam = h.iam.as_ref().expect("a strict harness");
    let decisions = iam.decisions().await?;
    let allowed =
        |principal: &str, action: &str| testbed::iam::was_allowed(&decisions, principal, action);
    let task_role = format!(":assumed-role/{}/", names.task_role);
    let instance_role = format!(":assumed-role/{}/", names.instance_role);
    let operator = format!(":user/{}", testbed::iam::OPERATOR_USER);
    for (principal, action) in [
        (operator.as_str(), "ecs:RunTask"),
        (operator.as_str(), "iam:PassRole"),
        (operator.as_str(), "autoscaling:SetDesiredCapacity"),
        (task_role.as_str(), "sqs:ReceiveMessage"),
        (task_role.as_str(), "sqs:DeleteMessage"),
        (
            task_role.as_str(),
            "autoscaling:TerminateInstanceInAutoScalingGroup",
        ),
        (task_role.as_str(), "ecs:TagResource"),
        (instance_role.as_str(), "ecs:RegisterContainerInstance"),
    ] {
        assert!(
            allowed(principal, action),
            "no allowed {action} by {principal}"
        );
    }
    Ok(())
}

/// The environment RunTask's override gave the worker container of each task, oldest first.
async fn tail_overrides(h: &Harness, names: &Names) -> anyhow::Result<Vec<Vec<(String, String)>>> {
    let agent = Agent::new(&h.sdk, &names.cluster, &names.auto_scaling_group);
    let mut tasks = agent.tasks("STOPPED").await?;
    // Run ids are `run-<unix seconds of the scale-up>`.
    tasks.sort_by_key(|t| t.started_by().map(str::to_string));
    Ok(tasks
        .iter()
        .map(|t| {
            let overrides = t
                .overrides()
                .into_iter()
                .flat_map(|o| o.container_overrides());
            crate::common::env_pairs(
                overrides
                    .filter(|o| o.name() == Some(desired::CONTAINER_NAME))
                    .flat_map(|o| o.environment()),
            )
        })
        .collect())
}

#[tokio::test]
async fn a_run_after_an_idle_spell_gets_the_short_tail_and_the_next_keeps_the_configured_one()
-> anyhow::Result<()> {
    let mut h = Harness::strict("tail").await?;
    h.start_controller(Duration::from_secs(300));
    let spec = "queue:\n  receiveWaitTimeSeconds: 3\n  visibilityTimeoutSeconds: 30\nworker:\n  emptyReceives: 2\n  handler: \"cat > /dev/null\"";
    let (url, names) = ready(&h, "tail", spec).await?;
    let player = real_worker(&h, &names, vec![])?;
    let mut run_ids = Vec::new();
    for round in ["1", "2"] {
        send(&h, &url, 3).await?;
        trigger(&h.api, "tail", round).await?;
        let w = h
            .wait_for("tail", Duration::from_secs(120), "a new run, ended", |w| {
                w.status.as_ref().is_some_and(|s| {
                    s.phase == Some(Phase::Idle)
                        && s.last_run
                            .as_ref()
                            .is_some_and(|r| !run_ids.contains(&r.id))
                })
            })
            .await?;
        let run = w.status.and_then(|s| s.last_run).expect("run");
        assert_eq!(run.outcome, RunOutcome::Succeeded, "{run:?}");
        assert_eq!(run.messages_after, Some(0));
        run_ids.push(run.id);
    }
    player.stop().await;

    // The first run (nothing before it) told its worker to stop after one empty receive of
    // 3 s (the short tail, no longer than the configured wait); the second, right after it,
    // left the configured 2 x 3 s of the task definition alone.
    let short = vec![
        ("WORKER_EMPTY_RECEIVES".to_string(), "1".to_string()),
        ("WORKER_WAIT_SECONDS".to_string(), "3".to_string()),
    ];
    assert_eq!(tail_overrides(&h, &names).await?, vec![short, vec![]]);
    let started: Vec<String> = h
        .events("tail")
        .await?
        .into_iter()
        .filter(|e| e.1 == "TaskStarted")
        .map(|e| e.2)
        .collect();
    // Events of one reason form a series that keeps the first note.
    assert!(
        started.iter().any(|m| m.contains("short tail")),
        "{started:?}"
    );
    Ok(())
}

#[tokio::test]
async fn empty_queue_ticks_make_no_writes_and_start_nothing() -> anyhow::Result<()> {
    let mut h = Harness::strict("empty").await?;
    h.start_controller(Duration::from_secs(300));
    h.apply_yaml(&worker_yaml("idle", "cronRate: 2_SECONDS"))
        .await?;
    h.wait_ready("idle").await?;
    // Let provisioning settle, then watch several ticks pass, counted from the tick that was
    // next when the count began.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (reads0, writes0) = h.aws_reads_writes();
    let first_tick = h
        .api
        .get("idle")
        .await?
        .status
        .and_then(|s| s.next_run_time)
        .expect("next run time");
    let w = h
        .wait_for("idle", Duration::from_secs(20), "three ticks", |w| {
            w.status
                .as_ref()
                .and_then(|s| s.next_run_time.as_ref())
                .is_some_and(|t| t.0.as_second() >= first_tick.0.as_second() + 6)
        })
        .await?;
    let (reads1, writes1) = h.aws_reads_writes();
    assert_eq!(
        writes1,
        writes0,
        "idle ticks wrote to AWS: {:?}",
        h.aws_call_counts()
    );
    assert!(reads1 > reads0, "ticks read the queue");
    assert_eq!(group(&h, &Names::new(&h.ns, "idle")).await?, (0, 0));
    assert_eq!(w.status.and_then(|s| s.phase), Some(Phase::Idle));
    Ok(())
}

#[tokio::test]
async fn instances_that_never_join_time_out_without_run_task() -> anyhow::Result<()> {
    let mut h = Harness::strict("timeout").await?;
    h.start_controller(Duration::from_secs(300));
    let (url, names) = ready(&h, "late", "scaling:\n  joinTimeoutSeconds: 30").await?;
    send(&h, &url, 1).await?;
    trigger(&h.api, "late", "go").await?;
    h.wait_for("late", Duration::from_secs(10), "scale-up", |w| {
        w.status.as_ref().and_then(|s| s.phase) == Some(Phase::ScalingUp)
    })
    .await?;
    assert_eq!(group(&h, &names).await?.0, 1);
    // No agent plays here: the instance never joins the cluster.
    let w = h
        .wait_for("late", Duration::from_secs(60), "a timed-out run", |w| {
            w.status
                .as_ref()
                .and_then(|s| s.last_run.as_ref())
                .is_some()
        })
        .await?;
    let status = w.status.expect("status");
    assert_eq!(
        status.last_run.map(|r| r.outcome),
        Some(RunOutcome::ScaleUpTimedOut)
    );
    let degraded = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .expect("Degraded");
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "ScaleUpTimedOut")
    );
    assert_eq!(group(&h, &names).await?.0, 0);
    assert_eq!(
        run_calls(&h),
        0,
        "RunTask must never be called without capacity"
    );
    let events = h.events("late").await?;
    assert!(
        events
            .iter()
            .any(|(t, r, _)| t == "Warning" && r == "ScaleUpTimedOut"),
        "{events:?}"
    );
    Ok(())
}

#[tokio::test]
async fn failing_handler_records_the_exit_code_and_dead_letters_the_messages() -> anyhow::Result<()>
{
    let mut h = Harness::strict("fail").await?;
    h.start_controller(Duration::from_secs(300));
    let spec = format!(
        "{FAST_WORKER}\n  handler: \"exit 3\"\nqueue:\n  receiveWaitTimeSeconds: 1\n  visibilityTimeoutSeconds: 30\n  deadLetter:\n    maxReceiveCount: 2"
    );
    // The FAST_WORKER queue block is replaced by the one with a dead-letter setting.
    let spec = spec.replacen(
        "queue:\n  receiveWaitTimeSeconds: 1\n  visibilityTimeoutSeconds: 30\n",
        "",
        1,
    );
    let (url, names) = ready(&h, "failing", &spec).await?;
    send(&h, &url, 3).await?;
    let player = real_worker(
        &h,
        &names,
        vec![
            ("WORKER_RETRY_BACKOFF".into(), "1".into()),
            ("WORKER_RETRY_BACKOFF_MAX".into(), "1".into()),
        ],
    )?;
    trigger(&h.api, "failing", "1").await?;
    let w = h
        .wait_for("failing", Duration::from_secs(120), "a recorded run", |w| {
            w.status
                .as_ref()
                .and_then(|s| s.last_run.as_ref())
                .is_some()
        })
        .await?;
    let run = w
        .status
        .as_ref()
        .and_then(|s| s.last_run.clone())
        .expect("run");
    assert_eq!(run.outcome, RunOutcome::Failed, "{run:?}");
    assert!(run.exit_code.is_some_and(|c| c != 0), "{run:?}");
    let sqs = aws_sdk_sqs::Client::new(&h.sdk);
    let dlq = sqs
        .get_queue_attributes()
        .queue_url(
            w.status
                .as_ref()
                .and_then(|s| s.resources.dead_letter_queue_url.clone())
                .unwrap_or_default(),
        )
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await?;
    let in_dlq = dlq
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages))
        .cloned();
    assert_eq!(
        in_dlq.as_deref(),
        Some("3"),
        "all three failing messages dead-lettered"
    );
    h.wait_for("failing", Duration::from_secs(30), "phase Idle", |w| {
        w.status.as_ref().and_then(|s| s.phase) == Some(Phase::Idle)
    })
    .await?;
    assert_eq!(group(&h, &names).await?, (0, 0));
    let events = h.events("failing").await?;
    assert!(
        events
            .iter()
            .any(|(t, r, _)| t == "Warning" && r == "TaskStopped"),
        "{events:?}"
    );
    player.stop().await;
    Ok(())
}

#[tokio::test]
async fn controller_restarted_at_every_step_completes_one_run() -> anyhow::Result<()> {
    let mut h = Harness::strict("restart").await?;
    h.start_controller(Duration::from_secs(300));
    let spec = format!("{FAST_WORKER}\n  handler: \"cat > /dev/null\"");
    let (url, names) = ready(&h, "phoenix", &spec).await?;
    send(&h, &url, 5).await?;
    trigger(&h.api, "phoenix", "1").await?;
    // Kill the controller as soon as each phase is reached, then start a new one.
    h.wait_for("phoenix", Duration::from_secs(20), "ScalingUp", |w| {
        w.status.as_ref().and_then(|s| s.phase) == Some(Phase::ScalingUp)
    })
    .await?;
    h.stop_controller().await;
    let player = real_worker(&h, &names, vec![])?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    h.start_controller(Duration::from_secs(300));
    h.wait_for("phoenix", Duration::from_secs(30), "Running or done", |w| {
        w.status
            .as_ref()
            .is_some_and(|s| s.phase == Some(Phase::Running) || s.last_run.is_some())
    })
    .await?;
    h.stop_controller().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    h.start_controller(Duration::from_secs(300));
    let w = h
        .wait_for("phoenix", Duration::from_secs(120), "a recorded run", |w| {
            w.status
                .as_ref()
                .and_then(|s| s.last_run.as_ref())
                .is_some()
        })
        .await?;
    assert_eq!(
        w.status
            .as_ref()
            .and_then(|s| s.last_run.as_ref())
            .map(|r| r.outcome),
        Some(RunOutcome::Succeeded)
    );
    h.wait_for("phoenix", Duration::from_secs(30), "phase Idle", |w| {
        w.status.as_ref().and_then(|s| s.phase) == Some(Phase::Idle)
    })
    .await?;
    assert_eq!(
        stopped_tasks(&h, &names).await?,
        1,
        "exactly one task set ran"
    );
    assert_eq!(group(&h, &names).await?, (0, 0));
    player.stop().await;
    Ok(())
}

#[tokio::test]
async fn leftover_idle_instance_is_scaled_in_when_the_queue_is_empty() -> anyhow::Result<()> {
    let mut h = Harness::strict("leftover").await?;
    h.start_controller(Duration::from_secs(300));
    h.apply_yaml(&worker_yaml("stray", "")).await?;
    h.wait_ready("stray").await?;
    let names = Names::new(&h.ns, "stray");
    // An instance left running (a crashed worker, a manual change): nothing runs on it.
    aws_sdk_autoscaling::Client::new(&h.sdk)
        .set_desired_capacity()
        .auto_scaling_group_name(&names.auto_scaling_group)
        .desired_capacity(1)
        .send()
        .await?;
    assert_eq!(group(&h, &names).await?, (1, 1));
    h.poke("stray").await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while group(&h, &names).await?.0 != 0 {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "idle instance not scaled in"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let events = h.events("stray").await?;
    assert!(
        events.iter().any(|(_, r, _)| r == "IdleInstanceScaledIn"),
        "{events:?}"
    );
    Ok(())
}

/// The stopped tasks of a worker's cluster as ECS records them, with their tags.
async fn stopped_task_records(
    h: &Harness,
    names: &Names,
) -> anyhow::Result<Vec<aws_sdk_ecs::types::Task>> {
    Agent::new(&h.sdk, &names.cluster, &names.auto_scaling_group)
        .tasks("STOPPED")
        .await
}

/// Waits for the worker's first recorded run, then for phase Idle with the group back at zero.
async fn run_and_idle(
    h: &Harness,
    name: &str,
    names: &Names,
) -> anyhow::Result<ecs_worker_operator::api::RunRecord> {
    let w = h
        .wait_for(name, Duration::from_secs(120), "a recorded run", |w| {
            w.status
                .as_ref()
                .and_then(|s| s.last_run.as_ref())
                .is_some()
        })
        .await?;
    let run = w.status.and_then(|s| s.last_run).expect("a run");
    h.wait_for(name, Duration::from_secs(30), "phase Idle", |w| {
        w.status.as_ref().and_then(|s| s.phase) == Some(Phase::Idle)
    })
    .await?;
    assert_eq!(group(h, names).await?, (0, 0), "capacity back at zero");
    Ok(run)
}

/// What ECS recorded for the run's only task: its container exit code, stopped reason and
/// the outcome tag the worker put on it.
fn task_record(tasks: &[aws_sdk_ecs::types::Task]) -> (Option<i32>, String, Option<String>) {
    assert_eq!(tasks.len(), 1, "exactly one task ran: {tasks:?}");
    let task = &tasks[0];
    (
        task.containers().iter().find_map(|c| c.exit_code()),
        task.stopped_reason().unwrap_or_default().to_string(),
        task.tags()
            .iter()
            .find(|t| t.key() == Some(desired::OUTCOME_TAG))
            .and_then(|t| t.value())
            .map(str::to_string),
    )
}

/// Whether `principal` was allowed `action` at least once.
async fn allowed(h: &Harness, principal: &str, action: &str) -> anyhow::Result<bool> {
    let iam = h.iam.as_ref().expect("a strict harness");
    Ok(iam.decisions().await?.iter().any(|d| {
        d["principal"]
            .as_str()
            .is_some_and(|p| p.contains(principal))
            && d["action"] == action
            && d["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("allowed"))
    }))
}

/// Defect 10: the worker drains the queue and terminates its own instance, which takes the ECS
/// agent down before it reports the container's exit, so ECS stops the task with no exit code
/// ("Host EC2 (instance i-...) terminated."). The worker found its task through the task
/// metadata endpoint and tagged it with its exit code first; the run is recorded from that tag.
#[tokio::test]
async fn a_drain_whose_host_goes_down_before_the_agent_reports_is_recorded_from_the_worker_tag()
-> anyhow::Result<()> {
    let mut h = Harness::strict("hostgone").await?;
    h.start_controller(Duration::from_secs(300));
    let spec = format!("{FAST_WORKER}\n  handler: \"cat > /dev/null\"");
    let (url, names) = ready(&h, "hostgone", &spec).await?;
    send(&h, &url, 5).await?;
    let player = real_worker(&h, &names, vec![])?;
    trigger(&h.api, "hostgone", "1").await?;
    let run = run_and_idle(&h, "hostgone", &names).await?;
    let ended = player.ended.lock().map(|e| e.clone()).unwrap_or_default();
    player.stop().await;

    // ECS's record: no exit code, the host's termination as the reason, the worker's tag.
    let (exit_code, reason, tag) = task_record(&stopped_task_records(&h, &names).await?);
    assert_eq!(exit_code, None, "the agent never reported the exit");
    assert!(
        reason.starts_with("Host EC2 (instance i-") && reason.ends_with(") terminated."),
        "{reason}"
    );
    assert_eq!(tag.as_deref(), Some("0"));
    assert_eq!(
        ended
            .iter()
            .map(|e| (e.exit_code, e.reported))
            .collect::<Vec<_>>(),
        vec![(0, false)],
        "{ended:?}"
    );

    // The operator took the worker's own record of its exit.
    assert_eq!(run.outcome, RunOutcome::Succeeded, "{run:?}");
    assert_eq!(run.exit_code, Some(0), "{run:?}");
    assert_eq!(run.messages_after, Some(0));
    assert_eq!(run.stop_reason.as_deref(), Some(reason.as_str()));

    // The worker took ECS's path to its instance and tagged its task, as its task role.
    let task_role = format!(":assumed-role/{}/", names.task_role);
    for action in [
        "ecs:DescribeTasks",
        "ecs:DescribeContainerInstances",
        "ecs:TagResource",
        "autoscaling:TerminateInstanceInAutoScalingGroup",
    ] {
        assert!(
            allowed(&h, &task_role, action).await?,
            "no allowed {action} by the task role"
        );
    }
    Ok(())
}

/// The same with a handler that fails every message: the messages are dead-lettered, the
/// worker still drains, tags 3 and terminates its instance; the task ends without an exit code
/// and the run is Failed with exit code 3.
#[tokio::test]
async fn a_failed_drain_whose_host_goes_down_is_recorded_failed_with_the_tagged_code()
-> anyhow::Result<()> {
    let mut h = Harness::strict("hostfail").await?;
    h.start_controller(Duration::from_secs(300));
    let spec = "queue:\n  receiveWaitTimeSeconds: 1\n  visibilityTimeoutSeconds: 30\n  deadLetter:\n    maxReceiveCount: 2\nworker:\n  emptyReceives: 1\n  handler: \"exit 3\"";
    let (url, names) = ready(&h, "hostfail", spec).await?;
    send(&h, &url, 2).await?;
    let player = real_worker(
        &h,
        &names,
        vec![
            ("WORKER_RETRY_BACKOFF".into(), "1".into()),
            ("WORKER_RETRY_BACKOFF_MAX".into(), "1".into()),
        ],
    )?;
    trigger(&h.api, "hostfail", "1").await?;
    let run = run_and_idle(&h, "hostfail", &names).await?;
    let ended = player.ended.lock().map(|e| e.clone()).unwrap_or_default();
    player.stop().await;

    let (exit_code, reason, tag) = task_record(&stopped_task_records(&h, &names).await?);
    assert_eq!(exit_code, None, "the agent never reported the exit");
    assert!(reason.starts_with("Host EC2 (instance i-"), "{reason}");
    assert_eq!(tag.as_deref(), Some("3"));
    assert_eq!(
        ended
            .iter()
            .map(|e| (e.exit_code, e.reported))
            .collect::<Vec<_>>(),
        vec![(3, false)],
        "{ended:?}"
    );
    assert_eq!(run.outcome, RunOutcome::Failed, "{run:?}");
    assert_eq!(run.exit_code, Some(3), "{run:?}");
    Ok(())
}

/// A worker that leaves its capacity alone (`WORKER_TERMINATION=none`) exits while its host is
/// up: the agent reports the exit code (as the instance role), the worker put no tag, and the
/// run is recorded from the reported code; the operator then removes the idle instance.
#[tokio::test]
async fn a_worker_whose_host_stays_up_is_recorded_from_the_reported_exit_code() -> anyhow::Result<()>
{
    let mut h = Harness::strict("hostup").await?;
    h.start_controller(Duration::from_secs(300));
    let spec = format!("{FAST_WORKER}\n  handler: \"cat > /dev/null\"");
    let (url, names) = ready(&h, "hostup", &spec).await?;
    send(&h, &url, 3).await?;
    let player = real_worker(
        &h,
        &names,
        vec![("WORKER_TERMINATION".into(), "none".into())],
    )?;
    trigger(&h.api, "hostup", "1").await?;
    let run = run_and_idle(&h, "hostup", &names).await?;
    let ended = player.ended.lock().map(|e| e.clone()).unwrap_or_default();
    player.stop().await;

    let (exit_code, reason, tag) = task_record(&stopped_task_records(&h, &names).await?);
    assert_eq!(exit_code, Some(0));
    assert_eq!(reason, "Essential container in task exited");
    assert_eq!(
        tag, None,
        "a worker that keeps its capacity records nothing"
    );
    assert_eq!(
        ended
            .iter()
            .map(|e| (e.exit_code, e.reported))
            .collect::<Vec<_>>(),
        vec![(0, true)],
        "{ended:?}"
    );
    assert_eq!(run.outcome, RunOutcome::Succeeded, "{run:?}");
    assert_eq!(run.exit_code, Some(0), "{run:?}");
    let instance_role = format!(":assumed-role/{}/", names.instance_role);
    assert!(
        allowed(&h, &instance_role, "ecs:SubmitTaskStateChange").await?,
        "the agent reported the exit as the instance role"
    );
    Ok(())
}
