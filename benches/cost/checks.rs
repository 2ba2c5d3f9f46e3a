//! Self-checks of the simulator, run when the bench is started without `--bench` (that is how
//! `cargo test` runs it): the EC2 billing rule, the trace generators, the physical limit
//! against brute force, the worker state machines, and whole cycles whose timeline is worked
//! out by hand. They take about a second.

use crate::limit::{brute_force_billed, limit};
use crate::model::{Market, Queue, Timings, billed};
use crate::policies::{Lambda, Operator, simulate, simulate_on};
use crate::traces::{self, DAY, Handler, Message, Trace};
use crate::worker::{Behaviour, Did, Termination, Worker};
use anyhow::{Context, Result, ensure};
use ecs_worker_operator::api::CapacityType;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

type Check = fn() -> Result<()>;

pub fn run() -> Result<()> {
    let checks: [(&str, Check); 10] = [
        (
            "ec2_bills_at_least_60_seconds",
            ec2_bills_at_least_60_seconds,
        ),
        ("traces_are_seeded_and_shaped", traces_are_seeded_and_shaped),
        ("limit_of_simple_traces", limit_of_simple_traces),
        ("limit_matches_brute_force", limit_matches_brute_force),
        (
            "worker_drains_after_empty_long_polls",
            worker_drains_after_empty_long_polls,
        ),
        (
            "original_worker_ends_on_first_empty_receive",
            original_worker_ends_on_first_empty_receive,
        ),
        ("one_message_timeline", one_message_timeline),
        (
            "every_policy_handles_every_message",
            every_policy_handles_every_message,
        ),
        (
            "calm_spot_bills_like_on_demand",
            calm_spot_bills_like_on_demand,
        ),
        (
            "spot_interruptions_and_shortages_lose_no_message",
            spot_interruptions_and_shortages_lose_no_message,
        ),
    ];
    for (name, check) in checks {
        check().with_context(|| format!("check {name} failed"))?;
        println!("check {name} ... ok");
    }
    Ok(())
}

const TIMINGS: Timings = Timings {
    boot: 60,
    boot_jitter: 0,
    boot_seed: 0,
    task_start: 10,
};

fn trace(messages: &[(i64, i64)]) -> Trace {
    Trace {
        name: "check",
        description: String::new(),
        messages: messages
            .iter()
            .map(|&(arrival, handler)| Message { arrival, handler })
            .collect(),
    }
}

/// The worker as the default spec runs it (`WORKER_WAIT_SECONDS=20`, `WORKER_EMPTY_RECEIVES=2`).
fn ours_default() -> Behaviour {
    Behaviour::ours(20, 2, Termination::OwnInstance)
}

/// The operator with the spec the report uses: every default, a 1-minute schedule.
fn operator() -> Result<Operator> {
    Operator::new(crate::spec(None)?)
}

/// The same with `worker.adaptiveTail: false`.
fn fixed_tail_operator() -> Result<Operator> {
    let mut spec = crate::spec(None)?;
    spec.worker.adaptive_tail = false;
    Operator::new(spec)
}

fn ec2_bills_at_least_60_seconds() -> Result<()> {
    ensure!(billed(0) == 60 && billed(1) == 60 && billed(60) == 60);
    ensure!(billed(61) == 61 && billed(3_600) == 3_600);
    Ok(())
}

fn traces_are_seeded_and_shaped() -> Result<()> {
    let a = traces::standard(2, 7);
    let b = traces::standard(2, 7);
    let c = traces::standard(2, 8);
    ensure!(a.len() == 4);
    for ((x, y), z) in a.iter().zip(&b).zip(&c) {
        ensure!(
            x.messages == y.messages,
            "{}: same seed, other trace",
            x.name
        );
        ensure!(
            x.messages != z.messages,
            "{}: other seed, same trace",
            x.name
        );
        ensure!(!x.messages.is_empty(), "{}: empty", x.name);
        ensure!(
            x.messages.windows(2).all(|w| w[0].arrival <= w[1].arrival),
            "{}: not sorted",
            x.name
        );
        ensure!(
            x.messages
                .iter()
                .all(|m| m.arrival >= 0 && m.arrival < 2 * DAY + 3_600 && m.handler >= 1),
            "{}: arrival or handler out of range",
            x.name
        );
    }
    let steady = traces::steady(2, 30, Handler(5, 15), 1);
    ensure!(steady.messages.len() == 2 * DAY as usize / 30);
    ensure!(
        steady
            .messages
            .windows(2)
            .all(|w| w[1].arrival - w[0].arrival == 30)
    );
    ensure!(
        steady
            .messages
            .iter()
            .all(|m| (5..=15).contains(&m.handler))
    );
    let batch = traces::daily_batch(3, 500, 7_200, 600, Handler(1, 3), 1);
    ensure!(batch.messages.len() == 1_500);
    for day in 0..3 {
        let from = day * DAY + 7_200;
        let n = batch
            .messages
            .iter()
            .filter(|m| (from..from + 600).contains(&m.arrival))
            .count();
        ensure!(n == 500, "day {day}: {n} messages in the batch window");
    }
    let rare = traces::rare(200, 3 * 3_600, Handler(30, 90), 1);
    let mean_gap = (rare.messages.last().expect("messages").arrival - rare.messages[0].arrival)
        as f64
        / (rare.messages.len() - 1) as f64;
    ensure!(
        (9_700.0..11_900.0).contains(&mean_gap),
        "rare: mean gap {mean_gap} s, expected about 10,800"
    );
    Ok(())
}

fn limit_of_simple_traces() -> Result<()> {
    // One short message: the 60 s minimum does not bind with a 70 s start.
    let one = limit(&trace(&[(100, 10)]).messages, 70);
    ensure!((one.billed, one.starts) == (80, 1), "{one:?}");
    // A start overhead under a minute: the minimum binds.
    let quick = limit(&trace(&[(100, 10)]).messages, 30);
    ensure!(
        (quick.billed, quick.breakdown.minimum) == (60, 20),
        "{quick:?}"
    );
    // Back to back: the second waits for the first.
    let queued = limit(&trace(&[(0, 10), (5, 10)]).messages, 70);
    ensure!(
        queued.billed == 90 && queued.latencies == [0, 5],
        "{queued:?}"
    );
    // A 50 s gap is cheaper to keep up than a 70 s start; a 100 s gap is not.
    let near = limit(&trace(&[(0, 10), (60, 10)]).messages, 70);
    ensure!(
        (near.billed, near.starts, near.breakdown.idle) == (140, 1, 50),
        "{near:?}"
    );
    let far = limit(&trace(&[(0, 10), (110, 10)]).messages, 70);
    ensure!((far.billed, far.starts) == (160, 2), "{far:?}");
    Ok(())
}

fn limit_matches_brute_force() -> Result<()> {
    let mut rng = StdRng::seed_from_u64(11);
    for case in 0..400 {
        let n = rng.random_range(1..=11);
        let mut at = 0;
        let messages: Vec<Message> = (0..n)
            .map(|_| {
                at += rng.random_range(0..200);
                Message {
                    arrival: at,
                    handler: rng.random_range(1..40),
                }
            })
            .collect();
        for overhead in [5, 30, 70, 150] {
            let fast = limit(&messages, overhead);
            let slow = brute_force_billed(&messages, overhead);
            ensure!(
                fast.billed == slow,
                "case {case}, overhead {overhead}: {} vs brute force {slow} for {messages:?}",
                fast.billed
            );
            ensure!(fast.breakdown.total() == fast.billed);
        }
    }
    Ok(())
}

/// Runs `worker` over `messages` (message index, arrival) until it ends; returns what it did
/// with the times.
fn drive(mut worker: Worker, messages: &[Message]) -> Vec<(i64, Did)> {
    let mut queue = Queue::default();
    let mut sent = 0;
    let mut log = Vec::new();
    let mut did = Vec::new();
    let mut now = 0;
    loop {
        while sent < messages.len() && messages[sent].arrival <= now {
            queue.send(sent);
            sent += 1;
        }
        did.clear();
        worker.wake(now, &mut queue, messages, &mut did);
        log.extend(did.iter().map(|d| (now, *d)));
        let Some(next) = worker.next_wake() else {
            return log;
        };
        now = messages
            .get(sent)
            .map_or(next, |m| m.arrival.min(next))
            .max(now + 1);
    }
}

fn worker_drains_after_empty_long_polls() -> Result<()> {
    let messages = trace(&[(5, 10), (40, 3)]).messages;
    let log = drive(Worker::start(ours_default(), 0), &messages);
    // 5: received at arrival (the poll was open); 15: done; 15-35 empty; 40: the second
    // message ends the second poll early and resets the count; 43: done; 43-63, 63-83 empty.
    let expected = [
        (5, Did::Started { message: 0 }),
        (15, Did::Finished { message: 0 }),
        (40, Did::Started { message: 1 }),
        (43, Did::Finished { message: 1 }),
        (83, Did::Drained),
    ];
    ensure!(log == expected, "{log:?}");
    // One empty 4 s poll ends a worker with WORKER_EMPTY_RECEIVES=1 before the first message.
    let once = drive(
        Worker::start(Behaviour::ours(4, 1, Termination::OwnInstance), 0),
        &messages,
    );
    ensure!(once == [(4, Did::Drained)], "{once:?}");
    Ok(())
}

fn original_worker_ends_on_first_empty_receive() -> Result<()> {
    let messages = trace(&[(0, 10), (5, 10), (30, 1)]).messages;
    let log = drive(Worker::start(Behaviour::original(), 0), &messages);
    let expected = [
        (0, Did::Started { message: 0 }),
        (10, Did::Finished { message: 0 }),
        (10, Did::Started { message: 1 }),
        (20, Did::Finished { message: 1 }),
        (20, Did::Drained),
    ];
    ensure!(log == expected, "{log:?}");
    Ok(())
}

fn one_message_timeline() -> Result<()> {
    // One message at 30 s with a 10 s handler; boot 60 s, task start 10 s.
    let t = trace(&[(30, 10)]);
    // Operator: tick at 60 scales up; the 2 s polls see the instance joined at 120 and run the
    // task; the worker receives at 130 and handles until 140. The run is the worker's first, so
    // RunTask gives it the short tail: one empty 5 s poll (140-145), then it terminates its
    // instance: up 60-145.
    let mut op = operator()?;
    let ours = simulate(&t, TIMINGS, ours_default(), &mut op)?;
    ensure!(op.runs == 1, "{} runs recorded", op.runs);
    ensure!(
        (ours.billed, ours.starts, ours.latencies.as_slice()) == (85, 1, &[100][..]),
        "{ours:?}"
    );
    let b = ours.breakdown;
    ensure!(
        (b.start, b.awaiting_task, b.busy, b.idle, b.tail) == (70, 0, 10, 0, 5),
        "{b:?}"
    );
    // With `adaptiveTail: false` the task definition's tail applies: empty polls 140-160 and
    // 160-180: up 60-180.
    let fixed = simulate(&t, TIMINGS, ours_default(), &mut fixed_tail_operator()?)?;
    ensure!(
        (fixed.billed, fixed.breakdown.tail) == (120, 40),
        "{fixed:?}"
    );
    // Original: tick at 60 scales up; checks at 70 ... 120 see the instance at 120; the worker
    // handles 130-140, its next receive is empty and it sets the group to 0: up 60-140.
    let original = simulate(&t, TIMINGS, Behaviour::original(), &mut Lambda::new(60))?;
    ensure!(
        (original.billed, original.latencies.as_slice()) == (80, &[100][..]),
        "{original:?}"
    );
    // The limit: 70 s of start plus the handler.
    ensure!(limit(&t.messages, 70).billed == 80);
    // A second message at 150. With the fixed tail it comes during the first empty poll
    // (140-160) and is received at once on the same instance; two empty polls after it
    // (160-200) end the worker: up 60-200.
    let two = trace(&[(30, 10), (150, 10)]);
    let fixed = simulate(&two, TIMINGS, ours_default(), &mut fixed_tail_operator()?)?;
    ensure!(
        (fixed.billed, fixed.starts, fixed.latencies.as_slice()) == (140, 1, &[100, 0][..]),
        "{fixed:?}"
    );
    // With the short tail the first instance is gone at 145 (85 s), so the tick at 180 starts
    // another; that run follows the first by 35 s and keeps the configured tail: joined at
    // 240, handles 250-260, empty polls 260-300: up 180-300 (120 s).
    let adaptive = simulate(&two, TIMINGS, ours_default(), &mut operator()?)?;
    ensure!(
        (
            adaptive.billed,
            adaptive.starts,
            adaptive.latencies.as_slice()
        ) == (205, 2, &[100, 100][..]),
        "{adaptive:?}"
    );
    Ok(())
}

fn every_policy_handles_every_message() -> Result<()> {
    let jittered = Timings {
        boot_jitter: 10,
        boot_seed: 5,
        ..TIMINGS
    };
    for t in traces::standard(1, 3) {
        for timings in [TIMINGS, jittered] {
            let overhead = timings.start_overhead();
            let bills = [
                simulate(&t, timings, ours_default(), &mut operator()?)?,
                simulate(
                    &t,
                    timings,
                    Behaviour::ours(1, 1, Termination::OwnInstance),
                    &mut operator()?,
                )?,
                simulate(&t, timings, Behaviour::original(), &mut Lambda::new(60))?,
            ];
            for bill in bills {
                // `bill` fails unless every message was handled; the simulation ends only with
                // capacity back at zero.
                ensure!(bill.latencies.len() == t.messages.len());
                ensure!(bill.breakdown.busy == t.busy(), "{}: {bill:?}", t.name);
                // Every start boots and starts a task once.
                let starts = bill.starts as i64;
                let jitter = starts * timings.boot_jitter;
                ensure!(
                    (starts * overhead - jitter..=starts * overhead + jitter)
                        .contains(&bill.breakdown.start),
                    "{}: {} s of starts for {starts} starts",
                    t.name,
                    bill.breakdown.start
                );
                ensure!(bill.breakdown.total() == bill.billed);
                ensure!(bill.latencies.iter().all(|&l| l >= 0));
            }
        }
    }
    Ok(())
}

/// The operator with `capacity.type` set.
fn spot_operator(capacity_type: CapacityType) -> Result<Operator> {
    let mut spec = crate::spec(None)?;
    spec.capacity.capacity_type = capacity_type;
    Operator::new(spec)
}

fn calm_spot_bills_like_on_demand() -> Result<()> {
    // No interruption, no shortage: the same instance-seconds, all of them Spot.
    let calm = Market {
        on_demand_percentage: 0,
        interruptions_per_hour: 0.0,
        shortage: 0.0,
        seed: 1,
    };
    for t in traces::standard(1, 2) {
        let on_demand = simulate(&t, TIMINGS, ours_default(), &mut operator()?)?;
        let spot = simulate_on(
            &t,
            TIMINGS,
            calm,
            ours_default(),
            &mut spot_operator(CapacityType::Spot)?,
        )?;
        ensure!(
            (spot.billed, spot.billed_spot, on_demand.billed_spot)
                == (on_demand.billed, on_demand.billed, 0),
            "{}: {spot:?} vs {on_demand:?}",
            t.name
        );
        ensure!((spot.interruptions, spot.launch_failures) == (0, 0));
    }
    Ok(())
}

fn spot_interruptions_and_shortages_lose_no_message() -> Result<()> {
    let rough = Market {
        on_demand_percentage: 0,
        interruptions_per_hour: 0.5,
        shortage: 0.3,
        seed: 7,
    };
    let mut interrupted = 0;
    let mut failed = 0;
    for t in traces::standard(1, 4) {
        for capacity in [CapacityType::Spot, CapacityType::SpotWithFallback] {
            // `bill` fails unless every message was handled (a message given up on SIGTERM is
            // handled again); the simulation ends only with capacity back at zero.
            let bill = simulate_on(
                &t,
                TIMINGS,
                rough,
                ours_default(),
                &mut spot_operator(capacity)?,
            )
            .with_context(|| format!("{}: {capacity:?}", t.name))?;
            ensure!(bill.latencies.len() == t.messages.len());
            ensure!(bill.breakdown.total() == bill.billed);
            if capacity == CapacityType::Spot {
                ensure!(bill.billed_spot == bill.billed, "{}: {bill:?}", t.name);
            }
            interrupted += bill.interruptions;
            failed += bill.launch_failures;
        }
    }
    // The market was rough enough to exercise both paths.
    ensure!(
        interrupted > 0 && failed > 0,
        "{interrupted} interruptions, {failed} failures"
    );
    Ok(())
}
