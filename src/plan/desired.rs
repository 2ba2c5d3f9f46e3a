//! The AWS resources a worker's spec asks for, computed without I/O: deterministic names within
//! AWS limits, owner tags, the ECS-optimized AMI parameter, instance user data, queue
//! attributes, launch template data and the task definition, each with a fingerprint so the
//! AWS layer can tell "unchanged" from "needs a new revision" without guessing.

use crate::api::{AmiFamily, EcsSelfTerminatingWorkerSpec, TerminationMode};
use crate::plan::cycle::Tail;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Tag naming the owning object, `namespace/name`. Every resource carries it.
pub const OWNER_TAG: &str = "ecsworker.dev/owner";
/// Tag saying which tool manages the resource.
pub const MANAGED_BY_TAG: &str = "ecsworker.dev/managed-by";
/// Value of [`MANAGED_BY_TAG`].
pub const MANAGED_BY: &str = "ecs-worker-operator";
/// Tag holding a resource's desired-state fingerprint (task definitions).
pub const FINGERPRINT_TAG: &str = "ecsworker.dev/fingerprint";
/// Name of the worker container in the task definition.
pub const CONTAINER_NAME: &str = "worker";

/// Names of every resource of one worker. Deterministic from namespace/name, unique per
/// object (a hash of `namespace/name` ends the base), within every AWS length limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    /// `ecsw-<namespace>-<name, truncated>-<hash8>`, at most 40 characters.
    pub base: String,
    pub queue: String,
    pub dead_letter_queue: String,
    pub log_group: String,
    pub instance_role: String,
    pub instance_profile: String,
    pub task_role: String,
    pub execution_role: String,
    pub security_group: String,
    pub launch_template: String,
    pub auto_scaling_group: String,
    pub cluster: String,
    pub task_family: String,
}

impl Names {
    pub fn new(namespace: &str, name: &str) -> Names {
        let hash = hex(&Sha256::digest(format!("{namespace}/{name}").as_bytes()))[..8].to_string();
        let readable: String = format!("{namespace}-{name}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .take(26)
            .collect();
        let base = format!("ecsw-{}-{hash}", readable.trim_end_matches('-'));
        Names {
            queue: base.clone(),
            dead_letter_queue: format!("{base}-dlq"),
            log_group: format!("/ecs-worker/{namespace}/{name}"),
            instance_role: format!("{base}-instance"),
            instance_profile: format!("{base}-instance"),
            task_role: format!("{base}-task"),
            execution_role: format!("{base}-exec"),
            security_group: base.clone(),
            launch_template: base.clone(),
            auto_scaling_group: base.clone(),
            cluster: base.clone(),
            task_family: base.clone(),
            base,
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A short, stable digest of any serializable desired state.
pub fn fingerprint<T: serde::Serialize>(value: &T) -> String {
    let json = serde_json::to_vec(value).unwrap_or_default();
    hex(&Sha256::digest(&json))[..16].to_string()
}

/// The AWS partition of a region: `aws`, `aws-cn` (China), `aws-us-gov` (GovCloud) or one of
/// the isolated partitions. Every ARN the operator writes starts with it.
/// <https://docs.aws.amazon.com/IAM/latest/UserGuide/reference-arns.html>
pub fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else if region.starts_with("us-isob-") {
        "aws-iso-b"
    } else if region.starts_with("us-iso-") {
        "aws-iso"
    } else if region.starts_with("eu-isoe-") {
        "aws-iso-e"
    } else if region.starts_with("us-isof-") {
        "aws-iso-f"
    } else {
        "aws"
    }
}

/// Longest tag value AWS accepts (EC2, Auto Scaling, ECS, IAM, SQS, CloudWatch Logs).
/// <https://docs.aws.amazon.com/tag-editor/latest/userguide/tagging.html#tag-conventions>
pub const MAX_TAG_VALUE: usize = 256;

/// The object that owns a worker's resources, in the cluster the operator serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// Identity of the Kubernetes cluster (the operator's `--cluster-id`).
    pub cluster: String,
    pub namespace: String,
    pub name: String,
}

/// Who holds a resource found under one of the worker's names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    /// This worker, in this cluster (or an earlier version of the operator that wrote
    /// `namespace/name` before owner values named the cluster).
    Us,
    /// Someone else: another cluster's operator, another object, or nobody (no owner tag).
    Other(String),
}

impl Owner {
    /// Value of [`OWNER_TAG`]: `<cluster>/<namespace>/<name>`. The cluster identity keeps two
    /// Kubernetes clusters sharing one AWS account and region from adopting (and deleting)
    /// each other's resources. A value longer than a tag value may be keeps its first
    /// characters and ends with `_` and a digest of the whole, so it stays unique.
    pub fn value(&self) -> String {
        let full = format!("{}/{}/{}", self.cluster, self.namespace, self.name);
        if full.len() <= MAX_TAG_VALUE {
            return full;
        }
        let digest = hex(&Sha256::digest(full.as_bytes()))[..16].to_string();
        let keep = MAX_TAG_VALUE - digest.len() - 1;
        // Kubernetes names and UIDs are ASCII: every byte index is a character boundary.
        format!("{}_{digest}", &full[..keep])
    }

    /// Whose is a resource whose [`OWNER_TAG`] reads `found`.
    pub fn holder(&self, found: Option<&str>) -> Holder {
        match found {
            Some(v) if v == self.value() || v == format!("{}/{}", self.namespace, self.name) => {
                Holder::Us
            }
            Some(v) => Holder::Other(format!("{OWNER_TAG}={v}")),
            None => Holder::Other(format!("no {OWNER_TAG} tag")),
        }
    }

    /// Tags on every resource: the user's, then the owner and managed-by tags (which win).
    pub fn tags(&self, spec: &EcsSelfTerminatingWorkerSpec) -> BTreeMap<String, String> {
        let mut tags = spec.tags.clone();
        tags.insert(OWNER_TAG.into(), self.value());
        tags.insert(MANAGED_BY_TAG.into(), MANAGED_BY.into());
        tags
    }
}

/// The public SSM parameter holding the recommended ECS-optimized AMI id.
pub fn ami_parameter(spec: &EcsSelfTerminatingWorkerSpec) -> &'static str {
    match (spec.ami_family, spec.gpu, spec.arm) {
        (AmiFamily::AmazonLinux2023, true, _) => {
            "/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id"
        }
        (AmiFamily::AmazonLinux2023, false, true) => {
            "/aws/service/ecs/optimized-ami/amazon-linux-2023/arm64/recommended/image_id"
        }
        (AmiFamily::AmazonLinux2023, false, false) => {
            "/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id"
        }
        (AmiFamily::AmazonLinux2, true, _) => {
            "/aws/service/ecs/optimized-ami/amazon-linux-2/gpu/recommended/image_id"
        }
        (AmiFamily::AmazonLinux2, false, true) => {
            "/aws/service/ecs/optimized-ami/amazon-linux-2/arm64/recommended/image_id"
        }
        (AmiFamily::AmazonLinux2, false, false) => {
            "/aws/service/ecs/optimized-ami/amazon-linux-2/recommended/image_id"
        }
    }
}

/// Base64 user data that joins the instance to the worker's cluster.
///
/// It also turns on ECS Spot Instance draining (off by default): on a Spot interruption notice
/// ECS sets the container instance to `DRAINING`, two minutes before EC2 reclaims it. ECS
/// itself leaves standalone tasks (RunTask's, as the worker's are) running on a draining
/// instance; the run cycle stops them (`StopTask`: SIGTERM, so the worker releases its
/// messages at once) while the agent is still there to report the exit.
/// <https://docs.aws.amazon.com/AmazonECS/latest/developerguide/spot-instance-draining-linux-container.html>
/// <https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_UpdateContainerInstancesState.html>
pub fn user_data(cluster: &str, gpu: bool) -> String {
    let mut script = format!(
        "#!/bin/bash\ncat >> /etc/ecs/ecs.config <<'EOF'\nECS_CLUSTER={cluster}\nECS_ENABLE_CONTAINER_METADATA=true\nECS_ENABLE_SPOT_INSTANCE_DRAINING=true\n"
    );
    if gpu {
        script.push_str("ECS_ENABLE_GPU_SUPPORT=true\n");
    }
    script.push_str("EOF\n");
    base64::engine::general_purpose::STANDARD.encode(script)
}

/// SQS attributes of the work queue (`redrive` = dead-letter queue ARN when enabled).
pub fn queue_attributes(
    spec: &EcsSelfTerminatingWorkerSpec,
    redrive_to: Option<&str>,
) -> BTreeMap<String, String> {
    let q = &spec.queue;
    let mut a = BTreeMap::from([
        (
            "VisibilityTimeout".to_string(),
            q.visibility_timeout_seconds.to_string(),
        ),
        (
            "MessageRetentionPeriod".to_string(),
            q.message_retention_seconds.to_string(),
        ),
        (
            "ReceiveMessageWaitTimeSeconds".to_string(),
            q.receive_wait_time_seconds.to_string(),
        ),
    ]);
    if let Some(arn) = redrive_to {
        a.insert(
            "RedrivePolicy".into(),
            serde_json::json!({"deadLetterTargetArn": arn, "maxReceiveCount": q.dead_letter.max_receive_count}).to_string(),
        );
    }
    a
}

/// SQS attributes of the dead-letter queue: keep failed messages as long as SQS allows.
pub fn dead_letter_queue_attributes() -> BTreeMap<String, String> {
    BTreeMap::from([("MessageRetentionPeriod".to_string(), "1209600".to_string())])
}

/// Whether an observed redrive policy matches the desired one (SQS may reorder or retype it).
pub fn same_redrive(observed: Option<&str>, desired: Option<&str>) -> bool {
    let parse = |s: Option<&str>| -> Option<(String, i64)> {
        let v: serde_json::Value = serde_json::from_str(s?).ok()?;
        let count = match &v["maxReceiveCount"] {
            serde_json::Value::Number(n) => n.as_i64()?,
            serde_json::Value::String(s) => s.parse().ok()?,
            _ => return None,
        };
        Some((v["deadLetterTargetArn"].as_str()?.to_string(), count))
    };
    parse(observed) == parse(desired)
}

/// The launch template data the group's instances start from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LaunchTemplateSpec {
    pub image_id: String,
    pub instance_type: String,
    pub instance_profile_arn: String,
    pub security_group_ids: Vec<String>,
    pub user_data: String,
    pub assign_public_ip: Option<bool>,
}

impl LaunchTemplateSpec {
    /// Stored as the version description, so an unchanged spec creates no new version.
    pub fn fingerprint(&self) -> String {
        fingerprint(self)
    }
}

/// The worker task definition.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TaskDefinitionSpec {
    pub family: String,
    pub image: String,
    pub command: Option<Vec<String>>,
    pub memory_reservation: i32,
    pub gpu: bool,
    pub environment: Vec<(String, String)>,
    pub log_group: String,
    pub region: String,
    pub task_role_arn: String,
    pub execution_role_arn: String,
}

impl TaskDefinitionSpec {
    /// Stored as a tag of each revision, so an unchanged spec registers no new revision.
    pub fn fingerprint(&self) -> String {
        fingerprint(self)
    }
}

/// Where the pieces the task definition points at live.
pub struct TaskInputs<'a> {
    pub names: &'a Names,
    pub queue_url: &'a str,
    pub task_role_arn: &'a str,
    pub execution_role_arn: &'a str,
}

/// The worker's environment for a tail: set by the task definition for every run, and by
/// RunTask's container override for a run with a tail of its own.
pub fn tail_environment(tail: Tail) -> [(String, String); 2] {
    [
        (
            "WORKER_EMPTY_RECEIVES".to_string(),
            tail.empty_receives.to_string(),
        ),
        (
            "WORKER_WAIT_SECONDS".to_string(),
            tail.wait_seconds.to_string(),
        ),
    ]
}

/// The task definition for a spec. The environment tells the worker its queue, cluster and
/// group (see worker/README.md); no credential is ever part of it.
pub fn task_definition(
    spec: &EcsSelfTerminatingWorkerSpec,
    inputs: &TaskInputs<'_>,
) -> TaskDefinitionSpec {
    let w = &spec.worker;
    let termination = match w.termination {
        TerminationMode::Instance => "instance",
        TerminationMode::Group => "group",
        TerminationMode::None => "none",
    };
    let [empty_receives, wait_seconds] = tail_environment(Tail::configured(spec));
    let mut environment = vec![
        ("AWS_REGION".to_string(), spec.region.clone()),
        ("AWS_DEFAULT_REGION".to_string(), spec.region.clone()),
        ("WORKER_QUEUE_URL".to_string(), inputs.queue_url.to_string()),
        ("WORKER_CLUSTER".to_string(), inputs.names.cluster.clone()),
        (
            "WORKER_AUTOSCALING_GROUP".to_string(),
            inputs.names.auto_scaling_group.clone(),
        ),
        ("WORKER_CONCURRENCY".to_string(), w.concurrency.to_string()),
        // No WORKER_PREFETCH: the worker's default (`auto`) holds ahead only what its handlers
        // start within a second at their measured pace, full receives of 10 for quick
        // messages and none ahead for long ones (worker/README.md, "Prefetch"); a worker image
        // older than that setting keeps running with this task definition.
        empty_receives,
        wait_seconds,
        ("WORKER_TERMINATION".to_string(), termination.to_string()),
    ];
    if let Some(handler) = &w.handler {
        environment.push(("WORKER_HANDLER".to_string(), handler.clone()));
    }
    // Only what the spec sets: an unchanged spec keeps its task definition.
    if let Some(mode) = w.handler_mode {
        environment.push(("WORKER_HANDLER_MODE".to_string(), mode.as_str().to_string()));
    }
    if let Some(url) = &w.handler_url {
        environment.push(("WORKER_HANDLER_URL".to_string(), url.clone()));
    }
    if let Some(path) = &w.handler_ready_path {
        environment.push(("WORKER_HANDLER_READY_PATH".to_string(), path.clone()));
    }
    if let Some(seconds) = w.handler_ready_timeout_seconds {
        environment.push((
            "WORKER_HANDLER_READY_TIMEOUT_SECONDS".to_string(),
            seconds.to_string(),
        ));
    }
    environment.extend(spec.env.iter().map(|e| (e.name.clone(), e.value.clone())));
    TaskDefinitionSpec {
        family: inputs.names.task_family.clone(),
        image: spec.image.clone(),
        command: spec.command.clone(),
        memory_reservation: spec.memory_limit_mib,
        gpu: spec.gpu,
        environment,
        log_group: inputs.names.log_group.clone(),
        region: spec.region.clone(),
        task_role_arn: inputs.task_role_arn.to_string(),
        execution_role_arn: inputs.execution_role_arn.to_string(),
    }
}

/// Trust policy letting a service assume a role.
pub fn trust_policy(service: &str) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]
    })
    .to_string()
}

/// AWS managed policy of the container instance role: what the ECS agent needs, kept current by
/// AWS as the agent changes.
/// <https://docs.aws.amazon.com/AmazonECS/latest/developerguide/instance_IAM_role.html>
pub fn instance_managed_policy(partition: &str) -> String {
    format!("arn:{partition}:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role")
}

/// AWS managed policy of the task execution role: pull images (ECR) and write logs.
/// <https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task_execution_IAM_role.html>
pub fn execution_managed_policy(partition: &str) -> String {
    format!("arn:{partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy")
}

/// Tag the worker puts on its own task with its outcome before it removes its capacity, so a
/// drain that succeeded is known even when the instance goes before the agent reports.
pub const OUTCOME_TAG: &str = "ecsworker.dev/outcome";

/// Where the task role's statements point.
pub struct TaskPolicyInputs<'a> {
    pub partition: &'a str,
    pub region: &'a str,
    pub queue_arn: &'a str,
    pub group_name: &'a str,
    pub cluster_arn: &'a str,
    pub cluster_name: &'a str,
}

/// Inline policy of the task role: exactly the calls the worker makes (worker/README.md) —
/// drain this queue, find its own task and instance, mark its task with its outcome, remove
/// this group's capacity. `autoscaling:DescribeAutoScalingInstances` has no resource-level
/// permissions, so its resource is `*`.
/// <https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2autoscaling.html>
/// <https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonelasticcontainerservice.html>
pub fn task_policy(i: &TaskPolicyInputs<'_>) -> String {
    let group_arn = format!(
        "arn:{}:autoscaling:{}:*:autoScalingGroup:*:autoScalingGroupName/{}",
        i.partition, i.region, i.group_name
    );
    let tasks = format!(
        "arn:{}:ecs:{}:*:task/{}/*",
        i.partition, i.region, i.cluster_name
    );
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "DrainQueue", "Effect": "Allow", "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes"], "Resource": i.queue_arn},
            {"Sid": "RemoveOwnCapacity", "Effect": "Allow", "Action": ["autoscaling:TerminateInstanceInAutoScalingGroup", "autoscaling:SetDesiredCapacity"], "Resource": group_arn},
            {"Sid": "FindOwnInstance", "Effect": "Allow", "Action": ["autoscaling:DescribeAutoScalingInstances"], "Resource": "*"},
            {"Sid": "FindOwnTask", "Effect": "Allow", "Action": ["ecs:DescribeContainerInstances", "ecs:DescribeTasks"], "Resource": "*", "Condition": {"ArnEquals": {"ecs:cluster": i.cluster_arn}}},
            {"Sid": "RecordOutcome", "Effect": "Allow", "Action": ["ecs:TagResource"], "Resource": tasks, "Condition": {"ForAllValues:StringEquals": {"aws:TagKeys": [OUTCOME_TAG]}}}
        ]
    })
    .to_string()
}

/// Whether two policy documents say the same: IAM returns documents URL-encoded and may
/// reformat them, so both are decoded and compared as JSON.
/// <https://docs.aws.amazon.com/IAM/latest/APIReference/API_GetRolePolicy.html>
pub fn same_policy(observed: &str, desired: &str) -> bool {
    let decoded = percent_encoding::percent_decode_str(observed).decode_utf8_lossy();
    let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).ok();
    match (parse(&decoded), parse(desired)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: serde_json::Value) -> EcsSelfTerminatingWorkerSpec {
        let mut v = serde_json::json!({
            "instanceType": "t3.medium", "memoryLimitMiB": 512, "region": "us-east-1",
            "image": "worker:1", "cronRate": "1_MINUTE"
        });
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        serde_json::from_value(v).expect("valid spec")
    }

    #[test]
    fn names_fit_aws_limits_and_are_unique() {
        let long_ns = "n".repeat(63);
        let long_name = "a".repeat(253);
        for (ns, name) in [
            ("default", "w"),
            (long_ns.as_str(), long_name.as_str()),
            ("prod", "video.encode"),
        ] {
            let n = Names::new(ns, name);
            assert!(n.base.len() <= 40, "{}", n.base);
            assert!(n.queue.len() <= 80 && n.dead_letter_queue.len() <= 80);
            assert!(
                n.instance_role.len() <= 64
                    && n.task_role.len() <= 64
                    && n.execution_role.len() <= 64
            );
            assert!(n.launch_template.len() >= 3 && n.launch_template.len() <= 128);
            assert!(
                n.base
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-'),
                "{}",
                n.base
            );
        }
        // Same truncated prefix, different objects: different names.
        assert_ne!(
            Names::new(&long_ns, &format!("{long_name}x")).base,
            Names::new(&long_ns, &long_name).base
        );
        assert_ne!(Names::new("a-b", "c").base, Names::new("a", "b-c").base);
        assert_eq!(Names::new("prod", "w"), Names::new("prod", "w"));
    }

    #[test]
    fn ami_parameter_per_family_gpu_arm() {
        assert!(
            ami_parameter(&spec(serde_json::json!({})))
                .ends_with("amazon-linux-2023/recommended/image_id")
        );
        assert!(ami_parameter(&spec(serde_json::json!({"gpu": true}))).contains("2023/gpu/"));
        assert!(ami_parameter(&spec(serde_json::json!({"arm": true}))).contains("2023/arm64/"));
        assert!(
            ami_parameter(&spec(
                serde_json::json!({"amiFamily": "AmazonLinux2", "gpu": true})
            ))
            .contains("amazon-linux-2/gpu/")
        );
        assert!(
            ami_parameter(&spec(serde_json::json!({"amiFamily": "AmazonLinux2"})))
                .ends_with("amazon-linux-2/recommended/image_id")
        );
    }

    #[test]
    fn user_data_joins_the_cluster() {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(user_data("c1", true))
            .expect("base64");
        let text = String::from_utf8(decoded).expect("utf8");
        assert!(text.contains("ECS_CLUSTER=c1\n") && text.contains("ECS_ENABLE_GPU_SUPPORT=true"));
    }

    #[test]
    fn user_data_turns_on_spot_instance_draining_in_the_agent_config() {
        for gpu in [false, true] {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(user_data("c1", gpu))
                .expect("base64");
            let text = String::from_utf8(decoded).expect("utf8");
            // Inside the heredoc that ends up in /etc/ecs/ecs.config, on a line of its own.
            let config = text
                .split_once("cat >> /etc/ecs/ecs.config <<'EOF'\n")
                .and_then(|(_, rest)| rest.split_once("EOF\n"))
                .map(|(config, _)| config)
                .expect("an ecs.config heredoc");
            assert!(
                config
                    .lines()
                    .any(|l| l == "ECS_ENABLE_SPOT_INSTANCE_DRAINING=true"),
                "{config}"
            );
            assert_eq!(
                config
                    .lines()
                    .filter(|l| l.starts_with("ECS_CLUSTER="))
                    .count(),
                1
            );
        }
    }

    #[test]
    fn task_definition_has_no_credentials_and_tells_the_worker_where_to_work() {
        let names = Names::new("ns", "w");
        let s = spec(
            serde_json::json!({"env": [{"name": "MODEL", "value": "small"}], "worker": {"handler": "python3 handler.py"}}),
        );
        let td = task_definition(
            &s,
            &TaskInputs {
                names: &names,
                queue_url: "http://q",
                task_role_arn: "arn:t",
                execution_role_arn: "arn:e",
            },
        );
        let env: BTreeMap<_, _> = td.environment.iter().cloned().collect();
        assert_eq!(env["WORKER_QUEUE_URL"], "http://q");
        assert_eq!(env["WORKER_CLUSTER"], names.cluster);
        assert_eq!(env["WORKER_HANDLER"], "python3 handler.py");
        assert!(
            !env.contains_key("WORKER_PREFETCH"),
            "the worker's auto default"
        );
        assert_eq!(env["MODEL"], "small");
        assert!(
            !env.contains_key("AWS_ACCESS_KEY_ID") && !env.contains_key("AWS_SECRET_ACCESS_KEY")
        );
        assert_eq!(td.memory_reservation, 512);
        // A change in the spec changes the fingerprint; the same spec does not.
        let same = task_definition(
            &s,
            &TaskInputs {
                names: &names,
                queue_url: "http://q",
                task_role_arn: "arn:t",
                execution_role_arn: "arn:e",
            },
        );
        assert_eq!(td.fingerprint(), same.fingerprint());
        let other = task_definition(
            &spec(serde_json::json!({"image": "worker:2"})),
            &TaskInputs {
                names: &names,
                queue_url: "http://q",
                task_role_arn: "arn:t",
                execution_role_arn: "arn:e",
            },
        );
        assert_ne!(td.fingerprint(), other.fingerprint());
    }

    #[test]
    fn handler_mode_settings_reach_the_worker_environment() {
        let names = Names::new("ns", "w");
        let inputs = TaskInputs {
            names: &names,
            queue_url: "http://q",
            task_role_arn: "arn:t",
            execution_role_arn: "arn:e",
        };
        let td = task_definition(
            &spec(serde_json::json!({"worker": {
                "handler": "python3 /app/http_handler.py",
                "handlerMode": "http",
                "handlerUrl": "http://127.0.0.1:9000/jobs",
                "handlerReadyPath": "/healthz",
                "handlerReadyTimeoutSeconds": 600,
            }})),
            &inputs,
        );
        let env: BTreeMap<_, _> = td.environment.iter().cloned().collect();
        assert_eq!(env["WORKER_HANDLER"], "python3 /app/http_handler.py");
        assert_eq!(env["WORKER_HANDLER_MODE"], "http");
        assert_eq!(env["WORKER_HANDLER_URL"], "http://127.0.0.1:9000/jobs");
        assert_eq!(env["WORKER_HANDLER_READY_PATH"], "/healthz");
        assert_eq!(env["WORKER_HANDLER_READY_TIMEOUT_SECONDS"], "600");

        let td = task_definition(
            &spec(serde_json::json!({"worker": {"handlerMode": "stdio"}})),
            &inputs,
        );
        let env: BTreeMap<_, _> = td.environment.iter().cloned().collect();
        assert_eq!(env["WORKER_HANDLER_MODE"], "stdio");

        // Unset: the worker's defaults (command mode), and no new variable, so the task
        // definitions of existing workers do not change.
        let td = task_definition(&spec(serde_json::json!({})), &inputs);
        assert!(
            td.environment
                .iter()
                .all(|(k, _)| !k.starts_with("WORKER_HANDLER_")),
            "{:?}",
            td.environment
        );
    }

    #[test]
    fn queue_attributes_and_redrive() {
        let s = spec(serde_json::json!({}));
        let a = queue_attributes(&s, Some("arn:dlq"));
        assert_eq!(a["VisibilityTimeout"], "7200");
        assert_eq!(a["MessageRetentionPeriod"], "86400");
        assert!(same_redrive(
            Some(r#"{"maxReceiveCount":"5","deadLetterTargetArn":"arn:dlq"}"#),
            a.get("RedrivePolicy").map(String::as_str)
        ));
        assert!(!same_redrive(
            Some(r#"{"maxReceiveCount":3,"deadLetterTargetArn":"arn:dlq"}"#),
            a.get("RedrivePolicy").map(String::as_str)
        ));
        assert!(same_redrive(None, None));
    }

    #[test]
    fn owner_tags_win_over_user_tags() {
        let s = spec(serde_json::json!({"tags": {"team": "ml", "ecsworker.dev/owner": "spoof"}}));
        let owner = Owner {
            cluster: "c1".into(),
            namespace: "ns".into(),
            name: "w".into(),
        };
        let t = owner.tags(&s);
        assert_eq!(t[OWNER_TAG], "c1/ns/w");
        assert_eq!(t["team"], "ml");
    }

    #[test]
    fn owner_value_within_the_tag_limit_and_unique() {
        let long = |name: &str| Owner {
            cluster: "0f6a4f0e-7a4c-4d0e-9d6c-3f3c1c2b1a00".into(),
            namespace: "n".repeat(63),
            name: name.into(),
        };
        let a = long(&"a".repeat(253));
        let b = long(&format!("{}b", "a".repeat(252)));
        assert!(a.value().len() <= MAX_TAG_VALUE && b.value().len() <= MAX_TAG_VALUE);
        assert_ne!(a.value(), b.value());
        assert_eq!(a.holder(Some(&a.value())), Holder::Us);
        assert!(matches!(b.holder(Some(&a.value())), Holder::Other(_)));
        let short = Owner {
            cluster: "c1".into(),
            namespace: "ns".into(),
            name: "w".into(),
        };
        // Written before owner values named the cluster: still ours.
        assert_eq!(short.holder(Some("ns/w")), Holder::Us);
        assert!(matches!(short.holder(Some("c2/ns/w")), Holder::Other(_)));
        assert!(matches!(short.holder(None), Holder::Other(_)));
    }

    #[test]
    fn partitions_follow_the_region() {
        assert_eq!(partition("us-east-1"), "aws");
        assert_eq!(partition("cn-north-1"), "aws-cn");
        assert_eq!(partition("us-gov-west-1"), "aws-us-gov");
        assert_eq!(partition("eu-west-3"), "aws");
    }
}
