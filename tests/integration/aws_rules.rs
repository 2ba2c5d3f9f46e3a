//! Rules AWS enforces and moto does not, held by the operator against the strict test bed
//! (IAM enforced for every principal, requests checked against AWS's models and limits):
//! - RunTask starts at most 10 tasks per call (a larger count is refused by the strict bed's
//!   limits and fails the test), each slice with its own client token: 25 instances get one
//!   task each, and an operator restarted in the middle starts no second set;
//! - a resource under one of the worker's names that belongs to someone else (another
//!   cluster's operator) is neither adopted nor deleted, and nothing is written;
//! - an inline role policy written by an older version is compared (IAM returns it
//!   URL-encoded) and rewritten; the instance and execution roles carry the AWS managed
//!   policies; the group has `AZRebalance` suspended; instances keep IMDS one hop away from
//!   containers; subnets given in another order than AWS
//!   lists them are no drift; an owner tag value stays within 256 characters.

use crate::common::{Harness, trigger, worker_yaml};
use ecs_worker_operator::api::EcsSelfTerminatingWorker;
use ecs_worker_operator::plan::desired::{
    self, MANAGED_BY, MANAGED_BY_TAG, Names, OWNER_TAG, TaskPolicyInputs,
};
use std::collections::BTreeMap;
use std::time::Duration;
use testbed::agent::{Agent, Play, Player};

fn calls(h: &Harness, operation: &str) -> u64 {
    h.aws_call_counts()
        .iter()
        .filter(|(l, _)| l.operation == operation)
        .map(|(_, n)| n)
        .sum()
}

async fn send_batches(h: &Harness, url: &str, n: usize) -> anyhow::Result<()> {
    use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
    let sqs = aws_sdk_sqs::Client::new(&h.sdk);
    for start in (0..n).step_by(10) {
        let entries = (start..(start + 10).min(n))
            .map(|i| {
                SendMessageBatchRequestEntry::builder()
                    .id(format!("m{i}"))
                    .message_body(format!("{{\"n\": {i}}}"))
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        sqs.send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await?;
    }
    Ok(())
}

/// Container instance of every task of the run, active or not.
async fn tasks_by_instance(h: &Harness, names: &Names) -> anyhow::Result<BTreeMap<String, usize>> {
    let agent = Agent::new(&h.sdk, &names.cluster, &names.auto_scaling_group);
    let mut by_instance = BTreeMap::new();
    for t in agent.tasks("RUNNING").await? {
        *by_instance
            .entry(t.container_instance_arn().unwrap_or_default().to_string())
            .or_insert(0) += 1;
    }
    Ok(by_instance)
}

#[tokio::test]
async fn twenty_five_instances_get_one_task_each_in_calls_of_ten_and_a_restart_starts_no_second_set()
-> anyhow::Result<()> {
    let mut h = Harness::strict("fleetstart").await?;
    h.start_controller(Duration::from_secs(300));
    let name = "wide";
    h.apply_yaml(&worker_yaml(
        name,
        "maxInstances: 25\nqueue:\n  receiveWaitTimeSeconds: 1\nscaling:\n  messagesPerInstance: 100",
    ))
    .await?;
    let w = h.wait_ready(name).await?;
    let url = w
        .status
        .and_then(|s| s.resources.queue_url)
        .unwrap_or_default();
    let names = Names::new(&h.ns, name);
    send_batches(&h, &url, 2_500).await?;
    let player = Player::start(
        Agent::new(&h.sdk, &names.cluster, &names.auto_scaling_group),
        Play::InstancesOnly,
    );
    trigger(&h.api, name, "1").await?;

    // The operator goes down as soon as its first RunTask call went out, and comes back.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while calls(&h, "RunTask") == 0 {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no RunTask within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    h.stop_controller().await;
    let at_restart = tasks_by_instance(&h, &names).await?.len();
    assert!(
        at_restart < 25,
        "the operator went down in the middle of the start ({at_restart} tasks placed)"
    );
    h.start_controller(Duration::from_secs(300));
    h.wait_for(name, Duration::from_secs(120), "25 tasks", |w| {
        w.status
            .as_ref()
            .and_then(|s| s.current_run.as_ref())
            .is_some_and(|r| r.tasks_started_at.is_some())
    })
    .await?;
    // Give a second set every chance to appear.
    let mut by_instance = BTreeMap::new();
    for _ in 0..20 {
        by_instance = tasks_by_instance(&h, &names).await?;
        if by_instance.len() == 25 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let settled = tasks_by_instance(&h, &names).await?;
    player.stop().await;
    assert_eq!(by_instance, settled, "no task started after all had one");
    assert_eq!(settled.len(), 25, "every instance has a task: {settled:?}");
    assert!(
        settled.values().all(|n| *n == 1),
        "exactly one task per instance: {settled:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_resource_of_another_cluster_under_the_workers_name_is_neither_adopted_nor_deleted()
-> anyhow::Result<()> {
    let mut h = Harness::strict("conflict").await?;
    h.start_controller(Duration::from_secs(300));
    let name = "taken";
    let names = Names::new(&h.ns, name);
    let foreign = format!("another-cluster/{}/{name}", h.ns);
    let sqs = aws_sdk_sqs::Client::new(&h.sdk);
    let url = sqs
        .create_queue()
        .queue_name(&names.queue)
        .tags(OWNER_TAG, &foreign)
        .tags(MANAGED_BY_TAG, MANAGED_BY)
        .send()
        .await?
        .queue_url()
        .unwrap_or_default()
        .to_string();
    sqs.send_message()
        .queue_url(&url)
        .message_body("theirs")
        .send()
        .await?;

    h.apply_yaml(&worker_yaml(name, "")).await?;
    let w = h
        .wait_for(
            name,
            Duration::from_secs(60),
            "Degraded/NameConflict",
            |w| {
                w.condition("Degraded")
                    .is_some_and(|c| c.status == "True" && c.reason == "NameConflict")
            },
        )
        .await?;
    let message = w
        .condition("Degraded")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        message.contains(&names.queue) && message.contains(&foreign),
        "the condition names the resource and its holder: {message}"
    );
    // Nothing written: no role, no log group, no cluster.
    let iam = aws_sdk_iam::Client::new(&h.sdk);
    assert!(
        iam.get_role()
            .role_name(&names.task_role)
            .send()
            .await
            .is_err(),
        "no role created"
    );
    let logs = aws_sdk_cloudwatchlogs::Client::new(&h.sdk);
    let groups = logs
        .describe_log_groups()
        .log_group_name_prefix(&names.log_group)
        .send()
        .await?;
    assert!(groups.log_groups().is_empty(), "no log group created");
    for op in [
        "CreateQueue",
        "SetQueueAttributes",
        "CreateRole",
        "CreateCluster",
        "CreateLogGroup",
    ] {
        assert_eq!(calls(&h, op), 0, "{op} sent despite the conflict");
    }

    // Deleting the object leaves the other cluster's queue, messages and all.
    h.api.delete(name, &Default::default()).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while h.api.get_opt(name).await?.is_some() {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "object not deleted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let left = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await?;
    assert_eq!(
        left.attributes()
            .and_then(
                |a| a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            )
            .map(String::as_str),
        Some("1"),
        "the other cluster's queue and message are still there"
    );
    assert_eq!(calls(&h, "DeleteQueue"), 0);
    Ok(())
}

#[tokio::test]
async fn roles_policies_group_processes_and_subnet_order_match_what_aws_needs() -> anyhow::Result<()>
{
    let mut h = Harness::strict("awsrules").await?;
    // Every pass re-checks every resource.
    h.start_controller(Duration::from_millis(1));
    // Long enough that `cluster/namespace/name` exceeds a tag value's 256 characters.
    let name = format!("w{}", "x".repeat(250));
    let ec2 = aws_sdk_ec2::Client::new(&h.sdk);
    let mut subnets: Vec<String> = ec2
        .describe_subnets()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("default-for-az")
                .values("true")
                .build(),
        )
        .send()
        .await?
        .subnets()
        .iter()
        .filter_map(|s| s.subnet_id().map(str::to_string))
        .collect();
    subnets.sort();
    subnets.reverse();
    let spec = format!("network:\n  subnetIds: [{}]", subnets[..3].join(", "));
    h.apply_yaml(&worker_yaml(&name, &spec)).await?;
    let w: EcsSelfTerminatingWorker = h.wait_ready(&name).await?;
    let res = w.status.clone().unwrap_or_default().resources;
    let names = Names::new(&h.ns, &name);
    let iam = aws_sdk_iam::Client::new(&h.sdk);

    // The owner tag as written fits AWS's limit and still says who owns it.
    let sqs = aws_sdk_sqs::Client::new(&h.sdk);
    let tags = sqs
        .list_queue_tags()
        .queue_url(res.queue_url.clone().unwrap_or_default())
        .send()
        .await?;
    let owner = tags
        .tags()
        .and_then(|t| t.get(OWNER_TAG))
        .cloned()
        .unwrap_or_default();
    assert!(owner.len() <= 256, "{} characters", owner.len());
    assert_eq!(owner, crate::common::owner(&h.ns, &name));

    // An inline policy from an older version (no DescribeTasks): rewritten.
    let old = serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["sqs:ReceiveMessage"], "Resource": res.queue_arn.clone().unwrap_or_default()}]});
    iam.put_role_policy()
        .role_name(&names.task_role)
        .policy_name("worker")
        .policy_document(old.to_string())
        .send()
        .await?;
    let want = desired::task_policy(&TaskPolicyInputs {
        partition: "aws",
        region: "us-east-1",
        queue_arn: res.queue_arn.as_deref().unwrap_or_default(),
        group_name: &names.auto_scaling_group,
        cluster_arn: res.cluster_arn.as_deref().unwrap_or_default(),
        cluster_name: &names.cluster,
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        h.poke(&name).await?;
        let have = iam
            .get_role_policy()
            .role_name(&names.task_role)
            .policy_name("worker")
            .send()
            .await?;
        if desired::same_policy(have.policy_document(), &want) {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "task role policy not rewritten: {}",
            have.policy_document()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Managed policies on the instance and execution roles, no inline policy there.
    for (role, policy) in [
        (&names.instance_role, "AmazonEC2ContainerServiceforEC2Role"),
        (&names.execution_role, "AmazonECSTaskExecutionRolePolicy"),
    ] {
        let attached = iam
            .list_attached_role_policies()
            .role_name(role)
            .send()
            .await?;
        assert!(
            attached
                .attached_policies()
                .iter()
                .any(|p| p.policy_name() == Some(policy)),
            "{role} carries {policy}"
        );
        let inline = iam.list_role_policies().role_name(role).send().await?;
        assert!(inline.policy_names().is_empty(), "{role}: no inline policy");
    }

    // AZRebalance suspended; the subnets in another order than AWS's are no reason to write.
    let asg = aws_sdk_autoscaling::Client::new(&h.sdk);
    let group = asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(&names.auto_scaling_group)
        .send()
        .await?;
    let group = group.auto_scaling_groups().first().cloned().expect("group");
    assert!(
        group
            .suspended_processes()
            .iter()
            .any(|p| p.process_name() == Some("AZRebalance")),
        "AZRebalance suspended: {:?}",
        group.suspended_processes()
    );
    // Instance metadata out of the containers' reach (IMDSv2, hop limit 1).
    let versions = ec2
        .describe_launch_template_versions()
        .launch_template_name(&names.launch_template)
        .versions("$Latest")
        .send()
        .await?;
    let metadata = versions
        .launch_template_versions()
        .first()
        .and_then(|v| v.launch_template_data())
        .and_then(|d| d.metadata_options())
        .cloned()
        .expect("metadata options");
    assert_eq!(metadata.http_put_response_hop_limit(), Some(1));
    assert_eq!(metadata.http_tokens().map(|t| t.as_str()), Some("required"));
    let updates = calls(&h, "UpdateAutoScalingGroup");
    let passes = calls(&h, "DescribeAutoScalingGroups");
    for _ in 0..3 {
        h.poke(&name).await?;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    assert!(
        calls(&h, "DescribeAutoScalingGroups") > passes,
        "the group was checked again"
    );
    assert_eq!(
        calls(&h, "UpdateAutoScalingGroup"),
        updates,
        "subnets in another order are not drift"
    );
    Ok(())
}
