//! The AWS resources a worker's spec asks for, computed without I/O: deterministic names within
//! AWS limits, owner tags, the ECS-optimized AMI parameter, instance user data, queue
//! attributes, launch template data and the task definition, each with a fingerprint so the
//! AWS layer can tell "unchanged" from "needs a new revision" without guessing.

use crate::api::{AmiFamily, CapacityType, EcsSelfTerminatingWorkerSpec, TerminationMode};
use crate::plan::cycle::Tail;
use base64::Engine as _;
use ecs_worker_contract::{env, termination};
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
        let hash = short_digest(&format!("{namespace}/{name}"));
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

/// Eight hex digits of the SHA-256 of `text`: what a name cut to fit a limit keeps of the rest.
pub fn short_digest(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))[..8].to_string()
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

/// The owner account and queue name of an SQS queue ARN
/// (`arn:PARTITION:sqs:REGION:ACCOUNT:NAME`), the inputs of GetQueueUrl
/// <https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_GetQueueUrl.html>.
pub fn sqs_arn_account_and_name(arn: &str) -> Option<(&str, &str)> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", _, "sqs", region, account, name]
            if !region.is_empty() && account.len() == 12 && !name.is_empty() =>
        {
            Some((account, name))
        }
        _ => None,
    }
}

/// The dead-letter queue ARN of a `RedrivePolicy` attribute, when it names one.
pub fn redrive_target(policy: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(policy).ok()?;
    v["deadLetterTargetArn"]
        .as_str()
        .filter(|a| !a.is_empty())
        .map(str::to_string)
}

/// The work queue's access policy (`Policy` attribute) for `spec.queue.allowSendFrom`, or
/// `None` when nobody else may send. Each service principal may only `sqs:SendMessage`, and
/// only on behalf of the named source, with the conditions AWS documents:
/// - SNS topic: `aws:SourceArn` = the topic
///   <https://docs.aws.amazon.com/sns/latest/dg/subscribe-sqs-queue-to-sns-topic.html>
/// - S3 bucket: `aws:SourceArn` = the bucket, `aws:SourceAccount` = its owner when given
///   <https://docs.aws.amazon.com/AmazonS3/latest/userguide/grant-destinations-permissions-to-s3.html>
/// - EventBridge rule: `aws:SourceArn` = the rule
///   <https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-use-resource-based.html>
///
/// An IAM role or user gets `sqs:SendMessage`, `sqs:GetQueueUrl` and `sqs:GetQueueAttributes`
/// by its ARN (in another account, its own identity policy must allow them as well).
pub fn queue_policy(spec: &EcsSelfTerminatingWorkerSpec, queue_arn: &str) -> Option<String> {
    let producers = &spec.queue.allow_send_from;
    if producers.is_empty() {
        return None;
    }
    let service = |sid: String, principal: &str, conditions: serde_json::Value| {
        serde_json::json!({
            "Sid": sid, "Effect": "Allow",
            "Principal": {"Service": principal},
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
            "Condition": conditions,
        })
    };
    let statements: Vec<serde_json::Value> = producers
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            if let Some(arn) = &p.sns_topic_arn {
                Some(service(
                    format!("SnsTopic{i}"),
                    "sns.amazonaws.com",
                    serde_json::json!({"ArnEquals": {"aws:SourceArn": arn}}),
                ))
            } else if let Some(arn) = &p.s3_bucket_arn {
                let mut c = serde_json::json!({"ArnLike": {"aws:SourceArn": arn}});
                if let Some(account) = &p.source_account {
                    c["StringEquals"] = serde_json::json!({"aws:SourceAccount": account});
                }
                Some(service(format!("S3Bucket{i}"), "s3.amazonaws.com", c))
            } else if let Some(arn) = &p.event_bridge_rule_arn {
                Some(service(
                    format!("EventBridgeRule{i}"),
                    "events.amazonaws.com",
                    serde_json::json!({"ArnEquals": {"aws:SourceArn": arn}}),
                ))
            } else {
                p.principal_arn.as_ref().map(|arn| {
                    serde_json::json!({
                        "Sid": format!("Principal{i}"), "Effect": "Allow",
                        "Principal": {"AWS": arn},
                        "Action": ["sqs:SendMessage", "sqs:GetQueueUrl", "sqs:GetQueueAttributes"],
                        "Resource": queue_arn,
                    })
                })
            }
        })
        .collect();
    Some(
        serde_json::json!({
            "Version": "2012-10-17",
            "Id": format!("{queue_arn}/producers"),
            "Statement": statements,
        })
        .to_string(),
    )
}

/// Whether an observed queue policy says the same as the desired one: both parsed as JSON,
/// a one-element list taken as its element (SQS and IAM accept either), absent = empty.
pub fn same_queue_policy(observed: Option<&str>, desired: Option<&str>) -> bool {
    fn norm(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Array(mut a) if a.len() == 1 => norm(a.remove(0)),
            serde_json::Value::Array(a) => a.into_iter().map(norm).collect(),
            serde_json::Value::Object(o) => o.into_iter().map(|(k, v)| (k, norm(v))).collect(),
            v => v,
        }
    }
    let parse = |s: Option<&str>| -> Option<serde_json::Value> {
        match s.map(str::trim) {
            None | Some("") => None,
            Some(s) => Some(
                serde_json::from_str(s)
                    .map(norm)
                    .unwrap_or_else(|_| serde_json::Value::String(s.to_string())),
            ),
        }
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
    /// Root volume size (gp3); the AMI's when absent. Left out of the fingerprint when
    /// absent, so templates made before the field existed keep their version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_volume_gib: Option<i32>,
}

impl LaunchTemplateSpec {
    /// Stored as the version description, so an unchanged spec creates no new version.
    pub fn fingerprint(&self) -> String {
        fingerprint(self)
    }
}

/// Root device of the ECS-optimized Amazon Linux AMIs (both families).
/// <https://docs.aws.amazon.com/AmazonECS/latest/developerguide/ecs-ami-storage-config.html>
pub const ROOT_DEVICE: &str = "/dev/xvda";

/// The group's mixed instances policy, for Spot or several instance types (`None`: the group
/// launches from the launch template alone, as it always has for one On-Demand type).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MixedCapacity {
    /// Launch template overrides, in order of preference.
    pub instance_types: Vec<String>,
    /// `OnDemandPercentageAboveBaseCapacity` the spec asks for: 100 On-Demand, 0 Spot.
    pub on_demand_percentage: i32,
    /// Whether the run cycle moves the percentage (`SpotWithFallback`), so provisioning keeps
    /// what it finds.
    pub percentage_moves: bool,
    pub spot_allocation_strategy: &'static str,
    /// Capacity Rebalancing: on for Spot groups.
    /// <https://docs.aws.amazon.com/autoscaling/ec2/userguide/ec2-auto-scaling-capacity-rebalancing.html>
    pub capacity_rebalance: bool,
}

/// The mixed instances policy a spec asks for.
pub fn mixed_capacity(spec: &EcsSelfTerminatingWorkerSpec) -> Option<MixedCapacity> {
    if !spec.uses_mixed_instances() {
        return None;
    }
    let spot = spec.capacity.capacity_type != CapacityType::OnDemand;
    Some(MixedCapacity {
        instance_types: spec
            .instance_types()
            .iter()
            .map(|t| t.to_string())
            .collect(),
        on_demand_percentage: if spot { 0 } else { 100 },
        percentage_moves: spec.capacity.capacity_type == CapacityType::SpotWithFallback,
        spot_allocation_strategy: spec.capacity.spot_allocation_strategy.as_aws(),
        capacity_rebalance: spot,
    })
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
    /// The container's `secrets`: (variable, ARN ECS reads the value from). Left out of the
    /// fingerprint when empty, so workers without secrets keep their revision.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<(String, String)>,
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
            env::EMPTY_RECEIVES.to_string(),
            tail.empty_receives.to_string(),
        ),
        (env::WAIT_SECONDS.to_string(), tail.wait_seconds.to_string()),
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
        TerminationMode::Instance => termination::INSTANCE,
        TerminationMode::Group => termination::GROUP,
        TerminationMode::None => termination::NONE,
    };
    let [empty_receives, wait_seconds] = tail_environment(Tail::configured(spec));
    let mut environment = vec![
        ("AWS_REGION".to_string(), spec.region.clone()),
        ("AWS_DEFAULT_REGION".to_string(), spec.region.clone()),
        (env::QUEUE_URL.to_string(), inputs.queue_url.to_string()),
        (env::CLUSTER.to_string(), inputs.names.cluster.clone()),
        (
            env::AUTOSCALING_GROUP.to_string(),
            inputs.names.auto_scaling_group.clone(),
        ),
        (env::CONCURRENCY.to_string(), w.concurrency.to_string()),
        // No WORKER_PREFETCH: the worker's default (`auto`) holds ahead only what its handlers
        // start within a second at their measured pace, full receives of 10 for quick
        // messages and none ahead for long ones (worker/README.md, "Prefetch"); a worker image
        // older than that setting keeps running with this task definition.
        empty_receives,
        wait_seconds,
        (env::TERMINATION.to_string(), termination.to_string()),
    ];
    if let Some(handler) = &w.handler {
        environment.push((env::HANDLER.to_string(), handler.clone()));
    }
    // Only what the spec sets: an unchanged spec keeps its task definition.
    if let Some(mode) = w.handler_mode {
        environment.push((env::HANDLER_MODE.to_string(), mode.as_str().to_string()));
    }
    if let Some(url) = &w.handler_url {
        environment.push((env::HANDLER_URL.to_string(), url.clone()));
    }
    if let Some(path) = &w.handler_ready_path {
        environment.push((env::HANDLER_READY_PATH.to_string(), path.clone()));
    }
    if let Some(seconds) = w.handler_ready_timeout_seconds {
        environment.push((env::HANDLER_READY_TIMEOUT.to_string(), seconds.to_string()));
    }
    environment.extend(spec.env.iter().map(|e| (e.name.clone(), e.value.clone())));
    TaskDefinitionSpec {
        family: inputs.names.task_family.clone(),
        image: spec.image.clone(),
        command: spec.command.clone(),
        memory_reservation: spec.memory_limit_mib,
        gpu: spec.gpu,
        environment,
        secrets: spec
            .secrets
            .iter()
            .map(|s| (s.name.clone(), s.value_from.clone()))
            .collect(),
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

/// The secret a Secrets Manager `valueFrom` reads: the ARN without ECS's
/// `:json-key:version-stage:version-id` suffix.
/// <https://docs.aws.amazon.com/AmazonECS/latest/developerguide/secrets-envvar-secrets-manager.html>
pub fn secret_arn(value_from: &str) -> &str {
    match value_from.match_indices(':').nth(6) {
        Some((i, _)) => &value_from[..i],
        None => value_from,
    }
}

/// The IAM resource that grants a Secrets Manager secret given by ARN. A complete ARN ends in
/// the hyphen and six random characters Secrets Manager appends to the name, and is granted
/// as is; a partial one (the name alone) gets the `-??????` wildcard, which matches exactly
/// those six characters. Secrets Manager itself reads a name ending in a hyphen and six
/// characters as a complete ARN, and so does this.
/// <https://docs.aws.amazon.com/secretsmanager/latest/userguide/auth-and-access_iam-policies.html>
/// <https://docs.aws.amazon.com/secretsmanager/latest/userguide/troubleshoot.html#ARN_secretnamehyphen>
pub fn secret_resource(value_from: &str) -> String {
    let arn = secret_arn(value_from);
    // Bytes, so no name (admitted or not) can make a slice fall inside a character.
    let name = arn.rsplit(':').next().unwrap_or_default().as_bytes();
    let complete = name.len() > 7
        && name[name.len() - 7] == b'-'
        && name[name.len() - 6..].iter().all(u8::is_ascii_alphanumeric);
    if complete {
        arn.to_string()
    } else {
        format!("{arn}-??????")
    }
}

/// Inline policy of the operator-created task execution role when the spec has `secrets`:
/// `secretsmanager:GetSecretValue` on exactly those secrets, `ssm:GetParameters` on exactly
/// those parameters, and `kms:Decrypt` with `spec.secretsKmsKeyArn` when one is named (the
/// AWS managed keys need no grant). `None` without secrets: the role then has no inline
/// policy (a previous one is deleted).
/// <https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task_execution_IAM_role.html#task-execution-secrets>
pub fn execution_policy(spec: &EcsSelfTerminatingWorkerSpec) -> Option<String> {
    let mut secrets = std::collections::BTreeSet::new();
    let mut parameters = std::collections::BTreeSet::new();
    for s in &spec.secrets {
        match s.value_from.split(':').nth(2) {
            Some("secretsmanager") => {
                secrets.insert(secret_resource(&s.value_from));
            }
            _ => {
                parameters.insert(s.value_from.clone());
            }
        }
    }
    if secrets.is_empty() && parameters.is_empty() {
        return None;
    }
    let mut statements = Vec::new();
    if !secrets.is_empty() {
        statements.push(serde_json::json!({"Sid": "ReadSecrets", "Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"], "Resource": secrets}));
    }
    if !parameters.is_empty() {
        statements.push(serde_json::json!({"Sid": "ReadParameters", "Effect": "Allow", "Action": ["ssm:GetParameters"], "Resource": parameters}));
    }
    if let Some(key) = &spec.secrets_kms_key_arn {
        statements.push(serde_json::json!({"Sid": "DecryptSecrets", "Effect": "Allow", "Action": ["kms:Decrypt"], "Resource": key}));
    }
    Some(serde_json::json!({"Version": "2012-10-17", "Statement": statements}).to_string())
}

/// Tag the worker puts on its own task with its outcome before it removes its capacity, so a
/// drain that succeeded is known even when the instance goes before the agent reports.
pub use ecs_worker_contract::OUTCOME_TAG;

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

    use crate::api::testing::spec_with as spec;

    /// What provisioning hands the task definition, with placeholder ARNs.
    fn inputs(names: &Names) -> TaskInputs<'_> {
        TaskInputs {
            names,
            queue_url: "http://q",
            task_role_arn: "arn:t",
            execution_role_arn: "arn:e",
        }
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
        let td = task_definition(&s, &inputs(&names));
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
        let same = task_definition(&s, &inputs(&names));
        assert_eq!(td.fingerprint(), same.fingerprint());
        let other = task_definition(
            &spec(serde_json::json!({"image": "worker:2"})),
            &inputs(&names),
        );
        assert_ne!(td.fingerprint(), other.fingerprint());
    }

    #[test]
    fn handler_mode_settings_reach_the_worker_environment() {
        let names = Names::new("ns", "w");
        let inputs = inputs(&names);
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
    fn an_existing_queue_arn_gives_its_owner_and_name() {
        assert_eq!(
            sqs_arn_account_and_name("arn:aws:sqs:eu-west-1:111122223333:orders"),
            Some(("111122223333", "orders"))
        );
        assert_eq!(
            sqs_arn_account_and_name("arn:aws-cn:sqs:cn-north-1:111122223333:jobs.fifo"),
            Some(("111122223333", "jobs.fifo"))
        );
        assert_eq!(
            sqs_arn_account_and_name("arn:aws:sns:eu-west-1:111122223333:t"),
            None
        );
        assert_eq!(sqs_arn_account_and_name("arn:aws:sqs:eu-west-1:1:q"), None);
        assert_eq!(
            redrive_target(
                r#"{"deadLetterTargetArn":"arn:aws:sqs:eu-west-1:111122223333:dlq","maxReceiveCount":"3"}"#
            ),
            Some("arn:aws:sqs:eu-west-1:111122223333:dlq".to_string())
        );
        assert_eq!(redrive_target(""), None);
    }

    #[test]
    fn no_producers_no_queue_policy() {
        assert_eq!(
            queue_policy(&spec(serde_json::json!({})), "arn:aws:sqs:us-east-1:1:q"),
            None
        );
        assert!(same_queue_policy(None, None));
        assert!(same_queue_policy(Some(""), None));
        assert!(!same_queue_policy(Some("{}"), None));
    }

    #[test]
    fn producers_become_send_only_statements_with_source_conditions() {
        let q = "arn:aws:sqs:us-east-1:111122223333:ecsw-q";
        let s = spec(serde_json::json!({"queue": {"allowSendFrom": [
            {"snsTopicArn": "arn:aws:sns:us-east-1:444455556666:orders"},
            {"s3BucketArn": "arn:aws:s3:::uploads", "sourceAccount": "444455556666"},
            {"s3BucketArn": "arn:aws:s3:::other"},
            {"eventBridgeRuleArn": "arn:aws:events:us-east-1:111122223333:rule/nightly"},
            {"principalArn": "arn:aws:iam::444455556666:role/producer"},
        ]}}));
        let policy = queue_policy(&s, q).unwrap();
        let v: serde_json::Value = serde_json::from_str(&policy).unwrap();
        let st = v["Statement"].as_array().unwrap();
        assert_eq!(st.len(), 5);
        for (i, (service, source)) in [
            (
                "sns.amazonaws.com",
                "arn:aws:sns:us-east-1:444455556666:orders",
            ),
            ("s3.amazonaws.com", "arn:aws:s3:::uploads"),
            ("s3.amazonaws.com", "arn:aws:s3:::other"),
            (
                "events.amazonaws.com",
                "arn:aws:events:us-east-1:111122223333:rule/nightly",
            ),
        ]
        .into_iter()
        .enumerate()
        {
            assert_eq!(st[i]["Principal"]["Service"], service);
            assert_eq!(st[i]["Action"], "sqs:SendMessage");
            assert_eq!(st[i]["Resource"], q);
            let cond = &st[i]["Condition"];
            let arn = cond["ArnEquals"]["aws:SourceArn"]
                .as_str()
                .or(cond["ArnLike"]["aws:SourceArn"].as_str());
            assert_eq!(arn, Some(source), "{i}");
        }
        assert_eq!(
            st[1]["Condition"]["StringEquals"]["aws:SourceAccount"],
            "444455556666"
        );
        assert!(st[2]["Condition"].get("StringEquals").is_none());
        assert_eq!(
            st[4]["Principal"]["AWS"],
            "arn:aws:iam::444455556666:role/producer"
        );
        assert_eq!(st[4]["Action"].as_array().unwrap().len(), 3);
        assert!(st[4].get("Condition").is_none());
        // Compared as JSON: reformatting and one-element lists are the same policy.
        let mut reformatted = v.clone();
        reformatted["Statement"][0]["Action"] = serde_json::json!(["sqs:SendMessage"]);
        let pretty = serde_json::to_string_pretty(&reformatted).unwrap();
        assert!(same_queue_policy(Some(&pretty), Some(&policy)));
        reformatted["Statement"][0]["Condition"]["ArnEquals"]["aws:SourceArn"] =
            "arn:aws:sns:us-east-1:1:x".into();
        let changed = reformatted.to_string();
        assert!(!same_queue_policy(Some(&changed), Some(&policy)));
        assert!(!same_queue_policy(None, Some(&policy)));
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
    const SM_COMPLETE: &str =
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-password-AbC123";
    const SM_PARTIAL_JSON: &str =
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/api:token:AWSCURRENT:";
    const PARAM: &str = "arn:aws:ssm:us-east-1:123456789012:parameter/prod/model/license";

    #[test]
    fn secrets_reach_the_container_secrets_and_never_the_environment() {
        let names = Names::new("ns", "w");
        let inputs = inputs(&names);
        let plain = task_definition(&spec(serde_json::json!({})), &inputs);
        let with = task_definition(
            &spec(serde_json::json!({"secrets": [
                {"name": "DB_PASSWORD", "valueFrom": SM_COMPLETE},
                {"name": "LICENSE", "valueFrom": PARAM},
            ]})),
            &inputs,
        );
        assert_eq!(
            with.secrets,
            vec![
                ("DB_PASSWORD".to_string(), SM_COMPLETE.to_string()),
                ("LICENSE".to_string(), PARAM.to_string())
            ]
        );
        assert_eq!(with.environment, plain.environment);
        assert!(
            with.environment
                .iter()
                .all(|(k, v)| k != "DB_PASSWORD" && k != "LICENSE" && !v.contains("arn:aws:s")),
            "{:?}",
            with.environment
        );
        assert_ne!(with.fingerprint(), plain.fingerprint());
        // No secrets: the fingerprint of a task definition from before the field existed.
        assert!(!serde_json::to_string(&plain).unwrap().contains("secrets"));
    }

    #[test]
    fn secret_arns_lose_the_json_key_suffix_and_partial_ones_get_the_six_character_wildcard() {
        assert_eq!(secret_arn(SM_COMPLETE), SM_COMPLETE);
        assert_eq!(
            secret_arn(SM_PARTIAL_JSON),
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/api"
        );
        assert_eq!(secret_resource(SM_COMPLETE), SM_COMPLETE);
        assert_eq!(
            secret_resource(SM_PARTIAL_JSON),
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/api-??????"
        );
        assert_eq!(
            secret_resource(&format!("{SM_COMPLETE}:password::")),
            SM_COMPLETE
        );
        // Not ASCII (refused at admission): still no panic, and a wildcard only for the suffix.
        assert_eq!(
            secret_resource("arn:aws:secretsmanager:us-east-1:123456789012:secret:clé-sécrète"),
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:clé-sécrète-??????"
        );
    }

    #[test]
    fn execution_policy_grants_exactly_the_named_secrets() {
        assert_eq!(execution_policy(&spec(serde_json::json!({}))), None);
        let policy = |extra| -> serde_json::Value {
            serde_json::from_str(&execution_policy(&spec(extra)).expect("a policy")).unwrap()
        };
        let p = policy(serde_json::json!({"secrets": [
            {"name": "A", "valueFrom": SM_COMPLETE},
            {"name": "B", "valueFrom": format!("{SM_COMPLETE}:user::")},
            {"name": "C", "valueFrom": SM_PARTIAL_JSON},
            {"name": "D", "valueFrom": PARAM},
        ]}));
        assert_eq!(
            p["Statement"],
            serde_json::json!([
                {"Sid": "ReadSecrets", "Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"], "Resource": [
                    "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/api-??????",
                    SM_COMPLETE,
                ]},
                {"Sid": "ReadParameters", "Effect": "Allow", "Action": ["ssm:GetParameters"], "Resource": [PARAM]},
            ])
        );
        // Parameters only, with a named key: no Secrets Manager statement, kms:Decrypt on the key.
        let key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        let p = policy(serde_json::json!({
            "secrets": [{"name": "D", "valueFrom": PARAM}],
            "secretsKmsKeyArn": key,
        }));
        let statements = p["Statement"].as_array().unwrap();
        assert_eq!(statements.len(), 2);
        assert_eq!(
            statements[0]["Action"],
            serde_json::json!(["ssm:GetParameters"])
        );
        assert_eq!(statements[1]["Action"], serde_json::json!(["kms:Decrypt"]));
        assert_eq!(statements[1]["Resource"], key);
        // A key without secrets grants nothing.
        assert_eq!(
            execution_policy(&spec(serde_json::json!({"secretsKmsKeyArn": key}))),
            None
        );
    }
}
