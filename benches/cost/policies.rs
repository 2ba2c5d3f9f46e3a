//! The two control loops that decide when capacity starts, and the simulation that runs one of
//! them against the simulated account ([`simulate`]).
//!
//! - [`Operator`]: this project's reconcile loop around the real, pure `plan::cycle::decide`;
//! - [`Lambda`]: the original's function on a fixed rate.
//!
//! Both see and change the account only through [`World`]'s AWS-like calls.

use crate::model::{Bill, Market, Timings, World, timestamp};
use crate::traces::{DAY, Trace};
use crate::worker::Behaviour;
use anyhow::{Result, bail, ensure};
use ecs_worker_operator::api::validate::validate;
use ecs_worker_operator::api::{
    EcsSelfTerminatingWorkerSpec, EcsSelfTerminatingWorkerStatus, RunOutcome,
};
use ecs_worker_operator::plan::cycle::{Input, decide};

/// A control loop acting on the simulated account.
pub trait Control {
    /// Acts at `now` if it is due.
    fn step(&mut self, now: i64, world: &mut World) -> Result<()>;
    /// When it next wants to act.
    fn next_wake(&self) -> i64;
    /// Nothing of its own is in progress (the simulation may end).
    fn at_rest(&self) -> bool;
}

/// Runs `control` against a fresh account serving `trace` with `behaviour` workers, until
/// every message is handled and capacity is back to zero, and returns the bill.
pub fn simulate(
    trace: &Trace,
    timings: Timings,
    behaviour: Behaviour,
    control: &mut dyn Control,
) -> Result<Bill> {
    simulate_on(trace, timings, Market::ON_DEMAND, behaviour, control)
}

/// [`simulate`] with the group buying from `market` (Spot interruptions and shortages).
pub fn simulate_on(
    trace: &Trace,
    timings: Timings,
    market: Market,
    behaviour: Behaviour,
    control: &mut dyn Control,
) -> Result<Bill> {
    let mut world = World::new(&trace.messages, timings, market, behaviour)?;
    let last_arrival = trace.messages.last().map_or(0, |m| m.arrival);
    let horizon = last_arrival + DAY;
    let mut now = 0;
    loop {
        world.advance(now)?;
        control.step(now, &mut world)?;
        if world.settled() && control.at_rest() {
            return world.bill(now);
        }
        let next = world
            .next_event()
            .map_or(control.next_wake(), |e| e.min(control.next_wake()));
        ensure!(next > now, "the simulation stopped advancing at {now}");
        if next > horizon {
            bail!(
                "{}: work or capacity left a day after the last message",
                trace.name
            );
        }
        now = next;
    }
}

/// This project's operator, reconciling one worker.
///
/// Each reconcile observes the account, decides, executes the actions, writes the status fields
/// the controller writes, and comes back after the decision's requeue delay. Reconciles take no
/// time; the extra reconcile the controller's watch makes after its own status patch is left
/// out (it decides the same and only shifts the 2 s polling by the reconcile's latency).
pub struct Operator {
    spec: EcsSelfTerminatingWorkerSpec,
    status: EcsSelfTerminatingWorkerStatus,
    next_reconcile: i64,
    /// Runs recorded in `status.lastRun`.
    pub runs: usize,
}

impl Operator {
    pub fn new(spec: EcsSelfTerminatingWorkerSpec) -> Result<Operator> {
        validate(&spec)?;
        Ok(Operator {
            spec,
            status: EcsSelfTerminatingWorkerStatus::default(),
            next_reconcile: 0,
            runs: 0,
        })
    }
}

impl Control for Operator {
    fn step(&mut self, now: i64, world: &mut World) -> Result<()> {
        if now < self.next_reconcile {
            return Ok(());
        }
        let current_run = self.status.current_run.as_ref().map(|r| r.id.clone());
        let observed = world.observe(now, current_run.as_deref());
        let decision = decide(&Input {
            spec: &validate(&self.spec)?,
            status: &self.status,
            observed: &observed,
            trigger: None,
            now: timestamp(now),
        });
        for action in &decision.actions {
            world.execute(now, action)?;
        }
        if decision.last_run != self.status.last_run
            && let Some(run) = &decision.last_run
        {
            // The model has no failing handler and no instance that fails to join; Spot
            // interruptions and launches without Spot capacity are the market's.
            ensure!(
                matches!(
                    run.outcome,
                    RunOutcome::Succeeded | RunOutcome::Interrupted | RunOutcome::LaunchFailed
                ),
                "run {} ended {:?}: {:?}",
                run.id,
                run.outcome,
                run.stop_reason
            );
            self.runs += 1;
        }
        let status = &mut self.status;
        status.queue = Some(observed.queue);
        decision.write_to(status);
        let requeue = decision.requeue_after.as_millis().div_ceil(1000);
        self.next_reconcile = now + i64::try_from(requeue)?.max(1);
        Ok(())
    }

    fn next_wake(&self) -> i64 {
        self.next_reconcile
    }

    fn at_rest(&self) -> bool {
        self.status.current_run.is_none()
    }
}

/// How often a waiting invocation of the original checks for a registered instance.
const LAMBDA_CHECK_EVERY: i64 = 10;
/// How long it waits before calling RunTask anyway.
const LAMBDA_WAIT_AT_MOST: i64 = 300;

/// The original's scheduled function.
///
/// At each tick, if the queue shows a message, no task runs and no container instance is
/// registered, it sets the desired capacity to 1, checks every 10 s for a registered container
/// instance and calls RunTask once when it sees one, or after 300 s whether or not one
/// registered (a RunTask that cannot place its task fails, and the failure is ignored). If a
/// message shows, no task runs but an instance is registered, it sets the desired capacity to
/// 0. Invocations overlap when the wait outlasts the rate, as Lambda allows; one that checks at
/// the same second as a new tick checks first.
pub struct Lambda {
    rate: i64,
    next_tick: i64,
    /// Invocations waiting for a registered instance: (invoked at, next check).
    waiting: Vec<(i64, i64)>,
}

impl Lambda {
    /// Ticks every `rate` seconds, on the same minute boundaries as the operator's schedule.
    pub fn new(rate: i64) -> Lambda {
        Lambda {
            rate,
            next_tick: rate,
            waiting: Vec::new(),
        }
    }
}

impl Control for Lambda {
    fn step(&mut self, now: i64, world: &mut World) -> Result<()> {
        let mut still_waiting = Vec::new();
        for (invoked, check) in std::mem::take(&mut self.waiting) {
            if check > now {
                still_waiting.push((invoked, check));
            } else if world.registered(now) || now - invoked >= LAMBDA_WAIT_AT_MOST {
                // Launch type EC2; a task that cannot be placed is a failure nobody reads.
                world.run_tasks(now, None, 1);
            } else {
                still_waiting.push((invoked, check + LAMBDA_CHECK_EVERY));
            }
        }
        self.waiting = still_waiting;
        if now >= self.next_tick {
            self.next_tick += self.rate;
            if world.visible() >= 1 && !world.any_active_task() {
                if !world.registered(now) {
                    world.set_desired(now, 1)?;
                    self.waiting.push((now, now + LAMBDA_CHECK_EVERY));
                } else {
                    world.set_desired(now, 0)?;
                }
            }
        }
        Ok(())
    }

    fn next_wake(&self) -> i64 {
        self.waiting
            .iter()
            .map(|&(_, check)| check)
            .fold(self.next_tick, i64::min)
    }

    fn at_rest(&self) -> bool {
        self.waiting.is_empty()
    }
}
