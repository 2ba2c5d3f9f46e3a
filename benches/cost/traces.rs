//! Message-arrival traces: when each message arrives and how long its handler runs.
//!
//! Every generator is seeded, so a trace is the same on every run and every machine. Times are
//! whole seconds since the start of the simulation, which is a UTC midnight.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub const HOUR: i64 = 3_600;
pub const DAY: i64 = 86_400;

/// One message of a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message {
    /// When it is sent to the queue.
    pub arrival: i64,
    /// How long its handler runs, at least 1 s.
    pub handler: i64,
}

/// A named, sorted list of messages.
#[derive(Clone, Debug)]
pub struct Trace {
    pub name: &'static str,
    /// One line saying how the trace was made.
    pub description: String,
    /// Sorted by arrival.
    pub messages: Vec<Message>,
}

impl Trace {
    fn new(name: &'static str, description: String, mut messages: Vec<Message>) -> Trace {
        messages.sort_by_key(|m| m.arrival);
        Trace {
            name,
            description,
            messages,
        }
    }

    /// Handler seconds of the whole trace.
    pub fn busy(&self) -> i64 {
        self.messages.iter().map(|m| m.handler).sum()
    }
}

/// Handler durations drawn uniformly from an inclusive range of seconds.
#[derive(Clone, Copy, Debug)]
pub struct Handler(pub i64, pub i64);

impl Handler {
    fn draw(self, rng: &mut StdRng) -> i64 {
        rng.random_range(self.0..=self.1).max(1)
    }
}

/// The four traces of the report, `days` long.
pub fn standard(days: i64, seed: u64) -> Vec<Trace> {
    vec![
        steady(days, 30, Handler(5, 15), seed),
        bursty(
            days,
            (20, 200),
            60,
            (HOUR, 6 * HOUR),
            Handler(5, 15),
            seed + 1,
        ),
        rare(days, 3 * HOUR, Handler(30, 90), seed + 2),
        daily_batch(days, 2_000, 2 * HOUR, 600, Handler(1, 3), seed + 3),
    ]
}

/// One message every `period` seconds, from a random offset in the first period.
pub fn steady(days: i64, period: i64, handler: Handler, seed: u64) -> Trace {
    let mut rng = StdRng::seed_from_u64(seed);
    let offset = rng.random_range(0..period);
    let messages = (offset..days * DAY)
        .step_by(usize::try_from(period).expect("positive period"))
        .map(|arrival| Message {
            arrival,
            handler: handler.draw(&mut rng),
        })
        .collect();
    Trace::new(
        "steady",
        format!(
            "one message every {period} s; handlers {}–{} s",
            handler.0, handler.1
        ),
        messages,
    )
}

/// Bursts of `size` messages (uniform, inclusive) sent at random moments within `spread`
/// seconds; the time from one burst's start to the next is uniform in `gap`.
pub fn bursty(
    days: i64,
    size: (usize, usize),
    spread: i64,
    gap: (i64, i64),
    handler: Handler,
    seed: u64,
) -> Trace {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut messages = Vec::new();
    let mut start = rng.random_range(gap.0..=gap.1);
    while start < days * DAY {
        for _ in 0..rng.random_range(size.0..=size.1) {
            messages.push(Message {
                arrival: start + rng.random_range(0..spread),
                handler: handler.draw(&mut rng),
            });
        }
        start += rng.random_range(gap.0..=gap.1);
    }
    Trace::new(
        "bursty",
        format!(
            "bursts of {}–{} messages within {spread} s, every {}–{} h; handlers {}–{} s",
            size.0,
            size.1,
            gap.0 / HOUR,
            gap.1 / HOUR,
            handler.0,
            handler.1
        ),
        messages,
    )
}

/// Messages at random, independent moments (a Poisson process) `mean_gap` seconds apart on
/// average.
pub fn rare(days: i64, mean_gap: i64, handler: Handler, seed: u64) -> Trace {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut messages = Vec::new();
    let mut at = exponential(&mut rng, mean_gap);
    while at < days * DAY {
        messages.push(Message {
            arrival: at,
            handler: handler.draw(&mut rng),
        });
        at += exponential(&mut rng, mean_gap);
    }
    Trace::new(
        "rare",
        format!(
            "one message every {} h on average (Poisson); handlers {}–{} s",
            mean_gap / HOUR,
            handler.0,
            handler.1
        ),
        messages,
    )
}

/// `size` messages every day, sent at random moments within `spread` seconds from `at`
/// seconds after midnight.
pub fn daily_batch(
    days: i64,
    size: usize,
    at: i64,
    spread: i64,
    handler: Handler,
    seed: u64,
) -> Trace {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut messages = Vec::new();
    for day in 0..days {
        for _ in 0..size {
            messages.push(Message {
                arrival: day * DAY + at + rng.random_range(0..spread),
                handler: handler.draw(&mut rng),
            });
        }
    }
    Trace::new(
        "daily batch",
        format!(
            "{} messages once a day at {:02}:00 UTC within {} min; handlers {}–{} s",
            crate::report::thousands(size as i64),
            at / HOUR,
            spread / 60,
            handler.0,
            handler.1
        ),
        messages,
    )
}

/// An exponentially distributed whole number of seconds, at least 1.
fn exponential(rng: &mut StdRng, mean: i64) -> i64 {
    let u: f64 = rng.random();
    // `u` is in [0, 1), so the logarithm is finite.
    ((-(1.0 - u).ln() * mean as f64).round() as i64).max(1)
}
