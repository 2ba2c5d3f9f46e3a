//! The `EcsSelfTerminatingWorker` custom resource (`ecsworker.dev/v1alpha1`): spec, status,
//! defaults and admission rules. Everything a user writes or reads lives here; nothing here
//! talks to a server.
//!
//! Admission rules are in the schema (OpenAPI + CEL `x-kubernetes-validations`) so `kubectl
//! apply` refuses a bad manifest with a message naming the field; the numeric bounds come from
//! [`limits`], and what only the controller can check is in [`validate`].

pub mod conditions;
pub mod limits;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod validate;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Finalizer that guards the deletion of the AWS resources a worker owns.
pub const FINALIZER: &str = "ecsworker.dev/cleanup";
/// Annotation that runs the cycle now (any new value triggers once; see `status.lastTrigger`).
pub const TRIGGER_ANNOTATION: &str = "ecsworker.dev/run-now";

/// A queue-driven batch worker on AWS ECS-on-EC2 whose EC2 capacity is zero while there is no work.
///
/// The operator creates an SQS queue (and dead-letter queue), an ECS cluster, a task definition,
/// a launch template, an Auto Scaling group kept at zero, IAM roles and a log group. On each tick
/// of the schedule, when the queue holds work, it scales the group up, waits for the instances to
/// join the cluster, runs the worker task, and brings capacity back to zero when the worker has
/// drained the queue.
// kube's derive takes one `printcolumn`/`shortname` attribute per column/name.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ecsworker.dev",
    version = "v1alpha1",
    kind = "EcsSelfTerminatingWorker",
    plural = "ecsselfterminatingworkers",
    singular = "ecsselfterminatingworker",
    shortname = "ecsworker",
    shortname = "ecsworkers",
    shortname = "estw",
    category = "ecsworker",
    doc = "A queue-driven batch worker on AWS ECS-on-EC2 that costs nothing while its SQS queue is empty. The operator creates the queue (and a dead-letter queue), an ECS cluster, a task definition, a launch template, an Auto Scaling group kept at zero, IAM roles and a log group; on each tick of the schedule, when the queue holds work, it scales the group up, runs the worker task, and brings capacity back to zero once the worker has drained the queue. See `kubectl explain ecsworker.spec` for the fields and `status.conditions` (Ready, Reconciling, Stalled, Degraded) for progress.",
    // Argo CD never prunes or deletes the CRD (removing it would delete every worker, whose
    // finalizers would then delete their AWS resources); the Helm chart adds
    // `helm.sh/resource-policy: keep` for the same reason.
    annotation("argocd.argoproj.io/sync-options", "Prune=false,Delete=false"),
    // Argo CD applies the CRD in a wave before the operator and any worker objects.
    annotation("argocd.argoproj.io/sync-wave", "-1"),
    namespaced,
    status = "EcsSelfTerminatingWorkerStatus",
    printcolumn(name = "Instance", type_ = "string", json_path = ".status.instanceTypes"),
    printcolumn(name = "Schedule", type_ = "string", json_path = ".status.schedule"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Queue", type_ = "integer", json_path = ".status.queue.visible"),
    printcolumn(
        name = "Last Run",
        type_ = "string",
        json_path = ".status.lastRun.outcome"
    ),
    printcolumn(name = "Next Run", type_ = "string", json_path = ".status.nextRunTime"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = "1"
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].message",
        priority = "1"
    )
)]
#[x_kube(validation = Rule::new("has(self.cronRate) != has(self.schedule)").message("set exactly one of spec.cronRate (e.g. 7_HOURS) or spec.schedule (a 5-field cron expression)"))]
#[x_kube(validation = Rule::new("!(self.gpu && self.arm)").message("spec.gpu and spec.arm cannot both be true: there is no GPU arm64 ECS-optimized AMI; choose one"))]
#[x_kube(validation = Rule::new("!has(self.secrets) || !has(self.env) || self.secrets.all(s, self.env.all(e, e.name != s.name))").message("spec.secrets: a name is also in spec.env; each environment variable comes from one place"))]
#[x_kube(validation = Rule::new("!has(self.secrets) || self.secrets.all(s, s.valueFrom.startsWith('arn:' + (self.region.startsWith('cn-') ? 'aws-cn' : self.region.startsWith('us-gov-') ? 'aws-us-gov' : self.region.startsWith('us-isob-') ? 'aws-iso-b' : self.region.startsWith('us-iso-') ? 'aws-iso' : self.region.startsWith('eu-isoe-') ? 'aws-iso-e' : self.region.startsWith('us-isof-') ? 'aws-iso-f' : 'aws') + ':'))").message("spec.secrets[].valueFrom must be in the partition of spec.region (arn:aws: for commercial regions, arn:aws-cn: for cn-*, arn:aws-us-gov: for us-gov-*)"))]
#[x_kube(validation = Rule::new("!has(self.secretsKmsKeyArn) || self.secretsKmsKeyArn.startsWith('arn:' + (self.region.startsWith('cn-') ? 'aws-cn' : self.region.startsWith('us-gov-') ? 'aws-us-gov' : self.region.startsWith('us-isob-') ? 'aws-iso-b' : self.region.startsWith('us-iso-') ? 'aws-iso' : self.region.startsWith('eu-isoe-') ? 'aws-iso-e' : self.region.startsWith('us-isof-') ? 'aws-iso-f' : 'aws') + ':')").message("spec.secretsKmsKeyArn must be in the partition of spec.region"))]
#[x_kube(validation = Rule::new("!has(self.queue) || !has(self.queue.allowSendFrom) || self.queue.allowSendFrom.all(p, (has(p.snsTopicArn) ? p.snsTopicArn : has(p.s3BucketArn) ? p.s3BucketArn : has(p.eventBridgeRuleArn) ? p.eventBridgeRuleArn : has(p.principalArn) ? p.principalArn : '').startsWith('arn:' + (self.region.startsWith('cn-') ? 'aws-cn' : self.region.startsWith('us-gov-') ? 'aws-us-gov' : self.region.startsWith('us-isob-') ? 'aws-iso-b' : self.region.startsWith('us-iso-') ? 'aws-iso' : self.region.startsWith('eu-isoe-') ? 'aws-iso-e' : self.region.startsWith('us-isof-') ? 'aws-iso-f' : 'aws') + ':'))").message("spec.queue.allowSendFrom: every ARN must be in the partition of spec.region (arn:aws: for commercial regions, arn:aws-cn: for cn-*, arn:aws-us-gov: for us-gov-*)"))]
#[x_kube(validation = Rule::new("!has(self.queue) || !has(self.queue.existingQueueArn) || self.queue.existingQueueArn.contains(':sqs:' + self.region + ':')").message("spec.queue.existingQueueArn must be a queue in spec.region"))]
#[x_kube(validation = Rule::new("has(self.instanceType) || (has(self.capacity) && has(self.capacity.instanceTypes) && size(self.capacity.instanceTypes) > 0)").message("set spec.instanceType (one type) or spec.capacity.instanceTypes (several, in order of preference)"))]
#[x_kube(validation = Rule::new("!has(self.instanceType) || !has(self.capacity) || !has(self.capacity.instanceTypes) || size(self.capacity.instanceTypes) == 0 || self.capacity.instanceTypes[0] == self.instanceType").message("spec.instanceType must be the first of spec.capacity.instanceTypes when both are set: keep one of them, or list instanceType first"))]
#[x_kube(validation = Rule::new("(!has(self.instanceType) || self.instanceType.matches('^(a1|[a-z]+[0-9]+g[a-z]*)[.]') == self.arm) && (!has(self.capacity) || !has(self.capacity.instanceTypes) || self.capacity.instanceTypes.all(t, t.matches('^(a1|[a-z]+[0-9]+g[a-z]*)[.]') == self.arm))").message("every instance type must match spec.arm: Graviton types (a1, t4g, m7g, c6gn, ...) need arm: true, all others arm: false"))]
#[serde(rename_all = "camelCase")]
pub struct EcsSelfTerminatingWorkerSpec {
    /// EC2 instance type in dotted notation, e.g. `t3.medium`, `g4dn.xlarge`, `a1.medium`
    /// (the original's `EC2_INSTANCE_TYPE`): the one-type shorthand of
    /// `capacity.instanceTypes` (when both are set, it must be the list's first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 3, max = 64),
        regex(pattern = r"^[a-z][a-z0-9-]*\.[a-z0-9-]+$")
    )]
    pub instance_type: Option<String>,

    /// Which EC2 capacity a run uses: On-Demand or Spot, and which instance types.
    #[serde(default)]
    pub capacity: CapacitySpec,

    /// Size of each instance's root volume (gp3, encrypted) in GiB; the AMI's own (30 GiB for
    /// the ECS-optimized AMIs) when absent. Container images and their layers live there: ML
    /// images often need 60 to 200.
    /// <https://docs.aws.amazon.com/AmazonECS/latest/developerguide/ecs-ami-storage-config.html>
    #[serde(
        default,
        rename = "rootVolumeGiB",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = limits::ROOT_VOLUME_GIB.min, max = limits::ROOT_VOLUME_GIB.max))]
    pub root_volume_gib: Option<i32>,

    /// Run on GPU instances: selects the GPU (NVIDIA) ECS-optimized AMI and reserves one GPU for
    /// the worker container (the original's `GPU_ENABLED`).
    #[serde(default)]
    pub gpu: bool,

    /// Run on arm64 (Graviton) instances: selects the arm64 ECS-optimized AMI (the original's
    /// `ARM_INSTANCE`). Cannot be combined with `gpu`.
    #[serde(default)]
    pub arm: bool,

    /// Soft memory limit of the worker container in MiB (`memoryReservation`; the original's
    /// `ECS_TASK_DEFINITION_MEMORY_LIMIT`). Set it close to the instance's memory to run one
    /// task per instance.
    #[serde(rename = "memoryLimitMiB")]
    #[schemars(range(min = limits::MEMORY_LIMIT_MIB.min, max = limits::MEMORY_LIMIT_MIB.max))]
    pub memory_limit_mib: i32,

    /// AWS region of every resource, e.g. `us-east-1` (the original's `AWS_DEFAULT_REGION`).
    #[schemars(regex(pattern = r"^[a-z]{2}(-[a-z]+)+-[0-9]+$"), length(max = 32))]
    pub region: String,

    /// Credentials the operator uses for this worker's AWS calls (the original's
    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`). When absent, the operator's own default
    /// credential chain is used (IRSA, EKS Pod Identity, environment). The keys never reach the
    /// task definition: the worker task gets an IAM task role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialsSpec>,

    /// Tick rate in the original's format, `NUMBER_UNIT` upper snake case: `7_HOURS`,
    /// `1_HOUR`, `1_MINUTE`, `2_SECONDS` (the original's `CRON_RATE`). Exactly one of
    /// `cronRate` and `schedule`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^[1-9][0-9]{0,8}_(SECOND|MINUTE|HOUR|DAY)S?$"),
        length(max = 17)
    )]
    #[x_kube(validation = Rule::new("!self.matches('^[0-9]{1,9}_') || int(self.split('_')[0]) * (self.contains('_DAY') ? 86400 : self.contains('_HOUR') ? 3600 : self.contains('_MINUTE') ? 60 : 1) <= 31622400").message("spec.cronRate is longer than a year (366 days): use a shorter rate, or spec.schedule for a yearly date"))]
    pub cron_rate: Option<String>,

    /// Standard 5-field cron expression in UTC (`minute hour day-of-month month day-of-week`),
    /// e.g. `*/15 * * * *`. Exactly one of `cronRate` and `schedule`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 9, max = 256))]
    pub schedule: Option<String>,

    /// Pause scheduling: no new run starts; a run in progress finishes; nothing is deleted.
    #[serde(default)]
    pub suspend: bool,

    /// Container image of the worker (the image built from `worker/`, or your own based on it).
    #[schemars(length(min = 1, max = 1024))]
    pub image: String,

    /// Command of the worker container; the image's entrypoint/command when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub command: Option<Vec<String>>,

    /// Extra plain environment variables of the worker container. Do not put secrets here:
    /// they are visible in the task definition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub env: Vec<EnvVar>,

    /// Environment variables whose values ECS reads from AWS Secrets Manager or SSM Parameter
    /// Store when the task starts (the container definition's `secrets`): only the ARNs are in
    /// the spec and the task definition, never the values. The operator's task execution role
    /// may read exactly these (see docs/secrets.md); with `spec.iam.executionRoleArn`, that
    /// role must. At most 20 (the execution role's inline policy stays within IAM's 10,240
    /// characters).
    /// <https://docs.aws.amazon.com/AmazonECS/latest/developerguide/specifying-sensitive-data.html>
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub secrets: Vec<SecretEnvVar>,

    /// A customer managed KMS key that encrypts the secrets or SecureString parameters of
    /// `secrets`, e.g. `arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab`:
    /// the execution role may then `kms:Decrypt` with it. Not needed for the AWS managed keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new("self.matches('^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]+$')").message("spec.secretsKmsKeyArn must be a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/KEY-ID)"))]
    pub secrets_kms_key_arn: Option<String>,

    /// The work queue (SQS) and its dead-letter queue.
    #[serde(default)]
    pub queue: QueueSpec,

    /// How much capacity a run starts and how long it may take to join.
    #[serde(default)]
    pub scaling: ScalingSpec,

    /// The most instances one run may start (the original: 1).
    #[serde(default = "default_max_instances")]
    #[schemars(range(min = limits::MAX_INSTANCES.min, max = limits::MAX_INSTANCES.max))]
    pub max_instances: i32,

    /// Settings the worker process inside the task receives.
    #[serde(default)]
    pub worker: WorkerSettings,

    /// Where instances run. When absent, the default VPC's default subnets are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkSpec>,

    /// ECS-optimized AMI family.
    #[serde(default)]
    pub ami_family: AmiFamily,

    /// Existing IAM roles to use instead of the ones the operator creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iam: Option<IamSpec>,

    /// Days the worker's CloudWatch logs are kept.
    #[serde(default = "default_log_retention_days")]
    #[x_kube(validation = Rule::new("self in [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653]").message("spec.logRetentionDays must be one of CloudWatch Logs' values: 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653"))]
    pub log_retention_days: i32,

    /// Extra tags on every AWS resource: at most 40 (AWS allows 50 per resource; the operator
    /// sets its own), keys of 1 to 128 and values of at most 256 characters, of letters,
    /// digits, spaces and `_ . : / = + - @` (what every service the operator tags accepts;
    /// the controller checks the characters, the schema the rest); keys starting with `aws:`
    /// or `ecsworker.dev/` are reserved.
    /// <https://docs.aws.amazon.com/tag-editor/latest/userguide/tagging.html#tag-conventions>
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(inner(length(max = 256)), extend("maxProperties" = limits::MAX_TAGS))]
    #[x_kube(validation = Rule::new("self.all(k, !k.startsWith('aws:') && !k.startsWith('ecsworker.dev/') && size(k) <= 128)").message("spec.tags: keys must not start with aws: or ecsworker.dev/ and are at most 128 characters"))]
    pub tags: BTreeMap<String, String>,

    /// What deleting this object does to its AWS resources.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// Bounds on what the worker may spend: instance-hours per day and windows in which no
    /// run starts. No bound when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetSpec>,
}

/// A spend guardrail. When it is reached no run starts (the queue is left as it is), the
/// `Degraded` condition says `BudgetExhausted` and when it resets, and `status.budget` shows
/// the count.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BudgetSpec {
    /// Instance-hours the runs may use in any 24 hours (rolling, counted by the hour in which
    /// each run ended): a run counts its instances times the time from its scale-up to its end,
    /// and the run going counts what it has used so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = limits::MAX_INSTANCE_HOURS_PER_DAY.min, max = limits::MAX_INSTANCE_HOURS_PER_DAY.max))]
    pub max_instance_hours_per_day: Option<i32>,
    /// Windows (UTC) in which no run starts; a run already going is not stopped. At most 20.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub blackout_windows: Vec<BlackoutWindow>,
    /// What happens to a run going when the budget is used up: `Finish` (default) lets it end
    /// on its own; `Stop` stops its tasks, whose workers return their messages to the queue.
    #[serde(default)]
    pub on_exhausted: OnExhausted,
}

/// A recurring window in which no run starts.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BlackoutWindow {
    /// When the window opens: a 5-field cron expression in UTC, e.g. `0 9 * * 1-5` (9:00 on
    /// weekdays).
    #[schemars(length(min = 9, max = 256))]
    pub start: String,
    /// How long the window stays open, in minutes (at most a week).
    #[schemars(range(min = limits::BLACKOUT_DURATION_MINUTES.min, max = limits::BLACKOUT_DURATION_MINUTES.max))]
    pub duration_minutes: i32,
}

/// What a run going does when the budget is used up.
#[derive(
    schemars::JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum OnExhausted {
    /// The run ends on its own.
    #[default]
    Finish,
    /// The run's tasks are stopped (SIGTERM): the workers return their messages.
    Stop,
}

fn default_max_instances() -> i32 {
    1
}
fn default_log_retention_days() -> i32 {
    30
}

/// Where the operator finds AWS credentials for this worker: static keys in a Secret, or a
/// role (in this or another account) the operator assumes from its own identity.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.secretRef) != has(self.roleArn)").message("spec.credentials: set exactly one of spec.credentials.secretRef (static keys) or spec.credentials.roleArn (a role the operator assumes)"))]
#[x_kube(validation = Rule::new("has(self.roleArn) || (!has(self.externalId) && !has(self.sessionDurationSeconds))").message("spec.credentials.externalId and spec.credentials.sessionDurationSeconds apply to spec.credentials.roleArn only"))]
pub struct CredentialsSpec {
    /// A Secret in the worker's namespace with keys `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY` and optionally `AWS_SESSION_TOKEN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
    /// An IAM role the operator assumes (STS AssumeRole, from its own identity) for every AWS
    /// call of this worker, e.g. `arn:aws:iam::111122223333:role/team-a-workers`; the
    /// resources are created in the role's account. The role's trust policy must name the
    /// operator's identity and allow `sts:AssumeRole` and `sts:TagSession` (see
    /// docs/cross-account.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^arn:aws(-cn|-us-gov)?:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$"
    ))]
    pub role_arn: Option<String>,
    /// The external id the role's trust policy requires (`sts:ExternalId`), if any. An
    /// identifier, not a secret: it appears in the role owner's CloudTrail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^[A-Za-z0-9_+=,.@:/-]+$"),
        length(min = 2, max = 1224)
    )]
    pub external_id: Option<String>,
    /// Lifetime of each role session (`DurationSeconds`, 900 to 43200; AssumeRole's default,
    /// one hour, when unset). It must not exceed the role's maximum session duration. Sessions
    /// are renewed before they expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = limits::SESSION_DURATION_SECONDS.min, max = limits::SESSION_DURATION_SECONDS.max))]
    pub session_duration_seconds: Option<i32>,
}

/// A Secret in the same namespace.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
pub struct SecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A plain environment variable of the worker container.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
pub struct EnvVar {
    /// Variable name. Names starting with `WORKER_` or `AWS_` are set by the operator and reserved.
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"), length(max = 255))]
    #[x_kube(validation = Rule::new("!self.startsWith('WORKER_') && !self.startsWith('AWS_') && !self.startsWith('ECS_')").message("env names starting with WORKER_, AWS_ or ECS_ are reserved for the operator"))]
    pub name: String,
    /// Value.
    #[serde(default)]
    #[schemars(length(max = 32768))]
    pub value: String,
}

/// An environment variable of the worker container whose value ECS fetches from AWS when the
/// task starts.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretEnvVar {
    /// Variable name. Names starting with `WORKER_`, `AWS_` or `ECS_` are set by the operator
    /// and reserved; a name may not repeat one of `spec.env`.
    #[schemars(
        regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"),
        length(min = 1, max = 255)
    )]
    #[x_kube(validation = Rule::new("!self.startsWith('WORKER_') && !self.startsWith('AWS_') && !self.startsWith('ECS_')").message("secret names starting with WORKER_, AWS_ or ECS_ are reserved for the operator"))]
    pub name: String,
    /// The ARN of a Secrets Manager secret
    /// (`arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME-AbCdEf`, optionally followed by
    /// `:json-key:version-stage:version-id`, any of them empty) or of an SSM parameter
    /// (`arn:aws:ssm:REGION:ACCOUNT:parameter/NAME`).
    #[schemars(length(min = 1, max = 400))]
    #[x_kube(validation = Rule::new("self.matches('^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:[A-Za-z0-9/_+=.@-]+(:[^:]*:[^:]*:[^:]*)?$') || self.matches('^arn:aws[a-z-]*:ssm:[a-z0-9-]+:[0-9]{12}:parameter/[A-Za-z0-9_./-]+$')").message("valueFrom must be a Secrets Manager secret ARN (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME, optionally :json-key:version-stage:version-id) or an SSM parameter ARN (arn:aws:ssm:REGION:ACCOUNT:parameter/NAME)"))]
    pub value_from: String,
}

/// The SQS work queue.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.existingQueueArn) || ((!has(self.allowSendFrom) || size(self.allowSendFrom) == 0) && (!has(self.deadLetter) || (self.deadLetter.enabled && self.deadLetter.maxReceiveCount == 5)))").message("spec.queue.existingQueueArn cannot be combined with spec.queue.allowSendFrom or a customised spec.queue.deadLetter: the operator does not change a queue it does not own"))]
pub struct QueueSpec {
    /// Seconds a received message stays invisible to other receivers (the original: 2 h). The
    /// worker extends it while a handler runs.
    #[serde(default = "default_visibility")]
    #[schemars(range(min = limits::VISIBILITY_TIMEOUT_SECONDS.min, max = limits::VISIBILITY_TIMEOUT_SECONDS.max))]
    pub visibility_timeout_seconds: i32,
    /// Seconds a message is kept (the original: 1 day).
    #[serde(default = "default_retention")]
    #[schemars(range(min = limits::MESSAGE_RETENTION_SECONDS.min, max = limits::MESSAGE_RETENTION_SECONDS.max))]
    pub message_retention_seconds: i32,
    /// Long-poll wait of the worker's receives, in seconds (at least 1: the worker never
    /// short-polls, which can come back empty while messages remain).
    #[serde(default = "default_wait")]
    #[schemars(range(min = limits::RECEIVE_WAIT_TIME_SECONDS.min, max = limits::RECEIVE_WAIT_TIME_SECONDS.max))]
    pub receive_wait_time_seconds: i32,
    /// Dead-letter queue for messages that keep failing.
    #[serde(default)]
    pub dead_letter: DeadLetterSpec,
    /// Keep a ConfigMap `<name>-queue` in the worker's namespace with the keys `QUEUE_URL`,
    /// `QUEUE_ARN`, `DLQ_URL`, `DLQ_ARN` (with a dead-letter queue) and `AWS_REGION`, owned by
    /// the worker, for producers to read with `envFrom`. Turning it off deletes the ConfigMap.
    #[serde(default = "default_true")]
    pub export: bool,
    /// Who else may send messages to the queue, rendered into the queue's access policy
    /// (`sqs:SendMessage` only, with the conditions AWS documents for each service). Removing
    /// every entry removes the policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub allow_send_from: Vec<QueueProducer>,
    /// Use this existing SQS queue (its ARN, in spec.region) instead of creating one. The
    /// operator reads its URL and attributes (the dead-letter queue of its redrive policy is
    /// shown in status), scopes the task role to it, never changes its attributes and never
    /// deletes it (nor its dead-letter queue); the other queue settings here do not apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new("self.matches('^arn:aws(-cn|-us-gov|-iso|-iso-[bef])?:sqs:[a-z]{2}(-[a-z]+)+-[0-9]+:[0-9]{12}:[A-Za-z0-9_-]{1,80}([.]fifo)?$')").message("spec.queue.existingQueueArn must be an SQS queue ARN (arn:aws:sqs:REGION:ACCOUNT:QUEUE-NAME)"))]
    pub existing_queue_arn: Option<String>,
}

/// One producer allowed to send to the queue: exactly one of the ARNs.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.snsTopicArn), has(self.s3BucketArn), has(self.eventBridgeRuleArn), has(self.principalArn)].filter(x, x).size() == 1").message("each allowSendFrom entry names exactly one of snsTopicArn, s3BucketArn, eventBridgeRuleArn, principalArn"))]
#[x_kube(validation = Rule::new("!has(self.sourceAccount) || has(self.s3BucketArn)").message("allowSendFrom: sourceAccount goes with s3BucketArn only"))]
pub struct QueueProducer {
    /// An SNS topic whose subscription delivers to the queue, e.g.
    /// `arn:aws:sns:us-east-1:111122223333:orders`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(
            pattern = r"^arn:aws(-cn|-us-gov|-iso|-iso-[bef])?:sns:[a-z]{2}(-[a-z]+)+-[0-9]+:[0-9]{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?$"
        ),
        length(max = 1600)
    )]
    pub sns_topic_arn: Option<String>,
    /// An S3 bucket whose event notifications go to the queue, e.g. `arn:aws:s3:::uploads`
    /// (bucket ARNs carry no region or account).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(
            pattern = r"^arn:aws(-cn|-us-gov|-iso|-iso-[bef])?:s3:::[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
        ),
        length(max = 100)
    )]
    pub s3_bucket_arn: Option<String>,
    /// The account that owns `s3BucketArn` (`aws:SourceAccount`): recommended, since a bucket
    /// name can be deleted and re-created by another account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{12}$"))]
    pub source_account: Option<String>,
    /// An EventBridge rule with the queue as target, e.g.
    /// `arn:aws:events:us-east-1:111122223333:rule/orders` (or `rule/<bus>/<rule>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(
            pattern = r"^arn:aws(-cn|-us-gov|-iso|-iso-[bef])?:events:[a-z]{2}(-[a-z]+)+-[0-9]+:[0-9]{12}:rule/[A-Za-z0-9._/-]{1,320}$"
        ),
        length(max = 1600)
    )]
    pub event_bridge_rule_arn: Option<String>,
    /// An IAM role or user, in this or another account, e.g.
    /// `arn:aws:iam::111122223333:role/producer`; it gets `sqs:SendMessage`,
    /// `sqs:GetQueueUrl` and `sqs:GetQueueAttributes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(
            pattern = r"^arn:aws(-cn|-us-gov|-iso|-iso-[bef])?:iam::[0-9]{12}:(role|user)/[A-Za-z0-9+=,.@_/-]{1,512}$"
        ),
        length(max = 1600)
    )]
    pub principal_arn: Option<String>,
}

fn default_visibility() -> i32 {
    7200
}
fn default_retention() -> i32 {
    86400
}
fn default_wait() -> i32 {
    20
}

impl Default for QueueSpec {
    fn default() -> Self {
        QueueSpec {
            visibility_timeout_seconds: default_visibility(),
            message_retention_seconds: default_retention(),
            receive_wait_time_seconds: default_wait(),
            dead_letter: DeadLetterSpec::default(),
            export: true,
            allow_send_from: Vec::new(),
            existing_queue_arn: None,
        }
    }
}

/// The dead-letter queue.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterSpec {
    /// Create a dead-letter queue and redrive failing messages to it.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Receives after which a message moves to the dead-letter queue.
    #[serde(default = "default_max_receive")]
    #[schemars(range(min = limits::MAX_RECEIVE_COUNT.min, max = limits::MAX_RECEIVE_COUNT.max))]
    pub max_receive_count: i32,
}

fn default_true() -> bool {
    true
}
fn default_max_receive() -> i32 {
    5
}

impl Default for DeadLetterSpec {
    fn default() -> Self {
        DeadLetterSpec {
            enabled: true,
            max_receive_count: default_max_receive(),
        }
    }
}

/// Which EC2 capacity a run uses. Groups with Spot or several instance types use the Auto
/// Scaling group's mixed instances policy.
/// <https://docs.aws.amazon.com/autoscaling/ec2/userguide/ec2-auto-scaling-mixed-instances-groups.html>
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CapacitySpec {
    /// `OnDemand` (default), `Spot`, or `SpotWithFallback`: Spot, and when a run's Spot
    /// launch fails for want of capacity or quota (seen in the group's scaling activities),
    /// the run continues On-Demand and says so in an Event and in `status.lastRun`.
    #[serde(default, rename = "type")]
    pub capacity_type: CapacityType,
    /// Instance types in order of preference, e.g. `[g5.xlarge, g4dn.xlarge, g6.xlarge]`: the
    /// first is used while it can be had; Spot picks among all of them per the allocation
    /// strategy. All must match `spec.arm`. At most 20.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = limits::MAX_INSTANCE_TYPES),
        inner(
            length(min = 3, max = 64),
            regex(pattern = r"^[a-z][a-z0-9-]*\.[a-z0-9-]+$")
        )
    )]
    #[x_kube(validation = Rule::new("self.all(t, self.exists_one(u, u == t))").message("spec.capacity.instanceTypes lists a type twice"))]
    pub instance_types: Vec<String>,
    /// How Spot capacity is chosen among the instance types (Auto Scaling's
    /// `SpotAllocationStrategy`); `price-capacity-optimized` by default, as AWS recommends.
    /// <https://docs.aws.amazon.com/autoscaling/ec2/userguide/allocation-strategies.html>
    #[serde(default)]
    pub spot_allocation_strategy: SpotAllocationStrategy,
}

/// The purchase option of a run's instances.
#[derive(
    schemars::JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum CapacityType {
    /// On-Demand instances (the original's).
    #[default]
    OnDemand,
    /// Spot instances only: cheaper, may be interrupted (the worker returns its messages).
    Spot,
    /// Spot, continuing On-Demand when Spot capacity cannot be had for a run.
    SpotWithFallback,
}

/// Auto Scaling's Spot allocation strategies.
#[derive(
    schemars::JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[serde(rename_all = "kebab-case")]
pub enum SpotAllocationStrategy {
    /// Pools with capacity first, then the lowest price among them.
    #[default]
    PriceCapacityOptimized,
    /// Pools with the most spare capacity.
    CapacityOptimized,
    /// `capacity-optimized`, breaking ties by the order of `instanceTypes`.
    CapacityOptimizedPrioritized,
    /// The lowest-priced pools (most interrupted).
    LowestPrice,
}

impl SpotAllocationStrategy {
    /// The value Auto Scaling takes.
    pub fn as_aws(self) -> &'static str {
        match self {
            SpotAllocationStrategy::PriceCapacityOptimized => "price-capacity-optimized",
            SpotAllocationStrategy::CapacityOptimized => "capacity-optimized",
            SpotAllocationStrategy::CapacityOptimizedPrioritized => {
                "capacity-optimized-prioritized"
            }
            SpotAllocationStrategy::LowestPrice => "lowest-price",
        }
    }
}

/// Whether an instance type is a Graviton (arm64) type: `a1`, or a family whose generation
/// digit is followed by `g` (`t4g`, `m7g`, `c6gn`, `im4gn`, `g5g`).
/// <https://docs.aws.amazon.com/ec2/latest/instancetypes/instance-type-names.html>
pub fn is_arm_instance_type(instance_type: &str) -> bool {
    let family = instance_type.split('.').next().unwrap_or_default();
    if family == "a1" {
        return true;
    }
    let rest = family.trim_start_matches(|c: char| c.is_ascii_lowercase());
    let after_digits = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    rest.len() != after_digits.len()
        && rest.len() != family.len()
        && after_digits.starts_with('g')
        && after_digits[1..].chars().all(|c| c.is_ascii_lowercase())
}

impl EcsSelfTerminatingWorkerSpec {
    /// The instance types in order of preference: `capacity.instanceTypes`, or
    /// `instanceType` alone.
    pub fn instance_types(&self) -> Vec<&str> {
        if self.capacity.instance_types.is_empty() {
            self.instance_type.iter().map(String::as_str).collect()
        } else {
            self.capacity
                .instance_types
                .iter()
                .map(String::as_str)
                .collect()
        }
    }

    /// Whether the group needs a mixed instances policy (Spot, or more than one type).
    pub fn uses_mixed_instances(&self) -> bool {
        self.capacity.capacity_type != CapacityType::OnDemand || self.instance_types().len() > 1
    }
}

/// How a run sizes and waits for its capacity.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScalingSpec {
    /// Visible messages needed at a tick to start a run.
    #[serde(default = "default_min_messages")]
    #[schemars(range(min = limits::MIN_MESSAGES.min, max = limits::MIN_MESSAGES.max))]
    pub min_messages: i32,
    /// One instance per this many visible messages, up to `maxInstances`.
    #[serde(default = "default_messages_per_instance")]
    #[schemars(range(min = limits::MESSAGES_PER_INSTANCE.min, max = limits::MESSAGES_PER_INSTANCE.max))]
    pub messages_per_instance: i32,
    /// Seconds to wait for instances to join the ECS cluster before scaling back to zero
    /// (the original: 300).
    #[serde(default = "default_join_timeout")]
    #[schemars(range(min = limits::JOIN_TIMEOUT_SECONDS.min, max = limits::JOIN_TIMEOUT_SECONDS.max))]
    pub join_timeout_seconds: i32,
}

fn default_min_messages() -> i32 {
    1
}
fn default_messages_per_instance() -> i32 {
    100
}
fn default_join_timeout() -> i32 {
    300
}

impl Default for ScalingSpec {
    fn default() -> Self {
        ScalingSpec {
            min_messages: default_min_messages(),
            messages_per_instance: default_messages_per_instance(),
            join_timeout_seconds: default_join_timeout(),
        }
    }
}

/// Settings passed to the worker process (see worker/README.md).
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(!has(self.handlerUrl) && !has(self.handlerReadyPath) && !has(self.handlerReadyTimeoutSeconds)) || (has(self.handlerMode) && self.handlerMode == 'http')").message("spec.worker.handlerUrl, handlerReadyPath and handlerReadyTimeoutSeconds apply to handlerMode: http only: set handlerMode to http or remove them"))]
pub struct WorkerSettings {
    /// Handler command line (`WORKER_HANDLER`); the image's default when absent. In `command`
    /// mode it runs once per message; in `stdio` mode it is started once and kept running; in
    /// `http` mode, if set, it is the HTTP server the worker starts once and keeps running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub handler: Option<String>,
    /// How the worker hands messages to the handler; see [`HandlerMode`] (its doc is the
    /// field's description in the CRD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handler_mode: Option<HandlerMode>,
    /// `http` mode: URL each message is POSTed to (`WORKER_HANDLER_URL`); default
    /// `http://127.0.0.1:8080/`. Plain HTTP inside the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 2048),
        regex(pattern = r"^http://[A-Za-z0-9.\-]+(:[0-9]{1,5})?(/\S*)?$")
    )]
    pub handler_url: Option<String>,
    /// `http` mode: path of the readiness probe (`WORKER_HANDLER_READY_PATH`), e.g. `/healthz`:
    /// messages are sent once a GET of it answers 2xx. Without it, any HTTP answer at
    /// `handlerUrl` counts as ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024), regex(pattern = r"^/\S*$"))]
    pub handler_ready_path: Option<String>,
    /// `http` mode: seconds the handler may take to become ready, at start and after a restart
    /// (`WORKER_HANDLER_READY_TIMEOUT_SECONDS`); default 300. A handler that never becomes
    /// ready stops the worker with exit code 1, and its capacity is removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = limits::HANDLER_READY_TIMEOUT_SECONDS.min, max = limits::HANDLER_READY_TIMEOUT_SECONDS.max))]
    pub handler_ready_timeout_seconds: Option<i32>,
    /// Messages handled in parallel by one worker.
    #[serde(default = "default_concurrency")]
    #[schemars(range(min = limits::CONCURRENCY.min, max = limits::CONCURRENCY.max))]
    pub concurrency: i32,
    /// Consecutive empty long polls (with nothing in flight) before the worker exits.
    #[serde(default = "default_empty_receives")]
    #[schemars(range(min = limits::EMPTY_RECEIVES.min, max = limits::EMPTY_RECEIVES.max))]
    pub empty_receives: i32,
    /// Shorten the tail of a run that follows a long idle spell: when a run starts more than
    /// 10 minutes after the previous one ended (or is the first), its workers exit after one
    /// empty receive of at most 5 s instead of `emptyReceives` long polls of
    /// `queue.receiveWaitTimeSeconds`. Work that comes rarely then does not pay the whole tail
    /// on every start, and work that keeps coming keeps the configured tail. `false`: every run
    /// uses the configured tail.
    #[serde(default = "default_true")]
    pub adaptive_tail: bool,
    /// How the worker removes capacity when done.
    #[serde(default)]
    pub termination: TerminationMode,
}

fn default_concurrency() -> i32 {
    1
}
fn default_empty_receives() -> i32 {
    2
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            handler: None,
            handler_mode: None,
            handler_url: None,
            handler_ready_path: None,
            handler_ready_timeout_seconds: None,
            concurrency: default_concurrency(),
            empty_receives: default_empty_receives(),
            adaptive_tail: true,
            termination: TerminationMode::default(),
        }
    }
}

/// How the worker hands messages to the handler (`WORKER_HANDLER_MODE`); shared with the
/// worker.
pub use ecs_worker_contract::HandlerMode;

/// How a finished worker removes its capacity.
#[derive(
    schemars::JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum TerminationMode {
    /// Terminate its own instance with a desired-capacity decrement (each instance removes only itself).
    #[default]
    Instance,
    /// Set the group's desired capacity to 0 (the original's behaviour).
    Group,
    /// Leave it to the operator.
    None,
}

/// Where instances run: given subnets, the default VPC's default subnets, or a VPC the
/// operator creates and owns (`managedVpc`).
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.managedVpc) || (!has(self.subnetIds) && !has(self.securityGroupIds))").message("spec.network.managedVpc creates its own subnets and security group: remove spec.network.subnetIds and spec.network.securityGroupIds, or remove managedVpc to use them"))]
#[x_kube(validation = Rule::new("!has(self.managedVpc) || !has(self.assignPublicIp) || self.assignPublicIp").message("instances in spec.network.managedVpc need public IPv4 addresses (it has no NAT gateway): remove spec.network.assignPublicIp or set it to true"))]
pub struct NetworkSpec {
    /// Subnet ids for the Auto Scaling group; the default VPC's default subnets when empty
    /// (and `managedVpc` is not set).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(regex(pattern = r"^subnet-[0-9a-f]{8,17}$")))]
    pub subnet_ids: Vec<String>,
    /// Security group ids for the instances; the operator creates an egress-only group when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5), inner(regex(pattern = r"^sg-[0-9a-f]{8,17}$")))]
    pub security_group_ids: Vec<String>,
    /// Request a public IPv4 address for instances (needed without a NAT gateway or VPC endpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assign_public_ip: Option<bool>,
    /// Create and own a minimal network for this worker, as the original stack did: a VPC,
    /// one public subnet in each of two Availability Zones, an internet gateway, a route table
    /// with the default route and an egress-only security group. Instances get public IPv4
    /// addresses, so no NAT gateway is needed (nothing costs money while idle). `managedVpc: {}`
    /// uses the default CIDR. Cannot be combined with `subnetIds` or `securityGroupIds`. When it
    /// is removed, instances move to the other subnets and the network is deleted once nothing
    /// runs in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_vpc: Option<ManagedVpcSpec>,
}

/// The VPC the operator creates for a worker.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ManagedVpcSpec {
    /// IPv4 CIDR of the VPC, `/16` to `/27`, in a private range and clear of Docker's bridge
    /// `172.17.0.0/16`; split into two equal subnets. Fixed once created.
    #[serde(default = "default_vpc_cidr")]
    #[schemars(length(max = 18))]
    #[x_kube(validation = Rule::new("isCIDR(self) && cidr(self).ip().family() == 4").message("spec.network.managedVpc.cidrBlock must be an IPv4 CIDR such as 10.0.0.0/16"))]
    #[x_kube(validation = Rule::new("!isCIDR(self) || (cidr(self).prefixLength() >= 16 && cidr(self).prefixLength() <= 27)").message("spec.network.managedVpc.cidrBlock: use a prefix of /16 to /27 (it is split into two subnets of at least /28)"))]
    #[x_kube(validation = Rule::new("!isCIDR(self) || cidr(self).masked() == cidr(self)").message("spec.network.managedVpc.cidrBlock has host bits set: write the network address, e.g. 10.0.0.0/16"))]
    #[x_kube(validation = Rule::new("!isCIDR(self) || cidr('10.0.0.0/8').containsCIDR(self) || cidr('172.16.0.0/12').containsCIDR(self) || cidr('192.168.0.0/16').containsCIDR(self)").message("spec.network.managedVpc.cidrBlock must be inside a private range: 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16"))]
    #[x_kube(validation = Rule::new("!isCIDR(self) || !cidr('172.17.0.0/16').containsCIDR(self)").message("spec.network.managedVpc.cidrBlock overlaps 172.17.0.0/16, Docker's bridge network on ECS instances: choose another range"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.network.managedVpc.cidrBlock cannot change once the VPC exists: create a new worker for a new network"))]
    pub cidr_block: String,
}

fn default_vpc_cidr() -> String {
    crate::plan::network::DEFAULT_CIDR.to_string()
}

impl Default for ManagedVpcSpec {
    fn default() -> Self {
        ManagedVpcSpec {
            cidr_block: default_vpc_cidr(),
        }
    }
}

/// ECS-optimized AMI family.
#[derive(
    schemars::JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum AmiFamily {
    /// Amazon Linux 2023.
    #[default]
    AmazonLinux2023,
    /// Amazon Linux 2 (the original's choice).
    AmazonLinux2,
}

/// Existing IAM resources to use instead of creating them.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IamSpec {
    /// Instance profile for the EC2 instances (must allow joining ECS clusters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^arn:aws[a-z-]*:iam::[0-9]{12}:instance-profile/.+$')").message("spec.iam.instanceProfileArn must be an IAM instance profile ARN"))]
    pub instance_profile_arn: Option<String>,
    /// Role the worker task assumes (must allow receiving/deleting from the queue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$')").message("spec.iam.taskRoleArn must be an IAM role ARN"))]
    pub task_role_arn: Option<String>,
    /// Role ECS uses to pull the image and write logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$')").message("spec.iam.executionRoleArn must be an IAM role ARN"))]
    pub execution_role_arn: Option<String>,
}

/// What deleting the object does to its AWS resources.
#[derive(
    schemars::JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum DeletionPolicy {
    /// Delete everything, except a queue that still holds messages: it is kept, with an Event.
    #[default]
    Delete,
    /// Delete everything, including a queue that still holds messages.
    DeleteWithMessages,
    /// Keep every AWS resource (capacity is still scaled to zero).
    Retain,
}

/// Observed state, written only by the operator.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EcsSelfTerminatingWorkerStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Provisioned`, `Degraded`, and the kstatus pair `Reconciling` (the controller
    /// is still acting on the spec: provisioning, retrying, deleting) and `Stalled` (it cannot
    /// go on until someone changes the spec, a Secret or AWS permissions). One entry per type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Provisioning / Idle / ScalingUp / Running / ScalingDown / Suspended / Failed / Deleting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The effective schedule, e.g. `rate(7 hours)` or `cron(*/15 * * * *)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The instance types a run launches, in order of preference, e.g. `g5.xlarge,g4dn.xlarge`
    /// (`spec.instanceType` or `spec.capacity.instanceTypes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_types: Option<String>,
    /// When the next tick is due (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_time: Option<Time>,
    /// Queue depth last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueDepth>,
    /// Ids, ARNs and URLs of every AWS resource the worker owns.
    #[serde(default)]
    pub resources: AwsResources,
    /// The run in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_run: Option<RunStatus>,
    /// The last finished run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<RunRecord>,
    /// Value of the `ecsworker.dev/run-now` annotation last handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_trigger: Option<String>,
    /// Finished runs in a row that failed or timed out scaling up (0 after a successful run; an
    /// interrupted run changes nothing); health checks report the worker degraded from a
    /// threshold on.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub consecutive_failed_runs: i32,
    /// `spec.budget.maxInstanceHoursPerDay`: what the last 24 hours used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetStatus>,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// Coarse state of a worker, for humans and printer columns.
#[derive(schemars::JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Provisioning,
    Idle,
    ScalingUp,
    Running,
    ScalingDown,
    Suspended,
    Failed,
    Deleting,
}

/// Message counts of the queue.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct QueueDepth {
    /// Messages available (`ApproximateNumberOfMessages`).
    pub visible: i64,
    /// Messages received and not yet deleted (`ApproximateNumberOfMessagesNotVisible`).
    pub in_flight: i64,
    /// Messages in the dead-letter queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<i64>,
}

/// AWS resources owned by the worker.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AwsResources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_queue_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_queue_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_role_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_profile_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_role_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_role_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_group_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnet_ids: Vec<String>,
    /// VPC of the instances' subnets (the managed VPC with `spec.network.managedVpc`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc_id: Option<String>,
    /// Availability Zones of `subnetIds`, in the same order (managed VPC).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub availability_zones: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internet_gateway_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_table_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_template_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_template_version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_scaling_group_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_definition_arn: Option<String>,
}

/// The run in progress.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunStatus {
    /// Run id; the worker tasks carry it as `startedBy` and it is the RunTask client token.
    pub id: String,
    /// When scale-up started.
    pub scale_up_at: Time,
    /// Instances asked for.
    pub instances: i32,
    /// Visible messages when the run started.
    pub messages_before: i64,
    /// When the worker tasks were started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks_started_at: Option<Time>,
    /// `capacity.type: SpotWithFallback`: Spot capacity could not be had, so the run
    /// continues On-Demand.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub on_demand_fallback: bool,
}

/// What the runs of the last 24 hours used.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BudgetStatus {
    /// Instance-seconds of the runs that ended in the rolling 24 hours (a run going counts on
    /// top of it when the operator decides).
    pub used_instance_seconds: i64,
    /// The limit, in instance-seconds.
    pub limit_instance_seconds: i64,
    /// The budget is used up (the run going included): no run starts.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exhausted: bool,
    /// When enough of the window will have passed for a run to start again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resets_at: Option<Time>,
    /// Instance-seconds of the runs that ended, by the hour they ended in (the last 24).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 25))]
    pub hours: Vec<UsageHour>,
}

/// Instance-seconds of the runs that ended in one hour.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UsageHour {
    /// The hour's start.
    pub hour: Time,
    pub instance_seconds: i64,
}

/// A finished run.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    /// Run id.
    pub id: String,
    /// Succeeded, Failed (a task exited non-zero), Interrupted (a worker was stopped before
    /// the queue was drained, its instance draining on a Spot interruption or a scale-in, and
    /// returned its messages to the queue), ScaleUpTimedOut, or LaunchFailed (Auto Scaling
    /// could launch no instance; `stopReason` holds its scaling activity's message).
    pub outcome: RunOutcome,
    /// When scale-up started.
    pub scale_up_at: Time,
    /// When the worker tasks started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the run ended.
    pub stopped_at: Time,
    /// Instances used.
    pub instances: i32,
    /// Exit code of the worker (the highest of the run's tasks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Stop reason reported by ECS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    /// Visible messages when the run started.
    pub messages_before: i64,
    /// Visible messages when the run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages_after: Option<i64>,
    /// `capacity.type: SpotWithFallback`: Spot capacity could not be had, so the run used
    /// On-Demand instances.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub on_demand_fallback: bool,
}

/// How a run ended.
#[derive(schemars::JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    Succeeded,
    Failed,
    ScaleUpTimedOut,
    Interrupted,
    LaunchFailed,
}

impl EcsSelfTerminatingWorker {
    /// Reads a condition by type.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
    }
}

#[cfg(test)]
mod tests {
    use super::is_arm_instance_type;

    #[test]
    fn graviton_types_are_told_from_the_family_name() {
        for arm in [
            "a1.medium",
            "t4g.small",
            "m6g.large",
            "m7gd.xlarge",
            "c6gn.2xlarge",
            "c7g.large",
            "r8g.large",
            "x2gd.xlarge",
            "im4gn.large",
            "is4gen.large",
            "g5g.xlarge",
            "hpc7g.4xlarge",
        ] {
            assert!(is_arm_instance_type(arm), "{arm}");
        }
        for x86 in [
            "t3.micro",
            "m6i.large",
            "g4dn.xlarge",
            "g4ad.xlarge",
            "g5.xlarge",
            "gr6.4xlarge",
            "p4d.24xlarge",
            "inf2.xlarge",
            "m7i-flex.large",
            "u-6tb1.metal",
            "m5zn.large",
            "c6a.large",
        ] {
            assert!(!is_arm_instance_type(x86), "{x86}");
        }
    }
}
