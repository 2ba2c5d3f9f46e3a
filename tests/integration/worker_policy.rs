//! The task role's policy allows exactly what the worker calls.
//!
//! The real worker binary runs against moto through the recording proxy, in each termination
//! mode, on a queue with messages that succeed, fail and outlive a third of their visibility
//! timeout (so the heartbeat renews them), as an ECS task: a task metadata endpoint names its
//! task, so it finds its instance and records its outcome as on ECS. Every (service, operation)
//! it sent is mapped to the IAM action that authorizes it, and the set of those actions over all
//! modes must equal the set of actions [`desired::task_policy`] allows: no call without a
//! permission, no permission without a call.
//!
//! Not run here, and why it needs nothing more: SIGTERM releases held messages with
//! ChangeMessageVisibilityBatch (`sqs:ChangeMessageVisibility`, called here for failures and
//! heartbeats); `WORKER_INSTANCE_ID` only skips calls.

use crate::common::worker_binary;
use aws_sdk_sqs::types::QueueAttributeName;
use ecs_worker_operator::plan::desired::{self, OUTCOME_TAG, TaskPolicyInputs};
use std::collections::{BTreeMap, BTreeSet};
use testbed::Moto;
use testbed::moto::{ACCOUNT_ID, REGION};
use testbed::proxy::{Faults, Proxy};

/// The IAM action that authorizes a call. SQS authorizes its batch calls by the single call's
/// action.
/// <https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-api-permissions-reference.html>
fn iam_action(service: &str, operation: &str) -> String {
    let action = match (service, operation) {
        ("sqs", "DeleteMessageBatch") => "DeleteMessage",
        ("sqs", "ChangeMessageVisibilityBatch") => "ChangeMessageVisibility",
        ("sqs", "SendMessageBatch") => "SendMessage",
        (_, operation) => operation,
    };
    format!("{service}:{action}")
}

/// Every action an `Allow` statement of `policy` names.
fn allowed_actions(policy: &str) -> BTreeSet<String> {
    let policy: serde_json::Value = serde_json::from_str(policy).expect("policy is JSON");
    let statements = policy["Statement"].as_array().expect("statements");
    let mut actions = BTreeSet::new();
    for s in statements.iter().filter(|s| s["Effect"] == "Allow") {
        match &s["Action"] {
            serde_json::Value::String(a) => {
                actions.insert(a.clone());
            }
            serde_json::Value::Array(list) => {
                actions.extend(list.iter().filter_map(|a| a.as_str().map(str::to_string)));
            }
            other => panic!("statement without actions: {other}"),
        }
    }
    actions
}

/// One worker's AWS side: a queue with a dead-letter queue, a group of one instance, a cluster
/// with that instance registered and the worker's task placed on it.
struct Bed {
    queue_url: String,
    queue_arn: String,
    group: String,
    cluster: String,
    task_arn: String,
}

async fn bed(sdk: &aws_config::SdkConfig, name: &str) -> anyhow::Result<Bed> {
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let arn_of = async |url: &str| -> anyhow::Result<String> {
        let out = sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await?;
        out.attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn))
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("queue {url} has no ARN"))
    };
    let dlq = sqs
        .create_queue()
        .queue_name(format!("{name}-dlq"))
        .send()
        .await?;
    let dlq_arn = arn_of(dlq.queue_url().unwrap_or_default()).await?;
    let queue = sqs
        .create_queue()
        .queue_name(name)
        .attributes(
            QueueAttributeName::RedrivePolicy,
            serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}).to_string(),
        )
        .send()
        .await?;
    let queue_url = queue.queue_url().unwrap_or_default().to_string();
    let queue_arn = arn_of(&queue_url).await?;
    for body in ["ok", "slow", "fail"] {
        sqs.send_message()
            .queue_url(&queue_url)
            .message_body(body)
            .send()
            .await?;
    }

    let ec2 = aws_sdk_ec2::Client::new(sdk);
    let image = ec2
        .describe_images()
        .owners("amazon")
        .send()
        .await?
        .images()
        .iter()
        .find_map(|i| i.image_id().map(str::to_string))
        .ok_or_else(|| anyhow::anyhow!("moto has no AMI"))?;
    ec2.create_launch_template()
        .launch_template_name(name)
        .launch_template_data(
            aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                .image_id(image)
                .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
                .build(),
        )
        .send()
        .await?;
    let autoscaling = aws_sdk_autoscaling::Client::new(sdk);
    autoscaling
        .create_auto_scaling_group()
        .auto_scaling_group_name(name)
        .launch_template(
            aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                .launch_template_name(name)
                .version("$Latest")
                .build(),
        )
        .min_size(0)
        .max_size(1)
        .desired_capacity(1)
        .availability_zones(format!("{REGION}a"))
        .send()
        .await?;
    let groups = autoscaling
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(name)
        .send()
        .await?;
    let instance_id = groups
        .auto_scaling_groups()
        .iter()
        .flat_map(|g| g.instances())
        .find_map(|i| i.instance_id().map(str::to_string))
        .ok_or_else(|| anyhow::anyhow!("group {name} launched no instance"))?;

    let ecs = aws_sdk_ecs::Client::new(sdk);
    ecs.create_cluster().cluster_name(name).send().await?;
    ecs.register_container_instance()
        .cluster(name)
        .instance_identity_document(serde_json::json!({ "instanceId": instance_id }).to_string())
        .send()
        .await?;
    ecs.register_task_definition()
        .family(name)
        .container_definitions(
            aws_sdk_ecs::types::ContainerDefinition::builder()
                .name(desired::CONTAINER_NAME)
                .image("ecs-worker")
                .memory_reservation(128)
                .essential(true)
                .build(),
        )
        .send()
        .await?;
    let run = ecs
        .run_task()
        .cluster(name)
        .task_definition(name)
        .send()
        .await?;
    let task_arn = run
        .tasks()
        .first()
        .and_then(|t| t.task_arn())
        .ok_or_else(|| anyhow::anyhow!("no task placed in {name}"))?
        .to_string();
    Ok(Bed {
        queue_url,
        queue_arn,
        group: name.to_string(),
        cluster: name.to_string(),
        task_arn,
    })
}

/// Runs the worker binary in `mode` on its own bed, through its own recording proxy; returns the
/// (service, operation) pairs it sent, with the bed.
async fn run_worker(
    moto: &Moto,
    sdk: &aws_config::SdkConfig,
    mode: &str,
) -> anyhow::Result<(BTreeSet<(String, String)>, Bed)> {
    let name = format!("policy-{mode}");
    let bed = bed(sdk, &name).await?;
    let metadata = testbed::agent::serve_task_metadata(serde_json::json!({
        "Cluster": bed.cluster,
        "TaskARN": bed.task_arn,
        "Family": name,
        "Revision": "1",
        "DesiredStatus": "RUNNING",
        "KnownStatus": "RUNNING",
        "LaunchType": "EC2",
        "Containers": []
    }))?;
    let proxy = Proxy::start(moto.endpoint(), Faults::none())?;
    let handler = r#"body=$(cat); case "$body" in fail) exit 1;; slow) sleep 2;; esac"#;
    let out = tokio::process::Command::new(worker_binary()?)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_ENDPOINT_URL", proxy.endpoint())
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", "info")
        .env("ECS_CONTAINER_METADATA_URI_V4", metadata)
        .env("WORKER_QUEUE_URL", &bed.queue_url)
        .env("WORKER_CLUSTER", &bed.cluster)
        .env("WORKER_AUTOSCALING_GROUP", &bed.group)
        .env("WORKER_TERMINATION", mode)
        .env("WORKER_HANDLER", handler)
        .env("WORKER_WAIT_SECONDS", "1")
        .env("WORKER_RETRY_BACKOFF", "0")
        // A third of it is 1 s: the 2 s message gets its visibility renewed.
        .env("WORKER_VISIBILITY_TIMEOUT", "3")
        .kill_on_drop(true)
        .output()
        .await?;
    let log = String::from_utf8_lossy(&out.stderr);
    // 3: the queue was drained and the capacity step succeeded, with a failed message.
    anyhow::ensure!(
        out.status.code() == Some(3),
        "worker in mode {mode} exited {:?}:\n{log}",
        out.status
    );
    let requests = proxy.requests();
    let refused: Vec<String> = requests
        .iter()
        .filter(|r| r.status.is_none_or(|s| s >= 400))
        .map(|r| {
            format!(
                "{}:{} -> {:?} {:?}",
                r.service, r.operation, r.status, r.code
            )
        })
        .collect();
    anyhow::ensure!(
        refused.is_empty(),
        "mode {mode}: calls that did not succeed: {refused:?}"
    );
    let calls = requests
        .into_iter()
        .map(|r| (r.service, r.operation))
        .collect();
    Ok((calls, bed))
}

#[tokio::test]
async fn the_task_role_allows_exactly_what_the_worker_calls() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let sdk = moto.sdk_config().await;
    let runs = futures::future::join_all(
        ["instance", "group", "none"].map(|mode| run_worker(&moto, &sdk, mode)),
    )
    .await;

    let ecs = aws_sdk_ecs::Client::new(&sdk);
    let mut called: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    let mut policies = BTreeSet::new();
    for (mode, run) in ["instance", "group", "none"].into_iter().zip(runs) {
        let (calls, bed) = run?;
        for (service, operation) in &calls {
            called
                .entry(iam_action(service, operation))
                .or_default()
                .insert(mode);
        }
        // The worker tags its task with the key the policy lets it write (and the operator
        // reads), before it removes its capacity; with the capacity left alone it does not.
        let tasks = ecs
            .describe_tasks()
            .cluster(&bed.cluster)
            .tasks(&bed.task_arn)
            .include(aws_sdk_ecs::types::TaskField::Tags)
            .send()
            .await?;
        let outcome = tasks
            .tasks()
            .iter()
            .flat_map(|t| t.tags())
            .find(|t| t.key() == Some(OUTCOME_TAG))
            .and_then(|t| t.value().map(str::to_string));
        let expected = (mode != "none").then(|| "3".to_string());
        assert_eq!(outcome, expected, "outcome tag in mode {mode}");

        let cluster_arn = format!("arn:aws:ecs:{REGION}:{ACCOUNT_ID}:cluster/{}", bed.cluster);
        policies.insert(desired::task_policy(&TaskPolicyInputs {
            partition: desired::partition(REGION),
            region: REGION,
            queue_arn: &bed.queue_arn,
            group_name: &bed.group,
            cluster_arn: &cluster_arn,
            cluster_name: &bed.cluster,
        }));
    }

    let called_actions: BTreeSet<String> = called.keys().cloned().collect();
    for policy in &policies {
        let allowed = allowed_actions(policy);
        let not_allowed: Vec<String> = called_actions
            .difference(&allowed)
            .map(|a| format!("{a} (called in mode {:?})", called[a]))
            .collect();
        let never_called: Vec<&String> = allowed.difference(&called_actions).collect();
        assert!(
            not_allowed.is_empty() && never_called.is_empty(),
            "the task role's policy and the worker's calls differ\n\
             called but not allowed: {not_allowed:?}\n\
             allowed but never called: {never_called:?}\n\
             policy: {policy}"
        );
    }
    Ok(())
}
