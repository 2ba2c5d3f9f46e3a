//! Condition types and reasons (stable API: users and tools match on them), and the one helper
//! that updates a condition list the Kubernetes way.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The worker is provisioned and able to run its cycle.
pub const READY: &str = "Ready";
/// Every AWS resource exists and matches the spec.
pub const PROVISIONED: &str = "Provisioned";
/// Something needs attention (invalid spec, AWS error, a run that timed out).
pub const DEGRADED: &str = "Degraded";

/// Condition reasons.
pub mod reason {
    pub const PROVISIONED: &str = "Provisioned";
    pub const PROVISIONING: &str = "Provisioning";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    pub const SECRET_INVALID: &str = "SecretInvalid";
    pub const ACCESS_DENIED: &str = "AccessDenied";
    pub const INVALID_PARAMETER: &str = "InvalidParameter";
    pub const NO_NETWORK: &str = "NoNetwork";
    /// A resource of the worker's name exists and is not this worker's.
    pub const NAME_CONFLICT: &str = "NameConflict";
    /// AWS is still propagating a resource created moments ago; retried shortly.
    pub const PROPAGATING: &str = "Propagating";
    pub const AWS_UNAVAILABLE: &str = "AwsUnavailable";
    pub const AWS_ERROR: &str = "AwsError";
    pub const SCALE_UP_TIMED_OUT: &str = "ScaleUpTimedOut";
    pub const RUN_FAILED: &str = "RunFailed";
    pub const AS_EXPECTED: &str = "AsExpected";
    pub const DELETING: &str = "Deleting";
    pub const QUEUE_RETAINED: &str = "QueueRetained";
}

/// Event reasons for run-cycle transitions.
pub mod event {
    pub const SCALING_UP: &str = "ScalingUp";
    pub const INSTANCE_JOINED: &str = "InstanceJoined";
    pub const TASK_STARTED: &str = "TaskStarted";
    pub const TASK_STOPPED: &str = "TaskStopped";
    pub const SCALED_TO_ZERO: &str = "ScaledToZero";
    pub const SCALE_UP_TIMED_OUT: &str = "ScaleUpTimedOut";
    pub const IDLE_INSTANCE_SCALED_IN: &str = "IdleInstanceScaledIn";
    pub const PROVISIONED: &str = "Provisioned";
    pub const REPAIRED: &str = "Repaired";
    pub const QUEUE_RETAINED: &str = "QueueRetained";
    pub const DELETED: &str = "Deleted";
    pub const TRIGGERED: &str = "Triggered";
}

/// Sets a condition, keeping `lastTransitionTime` when the status does not change.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Time,
) {
    let status = if status { "True" } else { "False" }.to_string();
    let message = message.into();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now;
            }
            c.status = status;
            c.reason = reason.to_string();
            c.message = message;
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_string(),
            status,
            reason: reason.to_string(),
            message,
            observed_generation: generation,
            last_transition_time: now,
        }),
    }
}

/// Whether a condition is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Time {
        Time(jiff::Timestamp::from_second(secs).expect("valid"))
    }

    #[test]
    fn transition_time_survives_unchanged_status() {
        let mut c = Vec::new();
        set(&mut c, READY, true, "A", "m1", Some(1), t(10));
        set(&mut c, READY, true, "B", "m2", Some(2), t(20));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].last_transition_time, t(10));
        assert_eq!(c[0].reason, "B");
        set(&mut c, READY, false, "C", "m3", Some(2), t(30));
        assert_eq!(c[0].last_transition_time, t(30));
        assert!(!is_true(&c, READY));
    }
}
