//! Provisioning against the real API server and moto: Ready with every resource tagged, zero
//! writes when nothing changed, repair of out-of-band deletions, complete removal on delete.

use crate::common::{self, Harness, worker_yaml};
use ecs_worker_operator::plan::desired::{Names, OWNER_TAG};
use kube::api::DeleteParams;
use std::time::Duration;

/// Owned resources found in moto by owner tag (or, where moto cannot filter by tag, by name).
#[derive(Debug, Default, PartialEq, Eq)]
struct Found {
    queues: usize,
    log_groups: usize,
    roles: usize,
    instance_profiles: usize,
    security_groups: usize,
    launch_templates: usize,
    groups: usize,
    clusters: usize,
    task_definitions: usize,
}

async fn find(h: &Harness, ns: &str, name: &str) -> anyhow::Result<Found> {
    let owner = common::owner(ns, name);
    let names = Names::new(ns, name);
    let sqs = aws_sdk_sqs::Client::new(&h.sdk);
    let mut queues = 0;
    for url in sqs
        .list_queues()
        .queue_name_prefix(&names.base)
        .send()
        .await?
        .queue_urls()
    {
        let tags = sqs.list_queue_tags().queue_url(url).send().await?;
        if tags.tags().and_then(|t| t.get(OWNER_TAG)) == Some(&owner) {
            queues += 1;
        }
    }
    let logs = aws_sdk_cloudwatchlogs::Client::new(&h.sdk);
    let log_groups = logs
        .describe_log_groups()
        .log_group_name_prefix(&names.log_group)
        .send()
        .await?
        .log_groups()
        .len();
    let iam = aws_sdk_iam::Client::new(&h.sdk);
    let mut roles = 0;
    for role in iam.list_roles().send().await?.roles() {
        let tags = iam
            .list_role_tags()
            .role_name(role.role_name())
            .send()
            .await?;
        if tags
            .tags()
            .iter()
            .any(|t| t.key() == OWNER_TAG && t.value() == owner)
        {
            roles += 1;
        }
    }
    let instance_profiles = iam
        .list_instance_profiles()
        .send()
        .await?
        .instance_profiles()
        .iter()
        .filter(|p| p.instance_profile_name() == names.instance_profile)
        .count();
    let ec2 = aws_sdk_ec2::Client::new(&h.sdk);
    let tag_filter = || {
        aws_sdk_ec2::types::Filter::builder()
            .name(format!("tag:{OWNER_TAG}"))
            .values(&owner)
            .build()
    };
    let security_groups = ec2
        .describe_security_groups()
        .filters(tag_filter())
        .send()
        .await?
        .security_groups()
        .len();
    let launch_templates = ec2
        .describe_launch_templates()
        .filters(tag_filter())
        .send()
        .await?
        .launch_templates()
        .len();
    let asg = aws_sdk_autoscaling::Client::new(&h.sdk);
    let groups = asg
        .describe_auto_scaling_groups()
        .filters(
            aws_sdk_autoscaling::types::Filter::builder()
                .name(format!("tag:{OWNER_TAG}"))
                .values(&owner)
                .build(),
        )
        .send()
        .await?
        .auto_scaling_groups()
        .len();
    let ecs = aws_sdk_ecs::Client::new(&h.sdk);
    let clusters = ecs
        .describe_clusters()
        .clusters(&names.cluster)
        .send()
        .await?
        .clusters()
        .iter()
        .filter(|c| c.status() == Some("ACTIVE"))
        .count();
    let task_definitions = ecs
        .list_task_definitions()
        .family_prefix(&names.task_family)
        .status(aws_sdk_ecs::types::TaskDefinitionStatus::Active)
        .send()
        .await?
        .task_definition_arns()
        .len();
    Ok(Found {
        queues,
        log_groups,
        roles,
        instance_profiles,
        security_groups,
        launch_templates,
        groups,
        clusters,
        task_definitions,
    })
}

fn everything() -> Found {
    Found {
        queues: 2,
        log_groups: 1,
        roles: 3,
        instance_profiles: 1,
        security_groups: 1,
        launch_templates: 1,
        groups: 1,
        clusters: 1,
        task_definitions: 1,
    }
}

#[tokio::test]
async fn example_provisions_tagged_resources_idempotently_repairs_and_deletes_everything()
-> anyhow::Result<()> {
    let mut h = Harness::strict("prov").await?;
    h.start_controller(Duration::ZERO);
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/worker.yaml"))?;
    h.apply_yaml(&example).await?;
    let w = h.wait_ready("video-encoder").await?;
    crate::kstatus::assert_kstatus(&h.api, "video-encoder", "Current").await?;

    // Every resource exists in moto, tagged with its owner, and its id is in status.
    assert_eq!(find(&h, &h.ns, "video-encoder").await?, everything());
    let r = &w.status.as_ref().expect("status").resources;
    for (field, v) in [
        ("queueUrl", &r.queue_url),
        ("queueArn", &r.queue_arn),
        ("deadLetterQueueUrl", &r.dead_letter_queue_url),
        ("logGroup", &r.log_group),
        ("instanceRoleArn", &r.instance_role_arn),
        ("instanceProfileArn", &r.instance_profile_arn),
        ("taskRoleArn", &r.task_role_arn),
        ("executionRoleArn", &r.execution_role_arn),
        ("securityGroupId", &r.security_group_id),
        ("launchTemplateId", &r.launch_template_id),
        ("autoScalingGroupName", &r.auto_scaling_group_name),
        ("clusterArn", &r.cluster_arn),
        ("taskDefinitionArn", &r.task_definition_arn),
    ] {
        assert!(
            v.as_deref().is_some_and(|s| !s.is_empty()),
            "status.resources.{field} missing"
        );
    }
    assert!(!r.subnet_ids.is_empty());
    let status = w.status.as_ref().expect("status");
    assert_eq!(status.schedule.as_deref(), Some("rate(1 minute)"));
    assert!(status.next_run_time.is_some());

    // The task definition carries no credentials and points the worker at its queue.
    let ecs = aws_sdk_ecs::Client::new(&h.sdk);
    let td = ecs
        .describe_task_definition()
        .task_definition(r.task_definition_arn.clone().unwrap_or_default())
        .send()
        .await?;
    let env = crate::common::env_pairs(
        td.task_definition().expect("td").container_definitions()[0].environment(),
    );
    assert!(env.contains(&(
        "WORKER_QUEUE_URL".into(),
        r.queue_url.clone().unwrap_or_default()
    )));
    assert!(
        !env.iter()
            .any(|(k, _)| k.starts_with("AWS_ACCESS") || k.starts_with("AWS_SECRET"))
    );

    // A reconcile of the unchanged object (drift check included) makes reads only.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, writes_before) = h.aws_reads_writes();
    let reconciles_before = h.metrics.reconciles.get();
    h.poke("video-encoder").await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while h.metrics.reconciles.get() < reconciles_before + 2
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (reads_after, writes_after) = h.aws_reads_writes();
    assert!(
        h.metrics.reconciles.get() > reconciles_before,
        "no reconcile happened"
    );
    assert_eq!(
        writes_after,
        writes_before,
        "an unchanged object caused AWS writes: {:?}",
        h.aws_call_counts()
    );
    assert!(reads_after > 0);

    // Out-of-band deletion of owned resources is repaired on the next reconcile.
    let names = Names::new(&h.ns, "video-encoder");
    let sqs = aws_sdk_sqs::Client::new(&h.sdk);
    sqs.delete_queue()
        .queue_url(r.queue_url.clone().unwrap_or_default())
        .send()
        .await?;
    aws_sdk_cloudwatchlogs::Client::new(&h.sdk)
        .delete_log_group()
        .log_group_name(&names.log_group)
        .send()
        .await?;
    aws_sdk_autoscaling::Client::new(&h.sdk)
        .delete_auto_scaling_group()
        .auto_scaling_group_name(&names.auto_scaling_group)
        .force_delete(true)
        .send()
        .await?;
    ecs.deregister_task_definition()
        .task_definition(r.task_definition_arn.clone().unwrap_or_default())
        .send()
        .await?;
    h.poke("video-encoder").await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if find(&h, &h.ns, "video-encoder").await? == everything() {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "not repaired: {:?}",
            find(&h, &h.ns, "video-encoder").await?
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    h.wait_event("video-encoder", "Repaired").await?;

    // Deletion removes everything, then the object goes.
    h.api
        .delete("video-encoder", &DeleteParams::default())
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while h.api.get_opt("video-encoder").await?.is_some() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "object not finalized"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(find(&h, &h.ns, "video-encoder").await?, Found::default());
    Ok(())
}

#[tokio::test]
async fn a_queue_holding_messages_is_kept_on_delete_unless_the_policy_says_otherwise()
-> anyhow::Result<()> {
    let mut h = Harness::strict("keep").await?;
    h.start_controller(Duration::from_secs(300));
    h.apply_yaml(&worker_yaml("keeper", "")).await?;
    h.apply_yaml(&worker_yaml(
        "dropper",
        "deletionPolicy: DeleteWithMessages",
    ))
    .await?;
    let keeper = h.wait_ready("keeper").await?;
    let dropper = h.wait_ready("dropper").await?;
    let sqs = aws_sdk_sqs::Client::new(&h.sdk);
    for w in [&keeper, &dropper] {
        let url = w
            .status
            .as_ref()
            .and_then(|s| s.resources.queue_url.clone())
            .unwrap_or_default();
        sqs.send_message()
            .queue_url(url)
            .message_body("work")
            .send()
            .await?;
    }
    h.api.delete("keeper", &DeleteParams::default()).await?;
    h.api.delete("dropper", &DeleteParams::default()).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while h.api.get_opt("keeper").await?.is_some() || h.api.get_opt("dropper").await?.is_some() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "objects not finalized"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let kept = find(&h, &h.ns, "keeper").await?;
    assert_eq!(
        kept.queues, 1,
        "the work queue with a message is kept; the empty DLQ goes: {kept:?}"
    );
    assert_eq!(
        kept.groups + kept.clusters + kept.roles + kept.launch_templates,
        0,
        "{kept:?}"
    );
    assert_eq!(find(&h, &h.ns, "dropper").await?, Found::default());
    let events = h.events("keeper").await?;
    assert!(
        events.iter().any(|(t, reason, note)| t == "Warning"
            && reason == "QueueRetained"
            && note.contains("deletionPolicy")),
        "{events:?}"
    );
    Ok(())
}

#[tokio::test]
async fn kubectl_shows_columns_and_explains_fields() -> anyhow::Result<()> {
    let mut h = Harness::strict("cols").await?;
    h.start_controller(Duration::from_secs(300));
    h.apply_yaml(&worker_yaml("shown", "")).await?;
    h.wait_ready("shown").await?;
    // A worker with only a list of types shows the list.
    h.apply_yaml(&worker_yaml(
        "listed",
        "instanceType: null\ncapacity:\n  instanceTypes: [m6i.large, m5.large]",
    ))
    .await?;
    h.wait_ready("listed").await?;
    let cp = testbed::ControlPlane::shared()?;
    for resource in ["ecsworkers", "ecsworker", "ecsselfterminatingworkers"] {
        let out = cp.kubectl().args(["get", resource, "-n", &h.ns]).output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{resource}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let header = text.lines().next().unwrap_or_default();
        for column in [
            "NAME", "INSTANCE", "SCHEDULE", "PHASE", "READY", "QUEUE", "LAST RUN", "NEXT RUN",
            "AGE",
        ] {
            assert!(
                header.contains(column),
                "{resource}: missing {column} in {header}"
            );
        }
        let row = |name: &str| {
            let row = text.lines().find(|l| l.starts_with(name));
            row.unwrap_or_default().to_string()
        };
        assert!(row("listed").contains("m6i.large,m5.large"), "{text}");
        let row = row("shown");
        assert!(
            row.contains("shown")
                && row.contains("t3.medium")
                && row.contains("rate(1 hour)")
                && row.contains("Idle")
                && row.contains("True"),
            "{row}"
        );
    }
    let out = cp
        .kubectl()
        .args(["explain", "ecsworker.spec.cronRate"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("CRON_RATE") && text.contains("7_HOURS"),
        "{text}"
    );
    let out = cp.kubectl().args(["explain", "ecsworker.spec"]).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    for field in [
        "instanceType",
        "memoryLimitMiB",
        "credentials",
        "deletionPolicy",
        "maxInstances",
    ] {
        assert!(text.contains(field), "explain lacks {field}");
    }
    Ok(())
}
