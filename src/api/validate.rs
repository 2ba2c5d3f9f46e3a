//! Checks only the controller can make (the schema cannot express them). A failure is terminal
//! for the current generation: the worker gets `Degraded/InvalidSpec` and no AWS call is made
//! until the spec changes.

use super::EcsSelfTerminatingWorkerSpec;
use super::limits::{MAX_INSTANCE_TYPES, MAX_TAGS, OutOfRange};
use crate::schedule::{Schedule, ScheduleError};

/// Why a spec cannot be reconciled; the message names the field to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSpec {
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    #[error(
        "spec.gpu and spec.arm cannot both be true: there is no GPU arm64 ECS-optimized AMI; choose one"
    )]
    GpuAndArm,
    #[error(
        "spec.instanceType or spec.capacity.instanceTypes: {0:?} is not FAMILY.SIZE (e.g. t3.medium, g4dn.xlarge, a1.medium) or is listed twice"
    )]
    InstanceType(String),
    #[error(
        "set spec.instanceType (one type) or spec.capacity.instanceTypes (several, in order of preference); when both are set, instanceType must be the list's first"
    )]
    InstanceTypes,
    #[error(
        "instance type {instance_type:?} is {} but spec.arm is {arm}: every instance type must match spec.arm",
        if *arm { "not a Graviton (arm64) type" } else { "a Graviton (arm64) type" }
    )]
    Architecture { instance_type: String, arm: bool },
    #[error(transparent)]
    OutOfRange(#[from] OutOfRange),
    #[error(
        "spec.env[{index}].name {name:?} is reserved for the operator (WORKER_*, AWS_*, ECS_*) or repeated"
    )]
    ReservedEnv { index: usize, name: String },
    #[error(
        "spec.tags[{0:?}]: AWS accepts at most 40 such tags here, keys of 1 to 128 and values of at most 256 characters, of letters, digits, spaces and _ . : / = + - @, and no key starting with aws: or ecsworker.dev/"
    )]
    Tag(String),
    #[error(
        "spec.budget.blackoutWindows[{index}].start {text:?} is not a 5-field cron expression (minute hour day-of-month month day-of-week): {reason}"
    )]
    Blackout {
        index: usize,
        text: String,
        reason: String,
    },
    /// The message names the field and the fix (see [`crate::plan::network::check_cidr`]).
    #[error("{0}")]
    Network(String),
}

/// `FAMILY.SIZE` of lowercase letters, digits and dashes, at most 64 characters.
fn instance_type_shape_ok(t: &str) -> bool {
    t.len() <= 64
        && t.split_once('.').is_some_and(|(family, size)| {
            !family.is_empty()
                && !size.is_empty()
                && family.starts_with(|c: char| c.is_ascii_lowercase())
                && family
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && size
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

/// A spec that passed [`validate`]: every bound of [`super::limits`] holds, the instance types
/// match the architecture, and the schedule is parsed. The run cycle takes only this.
#[derive(Clone, Debug)]
pub struct ValidatedSpec<'a> {
    spec: &'a EcsSelfTerminatingWorkerSpec,
    schedule: Schedule,
}

impl ValidatedSpec<'_> {
    /// When the cycle runs.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }
}

impl std::ops::Deref for ValidatedSpec<'_> {
    type Target = EcsSelfTerminatingWorkerSpec;

    fn deref(&self) -> &EcsSelfTerminatingWorkerSpec {
        self.spec
    }
}

/// Checks what the schema cannot, applies [`super::limits`] again (a spec may have been stored
/// before a bound existed), and parses the schedule.
pub fn validate(spec: &EcsSelfTerminatingWorkerSpec) -> Result<ValidatedSpec<'_>, InvalidSpec> {
    if spec.gpu && spec.arm {
        return Err(InvalidSpec::GpuAndArm);
    }
    let types = spec.instance_types();
    let listed = &spec.capacity.instance_types;
    let consistent = match (&spec.instance_type, listed.first()) {
        (Some(one), Some(first)) => one == first,
        (None, None) => false,
        _ => true,
    };
    if !consistent || types.is_empty() || listed.len() > MAX_INSTANCE_TYPES {
        return Err(InvalidSpec::InstanceTypes);
    }
    for (i, t) in types.iter().enumerate() {
        if !instance_type_shape_ok(t) || types[..i].contains(t) {
            return Err(InvalidSpec::InstanceType(t.to_string()));
        }
        if super::is_arm_instance_type(t) != spec.arm {
            return Err(InvalidSpec::Architecture {
                instance_type: t.to_string(),
                arm: spec.arm,
            });
        }
    }
    if let Some(budget) = &spec.budget {
        for (index, w) in budget.blackout_windows.iter().enumerate() {
            Schedule::parse_cron(&w.start).map_err(|e| InvalidSpec::Blackout {
                index,
                text: w.start.clone(),
                reason: match e {
                    ScheduleError::BadCron { reason, .. } => reason,
                    other => other.to_string(),
                },
            })?;
        }
    }
    super::limits::check(spec)?;
    let mut seen = std::collections::BTreeSet::new();
    for (index, e) in spec.env.iter().enumerate() {
        let reserved = ["WORKER_", "AWS_", "ECS_"]
            .iter()
            .any(|p| e.name.starts_with(p));
        if reserved || !seen.insert(e.name.as_str()) {
            return Err(InvalidSpec::ReservedEnv {
                index,
                name: e.name.clone(),
            });
        }
    }
    // What every service the operator tags accepts (the CRD's rules say the same).
    // <https://docs.aws.amazon.com/tag-editor/latest/userguide/tagging.html#tag-conventions>
    let tag_text = |t: &str| {
        t.chars()
            .all(|c| c.is_alphanumeric() || c.is_whitespace() || "_.:/=+-@".contains(c))
    };
    if let Some((key, _)) = spec.tags.iter().enumerate().find_map(|(i, (k, v))| {
        let bad = i >= MAX_TAGS
            || k.is_empty()
            || k.chars().count() > 128
            || v.chars().count() > 256
            || k.starts_with("aws:")
            || k.starts_with("ecsworker.dev/")
            || !tag_text(k)
            || !tag_text(v);
        bad.then_some((k, v))
    }) {
        return Err(InvalidSpec::Tag(key.clone()));
    }
    if let Some(net) = &spec.network
        && let Some(vpc) = &net.managed_vpc
    {
        crate::plan::network::check_cidr(&vpc.cidr_block).map_err(InvalidSpec::Network)?;
        if !net.subnet_ids.is_empty() || !net.security_group_ids.is_empty() {
            return Err(InvalidSpec::Network(
                "spec.network.managedVpc creates its own subnets and security group: remove spec.network.subnetIds and spec.network.securityGroupIds, or remove managedVpc to use them".into(),
            ));
        }
        if net.assign_public_ip == Some(false) {
            return Err(InvalidSpec::Network(
                "instances in spec.network.managedVpc need public IPv4 addresses (it has no NAT gateway): remove spec.network.assignPublicIp or set it to true".into(),
            ));
        }
    }
    let schedule = Schedule::from_spec(spec.cron_rate.as_deref(), spec.schedule.as_deref())?;
    Ok(ValidatedSpec { spec, schedule })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::EnvVar;
    use crate::api::testing::{minimal_spec as spec, spec_with};

    #[test]
    fn tags_aws_would_refuse_are_invalid() {
        for (key, value) in [
            ("aws:x", "v"),
            ("ecsworker.dev/owner", "v"),
            ("team", "a,b"),
            ("", "v"),
            ("k!", "v"),
        ] {
            let s = spec_with(serde_json::json!({"tags": {key: value}}));
            assert!(
                matches!(validate(&s), Err(InvalidSpec::Tag(_))),
                "{key:?}={value:?}"
            );
        }
        let long = spec_with(serde_json::json!({"tags": {"k": "v".repeat(257)}}));
        assert!(matches!(validate(&long), Err(InvalidSpec::Tag(_))));
        let fine = spec_with(
            serde_json::json!({"tags": {"team": "ml video", "cost-center": "a/b=c+d@e_f.g:h"}}),
        );
        assert!(validate(&fine).is_ok());
    }

    #[test]
    fn defaults_are_valid() {
        assert!(validate(&spec()).is_ok());
    }

    type Mutation = Box<dyn Fn(&mut EcsSelfTerminatingWorkerSpec)>;

    #[test]
    fn each_rule_names_its_field() {
        let cases: Vec<(Mutation, &str)> = vec![
            (
                Box::new(|s| {
                    s.gpu = true;
                    s.arm = true;
                }),
                "spec.gpu",
            ),
            (
                Box::new(|s| s.instance_type = Some("t3".into())),
                "spec.instanceType",
            ),
            (
                Box::new(|s| s.instance_type = Some("T3.medium".into())),
                "spec.instanceType",
            ),
            (
                Box::new(|s| s.capacity.instance_types = vec!["m6i.large".into()]),
                "instanceType must be the list's first",
            ),
            (
                Box::new(|s| {
                    s.instance_type = None;
                    s.capacity.instance_types = vec!["m6i.large".into(), "m6i.large".into()];
                }),
                "listed twice",
            ),
            (
                Box::new(|s| s.instance_type = None),
                "spec.capacity.instanceTypes",
            ),
            (
                Box::new(|s| {
                    s.instance_type = None;
                    s.capacity.instance_types = vec!["m6i.large".into(), "m7g.large".into()];
                }),
                "\"m7g.large\" is a Graviton (arm64) type but spec.arm is false",
            ),
            (
                Box::new(|s| s.arm = true),
                "is not a Graviton (arm64) type but spec.arm is true",
            ),
            (Box::new(|s| s.memory_limit_mib = 0), "spec.memoryLimitMiB"),
            (Box::new(|s| s.max_instances = 0), "spec.maxInstances"),
            (
                Box::new(|s| s.queue.receive_wait_time_seconds = 21),
                "spec.queue.receiveWaitTimeSeconds",
            ),
            (
                Box::new(|s| s.cron_rate = Some("7 hours".into())),
                "spec.cronRate",
            ),
            (
                Box::new(|s| {
                    s.cron_rate = None;
                    s.schedule = Some("* *".into());
                }),
                "spec.schedule",
            ),
            (
                Box::new(|s| s.schedule = Some("* * * * *".into())),
                "exactly one",
            ),
            (
                Box::new(|s| {
                    s.env = vec![EnvVar {
                        name: "AWS_SECRET_ACCESS_KEY".into(),
                        value: "x".into(),
                    }]
                }),
                "spec.env[0]",
            ),
            (
                Box::new(|s| {
                    s.env = vec![
                        EnvVar {
                            name: "A".into(),
                            value: "1".into(),
                        },
                        EnvVar {
                            name: "A".into(),
                            value: "2".into(),
                        },
                    ]
                }),
                "spec.env[1]",
            ),
            (
                Box::new(|s| {
                    s.network = Some(crate::api::NetworkSpec {
                        managed_vpc: Some(crate::api::ManagedVpcSpec {
                            cidr_block: "172.17.0.0/16".into(),
                        }),
                        ..Default::default()
                    })
                }),
                "spec.network.managedVpc.cidrBlock",
            ),
            (
                Box::new(|s| {
                    s.network = Some(crate::api::NetworkSpec {
                        managed_vpc: Some(Default::default()),
                        subnet_ids: vec!["subnet-0123456789abcdef0".into()],
                        ..Default::default()
                    })
                }),
                "spec.network.subnetIds",
            ),
            (
                Box::new(|s| {
                    s.network = Some(crate::api::NetworkSpec {
                        managed_vpc: Some(Default::default()),
                        assign_public_ip: Some(false),
                        ..Default::default()
                    })
                }),
                "spec.network.assignPublicIp",
            ),
        ];
        for (mutate, needle) in cases {
            let mut s = spec();
            mutate(&mut s);
            let err = validate(&s).expect_err(needle).to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }
}

/// Bounded fuzzing of what the controller does with any object the API server hands it:
/// deserializing the spec and validating it never panics, whatever the JSON. `PROPTEST_CASES`
/// raises the case count (see README.md).
#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::schedule::fuzz::config;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    /// Every key of the spec, at any depth.
    const KEYS: &[&str] = &[
        "instanceType",
        "gpu",
        "arm",
        "memoryLimitMiB",
        "region",
        "credentials",
        "secretRef",
        "roleArn",
        "externalId",
        "sessionDurationSeconds",
        "name",
        "cronRate",
        "schedule",
        "suspend",
        "image",
        "command",
        "env",
        "value",
        "queue",
        "visibilityTimeoutSeconds",
        "messageRetentionSeconds",
        "receiveWaitTimeSeconds",
        "deadLetter",
        "enabled",
        "maxReceiveCount",
        "scaling",
        "minMessages",
        "messagesPerInstance",
        "joinTimeoutSeconds",
        "maxInstances",
        "worker",
        "handler",
        "concurrency",
        "emptyReceives",
        "termination",
        "network",
        "subnetIds",
        "securityGroupIds",
        "assignPublicIp",
        "managedVpc",
        "cidrBlock",
        "amiFamily",
        "iam",
        "instanceProfileArn",
        "taskRoleArn",
        "executionRoleArn",
        "logRetentionDays",
        "tags",
        "deletionPolicy",
    ];

    /// Strings the spec's fields take, valid and nearly valid.
    const STRINGS: &[&str] = &[
        "t3.medium",
        "T3.medium",
        "t3.",
        ".medium",
        "g4dn.xlarge",
        "a1.medium",
        "1_MINUTE",
        "7_HOURS",
        "0_HOURS",
        "400_DAYS",
        "*/5 * * * *",
        "0 0 31 2 *",
        "* * * *",
        "us-east-1",
        "Instance",
        "Group",
        "None",
        "AmazonLinux2",
        "AmazonLinux2023",
        "Delete",
        "Retain",
        "DeleteWithMessages",
        "WORKER_X",
        "AWS_SECRET_ACCESS_KEY",
        "ECS_",
        "MODE",
        "",
        " ",
        "subnet-0123456789abcdef0",
        "sg-01234567",
        "arn:aws:iam::123456789012:role/r",
        "10.0.0.0/16",
        "172.17.0.0/16",
        "10.0.0.0/33",
        "10.0.0.1/28",
        "::/0",
        "300.1.2.3/8",
    ];

    fn number(n: i128) -> Value {
        if let Ok(i) = i64::try_from(n) {
            json!(i)
        } else if let Ok(u) = u64::try_from(n) {
            json!(u)
        } else {
            json!(n as f64)
        }
    }

    fn leaf() -> impl Strategy<Value = Value> {
        let edges: Vec<i128> = vec![
            0,
            1,
            -1,
            2,
            20,
            21,
            100,
            101,
            256,
            257,
            1000,
            1001,
            43200,
            43201,
            4_194_304,
            4_194_305,
            i32::MAX as i128,
            i32::MAX as i128 + 1,
            i32::MIN as i128,
            i32::MIN as i128 - 1,
            i64::MAX as i128,
            i64::MIN as i128,
            u64::MAX as i128,
        ];
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            prop::sample::select(edges).prop_map(number),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            prop::sample::select(STRINGS).prop_map(|s| json!(s)),
            "\\PC{0,12}".prop_map(Value::String),
        ]
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => prop::sample::select(KEYS).prop_map(str::to_owned),
            1 => "\\PC{0,8}",
        ]
    }

    /// Any JSON tree, its keys mostly the spec's own.
    fn tree() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(key(), inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A valid spec with every field set.
    fn full_spec() -> Value {
        json!({
            "instanceType": "g4dn.xlarge", "gpu": true, "arm": false, "memoryLimitMiB": 3072,
            "region": "us-east-1", "credentials": { "secretRef": { "name": "aws-keys" } },
            "schedule": "*/15 * * * *", "suspend": false, "image": "worker:1",
            "command": ["ecs-worker"], "env": [{ "name": "MODE", "value": "fast" }],
            "queue": { "visibilityTimeoutSeconds": 60, "messageRetentionSeconds": 86400,
                "receiveWaitTimeSeconds": 20,
                "deadLetter": { "enabled": true, "maxReceiveCount": 5 } },
            "scaling": { "minMessages": 1, "messagesPerInstance": 10, "joinTimeoutSeconds": 300 },
            "maxInstances": 3,
            "worker": { "handler": "python3 /app/handler.py", "concurrency": 2,
                "emptyReceives": 2, "termination": "Instance" },
            "network": { "subnetIds": ["subnet-0123456789abcdef0"],
                "securityGroupIds": ["sg-01234567"], "assignPublicIp": true },
            "amiFamily": "AmazonLinux2", "iam": { "taskRoleArn": "arn:aws:iam::123456789012:role/t" },
            "logRetentionDays": 30, "tags": { "team": "video" }, "deletionPolicy": "Retain",
        })
    }

    /// Paths to every node of a tree.
    fn paths(v: &Value, prefix: &mut Vec<Value>, out: &mut Vec<Vec<Value>>) {
        out.push(prefix.clone());
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    prefix.push(json!(k));
                    paths(child, prefix, out);
                    prefix.pop();
                }
            }
            Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    prefix.push(json!(i));
                    paths(child, prefix, out);
                    prefix.pop();
                }
            }
            _ => {}
        }
    }

    fn node<'a>(v: &'a mut Value, path: &[Value]) -> Option<&'a mut Value> {
        path.iter().try_fold(v, |v, seg| match (v, seg) {
            (Value::Object(m), Value::String(k)) => m.get_mut(k),
            (Value::Array(a), Value::Number(i)) => a.get_mut(i.as_u64()? as usize),
            _ => None,
        })
    }

    #[derive(Clone, Debug)]
    enum Mutation {
        Remove,
        Replace(Value),
    }

    /// Removes or replaces the node at `pick` (modulo the number of nodes).
    fn mutate(spec: &mut Value, pick: usize, mutation: Mutation) {
        let mut all = Vec::new();
        paths(spec, &mut Vec::new(), &mut all);
        let path = &all[pick % all.len()];
        match (mutation, path.split_last()) {
            (Mutation::Remove, Some((last, parent))) => match (node(spec, parent), last) {
                (Some(Value::Object(m)), Value::String(k)) => {
                    m.remove(k);
                }
                (Some(Value::Array(a)), Value::Number(i)) => {
                    let i = i.as_u64().unwrap_or(0) as usize;
                    if i < a.len() {
                        a.remove(i);
                    }
                }
                _ => {}
            },
            (Mutation::Replace(value), _) => {
                if let Some(target) = node(spec, path) {
                    *target = value;
                }
            }
            (Mutation::Remove, None) => *spec = json!({}),
        }
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            1 => Just(Mutation::Remove),
            3 => leaf().prop_map(Mutation::Replace),
            1 => tree().prop_map(Mutation::Replace),
        ]
    }

    /// What the controller does with a spec: deserialize, validate, compute the next tick.
    fn controller_view(spec: Value) -> Result<(), TestCaseError> {
        let Ok(spec) = serde_json::from_value::<EcsSelfTerminatingWorkerSpec>(spec) else {
            return Ok(());
        };
        // What the operator reads back is what was written.
        let again: EcsSelfTerminatingWorkerSpec =
            serde_json::from_value(serde_json::to_value(&spec).expect("serializes"))
                .expect("its own serialization deserializes");
        prop_assert_eq!(&again, &spec);
        match validate(&spec) {
            Ok(valid) => {
                let schedule = valid.schedule();
                prop_assert!(!(spec.gpu && spec.arm));
                prop_assert!(spec.instance_types().iter().all(|t| t.contains('.')));
                prop_assert!(
                    spec.instance_types()
                        .iter()
                        .all(|t| crate::api::is_arm_instance_type(t) == spec.arm)
                );
                let now = jiff::Timestamp::from_second(1_800_000_000).expect("valid");
                prop_assert!(schedule.next_after(now).is_some_and(|next| next > now));
            }
            Err(e) => prop_assert!(e.to_string().contains("spec."), "{}", e),
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(config(1000))]

        #[test]
        fn any_json_tree_is_validated_without_panic(spec in tree()) {
            controller_view(spec)?;
        }

        #[test]
        fn mutated_valid_specs_are_validated_without_panic(
            mutations in prop::collection::vec((any::<usize>(), mutation()), 1..5),
        ) {
            let mut spec = full_spec();
            for (pick, m) in mutations {
                mutate(&mut spec, pick, m);
            }
            controller_view(spec)?;
        }
    }

    proptest! {
        // Wide objects of deep trees: the slowest property, so fewer cases.
        #![proptest_config(config(250))]

        #[test]
        fn any_object_with_spec_keys_is_validated_without_panic(
            fields in prop::collection::btree_map(prop::sample::select(KEYS), tree(), 0..12),
        ) {
            let spec = Value::Object(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect());
            controller_view(spec)?;
        }
    }

    #[test]
    fn the_full_spec_is_valid() {
        let spec: EcsSelfTerminatingWorkerSpec =
            serde_json::from_value(full_spec()).expect("deserializes");
        assert!(validate(&spec).is_ok(), "{:?}", validate(&spec));
    }
}
