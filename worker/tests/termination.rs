//! Self-termination against moto Auto Scaling and ECS: finding the instance through the ECS task
//! metadata, the `group` mode, and refusing to terminate an instance of another group.

mod common;

use common::{Env, serve_task_metadata};
use ecs_worker::{Exit, Message, Terminated, TerminationMode, Worker, from_fn};
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
    let ecs = aws_sdk_ecs::Client::new(&env.sdk);
    ecs.create_cluster()
        .cluster_name("meta-cluster")
        .send()
        .await
        .expect("create cluster");
    ecs.register_container_instance()
        .cluster("meta-cluster")
        .instance_identity_document(serde_json::json!({ "instanceId": instances[1] }).to_string())
        .send()
        .await
        .expect("register container instance");
    ecs.register_task_definition()
        .family("worker")
        .container_definitions(
            aws_sdk_ecs::types::ContainerDefinition::builder()
                .name("worker")
                .image("ecs-worker")
                .memory_reservation(128)
                .essential(true)
                .build(),
        )
        .send()
        .await
        .expect("register task definition");
    let run = ecs
        .run_task()
        .cluster("meta-cluster")
        .task_definition("worker")
        .send()
        .await
        .expect("run task");
    let task_arn = run
        .tasks()
        .first()
        .and_then(|t| t.task_arn())
        .expect("a task was placed")
        .to_owned();
    let metadata = serve_task_metadata(
        serde_json::json!({
            "Cluster": "meta-cluster",
            "TaskARN": task_arn,
            "Family": "worker",
            "Revision": "1",
            "DesiredStatus": "RUNNING",
            "KnownStatus": "RUNNING",
            "LaunchType": "EC2",
            "Containers": []
        })
        .to_string(),
    )
    .await;

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
    // A metadata endpoint that answers 404 for the task, and IMDS switched off.
    config.ecs_metadata_uri = Some(format!("{}/nothing", env.moto.endpoint()));
    config.imds_disabled = true;
    let report = Worker::new(config, &env.clients(), noop())
        .run(CancellationToken::new())
        .await;
    assert_eq!(report.exit(), Exit::TerminationFailed);
    let error = format!("{:?}", report.termination);
    assert!(error.contains("ECS task metadata"), "{error}");
    assert!(error.contains("AWS_EC2_METADATA_DISABLED"), "{error}");
    assert!(error.contains("WORKER_INSTANCE_ID"), "{error}");
}
