//! The simulated AWS account of one worker: its SQS queue, its Auto Scaling group of EC2
//! instances, its ECS cluster running worker tasks, and the EC2 bill.
//!
//! It owns the rules every policy is subject to: an instance joins the cluster a seeded boot
//! time after its launch ([`Timings`]); RunTask places a task only on a joined instance that
//! runs none; the group launches and terminates at once to match its desired capacity
//! ([`World::set_desired`]); EC2 bills each instance per second, at least 60 s ([`billed`]).
//! Time is whole seconds and AWS calls take none. [`World`] reads and acts like the operator's
//! AWS layer (`src/aws/cycle.rs`): it fills `plan::cycle::Observed` and executes
//! `plan::cycle::Action`s. The cycle's crash tests keep their own, smaller world (one change
//! per step, injected faults; see `src/plan/cycle/tests.rs`): this one's timing and market
//! would blur the step a crash lands on.

use crate::traces::Message;
use crate::worker::{Behaviour, Did, Termination, Worker};
use anyhow::{Result, bail, ensure};
use ecs_worker_operator::api::QueueDepth;
use ecs_worker_operator::plan::cycle::{
    Action, ContainerInstanceState, ContainerInstanceStatus, GroupInstance, GroupState,
    INTERRUPTED_EXIT_CODE, LaunchFailure, Lifecycle, Observed, TaskState,
};
use ecs_worker_operator::plan::desired::tail_environment;
use jiff::Timestamp;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, VecDeque};
use std::ops::AddAssign;

/// EC2's minimum charge per instance, seconds.
pub const EC2_MINIMUM_SECONDS: i64 = 60;

/// Unix time of the simulation's second 0 (a UTC midnight, so a rate schedule ticks on the
/// simulation's own minute boundaries).
const EPOCH: i64 = 1_799_971_200;

/// The timestamp of simulation second `t`.
pub fn timestamp(t: i64) -> Timestamp {
    Timestamp::from_second(EPOCH + t).expect("simulated times are in range")
}

/// Billed seconds of an instance that was up `up` seconds.
pub fn billed(up: i64) -> i64 {
    up.max(EC2_MINIMUM_SECONDS)
}

/// How long starting capacity takes.
#[derive(Clone, Copy, Debug)]
pub struct Timings {
    /// Launch until the instance has joined the ECS cluster, on average.
    pub boot: i64,
    /// Each instance's boot is drawn uniformly from `boot ± boot_jitter`.
    pub boot_jitter: i64,
    /// Seeds the boot draws: the n-th instance launched boots equally long under every policy.
    pub boot_seed: u64,
    /// RunTask until the worker in the task receives.
    pub task_start: i64,
}

impl Timings {
    /// Launch until a handler can run, on average: what every instance start costs.
    pub fn start_overhead(&self) -> i64 {
        self.boot + self.task_start
    }
}

/// What EC2 offers the group: the purchase option it starts with, and how Spot behaves.
#[derive(Clone, Copy, Debug)]
pub struct Market {
    /// `OnDemandPercentageAboveBaseCapacity` the group starts with: 100 On-Demand, 0 Spot.
    pub on_demand_percentage: i32,
    /// Spot interruptions per Spot instance-hour: EC2's two-minute notice (the container
    /// instance drains), then termination.
    pub interruptions_per_hour: f64,
    /// Share of the hours in which no Spot capacity can be had: a Spot launch then fails with
    /// a scaling activity, as on AWS.
    pub shortage: f64,
    /// Seeds the interruptions and the hours of shortage.
    pub seed: u64,
}

impl Market {
    /// On-Demand capacity, always there.
    pub const ON_DEMAND: Market = Market {
        on_demand_percentage: 100,
        interruptions_per_hour: 0.0,
        shortage: 0.0,
        seed: 0,
    };
}

/// EC2's notice before it reclaims a Spot Instance, seconds.
/// <https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/spot-instance-termination-notices.html>
pub const SPOT_NOTICE_SECONDS: i64 = 120;

/// What Auto Scaling reports for a Spot launch without capacity.
/// <https://docs.aws.amazon.com/autoscaling/ec2/userguide/ts-as-capacity.html>
const NO_SPOT: &str = "Could not launch Spot Instances. InsufficientInstanceCapacity - There is no Spot capacity available that matches your request. Launching EC2 instance failed.";

/// Where billed instance-seconds went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Breakdown {
    /// Launch until joined, plus RunTask until the worker runs.
    pub start: i64,
    /// Joined, but no task placed yet: the control loop has not acted on the instance.
    pub awaiting_task: i64,
    /// A handler runs.
    pub busy: i64,
    /// The worker runs without a handler, and the instance handles more messages later.
    pub idle: i64,
    /// After the instance's last handler (or its worker's start, if it handled nothing) until
    /// its termination: the worker making sure the queue is empty.
    pub tail: i64,
    /// Added by EC2's 60 s minimum.
    pub minimum: i64,
}

impl Breakdown {
    pub fn total(&self) -> i64 {
        self.start + self.awaiting_task + self.busy + self.idle + self.tail + self.minimum
    }
}

impl AddAssign for Breakdown {
    fn add_assign(&mut self, o: Breakdown) {
        self.start += o.start;
        self.awaiting_task += o.awaiting_task;
        self.busy += o.busy;
        self.idle += o.idle;
        self.tail += o.tail;
        self.minimum += o.minimum;
    }
}

/// What serving a trace cost and how fast it was.
#[derive(Clone, Debug)]
pub struct Bill {
    /// Billed instance-seconds.
    pub billed: i64,
    /// Of which Spot.
    pub billed_spot: i64,
    /// Spot interruptions (notices) the instances got.
    pub interruptions: usize,
    /// Launches that failed for want of Spot capacity.
    pub launch_failures: usize,
    /// Instances launched.
    pub starts: usize,
    pub breakdown: Breakdown,
    /// Per message, seconds from arrival until its handler started.
    pub latencies: Vec<i64>,
}

/// The SQS queue: visible messages in arrival order and the number in flight.
#[derive(Debug, Default)]
pub struct Queue {
    visible: VecDeque<usize>,
    in_flight: usize,
}

impl Queue {
    /// A message is sent.
    pub fn send(&mut self, message: usize) {
        self.visible.push_back(message);
    }

    /// Hands out the oldest visible message.
    pub fn receive(&mut self) -> Option<usize> {
        let message = self.visible.pop_front()?;
        self.in_flight += 1;
        Some(message)
    }

    /// Deletes a received message.
    pub fn delete(&mut self) {
        self.in_flight -= 1;
    }

    /// Makes a received message visible again at once (visibility timeout 0), first in line.
    pub fn release(&mut self, message: usize) {
        self.in_flight -= 1;
        self.visible.push_front(message);
    }

    pub fn visible(&self) -> usize {
        self.visible.len()
    }

    /// Nothing visible and nothing in flight.
    pub fn is_empty(&self) -> bool {
        self.visible.is_empty() && self.in_flight == 0
    }
}

#[derive(Debug)]
struct Instance {
    id: String,
    /// A Spot Instance; `interrupted_at`: when EC2's interruption notice comes.
    spot: bool,
    interrupted_at: Option<i64>,
    launched: i64,
    joins_at: i64,
    terminated: Option<i64>,
    task_placed: Option<i64>,
    worker_started: Option<i64>,
    /// Handler seconds it ran.
    busy: i64,
    last_handler_end: Option<i64>,
}

impl Instance {
    fn joined(&self, now: i64) -> bool {
        self.terminated.is_none() && self.joins_at <= now
    }

    /// Its interruption notice came: ECS drains its container instance.
    fn draining(&self, now: i64) -> bool {
        self.interrupted_at.is_some_and(|t| t <= now)
    }
}

#[derive(Debug)]
struct Task {
    arn: String,
    started_by: Option<String>,
    instance: usize,
    placed: i64,
    running_at: i64,
    stopped_at: Option<i64>,
    exit_code: Option<i32>,
    /// How its worker behaves: the account's, or as RunTask's override says.
    behaviour: Behaviour,
    /// The worker process, once the task runs.
    worker: Option<Worker>,
}

/// The simulated account, serving one trace with one worker behaviour (whose tail RunTask may
/// override).
///
/// Every instance and task ever started is kept for the bill; the live instances, the active
/// tasks and the tasks of each run id are indexed so that a step costs the same on day 1 and
/// on day 28.
pub struct World<'a> {
    messages: &'a [Message],
    timings: Timings,
    boots: StdRng,
    market: Market,
    interruptions: StdRng,
    on_demand_percentage: i32,
    /// Failed Spot launches: (when, Auto Scaling's message).
    failures: Vec<(i64, &'static str)>,
    /// The time of the last [`World::advance`].
    clock: i64,
    behaviour: Behaviour,
    arrived: usize,
    queue: Queue,
    desired: i32,
    instances: Vec<Instance>,
    tasks: Vec<Task>,
    /// Instances not terminated, by index.
    live: Vec<usize>,
    /// Tasks not stopped, by index.
    active: Vec<usize>,
    /// Tasks by the run id they were started with.
    runs: HashMap<String, Vec<usize>>,
    /// When each message's handler started.
    handler_started: Vec<Option<i64>>,
    did: Vec<Did>,
}

impl<'a> World<'a> {
    pub fn new(
        messages: &'a [Message],
        timings: Timings,
        market: Market,
        behaviour: Behaviour,
    ) -> Result<Self> {
        ensure!(
            timings.boot_jitter >= 0
                && timings.boot - timings.boot_jitter >= 1
                && timings.task_start >= 1,
            "boot and task start take at least 1 s"
        );
        ensure!(
            messages.windows(2).all(|w| w[0].arrival <= w[1].arrival)
                && messages.iter().all(|m| m.handler >= 1),
            "messages must be sorted by arrival and take at least 1 s"
        );
        Ok(World {
            messages,
            timings,
            boots: StdRng::seed_from_u64(timings.boot_seed),
            market,
            interruptions: StdRng::seed_from_u64(market.seed),
            on_demand_percentage: market.on_demand_percentage,
            failures: Vec::new(),
            clock: 0,
            behaviour,
            arrived: 0,
            queue: Queue::default(),
            desired: 0,
            instances: Vec::new(),
            tasks: Vec::new(),
            live: Vec::new(),
            active: Vec::new(),
            runs: HashMap::new(),
            handler_started: vec![None; messages.len()],
            did: Vec::new(),
        })
    }

    /// Brings the account to `now`: messages sent, workers started, and every worker run up to
    /// `now` (including the termination step of those that end).
    pub fn advance(&mut self, now: i64) -> Result<()> {
        while self
            .messages
            .get(self.arrived)
            .is_some_and(|m| m.arrival <= now)
        {
            self.queue.send(self.arrived);
            self.arrived += 1;
        }
        self.clock = now;
        // EC2 reclaims an interrupted Spot Instance two minutes after the notice. A worker
        // still there (the operator had not stopped it) gets SIGTERM with the instance's
        // shutdown and returns its message.
        let reclaimed: Vec<usize> = self
            .live
            .iter()
            .copied()
            .filter(|&i| {
                self.instances[i]
                    .interrupted_at
                    .is_some_and(|t| t + SPOT_NOTICE_SECONDS <= now)
            })
            .collect();
        for i in reclaimed {
            let on_it: Vec<usize> = self
                .active
                .iter()
                .copied()
                .filter(|&t| self.tasks[t].instance == i)
                .collect();
            for t in on_it {
                self.sigterm(now, t, None);
            }
            self.terminate(now, i)?;
            // The group replaces capacity it lost.
            self.set_desired(now, self.desired)?;
        }
        let mut ended = Vec::new();
        for &t in &self.active {
            let task = &mut self.tasks[t];
            if task.running_at > now {
                continue;
            }
            let instance = &mut self.instances[task.instance];
            let worker = task.worker.get_or_insert_with(|| {
                instance.worker_started = Some(now);
                Worker::start(task.behaviour, now)
            });
            self.did.clear();
            worker.wake(now, &mut self.queue, self.messages, &mut self.did);
            for did in &self.did {
                match *did {
                    Did::Started { message } => {
                        self.handler_started[message] = Some(now);
                        instance.busy += self.messages[message].handler;
                    }
                    Did::Finished { .. } => instance.last_handler_end = Some(now),
                    Did::Drained => ended.push(t),
                }
            }
        }
        for t in ended {
            self.end_worker(now, t)?;
        }
        Ok(())
    }

    /// The next moment something happens without a control action: a message arrives, a
    /// task's worker starts, a handler ends, a long poll returns empty, or a Spot Instance gets
    /// its notice or is reclaimed.
    pub fn next_event(&self) -> Option<i64> {
        let arrival = self.messages.get(self.arrived).map(|m| m.arrival);
        let spot = self.live.iter().filter_map(|&i| {
            let at = self.instances[i].interrupted_at?;
            Some(if at > self.clock {
                at
            } else {
                at + SPOT_NOTICE_SECONDS
            })
        });
        let tasks = self.active.iter().filter_map(|&t| {
            let task = &self.tasks[t];
            match &task.worker {
                None => Some(task.running_at),
                Some(w) => w.next_wake(),
            }
        });
        arrival.into_iter().chain(tasks).chain(spot).min()
    }

    /// Every message was sent and handled, and no capacity is left.
    pub fn settled(&self) -> bool {
        self.arrived == self.messages.len()
            && self.queue.is_empty()
            && self.desired == 0
            && self.live.is_empty()
            && self.active.is_empty()
    }

    /// What the operator's AWS layer would read now (see `aws::cycle::observe`): the queue
    /// depth, the group, and, when capacity is up or a run is in progress, the container
    /// instances and the tasks (active ones, plus the stopped tasks of `current_run`).
    pub fn observe(&self, now: i64, current_run: Option<&str>) -> Observed {
        let mut observed = Observed {
            queue: QueueDepth {
                visible: self.queue.visible() as i64,
                in_flight: self.queue.in_flight as i64,
                dead_letter: None,
            },
            group: GroupState {
                desired_capacity: self.desired,
                instances: self
                    .live
                    .iter()
                    .map(|&i| GroupInstance {
                        instance_id: self.instances[i].id.clone(),
                        lifecycle: if self.instances[i].joined(now) {
                            Lifecycle::InService
                        } else {
                            Lifecycle::Pending
                        },
                    })
                    .collect(),
                on_demand_percentage: Some(self.on_demand_percentage),
            },
            container_instances: Vec::new(),
            tasks: Vec::new(),
            launch_failures: Vec::new(),
        };
        // Read only while a run waits with no instance, as the operator's AWS layer does.
        if let Some(since) = current_run.and_then(run_started)
            && self.live.is_empty()
        {
            observed.launch_failures = self
                .failures
                .iter()
                .rev()
                .filter(|(at, _)| *at >= since)
                .map(|(_, message)| LaunchFailure {
                    message: message.to_string(),
                })
                .collect();
        }
        if self.desired == 0 && self.live.is_empty() && current_run.is_none() {
            return observed;
        }
        observed.container_instances = self
            .live
            .iter()
            .filter(|&&i| self.instances[i].joined(now))
            .map(|&i| ContainerInstanceState {
                arn: container_instance_arn(&self.instances[i].id),
                ec2_instance_id: Some(self.instances[i].id.clone()),
                status: if self.instances[i].draining(now) {
                    ContainerInstanceStatus::Draining
                } else {
                    ContainerInstanceStatus::Active
                },
                running_tasks: self
                    .active
                    .iter()
                    .filter(|&&t| self.tasks[t].instance == i)
                    .count() as i32,
            })
            .collect();
        let of_run = current_run
            .and_then(|id| self.runs.get(id))
            .into_iter()
            .flatten()
            .filter(|&&t| self.tasks[t].stopped_at.is_some());
        observed.tasks = self
            .active
            .iter()
            .chain(of_run)
            .map(|&t| {
                let t = &self.tasks[t];
                let running = t.running_at <= now;
                TaskState {
                    arn: t.arn.clone(),
                    started_by: t.started_by.clone(),
                    container_instance_arn: Some(container_instance_arn(
                        &self.instances[t.instance].id,
                    )),
                    last_status: match (t.stopped_at, running) {
                        (Some(_), _) => "STOPPED",
                        (None, true) => "RUNNING",
                        (None, false) => "PENDING",
                    }
                    .to_string(),
                    exit_code: t.exit_code,
                    recorded_exit_code: None,
                    stop_reason: t
                        .stopped_at
                        .map(|_| "Essential container in task exited".to_string()),
                    started_at: Some(timestamp(if running { t.running_at } else { t.placed })),
                    stopped_at: t.stopped_at.map(timestamp),
                    stop_requested: false,
                }
            })
            .collect();
        observed
    }

    /// SIGTERM to a task's worker (StopTask, or the instance going away): the handler running
    /// is given up and its message returned; the container exits 4 (no code when the instance
    /// went with it).
    fn sigterm(&mut self, now: i64, t: usize, exit_code: Option<i32>) {
        let instance = self.tasks[t].instance;
        if let Some(worker) = self.tasks[t].worker.as_mut()
            && let Some((_, unfinished)) = worker.stop(now, &mut self.queue)
        {
            let inst = &mut self.instances[instance];
            inst.busy -= unfinished;
            inst.last_handler_end = Some(now);
        }
        self.stop_task(now, t, exit_code);
    }

    /// Executes one of the operator's actions (see `aws::cycle::execute`).
    pub fn execute(&mut self, now: i64, action: &Action) -> Result<()> {
        match action {
            Action::SetDesiredCapacity(n) => self.set_desired(now, *n),
            Action::SetOnDemandPercentage {
                percentage,
                desired,
            } => {
                self.on_demand_percentage = *percentage;
                self.set_desired(now, *desired)
            }
            // The worker returns its message and exits 4 (`INTERRUPTED_EXIT_CODE`).
            Action::StopTask { task_arn, .. } => {
                let Some(&t) = self
                    .active
                    .iter()
                    .find(|&&t| self.tasks[t].arn == *task_arn)
                else {
                    bail!("StopTask of {task_arn}, which is not running");
                };
                self.sigterm(now, t, Some(INTERRUPTED_EXIT_CODE));
                Ok(())
            }
            Action::TerminateInstance { instance_id } => {
                let Some(&index) = self
                    .live
                    .iter()
                    .find(|&&i| self.instances[i].id == *instance_id)
                else {
                    bail!("TerminateInstance of {instance_id}, which is not in the group");
                };
                self.terminate(now, index)?;
                self.desired = (self.desired - 1).max(0);
                Ok(())
            }
            Action::RunTasks {
                run_id,
                first,
                count,
                tail,
            } => {
                // The run id and its first task make RunTask's client token: a repeated call
                // starts nothing new.
                let placed = self.runs.get(run_id).map_or(0, Vec::len);
                if placed <= usize::try_from(*first).unwrap_or(0) {
                    let behaviour = match tail {
                        Some(tail) => self.behaviour.overridden(&tail_environment(*tail))?,
                        None => self.behaviour,
                    };
                    self.place_tasks(now, Some(run_id), *count, behaviour);
                }
                Ok(())
            }
        }
    }

    /// `SetDesiredCapacity`: the group launches or terminates instances to match.
    pub fn set_desired(&mut self, now: i64, desired: i32) -> Result<()> {
        self.desired = desired.max(0);
        let target = usize::try_from(self.desired).expect("non-negative");
        while self.live.len() < target {
            let spot = self.on_demand_percentage < 100;
            if spot && self.spot_short(now) {
                // Auto Scaling retries later; here, at the next change of the capacity.
                self.failures.push((now, NO_SPOT));
                break;
            }
            let interrupted_at = (spot && self.market.interruptions_per_hour > 0.0).then(|| {
                let u: f64 = self.interruptions.random_range(f64::EPSILON..1.0);
                now + (-u.ln() / self.market.interruptions_per_hour * 3600.0).ceil() as i64
            });
            let id = format!("i-{:05}", self.instances.len() + 1);
            let (boot, jitter) = (self.timings.boot, self.timings.boot_jitter);
            self.instances.push(Instance {
                id,
                spot,
                interrupted_at,
                launched: now,
                joins_at: now + self.boots.random_range(boot - jitter..=boot + jitter),
                terminated: None,
                task_placed: None,
                worker_started: None,
                busy: 0,
                last_handler_end: None,
            });
            self.live.push(self.instances.len() - 1);
        }
        if self.live.len() > target {
            // Idle before busy, not yet joined before joined, newest first.
            let mut victims = self.live.clone();
            victims.sort_by_key(|&i| {
                let inst = &self.instances[i];
                (self.hosts_active_task(i), inst.joined(now), -inst.launched)
            });
            victims.truncate(self.live.len() - target);
            for i in victims {
                self.terminate(now, i)?;
            }
        }
        Ok(())
    }

    /// Whether the hour of `now` is one without Spot capacity (seeded per hour).
    fn spot_short(&self, now: i64) -> bool {
        let hour = u64::try_from(now.div_euclid(3600)).unwrap_or(0);
        let mut rng = StdRng::seed_from_u64(self.market.seed.wrapping_mul(0x9E37_79B9) ^ hour);
        rng.random::<f64>() < self.market.shortage
    }

    /// RunTask of `count` tasks without overrides: each goes to a free joined instance; the
    /// rest fail to place.
    pub fn run_tasks(&mut self, now: i64, started_by: Option<&str>, count: i32) {
        self.place_tasks(now, started_by, count, self.behaviour);
    }

    /// RunTask of `count` tasks whose workers behave as `behaviour`.
    ///
    /// A task goes only to a joined instance that runs no task (the worker reserves the
    /// instance's memory), and its worker runs [`Timings::task_start`] later (image pull and
    /// container start on a fresh instance).
    fn place_tasks(
        &mut self,
        now: i64,
        started_by: Option<&str>,
        count: i32,
        behaviour: Behaviour,
    ) {
        let free: Vec<usize> = self
            .live
            .iter()
            .copied()
            .filter(|&i| {
                let inst = &self.instances[i];
                inst.joined(now) && !inst.draining(now) && !self.hosts_active_task(i)
            })
            .take(usize::try_from(count).unwrap_or(0))
            .collect();
        for i in free {
            let t = self.tasks.len();
            self.instances[i].task_placed = Some(now);
            self.tasks.push(Task {
                arn: format!("task-{}", t + 1),
                started_by: started_by.map(str::to_string),
                instance: i,
                placed: now,
                running_at: now + self.timings.task_start,
                stopped_at: None,
                exit_code: None,
                behaviour,
                worker: None,
            });
            self.active.push(t);
            if let Some(run_id) = started_by {
                self.runs.entry(run_id.to_string()).or_default().push(t);
            }
        }
    }

    /// Visible messages (`ApproximateNumberOfMessages`).
    pub fn visible(&self) -> usize {
        self.queue.visible()
    }

    /// Some task is not stopped (`ListTasks`, desired status RUNNING).
    pub fn any_active_task(&self) -> bool {
        !self.active.is_empty()
    }

    /// Some container instance is registered and active.
    pub fn registered(&self, now: i64) -> bool {
        self.live.iter().any(|&i| self.instances[i].joined(now))
    }

    fn hosts_active_task(&self, instance: usize) -> bool {
        self.active
            .iter()
            .any(|&t| self.tasks[t].instance == instance)
    }

    fn stop_task(&mut self, now: i64, t: usize, exit_code: Option<i32>) {
        self.tasks[t].stopped_at = Some(now);
        self.tasks[t].exit_code = exit_code;
        self.active.retain(|&a| a != t);
    }

    /// Terminates an instance; a task on it stops with it. A running handler is never killed
    /// by either policy, so that is refused as a fault of the simulation.
    fn terminate(&mut self, now: i64, index: usize) -> Result<()> {
        let on_it: Vec<usize> = self
            .active
            .iter()
            .copied()
            .filter(|&t| self.tasks[t].instance == index)
            .collect();
        for t in on_it {
            ensure!(
                !self.tasks[t]
                    .worker
                    .as_ref()
                    .is_some_and(Worker::is_handling),
                "instance {} terminated while its handler ran",
                self.instances[index].id
            );
            self.stop_task(now, t, None);
        }
        self.instances[index].terminated = Some(now);
        self.live.retain(|&i| i != index);
        Ok(())
    }

    /// A worker decided the queue is drained: its container exits 0, then it removes capacity
    /// as its behaviour says.
    fn end_worker(&mut self, now: i64, t: usize) -> Result<()> {
        self.stop_task(now, t, Some(0));
        let instance = self.tasks[t].instance;
        match self.tasks[t].behaviour.termination {
            Termination::OwnInstance => {
                self.terminate(now, instance)?;
                self.desired = (self.desired - 1).max(0);
                Ok(())
            }
            Termination::GroupToZero => self.set_desired(now, 0),
        }
    }

    /// The bill at `end`: instances still up are billed until then. Fails when a message was
    /// never handled.
    pub fn bill(&self, end: i64) -> Result<Bill> {
        let mut breakdown = Breakdown::default();
        let mut total = 0;
        let mut spot = 0;
        for inst in &self.instances {
            let stop = inst.terminated.unwrap_or(end);
            let up = stop - inst.launched;
            let joined = inst.joins_at.min(stop);
            let mut b = Breakdown {
                start: joined - inst.launched,
                minimum: billed(up) - up,
                ..Breakdown::default()
            };
            match inst.task_placed {
                None => b.awaiting_task = stop - joined,
                Some(placed) => {
                    b.awaiting_task = placed - joined;
                    let running = inst.worker_started.unwrap_or(stop).min(stop);
                    b.start += running - placed;
                    if inst.worker_started.is_some() {
                        let last = inst.last_handler_end.unwrap_or(running);
                        b.busy = inst.busy;
                        b.tail = stop - last;
                        b.idle = last - running - inst.busy;
                    }
                }
            }
            ensure!(
                b.total() == billed(up),
                "accounting of {} does not add up: {b:?}, up {up}",
                inst.id
            );
            breakdown += b;
            total += billed(up);
            if inst.spot {
                spot += billed(up);
            }
        }
        let latencies = self
            .messages
            .iter()
            .zip(&self.handler_started)
            .map(|(m, started)| started.map(|s| s - m.arrival))
            .collect::<Option<Vec<_>>>();
        let Some(latencies) = latencies else {
            bail!("some messages were never handled");
        };
        Ok(Bill {
            billed: total,
            billed_spot: spot,
            interruptions: self
                .instances
                .iter()
                .filter(|i| {
                    i.interrupted_at
                        .is_some_and(|t| t < i.terminated.unwrap_or(end))
                })
                .count(),
            launch_failures: self.failures.len(),
            starts: self.instances.len(),
            breakdown,
            latencies,
        })
    }
}

/// The scale-up time of a run from its id (`run-<unix seconds>`), in simulation seconds.
fn run_started(run_id: &str) -> Option<i64> {
    let unix: i64 = run_id.strip_prefix("run-")?.parse().ok()?;
    Some(unix - EPOCH)
}

fn container_instance_arn(instance_id: &str) -> String {
    format!("arn:aws:ecs:us-east-1:123456789012:container-instance/worker/{instance_id}")
}
