//! Every numeric bound of the spec, once. The schema's `minimum`/`maximum` (and the two
//! `maxItems` below) are written from these constants and the controller's [`check`] applies
//! the same table, so a manifest the API server admits is one the controller accepts.

use super::EcsSelfTerminatingWorkerSpec as Spec;

/// The bounds of one integer field of the spec.
#[derive(Debug)]
pub struct Limit {
    /// Path under `spec`; `[]` marks a list whose every item has the field.
    pub field: &'static str,
    pub min: i64,
    pub max: i64,
    /// The field's values in a spec (none when unset).
    values: fn(&Spec) -> Vec<i64>,
}

/// A value outside its [`Limit`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spec.{field} must be between {min} and {max} (got {value})")]
pub struct OutOfRange {
    /// The field, with the list index for a list item.
    pub field: String,
    pub min: i64,
    pub max: i64,
    pub value: i64,
}

fn one(v: i32) -> Vec<i64> {
    vec![v.into()]
}

fn some(v: Option<i32>) -> Vec<i64> {
    v.map(i64::from).into_iter().collect()
}

/// At most this many instance types in `spec.capacity.instanceTypes` (a mixed instances
/// policy's overrides).
/// <https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_LaunchTemplate.html>
pub const MAX_INSTANCE_TYPES: usize = 20;
/// At most this many `spec.tags` (AWS allows 50 per resource; the operator sets its own).
pub const MAX_TAGS: usize = 40;

/// ECS's task memory bound (4 TiB): <https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_ContainerDefinition.html>
pub const MEMORY_LIMIT_MIB: Limit = Limit {
    field: "memoryLimitMiB",
    min: 1,
    max: 4_194_304,
    values: |s| one(s.memory_limit_mib),
};
/// gp3's size bounds: <https://docs.aws.amazon.com/ebs/latest/userguide/general-purpose.html>
pub const ROOT_VOLUME_GIB: Limit = Limit {
    field: "rootVolumeGiB",
    min: 30,
    max: 16384,
    values: |s| some(s.root_volume_gib),
};
pub const MAX_INSTANCES: Limit = Limit {
    field: "maxInstances",
    min: 1,
    max: 100,
    values: |s| one(s.max_instances),
};
pub const MAX_INSTANCE_HOURS_PER_DAY: Limit = Limit {
    field: "budget.maxInstanceHoursPerDay",
    min: 1,
    max: 100_000,
    values: |s| some(s.budget.as_ref().and_then(|b| b.max_instance_hours_per_day)),
};
/// At most a week.
pub const BLACKOUT_DURATION_MINUTES: Limit = Limit {
    field: "budget.blackoutWindows[].durationMinutes",
    min: 1,
    max: 10_080,
    values: |s| {
        let windows = s.budget.iter().flat_map(|b| &b.blackout_windows);
        windows.map(|w| w.duration_minutes.into()).collect()
    },
};
/// AssumeRole's `DurationSeconds`: <https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html>
pub const SESSION_DURATION_SECONDS: Limit = Limit {
    field: "credentials.sessionDurationSeconds",
    min: 900,
    max: 43200,
    values: |s| {
        some(
            s.credentials
                .as_ref()
                .and_then(|c| c.session_duration_seconds),
        )
    },
};
/// SQS's queue attribute bounds: <https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SetQueueAttributes.html>
pub const VISIBILITY_TIMEOUT_SECONDS: Limit = Limit {
    field: "queue.visibilityTimeoutSeconds",
    min: 0,
    max: 43200,
    values: |s| one(s.queue.visibility_timeout_seconds),
};
pub const MESSAGE_RETENTION_SECONDS: Limit = Limit {
    field: "queue.messageRetentionSeconds",
    min: 60,
    max: 1_209_600,
    values: |s| one(s.queue.message_retention_seconds),
};
pub const RECEIVE_WAIT_TIME_SECONDS: Limit = Limit {
    field: "queue.receiveWaitTimeSeconds",
    min: 1,
    max: 20,
    values: |s| one(s.queue.receive_wait_time_seconds),
};
pub const MAX_RECEIVE_COUNT: Limit = Limit {
    field: "queue.deadLetter.maxReceiveCount",
    min: 1,
    max: 1000,
    values: |s| one(s.queue.dead_letter.max_receive_count),
};
pub const MIN_MESSAGES: Limit = Limit {
    field: "scaling.minMessages",
    min: 1,
    max: 1_000_000,
    values: |s| one(s.scaling.min_messages),
};
pub const MESSAGES_PER_INSTANCE: Limit = Limit {
    field: "scaling.messagesPerInstance",
    min: 1,
    max: 1_000_000,
    values: |s| one(s.scaling.messages_per_instance),
};
pub const JOIN_TIMEOUT_SECONDS: Limit = Limit {
    field: "scaling.joinTimeoutSeconds",
    min: 30,
    max: 3600,
    values: |s| one(s.scaling.join_timeout_seconds),
};
pub const HANDLER_READY_TIMEOUT_SECONDS: Limit = Limit {
    field: "worker.handlerReadyTimeoutSeconds",
    min: 1,
    max: 86400,
    values: |s| some(s.worker.handler_ready_timeout_seconds),
};
pub const CONCURRENCY: Limit = Limit {
    field: "worker.concurrency",
    min: 1,
    max: 256,
    values: |s| one(s.worker.concurrency),
};
pub const EMPTY_RECEIVES: Limit = Limit {
    field: "worker.emptyReceives",
    min: 1,
    max: 100,
    values: |s| one(s.worker.empty_receives),
};

/// Every [`Limit`]; the schema must have exactly these integer bounds (tested).
pub const ALL: &[&Limit] = &[
    &MEMORY_LIMIT_MIB,
    &ROOT_VOLUME_GIB,
    &MAX_INSTANCES,
    &MAX_INSTANCE_HOURS_PER_DAY,
    &BLACKOUT_DURATION_MINUTES,
    &SESSION_DURATION_SECONDS,
    &VISIBILITY_TIMEOUT_SECONDS,
    &MESSAGE_RETENTION_SECONDS,
    &RECEIVE_WAIT_TIME_SECONDS,
    &MAX_RECEIVE_COUNT,
    &MIN_MESSAGES,
    &MESSAGES_PER_INSTANCE,
    &JOIN_TIMEOUT_SECONDS,
    &HANDLER_READY_TIMEOUT_SECONDS,
    &CONCURRENCY,
    &EMPTY_RECEIVES,
];

/// The first value of `spec` outside its limit, with the field that holds it.
pub fn check(spec: &Spec) -> Result<(), OutOfRange> {
    for limit in ALL {
        for (index, value) in (limit.values)(spec).into_iter().enumerate() {
            if value < limit.min || value > limit.max {
                return Err(OutOfRange {
                    field: limit.field.replacen("[]", &format!("[{index}]"), 1),
                    min: limit.min,
                    max: limit.max,
                    value,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::EcsSelfTerminatingWorker;
    use kube::CustomResourceExt;
    use serde_json::Value;

    /// Every integer bound in the generated schema, by spec path (`[]` for list items).
    fn schema_bounds(node: &Value, path: &str, out: &mut Vec<(String, i64, i64)>) {
        // schemars writes the bounds as JSON numbers of either kind.
        let bound = |key: &str| node.get(key).and_then(Value::as_f64).map(|b| b as i64);
        let (min, max) = (bound("minimum"), bound("maximum"));
        if min.is_some() || max.is_some() {
            let (min, max) = (min.unwrap_or(i64::MIN), max.unwrap_or(i64::MAX));
            out.push((path.to_string(), min, max));
        }
        for (key, child) in node
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let sep = if path.is_empty() { "" } else { "." };
            schema_bounds(child, &format!("{path}{sep}{key}"), out);
        }
        if let Some(items) = node.get("items") {
            schema_bounds(items, &format!("{path}[]"), out);
        }
    }

    #[test]
    fn the_schema_has_exactly_these_bounds() {
        let crd = serde_json::to_value(EcsSelfTerminatingWorker::crd()).expect("serializes");
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let mut found = Vec::new();
        schema_bounds(spec, "", &mut found);
        found.sort();
        let mut table: Vec<_> = ALL
            .iter()
            .map(|l| (l.field.to_string(), l.min, l.max))
            .collect();
        table.sort();
        assert_eq!(found, table);
        let max_items = |pointer: &str| spec.pointer(pointer).and_then(Value::as_u64);
        assert_eq!(
            max_items("/properties/capacity/properties/instanceTypes/maxItems"),
            Some(MAX_INSTANCE_TYPES as u64)
        );
        assert_eq!(
            max_items("/properties/tags/maxProperties"),
            Some(MAX_TAGS as u64)
        );
    }

    /// A spec with every bounded field set, each value valid.
    fn full() -> Value {
        let mut spec = crate::api::testing::minimal_spec_json();
        let extra = serde_json::json!({
            "rootVolumeGiB": 100, "maxInstances": 2,
            "budget": { "maxInstanceHoursPerDay": 10,
                "blackoutWindows": [{ "start": "0 9 * * 1-5", "durationMinutes": 60 }] },
            "credentials": { "roleArn": "arn:aws:iam::123456789012:role/w",
                "sessionDurationSeconds": 3600 },
            "queue": { "visibilityTimeoutSeconds": 60, "messageRetentionSeconds": 86400,
                "receiveWaitTimeSeconds": 20, "deadLetter": { "maxReceiveCount": 5 } },
            "scaling": { "minMessages": 1, "messagesPerInstance": 10, "joinTimeoutSeconds": 300 },
            "worker": { "handlerMode": "http", "handlerReadyTimeoutSeconds": 60,
                "concurrency": 2, "emptyReceives": 2 },
        });
        for (key, value) in extra.as_object().into_iter().flatten() {
            spec[key] = value.clone();
        }
        spec
    }

    /// `spec` with `field` (a [`Limit::field`]) set to `value` in its first list item.
    fn with(mut spec: Value, field: &str, value: i64) -> Spec {
        let pointer: String = field
            .split('.')
            .map(|part| match part.strip_suffix("[]") {
                Some(list) => format!("/{list}/0"),
                None => format!("/{part}"),
            })
            .collect();
        *spec
            .pointer_mut(&pointer)
            .unwrap_or_else(|| panic!("the full spec sets {field}")) = value.into();
        serde_json::from_value(spec).expect("a spec")
    }

    #[test]
    fn the_controller_applies_each_bound() {
        for limit in ALL {
            for ok in [limit.min, limit.max] {
                assert_eq!(check(&with(full(), limit.field, ok)), Ok(()), "{limit:?}");
            }
            for bad in [limit.min - 1, limit.max + 1] {
                let err = check(&with(full(), limit.field, bad)).expect_err(limit.field);
                assert_eq!(err.value, bad);
                assert_eq!(err.field, limit.field.replace("[]", "[0]"));
            }
        }
    }
}
