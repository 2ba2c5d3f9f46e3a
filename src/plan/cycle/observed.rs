//! What the AWS layer observed of one worker: its queue, its Auto Scaling group, its ECS
//! cluster's container instances and tasks, and its group's failed launches. Filled by
//! `aws::cycle::observe`; read by [`super::decide`].

use crate::api::conditions::reason;
use crate::api::{EcsSelfTerminatingWorkerSpec, EcsSelfTerminatingWorkerStatus, QueueDepth};
use jiff::Timestamp;

/// What the AWS layer saw of the worker's queue, Auto Scaling group and ECS cluster.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// Depth of the work queue.
    pub queue: QueueDepth,
    /// The worker's Auto Scaling group.
    pub group: GroupState,
    /// Container instances registered in the worker's cluster.
    pub container_instances: Vec<ContainerInstanceState>,
    /// Every task of the cluster that is not stopped, plus the stopped tasks of the current run.
    pub tasks: Vec<TaskState>,
    /// The group's failed launch activities since the current run's scale-up, newest first
    /// (read only while a run waits for its instances).
    pub launch_failures: Vec<LaunchFailure>,
}

/// A failed launch activity of the group (`DescribeScalingActivities`, status `Failed`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchFailure {
    /// Auto Scaling's status message, e.g. "We currently do not have sufficient g5.xlarge
    /// capacity in the Availability Zone you requested (us-east-1a)... Launching EC2
    /// instance failed."
    pub message: String,
}

impl LaunchFailure {
    /// Whether the failed launch was of Spot Instances ("Could not launch Spot Instances.").
    pub fn spot(&self) -> bool {
        self.message.contains("Spot Instance")
    }

    /// The condition reason for this failure, from the status messages AWS documents.
    /// <https://docs.aws.amazon.com/autoscaling/ec2/userguide/ts-as-capacity.html>
    pub fn reason(&self) -> &'static str {
        let m = self.message.to_ascii_lowercase();
        let quota = [
            "vcpu limit",
            "vcpulimitexceeded",
            "instancelimitexceeded",
            "maxspotinstancecountexceeded",
            "instance(s) are already running",
            "quota",
        ];
        let capacity = [
            "insufficientinstancecapacity",
            "do not have sufficient",
            "no spot capacity",
            "capacity-not-available",
            "unfulfillable",
        ];
        if quota.iter().any(|q| m.contains(q)) {
            reason::QUOTA_EXCEEDED
        } else if capacity.iter().any(|c| m.contains(c)) {
            reason::INSUFFICIENT_CAPACITY
        } else {
            reason::LAUNCH_FAILED
        }
    }
}

/// The worker's Auto Scaling group.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupState {
    /// Desired capacity.
    pub desired_capacity: i32,
    /// Member instances.
    pub instances: Vec<GroupInstance>,
    /// `OnDemandPercentageAboveBaseCapacity` of the group's mixed instances policy (absent
    /// without one): 0 while a Spot group launches Spot, 100 once a run fell back.
    pub on_demand_percentage: Option<i32>,
}

impl GroupState {
    /// No desired capacity and no member instance.
    pub fn is_empty(&self) -> bool {
        self.desired_capacity == 0 && self.instances.is_empty()
    }
}

/// Whether a view of the group that may be a few seconds old ([`crate::aws::groups`]) is
/// enough to decide, provided it shows the group [empty](GroupState::is_empty): with no run in
/// progress and fewer than `minMessages` visible, [`decide`] starts nothing and scales nothing
/// in with an empty group, whether a tick is due and however the run-now annotation stands.
/// Capacity that appeared in the view's last seconds (outside the operator: its own scale-ups
/// record a run first) is scaled in at the next pass. The controller uses the view only on the
/// passes it scheduled itself; a pass for a changed object reads the group itself.
pub fn idle_view_suffices(
    spec: &EcsSelfTerminatingWorkerSpec,
    status: &EcsSelfTerminatingWorkerStatus,
    queue: &QueueDepth,
) -> bool {
    status.current_run.is_none() && queue.visible < i64::from(spec.scaling.min_messages)
}

/// A member instance of the group.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupInstance {
    /// EC2 instance id.
    pub instance_id: String,
    /// Where it is in the group's lifecycle.
    pub lifecycle: Lifecycle,
}

/// The lifecycle states of a group member, as far as the cycle cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifecycle {
    /// Launching (`Pending`, `Pending:Wait`, `Pending:Proceed`).
    Pending,
    /// `InService`.
    InService,
    /// On its way out (`Terminating*`, `Terminated`, `Detaching`, `Detached`).
    Terminating,
    /// Anything else (`Standby`, `Quarantined`, warm pool states).
    Other,
}

impl Lifecycle {
    /// Maps an Auto Scaling `LifecycleState`.
    pub fn from_aws(state: &str) -> Lifecycle {
        match state {
            "InService" => Lifecycle::InService,
            s if s.starts_with("Pending") => Lifecycle::Pending,
            s if s.starts_with("Terminat") || s.starts_with("Detach") => Lifecycle::Terminating,
            _ => Lifecycle::Other,
        }
    }
}

/// A container instance of the worker's cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerInstanceState {
    /// Container instance ARN (what tasks point at).
    pub arn: String,
    /// The EC2 instance behind it.
    pub ec2_instance_id: Option<String>,
    /// Registration status.
    pub status: ContainerInstanceStatus,
    /// Running plus pending tasks, as ECS counts them.
    pub running_tasks: i32,
}

/// Registration status of a container instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerInstanceStatus {
    /// `ACTIVE`: can take tasks.
    Active,
    /// `DRAINING`.
    Draining,
    /// `INACTIVE`: deregistered.
    Inactive,
    /// `REGISTERING`, `DEREGISTERING`, `REGISTRATION_FAILED`.
    Other,
}

impl ContainerInstanceStatus {
    /// Maps an ECS container instance `status`.
    pub fn from_aws(status: &str) -> ContainerInstanceStatus {
        match status {
            "ACTIVE" => ContainerInstanceStatus::Active,
            "DRAINING" => ContainerInstanceStatus::Draining,
            "INACTIVE" => ContainerInstanceStatus::Inactive,
            _ => ContainerInstanceStatus::Other,
        }
    }
}

/// An ECS task of the worker's cluster.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskState {
    /// Task ARN.
    pub arn: String,
    /// The run id the task was started with.
    pub started_by: Option<String>,
    /// The container instance it is placed on.
    pub container_instance_arn: Option<String>,
    /// ECS `lastStatus` (`PROVISIONING` ... `RUNNING` ... `STOPPED`).
    pub last_status: String,
    /// Exit code of the worker container, once it exited.
    pub exit_code: Option<i32>,
    /// The exit code the worker recorded on its task (tag `ecsworker.dev/outcome`) before it
    /// removed its capacity. Terminating the instance can take the ECS agent down before it
    /// reports the container's exit, and ECS then stops the task without an exit code.
    pub recorded_exit_code: Option<i32>,
    /// Why ECS stopped the task.
    pub stop_reason: Option<String>,
    /// When the task started.
    pub started_at: Option<Timestamp>,
    /// When the task stopped.
    pub stopped_at: Option<Timestamp>,
    /// ECS was asked to stop it (`desiredStatus` STOPPED) and it has not stopped yet.
    pub stop_requested: bool,
}

impl TaskState {
    /// Not stopped yet.
    pub fn is_active(&self) -> bool {
        !matches!(self.last_status.as_str(), "STOPPED" | "DELETED")
    }

    /// The worker's exit code: the one ECS reported, else the one the worker recorded on the
    /// task before it removed its capacity.
    pub fn outcome(&self) -> Option<i32> {
        self.exit_code.or(self.recorded_exit_code)
    }
}
