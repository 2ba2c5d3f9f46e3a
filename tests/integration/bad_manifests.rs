//! Bad manifests against the real API server, with the controller running: each one is either
//! refused at admission with a message naming the offending field, or accepted by the schema
//! and ends in a terminal condition (`Degraded=True` with a reason, phase `Failed`, a Warning
//! Event naming the field or Secret). None of them makes an AWS call, and no Secret value shows
//! up in a status, a condition, an Event or the metrics.

use crate::common::Harness;
use ecs_worker_operator::api::conditions::{self, reason};
use ecs_worker_operator::api::{EcsSelfTerminatingWorker, Phase, limits};
// A valid spec; every case breaks it in one way.
use ecs_worker_operator::api::testing::minimal_spec_json as base_spec;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Resource;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How a manifest reaches the API server.
#[derive(Clone, Copy, Debug)]
enum Via {
    /// `POST` (what `kubectl create` does).
    Create,
    /// `POST` with `fieldValidation=Strict` (`kubectl create --validate=strict`): unknown
    /// fields are an error instead of being pruned silently.
    CreateStrict,
    /// JSON merge patch of the spec of an existing (accepted) worker.
    MergePatch(&'static str),
}

/// What must happen to a manifest.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// The API server refuses it with this HTTP code and a message containing the needle.
    Refused { code: u16, needle: &'static str },
    /// Accepted, then `Degraded=True` with this reason and a message containing the needle.
    Terminal {
        reason: &'static str,
        needle: &'static str,
    },
}

struct Case {
    name: &'static str,
    /// Merged over [`base_spec`] (JSON merge patch: `null` removes a key); for
    /// [`Via::MergePatch`], the spec part of the patch.
    spec: Value,
    via: Via,
    expect: Expect,
}

fn refused(name: &'static str, spec: Value, needle: &'static str) -> Case {
    Case {
        name,
        spec,
        via: Via::Create,
        expect: Expect::Refused { code: 422, needle },
    }
}

fn terminal(name: &'static str, spec: Value, reason: &'static str, needle: &'static str) -> Case {
    Case {
        name,
        spec,
        via: Via::Create,
        expect: Expect::Terminal { reason, needle },
    }
}

/// JSON merge patch (RFC 7386).
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn manifest(name: &str, spec: &Value) -> anyhow::Result<DynamicObject> {
    let mut full = base_spec();
    merge(&mut full, spec);
    Ok(serde_json::from_value(json!({
        "apiVersion": "ecsworker.dev/v1alpha1",
        "kind": "EcsSelfTerminatingWorker",
        "metadata": { "name": name },
        "spec": full,
    }))?)
}

/// Secret values used by the credential cases: none may appear outside the Secrets.
const FAKE_VALUES: [&str; 8] = [
    "AKIAFAKEBADMANIFEST01",
    "AKIAFAKEBADMANIFEST02",
    "AKIAFAKEBADMANIFEST03",
    "AKIAFAKEBADMANIFEST04",
    "s3cr3t-value-bad-manifests-02",
    "s3cr3t-value-bad-manifests-03",
    "s3cr3t-value-bad-manifests-04",
    "s3cr3t-session-bad-manifests-05",
];

/// A Secret's data, as (key, bytes).
type SecretData = Vec<(&'static str, Vec<u8>)>;

/// The Secrets the credential cases point at, by name.
fn secrets() -> Vec<(&'static str, SecretData)> {
    let s = |v: &str| v.as_bytes().to_vec();
    vec![
        (
            "creds-no-secret-key",
            vec![("AWS_ACCESS_KEY_ID", s(FAKE_VALUES[0]))],
        ),
        (
            "creds-no-key-id",
            vec![
                ("AWS_SECRET_ACCESS_KEY", s(FAKE_VALUES[4])),
                ("AWS_SESSION_TOKEN", s(FAKE_VALUES[7])),
            ],
        ),
        (
            "creds-empty",
            vec![
                ("AWS_ACCESS_KEY_ID", Vec::new()),
                ("AWS_SECRET_ACCESS_KEY", Vec::new()),
            ],
        ),
        (
            "creds-blank",
            vec![
                ("AWS_ACCESS_KEY_ID", s("  \n")),
                ("AWS_SECRET_ACCESS_KEY", s("\t \n")),
            ],
        ),
        (
            "creds-wrong-case",
            vec![
                ("aws_access_key_id", s(FAKE_VALUES[1])),
                ("aws_secret_access_key", s(FAKE_VALUES[5])),
            ],
        ),
        (
            "creds-not-utf8",
            vec![
                ("AWS_ACCESS_KEY_ID", s(FAKE_VALUES[2])),
                (
                    "AWS_SECRET_ACCESS_KEY",
                    vec![0xff, 0xfe, 0x73, 0x33, 0x63, 0x72, 0x33, 0x74],
                ),
            ],
        ),
        (
            "creds-id-is-secret",
            vec![
                ("AWS_ACCESS_KEY_ID", s(FAKE_VALUES[3])),
                ("AWS_SECRET_ACCESS_KEY", s(" ")),
                ("aws-secret-access-key", s(FAKE_VALUES[6])),
            ],
        ),
    ]
}

fn creds(secret: &str) -> Value {
    json!({ "credentials": { "secretRef": { "name": secret } } })
}

/// Accepted by the schema, refused by the controller.
fn terminal_cases() -> Vec<Case> {
    use reason::{INVALID_SPEC, SECRET_INVALID, SECRET_NOT_FOUND};
    let dup_env = json!([{ "name": "MODE", "value": "a" }, { "name": "MODE", "value": "b" }]);
    vec![
        terminal(
            "t-tag-characters",
            json!({ "tags": { "owners": "ml, video" } }),
            INVALID_SPEC,
            "spec.tags[\"owners\"]",
        ),
        terminal(
            "t-blackout-minute-99",
            json!({ "budget": { "blackoutWindows": [{ "start": "99 * * * *", "durationMinutes": 60 }] } }),
            INVALID_SPEC,
            "spec.budget.blackoutWindows[0].start",
        ),
        terminal(
            "t-env-duplicate",
            json!({ "env": dup_env }),
            INVALID_SPEC,
            "spec.env[1].name",
        ),
        terminal(
            "t-cron-4-fields",
            json!({ "cronRate": null, "schedule": "*/5 */2 * *" }),
            INVALID_SPEC,
            "spec.schedule",
        ),
        terminal(
            "t-cron-6-fields",
            json!({ "cronRate": null, "schedule": "0 0 * * * *" }),
            INVALID_SPEC,
            "spec.schedule",
        ),
        terminal(
            "t-cron-minute-61",
            json!({ "cronRate": null, "schedule": "61 * * * *" }),
            INVALID_SPEC,
            "spec.schedule",
        ),
        terminal(
            "t-cron-hour-25",
            json!({ "cronRate": null, "schedule": "* 25 * * *" }),
            INVALID_SPEC,
            "spec.schedule",
        ),
        terminal(
            "t-cron-never-fires",
            json!({ "cronRate": null, "schedule": "0 0 31 2 *" }),
            INVALID_SPEC,
            "spec.schedule",
        ),
        terminal(
            "t-cron-letters",
            json!({ "cronRate": null, "schedule": "a b c d e" }),
            INVALID_SPEC,
            "spec.schedule",
        ),
        terminal(
            "t-cron-unicode-digit",
            json!({ "cronRate": null, "schedule": "\u{0660} * * * *" }),
            INVALID_SPEC,
            "spec.schedule",
        ),
        terminal(
            "t-cron-blank",
            json!({ "cronRate": null, "schedule": "         " }),
            INVALID_SPEC,
            "spec.schedule",
        ),
        // The spec is checked before the Secret is read.
        terminal(
            "t-invalid-before-secret",
            json!({ "env": dup_env, "credentials": { "secretRef": { "name": "absent" } } }),
            INVALID_SPEC,
            "spec.env[1].name",
        ),
        terminal(
            "t-secret-missing",
            creds("no-such-secret"),
            SECRET_NOT_FOUND,
            "no-such-secret",
        ),
        terminal(
            "t-secret-no-secret-key",
            creds("creds-no-secret-key"),
            SECRET_INVALID,
            "lacks key(s) AWS_SECRET_ACCESS_KEY;",
        ),
        terminal(
            "t-secret-no-key-id",
            creds("creds-no-key-id"),
            SECRET_INVALID,
            "lacks key(s) AWS_ACCESS_KEY_ID;",
        ),
        terminal(
            "t-secret-empty-values",
            creds("creds-empty"),
            SECRET_INVALID,
            "lacks key(s) AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY",
        ),
        terminal(
            "t-secret-blank-values",
            creds("creds-blank"),
            SECRET_INVALID,
            "lacks key(s) AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY",
        ),
        terminal(
            "t-secret-wrong-case",
            creds("creds-wrong-case"),
            SECRET_INVALID,
            "lacks key(s) AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY",
        ),
        terminal(
            "t-secret-not-utf8",
            creds("creds-not-utf8"),
            SECRET_INVALID,
            "lacks key(s) AWS_SECRET_ACCESS_KEY;",
        ),
        terminal(
            "t-secret-wrong-key",
            creds("creds-id-is-secret"),
            SECRET_INVALID,
            "lacks key(s) AWS_SECRET_ACCESS_KEY;",
        ),
    ]
}

/// Refused by the API server.
fn admission_cases() -> Vec<Case> {
    let long = |n: usize| "a".repeat(n);
    vec![
        // Wrong types.
        refused(
            "a-memory-string",
            json!({ "memoryLimitMiB": "512" }),
            "spec.memoryLimitMiB",
        ),
        refused("a-image-number", json!({ "image": 42 }), "spec.image"),
        refused(
            "a-rate-400-days",
            json!({ "cronRate": "400_DAYS" }),
            "longer than a year",
        ),
        refused(
            "a-rate-huge",
            json!({ "cronRate": "999999999_DAYS" }),
            "longer than a year",
        ),
        refused("a-tags-list", json!({ "tags": ["team=a"] }), "spec.tags"),
        refused(
            "a-tag-value-number",
            json!({ "tags": { "team": 5 } }),
            "spec.tags.team",
        ),
        refused("a-gpu-string", json!({ "gpu": "yes" }), "spec.gpu"),
        refused(
            "a-max-instances-float",
            json!({ "maxInstances": 1.5 }),
            "spec.maxInstances",
        ),
        refused("a-env-map", json!({ "env": { "MODE": "a" } }), "spec.env"),
        refused(
            "a-env-value-number",
            json!({ "env": [{ "name": "MODE", "value": 1 }] }),
            "spec.env[0].value",
        ),
        refused(
            "a-command-string",
            json!({ "command": "run.sh" }),
            "spec.command",
        ),
        refused("a-queue-string", json!({ "queue": "fifo" }), "spec.queue"),
        refused("a-suspend-number", json!({ "suspend": 1 }), "spec.suspend"),
        refused("a-spec-string", json!("t3.medium"), "spec: Invalid value"),
        // Out-of-range numbers.
        refused(
            "a-memory-zero",
            json!({ "memoryLimitMiB": 0 }),
            "spec.memoryLimitMiB",
        ),
        refused(
            "a-memory-negative",
            json!({ "memoryLimitMiB": -512 }),
            "spec.memoryLimitMiB",
        ),
        refused(
            "a-memory-huge",
            json!({ "memoryLimitMiB": 4_194_305 }),
            "spec.memoryLimitMiB",
        ),
        refused(
            "a-memory-beyond-int32",
            json!({ "memoryLimitMiB": 9_999_999_999_i64 }),
            "spec.memoryLimitMiB",
        ),
        refused(
            "a-max-instances-0",
            json!({ "maxInstances": 0 }),
            "spec.maxInstances",
        ),
        refused(
            "a-max-instances-101",
            json!({ "maxInstances": 101 }),
            "spec.maxInstances",
        ),
        refused(
            "a-visibility-43201",
            json!({ "queue": { "visibilityTimeoutSeconds": 43201 } }),
            "spec.queue.visibilityTimeoutSeconds",
        ),
        refused(
            "a-visibility-negative",
            json!({ "queue": { "visibilityTimeoutSeconds": -1 } }),
            "spec.queue.visibilityTimeoutSeconds",
        ),
        refused(
            "a-retention-59",
            json!({ "queue": { "messageRetentionSeconds": 59 } }),
            "spec.queue.messageRetentionSeconds",
        ),
        refused(
            "a-retention-15-days",
            json!({ "queue": { "messageRetentionSeconds": 1_296_000 } }),
            "spec.queue.messageRetentionSeconds",
        ),
        refused(
            "a-receive-wait-21",
            json!({ "queue": { "receiveWaitTimeSeconds": 21 } }),
            "spec.queue.receiveWaitTimeSeconds",
        ),
        refused(
            "a-short-poll",
            json!({ "queue": { "receiveWaitTimeSeconds": 0 } }),
            "spec.queue.receiveWaitTimeSeconds",
        ),
        refused(
            "an-adaptive-tail-string",
            json!({ "worker": { "adaptiveTail": "yes" } }),
            "spec.worker.adaptiveTail",
        ),
        refused(
            "a-max-receive-count-0",
            json!({ "queue": { "deadLetter": { "maxReceiveCount": 0 } } }),
            "spec.queue.deadLetter.maxReceiveCount",
        ),
        // Producers (spec.queue.allowSendFrom): one ARN of the right service and partition.
        refused(
            "a-send-from-two-sources",
            json!({ "queue": { "allowSendFrom": [{ "snsTopicArn": "arn:aws:sns:us-east-1:111122223333:t", "s3BucketArn": "arn:aws:s3:::b-1" }] } }),
            "exactly one of snsTopicArn, s3BucketArn",
        ),
        refused(
            "a-send-from-nothing",
            json!({ "queue": { "allowSendFrom": [{}] } }),
            "exactly one of snsTopicArn, s3BucketArn",
        ),
        refused(
            "a-send-from-topic-as-bucket",
            json!({ "queue": { "allowSendFrom": [{ "s3BucketArn": "arn:aws:sns:us-east-1:111122223333:t" }] } }),
            "s3BucketArn",
        ),
        refused(
            "a-send-from-queue-as-topic",
            json!({ "queue": { "allowSendFrom": [{ "snsTopicArn": "arn:aws:sqs:us-east-1:111122223333:q" }] } }),
            "snsTopicArn",
        ),
        refused(
            "a-send-from-unknown-partition",
            json!({ "queue": { "allowSendFrom": [{ "snsTopicArn": "arn:aws-xx:sns:us-east-1:111122223333:t" }] } }),
            "snsTopicArn",
        ),
        refused(
            "a-send-from-bus-not-rule",
            json!({ "queue": { "allowSendFrom": [{ "eventBridgeRuleArn": "arn:aws:events:us-east-1:111122223333:event-bus/default" }] } }),
            "eventBridgeRuleArn",
        ),
        refused(
            "a-send-from-iam-group",
            json!({ "queue": { "allowSendFrom": [{ "principalArn": "arn:aws:iam::111122223333:group/senders" }] } }),
            "principalArn",
        ),
        refused(
            "a-send-from-short-account",
            json!({ "queue": { "allowSendFrom": [{ "s3BucketArn": "arn:aws:s3:::b-1", "sourceAccount": "1111" }] } }),
            "sourceAccount",
        ),
        refused(
            "a-source-account-without-bucket",
            json!({ "queue": { "allowSendFrom": [{ "snsTopicArn": "arn:aws:sns:us-east-1:111122223333:t", "sourceAccount": "111122223333" }] } }),
            "sourceAccount goes with s3BucketArn only",
        ),
        refused(
            "a-send-from-other-partition",
            json!({ "queue": { "allowSendFrom": [{ "snsTopicArn": "arn:aws-cn:sns:cn-north-1:111122223333:t" }] } }),
            "every ARN must be in the partition of spec.region",
        ),
        refused(
            "a-send-from-role-other-partition",
            json!({ "queue": { "allowSendFrom": [{ "principalArn": "arn:aws-us-gov:iam::111122223333:role/p" }] } }),
            "every ARN must be in the partition of spec.region",
        ),
        refused(
            "a-export-string",
            json!({ "queue": { "export": "yes" } }),
            "spec.queue.export",
        ),
        refused(
            "a-concurrency-0",
            json!({ "worker": { "concurrency": 0 } }),
            "spec.worker.concurrency",
        ),
        refused(
            "a-concurrency-257",
            json!({ "worker": { "concurrency": 257 } }),
            "spec.worker.concurrency",
        ),
        refused(
            "a-empty-receives-0",
            json!({ "worker": { "emptyReceives": 0 } }),
            "spec.worker.emptyReceives",
        ),
        refused(
            "a-join-timeout-10",
            json!({ "scaling": { "joinTimeoutSeconds": 10 } }),
            "spec.scaling.joinTimeoutSeconds",
        ),
        refused(
            "a-min-messages-0",
            json!({ "scaling": { "minMessages": 0 } }),
            "spec.scaling.minMessages",
        ),
        refused(
            "a-log-retention-2",
            json!({ "logRetentionDays": 2 }),
            "spec.logRetentionDays",
        ),
        // Bad instance types.
        refused(
            "a-instance-no-size",
            json!({ "instanceType": "t3" }),
            "spec.instanceType",
        ),
        refused(
            "a-instance-uppercase",
            json!({ "instanceType": "T3.medium" }),
            "spec.instanceType",
        ),
        refused(
            "a-instance-trailing-dot",
            json!({ "instanceType": "t3." }),
            "spec.instanceType",
        ),
        refused(
            "a-instance-no-family",
            json!({ "instanceType": ".medium" }),
            "spec.instanceType",
        ),
        refused(
            "a-instance-space",
            json!({ "instanceType": "t3 medium" }),
            "spec.instanceType",
        ),
        refused(
            "a-instance-accent",
            json!({ "instanceType": "t3.m\u{e9}dium" }),
            "spec.instanceType",
        ),
        refused(
            "a-instance-cyrillic",
            json!({ "instanceType": "\u{442}3.medium" }),
            "spec.instanceType",
        ),
        refused(
            "a-instance-100-chars",
            json!({ "instanceType": format!("t3.{}", long(97)) }),
            "spec.instanceType",
        ),
        refused(
            "a-instance-empty",
            json!({ "instanceType": "" }),
            "spec.instanceType",
        ),
        // Bad schedules.
        refused(
            "a-rate-and-schedule",
            json!({ "schedule": "*/15 * * * *" }),
            "spec.cronRate",
        ),
        refused(
            "a-no-schedule",
            json!({ "cronRate": null }),
            "spec.cronRate",
        ),
        refused(
            "a-rate-space",
            json!({ "cronRate": "7 HOURS" }),
            "spec.cronRate",
        ),
        refused(
            "a-rate-zero",
            json!({ "cronRate": "0_HOURS" }),
            "spec.cronRate",
        ),
        refused(
            "a-rate-weeks",
            json!({ "cronRate": "7_WEEKS" }),
            "spec.cronRate",
        ),
        refused(
            "a-rate-lowercase",
            json!({ "cronRate": "7_hours" }),
            "spec.cronRate",
        ),
        refused(
            "a-schedule-short",
            json!({ "cronRate": null, "schedule": "* * * *" }),
            "spec.schedule",
        ),
        refused(
            "a-gpu-and-arm",
            json!({ "gpu": true, "arm": true }),
            "spec.gpu and spec.arm",
        ),
        // Missing required fields.
        refused(
            "a-no-instance-type",
            json!({ "instanceType": null }),
            "spec.instanceType",
        ),
        refused("a-no-region", json!({ "region": null }), "spec.region"),
        refused("a-no-image", json!({ "image": null }), "spec.image"),
        refused(
            "a-no-memory",
            json!({ "memoryLimitMiB": null }),
            "spec.memoryLimitMiB",
        ),
        // Huge strings.
        refused(
            "a-image-2000-chars",
            json!({ "image": format!("registry.example/{}:1", long(1980)) }),
            "spec.image",
        ),
        refused(
            "a-tag-key-129-chars",
            json!({ "tags": { long(129): "x" } }),
            "spec.tags",
        ),
        refused(
            "a-41st-tag",
            json!({ "tags": (0..=limits::MAX_TAGS)
                .map(|i| (format!("k{i}"), json!("v")))
                .collect::<serde_json::Map<_, _>>() }),
            "spec.tags",
        ),
        refused(
            "a-handler-5000-chars",
            json!({ "worker": { "handler": long(5000) } }),
            "spec.worker.handler",
        ),
        // Reserved and malformed env names.
        refused(
            "a-env-aws-secret",
            json!({ "env": [{ "name": "AWS_SECRET_ACCESS_KEY", "value": "x" }] }),
            "spec.env[0].name",
        ),
        refused(
            "a-env-worker-queue",
            json!({ "env": [{ "name": "A", "value": "1" }, { "name": "WORKER_QUEUE_URL", "value": "x" }] }),
            "spec.env[1].name",
        ),
        refused(
            "a-env-ecs-prefix",
            json!({ "env": [{ "name": "ECS_X", "value": "x" }] }),
            "spec.env[0].name",
        ),
        refused(
            "a-env-leading-digit",
            json!({ "env": [{ "name": "1MODE", "value": "x" }] }),
            "spec.env[0].name",
        ),
        refused(
            "a-env-no-name",
            json!({ "env": [{ "value": "x" }] }),
            "spec.env[0].name",
        ),
        // Bad regions, network ids and IAM ARNs.
        refused(
            "a-region-uppercase",
            json!({ "region": "US-EAST-1" }),
            "spec.region",
        ),
        refused(
            "a-region-no-dashes",
            json!({ "region": "useast1" }),
            "spec.region",
        ),
        refused(
            "a-subnet-not-hex",
            json!({ "network": { "subnetIds": ["subnet-xyz12345"] } }),
            "spec.network.subnetIds[0]",
        ),
        refused(
            "a-subnet-no-prefix",
            json!({ "network": { "subnetIds": ["subnet-0123abcd", "0123abcd"] } }),
            "spec.network.subnetIds[1]",
        ),
        refused(
            "a-security-group-short",
            json!({ "network": { "securityGroupIds": ["sg-12"] } }),
            "spec.network.securityGroupIds[0]",
        ),
        refused(
            "a-task-role-short-account",
            json!({ "iam": { "taskRoleArn": "arn:aws:iam::123:role/worker" } }),
            "spec.iam.taskRoleArn",
        ),
        refused(
            "a-execution-role-not-arn",
            json!({ "iam": { "executionRoleArn": "worker-execution" } }),
            "spec.iam.executionRoleArn",
        ),
        refused(
            "a-profile-is-a-role",
            json!({ "iam": { "instanceProfileArn": "arn:aws:iam::123456789012:role/ecs" } }),
            "spec.iam.instanceProfileArn",
        ),
        // Capacity: instance types and purchase options.
        refused(
            "a-capacity-no-type-at-all",
            json!({ "instanceType": null, "capacity": { "instanceTypes": [] } }),
            "spec.capacity.instanceTypes",
        ),
        refused(
            "a-capacity-list-disagrees",
            json!({ "capacity": { "instanceTypes": ["m6i.large", "t3.medium"] } }),
            "spec.instanceType must be the first of spec.capacity.instanceTypes",
        ),
        refused(
            "a-capacity-mixed-architectures",
            json!({ "instanceType": null, "capacity": { "instanceTypes": ["m6i.large", "m7g.large"] } }),
            "spec.arm",
        ),
        refused("a-arm-on-an-x86-type", json!({ "arm": true }), "spec.arm"),
        refused(
            "a-capacity-type-twice",
            json!({ "instanceType": null, "capacity": { "instanceTypes": ["m6i.large", "m6i.large"] } }),
            "spec.capacity.instanceTypes",
        ),
        refused(
            "a-capacity-type-uppercase",
            json!({ "instanceType": null, "capacity": { "instanceTypes": ["M6i.large"] } }),
            "spec.capacity.instanceTypes[0]",
        ),
        refused(
            "a-capacity-21-types",
            json!({ "instanceType": null, "capacity": { "instanceTypes": (0..21).map(|i| format!("m{}.large", i + 1)).collect::<Vec<_>>() } }),
            "spec.capacity.instanceTypes",
        ),
        refused(
            "a-capacity-type-cheap",
            json!({ "capacity": { "type": "Cheap" } }),
            "spec.capacity.type",
        ),
        refused(
            "a-capacity-strategy-diversified",
            json!({ "capacity": { "type": "Spot", "spotAllocationStrategy": "diversified" } }),
            "spec.capacity.spotAllocationStrategy",
        ),
        refused(
            "a-root-volume-below-the-ami",
            json!({ "rootVolumeGiB": 8 }),
            "spec.rootVolumeGiB",
        ),
        refused(
            "a-root-volume-past-gp3",
            json!({ "rootVolumeGiB": 20000 }),
            "spec.rootVolumeGiB",
        ),
        // Budget.
        refused(
            "a-budget-negative",
            json!({ "budget": { "maxInstanceHoursPerDay": -1 } }),
            "spec.budget.maxInstanceHoursPerDay",
        ),
        refused(
            "a-budget-zero",
            json!({ "budget": { "maxInstanceHoursPerDay": 0 } }),
            "spec.budget.maxInstanceHoursPerDay",
        ),
        refused(
            "a-blackout-no-length",
            json!({ "budget": { "blackoutWindows": [{ "start": "0 9 * * 1-5", "durationMinutes": 0 }] } }),
            "spec.budget.blackoutWindows[0].durationMinutes",
        ),
        refused(
            "a-blackout-no-start",
            json!({ "budget": { "blackoutWindows": [{ "durationMinutes": 60 }] } }),
            "spec.budget.blackoutWindows[0].start",
        ),
        refused(
            "a-blackout-too-short-to-be-cron",
            json!({ "budget": { "blackoutWindows": [{ "start": "9am", "durationMinutes": 60 }] } }),
            "spec.budget.blackoutWindows[0].start",
        ),
        refused(
            "a-budget-on-exhausted-kill",
            json!({ "budget": { "maxInstanceHoursPerDay": 5, "onExhausted": "Kill" } }),
            "spec.budget.onExhausted",
        ),
        // Reserved tag keys.
        refused(
            "a-tag-aws-prefix",
            json!({ "tags": { "aws:foo": "x" } }),
            "spec.tags",
        ),
        refused(
            "a-tag-owner",
            json!({ "tags": { "ecsworker.dev/owner": "someone/else" } }),
            "spec.tags",
        ),
        // Bad enum values.
        refused(
            "a-ami-ubuntu",
            json!({ "amiFamily": "Ubuntu" }),
            "spec.amiFamily",
        ),
        refused(
            "a-deletion-nuke",
            json!({ "deletionPolicy": "Nuke" }),
            "spec.deletionPolicy",
        ),
        refused(
            "a-termination-kill",
            json!({ "worker": { "termination": "Kill" } }),
            "spec.worker.termination",
        ),
        refused(
            "a-handler-mode-grpc",
            json!({ "worker": { "handlerMode": "grpc" } }),
            "spec.worker.handlerMode",
        ),
        refused(
            "a-handler-url-without-http-mode",
            json!({ "worker": { "handlerMode": "stdio", "handlerUrl": "http://127.0.0.1:9000/" } }),
            "apply to handlerMode: http only",
        ),
        refused(
            "a-handler-url-https",
            json!({ "worker": { "handlerMode": "http", "handlerUrl": "https://example.com/" } }),
            "spec.worker.handlerUrl",
        ),
        // Bad credential references.
        refused(
            "a-secret-ref-empty-name",
            creds(""),
            "spec.credentials.secretRef.name",
        ),
        refused(
            "a-credentials-no-ref",
            json!({ "credentials": {} }),
            "spec.credentials.secretRef",
        ),
        // Per-team roles (spec.credentials.roleArn).
        refused(
            "a-credentials-both-kinds",
            json!({ "credentials": {
                "secretRef": { "name": "aws-keys" },
                "roleArn": "arn:aws:iam::111122223333:role/team-a"
            } }),
            "set exactly one of spec.credentials.secretRef (static keys) or spec.credentials.roleArn",
        ),
        refused(
            "a-role-arn-malformed",
            json!({ "credentials": { "roleArn": "arn:aws:iam::1111:user/team-a" } }),
            "spec.credentials.roleArn",
        ),
        refused(
            "a-role-session-too-short",
            json!({ "credentials": {
                "roleArn": "arn:aws:iam::111122223333:role/team-a",
                "sessionDurationSeconds": 899
            } }),
            "spec.credentials.sessionDurationSeconds",
        ),
        refused(
            "a-role-session-too-long",
            json!({ "credentials": {
                "roleArn": "arn:aws:iam::111122223333:role/team-a",
                "sessionDurationSeconds": 43201
            } }),
            "spec.credentials.sessionDurationSeconds",
        ),
        refused(
            "a-external-id-without-role",
            json!({ "credentials": {
                "secretRef": { "name": "aws-keys" },
                "externalId": "team-a-7f3c"
            } }),
            "apply to spec.credentials.roleArn only",
        ),
        // Unknown fields: pruned silently by default, refused under strict field validation.
        Case {
            name: "a-unknown-field",
            spec: json!({ "fooBar": 1 }),
            via: Via::CreateStrict,
            expect: Expect::Refused {
                code: 400,
                needle: "spec.fooBar",
            },
        },
        Case {
            name: "a-unknown-snake-case",
            spec: json!({ "memory_limit_mib": 512 }),
            via: Via::CreateStrict,
            expect: Expect::Refused {
                code: 400,
                needle: "spec.memory_limit_mib",
            },
        },
        Case {
            name: "a-unknown-nested",
            spec: json!({ "queue": { "visibilityTimeout": 60 } }),
            via: Via::CreateStrict,
            expect: Expect::Refused {
                code: 400,
                needle: "spec.queue.visibilityTimeout",
            },
        },
        // Secrets from AWS: only ARNs of Secrets Manager or SSM, in the region's partition,
        // under names of their own.
        refused(
            "a-secret-without-value-from",
            json!({ "secrets": [{ "name": "DB_PASSWORD" }] }),
            "spec.secrets[0].valueFrom",
        ),
        refused(
            "a-secret-malformed-arn",
            json!({ "secrets": [{ "name": "DB_PASSWORD", "valueFrom": "arn:aws:secretsmanager:us-east-1:1234:secret:db" }] }),
            "valueFrom must be a Secrets Manager secret ARN",
        ),
        refused(
            "a-secret-plain-value",
            json!({ "secrets": [{ "name": "DB_PASSWORD", "valueFrom": "hunter2" }] }),
            "valueFrom must be a Secrets Manager secret ARN",
        ),
        refused(
            "a-secret-wrong-service",
            json!({ "secrets": [{ "name": "DB_PASSWORD", "valueFrom": "arn:aws:s3:::bucket/db-password" }] }),
            "valueFrom must be a Secrets Manager secret ARN",
        ),
        refused(
            "a-secret-duplicate-name",
            json!({ "secrets": [
                { "name": "TOKEN", "valueFrom": "arn:aws:ssm:us-east-1:123456789012:parameter/a" },
                { "name": "TOKEN", "valueFrom": "arn:aws:ssm:us-east-1:123456789012:parameter/b" },
            ] }),
            "spec.secrets[1]",
        ),
        refused(
            "a-secret-reserved-name",
            json!({ "secrets": [{ "name": "WORKER_QUEUE_URL", "valueFrom": "arn:aws:ssm:us-east-1:123456789012:parameter/a" }] }),
            "reserved for the operator",
        ),
        refused(
            "a-secret-name-also-in-env",
            json!({
                "env": [{ "name": "TOKEN", "value": "x" }],
                "secrets": [{ "name": "TOKEN", "valueFrom": "arn:aws:ssm:us-east-1:123456789012:parameter/a" }],
            }),
            "a name is also in spec.env",
        ),
        refused(
            "a-secret-other-partition",
            json!({ "secrets": [{ "name": "TOKEN", "valueFrom": "arn:aws-cn:ssm:cn-north-1:123456789012:parameter/a" }] }),
            "partition of spec.region",
        ),
        refused(
            "a-secrets-too-many",
            json!({ "secrets": (0..21).map(|i| json!({ "name": format!("S{i}"), "valueFrom": format!("arn:aws:ssm:us-east-1:123456789012:parameter/p{i}") })).collect::<Vec<_>>() }),
            "spec.secrets",
        ),
        refused(
            "a-secrets-kms-not-a-key",
            json!({ "secretsKmsKeyArn": "arn:aws:kms:us-east-1:123456789012:alias/mine" }),
            "spec.secretsKmsKeyArn must be a KMS key ARN",
        ),
        // Bring your own queue (spec.queue.existingQueueArn).
        refused(
            "a-existing-queue-other-region",
            json!({ "queue": { "existingQueueArn": "arn:aws:sqs:eu-west-1:111122223333:orders" } }),
            "spec.queue.existingQueueArn must be a queue in spec.region",
        ),
        refused(
            "a-existing-queue-not-an-sqs-arn",
            json!({ "queue": { "existingQueueArn": "arn:aws:sns:us-east-1:111122223333:orders" } }),
            "spec.queue.existingQueueArn must be an SQS queue ARN",
        ),
        refused(
            "a-existing-queue-a-url",
            json!({ "queue": { "existingQueueArn": "https://sqs.us-east-1.amazonaws.com/111122223333/orders" } }),
            "spec.queue.existingQueueArn must be an SQS queue ARN",
        ),
        refused(
            "a-existing-queue-with-producers",
            json!({ "queue": { "existingQueueArn": "arn:aws:sqs:us-east-1:111122223333:orders", "allowSendFrom": [{ "snsTopicArn": "arn:aws:sns:us-east-1:111122223333:t" }] } }),
            "cannot be combined with spec.queue.allowSendFrom",
        ),
        refused(
            "a-existing-queue-with-dead-letter",
            json!({ "queue": { "existingQueueArn": "arn:aws:sqs:us-east-1:111122223333:orders", "deadLetter": { "maxReceiveCount": 3 } } }),
            "a customised spec.queue.deadLetter",
        ),
        // Updates of an accepted worker are checked like creations.
        Case {
            name: "a-update-memory",
            spec: json!({ "memoryLimitMiB": -1 }),
            via: Via::MergePatch("t-secret-missing"),
            expect: Expect::Refused {
                code: 422,
                needle: "spec.memoryLimitMiB",
            },
        },
        Case {
            name: "a-update-gpu-and-arm",
            spec: json!({ "gpu": true, "arm": true }),
            via: Via::MergePatch("t-secret-missing"),
            expect: Expect::Refused {
                code: 422,
                needle: "spec.gpu and spec.arm",
            },
        },
        Case {
            name: "a-update-both-schedules",
            spec: json!({ "schedule": "0 * * * *" }),
            via: Via::MergePatch("t-secret-missing"),
            expect: Expect::Refused {
                code: 422,
                needle: "spec.cronRate",
            },
        },
    ]
}

/// Sends one manifest; `Err` carries the API server's refusal.
async fn send(
    h: &Harness,
    api: &Api<DynamicObject>,
    case: &Case,
) -> anyhow::Result<Result<(), kube::Error>> {
    let result = match case.via {
        Via::Create => api
            .create(&PostParams::default(), &manifest(case.name, &case.spec)?)
            .await
            .map(drop),
        Via::CreateStrict => {
            let ar = ApiResource::erase::<EcsSelfTerminatingWorker>(&());
            let body = serde_json::to_vec(&manifest(case.name, &case.spec)?)?;
            let mut req = kube::core::Request::new(DynamicObject::url_path(&ar, Some(&h.ns)))
                .create(&PostParams::default(), body)?;
            let sep = if req.uri().query().is_some() {
                '&'
            } else {
                '?'
            };
            *req.uri_mut() = format!("{}{sep}fieldValidation=Strict", req.uri()).parse()?;
            h.client.request::<DynamicObject>(req).await.map(drop)
        }
        Via::MergePatch(target) => api
            .patch(
                target,
                &PatchParams::default(),
                &Patch::Merge(&json!({ "spec": case.spec })),
            )
            .await
            .map(drop),
    };
    Ok(result)
}

/// What is wrong with a worker that should be in its terminal condition (`None`: all good).
fn terminal_problem(w: &EcsSelfTerminatingWorker, reason: &str, needle: &str) -> Option<String> {
    let generation = w.metadata.generation;
    let Some(status) = w.status.as_ref() else {
        return Some("no status".into());
    };
    let Some(degraded) = w.condition(conditions::DEGRADED) else {
        return Some("no Degraded condition".into());
    };
    let ready = w.condition(conditions::READY);
    let problems = [
        (
            degraded.status != "True",
            format!("Degraded={}", degraded.status),
        ),
        (
            degraded.reason != reason,
            format!("Degraded reason {} (want {reason})", degraded.reason),
        ),
        (
            !degraded.message.contains(needle),
            format!("Degraded message {:?} lacks {needle:?}", degraded.message),
        ),
        (
            degraded.observed_generation != generation,
            format!(
                "Degraded observedGeneration {:?} != {generation:?}",
                degraded.observed_generation
            ),
        ),
        (
            ready.is_none_or(|c| c.status != "False"),
            format!("Ready {:?}", ready.map(|c| &c.status)),
        ),
        (
            status.phase != Some(Phase::Failed),
            format!("phase {:?}", status.phase),
        ),
        (
            status.observed_generation != generation,
            format!(
                "observedGeneration {:?} != {generation:?}",
                status.observed_generation
            ),
        ),
        (
            conditions::is_true(&status.conditions, conditions::PROVISIONED),
            "Provisioned=True".into(),
        ),
        (
            status.resources != Default::default(),
            format!("resources recorded: {:?}", status.resources),
        ),
    ];
    let found: Vec<String> = problems
        .into_iter()
        .filter_map(|(bad, what)| bad.then_some(what))
        .collect();
    (!found.is_empty()).then(|| found.join("; "))
}

#[tokio::test]
async fn bad_manifests_are_refused_or_terminal_without_aws_calls() -> anyhow::Result<()> {
    let started = Instant::now();
    let mut h = Harness::new("bad").await?;
    h.start_controller(Duration::from_secs(300));
    let dynamic: Api<DynamicObject> = Api::namespaced_with(
        h.client.clone(),
        &h.ns,
        &ApiResource::erase::<EcsSelfTerminatingWorker>(&()),
    );

    let secrets_api: Api<Secret> = Api::namespaced(h.client.clone(), &h.ns);
    for (name, data) in secrets() {
        let data: BTreeMap<String, ByteString> = data
            .into_iter()
            .map(|(k, v)| (k.to_string(), ByteString(v)))
            .collect();
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: Some(data),
            ..Default::default()
        };
        secrets_api.create(&PostParams::default(), &secret).await?;
    }

    let terminal = terminal_cases();
    let admission = admission_cases();
    let mut names = std::collections::BTreeSet::new();
    for c in terminal.iter().chain(&admission) {
        assert!(names.insert(c.name), "case name {} used twice", c.name);
    }

    // Accepted-but-invalid workers first, so the controller works while the rest is sent.
    let mut failures = Vec::new();
    for c in &terminal {
        if let Err(e) = send(&h, &dynamic, c).await? {
            failures.push(format!("{}: refused, expected accepted: {e}", c.name));
        }
    }

    for c in &admission {
        let Expect::Refused { code, needle } = c.expect else {
            unreachable!("admission cases expect a refusal")
        };
        match send(&h, &dynamic, c).await? {
            Ok(()) => failures.push(format!(
                "{}: accepted, expected {code} naming {needle}",
                c.name
            )),
            Err(kube::Error::Api(s)) => {
                if s.code != code || !s.message.contains(needle) {
                    failures.push(format!(
                        "{}: got {} {:?}, expected {code} naming {needle}",
                        c.name, s.code, s.message
                    ));
                }
            }
            Err(e) => failures.push(format!("{}: unexpected error {e}", c.name)),
        }
        if !matches!(c.via, Via::MergePatch(_)) && dynamic.get_opt(c.name).await?.is_some() {
            failures.push(format!("{}: a refused manifest was stored", c.name));
        }
    }
    assert!(failures.is_empty(), "admission:\n{}", failures.join("\n"));

    // The refused updates left their target as it was.
    let target = h.api.get("t-secret-missing").await?;
    assert_eq!(
        target.metadata.generation,
        Some(1),
        "a refused update changed the spec"
    );

    // Every accepted worker reaches its terminal condition.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let workers = loop {
        let workers: BTreeMap<String, EcsSelfTerminatingWorker> = h
            .api
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .map(|w| (w.metadata.name.clone().unwrap_or_default(), w))
            .collect();
        let pending: Vec<String> = terminal
            .iter()
            .filter_map(|c| {
                let Expect::Terminal { reason, needle } = c.expect else {
                    return None;
                };
                let problem = match workers.get(c.name) {
                    Some(w) => terminal_problem(w, reason, needle),
                    None => Some("missing".into()),
                };
                problem.map(|p| format!("{}: {p}", c.name))
            })
            .collect();
        if pending.is_empty() {
            break workers;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "not terminal after 60 s:\n{}",
            pending.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };

    assert_eq!(
        workers.len(),
        terminal.len(),
        "only the accepted manifests are stored: {:?}",
        workers.keys().collect::<Vec<_>>()
    );
    // kstatus-based tools (Flux, kpt) see each of them as Failed, not Current.
    let objects: Vec<&EcsSelfTerminatingWorker> = workers.values().collect();
    for (w, v) in objects.iter().zip(testbed::kstatus::compute(&objects)?) {
        assert_eq!(v.status, "Failed", "{:?}: {v:?}", w.metadata.name);
    }

    // Each has a Warning Event with the condition's reason and a note naming the field.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(h.client.clone(), &h.ns);
    let all_events = events.list(&Default::default()).await?.items;
    for c in &terminal {
        let Expect::Terminal { reason, needle } = c.expect else {
            continue;
        };
        let found = all_events.iter().any(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(c.name)
                && e.type_.as_deref() == Some("Warning")
                && e.reason.as_deref() == Some(reason)
                && e.note.as_deref().is_some_and(|n| n.contains(needle))
        });
        if !found {
            failures.push(format!(
                "{}: no Warning Event {reason} naming {needle:?}",
                c.name
            ));
        }
    }
    assert!(failures.is_empty(), "events:\n{}", failures.join("\n"));

    // Reconciling them again (no spec change) still touches no AWS API.
    let reconciles = h.metrics.reconciles.get();
    for c in &terminal {
        h.poke(c.name).await?;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while h.metrics.reconciles.get() < reconciles + terminal.len() as u64 {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the controller did not reconcile the poked workers"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The counter moves when a reconcile starts: let the last ones finish.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        h.aws_call_counts().is_empty(),
        "AWS calls for invalid workers: {:?}",
        h.aws_call_counts()
    );

    // No Secret value anywhere it must not be.
    let statuses = serde_json::to_string(&h.api.list(&Default::default()).await?.items)?;
    let events_text = serde_json::to_string(&events.list(&Default::default()).await?.items)?;
    let metrics_text = h.metrics.encode();
    for value in FAKE_VALUES {
        for (place, text) in [
            ("workers", &statuses),
            ("events", &events_text),
            ("metrics", &metrics_text),
        ] {
            assert!(
                !text.contains(value),
                "Secret value {value} found in {place}"
            );
        }
    }

    // Workers whose spec never validated are deleted without AWS calls (nothing was created).
    let invalid: Vec<&str> = terminal
        .iter()
        .filter(|c| {
            matches!(
                c.expect,
                Expect::Terminal {
                    reason: reason::INVALID_SPEC,
                    ..
                }
            )
        })
        .map(|c| c.name)
        .collect();
    for name in &invalid {
        h.api.delete(name, &DeleteParams::default()).await?;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left: Vec<String> = h
            .api
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .filter_map(|w| w.metadata.name)
            .filter(|n| invalid.contains(&n.as_str()))
            .collect();
        if left.is_empty() {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "not deleted: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        h.aws_call_counts().is_empty(),
        "AWS calls while deleting invalid workers: {:?}",
        h.aws_call_counts()
    );

    let refused = admission.len();
    println!(
        "bad manifests: {} cases, {refused} refused at admission, {} terminal, zero AWS calls, {:.1} s",
        refused + terminal.len(),
        terminal.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
