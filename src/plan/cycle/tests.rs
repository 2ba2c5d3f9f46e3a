//! The cycle's rules, one decision at a time, and its invariants under random states
//! (proptest), and the crash tests that kill the operator at every step of a run.

use super::*;
use crate::api::conditions::event;
use proptest::prelude::*;

type Spec = EcsSelfTerminatingWorkerSpec;
type Status = EcsSelfTerminatingWorkerStatus;

/// A multiple of 60: the `1_MINUTE` schedule's next tick after `NOW` is `NOW + 60`.
const NOW: i64 = 1_800_000_000;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).expect("valid timestamp")
}

fn time(secs: i64) -> Time {
    Time(at(secs))
}

fn base_spec() -> Spec {
    crate::api::testing::spec_with(serde_json::json!({ "cronRate": "1_MINUTE" }))
}

/// `spec` as the controller hands it to the cycle.
fn valid(spec: &Spec) -> ValidatedSpec<'_> {
    crate::api::validate::validate(spec).expect("a valid spec")
}

/// A run as the status records it: scaled up at `scale_up_at`, no task started yet.
fn run(scale_up_at: i64, instances: i32) -> RunStatus {
    RunStatus {
        id: format!("run-{scale_up_at}"),
        scale_up_at: time(scale_up_at),
        instances,
        messages_before: 10,
        tasks_started_at: None,
        on_demand_fallback: false,
    }
}

fn started(mut run: RunStatus, at_secs: i64) -> RunStatus {
    run.tasks_started_at = Some(time(at_secs));
    run
}

/// One reconcile's inputs, built up by small steps.
#[derive(Clone, Debug)]
struct Case {
    spec: Spec,
    status: Status,
    obs: Observed,
    trigger: Option<String>,
    now: i64,
}

/// An idle worker: nothing up, queue empty, next tick in the future.
fn case() -> Case {
    Case {
        spec: base_spec(),
        status: Status {
            next_run_time: Some(time(NOW + 60)),
            ..Status::default()
        },
        obs: Observed::default(),
        trigger: None,
        now: NOW,
    }
}

impl Case {
    fn spec(mut self, f: impl FnOnce(&mut Spec)) -> Self {
        f(&mut self.spec);
        self
    }
    fn status(mut self, f: impl FnOnce(&mut Status)) -> Self {
        f(&mut self.status);
        self
    }
    fn due(self) -> Self {
        self.status(|s| s.next_run_time = Some(time(NOW)))
    }
    fn with_run(self, run: RunStatus) -> Self {
        self.status(|s| s.current_run = Some(run))
    }
    fn trigger(mut self, value: &str) -> Self {
        self.trigger = Some(value.to_string());
        self
    }
    fn at(mut self, now: i64) -> Self {
        self.now = now;
        self
    }
    fn visible(mut self, n: i64) -> Self {
        self.obs.queue.visible = n;
        self
    }
    fn desired(mut self, n: i32) -> Self {
        self.obs.group.desired_capacity = n;
        self
    }
    fn member(mut self, id: &str, lifecycle: Lifecycle) -> Self {
        self.obs.group.instances.push(GroupInstance {
            instance_id: id.into(),
            lifecycle,
        });
        self
    }
    fn container_instance(mut self, id: &str, status: ContainerInstanceStatus) -> Self {
        self.obs.container_instances.push(ContainerInstanceState {
            arn: format!("ci-{id}"),
            ec2_instance_id: Some(id.into()),
            status,
            running_tasks: 0,
        });
        self
    }
    /// An `InService` member with an `ACTIVE` container instance.
    fn joined(self, id: &str) -> Self {
        self.member(id, Lifecycle::InService)
            .container_instance(id, ContainerInstanceStatus::Active)
    }
    fn task(
        mut self,
        started_by: Option<&str>,
        on: &str,
        last_status: &str,
        exit: Option<i32>,
    ) -> Self {
        let stopped = last_status == "STOPPED";
        self.obs.tasks.push(TaskState {
            arn: format!("task-{}", self.obs.tasks.len()),
            started_by: started_by.map(str::to_string),
            container_instance_arn: Some(format!("ci-{on}")),
            last_status: last_status.into(),
            exit_code: exit,
            recorded_exit_code: None,
            stop_reason: stopped.then(|| format!("Essential container in task exited ({on})")),
            started_at: Some(at(NOW - 100)),
            stopped_at: stopped.then(|| at(NOW - 5)),
            stop_requested: false,
        });
        self
    }
    fn running(self, run_id: &str, on: &str) -> Self {
        self.task(Some(run_id), on, "RUNNING", None)
    }
    fn stopped(self, run_id: &str, on: &str, exit: Option<i32>) -> Self {
        self.task(Some(run_id), on, "STOPPED", exit)
    }
    fn decide(&self) -> Decision {
        decide(&Input {
            spec: &valid(&self.spec),
            status: &self.status,
            observed: &self.obs,
            trigger: self.trigger.as_deref(),
            now: at(self.now),
        })
    }
}

fn reasons(d: &Decision) -> Vec<&'static str> {
    d.events.iter().map(|e| e.reason).collect()
}

fn warnings(d: &Decision) -> Vec<&'static str> {
    d.events
        .iter()
        .filter(|e| e.warning)
        .map(|e| e.reason)
        .collect()
}

fn terminate(id: &str) -> Action {
    Action::TerminateInstance {
        instance_id: id.into(),
    }
}

/// RunTask of a worker's first run, which gets the short tail.
fn run_tasks(run_id: &str, count: i32) -> Action {
    Action::RunTasks {
        run_id: run_id.into(),
        first: 0,
        count,
        tail: Some(Tail::SHORT),
    }
}

// ---- schedule ----

#[test]
fn first_reconcile_sets_the_next_tick_and_starts_nothing() {
    let d = case()
        .status(|s| s.next_run_time = None)
        .visible(50)
        .decide();
    assert_eq!(d.next_run_time, Some(at(NOW + 60)));
    assert!(d.actions.is_empty());
    assert!(d.current_run.is_none());
    assert_eq!(d.phase, Phase::Idle);
    assert_eq!(d.requeue_after, Duration::from_secs(60));
}

#[test]
fn a_changed_schedule_resets_the_next_tick() {
    let d = case()
        .status(|s| s.next_run_time = Some(time(NOW + 3600)))
        .decide();
    assert_eq!(d.next_run_time, Some(at(NOW + 60)));
    let unchanged = case().at(NOW + 10).decide();
    assert_eq!(unchanged.next_run_time, Some(at(NOW + 60)));
    assert_eq!(unchanged.requeue_after, Duration::from_secs(50));
}

#[test]
fn idle_tick_makes_zero_writes() {
    let d = case().due().decide();
    assert!(d.actions.is_empty());
    assert!(d.events.is_empty());
    assert_eq!(d.next_run_time, Some(at(NOW + 60)));
    assert_eq!(d.phase, Phase::Idle);
    assert!(d.current_run.is_none() && d.degraded.is_none());
}

#[test]
fn tick_below_min_messages_does_nothing() {
    let d = case()
        .spec(|s| s.scaling.min_messages = 5)
        .due()
        .visible(4)
        .decide();
    assert!(d.actions.is_empty() && d.events.is_empty());
    assert_eq!(d.next_run_time, Some(at(NOW + 60)));
}

#[test]
fn an_empty_group_below_min_messages_needs_no_fresh_read() {
    for suspend in [false, true] {
        for c in [
            case(),
            case().due(),
            case().trigger("now"),
            case().due().trigger("x"),
        ] {
            let c = c
                .spec(|s| {
                    s.scaling.min_messages = 5;
                    s.suspend = suspend;
                })
                .visible(4);
            assert!(idle_view_suffices(&c.spec, &c.status, &c.obs.queue));
            let d = c.decide();
            assert!(d.actions.is_empty(), "{d:?}");
            assert!(d.current_run.is_none());
        }
    }
    let suffices = |c: Case| idle_view_suffices(&c.spec, &c.status, &c.obs.queue);
    assert!(!suffices(
        case().due().visible(4).with_run(run(NOW - 10, 1))
    ));
    assert!(!suffices(
        case().due().spec(|s| s.scaling.min_messages = 5).visible(5)
    ));
}

#[test]
fn tick_not_due_starts_nothing_even_with_work() {
    let d = case().visible(50).decide();
    assert!(d.actions.is_empty());
    assert_eq!(d.next_run_time, Some(at(NOW + 60)));
}

// ---- starting a run ----

#[test]
fn tick_with_work_scales_up_one_instance_per_messages_per_instance() {
    let d = case()
        .spec(|s| {
            s.max_instances = 5;
            s.scaling.messages_per_instance = 100;
        })
        .due()
        .visible(250)
        .decide();
    assert_eq!(d.actions, vec![Action::SetDesiredCapacity(3)]);
    assert_eq!(reasons(&d), vec![event::SCALING_UP]);
    assert_eq!(d.phase, Phase::ScalingUp);
    assert_eq!(d.next_run_time, Some(at(NOW + 60)));
    assert_eq!(
        d.current_run,
        Some(RunStatus {
            messages_before: 250,
            ..run(NOW, 3)
        })
    );
    assert_eq!(d.requeue_after, FAST_REQUEUE);
}

#[test]
fn scale_up_is_clamped_between_one_and_max_instances() {
    let many = case()
        .spec(|s| s.max_instances = 3)
        .due()
        .visible(10_000)
        .decide();
    assert_eq!(many.actions, vec![Action::SetDesiredCapacity(3)]);
    let one = case()
        .spec(|s| s.max_instances = 3)
        .due()
        .visible(1)
        .decide();
    assert_eq!(one.actions, vec![Action::SetDesiredCapacity(1)]);
    let exact = case()
        .spec(|s| {
            s.max_instances = 10;
            s.scaling.messages_per_instance = 10;
        })
        .due()
        .visible(20)
        .decide();
    assert_eq!(exact.actions, vec![Action::SetDesiredCapacity(2)]);
}

#[test]
fn suspended_tick_advances_the_schedule_and_starts_nothing() {
    let d = case().spec(|s| s.suspend = true).due().visible(50).decide();
    assert!(d.actions.is_empty() && d.events.is_empty());
    assert_eq!(d.next_run_time, Some(at(NOW + 60)));
    assert_eq!(d.phase, Phase::Suspended);
}

#[test]
fn suspended_worker_scales_idle_capacity_in() {
    let d = case()
        .spec(|s| s.suspend = true)
        .desired(1)
        .joined("i-1")
        .visible(50)
        .decide();
    assert_eq!(d.actions, vec![Action::SetDesiredCapacity(0)]);
    assert_eq!(reasons(&d), vec![event::IDLE_INSTANCE_SCALED_IN]);
    assert_eq!(d.phase, Phase::Suspended);
}

#[test]
fn suspended_run_in_progress_finishes() {
    let d = case()
        .spec(|s| s.suspend = true)
        .with_run(run(NOW - 60, 1))
        .desired(1)
        .joined("i-1")
        .decide();
    assert_eq!(d.actions, vec![run_tasks(&format!("run-{}", NOW - 60), 1)]);
    assert_eq!(d.phase, Phase::Running);
}

#[test]
fn manual_trigger_starts_a_run_once() {
    let first = case().visible(5).trigger("a").decide();
    assert_eq!(first.actions, vec![Action::SetDesiredCapacity(1)]);
    assert_eq!(reasons(&first), vec![event::TRIGGERED, event::SCALING_UP]);
    assert_eq!(first.last_trigger.as_deref(), Some("a"));
    assert_eq!(
        first.next_run_time,
        Some(at(NOW + 60)),
        "a trigger does not move the schedule"
    );

    let again = case()
        .status(|s| s.last_trigger = Some("a".into()))
        .visible(5)
        .trigger("a")
        .decide();
    assert!(again.actions.is_empty() && again.events.is_empty());
    assert_eq!(again.last_trigger.as_deref(), Some("a"));

    let new_value = case()
        .status(|s| s.last_trigger = Some("a".into()))
        .visible(5)
        .trigger("b")
        .decide();
    assert_eq!(new_value.actions, vec![Action::SetDesiredCapacity(1)]);
    assert_eq!(new_value.last_trigger.as_deref(), Some("b"));
}

#[test]
fn manual_trigger_without_work_is_acknowledged() {
    let d = case().trigger("x").decide();
    assert!(d.actions.is_empty());
    assert_eq!(reasons(&d), vec![event::TRIGGERED]);
    assert!(
        d.events[0].message.contains("nothing to do"),
        "{}",
        d.events[0].message
    );
    assert_eq!(d.last_trigger.as_deref(), Some("x"));
}

#[test]
fn manual_trigger_while_suspended_is_acknowledged_as_suspended() {
    let d = case()
        .spec(|s| s.suspend = true)
        .visible(5)
        .trigger("x")
        .decide();
    assert!(d.actions.is_empty());
    assert_eq!(reasons(&d), vec![event::TRIGGERED]);
    assert!(
        d.events[0].message.contains("suspend"),
        "{}",
        d.events[0].message
    );
    assert_eq!(d.last_trigger.as_deref(), Some("x"));
    assert!(d.current_run.is_none());
}

#[test]
fn tick_and_trigger_during_a_run_are_skipped() {
    let id = format!("run-{}", NOW - 100);
    let d = case()
        .due()
        .trigger("x")
        .with_run(started(run(NOW - 100, 1), NOW - 90))
        .desired(1)
        .joined("i-1")
        .running(&id, "i-1")
        .visible(5)
        .decide();
    assert!(d.actions.is_empty());
    assert_eq!(d.next_run_time, Some(at(NOW + 60)));
    assert_eq!(d.last_trigger.as_deref(), Some("x"));
    assert_eq!(reasons(&d), vec![event::TRIGGERED]);
    assert!(
        d.events[0].message.contains("in progress"),
        "{}",
        d.events[0].message
    );
    assert_eq!(d.phase, Phase::Running);
}

// ---- idle capacity (the original's first defect) ----

#[test]
fn idle_instance_with_empty_queue_is_scaled_in_at_any_reconcile() {
    let d = case().desired(1).joined("i-1").decide();
    assert_eq!(d.actions, vec![Action::SetDesiredCapacity(0)]);
    assert_eq!(reasons(&d), vec![event::IDLE_INSTANCE_SCALED_IN]);
    assert_eq!(d.phase, Phase::ScalingDown);
    assert_eq!(d.requeue_after, FAST_REQUEUE);
}

#[test]
fn idle_capacity_below_min_messages_is_scaled_in() {
    let d = case()
        .spec(|s| s.scaling.min_messages = 10)
        .desired(2)
        .visible(3)
        .decide();
    assert_eq!(d.actions, vec![Action::SetDesiredCapacity(0)]);
}

#[test]
fn idle_capacity_with_work_runs_right_away() {
    let d = case().desired(1).joined("i-1").visible(5).decide();
    let id = format!("run-{NOW}");
    assert_eq!(d.actions, vec![run_tasks(&id, 1)]);
    assert_eq!(
        reasons(&d),
        vec![
            event::SCALING_UP,
            event::INSTANCE_JOINED,
            event::TASK_STARTED
        ]
    );
    assert_eq!(d.phase, Phase::Running);
    let run = d.current_run.expect("run");
    assert_eq!(
        (run.id, run.instances, run.tasks_started_at),
        (id, 1, Some(time(NOW)))
    );
}

#[test]
fn idle_capacity_with_work_keeps_the_capacity_already_up() {
    let d = case()
        .spec(|s| s.max_instances = 5)
        .desired(3)
        .member("i-1", Lifecycle::Pending)
        .visible(5)
        .decide();
    assert!(
        d.actions.is_empty(),
        "desired is already 3: {:?}",
        d.actions
    );
    assert_eq!(d.current_run.map(|r| r.instances), Some(3));
    assert_eq!(d.phase, Phase::ScalingUp);
}

#[test]
fn capacity_already_going_to_zero_is_left_to_the_group() {
    let d = case()
        .member("i-1", Lifecycle::Terminating)
        .member("i-2", Lifecycle::InService)
        .visible(5)
        .decide();
    assert!(d.actions.is_empty());
    assert_eq!(d.phase, Phase::ScalingDown);
    assert_eq!(d.requeue_after, FAST_REQUEUE);
}

// ---- waiting for instances ----

#[test]
fn waits_while_instances_join() {
    let d = case()
        .spec(|s| s.max_instances = 2)
        .with_run(run(NOW - 30, 2))
        .desired(2)
        .joined("i-1")
        .member("i-2", Lifecycle::Pending)
        .decide();
    assert!(d.actions.is_empty() && d.events.is_empty());
    assert_eq!(d.phase, Phase::ScalingUp);
    assert_eq!(d.current_run, Some(run(NOW - 30, 2)));
    assert_eq!(d.requeue_after, FAST_REQUEUE);
}

#[test]
fn desired_capacity_is_set_again_when_the_status_was_ahead() {
    let d = case()
        .spec(|s| s.max_instances = 2)
        .with_run(run(NOW - 5, 2))
        .desired(0)
        .decide();
    assert_eq!(d.actions, vec![Action::SetDesiredCapacity(2)]);
    assert!(d.events.is_empty());
    assert_eq!(d.phase, Phase::ScalingUp);
}

#[test]
fn a_run_never_asks_for_more_than_max_instances() {
    let d = case()
        .spec(|s| s.max_instances = 2)
        .with_run(run(NOW - 5, 4))
        .decide();
    assert_eq!(d.actions, vec![Action::SetDesiredCapacity(2)]);
}

#[test]
fn joined_instances_run_the_worker_tasks() {
    let id = format!("run-{}", NOW - 40);
    let d = case()
        .spec(|s| s.max_instances = 2)
        .with_run(run(NOW - 40, 2))
        .desired(2)
        .joined("i-1")
        .joined("i-2")
        .decide();
    assert_eq!(d.actions, vec![run_tasks(&id, 2)]);
    assert_eq!(
        reasons(&d),
        vec![event::INSTANCE_JOINED, event::TASK_STARTED]
    );
    assert!(
        d.events[0].message.contains("40s"),
        "{}",
        d.events[0].message
    );
    assert_eq!(d.current_run, Some(started(run(NOW - 40, 2), NOW)));
    assert_eq!(d.phase, Phase::Running);
}

#[test]
fn a_start_interrupted_between_run_task_calls_starts_only_the_rest() {
    let id = format!("run-{}", NOW - 40);
    // Three instances joined, one task of the run placed on the first.
    let one_of_three = |current: RunStatus| {
        case()
            .spec(|s| s.max_instances = 3)
            .with_run(current)
            .desired(3)
            .joined("i-1")
            .joined("i-2")
            .joined("i-3")
            .running(&id, "i-1")
            .decide()
    };
    // The status recorded the scale-up, not the start.
    let d = one_of_three(run(NOW - 40, 3));
    assert_eq!(
        d.actions,
        vec![Action::RunTasks {
            run_id: id.clone(),
            first: 1,
            count: 2,
            tail: Some(Tail::SHORT),
        }]
    );
    assert_eq!(
        d.current_run,
        Some(run(NOW - 40, 3)),
        "recorded once all show"
    );
    // Once recorded, the start is complete: nothing more starts.
    let again = one_of_three(started(run(NOW - 40, 3), NOW));
    assert!(again.actions.is_empty(), "{:?}", again.actions);
}

#[test]
fn only_in_service_members_with_an_active_container_instance_count_as_joined() {
    let d = case()
        .with_run(run(NOW - 40, 1))
        .desired(1)
        .member("i-1", Lifecycle::Pending)
        .container_instance("i-1", ContainerInstanceStatus::Active)
        .member("i-2", Lifecycle::InService)
        .container_instance("i-2", ContainerInstanceStatus::Draining)
        .member("i-3", Lifecycle::InService)
        .container_instance("i-4", ContainerInstanceStatus::Active)
        .decide();
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert_eq!(d.phase, Phase::ScalingUp);
}

#[test]
fn a_busy_joined_instance_does_not_take_a_task() {
    let d = case()
        .with_run(run(NOW - 40, 1))
        .desired(1)
        .joined("i-1")
        .task(None, "i-1", "RUNNING", None)
        .decide();
    assert!(d.actions.is_empty(), "{:?}", d.actions);
}

const NO_SPOT: &str = "Could not launch Spot Instances. InsufficientInstanceCapacity - There is no Spot capacity available that matches your request. Launching EC2 instance failed.";
const NO_ON_DEMAND: &str = "We currently do not have sufficient g5.xlarge capacity in the Availability Zone you requested (us-east-1a). Launching EC2 instance failed.";

fn launch_failure(message: &str) -> LaunchFailure {
    LaunchFailure {
        message: message.into(),
    }
}

impl Case {
    fn launch_failure(mut self, message: &str) -> Self {
        self.obs.launch_failures.push(launch_failure(message));
        self
    }
}

#[test]
fn launch_failures_are_classified_from_the_messages_aws_documents() {
    let cases = [
        (NO_SPOT, reason::INSUFFICIENT_CAPACITY, true),
        (NO_ON_DEMAND, reason::INSUFFICIENT_CAPACITY, false),
        (
            "You have requested more vCPU capacity than your current vCPU limit of 0 allows for the instance bucket that the specified instance type belongs to. Please visit http://aws.amazon.com/contact-us/ec2-request to request an adjustment to this limit. Launching EC2 instance failed.",
            reason::QUOTA_EXCEEDED,
            false,
        ),
        (
            "Could not launch Spot Instances. MaxSpotInstanceCountExceeded - Max spot instance count exceeded. Launching EC2 instance failed.",
            reason::QUOTA_EXCEEDED,
            true,
        ),
        (
            "The architecture 'arm64' of the specified instance type does not match the architecture 'x86_64' of the specified AMI. Launching EC2 instance failed.",
            reason::LAUNCH_FAILED,
            false,
        ),
    ];
    for (message, reason, spot) in cases {
        let f = launch_failure(message);
        assert_eq!((f.reason(), f.spot()), (reason, spot), "{message}");
    }
}

#[test]
fn a_failed_launch_ends_the_run_at_once_with_aws_message() {
    let d = case()
        .with_run(run(NOW - 5, 1))
        .desired(1)
        .visible(7)
        .launch_failure(NO_ON_DEMAND)
        .decide();
    assert_eq!(d.actions, vec![Action::SetDesiredCapacity(0)]);
    assert_eq!(warnings(&d), vec![event::INSUFFICIENT_CAPACITY]);
    let record = d.last_run.expect("recorded");
    assert_eq!(record.outcome, RunOutcome::LaunchFailed);
    assert_eq!(record.stop_reason.as_deref(), Some(NO_ON_DEMAND));
    let degraded = d.degraded.expect("degraded");
    assert_eq!(degraded.reason, reason::INSUFFICIENT_CAPACITY);
    assert!(degraded.message.contains(NO_ON_DEMAND));
    assert_eq!(d.consecutive_failed_runs, 1);
}

#[test]
fn a_failed_launch_waits_for_the_join_timeout_when_some_instance_came_up() {
    let d = case()
        .with_run(run(NOW - 5, 2))
        .desired(2)
        .member("i-1", Lifecycle::Pending)
        .visible(7)
        .launch_failure(NO_ON_DEMAND)
        .decide();
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert!(d.current_run.is_some());
}

#[test]
fn spot_with_fallback_continues_on_demand_then_ends_on_an_on_demand_failure() {
    let fallback = |s: &mut Spec| {
        s.capacity.capacity_type = CapacityType::SpotWithFallback;
        s.max_instances = 2;
    };
    let d = case()
        .spec(fallback)
        .with_run(run(NOW - 5, 2))
        .desired(2)
        .visible(7)
        .launch_failure(NO_SPOT)
        .decide();
    assert_eq!(
        d.actions,
        vec![Action::SetOnDemandPercentage {
            percentage: 100,
            desired: 2
        }]
    );
    assert_eq!(warnings(&d), vec![event::ON_DEMAND_FALLBACK]);
    let run_now = d.current_run.expect("still running");
    assert!(run_now.on_demand_fallback);
    assert!(d.last_run.is_none());

    // The Spot failure is history; the On-Demand launch is awaited.
    let waiting = case()
        .spec(fallback)
        .with_run(run_now.clone())
        .desired(2)
        .visible(7)
        .launch_failure(NO_SPOT)
        .at(NOW + 2)
        .decide();
    assert!(waiting.actions.is_empty(), "{:?}", waiting.actions);
    assert!(waiting.current_run.is_some());

    // An On-Demand failure ends it, recorded as a fallback run.
    let ended = case()
        .spec(fallback)
        .with_run(run_now)
        .desired(2)
        .visible(7)
        .launch_failure(NO_ON_DEMAND)
        .launch_failure(NO_SPOT)
        .at(NOW + 4)
        .decide();
    let record = ended.last_run.expect("recorded");
    assert_eq!(record.outcome, RunOutcome::LaunchFailed);
    assert!(record.on_demand_fallback);
    assert_eq!(ended.actions, vec![Action::SetDesiredCapacity(0)]);
}

#[test]
fn spot_alone_never_falls_back_and_a_bad_parameter_never_does() {
    let d = case()
        .spec(|s| s.capacity.capacity_type = CapacityType::Spot)
        .with_run(run(NOW - 5, 1))
        .desired(1)
        .visible(7)
        .launch_failure(NO_SPOT)
        .decide();
    assert_eq!(d.last_run.expect("ended").outcome, RunOutcome::LaunchFailed);
    let d = case()
        .spec(|s| s.capacity.capacity_type = CapacityType::SpotWithFallback)
        .with_run(run(NOW - 5, 1))
        .desired(1)
        .visible(7)
        .launch_failure("Could not launch Spot Instances. InvalidParameterValue - bad. Launching EC2 instance failed.")
        .decide();
    assert_eq!(d.degraded.expect("degraded").reason, reason::LAUNCH_FAILED);
}

#[test]
fn the_run_after_a_fallback_tries_spot_again() {
    let d = case()
        .spec(|s| s.capacity.capacity_type = CapacityType::SpotWithFallback)
        .due()
        .visible(3)
        .decide();
    assert_eq!(d.actions, vec![Action::SetDesiredCapacity(1)]);
    let mut c = case()
        .spec(|s| s.capacity.capacity_type = CapacityType::SpotWithFallback)
        .due()
        .visible(3);
    c.obs.group.on_demand_percentage = Some(100);
    let d = c.decide();
    assert_eq!(
        d.actions,
        vec![
            Action::SetOnDemandPercentage {
                percentage: 0,
                desired: 0
            },
            Action::SetDesiredCapacity(1)
        ]
    );
}

fn budget(hours: i32, on_exhausted: OnExhausted) -> crate::api::BudgetSpec {
    crate::api::BudgetSpec {
        max_instance_hours_per_day: Some(hours),
        on_exhausted,
        ..Default::default()
    }
}

/// The status of a worker whose runs used `seconds` instance-seconds an hour ago.
fn used(seconds: i64) -> impl FnOnce(&mut Status) {
    move |s: &mut Status| {
        s.budget = Some(BudgetStatus {
            hours: vec![crate::api::UsageHour {
                hour: time((NOW - 3600).div_euclid(3600) * 3600),
                instance_seconds: seconds,
            }],
            ..Default::default()
        })
    }
}

#[test]
fn a_used_up_budget_starts_no_run_says_when_it_resets_and_leaves_the_queue() {
    let d = case()
        .spec(|s| s.budget = Some(budget(2, OnExhausted::Finish)))
        .status(used(2 * 3600))
        .due()
        .visible(9)
        .decide();
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert!(d.current_run.is_none());
    assert_eq!(warnings(&d), vec![event::BUDGET_EXHAUSTED]);
    let degraded = d.degraded.expect("degraded");
    assert_eq!(degraded.reason, reason::BUDGET_EXHAUSTED);
    let resets = (NOW - 3600).div_euclid(3600) * 3600 + budget::WINDOW;
    assert!(
        degraded.message.contains(&at(resets).to_string()),
        "{}",
        degraded.message
    );
    let b = d.budget.expect("budget status");
    assert!(b.exhausted);
    assert_eq!(b.resets_at, Some(time(resets)));

    // Under the limit, the run starts, and a BudgetExhausted Degraded is cleared.
    let d = case()
        .spec(|s| s.budget = Some(budget(3, OnExhausted::Finish)))
        .status(used(2 * 3600))
        .status(|s| {
            crate::api::conditions::set(
                &mut s.conditions,
                crate::api::conditions::DEGRADED,
                true,
                reason::BUDGET_EXHAUSTED,
                "used up",
                None,
                time(NOW - 60),
            )
        })
        .due()
        .visible(9)
        .decide();
    assert_eq!(d.actions, vec![Action::SetDesiredCapacity(1)]);
    let cleared = d.degraded.expect("cleared");
    assert!(!cleared.status);
}

#[test]
fn a_run_that_ends_is_counted_in_the_hour_it_ended() {
    let d = case()
        .spec(|s| s.budget = Some(budget(5, OnExhausted::Finish)))
        .with_run(started(run(NOW - 600, 1), NOW - 500))
        .joined("i-1")
        .stopped(&format!("run-{}", NOW - 600), "i-1", Some(0))
        .decide();
    let record = d.last_run.clone().expect("ended");
    let b = d.budget.expect("budget");
    assert_eq!(
        b.used_instance_seconds,
        record.stopped_at.0.as_second() - (NOW - 600)
    );
    assert!(!b.exhausted);
}

#[test]
fn on_exhausted_stop_stops_the_run_going_and_finish_lets_it_run() {
    let id = format!("run-{}", NOW - 1800);
    let going = |on: OnExhausted| {
        case()
            .spec(move |s| s.budget = Some(budget(1, on)))
            .status(used(3000))
            .with_run(started(run(NOW - 1800, 1), NOW - 1700))
            .desired(1)
            .joined("i-1")
            .running(&id, "i-1")
            .decide()
    };
    let d = going(OnExhausted::Stop);
    assert!(
        matches!(&d.actions[..], [Action::StopTask { reason, .. }] if reason.contains("budget")),
        "{:?}",
        d.actions
    );
    assert_eq!(warnings(&d), vec![event::BUDGET_EXHAUSTED]);
    let d = going(OnExhausted::Finish);
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert!(d.budget.expect("budget").exhausted);
}

#[test]
fn no_run_starts_in_a_blackout_window() {
    // A window that opens every minute for 5 minutes is always open.
    let d = case()
        .spec(|s| {
            s.budget = Some(crate::api::BudgetSpec {
                blackout_windows: vec![crate::api::BlackoutWindow {
                    start: "* * * * *".into(),
                    duration_minutes: 5,
                }],
                ..Default::default()
            })
        })
        .due()
        .visible(9)
        .decide();
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert_eq!(reasons(&d), vec![event::BLACKOUT_WINDOW]);
    assert!(d.current_run.is_none());
}

#[test]
fn join_timeout_with_none_joined_scales_back_without_run_task() {
    let id = format!("run-{}", NOW - 300);
    let d = case()
        .with_run(run(NOW - 300, 2))
        .desired(2)
        .member("i-1", Lifecycle::Pending)
        .member("i-2", Lifecycle::InService)
        .visible(7)
        .decide();
    assert_eq!(d.actions, vec![Action::SetDesiredCapacity(0)]);
    assert_eq!(
        reasons(&d),
        vec![event::SCALE_UP_TIMED_OUT, event::SCALED_TO_ZERO]
    );
    assert_eq!(warnings(&d), vec![event::SCALE_UP_TIMED_OUT]);
    assert!(d.current_run.is_none());
    let record = d.last_run.expect("recorded");
    assert_eq!(record.id, id);
    assert_eq!(record.outcome, RunOutcome::ScaleUpTimedOut);
    assert_eq!(record.started_at, None);
    assert_eq!(record.stopped_at, time(NOW));
    assert_eq!(record.messages_after, Some(7));
    assert!(record.stop_reason.expect("reason").contains("300s"));
    let degraded = d.degraded.expect("degraded");
    assert!(degraded.status);
    assert_eq!(degraded.reason, reason::SCALE_UP_TIMED_OUT);
    assert_eq!(d.phase, Phase::ScalingDown);
}

#[test]
fn join_timeout_counts_from_scale_up() {
    let d = case()
        .with_run(run(NOW - 299, 1))
        .desired(1)
        .member("i-1", Lifecycle::Pending)
        .decide();
    assert!(d.actions.is_empty());
    let short = case()
        .spec(|s| s.scaling.join_timeout_seconds = 60)
        .with_run(run(NOW - 60, 1))
        .desired(1)
        .decide();
    assert_eq!(short.actions, vec![Action::SetDesiredCapacity(0)]);
}

#[test]
fn join_timeout_with_some_joined_runs_on_those_and_terminates_the_rest() {
    let id = format!("run-{}", NOW - 300);
    let d = case()
        .spec(|s| s.max_instances = 3)
        .with_run(run(NOW - 300, 3))
        .desired(3)
        .joined("i-1")
        .member("i-2", Lifecycle::Pending)
        .member("i-3", Lifecycle::InService)
        .member("i-4", Lifecycle::Terminating)
        .decide();
    assert_eq!(
        d.actions,
        vec![terminate("i-2"), terminate("i-3"), run_tasks(&id, 1)]
    );
    assert_eq!(
        reasons(&d),
        vec![
            event::SCALE_UP_TIMED_OUT,
            event::INSTANCE_JOINED,
            event::TASK_STARTED
        ]
    );
    assert_eq!(warnings(&d), vec![event::SCALE_UP_TIMED_OUT]);
    assert_eq!(d.current_run, Some(started(run(NOW - 300, 1), NOW)));
    assert!(d.degraded.is_none());
    assert_eq!(d.phase, Phase::Running);
}

#[test]
fn partial_join_terminates_nothing_while_a_task_has_no_known_instance() {
    let d = case()
        .spec(|s| s.max_instances = 2)
        .with_run(run(NOW - 300, 2))
        .desired(2)
        .joined("i-1")
        .member("i-2", Lifecycle::Pending)
        .task(None, "nowhere", "PENDING", None)
        .decide();
    assert_eq!(d.actions, vec![run_tasks(&format!("run-{}", NOW - 300), 1)]);
}

// ---- RunTask idempotence ----

#[test]
fn run_task_is_not_repeated_within_the_grace() {
    let d = case()
        .with_run(started(run(NOW - 60, 1), NOW - 14))
        .desired(1)
        .joined("i-1")
        .decide();
    assert!(d.actions.is_empty() && d.events.is_empty());
    assert_eq!(d.phase, Phase::Running);
    assert_eq!(d.current_run, Some(started(run(NOW - 60, 1), NOW - 14)));
}

#[test]
fn run_task_is_repeated_with_the_same_token_after_the_grace() {
    let id = format!("run-{}", NOW - 60);
    let base = case()
        .spec(|s| s.max_instances = 2)
        .with_run(started(run(NOW - 60, 2), NOW - 15));
    let d = base.clone().desired(2).joined("i-1").joined("i-2").decide();
    assert_eq!(d.actions, vec![run_tasks(&id, 2)]);
    assert!(d.events.is_empty(), "a repeat is not a new start");
    assert_eq!(d.current_run, Some(started(run(NOW - 60, 2), NOW - 15)));
    let fewer = base.clone().desired(2).joined("i-1").decide();
    assert_eq!(fewer.actions, vec![run_tasks(&id, 1)]);
    let none = base.desired(2).decide();
    assert!(none.actions.is_empty());
}

// ---- tail ----

/// A finished run that stopped at `stopped_at`.
fn finished(stopped_at: i64) -> RunRecord {
    RunRecord {
        id: format!("run-{}", stopped_at - 200),
        outcome: RunOutcome::Succeeded,
        scale_up_at: time(stopped_at - 200),
        started_at: Some(time(stopped_at - 120)),
        stopped_at: time(stopped_at),
        instances: 1,
        exit_code: Some(0),
        stop_reason: None,
        messages_before: 3,
        messages_after: Some(0),
        on_demand_fallback: false,
    }
}

fn tail_of(d: &Decision) -> Option<Tail> {
    match d.actions.as_slice() {
        [Action::RunTasks { tail, .. }] => *tail,
        other => panic!("expected one RunTasks, got {other:?}"),
    }
}

#[test]
fn a_run_after_a_long_idle_spell_gets_the_short_tail_and_says_so() {
    let scaled_up = NOW - 60;
    let base = case().with_run(run(scaled_up, 1)).desired(1).joined("i-1");
    let first = base.clone().decide();
    assert_eq!(tail_of(&first), Some(Tail::SHORT));
    assert!(
        first.events[1].message.contains("1 empty receive(s) of 5s"),
        "{:?}",
        first.events
    );
    let after_idle = base
        .clone()
        .status(|s| s.last_run = Some(finished(scaled_up - 600)))
        .decide();
    assert_eq!(tail_of(&after_idle), Some(Tail::SHORT));
    let soon_after = base
        .clone()
        .status(|s| s.last_run = Some(finished(scaled_up - 599)))
        .decide();
    assert_eq!(tail_of(&soon_after), None);
    assert!(!soon_after.events[1].message.contains("empty receive"));
    let off = base.spec(|s| s.worker.adaptive_tail = false).decide();
    assert_eq!(tail_of(&off), None);
}

#[test]
fn the_short_tail_never_lengthens_the_configured_one() {
    let spec_with = |wait: i32, empty: i32| {
        let mut spec = base_spec();
        spec.queue.receive_wait_time_seconds = wait;
        spec.worker.empty_receives = empty;
        spec
    };
    let tail = |wait, empty| run_tail(&spec_with(wait, empty), None, at(NOW));
    assert_eq!(tail(20, 2), Some(Tail::SHORT));
    assert_eq!(tail(5, 2), Some(Tail::SHORT));
    assert_eq!(
        tail(3, 4),
        Some(Tail {
            empty_receives: 1,
            wait_seconds: 3
        })
    );
    assert_eq!(tail(5, 1), None, "already as short");
    assert_eq!(tail(1, 1), None);
    assert_eq!(Tail::configured(&spec_with(20, 2)).seconds(), 40);
}

#[test]
fn a_repeated_run_task_asks_for_the_same_tail() {
    let id = format!("run-{}", NOW - 60);
    let d = case()
        .with_run(started(run(NOW - 60, 1), NOW - 15))
        .desired(1)
        .joined("i-1")
        .decide();
    assert_eq!(d.actions, vec![run_tasks(&id, 1)]);
    let recent = case()
        .status(|s| s.last_run = Some(finished(NOW - 120)))
        .with_run(started(run(NOW - 60, 1), NOW - 15))
        .desired(1)
        .joined("i-1")
        .decide();
    assert_eq!(tail_of(&recent), None);
}

#[test]
fn no_task_long_after_run_task_fails_the_run() {
    let d = case()
        .with_run(started(run(NOW - 400, 1), NOW - 300))
        .desired(1)
        .joined("i-1")
        .decide();
    assert_eq!(d.actions, vec![Action::SetDesiredCapacity(0)]);
    assert_eq!(warnings(&d), vec![event::TASK_STOPPED]);
    let record = d.last_run.expect("recorded");
    assert_eq!(record.outcome, RunOutcome::Failed);
    assert_eq!(record.started_at, Some(time(NOW - 300)));
    assert_eq!(
        d.degraded.map(|c| (c.status, c.reason)),
        Some((true, reason::RUN_FAILED))
    );
    assert!(d.current_run.is_none());
}

#[test]
fn failed_runs_in_a_row_are_counted_and_a_success_resets_the_count() {
    let id = format!("run-{}", NOW - 100);
    let ended = |exit: i32, before: i32| {
        case()
            .status(|s| s.consecutive_failed_runs = before)
            .with_run(started(run(NOW - 100, 1), NOW - 90))
            .stopped(&id, "i-1", Some(exit))
            .decide()
    };
    assert_eq!(ended(3, 0).consecutive_failed_runs, 1);
    assert_eq!(ended(3, 2).consecutive_failed_runs, 3);
    assert_eq!(ended(0, 2).consecutive_failed_runs, 0);
    // Exit 4: interrupted (messages returned), neither a failure nor a success.
    assert_eq!(ended(4, 2).consecutive_failed_runs, 2);
    // No run ended: the count is carried over.
    let idle = case().status(|s| s.consecutive_failed_runs = 2).decide();
    assert_eq!(idle.consecutive_failed_runs, 2);
    let mut status = Status::default();
    ended(3, 4).write_to(&mut status);
    assert_eq!(status.consecutive_failed_runs, 5);
}

#[test]
fn a_start_never_recorded_fails_after_twice_the_join_timeout() {
    let id = format!("run-{}", NOW - 600);
    let base = case().with_run(run(NOW - 600, 1)).desired(1).joined("i-1");
    let before = base.clone().at(NOW - 1).decide();
    assert_eq!(before.actions, vec![run_tasks(&id, 1)]);
    let d = base.decide();
    assert_eq!(d.actions, vec![Action::SetDesiredCapacity(0)]);
    assert_eq!(warnings(&d), vec![event::TASK_STOPPED]);
    let record = d.last_run.expect("recorded");
    assert_eq!(record.outcome, RunOutcome::Failed);
    assert!(
        record
            .stop_reason
            .expect("reason")
            .contains("600s of scale-up")
    );
}

// ---- status behind AWS ----

#[test]
fn running_tasks_are_adopted_when_the_status_has_no_run() {
    let id = format!("run-{}", NOW - 200);
    let d = case()
        .desired(1)
        .joined("i-1")
        .visible(3)
        .running(&id, "i-1")
        .decide();
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert_eq!(reasons(&d), vec![event::TASK_STARTED]);
    assert_eq!(
        d.current_run,
        Some(RunStatus {
            id,
            scale_up_at: time(NOW - 200),
            instances: 1,
            messages_before: 3,
            tasks_started_at: Some(time(NOW - 100)),
            on_demand_fallback: false,
        })
    );
    assert_eq!(d.phase, Phase::Running);
}

#[test]
fn adoption_falls_back_to_task_times_for_foreign_ids() {
    let d = case()
        .desired(1)
        .joined("i-1")
        .running("manual", "i-1")
        .decide();
    let run = d.current_run.expect("adopted");
    assert_eq!(run.id, "manual");
    assert_eq!(run.scale_up_at, time(NOW - 100));
}

#[test]
fn active_tasks_of_another_run_replace_a_run_without_tasks() {
    let other = format!("run-{}", NOW - 500);
    let d = case()
        .with_run(run(NOW - 10, 1))
        .desired(1)
        .joined("i-1")
        .running(&other, "i-1")
        .decide();
    assert!(
        d.actions.is_empty(),
        "never a second task set: {:?}",
        d.actions
    );
    assert_eq!(d.current_run.map(|r| r.id), Some(other));
}

#[test]
fn tasks_seen_fill_in_the_start_the_status_missed() {
    let id = format!("run-{}", NOW - 60);
    let d = case()
        .with_run(run(NOW - 60, 1))
        .desired(1)
        .joined("i-1")
        .running(&id, "i-1")
        .decide();
    assert!(d.actions.is_empty());
    assert!(d.events.is_empty());
    assert_eq!(d.current_run, Some(started(run(NOW - 60, 1), NOW - 100)));
}

#[test]
fn tasks_without_a_run_id_keep_their_capacity() {
    let d = case()
        .due()
        .desired(1)
        .joined("i-1")
        .visible(5)
        .task(None, "i-1", "RUNNING", None)
        .decide();
    assert!(d.actions.is_empty());
    assert!(d.current_run.is_none());
    assert_eq!(d.next_run_time, Some(at(NOW + 60)));
    assert_eq!(d.phase, Phase::Running);
    let triggered = case().desired(1).joined("i-1").visible(5).trigger("x");
    let triggered = triggered.task(None, "i-1", "RUNNING", None).decide();
    assert_eq!(reasons(&triggered), vec![event::TRIGGERED]);
    assert!(triggered.actions.is_empty());
    let counted = case().desired(1).joined("i-1").decide();
    assert_eq!(counted.actions, vec![Action::SetDesiredCapacity(0)]);
    let mut busy = case().desired(1).joined("i-1");
    busy.obs.container_instances[0].running_tasks = 1;
    assert!(busy.decide().actions.is_empty(), "ECS counts a task on it");
}

// ---- running ----

#[test]
fn an_instance_whose_task_stopped_is_terminated_while_others_run() {
    let id = format!("run-{}", NOW - 100);
    let d = case()
        .spec(|s| s.max_instances = 2)
        .with_run(started(run(NOW - 100, 2), NOW - 10))
        .desired(2)
        .joined("i-1")
        .joined("i-2")
        .stopped(&id, "i-1", Some(0))
        .running(&id, "i-2")
        .decide();
    assert_eq!(d.actions, vec![terminate("i-1")]);
    assert_eq!(reasons(&d), vec![event::IDLE_INSTANCE_SCALED_IN]);
    assert_eq!(d.phase, Phase::Running);
    assert!(d.current_run.is_some());
}

#[test]
fn an_instance_already_leaving_is_not_terminated_again() {
    let id = format!("run-{}", NOW - 100);
    let d = case()
        .spec(|s| s.max_instances = 2)
        .with_run(started(run(NOW - 100, 2), NOW - 10))
        .desired(1)
        .member("i-1", Lifecycle::Terminating)
        .container_instance("i-1", ContainerInstanceStatus::Active)
        .joined("i-2")
        .stopped(&id, "i-1", Some(0))
        .running(&id, "i-2")
        .decide();
    assert!(d.actions.is_empty());
}

#[test]
fn an_instance_without_a_task_is_terminated_after_the_grace() {
    let id = format!("run-{}", NOW - 100);
    let base = case()
        .spec(|s| s.max_instances = 2)
        .desired(2)
        .joined("i-1")
        .joined("i-2")
        .running(&id, "i-1");
    let early = base
        .clone()
        .with_run(started(run(NOW - 100, 2), NOW - 14))
        .decide();
    assert!(early.actions.is_empty());
    let late = base.with_run(started(run(NOW - 100, 2), NOW - 15)).decide();
    assert_eq!(late.actions, vec![terminate("i-2")]);
}

#[test]
fn nothing_is_terminated_while_an_active_task_has_no_known_instance() {
    let id = format!("run-{}", NOW - 100);
    let d = case()
        .spec(|s| s.max_instances = 2)
        .with_run(started(run(NOW - 100, 2), NOW - 60))
        .desired(2)
        .joined("i-1")
        .joined("i-2")
        .stopped(&id, "i-1", Some(0))
        .task(Some(&id), "unknown", "RUNNING", None)
        .decide();
    assert!(d.actions.is_empty());
}

#[test]
fn an_instance_with_a_running_task_is_never_terminated() {
    let id = format!("run-{}", NOW - 100);
    let d = case()
        .with_run(started(run(NOW - 100, 1), NOW - 60))
        .desired(1)
        .joined("i-1")
        .stopped(&id, "i-1", Some(0))
        .running(&id, "i-1")
        .decide();
    assert!(d.actions.is_empty());
}

// ---- run end ----

#[test]
fn all_tasks_stopped_with_exit_zero_records_success_and_scales_to_zero() {
    let id = format!("run-{}", NOW - 100);
    let d = case()
        .spec(|s| s.max_instances = 2)
        .with_run(RunStatus {
            messages_before: 42,
            ..started(run(NOW - 100, 2), NOW - 90)
        })
        .desired(1)
        .joined("i-2")
        .stopped(&id, "i-1", Some(0))
        .stopped(&id, "i-2", Some(0))
        .decide();
    assert_eq!(d.actions, vec![Action::SetDesiredCapacity(0)]);
    assert_eq!(
        reasons(&d),
        vec![event::TASK_STOPPED, event::SCALED_TO_ZERO]
    );
    assert!(warnings(&d).is_empty());
    assert!(d.current_run.is_none());
    assert_eq!(
        d.last_run,
        Some(RunRecord {
            id,
            outcome: RunOutcome::Succeeded,
            scale_up_at: time(NOW - 100),
            started_at: Some(time(NOW - 90)),
            stopped_at: time(NOW - 5),
            instances: 2,
            exit_code: Some(0),
            stop_reason: Some("Essential container in task exited (i-2)".into()),
            messages_before: 42,
            messages_after: Some(0),
            on_demand_fallback: false,
        })
    );
    let degraded = d.degraded.expect("condition");
    assert_eq!(
        (degraded.status, degraded.reason),
        (false, reason::AS_EXPECTED)
    );
    assert_eq!(d.phase, Phase::ScalingDown);
}

#[test]
fn a_non_zero_exit_records_failure_with_the_highest_code() {
    let id = format!("run-{}", NOW - 100);
    let d = case()
        .spec(|s| s.max_instances = 3)
        .with_run(started(run(NOW - 100, 3), NOW - 90))
        .visible(4)
        .stopped(&id, "i-1", Some(0))
        .stopped(&id, "i-2", Some(3))
        .stopped(&id, "i-3", Some(1))
        .decide();
    assert!(d.actions.is_empty(), "capacity is already 0");
    assert_eq!(warnings(&d), vec![event::TASK_STOPPED]);
    assert!(
        d.events[0].message.contains("exit code 3"),
        "{}",
        d.events[0].message
    );
    let record = d.last_run.clone().expect("recorded");
    assert_eq!(record.outcome, RunOutcome::Failed);
    assert_eq!(record.exit_code, Some(3));
    assert_eq!(
        record.stop_reason.as_deref(),
        Some("Essential container in task exited (i-2)")
    );
    assert_eq!(record.messages_after, Some(4));
    let degraded = d.degraded.clone().expect("condition");
    assert_eq!(
        (degraded.status, degraded.reason),
        (true, reason::RUN_FAILED)
    );
    assert_eq!(
        reasons(&d),
        vec![event::TASK_STOPPED, event::SCALED_TO_ZERO]
    );
    assert_eq!(d.phase, Phase::Idle);
}

/// The worker recorded its outcome, then its instance went down before the agent reported
/// the exit: ECS stopped the task without an exit code.
fn host_terminated(mut c: Case, task: usize, recorded: Option<i32>) -> Case {
    let t = &mut c.obs.tasks[task];
    t.exit_code = None;
    t.recorded_exit_code = recorded;
    t.stop_reason = Some("Host EC2 (instance i-2) terminated.".into());
    c
}

#[test]
fn a_drain_recorded_on_the_task_succeeds_when_the_host_went_down_before_the_agent_reported() {
    let id = format!("run-{}", NOW - 100);
    let c = case()
        .spec(|s| s.max_instances = 2)
        .with_run(started(run(NOW - 100, 2), NOW - 90))
        .stopped(&id, "i-1", Some(0))
        .stopped(&id, "i-2", Some(0));
    let d = host_terminated(c, 1, Some(0)).decide();
    let record = d.last_run.clone().expect("recorded");
    assert_eq!(
        (record.outcome, record.exit_code),
        (RunOutcome::Succeeded, Some(0))
    );
    assert!(warnings(&d).is_empty(), "{:?}", d.events);
    assert_eq!(d.degraded.map(|c| c.status), Some(false));
}

#[test]
fn a_failure_recorded_on_the_task_fails_the_run_with_its_code() {
    let id = format!("run-{}", NOW - 100);
    let c = case()
        .with_run(started(run(NOW - 100, 1), NOW - 90))
        .stopped(&id, "i-2", None);
    let record = host_terminated(c, 0, Some(3))
        .decide()
        .last_run
        .expect("recorded");
    assert_eq!(
        (record.outcome, record.exit_code),
        (RunOutcome::Failed, Some(3))
    );
    assert_eq!(
        record.stop_reason.as_deref(),
        Some("Host EC2 (instance i-2) terminated.")
    );
}

/// A Spot interruption notice drained the instance of a running task: the task is stopped
/// once (SIGTERM to the worker); instances and the run stay as they are meanwhile.
#[test]
fn a_task_on_a_draining_instance_is_stopped_once() {
    let id = format!("run-{}", NOW - 100);
    let c = case()
        .spec(|s| s.max_instances = 2)
        .visible(7)
        .desired(2)
        .member("i-1", Lifecycle::InService)
        .container_instance("i-1", ContainerInstanceStatus::Draining)
        .joined("i-2")
        .with_run(started(run(NOW - 100, 2), NOW - 90))
        .running(&id, "i-1")
        .running(&id, "i-2");
    let d = c.decide();
    assert_eq!(
        d.actions,
        vec![Action::StopTask {
            task_arn: "task-0".into(),
            reason: "Container instance i-1 is draining".into(),
        }]
    );
    assert_eq!(warnings(&d), vec![event::INSTANCE_DRAINING]);
    assert!(d.current_run.is_some() && d.last_run.is_none());
    let mut asked = c.clone();
    asked.obs.tasks[0].stop_requested = true;
    assert!(asked.decide().actions.is_empty(), "stopped once");
}

/// The worker of a drained instance returned its messages and exited 4: the run was
/// interrupted, which asks nothing of the user (not Degraded), and the instance goes.
#[test]
fn a_worker_stopped_before_the_queue_was_drained_interrupts_the_run() {
    let id = format!("run-{}", NOW - 100);
    let mut c = case()
        .visible(7)
        .desired(1)
        .member("i-1", Lifecycle::InService)
        .container_instance("i-1", ContainerInstanceStatus::Draining)
        .with_run(started(run(NOW - 100, 1), NOW - 90))
        .stopped(&id, "i-1", Some(INTERRUPTED_EXIT_CODE));
    c.obs.tasks[0].stop_reason = Some("Container instance i-1 is draining".into());
    let d = c.decide();
    let record = d.last_run.clone().expect("recorded");
    assert_eq!(
        (record.outcome, record.exit_code),
        (RunOutcome::Interrupted, Some(INTERRUPTED_EXIT_CODE))
    );
    assert_eq!(
        record.stop_reason.as_deref(),
        Some("Container instance i-1 is draining")
    );
    assert_eq!(record.messages_after, Some(7));
    assert_eq!(d.degraded.map(|c| c.status), Some(false));
    assert!(
        d.events.iter().any(|e| e.warning
            && e.reason == event::TASK_STOPPED
            && e.message.contains("interrupted")),
        "{:?}",
        d.events
    );
    assert!(
        d.actions.contains(&Action::SetDesiredCapacity(0))
            || d.actions
                .iter()
                .any(|a| matches!(a, Action::TerminateInstance { .. })),
        "{:?}",
        d.actions
    );

    // With another task that failed, the run failed.
    let failed = c.stopped(&id, "i-2", Some(3)).decide();
    assert_eq!(failed.last_run.map(|r| r.outcome), Some(RunOutcome::Failed));
}

#[test]
fn without_exit_code_or_recorded_outcome_the_run_fails() {
    let id = format!("run-{}", NOW - 100);
    let c = case()
        .with_run(started(run(NOW - 100, 1), NOW - 90))
        .stopped(&id, "i-2", None);
    let record = host_terminated(c, 0, None)
        .decide()
        .last_run
        .expect("recorded");
    assert_eq!(
        (record.outcome, record.exit_code),
        (RunOutcome::Failed, None)
    );
}

#[test]
fn a_reported_exit_code_wins_over_the_recorded_outcome() {
    // The worker recorded 0, then could not remove its instance and exited 5; the agent,
    // still up, reported it.
    let id = format!("run-{}", NOW - 100);
    let mut c = case()
        .with_run(started(run(NOW - 100, 1), NOW - 90))
        .stopped(&id, "i-1", Some(5));
    c.obs.tasks[0].recorded_exit_code = Some(0);
    let record = c.decide().last_run.expect("recorded");
    assert_eq!(
        (record.outcome, record.exit_code),
        (RunOutcome::Failed, Some(5))
    );
}

#[test]
fn a_task_that_never_ran_its_container_fails_the_run() {
    let id = format!("run-{}", NOW - 100);
    let mut c = case()
        .with_run(started(run(NOW - 100, 1), NOW - 90))
        .stopped(&id, "i-1", None);
    c.obs.tasks[0].stop_reason = Some("CannotPullContainerError".into());
    c.obs.tasks[0].stopped_at = None;
    let record = c.decide().last_run.expect("recorded");
    assert_eq!(record.outcome, RunOutcome::Failed);
    assert_eq!(record.exit_code, None);
    assert_eq!(
        record.stop_reason.as_deref(),
        Some("CannotPullContainerError")
    );
    assert_eq!(record.stopped_at, time(NOW), "no stop time from ECS: now");
}

#[test]
fn run_end_leaves_capacity_alone_while_another_task_runs() {
    let id = format!("run-{}", NOW - 100);
    let d = case()
        .spec(|s| s.max_instances = 2)
        .with_run(started(run(NOW - 100, 1), NOW - 90))
        .desired(2)
        .joined("i-1")
        .joined("i-2")
        .stopped(&id, "i-1", Some(0))
        .task(None, "i-2", "RUNNING", None)
        .decide();
    assert!(d.actions.is_empty());
    assert_eq!(reasons(&d), vec![event::TASK_STOPPED]);
    assert!(d.last_run.is_some() && d.current_run.is_none());
    assert_eq!(d.phase, Phase::Running);
}

#[test]
fn an_ended_run_leaves_an_idle_worker_that_waits_for_its_tick() {
    let id = format!("run-{}", NOW - 100);
    let d = case()
        .with_run(started(run(NOW - 100, 1), NOW - 90))
        .stopped(&id, "i-1", Some(0))
        .decide();
    assert_eq!(d.phase, Phase::Idle);
    assert_eq!(d.requeue_after, Duration::from_secs(60));
    let overdue = case()
        .status(|s| s.next_run_time = Some(time(NOW - 30)))
        .with_run(started(run(NOW - 100, 1), NOW - 90))
        .stopped(&id, "i-1", Some(0))
        .decide();
    assert_eq!(
        overdue.next_run_time,
        Some(at(NOW + 60)),
        "the tick during the run is skipped"
    );
    assert_eq!(overdue.requeue_after, Duration::from_secs(60));
}

// ---- requeue, mappings ----

#[test]
fn requeue_is_bounded() {
    let far = case()
        .status(|s| s.next_run_time = None)
        .spec(|s| s.cron_rate = Some("1_DAY".into()));
    let d = decide(&Input {
        spec: &valid(&far.spec),
        status: &far.status,
        observed: &far.obs,
        trigger: None,
        now: at(NOW),
    });
    assert_eq!(d.requeue_after, MAX_REQUEUE);
}

#[test]
fn aws_states_map_to_the_cycle_words() {
    for (text, lifecycle) in [
        ("Pending", Lifecycle::Pending),
        ("Pending:Wait", Lifecycle::Pending),
        ("InService", Lifecycle::InService),
        ("Terminating:Proceed", Lifecycle::Terminating),
        ("Terminated", Lifecycle::Terminating),
        ("Detaching", Lifecycle::Terminating),
        ("Standby", Lifecycle::Other),
        ("Warmed:Pending", Lifecycle::Other),
    ] {
        assert_eq!(Lifecycle::from_aws(text), lifecycle, "{text}");
    }
    for (text, status) in [
        ("ACTIVE", ContainerInstanceStatus::Active),
        ("DRAINING", ContainerInstanceStatus::Draining),
        ("INACTIVE", ContainerInstanceStatus::Inactive),
        ("REGISTERING", ContainerInstanceStatus::Other),
    ] {
        assert_eq!(ContainerInstanceStatus::from_aws(text), status, "{text}");
    }
    let task = |s: &str| TaskState {
        last_status: s.into(),
        ..TaskState::default()
    };
    assert!(
        task("PROVISIONING").is_active()
            && task("RUNNING").is_active()
            && task("STOPPING").is_active()
    );
    assert!(!task("STOPPED").is_active() && !task("DELETED").is_active());
    assert_eq!(run_id_time("run-60"), Some(at(60)));
    assert_eq!(run_id_time("run-x"), None);
    assert_eq!(run_id_time("job-60"), None);
}

// ---- the whole cycle against a small model of AWS, with the operator killed at each step ----

#[derive(Clone, Copy, Debug, PartialEq)]
enum Crash {
    /// Status written, actions never executed.
    Ahead,
    /// Actions executed, status never written.
    Behind,
}

/// Auto Scaling, ECS and the worker, one 2-second step at a time, each change in one step, so
/// a crash can be placed before and after every action of a run. The cost simulator's model
/// (`benches/cost/model.rs`) is a different tool: seconds, boot times, billing, a Spot market
/// and the worker's per-message drain, all seeded. Both speak the cycle's own contract
/// ([`Observed`] in, [`Action`] out) and moto checks the real AWS layer against it; one shared
/// model would make these tests depend on the bench's timing and the bench on these faults.
struct World {
    obs: Observed,
    launched: usize,
    /// Per-message work: a task drains the queue and exits with this code.
    exit_code: i32,
    /// Instances never join when false.
    joins: bool,
    /// RunTask places nothing and the controller, seeing the error, writes no status.
    run_task_fails: bool,
}

impl World {
    fn new(visible: i64) -> World {
        let mut obs = Observed::default();
        obs.queue.visible = visible;
        World {
            obs,
            launched: 0,
            exit_code: 0,
            joins: true,
            run_task_fails: false,
        }
    }

    fn execute(&mut self, actions: &[Action]) {
        for action in actions {
            match action {
                Action::SetDesiredCapacity(n) => self.obs.group.desired_capacity = *n,
                Action::SetOnDemandPercentage {
                    percentage,
                    desired,
                } => {
                    self.obs.group.on_demand_percentage = Some(*percentage);
                    self.obs.group.desired_capacity = *desired;
                }
                Action::TerminateInstance { instance_id } => self.terminate(instance_id),
                Action::StopTask { task_arn, .. } => {
                    if let Some(t) = self.obs.tasks.iter_mut().find(|t| t.arn == *task_arn) {
                        t.stop_requested = true;
                    }
                }
                Action::RunTasks { .. } if self.run_task_fails => {}
                Action::RunTasks {
                    run_id,
                    first,
                    count,
                    ..
                } => {
                    let started = self
                        .obs
                        .tasks
                        .iter()
                        .filter(|t| t.started_by.as_deref() == Some(run_id.as_str()))
                        .count();
                    if started > usize::try_from(*first).expect("positive") {
                        continue; // a call with this client token was served before
                    }
                    let busy: Vec<String> = self
                        .obs
                        .tasks
                        .iter()
                        .filter(|t| t.is_active())
                        .filter_map(|t| t.container_instance_arn.clone())
                        .collect();
                    let free: Vec<String> = self
                        .obs
                        .container_instances
                        .iter()
                        .filter(|c| {
                            c.status == ContainerInstanceStatus::Active && !busy.contains(&c.arn)
                        })
                        .map(|c| c.arn.clone())
                        .take(usize::try_from(*count).expect("positive"))
                        .collect();
                    for arn in free {
                        let n = self.obs.tasks.len();
                        self.obs.tasks.push(TaskState {
                            arn: format!("task-{n}"),
                            started_by: Some(run_id.clone()),
                            container_instance_arn: Some(arn),
                            last_status: "PENDING".into(),
                            ..TaskState::default()
                        });
                    }
                }
            }
        }
    }

    fn terminate(&mut self, id: &str) {
        if let Some(i) = self
            .obs
            .group
            .instances
            .iter_mut()
            .find(|i| i.instance_id == id && i.lifecycle != Lifecycle::Terminating)
        {
            i.lifecycle = Lifecycle::Terminating;
            self.obs.group.desired_capacity = (self.obs.group.desired_capacity - 1).max(0);
        }
    }

    fn advance(&mut self, now: Timestamp) {
        // Terminating instances are gone, with their container instances.
        let gone: Vec<String> = self
            .obs
            .group
            .instances
            .iter()
            .filter(|i| i.lifecycle == Lifecycle::Terminating)
            .map(|i| i.instance_id.clone())
            .collect();
        self.obs
            .group
            .instances
            .retain(|i| i.lifecycle != Lifecycle::Terminating);
        self.obs
            .container_instances
            .retain(|c| !gone.contains(c.ec2_instance_id.as_ref().expect("id")));
        // Tasks progress; a running worker drains the queue, exits and removes its instance.
        let mut finished = Vec::new();
        for task in self.obs.tasks.iter_mut() {
            match task.last_status.as_str() {
                "PENDING" => {
                    task.last_status = "RUNNING".into();
                    task.started_at = Some(now);
                }
                "RUNNING" => {
                    task.last_status = "STOPPED".into();
                    task.exit_code = Some(self.exit_code);
                    task.stop_reason = Some("Essential container in task exited".into());
                    task.stopped_at = Some(now);
                    finished.push(task.container_instance_arn.clone().expect("placed"));
                }
                _ => {}
            }
        }
        if !finished.is_empty() {
            self.obs.queue.visible = 0;
        }
        for arn in finished {
            let id = self
                .obs
                .container_instances
                .iter()
                .find(|c| c.arn == arn)
                .and_then(|c| c.ec2_instance_id.clone());
            if let Some(id) = id {
                self.terminate(&id);
            }
        }
        // Pending instances join; the group launches up to its desired capacity or scales in.
        for i in self
            .obs
            .group
            .instances
            .iter_mut()
            .filter(|i| i.lifecycle == Lifecycle::Pending)
        {
            if self.joins {
                i.lifecycle = Lifecycle::InService;
                self.obs.container_instances.push(ContainerInstanceState {
                    arn: format!("ci-{}", i.instance_id),
                    ec2_instance_id: Some(i.instance_id.clone()),
                    status: ContainerInstanceStatus::Active,
                    running_tasks: 0,
                });
            }
        }
        let desired = usize::try_from(self.obs.group.desired_capacity).expect("non-negative");
        let mut members: Vec<String> = self
            .obs
            .group
            .instances
            .iter()
            .filter(|i| i.lifecycle != Lifecycle::Terminating)
            .map(|i| i.instance_id.clone())
            .collect();
        while members.len() > desired {
            let id = members.pop().expect("member");
            if let Some(i) = self
                .obs
                .group
                .instances
                .iter_mut()
                .find(|i| i.instance_id == id)
            {
                i.lifecycle = Lifecycle::Terminating;
            }
        }
        while members.len() < desired {
            self.launched += 1;
            let id = format!("i-{}", self.launched);
            self.obs.group.instances.push(GroupInstance {
                instance_id: id.clone(),
                lifecycle: Lifecycle::Pending,
            });
            members.push(id);
        }
    }
}

/// Runs the cycle until it is idle again, crashing the operator once at `crash`.
fn simulate(world: &mut World, spec: &Spec, crash: Option<(usize, Crash)>) -> (Status, Vec<Phase>) {
    let spec = valid(spec);
    let mut status = Status::default();
    let mut phases = Vec::new();
    for step in 0..400_i64 {
        let now = at(NOW + 2 * step);
        let d = decide(&Input {
            spec: &spec,
            status: &status,
            observed: &world.obs,
            trigger: None,
            now,
        });
        if phases.last() != Some(&d.phase) {
            phases.push(d.phase);
        }
        let crashed = crash.filter(|(at_step, _)| *at_step == usize::try_from(step).expect("step"));
        if crashed.map(|(_, c)| c) != Some(Crash::Ahead) {
            world.execute(&d.actions);
        }
        let run_task_failed = world.run_task_fails
            && d.actions
                .iter()
                .any(|a| matches!(a, Action::RunTasks { .. }));
        if crashed.map(|(_, c)| c) != Some(Crash::Behind) && !run_task_failed {
            d.write_to(&mut status);
        }
        let settled = d.phase == Phase::Idle && status.last_run.is_some() && d.actions.is_empty();
        if settled && world.obs.group.instances.is_empty() && world.obs.group.desired_capacity == 0
        {
            return (status, phases);
        }
        world.advance(now);
    }
    panic!(
        "the cycle did not settle (crash {crash:?}): {status:?} {:?}",
        world.obs
    );
}

#[test]
fn full_cycle_completes_once_whenever_the_operator_is_killed() {
    for (max_instances, visible) in [(1, 5), (2, 150)] {
        let spec = Spec {
            max_instances,
            ..base_spec()
        };
        let crashes = (0..60).flat_map(|s| [Some((s, Crash::Ahead)), Some((s, Crash::Behind))]);
        for crash in std::iter::once(None).chain(crashes) {
            let mut world = World::new(visible);
            let (status, phases) = simulate(&mut world, &spec, crash);
            let record = status.last_run.expect("recorded");
            assert_eq!(record.outcome, RunOutcome::Succeeded, "{crash:?}");
            assert_eq!(record.messages_after, Some(0), "{crash:?}");
            assert_eq!(world.obs.queue.visible, 0);
            assert_eq!(
                world.obs.tasks.len(),
                usize::try_from(max_instances).expect("n"),
                "exactly one task set ({crash:?})"
            );
            assert!(
                world
                    .obs
                    .tasks
                    .iter()
                    .all(|t| t.started_by.as_deref() == Some(record.id.as_str()))
            );
            assert!(world.obs.group.instances.is_empty() && world.obs.group.desired_capacity == 0);
            assert!(status.current_run.is_none());
            if crash.is_none() {
                assert_eq!(
                    phases,
                    vec![
                        Phase::Idle,
                        Phase::ScalingUp,
                        Phase::Running,
                        Phase::ScalingDown,
                        Phase::Idle
                    ]
                );
            }
        }
    }
}

#[test]
fn full_cycle_with_a_failing_worker_records_its_exit_code() {
    let mut world = World {
        exit_code: 2,
        ..World::new(5)
    };
    let (status, _) = simulate(&mut world, &base_spec(), None);
    let record = status.last_run.expect("recorded");
    assert_eq!(
        (record.outcome, record.exit_code),
        (RunOutcome::Failed, Some(2))
    );
}

#[test]
fn a_run_task_that_keeps_failing_still_ends_at_zero() {
    let mut world = World {
        run_task_fails: true,
        ..World::new(5)
    };
    let (status, _) = simulate(&mut world, &base_spec(), None);
    assert_eq!(status.last_run.map(|r| r.outcome), Some(RunOutcome::Failed));
    assert!(world.obs.tasks.is_empty());
}

#[test]
fn instances_that_never_join_never_get_a_task() {
    let mut world = World {
        joins: false,
        ..World::new(5)
    };
    let (status, phases) = simulate(&mut world, &base_spec(), None);
    assert_eq!(
        status.last_run.map(|r| r.outcome),
        Some(RunOutcome::ScaleUpTimedOut)
    );
    assert!(world.obs.tasks.is_empty());
    assert_eq!(
        phases,
        vec![
            Phase::Idle,
            Phase::ScalingUp,
            Phase::ScalingDown,
            Phase::Idle
        ]
    );
}

// ---- invariants over arbitrary observed states ----

fn arb_case() -> impl Strategy<Value = Case> {
    let knobs = (1i32..4, 1i32..4, 1i32..50, any::<bool>(), 30i32..120);
    let queue = (0i64..300, 0i32..6);
    // Mostly joined instances and few tasks, so that every branch is reached often.
    let lifecycle = prop_oneof![3 => Just(1u8), 1 => 0u8..4];
    let ci_status = prop_oneof![3 => Just(0u8), 1 => 0u8..4];
    let ci = prop::option::weighted(0.8, (ci_status, prop_oneof![4 => Just(0i32), 1 => Just(1)]));
    let instances = prop::collection::vec((lifecycle, ci), 0..5);
    let task = (
        0u8..3,
        0usize..6,
        prop::bool::weighted(0.3),
        prop::option::of(-1i32..3),
    );
    let tasks = prop_oneof![Just(Vec::new()), prop::collection::vec(task, 1..5)];
    let run = prop::option::of((0u8..2, 0i64..400, prop::option::of(0i64..400), 0i32..6));
    let schedule = (
        prop::option::of(-100i64..100),
        prop::option::of(0u8..2),
        prop::option::of(0u8..2),
    );
    (knobs, queue, instances, tasks, run, schedule).prop_map(
        |(
            (max, min, per, suspend, timeout),
            (visible, desired),
            instances,
            tasks,
            run,
            (next, last, trigger),
        )| {
            let run_ids = [format!("run-{}", NOW - 400), format!("run-{}", NOW - 200)];
            let mut c = case()
                .spec(|s| {
                    s.max_instances = max;
                    s.scaling.min_messages = min;
                    s.scaling.messages_per_instance = per;
                    s.suspend = suspend;
                    s.scaling.join_timeout_seconds = timeout;
                })
                .visible(visible)
                .desired(desired);
            for (n, (lifecycle, ci)) in instances.into_iter().enumerate() {
                let id = format!("i-{n}");
                let lifecycle = [
                    Lifecycle::Pending,
                    Lifecycle::InService,
                    Lifecycle::Terminating,
                    Lifecycle::Other,
                ][usize::from(lifecycle)];
                c = c.member(&id, lifecycle);
                if let Some((status, running)) = ci {
                    let status = [
                        ContainerInstanceStatus::Active,
                        ContainerInstanceStatus::Draining,
                        ContainerInstanceStatus::Inactive,
                        ContainerInstanceStatus::Other,
                    ][usize::from(status)];
                    c = c.container_instance(&id, status);
                    c.obs
                        .container_instances
                        .last_mut()
                        .expect("pushed")
                        .running_tasks = running;
                }
            }
            for (by, on, active, exit) in tasks {
                let by =
                    [None, Some(run_ids[0].as_str()), Some(run_ids[1].as_str())][usize::from(by)];
                let status = if active { "RUNNING" } else { "STOPPED" };
                c = c.task(
                    by,
                    &format!("i-{on}"),
                    status,
                    if active { None } else { exit },
                );
            }
            if let Some((which, age, started_age, instances)) = run {
                let id = &run_ids[usize::from(which)];
                c = c.with_run(RunStatus {
                    id: id.clone(),
                    scale_up_at: time(NOW - age),
                    instances,
                    messages_before: 1,
                    tasks_started_at: started_age.map(|a| time(NOW - a.min(age))),
                    on_demand_fallback: false,
                });
            }
            c.status(|s| {
                s.next_run_time = next.map(|o| time(NOW + o));
                s.last_trigger = last.map(|v| format!("t{v}"));
            })
            .trigger_opt(trigger.map(|v| format!("t{v}")))
        },
    )
}

impl Case {
    fn trigger_opt(mut self, value: Option<String>) -> Self {
        self.trigger = value;
        self
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn decisions_respect_the_capacity_invariants(c in arb_case()) {
        let d = c.decide();
        let obs = &c.obs;
        let member = |id: &str| obs.group.instances.iter().find(|i| i.instance_id == id);
        let ci_of = |id: &str| -> Vec<&ContainerInstanceState> {
            obs.container_instances.iter().filter(|ci| ci.ec2_instance_id.as_deref() == Some(id)).collect()
        };
        let joined = obs
            .group
            .instances
            .iter()
            .filter(|i| i.lifecycle == Lifecycle::InService)
            .filter(|i| ci_of(&i.instance_id).iter().any(|ci| ci.status == ContainerInstanceStatus::Active))
            .count();
        let hosts_active = |id: &str| {
            ci_of(id).iter().any(|ci| ci.running_tasks > 0 || obs.tasks.iter().any(|t| t.is_active() && t.container_instance_arn.as_deref() == Some(ci.arn.as_str())))
        };
        let anything_active = obs.tasks.iter().any(TaskState::is_active) || obs.container_instances.iter().any(|ci| ci.running_tasks > 0);
        let unknown_host = obs.tasks.iter().any(|t| {
            t.is_active() && !obs.container_instances.iter().any(|ci| Some(ci.arn.as_str()) == t.container_instance_arn.as_deref())
        });
        let max = c.spec.max_instances;

        let mut sets = 0;
        let mut runs = 0;
        let mut terminated = BTreeSet::new();
        for action in &d.actions {
            match action {
                Action::RunTasks { run_id, count, .. } => {
                    runs += 1;
                    prop_assert!(*count >= 1 && usize::try_from(*count).expect("n") <= joined, "RunTasks {} with {} joined", count, joined);
                    prop_assert!(*count <= max);
                    prop_assert_eq!(d.current_run.as_ref().map(|r| r.id.as_str()), Some(run_id.as_str()));
                }
                Action::SetDesiredCapacity(n) => {
                    sets += 1;
                    prop_assert!(*n >= 0 && *n <= max, "SetDesiredCapacity({}) with max {}", n, max);
                    if anything_active {
                        prop_assert!(*n >= obs.group.desired_capacity, "lowered to {} while a task runs", n);
                    }
                }
                Action::SetOnDemandPercentage { percentage, desired } => {
                    sets += 1;
                    prop_assert!(*percentage == 0 || *percentage == 100);
                    prop_assert!(*desired >= 0 && *desired <= max);
                    prop_assert!(obs.group.instances.is_empty(), "purchase option changed with instances up");
                }
                Action::TerminateInstance { instance_id } => {
                    let m = member(instance_id);
                    prop_assert!(m.is_some_and(|m| m.lifecycle != Lifecycle::Terminating), "{} is not a member", instance_id);
                    prop_assert!(!hosts_active(instance_id), "{} runs a task", instance_id);
                    prop_assert!(!unknown_host);
                    prop_assert!(terminated.insert(instance_id.clone()), "{} terminated twice", instance_id);
                }
                Action::StopTask { task_arn, .. } => {
                    let task = obs.tasks.iter().find(|t| t.arn == *task_arn);
                    prop_assert!(task.is_some_and(|t| t.is_active() && !t.stop_requested), "StopTask of {}", task_arn);
                    let on = task.and_then(|t| t.container_instance_arn.as_deref());
                    prop_assert!(obs.container_instances.iter().any(|ci| Some(ci.arn.as_str()) == on && ci.status == ContainerInstanceStatus::Draining), "{} is not on a draining instance", task_arn);
                }
            }
        }
        prop_assert!(sets <= 1 && runs <= 1, "{:?}", d.actions);
        prop_assert!(d.requeue_after >= MIN_REQUEUE && d.requeue_after <= MAX_REQUEUE);
        let adoptable = obs.tasks.iter().any(|t| t.is_active() && t.started_by.is_some());
        if c.spec.suspend && c.status.current_run.is_none() && !adoptable {
            prop_assert!(d.current_run.is_none() && runs == 0);
        }
        if d.current_run.is_some() {
            prop_assert!(matches!(d.phase, Phase::ScalingUp | Phase::Running));
        }
        for e in &d.events {
            prop_assert!(!e.message.is_empty());
        }
    }
}
