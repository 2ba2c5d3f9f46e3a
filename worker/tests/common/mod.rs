//! Shared set-up for the worker's tests: one moto server per test, queues, messages, an Auto
//! Scaling group with running instances, and a stand-in for the ECS task metadata endpoint
//! (which only the ECS agent serves; moto has no equivalent).

#![allow(dead_code)] // each test file uses a different part

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use ecs_worker::aws::Clients;
use ecs_worker::{Config, TerminationMode};
use testbed::Moto;

pub struct Env {
    pub moto: Moto,
    pub sdk: aws_config::SdkConfig,
    pub sqs: aws_sdk_sqs::Client,
}

/// A queue and, if asked for, its dead-letter queue.
pub struct TestQueue {
    pub url: String,
    pub dlq_url: Option<String>,
}

impl Env {
    pub async fn start() -> Env {
        let moto = Moto::start().await.expect("moto starts");
        let sdk = moto.sdk_config().await;
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        Env { moto, sdk, sqs }
    }

    pub fn clients(&self) -> Clients {
        Clients::new(&self.sdk)
    }

    /// A worker configuration for fast tests: 1 s long polls, no capacity step.
    pub fn config(&self, queue_url: &str) -> Config {
        let mut c = Config::new(queue_url);
        c.wait = Duration::from_secs(1);
        c.visibility_timeout = Duration::from_secs(30);
        c.retry_backoff = Duration::ZERO;
        c.shutdown_grace = Duration::from_secs(10);
        c.termination = TerminationMode::None;
        c
    }

    /// Creates a queue with the given visibility timeout, and a dead-letter queue after
    /// `max_receive_count` receives if given.
    pub async fn queue(
        &self,
        name: &str,
        visibility_seconds: u32,
        max_receive_count: Option<u32>,
    ) -> TestQueue {
        let mut dlq_url = None;
        let mut create = self.sqs.create_queue().queue_name(name).attributes(
            QueueAttributeName::VisibilityTimeout,
            visibility_seconds.to_string(),
        );
        if let Some(max) = max_receive_count {
            let dlq = self
                .sqs
                .create_queue()
                .queue_name(format!("{name}-dlq"))
                .send()
                .await
                .expect("create the dead-letter queue");
            let url = dlq.queue_url().expect("queue url").to_owned();
            let arn = self.queue_arn(&url).await;
            create = create.attributes(
                QueueAttributeName::RedrivePolicy,
                serde_json::json!({ "deadLetterTargetArn": arn, "maxReceiveCount": max })
                    .to_string(),
            );
            dlq_url = Some(url);
        }
        let out = create.send().await.expect("create the queue");
        TestQueue {
            url: out.queue_url().expect("queue url").to_owned(),
            dlq_url,
        }
    }

    pub async fn queue_arn(&self, url: &str) -> String {
        self.sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("queue attributes")
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn))
            .expect("queue arn")
            .clone()
    }

    /// Sends the bodies in batches of 10; returns message id -> body.
    pub async fn send(
        &self,
        url: &str,
        bodies: impl IntoIterator<Item = String>,
    ) -> BTreeMap<String, String> {
        let bodies: Vec<String> = bodies.into_iter().collect();
        let mut sent = BTreeMap::new();
        for chunk in bodies.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, body)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body)
                        .build()
                        .expect("entry")
                })
                .collect();
            let out = self
                .sqs
                .send_message_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
                .expect("send a batch");
            assert!(out.failed().is_empty(), "send failures: {:?}", out.failed());
            for ok in out.successful() {
                let i: usize = ok.id().parse().expect("entry id");
                sent.insert(ok.message_id().to_owned(), chunk[i].clone());
            }
        }
        sent
    }

    /// (visible, in flight) as the queue reports them.
    pub async fn depth(&self, url: &str) -> (u64, u64) {
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .expect("queue attributes");
        let attrs = out.attributes().expect("attributes");
        let n = |k: QueueAttributeName| -> u64 {
            attrs
                .get(&k)
                .and_then(|v| v.parse().ok())
                .expect("numeric counter")
        };
        (
            n(QueueAttributeName::ApproximateNumberOfMessages),
            n(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        )
    }

    /// Receives what is visible right now (short poll), without changing much: the messages
    /// become visible again after `visibility_seconds`.
    pub async fn peek(
        &self,
        url: &str,
        visibility_seconds: i32,
    ) -> Vec<aws_sdk_sqs::types::Message> {
        self.sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .visibility_timeout(visibility_seconds)
            .wait_time_seconds(0)
            .send()
            .await
            .expect("receive")
            .messages
            .unwrap_or_default()
    }

    /// A launch template and an Auto Scaling group of `desired` running instances; returns the
    /// instance ids.
    pub async fn group(&self, name: &str, desired: i32) -> Vec<String> {
        let ec2 = aws_sdk_ec2::Client::new(&self.sdk);
        let images = ec2
            .describe_images()
            .owners("amazon")
            .send()
            .await
            .expect("describe images");
        let image = images
            .images()
            .iter()
            .find_map(|i| i.image_id())
            .expect("moto has AMIs")
            .to_owned();
        ec2.create_launch_template()
            .launch_template_name(name)
            .launch_template_data(
                aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                    .image_id(image)
                    .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
                    .build(),
            )
            .send()
            .await
            .expect("create launch template");
        let asg = aws_sdk_autoscaling::Client::new(&self.sdk);
        asg.create_auto_scaling_group()
            .auto_scaling_group_name(name)
            .launch_template(
                aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                    .launch_template_name(name)
                    .version("$Latest")
                    .build(),
            )
            .min_size(0)
            .max_size(4)
            .desired_capacity(desired)
            .availability_zones("us-east-1a")
            .send()
            .await
            .expect("create auto scaling group");
        let (_, instances) = self.group_state(name).await;
        assert_eq!(instances.len(), desired as usize, "instances launched");
        instances
    }

    /// (desired capacity, instance ids) of a group.
    pub async fn group_state(&self, name: &str) -> (i32, Vec<String>) {
        let asg = aws_sdk_autoscaling::Client::new(&self.sdk);
        let out = asg
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .expect("describe auto scaling groups");
        let group = out.auto_scaling_groups().first().expect("the group exists");
        (
            group.desired_capacity().unwrap_or(-1),
            group
                .instances()
                .iter()
                .filter_map(|i| i.instance_id().map(str::to_owned))
                .collect(),
        )
    }
}

impl Env {
    /// An ECS cluster with `instance_id` registered as its container instance and one task
    /// placed on it, as the operator starts it; returns the task ARN and the base URL of a task
    /// metadata endpoint that names the task (what the ECS agent gives the container in
    /// `ECS_CONTAINER_METADATA_URI_V4`).
    pub async fn ecs_task(&self, cluster: &str, instance_id: &str) -> (String, String) {
        let ecs = aws_sdk_ecs::Client::new(&self.sdk);
        ecs.create_cluster()
            .cluster_name(cluster)
            .send()
            .await
            .expect("create cluster");
        ecs.register_container_instance()
            .cluster(cluster)
            .instance_identity_document(
                serde_json::json!({ "instanceId": instance_id }).to_string(),
            )
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
            .cluster(cluster)
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
        let metadata = testbed::agent::serve_task_metadata(serde_json::json!({
            "Cluster": cluster,
            "TaskARN": task_arn,
            "Family": "worker",
            "Revision": "1",
            "DesiredStatus": "RUNNING",
            "KnownStatus": "RUNNING",
            "LaunchType": "EC2",
            "Containers": []
        }))
        .expect("task metadata endpoint");
        (task_arn, metadata)
    }

    /// A task's tags as DescribeTasks with `include: [TAGS]` shows them (the operator's read).
    pub async fn task_tags(&self, cluster: &str, task_arn: &str) -> BTreeMap<String, String> {
        let out = aws_sdk_ecs::Client::new(&self.sdk)
            .describe_tasks()
            .cluster(cluster)
            .tasks(task_arn)
            .include(aws_sdk_ecs::types::TaskField::Tags)
            .send()
            .await
            .expect("describe tasks");
        out.tasks()
            .iter()
            .flat_map(|t| t.tags())
            .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
            .collect()
    }
}

/// Environment for the `ecs-worker` binary against moto: the endpoint through the standard
/// `AWS_ENDPOINT_URL`, dummy keys, and nothing inherited from the test's own environment.
pub fn binary_command(env: &Env, vars: &[(&str, String)]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ecs-worker"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_ENDPOINT_URL", env.moto.endpoint())
        .env("AWS_REGION", testbed::moto::REGION)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", "error")
        .kill_on_drop(true);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(tempfile::TempDir);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        TempDir(
            tempfile::Builder::new()
                .prefix(&format!("ecs-worker-test-{name}-"))
                .tempdir()
                .expect("create temp dir"),
        )
    }

    /// The directory itself.
    pub fn root(&self) -> &std::path::Path {
        self.0.path()
    }

    /// A file in it.
    pub fn path(&self, file: &str) -> std::path::PathBuf {
        self.0.path().join(file)
    }
}

/// Lines of a file (empty if it does not exist).
pub fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

impl Env {
    /// Ids of every message visible in the queue right now. Each is received with a long
    /// visibility timeout (so none is counted twice) and then made visible again at once, so
    /// the queue is left as it was found. Call it only while no worker runs.
    pub async fn visible_ids(&self, url: &str) -> std::collections::BTreeSet<String> {
        use aws_sdk_sqs::types::ChangeMessageVisibilityBatchRequestEntry;
        let (visible, _) = self.depth(url).await;
        let mut ids = std::collections::BTreeSet::new();
        let mut receipts = Vec::new();
        let mut empty = 0;
        while (ids.len() as u64) < visible && empty < 3 {
            let got = self.peek(url, 300).await;
            if got.is_empty() {
                empty += 1;
                continue;
            }
            for m in got {
                ids.insert(m.message_id().expect("message id").to_owned());
                receipts.push(m.receipt_handle().expect("receipt handle").to_owned());
            }
        }
        for chunk in receipts.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, receipt)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(receipt)
                        .visibility_timeout(0)
                        .build()
                        .expect("entry")
                })
                .collect();
            let out = self
                .sqs
                .change_message_visibility_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
                .expect("release the peeked messages");
            assert!(
                out.failed().is_empty(),
                "release failures: {:?}",
                out.failed()
            );
        }
        ids
    }
}
