//! Self-termination against moto Auto Scaling and ECS: finding the instance through the ECS task
//! metadata, recording the outcome on the task first, the `group` mode, and refusing to
//! terminate an instance of another group.

mod common;

use common::Env;
use ecs_worker::termination::OUTCOME_TAG;
use ecs_worker::{Exit, Message, Terminated, TerminationMode, Worker, from_fn};
use testbed::proxy::{Faults, Proxy};
use tokio_util::sync::CancellationToken;

fn noop() -> impl ecs_worker::Handler {
    from_fn(|_m: Message| async { Ok::<(), std::io::Error>(()) })
}

#[tokio::test]
async fn the_instance_is_found_through_the_ecs_task_metadata() {
    let env = Env::start().await;
    let q = env.queue("meta", 30, None).await;
    let instances = env.group("meta-group", 2).await;
    // The ECS side: a cluster where only the second instance is registered, and a task on it.
    let (task_arn, metadata) = env.ecs_task("meta-cluster", &instances[1]).await;

    let mut config = env.config(&q.url);
    config.termination = TerminationMode::Instance;
    config.autoscaling_group = Some("meta-group".into());
    config.ecs_metadata_uri = Some(metadata);
    let report = Worker::new(config, &env.clients(), noop())
        .run(CancellationToken::new())
        .await;

    assert_eq!(report.exit(), Exit::Success, "{report:?}");
    assert_eq!(
        report.termination,
        Some(Ok(Terminated::Instance {
            instance_id: instances[1].clone(),
            group: "meta-group".into()
        }))
    );
    assert_eq!(
        env.group_state("meta-group").await,
        (1, vec![instances[0].clone()])
    );
    // The outcome is on the task, where the operator reads it if the agent cannot report.
    assert_eq!(report.recorded, Some(Ok(task_arn.clone())));
    assert_eq!(
        env.task_tags("meta-cluster", &task_arn)
            .await
            .get(OUTCOME_TAG),
        Some(&"0".to_owned())
    );
}

/// The outcome tag goes on the task before the capacity is touched, and carries the exit code
/// the worker exits with: 3 after a failed message.
#[tokio::test]
async fn the_outcome_is_recorded_on_the_task_before_the_capacity_is_removed() {
    let env = Env::start().await;
    let q = env.queue("outcome", 30, Some(1)).await;
    env.send(&q.url, ["ok".to_owned(), "fail".to_owned()]).await;
    let instances = env.group("outcome-group", 1).await;
    let (task_arn, metadata) = env.ecs_task("outcome-cluster", &instances[0]).await;
    let proxy = Proxy::start(env.moto.endpoint(), Faults::none()).expect("proxy");

    let mut config = env.config(&q.url);
    config.termination = TerminationMode::Group;
    config.autoscaling_group = Some("outcome-group".into());
    config.ecs_metadata_uri = Some(metadata);
    let failing = from_fn(|m: Message| async move {
        if m.body == "fail" {
            Err(std::io::Error::other("asked to fail"))
        } else {
            Ok(())
        }
    });
    let clients = ecs_worker::aws::Clients::new(&proxy.sdk_config());
    let report = Worker::new(config, &clients, failing)
        .run(CancellationToken::new())
        .await;

    assert_eq!(report.exit(), Exit::MessagesFailed, "{report:?}");
    assert_eq!(report.recorded, Some(Ok(task_arn.clone())));
    assert_eq!(
        env.task_tags("outcome-cluster", &task_arn)
            .await
            .get(OUTCOME_TAG),
        Some(&"3".to_owned())
    );
    assert_eq!(env.group_state("outcome-group").await, (0, vec![]));
    let calls: Vec<String> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.service != "sqs")
        .map(|r| r.operation)
        .collect();
    assert_eq!(calls, ["TagResource", "SetDesiredCapacity"]);
}

#[tokio::test]
async fn nothing_is_recorded_when_the_capacity_is_left_alone() {
    let env = Env::start().await;
    let q = env.queue("left-alone", 30, None).await;
    let instances = env.group("left-alone", 1).await;
    let (task_arn, metadata) = env.ecs_task("left-alone", &instances[0]).await;
    let mut config = env.config(&q.url);
    config.termination = TerminationMode::None;
    config.ecs_metadata_uri = Some(metadata);
    let report = Worker::new(config, &env.clients(), noop())
        .run(CancellationToken::new())
        .await;
    assert_eq!(report.exit(), Exit::Success, "{report:?}");
    assert_eq!(report.recorded, None);
    assert!(env.task_tags("left-alone", &task_arn).await.is_empty());
}

#[tokio::test]
async fn group_mode_sets_the_desired_capacity_to_zero() {
    let env = Env::start().await;
    let q = env.queue("group-mode", 30, None).await;
    env.group("whole", 2).await;
    let mut config = env.config(&q.url);
    config.termination = TerminationMode::Group;
    config.autoscaling_group = Some("whole".into());
    let report = Worker::new(config, &env.clients(), noop())
        .run(CancellationToken::new())
        .await;

    assert_eq!(report.exit(), Exit::Success, "{report:?}");
    assert_eq!(env.group_state("whole").await, (0, vec![]));
}

#[tokio::test]
async fn an_instance_of_another_group_is_left_running() {
    let env = Env::start().await;
    let q = env.queue("other", 30, None).await;
    let instances = env.group("theirs", 1).await;
    let mut config = env.config(&q.url);
    config.termination = TerminationMode::Instance;
    config.autoscaling_group = Some("ours".into());
    config.instance_id = Some(instances[0].clone());
    let report = Worker::new(config, &env.clients(), noop())
        .run(CancellationToken::new())
        .await;

    assert_eq!(report.exit(), Exit::TerminationFailed);
    let error = match &report.termination {
        Some(Err(e)) => e.clone(),
        other => panic!("expected a termination error, got {other:?}"),
    };
    assert!(
        error.contains("belongs to Auto Scaling group theirs"),
        "{error}"
    );
    assert_eq!(env.group_state("theirs").await, (1, instances));
}

#[tokio::test]
async fn no_way_to_find_the_instance_is_a_termination_failure() {
    let env = Env::start().await;
    let q = env.queue("lost", 30, None).await;
    let mut config = env.config(&q.url);
    config.termination = TerminationMode::Instance;
    // A metadata endpoint that answers 404 for the task.
    config.ecs_metadata_uri = Some(format!("{}/nothing", env.moto.endpoint()));
    let report = Worker::new(config, &env.clients(), noop())
        .run(CancellationToken::new())
        .await;
    assert_eq!(report.exit(), Exit::TerminationFailed);
    let error = format!("{:?}", report.termination);
    assert!(error.contains("ECS task metadata"), "{error}");
    assert!(error.contains("WORKER_INSTANCE_ID"), "{error}");
    assert!(
        matches!(&report.recorded, Some(Err(e)) if e.contains("ECS task metadata")),
        "{:?}",
        report.recorded
    );
}
