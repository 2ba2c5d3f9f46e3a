//! Checks only the controller can make (the schema cannot express them). A failure is terminal
//! for the current generation: the worker gets `Degraded/InvalidSpec` and no AWS call is made
//! until the spec changes.

use super::EcsSelfTerminatingWorkerSpec;
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
    #[error("spec.instanceType {0:?} is not FAMILY.SIZE (e.g. t3.medium, g4dn.xlarge, a1.medium)")]
    InstanceType(String),
    #[error("spec.{field} must be {rule} (got {value})")]
    OutOfRange {
        field: &'static str,
        rule: &'static str,
        value: i64,
    },
    #[error(
        "spec.env[{index}].name {name:?} is reserved for the operator (WORKER_*, AWS_*, ECS_*) or repeated"
    )]
    ReservedEnv { index: usize, name: String },
}

/// Validates a spec and returns its parsed schedule.
pub fn validate(spec: &EcsSelfTerminatingWorkerSpec) -> Result<Schedule, InvalidSpec> {
    if spec.gpu && spec.arm {
        return Err(InvalidSpec::GpuAndArm);
    }
    let shape_ok = spec
        .instance_type
        .split_once('.')
        .is_some_and(|(family, size)| {
            !family.is_empty()
                && !size.is_empty()
                && family.starts_with(|c: char| c.is_ascii_lowercase())
                && family
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && size
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        });
    if !shape_ok || spec.instance_type.len() > 64 {
        return Err(InvalidSpec::InstanceType(spec.instance_type.clone()));
    }
    let ranges: [(&'static str, &'static str, i64, i64, i64); 9] = [
        (
            "memoryLimitMiB",
            "between 1 and 4194304",
            spec.memory_limit_mib.into(),
            1,
            4_194_304,
        ),
        (
            "maxInstances",
            "between 1 and 100",
            spec.max_instances.into(),
            1,
            100,
        ),
        (
            "queue.visibilityTimeoutSeconds",
            "between 0 and 43200",
            spec.queue.visibility_timeout_seconds.into(),
            0,
            43200,
        ),
        (
            "queue.messageRetentionSeconds",
            "between 60 and 1209600",
            spec.queue.message_retention_seconds.into(),
            60,
            1_209_600,
        ),
        (
            "queue.receiveWaitTimeSeconds",
            "between 0 and 20",
            spec.queue.receive_wait_time_seconds.into(),
            0,
            20,
        ),
        (
            "queue.deadLetter.maxReceiveCount",
            "between 1 and 1000",
            spec.queue.dead_letter.max_receive_count.into(),
            1,
            1000,
        ),
        (
            "scaling.minMessages",
            "at least 1",
            spec.scaling.min_messages.into(),
            1,
            1_000_000,
        ),
        (
            "scaling.messagesPerInstance",
            "at least 1",
            spec.scaling.messages_per_instance.into(),
            1,
            1_000_000,
        ),
        (
            "worker.concurrency",
            "between 1 and 256",
            spec.worker.concurrency.into(),
            1,
            256,
        ),
    ];
    for (field, rule, value, min, max) in ranges {
        if value < min || value > max {
            return Err(InvalidSpec::OutOfRange { field, rule, value });
        }
    }
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
    Ok(Schedule::from_spec(
        spec.cron_rate.as_deref(),
        spec.schedule.as_deref(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::EnvVar;

    fn spec() -> EcsSelfTerminatingWorkerSpec {
        serde_json::from_value(serde_json::json!({
            "instanceType": "t3.medium", "memoryLimitMiB": 512, "region": "us-east-1",
            "image": "worker:1", "cronRate": "1_MINUTE"
        }))
        .expect("valid spec")
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
                Box::new(|s| s.instance_type = "t3".into()),
                "spec.instanceType",
            ),
            (
                Box::new(|s| s.instance_type = "T3.medium".into()),
                "spec.instanceType",
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
        ];
        for (mutate, needle) in cases {
            let mut s = spec();
            mutate(&mut s);
            let err = validate(&s).expect_err(needle).to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }
}
