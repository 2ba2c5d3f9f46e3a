//! Condition types and reasons (stable API: users and tools match on them), the one helper
//! that updates a condition list the Kubernetes way, and the kstatus pair derived from `Ready`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The worker is provisioned and able to run its cycle.
pub const READY: &str = "Ready";
/// Every AWS resource exists and matches the spec.
pub const PROVISIONED: &str = "Provisioned";
/// Something needs attention (invalid spec, AWS error, a run that timed out).
pub const DEGRADED: &str = "Degraded";
/// kstatus: the controller is still acting on the spec (provisioning, retrying, deleting).
/// <https://github.com/kubernetes-sigs/cli-utils/blob/master/pkg/kstatus/README.md>
pub const RECONCILING: &str = "Reconciling";
/// kstatus: the controller cannot make progress until a person acts.
pub const STALLED: &str = "Stalled";

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
    /// `spec.queue.existingQueueArn` names a queue that does not exist or cannot be read.
    pub const QUEUE_NOT_FOUND: &str = "QueueNotFound";
    /// AWS is still propagating a resource created moments ago; retried shortly.
    pub const PROPAGATING: &str = "Propagating";
    pub const AWS_UNAVAILABLE: &str = "AwsUnavailable";
    pub const AWS_ERROR: &str = "AwsError";
    pub const SCALE_UP_TIMED_OUT: &str = "ScaleUpTimedOut";
    /// Auto Scaling could not launch a run's instances: no capacity for the types (Spot or
    /// On-Demand) in the group's zones.
    pub const INSUFFICIENT_CAPACITY: &str = "InsufficientCapacity";
    /// A vCPU or instance quota of the account stopped a run's launch.
    pub const QUOTA_EXCEEDED: &str = "QuotaExceeded";
    /// Any other launch failure (an invalid parameter, an AMI that does not fit the type).
    pub const LAUNCH_FAILED: &str = "LaunchFailed";
    /// `spec.budget.maxInstanceHoursPerDay` is used up: no run starts until it resets.
    pub const BUDGET_EXHAUSTED: &str = "BudgetExhausted";
    pub const RUN_FAILED: &str = "RunFailed";
    pub const AS_EXPECTED: &str = "AsExpected";
    pub const DELETING: &str = "Deleting";
    pub const QUEUE_RETAINED: &str = "QueueRetained";

    /// Degraded reasons the run cycle sets and clears (a run's outcome), as opposed to
    /// provisioning and spec problems.
    pub const RUN_CYCLE: [&str; 6] = [
        SCALE_UP_TIMED_OUT,
        INSUFFICIENT_CAPACITY,
        QUOTA_EXCEEDED,
        LAUNCH_FAILED,
        BUDGET_EXHAUSTED,
        RUN_FAILED,
    ];

    /// Reasons no retry can clear: the spec, a Secret or AWS permissions must change.
    pub const TERMINAL: [&str; 8] = [
        INVALID_SPEC,
        SECRET_NOT_FOUND,
        SECRET_INVALID,
        ACCESS_DENIED,
        INVALID_PARAMETER,
        NO_NETWORK,
        NAME_CONFLICT,
        QUEUE_NOT_FOUND,
    ];
}

/// Event reasons for run-cycle transitions.
pub mod event {
    pub const SCALING_UP: &str = "ScalingUp";
    pub const INSTANCE_JOINED: &str = "InstanceJoined";
    pub const TASK_STARTED: &str = "TaskStarted";
    pub const TASK_STOPPED: &str = "TaskStopped";
    /// A run's task is stopped because its container instance is draining (Spot interruption
    /// notice or scale-in).
    pub const INSTANCE_DRAINING: &str = "InstanceDraining";
    pub const SCALED_TO_ZERO: &str = "ScaledToZero";
    pub const SCALE_UP_TIMED_OUT: &str = "ScaleUpTimedOut";
    pub const INSUFFICIENT_CAPACITY: &str = "InsufficientCapacity";
    pub const QUOTA_EXCEEDED: &str = "QuotaExceeded";
    pub const LAUNCH_FAILED: &str = "LaunchFailed";
    /// `SpotWithFallback`: Spot capacity could not be had; the run continues On-Demand.
    pub const ON_DEMAND_FALLBACK: &str = "OnDemandFallback";
    /// `spec.budget`: a run was due but the budget is used up (or a run going was stopped).
    pub const BUDGET_EXHAUSTED: &str = "BudgetExhausted";
    /// `spec.budget.blackoutWindows`: a run was due inside a window.
    pub const BLACKOUT_WINDOW: &str = "BlackoutWindow";
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

/// Sets `Reconciling` and `Stalled` from `Ready`, the way kstatus reads them: `Stalled` when
/// `Ready` is false for a terminal reason, `Reconciling` when it is false for any other reason
/// (or absent), both false once `Ready` is true.
pub fn summarize(conditions: &mut Vec<Condition>, generation: Option<i64>, now: Time) {
    let ready = conditions
        .iter()
        .find(|c| c.type_ == READY)
        .map(|c| (c.status == "True", c.reason.clone(), c.message.clone()));
    let (reconciling, stalled) = match ready {
        Some((true, ..)) => (None, None),
        Some((false, r, m)) if reason::TERMINAL.contains(&r.as_str()) => (None, Some((r, m))),
        Some((false, r, m)) => (Some((r, m)), None),
        None => (
            Some((
                reason::PROVISIONING.to_string(),
                "not reconciled yet".to_string(),
            )),
            None,
        ),
    };
    for (type_, value) in [(RECONCILING, reconciling), (STALLED, stalled)] {
        let (status, reason, message) = match value {
            Some((r, m)) => (true, r, m),
            None => (false, reason::AS_EXPECTED.to_string(), String::new()),
        };
        set(
            conditions,
            type_,
            status,
            &reason,
            message,
            generation,
            now.clone(),
        );
    }
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

    #[test]
    fn summarize_derives_the_kstatus_pair_from_ready() {
        let mut c = Vec::new();
        summarize(&mut c, Some(1), t(1));
        assert!(is_true(&c, RECONCILING) && !is_true(&c, STALLED));

        set(
            &mut c,
            READY,
            false,
            reason::PROPAGATING,
            "wait",
            Some(1),
            t(2),
        );
        summarize(&mut c, Some(1), t(2));
        assert!(is_true(&c, RECONCILING) && !is_true(&c, STALLED));

        for terminal in reason::TERMINAL {
            set(&mut c, READY, false, terminal, "fix it", Some(2), t(3));
            summarize(&mut c, Some(2), t(3));
            assert!(!is_true(&c, RECONCILING), "{terminal}");
            let stalled = c.iter().find(|c| c.type_ == STALLED).expect("stalled");
            assert_eq!(
                (
                    stalled.status.as_str(),
                    stalled.reason.as_str(),
                    stalled.message.as_str()
                ),
                ("True", terminal, "fix it")
            );
        }

        set(
            &mut c,
            READY,
            true,
            reason::PROVISIONED,
            "ok",
            Some(2),
            t(4),
        );
        summarize(&mut c, Some(2), t(4));
        assert!(!is_true(&c, RECONCILING) && !is_true(&c, STALLED));
        assert_eq!(c.len(), 3, "one entry per type: {c:?}");
    }
}
