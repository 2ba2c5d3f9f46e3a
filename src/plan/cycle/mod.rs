//! The run cycle as one pure function.
//!
//! [`decide`] takes what one reconcile knows — the validated spec (with its parsed schedule),
//! the status written last time, what the AWS layer just [`Observed`], the run-now annotation and the time — and
//! returns a [`Decision`]: the AWS [`Action`]s to execute, the Events to record and the cycle's
//! status fields (phase, current and last run, next tick, handled trigger, Degraded condition,
//! requeue delay).
//!
//! This module owns every rule of the cycle: when a run starts, how many instances it asks for,
//! how long it waits for them, when the worker tasks start and how long they keep polling an
//! empty queue, when an instance is scaled in and how a finished run is recorded. It reads no
//! clock and calls nothing: the AWS layer fills [`Observed`] (`observed.rs`) and executes the
//! actions; the controller writes the status and the Events. The rules' tests are in
//! `tests.rs`.

use crate::api::conditions::{event, reason};
use crate::api::validate::ValidatedSpec;
use crate::api::{
    BudgetStatus, CapacityType, EcsSelfTerminatingWorkerSpec, EcsSelfTerminatingWorkerStatus,
    OnExhausted, Phase, RunOutcome, RunRecord, RunStatus,
};
use crate::plan::budget;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::collections::BTreeSet;
use std::time::Duration;

/// Requeue delay while a run is in progress or capacity is up: a join or a stopped task is
/// acted on within this plus one pass.
pub const FAST_REQUEUE: Duration = Duration::from_millis(1500);
/// Shortest requeue delay of an idle worker.
pub const MIN_REQUEUE: Duration = Duration::from_secs(1);
/// Longest requeue delay of an idle worker.
pub const MAX_REQUEUE: Duration = Duration::from_secs(300);
/// How long RunTask's tasks may take to show in the cluster before RunTask is issued again
/// (with the same client token, so nothing is started twice); also how long an instance may
/// stay without a task once a run's tasks started.
pub const RUN_TASK_GRACE: SignedDuration = SignedDuration::from_secs(15);
/// The worker's exit code when it was stopped (SIGTERM) before the queue was drained, after
/// returning its unfinished messages to the queue.
pub const INTERRUPTED_EXIT_CODE: i32 = ecs_worker_contract::exit::INTERRUPTED;
/// Idle time before a run after which its workers get the [short tail](Tail::SHORT)
/// (`worker.adaptiveTail`). Keeping an instance up for work that might come costs its length;
/// a start costs about 70 s (boot and task start). With the previous message this long ago, the
/// chance of one within a 40 s tail is about 6%: the tail would cost about nine times what it
/// saves.
pub const IDLE_BEFORE_SHORT_TAIL: SignedDuration = SignedDuration::from_mins(10);

mod observed;
#[cfg(test)]
mod tests;

pub use observed::*;

/// Everything one decision depends on.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    pub spec: &'a ValidatedSpec<'a>,
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
    /// `RunTask` of `count` worker tasks with `startedBy` set to `run_id`: the run's tasks
    /// number `first` to `first + count - 1` (`first` = the run's tasks seen so far). The AWS
    /// layer sends calls of at most 10 tasks, each with a client token naming the run and its
    /// first task, so a repeat after a crash (or before ECS lists the new tasks) starts
    /// nothing new. With a `tail`, the worker container's environment overrides the task
    /// definition's.
    RunTasks {
        run_id: String,
        first: i32,
        count: i32,
        tail: Option<Tail>,
    },
    /// `StopTask` of a task of the run (SIGTERM to the worker, SIGKILL after the container's
    /// stop timeout) with `reason` as its stopped reason.
    StopTask { task_arn: String, reason: String },
    /// `UpdateAutoScalingGroup` of the mixed instances policy's
    /// `OnDemandPercentageAboveBaseCapacity` (100: On-Demand, 0: Spot), with the desired
    /// capacity so the launch is tried again at once. Only with no member instance, so
    /// nothing running is replaced.
    SetOnDemandPercentage { percentage: i32, desired: i32 },
}

/// How long a run's workers keep polling once the queue looks empty: `empty_receives`
/// consecutive empty long polls of `wait_seconds` (`WORKER_EMPTY_RECEIVES`,
/// `WORKER_WAIT_SECONDS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tail {
    pub empty_receives: i32,
    pub wait_seconds: i32,
}

impl Tail {
    /// The tail of a run after a long idle spell: one empty receive of at most 5 s.
    pub const SHORT: Tail = Tail {
        empty_receives: 1,
        wait_seconds: 5,
    };

    /// The tail the task definition gives every run.
    pub fn configured(spec: &EcsSelfTerminatingWorkerSpec) -> Tail {
        Tail {
            empty_receives: spec.worker.empty_receives,
            wait_seconds: spec.queue.receive_wait_time_seconds,
        }
    }

    /// Seconds of empty polling before the worker exits.
    pub fn seconds(self) -> i64 {
        i64::from(self.empty_receives) * i64::from(self.wait_seconds)
    }
}

/// The tail a run's workers get when it is not the task definition's: the [short
/// tail](Tail::SHORT) when `worker.adaptiveTail` is on, the run is the worker's first or
/// started [`IDLE_BEFORE_SHORT_TAIL`] or more after the previous run ended, and the configured
/// tail is longer. Depends only on the status, so a RunTask issued again asks for the same.
pub fn run_tail(
    spec: &EcsSelfTerminatingWorkerSpec,
    last_run: Option<&RunRecord>,
    scale_up_at: Timestamp,
) -> Option<Tail> {
    let idle_long = last_run
        .is_none_or(|last| scale_up_at.duration_since(last.stopped_at.0) >= IDLE_BEFORE_SHORT_TAIL);
    let configured = Tail::configured(spec);
    let short = Tail {
        wait_seconds: Tail::SHORT.wait_seconds.min(configured.wait_seconds),
        ..Tail::SHORT
    };
    (spec.worker.adaptive_tail && idle_long && short.seconds() < configured.seconds())
        .then_some(short)
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
    /// `status.consecutiveFailedRuns`: counted up by a run that ends without success, reset by
    /// one that succeeds.
    pub consecutive_failed_runs: i32,
    /// The `Degraded` condition, set when a run ends; unchanged when `None`.
    pub degraded: Option<ConditionUpdate>,
    /// `status.budget`: where `spec.budget.maxInstanceHoursPerDay` stands.
    pub budget: Option<BudgetStatus>,
    /// When to reconcile again.
    pub requeue_after: Duration,
}

impl Decision {
    /// Copies the decision's part of the status: the one place the controller, the cycle's
    /// tests and the cost simulator record a decision.
    pub fn write_to(&self, status: &mut EcsSelfTerminatingWorkerStatus) {
        status.phase = Some(self.phase);
        status.current_run = self.current_run.clone();
        status.last_run = self.last_run.clone();
        status.next_run_time = self.next_run_time.map(Time);
        status.last_trigger = self.last_trigger.clone();
        status.consecutive_failed_runs = self.consecutive_failed_runs;
        status.budget = self.budget.clone();
    }
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
/// **Schedule and run-now.** `nextRunTime` is set on the first reconcile, reset when the
/// schedule changed, and advanced as soon as it is due: a tick that comes during a run is
/// skipped (the run is already draining the queue). A new value of the run-now annotation is
/// handled once (`lastTrigger`): it starts a run like a due tick, or is acknowledged with a
/// Triggered Event saying why not (run in progress, suspended, no work).
///
/// **No run in progress.**
/// 1. Active tasks of a run the status does not know (it is behind): the run is adopted and
///    followed from where it is. Active tasks without a run id: nothing starts and nothing is
///    scaled in until they stop.
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
/// - A failed launch activity while the group has no instance at all: a `SpotWithFallback` run
///   whose Spot launch found no capacity or quota continues On-Demand (OnDemandFallback
///   Warning, `onDemandFallback` in the run); any other run ends at once, without waiting for
///   the join timeout: capacity back to 0, run recorded as LaunchFailed with AWS's message,
///   Warning and Degraded with reason InsufficientCapacity, QuotaExceeded or LaunchFailed.
///   The next run of a group left On-Demand tries Spot again.
/// - RunTask issued but no task seen: issued again after 15 s (same client token); still none
///   `joinTimeoutSeconds` after RunTask (or twice that after scale-up when the start was never
///   recorded, e.g. RunTask kept failing): run recorded as Failed, capacity back to 0.
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
///   nothing runs any more the capacity is set to 0 (ScaledToZero). A task stopped without an
///   exit code counts with the one its worker recorded on it before removing its instance
///   ([`TaskState::outcome`]); an exit code ECS reported always wins.
///
/// Desired capacity is only ever lowered when no task is active anywhere in the cluster; with
/// tasks active, capacity goes down one named idle instance at a time.
///
/// **Phase**: ScalingUp while a run waits for instances, Running once its tasks started;
/// otherwise Suspended when suspended, ScalingDown while instances remain, else Idle.
/// **Tail**: a run that follows a long idle spell tells its workers to exit after a short
/// tail ([`run_tail`]).
///
/// **Requeue**: 1.5 s while a run is in progress or anything is up, else at the next tick
/// (between 1 s and 5 min).
pub fn decide(input: &Input) -> Decision {
    let mut cycle = Cycle::new(input);
    match cycle.current_run() {
        Some(run) => {
            cycle.ack_trigger(&format!("run {} is in progress", run.id));
            if cycle.has_tasks(&run.id) {
                cycle.running(run);
            } else {
                cycle.scaling_up(run);
            }
        }
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
        for ci in obs
            .container_instances
            .iter()
            .filter(|c| c.running_tasks > 0)
        {
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

/// One decision in the making.
struct Cycle<'a> {
    input: &'a Input<'a>,
    facts: Facts<'a>,
    /// `status.nextRunTime` had passed (the tick is consumed in this decision).
    tick_due: bool,
    /// A run-now value not handled before (recorded in this decision).
    trigger: Option<&'a str>,
    out: Decision,
}

impl<'a> Cycle<'a> {
    fn new(input: &'a Input<'a>) -> Cycle<'a> {
        let status = input.status;
        let stored = status.next_run_time.as_ref().map(|t| t.0);
        let next = input.spec.schedule().next_after(input.now);
        let mut next_run_time = stored;
        // A due tick is consumed; a future tick the schedule would not produce means the
        // schedule changed.
        let tick_due = stored.is_some_and(|t| t <= input.now);
        if stored.is_none_or(|t| t <= input.now || Some(t) != next) {
            next_run_time = next;
        }
        let trigger = input
            .trigger
            .filter(|t| status.last_trigger.as_deref() != Some(*t));
        Cycle {
            input,
            facts: Facts::new(input.observed),
            tick_due,
            trigger,
            out: Decision {
                actions: Vec::new(),
                events: Vec::new(),
                phase: Phase::Idle,
                current_run: None,
                last_run: status.last_run.clone(),
                next_run_time,
                last_trigger: trigger
                    .map(str::to_string)
                    .or_else(|| status.last_trigger.clone()),
                consecutive_failed_runs: status.consecutive_failed_runs,
                degraded: None,
                budget: None,
                requeue_after: FAST_REQUEUE,
            },
        }
    }

    fn spec(&self) -> &'a ValidatedSpec<'a> {
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
        self.spec().max_instances
    }

    fn join_timeout(&self) -> SignedDuration {
        SignedDuration::from_secs(i64::from(self.spec().scaling.join_timeout_seconds))
    }

    fn tasks_of(&self, run_id: &str) -> Vec<&'a TaskState> {
        self.obs()
            .tasks
            .iter()
            .filter(|t| t.started_by.as_deref() == Some(run_id))
            .collect()
    }

    /// The instances (and tasks) a run asks for, within the group's bounds.
    fn instances_wanted(&self, run: &RunStatus) -> i32 {
        run.instances.clamp(1, self.max_instances())
    }

    fn task_count(&self, run_id: &str) -> i32 {
        i32::try_from(self.tasks_of(run_id).len()).unwrap_or(i32::MAX)
    }

    fn has_tasks(&self, run_id: &str) -> bool {
        !self.tasks_of(run_id).is_empty()
    }

    fn tail(&self, run: &RunStatus) -> Option<Tail> {
        run_tail(
            self.spec(),
            self.input.status.last_run.as_ref(),
            run.scale_up_at.0,
        )
    }

    fn act(&mut self, action: Action) {
        self.out.actions.push(action);
    }

    fn normal(&mut self, reason: &'static str, message: String) {
        self.out.events.push(CycleEvent {
            warning: false,
            reason,
            message,
        });
    }

    fn warning(&mut self, reason: &'static str, message: String) {
        self.out.events.push(CycleEvent {
            warning: true,
            reason,
            message,
        });
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
            format!(
                "run {id}: following {} task(s) found in the cluster",
                tasks.len()
            ),
        );
        Some(RunStatus {
            id: id.to_string(),
            scale_up_at: Time(run_id_time(id).or(first_start).unwrap_or(now)),
            instances: i32::try_from(tasks.len()).unwrap_or(i32::MAX),
            messages_before: self.visible(),
            tasks_started_at: Some(Time(first_start.unwrap_or(now))),
            on_demand_fallback: self.spec().capacity.capacity_type
                == CapacityType::SpotWithFallback
                && self.obs().group.on_demand_percentage.is_some_and(|p| p > 0),
        })
    }

    /// Acknowledges a new run-now value that starts nothing.
    fn ack_trigger(&mut self, why: &str) {
        if let Some(t) = self.trigger {
            self.normal(
                event::TRIGGERED,
                format!("run-now {t:?} acknowledged: {why}"),
            );
        }
    }

    fn no_run(&mut self) {
        if self.facts.anything_running() {
            // Tasks without a run id: their capacity is left alone.
            self.ack_trigger("tasks without a run id are running in the cluster; no run starts");
            return;
        }
        let trigger = self.trigger;
        let visible = self.visible();
        let min = i64::from(self.spec().scaling.min_messages);
        let desired = self.obs().group.desired_capacity;
        let enough = visible >= min;
        if self.spec().suspend {
            self.ack_trigger("spec.suspend is true; no run starts");
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
                    "run-now {t:?} acknowledged: {visible} visible message(s), fewer than minMessages ({min}); nothing to do"
                )
            };
            self.normal(event::TRIGGERED, message);
        }
        if enough
            && (self.tick_due || trigger.is_some() || desired > 0)
            && let Some(why) = self.held_back()
        {
            self.ack_trigger(&why);
            if desired > 0 {
                self.scale_in_idle(why);
            }
            return;
        }
        if enough && (self.tick_due || trigger.is_some() || desired > 0) {
            let run = self.start_run(visible, desired);
            // A run that fell back to On-Demand left the group so; the next one tries Spot
            // again (with no instance up, nothing is replaced).
            if self.spec().capacity.capacity_type == CapacityType::SpotWithFallback
                && self.obs().group.on_demand_percentage.is_some_and(|p| p > 0)
                && self.obs().group.instances.is_empty()
            {
                self.act(Action::SetOnDemandPercentage {
                    percentage: 0,
                    desired,
                });
            }
            self.scaling_up(run);
        } else if desired > 0 {
            self.scale_in_idle(format!(
                "{visible} visible message(s), fewer than minMessages ({min})"
            ));
        }
    }

    /// Why `spec.budget` keeps a due run from starting, with its Event (and, for a used-up
    /// budget, the Degraded condition); the queue is left as it is.
    fn held_back(&mut self) -> Option<String> {
        let spec = self.spec().budget.as_ref()?;
        let now = self.now();
        if let Some(until) = budget::blackout_until(&spec.blackout_windows, now) {
            let why = format!("spec.budget.blackoutWindows: no run starts until {until}");
            self.normal(event::BLACKOUT_WINDOW, why.clone());
            return Some(why);
        }
        let standing = self.budget_before(None)?;
        if !standing.exhausted {
            return None;
        }
        let why = format!(
            "spec.budget.maxInstanceHoursPerDay ({}) is used up: {:.1} instance-hours in the last 24 hours; no run starts until {}; the queue is left as it is",
            standing.limit_instance_seconds / 3600,
            standing.used_instance_seconds as f64 / 3600.0,
            standing
                .resets_at
                .as_ref()
                .map_or_else(|| "the count falls".to_string(), |t| t.0.to_string()),
        );
        self.warning(event::BUDGET_EXHAUSTED, why.clone());
        self.out.degraded = Some(degraded(reason::BUDGET_EXHAUSTED, why.clone()));
        Some(why)
    }

    /// Where `spec.budget` stood before this decision, with `current` counted as going.
    fn budget_before(&self, current: Option<&RunStatus>) -> Option<BudgetStatus> {
        let now = self.now();
        let hours = self
            .input
            .status
            .budget
            .as_ref()
            .map(|b| b.hours.as_slice())
            .unwrap_or_default();
        budget::standing(
            self.spec().budget.as_ref(),
            budget::account(hours, None, now),
            current,
            now,
        )
    }

    /// `spec.budget.onExhausted: Stop`: the tasks of a run that used up the budget are stopped
    /// (SIGTERM), so their workers return their messages to the queue.
    fn stop_over_budget(&mut self, run: &RunStatus, tasks: &[&TaskState]) {
        let Some(spec) = self.spec().budget.as_ref() else {
            return;
        };
        if spec.on_exhausted != OnExhausted::Stop {
            return;
        }
        let Some(standing) = self.budget_before(Some(run)) else {
            return;
        };
        if !standing.exhausted {
            return;
        }
        for task in tasks.iter().filter(|t| t.is_active() && !t.stop_requested) {
            let reason = "spec.budget.maxInstanceHoursPerDay is used up".to_string();
            self.act(Action::StopTask {
                task_arn: task.arn.clone(),
                reason: reason.clone(),
            });
            self.warning(
                event::BUDGET_EXHAUSTED,
                format!(
                    "run {}: {reason} (onExhausted: Stop): stopping task {} so that its worker returns its messages to the queue",
                    run.id, task.arn
                ),
            );
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
        let per = i64::from(self.spec().scaling.messages_per_instance);
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
            on_demand_fallback: false,
        }
    }

    fn scaling_up(&mut self, run: RunStatus) {
        let now = self.now();
        let want = self.instances_wanted(&run);
        let free = self.facts.free_joined();
        let timeout = self.join_timeout();
        // RunTask gets `timeout` to show a task; a start the status never recorded (RunTask
        // kept failing) gets the join wait plus that.
        let (since, waited, allowed) = match &run.tasks_started_at {
            Some(t) => ("RunTask", now.duration_since(t.0), timeout),
            None => (
                "scale-up",
                now.duration_since(run.scale_up_at.0),
                timeout * 2,
            ),
        };
        if waited >= allowed {
            let message = format!(
                "run {}: no task appeared within {}s of {since}",
                run.id,
                allowed.as_secs()
            );
            self.warning(event::TASK_STOPPED, message.clone());
            let record = self.record(&run, RunOutcome::Failed, None, Some(message.clone()), now);
            self.end_run(record, degraded(reason::RUN_FAILED, message));
            return;
        }
        if run.tasks_started_at.is_none() && self.launch_failed(&run, want) {
            return;
        }
        if run.tasks_started_at.is_some() {
            if waited >= RUN_TASK_GRACE && free > 0 {
                let count = want.min(free);
                self.act(Action::RunTasks {
                    run_id: run.id.clone(),
                    first: 0, // no task of this run is seen yet: the first slice again
                    count,
                    tail: self.tail(&run),
                });
            }
            self.out.current_run = Some(run);
            return;
        }
        if free >= want {
            self.start_tasks(run, want, waited);
        } else if waited < timeout {
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
                    timeout.as_secs()
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
                timeout.as_secs()
            );
            self.warning(
                event::SCALE_UP_TIMED_OUT,
                format!("{message}; scaling back to 0"),
            );
            let record = self.record(
                &run,
                RunOutcome::ScaleUpTimedOut,
                None,
                Some(message.clone()),
                now,
            );
            self.end_run(record, degraded(reason::SCALE_UP_TIMED_OUT, message));
        }
    }

    /// Acts on a failed launch activity of a run that has no instance at all: a
    /// `SpotWithFallback` run whose Spot launch found no capacity or quota continues
    /// On-Demand; any other run ends at once (capacity back to 0, the activity's message in
    /// a Warning, `status.lastRun` and the Degraded condition) instead of waiting for the
    /// join timeout. With some instance launched, the join timeout decides as before.
    /// Returns whether the run was handled.
    fn launch_failed(&mut self, run: &RunStatus, want: i32) -> bool {
        if !self.facts.members.is_empty() {
            return false;
        }
        // After a fallback, the Spot attempts' failures are history.
        let Some(failure) = self
            .obs()
            .launch_failures
            .iter()
            .find(|f| !(run.on_demand_fallback && f.spot()))
        else {
            return false;
        };
        let reason = failure.reason();
        let fallback = self.spec().capacity.capacity_type == CapacityType::SpotWithFallback
            && !run.on_demand_fallback
            && failure.spot()
            && reason != reason::LAUNCH_FAILED;
        if fallback {
            self.warning(
                event::ON_DEMAND_FALLBACK,
                format!(
                    "run {}: Spot capacity could not be had ({reason}: {}); continuing On-Demand",
                    run.id, failure.message
                ),
            );
            self.act(Action::SetOnDemandPercentage {
                percentage: 100,
                desired: want,
            });
            let mut run = run.clone();
            run.on_demand_fallback = true;
            self.out.current_run = Some(run);
            return true;
        }
        let message = format!(
            "run {}: Auto Scaling could not launch an instance: {}",
            run.id, failure.message
        );
        let event_reason = match reason {
            reason::QUOTA_EXCEEDED => event::QUOTA_EXCEEDED,
            reason::INSUFFICIENT_CAPACITY => event::INSUFFICIENT_CAPACITY,
            _ => event::LAUNCH_FAILED,
        };
        self.warning(event_reason, format!("{message}; scaling back to 0"));
        let record = self.record(
            run,
            RunOutcome::LaunchFailed,
            None,
            Some(failure.message.clone()),
            self.now(),
        );
        self.end_run(record, degraded(reason, message));
        true
    }

    /// Starts a run's first `count` tasks (called while the run has none).
    fn start_tasks(&mut self, mut run: RunStatus, count: i32, waited: SignedDuration) {
        run.instances = count;
        run.tasks_started_at = Some(Time(self.now()));
        let tail = self.tail(&run);
        self.act(Action::RunTasks {
            run_id: run.id.clone(),
            first: 0,
            count,
            tail,
        });
        self.normal(
            event::INSTANCE_JOINED,
            format!(
                "{count} instance(s) joined the cluster {}s after scale-up",
                waited.as_secs()
            ),
        );
        let tail = match tail {
            Some(t) => format!(
                " with the short tail of a run after an idle spell: they exit after {} empty receive(s) of {}s",
                t.empty_receives, t.wait_seconds
            ),
            None => String::new(),
        };
        self.normal(
            event::TASK_STARTED,
            format!("run {}: starting {count} worker task(s){tail}", run.id),
        );
        self.out.current_run = Some(run);
    }

    fn running(&mut self, mut run: RunStatus) {
        let now = self.now();
        let tasks = self.tasks_of(&run.id);
        if run.tasks_started_at.is_none() {
            // A start the status never recorded: its first RunTask calls went out, the
            // operator went down (or a call failed) before the rest. Instances still free
            // get the run's remaining tasks, with the client tokens of those slices.
            // The start counts as recorded once those show (or no instance is free).
            let placed = self.task_count(&run.id);
            let want = self.instances_wanted(&run);
            let rest = (want - placed).min(self.facts.free_joined());
            if rest > 0 && tasks.iter().any(|t| t.is_active()) {
                self.act(Action::RunTasks {
                    run_id: run.id.clone(),
                    first: placed,
                    count: rest,
                    tail: self.tail(&run),
                });
                self.normal(
                    event::TASK_STARTED,
                    format!(
                        "run {}: starting the {rest} worker task(s) an interrupted start left out",
                        run.id
                    ),
                );
                self.out.current_run = Some(run);
                return;
            }
            let first = tasks.iter().filter_map(|t| t.started_at).min();
            run.tasks_started_at = Some(Time(first.unwrap_or(now)));
        }
        if tasks.iter().any(|t| t.is_active()) {
            self.stop_over_budget(&run, &tasks);
            self.stop_draining(&run, &tasks);
            self.terminate_finished(&run, &tasks);
            self.out.current_run = Some(run);
            return;
        }
        // A worker stopped before the queue was drained returned its messages: the run was
        // interrupted (its instance went away), not failed, and the next run goes on.
        let failed = tasks
            .iter()
            .any(|t| !matches!(t.outcome(), Some(0 | INTERRUPTED_EXIT_CODE)));
        let interrupted = tasks
            .iter()
            .any(|t| t.outcome() == Some(INTERRUPTED_EXIT_CODE));
        let exit_code = tasks.iter().filter_map(|t| t.outcome()).max();
        let decisive = if failed {
            // A task without exit code never ran its container: the most telling reason.
            tasks
                .iter()
                .filter(|t| t.outcome() != Some(0))
                .max_by_key(|t| t.outcome().map_or(i64::MAX, i64::from))
        } else {
            tasks.iter().max_by_key(|t| t.stopped_at)
        };
        let stop_reason = decisive.and_then(|t| t.stop_reason.clone());
        let stopped_at = tasks
            .iter()
            .filter_map(|t| t.stopped_at)
            .max()
            .unwrap_or(now);
        let visible = self.visible();
        let message = format!(
            "run {}: {} task(s) stopped, exit code {}{}; {visible} message(s) visible",
            run.id,
            tasks.len(),
            exit_code.map_or_else(|| "none".to_string(), |c| c.to_string()),
            stop_reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default(),
        );
        let (outcome, condition) = if failed {
            self.warning(event::TASK_STOPPED, message.clone());
            (RunOutcome::Failed, degraded(reason::RUN_FAILED, message))
        } else if interrupted {
            self.warning(
                event::TASK_STOPPED,
                format!(
                    "{message}; interrupted before the queue was drained: the worker returned its unfinished messages to the queue and the next run goes on"
                ),
            );
            let ok = ConditionUpdate {
                status: false,
                reason: reason::AS_EXPECTED,
                message,
            };
            (RunOutcome::Interrupted, ok)
        } else {
            self.normal(event::TASK_STOPPED, message.clone());
            let ok = ConditionUpdate {
                status: false,
                reason: reason::AS_EXPECTED,
                message,
            };
            (RunOutcome::Succeeded, ok)
        };
        let record = self.record(&run, outcome, exit_code, stop_reason, stopped_at);
        self.end_run(record, condition);
    }

    /// Stops the run's tasks on draining container instances. ECS drains an instance on a Spot
    /// interruption notice (the user data turns Spot Instance draining on), two minutes before
    /// EC2 reclaims it, or when it is drained for a scale-in; it leaves standalone tasks, as
    /// RunTask's are, running ("you must wait for them to finish or stop them manually").
    /// StopTask gets the worker SIGTERM while the instance and its agent are still up: it
    /// returns its unfinished messages to the queue at once and its exit is reported.
    /// <https://docs.aws.amazon.com/AmazonECS/latest/developerguide/spot-instance-draining-linux-container.html>
    /// <https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_UpdateContainerInstancesState.html>
    fn stop_draining(&mut self, run: &RunStatus, tasks: &[&TaskState]) {
        let obs = self.obs();
        for task in tasks.iter().filter(|t| t.is_active() && !t.stop_requested) {
            let Some(ci) = obs
                .container_instances
                .iter()
                .find(|c| Some(c.arn.as_str()) == task.container_instance_arn.as_deref())
            else {
                continue;
            };
            if ci.status != ContainerInstanceStatus::Draining {
                continue;
            }
            let instance = ci.ec2_instance_id.as_deref().unwrap_or(ci.arn.as_str());
            // StopTask's reason: at most 255 characters.
            let reason = format!("Container instance {instance} is draining");
            self.act(Action::StopTask {
                task_arn: task.arn.clone(),
                reason: reason.clone(),
            });
            self.warning(
                event::INSTANCE_DRAINING,
                format!(
                    "run {}: {reason} (Spot interruption or scale-in): stopping task {} so that its worker returns its messages to the queue",
                    run.id, task.arn
                ),
            );
        }
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
            self.act(Action::TerminateInstance {
                instance_id: instance_id.to_string(),
            });
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
            on_demand_fallback: run.on_demand_fallback,
        }
    }

    /// Records the run and brings capacity back to zero when nothing runs any more.
    fn end_run(&mut self, record: RunRecord, condition: ConditionUpdate) {
        let id = record.id.clone();
        let before = self.input.status.consecutive_failed_runs;
        self.out.consecutive_failed_runs = match record.outcome {
            RunOutcome::Succeeded => 0,
            // The instance was taken away; the worker itself did not fail.
            RunOutcome::Interrupted => before,
            RunOutcome::Failed | RunOutcome::ScaleUpTimedOut | RunOutcome::LaunchFailed => {
                before.saturating_add(1)
            }
        };
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
                Action::SetOnDemandPercentage { desired: n, .. } => desired = *n,
                Action::RunTasks { .. } | Action::StopTask { .. } => {}
            }
        }
        let capacity_left = desired > 0 || !obs.group.instances.is_empty();
        self.account_budget();
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

impl Cycle<'_> {
    /// `status.budget` after this decision: the run that ended (if one did) counted, hours
    /// older than the window dropped. A budget available again clears its Degraded reason.
    fn account_budget(&mut self) {
        let status = self.input.status;
        let now = self.now();
        let ended = self
            .out
            .last_run
            .as_ref()
            .filter(|r| status.last_run.as_ref().map(|l| &l.id) != Some(&r.id));
        let hours = status
            .budget
            .as_ref()
            .map(|b| b.hours.as_slice())
            .unwrap_or_default();
        self.out.budget = budget::standing(
            self.spec().budget.as_ref(),
            budget::account(hours, ended, now),
            self.out.current_run.as_ref(),
            now,
        );
        // The status shows the runs that ended (stable between them); the run going counts on
        // top in every decision.
        if let Some(b) = self.out.budget.as_mut() {
            b.used_instance_seconds = b.hours.iter().map(|h| h.instance_seconds).sum();
        }
        let available = self.out.budget.as_ref().is_none_or(|b| !b.exhausted);
        let was_exhausted = status.conditions.iter().any(|c| {
            c.type_ == crate::api::conditions::DEGRADED
                && c.status == "True"
                && c.reason == reason::BUDGET_EXHAUSTED
        });
        if available && was_exhausted && self.out.degraded.is_none() {
            self.out.degraded = Some(ConditionUpdate {
                status: false,
                reason: reason::AS_EXPECTED,
                message: "the budget allows runs again".to_string(),
            });
        }
    }
}

fn degraded(reason: &'static str, message: String) -> ConditionUpdate {
    ConditionUpdate {
        status: true,
        reason,
        message,
    }
}
