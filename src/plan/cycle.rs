//! The run cycle as one pure function.
//!
//! [`decide`] takes what one reconcile knows — the spec, the parsed schedule, the status written
//! last time, what the AWS layer just [`Observed`], the run-now annotation and the time — and
//! returns a [`Decision`]: the AWS [`Action`]s to execute, the Events to record and the cycle's
//! status fields (phase, current and last run, next tick, handled trigger, Degraded condition,
//! requeue delay).
//!
//! This module owns every rule of the cycle: when a run starts, how many instances it asks for,
//! how long it waits for them, when the worker tasks start, when an instance is scaled in and how
//! a finished run is recorded. It reads no clock and calls nothing: the AWS layer fills
//! [`Observed`] and executes the actions; the controller writes the status and the Events.

use crate::api::conditions::{event, reason};
use crate::api::{
    EcsSelfTerminatingWorkerSpec, EcsSelfTerminatingWorkerStatus, Phase, QueueDepth, RunOutcome,
    RunRecord, RunStatus,
};
use crate::schedule::Schedule;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::collections::BTreeSet;
use std::time::Duration;

/// Requeue delay while a run is in progress or capacity is up.
pub const FAST_REQUEUE: Duration = Duration::from_secs(2);
/// Shortest requeue delay of an idle worker.
pub const MIN_REQUEUE: Duration = Duration::from_secs(1);
/// Longest requeue delay of an idle worker.
pub const MAX_REQUEUE: Duration = Duration::from_secs(300);
/// How long RunTask's tasks may take to show in the cluster before RunTask is issued again
/// (with the same client token, so nothing is started twice); also how long an instance may
/// stay without a task once a run's tasks started.
pub const RUN_TASK_GRACE: SignedDuration = SignedDuration::from_secs(15);

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
}

/// The worker's Auto Scaling group.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupState {
    /// Desired capacity.
    pub desired_capacity: i32,
    /// Member instances.
    pub instances: Vec<GroupInstance>,
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
    /// Why ECS stopped the task.
    pub stop_reason: Option<String>,
    /// When the task started.
    pub started_at: Option<Timestamp>,
    /// When the task stopped.
    pub stopped_at: Option<Timestamp>,
}

impl TaskState {
    /// Not stopped yet.
    pub fn is_active(&self) -> bool {
        !matches!(self.last_status.as_str(), "STOPPED" | "DELETED")
    }
}

/// Everything one decision depends on.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    pub spec: &'a EcsSelfTerminatingWorkerSpec,
    pub schedule: &'a Schedule,
    pub status: &'a EcsSelfTerminatingWorkerStatus,
    pub observed: &'a Observed,
    /// Value of the run-now annotation, when present.
    pub trigger: Option<&'a str>,
    pub now: Timestamp,
}

/// An AWS write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// `SetDesiredCapacity` of the group.
    SetDesiredCapacity(i32),
    /// `TerminateInstanceInAutoScalingGroup` with `ShouldDecrementDesiredCapacity=true`.
    TerminateInstance { instance_id: String },
    /// `RunTask` of `count` worker tasks with `startedBy` and `clientToken` set to `run_id`.
    RunTasks { run_id: String, count: i32 },
}

/// A Kubernetes Event to record on the worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CycleEvent {
    pub warning: bool,
    /// One of [`crate::api::conditions::event`].
    pub reason: &'static str,
    pub message: String,
}

/// A new value for a condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionUpdate {
    pub status: bool,
    /// One of [`crate::api::conditions::reason`].
    pub reason: &'static str,
    pub message: String,
}

/// What to do and what to write after one reconcile.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// AWS writes, in order.
    pub actions: Vec<Action>,
    /// Events to record.
    pub events: Vec<CycleEvent>,
    /// `status.phase`.
    pub phase: Phase,
    /// `status.currentRun`.
    pub current_run: Option<RunStatus>,
    /// `status.lastRun` (the status's value unless a run ended).
    pub last_run: Option<RunRecord>,
    /// `status.nextRunTime`.
    pub next_run_time: Option<Timestamp>,
    /// `status.lastTrigger`.
    pub last_trigger: Option<String>,
    /// The `Degraded` condition, set when a run ends; unchanged when `None`.
    pub degraded: Option<ConditionUpdate>,
    /// When to reconcile again.
    pub requeue_after: Duration,
}

/// Decides the next step of the run cycle.
///
/// The worker's ECS cluster and Auto Scaling group are its own, so everything in them belongs to
/// the cycle. All cycle state comes from AWS and the status, and the status may be behind AWS
/// (the operator stopped after acting, before writing status) or ahead of it (status written,
/// action not executed): every rule below converges from both without starting anything twice.
///
/// Words used below:
/// - *joined*: an instance that is `InService` in the group and has an `ACTIVE` container
///   instance in the cluster; *free* when it also runs no task.
/// - *active task*: a task not `STOPPED`; a *busy* instance hosts one.
/// - *capacity is up*: the group's desired capacity is above 0 (members of a group already at 0
///   are on their way out and are left to the group).
/// - a run's id is `run-<unix seconds of its scale-up>`; its tasks carry it as `startedBy` and
///   RunTask uses it as client token, so issuing RunTask again starts nothing new.
///
/// **Schedule.** `nextRunTime` is set on the first reconcile, reset when the schedule changed,
/// and advanced when a due tick is handled. A due tick or a new run-now value that comes during a
/// run waits until the run ends.
///
/// **No run in progress.**
/// 1. Active tasks of a run the status does not know (it is behind): the run is adopted and
///    followed from where it is.
/// 2. Suspended: no run starts; a new run-now value is acknowledged with an Event saying so;
///    capacity that is up is scaled to 0.
/// 3. At least `minMessages` visible, and a tick is due, the run-now annotation has a new value,
///    or capacity is already up (paid for: no reason to wait for the tick): a run starts with
///    `ceil(visible / messagesPerInstance)` instances, at least 1, at least the capacity already
///    up, at most `maxInstances` (ScalingUp).
/// 4. Otherwise capacity that is up is scaled to 0 (IdleInstanceScaledIn): an instance is never
///    left up without work. An idle worker's tick does nothing at all.
///
/// **Scaling up** (a run with no task seen yet).
/// - As many free joined instances as the run asked for: RunTask for that many tasks
///   (InstanceJoined, TaskStarted).
/// - Still waiting and the desired capacity is below the run's: it is set again (status was
///   ahead).
/// - `joinTimeoutSeconds` after scale-up with some joined: the run goes on with those (RunTask
///   for that many; every member that did not join is terminated; Warning ScaleUpTimedOut). With
///   none joined: capacity back to 0, run recorded as ScaleUpTimedOut, Warning Event, Degraded.
/// - RunTask issued but no task seen: issued again after 15 s (same client token); still none
///   `joinTimeoutSeconds` after RunTask: run recorded as Failed, capacity back to 0.
///
/// RunTask never asks for more tasks than free joined instances, nor more than `maxInstances`.
///
/// **Running** (tasks of the run seen).
/// - An instance that runs no task is terminated (decrementing the desired capacity) once its
///   task of the run stopped, or once the 15 s start grace passed (no task of the run will be
///   placed on it any more). The worker normally removes its own instance; the operator finishes
///   the job. Busy instances are never touched, and nothing is terminated while the instance of
///   an active task is unknown.
/// - Every task of the run stopped: the run is recorded in `lastRun` (Succeeded when every exit
///   code is 0, else Failed with the highest exit code and the failing task's stop reason;
///   messages before and after), TaskStopped (Warning when failed), Degraded updated, and when
///   nothing runs any more the capacity is set to 0 (ScaledToZero).
///
/// Desired capacity is only ever lowered when no task is active anywhere in the cluster; with
/// tasks active, capacity goes down one named idle instance at a time.
///
/// **Phase**: ScalingUp while a run waits for instances, Running once its tasks started;
/// otherwise Suspended when suspended, ScalingDown while instances remain, else Idle.
/// **Requeue**: 2 s while a run is in progress or anything is up, else at the next tick
/// (between 1 s and 5 min).
pub fn decide(input: &Input) -> Decision {
    let mut cycle = Cycle::new(input);
    match cycle.current_run() {
        Some(run) if cycle.has_tasks(&run.id) => cycle.running(run),
        Some(run) => cycle.scaling_up(run),
        None => cycle.no_run(),
    }
    cycle.finish()
}

/// Facts derived from [`Observed`] once per decision.
struct Facts<'a> {
    /// Group members not on their way out.
    members: Vec<&'a str>,
    /// EC2 ids of joined instances.
    joined: BTreeSet<&'a str>,
    /// EC2 ids of instances hosting an active task (or counted busy by ECS).
    busy: BTreeSet<&'a str>,
    /// Something runs on an instance that cannot be named.
    busy_unknown: bool,
    /// Some task is not stopped.
    any_active_task: bool,
}

impl<'a> Facts<'a> {
    fn new(obs: &'a Observed) -> Facts<'a> {
        let in_service: BTreeSet<&str> = obs
            .group
            .instances
            .iter()
            .filter(|i| i.lifecycle == Lifecycle::InService)
            .map(|i| i.instance_id.as_str())
            .collect();
        let members = obs
            .group
            .instances
            .iter()
            .filter(|i| i.lifecycle != Lifecycle::Terminating)
            .map(|i| i.instance_id.as_str())
            .collect();
        let joined = obs
            .container_instances
            .iter()
            .filter(|c| c.status == ContainerInstanceStatus::Active)
            .filter_map(|c| c.ec2_instance_id.as_deref())
            .filter(|id| in_service.contains(id))
            .collect();
        let mut busy = BTreeSet::new();
        let mut busy_unknown = false;
        for task in obs.tasks.iter().filter(|t| t.is_active()) {
            match host(obs, task) {
                Some(id) => _ = busy.insert(id),
                None => busy_unknown = true,
            }
        }
        for ci in obs.container_instances.iter().filter(|c| c.running_tasks > 0) {
            match ci.ec2_instance_id.as_deref() {
                Some(id) => _ = busy.insert(id),
                None => busy_unknown = true,
            }
        }
        Facts {
            members,
            joined,
            busy,
            busy_unknown,
            any_active_task: obs.tasks.iter().any(TaskState::is_active),
        }
    }

    /// Joined instances that run nothing.
    fn free_joined(&self) -> i32 {
        let free = self.joined.difference(&self.busy).count();
        i32::try_from(free).unwrap_or(i32::MAX)
    }

    /// Some task runs somewhere in the cluster.
    fn anything_running(&self) -> bool {
        self.any_active_task || self.busy_unknown || !self.busy.is_empty()
    }
}

/// The EC2 instance a task is placed on.
fn host<'a>(obs: &'a Observed, task: &TaskState) -> Option<&'a str> {
    let arn = task.container_instance_arn.as_deref()?;
    obs.container_instances
        .iter()
        .find(|c| c.arn == arn)?
        .ec2_instance_id
        .as_deref()
}

/// The scale-up time encoded in a run id (`run-<unix seconds>`).
fn run_id_time(id: &str) -> Option<Timestamp> {
    let secs = id.strip_prefix("run-")?.parse().ok()?;
    Timestamp::from_second(secs).ok()
}

fn secs(d: SignedDuration) -> i64 {
    d.as_secs()
}

/// One decision in the making.
struct Cycle<'a> {
    input: &'a Input<'a>,
    facts: Facts<'a>,
    /// `status.nextRunTime` has passed.
    tick_due: bool,
    out: Decision,
}

impl<'a> Cycle<'a> {
    fn new(input: &'a Input<'a>) -> Cycle<'a> {
        let status = input.status;
        let stored = status.next_run_time.as_ref().map(|t| t.0);
        let next = input.schedule.next_after(input.now);
        let mut next_run_time = stored;
        let tick_due = match stored {
            Some(t) if t <= input.now => true,
            // A future tick the schedule would not produce: the schedule changed.
            Some(t) if Some(t) == next => false,
            _ => {
                next_run_time = next;
                false
            }
        };
        Cycle {
            input,
            facts: Facts::new(input.observed),
            tick_due,
            out: Decision {
                actions: Vec::new(),
                events: Vec::new(),
                phase: Phase::Idle,
                current_run: None,
                last_run: status.last_run.clone(),
                next_run_time,
                last_trigger: status.last_trigger.clone(),
                degraded: None,
                requeue_after: FAST_REQUEUE,
            },
        }
    }

    fn spec(&self) -> &'a EcsSelfTerminatingWorkerSpec {
        self.input.spec
    }

    fn obs(&self) -> &'a Observed {
        self.input.observed
    }

    fn now(&self) -> Timestamp {
        self.input.now
    }

    fn visible(&self) -> i64 {
        self.obs().queue.visible
    }

    fn max_instances(&self) -> i32 {
        self.spec().max_instances.max(1)
    }

    fn join_timeout(&self) -> SignedDuration {
        SignedDuration::from_secs(i64::from(self.spec().scaling.join_timeout_seconds.max(0)))
    }

    fn tasks_of(&self, run_id: &str) -> Vec<&'a TaskState> {
        self.obs()
            .tasks
            .iter()
            .filter(|t| t.started_by.as_deref() == Some(run_id))
            .collect()
    }

    fn has_tasks(&self, run_id: &str) -> bool {
        !self.tasks_of(run_id).is_empty()
    }

    fn act(&mut self, action: Action) {
        self.out.actions.push(action);
    }

    fn normal(&mut self, reason: &'static str, message: String) {
        self.out.events.push(CycleEvent { warning: false, reason, message });
    }

    fn warning(&mut self, reason: &'static str, message: String) {
        self.out.events.push(CycleEvent { warning: true, reason, message });
    }

    /// The status's run, unless it has no task while tasks of another run are active: the
    /// status is behind and the run is theirs.
    fn current_run(&mut self) -> Option<RunStatus> {
        let known = self.input.status.current_run.clone();
        if known.as_ref().is_some_and(|r| self.has_tasks(&r.id)) {
            return known;
        }
        let obs = self.obs();
        let Some(id) = obs
            .tasks
            .iter()
            .filter(|t| t.is_active())
            .filter_map(|t| t.started_by.as_deref())
            .max()
        else {
            return known;
        };
        let tasks = self.tasks_of(id);
        let first_start = tasks.iter().filter_map(|t| t.started_at).min();
        let now = self.now();
        self.normal(
            event::TASK_STARTED,
            format!("run {id}: following {} task(s) found in the cluster", tasks.len()),
        );
        Some(RunStatus {
            id: id.to_string(),
            scale_up_at: Time(run_id_time(id).or(first_start).unwrap_or(now)),
            instances: i32::try_from(tasks.len()).unwrap_or(i32::MAX),
            messages_before: self.visible(),
            tasks_started_at: Some(Time(first_start.unwrap_or(now))),
        })
    }

    fn no_run(&mut self) {
        if self.facts.anything_running() {
            // Tasks without a run id: leave their capacity alone; ticks and triggers wait.
            return;
        }
        let now = self.now();
        if self.tick_due {
            self.out.next_run_time = self.input.schedule.next_after(now);
        }
        let trigger = self
            .input
            .trigger
            .filter(|t| self.input.status.last_trigger.as_deref() != Some(*t));
        if let Some(t) = trigger {
            self.out.last_trigger = Some(t.to_string());
        }
        let visible = self.visible();
        let min = i64::from(self.spec().scaling.min_messages);
        let desired = self.obs().group.desired_capacity;
        let enough = visible >= min;
        if self.spec().suspend {
            if let Some(t) = trigger {
                self.normal(
                    event::TRIGGERED,
                    format!("run-now {t:?} acknowledged: spec.suspend is true, no run starts"),
                );
            }
            if desired > 0 {
                self.scale_in_idle("spec.suspend is true".to_string());
            }
            return;
        }
        if let Some(t) = trigger {
            let message = if enough {
                format!("run-now {t:?}: {visible} visible message(s), starting a run")
            } else {
                format!(
                    "run-now {t:?}: {visible} visible message(s), fewer than minMessages ({min}); nothing to do"
                )
            };
            self.normal(event::TRIGGERED, message);
        }
        if enough && (self.tick_due || trigger.is_some() || desired > 0) {
            let run = self.start_run(visible, desired);
            self.scaling_up(run);
        } else if desired > 0 {
            self.scale_in_idle(format!(
                "{visible} visible message(s), fewer than minMessages ({min})"
            ));
        }
    }

    /// Only called when nothing runs in the cluster.
    fn scale_in_idle(&mut self, why: String) {
        let desired = self.obs().group.desired_capacity;
        self.act(Action::SetDesiredCapacity(0));
        self.normal(
            event::IDLE_INSTANCE_SCALED_IN,
            format!("desired capacity {desired} with no task running and {why}: scaling to 0"),
        );
    }

    fn start_run(&mut self, visible: i64, desired: i32) -> RunStatus {
        let per = i64::from(self.spec().scaling.messages_per_instance.max(1));
        let needed = visible / per + i64::from(visible % per != 0);
        let instances = i32::try_from(needed.max(i64::from(desired)))
            .unwrap_or(i32::MAX)
            .clamp(1, self.max_instances());
        let id = format!("run-{}", self.now().as_second());
        let message = if desired > 0 {
            format!(
                "run {id}: {visible} visible message(s); using the capacity already up ({desired}), {instances} instance(s)"
            )
        } else {
            format!("run {id}: {visible} visible message(s); scaling to {instances} instance(s)")
        };
        self.normal(event::SCALING_UP, message);
        RunStatus {
            id,
            scale_up_at: Time(self.now()),
            instances,
            messages_before: visible,
            tasks_started_at: None,
        }
    }

    fn scaling_up(&mut self, run: RunStatus) {
        let now = self.now();
        let want = run.instances.clamp(1, self.max_instances());
        let free = self.facts.free_joined();
        if let Some(started) = run.tasks_started_at.as_ref().map(|t| t.0) {
            let waited = now.duration_since(started);
            if waited >= self.join_timeout() {
                let message = format!(
                    "run {}: no task appeared within {}s of RunTask",
                    run.id,
                    secs(self.join_timeout())
                );
                self.warning(event::TASK_STOPPED, message.clone());
                let record = self.record(&run, RunOutcome::Failed, None, Some(message.clone()), now);
                self.end_run(record, degraded(reason::RUN_FAILED, message));
                return;
            }
            if waited >= RUN_TASK_GRACE && free > 0 {
                let count = want.min(free);
                self.act(Action::RunTasks { run_id: run.id.clone(), count });
            }
            self.out.current_run = Some(run);
            return;
        }
        let waited = now.duration_since(run.scale_up_at.0);
        if free >= want {
            self.start_tasks(run, want, waited);
        } else if waited < self.join_timeout() {
            if self.obs().group.desired_capacity < want {
                self.act(Action::SetDesiredCapacity(want));
            }
            self.out.current_run = Some(run);
        } else if free > 0 {
            self.warning(
                event::SCALE_UP_TIMED_OUT,
                format!(
                    "run {}: only {free} of {want} instance(s) joined within {}s; running on {free}, terminating the others",
                    run.id,
                    secs(self.join_timeout())
                ),
            );
            if !self.facts.busy_unknown {
                let facts = &self.facts;
                let late: Vec<String> = facts
                    .members
                    .iter()
                    .filter(|m| !facts.joined.contains(*m) && !facts.busy.contains(*m))
                    .map(|m| m.to_string())
                    .collect();
                for instance_id in late {
                    self.act(Action::TerminateInstance { instance_id });
                }
            }
            self.start_tasks(run, free, waited);
        } else {
            let message = format!(
                "run {}: no instance joined the cluster within {}s of scale-up",
                run.id,
                secs(self.join_timeout())
            );
            self.warning(event::SCALE_UP_TIMED_OUT, format!("{message}; scaling back to 0"));
            let record = self.record(&run, RunOutcome::ScaleUpTimedOut, None, Some(message.clone()), now);
            self.end_run(record, degraded(reason::SCALE_UP_TIMED_OUT, message));
        }
    }

    fn start_tasks(&mut self, mut run: RunStatus, count: i32, waited: SignedDuration) {
        run.instances = count;
        run.tasks_started_at = Some(Time(self.now()));
        self.act(Action::RunTasks { run_id: run.id.clone(), count });
        self.normal(
            event::INSTANCE_JOINED,
            format!("{count} instance(s) joined the cluster {}s after scale-up", secs(waited)),
        );
        self.normal(
            event::TASK_STARTED,
            format!("run {}: starting {count} worker task(s)", run.id),
        );
        self.out.current_run = Some(run);
    }

    fn running(&mut self, mut run: RunStatus) {
        let now = self.now();
        let tasks = self.tasks_of(&run.id);
        if run.tasks_started_at.is_none() {
            let first = tasks.iter().filter_map(|t| t.started_at).min();
            run.tasks_started_at = Some(Time(first.unwrap_or(now)));
        }
        if tasks.iter().any(|t| t.is_active()) {
            self.terminate_finished(&run, &tasks);
            self.out.current_run = Some(run);
            return;
        }
        let failed = tasks.iter().any(|t| t.exit_code != Some(0));
        let exit_code = tasks.iter().filter_map(|t| t.exit_code).max();
        let decisive = if failed {
            // A task without exit code never ran its container: the most telling reason.
            tasks
                .iter()
                .filter(|t| t.exit_code != Some(0))
                .max_by_key(|t| t.exit_code.map_or(i64::MAX, i64::from))
        } else {
            tasks.iter().max_by_key(|t| t.stopped_at)
        };
        let stop_reason = decisive.and_then(|t| t.stop_reason.clone());
        let stopped_at = tasks.iter().filter_map(|t| t.stopped_at).max().unwrap_or(now);
        let visible = self.visible();
        let message = format!(
            "run {}: {} task(s) stopped, exit code {}{}; {visible} message(s) visible",
            run.id,
            tasks.len(),
            exit_code.map_or_else(|| "none".to_string(), |c| c.to_string()),
            stop_reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default(),
        );
        let (outcome, condition) = if failed {
            self.warning(event::TASK_STOPPED, message.clone());
            (RunOutcome::Failed, degraded(reason::RUN_FAILED, message))
        } else {
            self.normal(event::TASK_STOPPED, message.clone());
            let ok = ConditionUpdate { status: false, reason: reason::AS_EXPECTED, message };
            (RunOutcome::Succeeded, ok)
        };
        let record = self.record(&run, outcome, exit_code, stop_reason, stopped_at);
        self.end_run(record, condition);
    }

    /// Terminates the instances of a running run that will not run a task of it any more.
    fn terminate_finished(&mut self, run: &RunStatus, tasks: &[&TaskState]) {
        if self.facts.busy_unknown {
            return;
        }
        let obs = self.obs();
        let grace_over = run
            .tasks_started_at
            .as_ref()
            .is_some_and(|t| self.now().duration_since(t.0) >= RUN_TASK_GRACE);
        let finished: BTreeSet<&str> = tasks
            .iter()
            .filter(|t| !t.is_active())
            .filter_map(|t| host(obs, t))
            .collect();
        let idle: Vec<&str> = self
            .facts
            .members
            .iter()
            .copied()
            .filter(|m| !self.facts.busy.contains(m))
            .collect();
        for instance_id in idle {
            let why = if finished.contains(instance_id) {
                format!("its task of run {} stopped", run.id)
            } else if grace_over {
                format!("it runs no task of run {}", run.id)
            } else {
                continue;
            };
            self.act(Action::TerminateInstance { instance_id: instance_id.to_string() });
            self.normal(
                event::IDLE_INSTANCE_SCALED_IN,
                format!("instance {instance_id}: {why}; terminating it"),
            );
        }
    }

    fn record(
        &self,
        run: &RunStatus,
        outcome: RunOutcome,
        exit_code: Option<i32>,
        stop_reason: Option<String>,
        stopped_at: Timestamp,
    ) -> RunRecord {
        RunRecord {
            id: run.id.clone(),
            outcome,
            scale_up_at: run.scale_up_at.clone(),
            started_at: run.tasks_started_at.clone(),
            stopped_at: Time(stopped_at),
            instances: run.instances,
            exit_code,
            stop_reason,
            messages_before: run.messages_before,
            messages_after: Some(self.visible()),
        }
    }

    /// Records the run and brings capacity back to zero when nothing runs any more.
    fn end_run(&mut self, record: RunRecord, condition: ConditionUpdate) {
        let id = record.id.clone();
        self.out.current_run = None;
        self.out.last_run = Some(record);
        self.out.degraded = Some(condition);
        if self.facts.anything_running() {
            // Another run's tasks: the next reconcile follows them.
            return;
        }
        let desired = self.obs().group.desired_capacity;
        let message = if desired > 0 {
            self.act(Action::SetDesiredCapacity(0));
            format!("run {id} ended: desired capacity {desired} -> 0")
        } else {
            format!("run {id} ended: desired capacity is 0")
        };
        self.normal(event::SCALED_TO_ZERO, message);
    }

    fn finish(mut self) -> Decision {
        let obs = self.obs();
        let mut desired = obs.group.desired_capacity;
        for action in &self.out.actions {
            match action {
                Action::SetDesiredCapacity(n) => desired = *n,
                Action::TerminateInstance { .. } => desired = (desired - 1).max(0),
                Action::RunTasks { .. } => {}
            }
        }
        let capacity_left = desired > 0 || !obs.group.instances.is_empty();
        self.out.phase = match &self.out.current_run {
            Some(run) if run.tasks_started_at.is_some() => Phase::Running,
            Some(_) => Phase::ScalingUp,
            None if self.facts.any_active_task => Phase::Running,
            None if self.spec().suspend => Phase::Suspended,
            None if capacity_left => Phase::ScalingDown,
            None => Phase::Idle,
        };
        let busy = self.out.current_run.is_some() || capacity_left || self.facts.anything_running();
        self.out.requeue_after = match self.out.next_run_time {
            _ if busy => FAST_REQUEUE,
            Some(next) => Duration::try_from(next.duration_since(self.now()))
                .unwrap_or(MIN_REQUEUE)
                .clamp(MIN_REQUEUE, MAX_REQUEUE),
            None => MAX_REQUEUE,
        };
        self.out
    }
}

fn degraded(reason: &'static str, message: String) -> ConditionUpdate {
    ConditionUpdate { status: true, reason, message }
}
