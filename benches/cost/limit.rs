//! The physical limit: the cheapest bill of any policy that handles every message as soon as
//! the worker is free, on one instance running one handler at a time.
//!
//! Such a policy knows every arrival in advance, so its handlers run first come, first served,
//! in *busy periods*. It pays only the handlers, a start overhead (boot plus task start) per
//! instance start, and EC2's billing (launch to termination, at least 60 s per instance); between
//! two busy periods it keeps the instance up or starts a new one, whichever is cheaper. The limit
//! is the minimum over every grouping of busy periods into instance sessions, found exactly by
//! dynamic programming.

use crate::model::{Bill, Breakdown, EC2_MINIMUM_SECONDS, billed};
use crate::traces::Message;
use std::collections::VecDeque;

/// A stretch of back-to-back handlers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BusyPeriod {
    start: i64,
    end: i64,
    busy: i64,
}

/// The limit for `messages` (sorted by arrival) with the given start overhead.
///
/// It has no tick wait, no polling delay and no empty-receive tail: those are what a policy
/// adds because it does not know the future. A policy that delays work can bill less than this
/// limit (it may merge work into fewer starts), and then pays in time to first handling; that
/// is why the report shows both.
pub fn limit(messages: &[Message], start_overhead: i64) -> Bill {
    let (periods, latencies) = busy_periods(messages);
    let sessions = cheapest_sessions(&periods, start_overhead);
    let mut breakdown = Breakdown::default();
    let mut total = 0;
    for &(first, last) in &sessions {
        let up = start_overhead + periods[last].end - periods[first].start;
        let busy: i64 = periods[first..=last].iter().map(|p| p.busy).sum();
        breakdown += Breakdown {
            start: start_overhead,
            busy,
            idle: up - start_overhead - busy,
            minimum: billed(up) - up,
            ..Breakdown::default()
        };
        total += billed(up);
    }
    Bill {
        billed: total,
        billed_spot: 0,
        interruptions: 0,
        launch_failures: 0,
        starts: sessions.len(),
        breakdown,
        latencies,
    }
}

/// The busy periods of one server handling `messages` first come, first served from their
/// arrival, and each message's wait for the server.
fn busy_periods(messages: &[Message]) -> (Vec<BusyPeriod>, Vec<i64>) {
    let mut periods: Vec<BusyPeriod> = Vec::new();
    let mut waits = Vec::with_capacity(messages.len());
    for m in messages {
        match periods.last_mut() {
            Some(p) if m.arrival <= p.end => {
                waits.push(p.end - m.arrival);
                p.end += m.handler;
                p.busy += m.handler;
            }
            _ => {
                waits.push(0);
                periods.push(BusyPeriod {
                    start: m.arrival,
                    end: m.arrival + m.handler,
                    busy: m.handler,
                });
            }
        }
    }
    (periods, waits)
}

/// Billed seconds of one instance session serving `periods[first..=last]`.
fn session_cost(periods: &[BusyPeriod], first: usize, last: usize, overhead: i64) -> i64 {
    billed(overhead + periods[last].end - periods[first].start)
}

/// The grouping of busy periods into sessions (first, last) with the least billed seconds, by
/// dynamic programming over the last session's first period, in linear time.
///
/// A session from `first` to `last` costs `max(60, overhead + end[last] - start[first])`.
/// Once that span reaches the minimum for some `first`, it does for every earlier one, and
/// their bills are linear: the best of them has the least `cost[first] - start[first]`, kept at
/// the front of a monotonic deque. The later `first`s all bill the 60 s minimum, and the
/// cheapest of them is the earliest, since the cost of a prefix never falls as it grows. Ties
/// go to the longer session (fewer starts).
fn cheapest_sessions(periods: &[BusyPeriod], overhead: i64) -> Vec<(usize, usize)> {
    let n = periods.len();
    // cost[j]: cheapest bill for periods[..j]; from[j]: first period of its last session.
    let mut cost = vec![0i64; n + 1];
    let mut from = vec![0usize; n + 1];
    let key = |cost: &[i64], first: usize| cost[first] - periods[first].start;
    let mut linear: VecDeque<usize> = VecDeque::new();
    let mut next_linear = 0;
    for last in 0..n {
        while next_linear <= last
            && overhead + periods[last].end - periods[next_linear].start >= EC2_MINIMUM_SECONDS
        {
            let k = key(&cost, next_linear);
            while linear.back().is_some_and(|&b| key(&cost, b) > k) {
                linear.pop_back();
            }
            linear.push_back(next_linear);
            next_linear += 1;
        }
        let linear_best = linear.front().map(|&first| {
            let span = periods[last].end - periods[first].start;
            (cost[first] + overhead + span, first)
        });
        let minimum_best =
            (next_linear <= last).then(|| (cost[next_linear] + EC2_MINIMUM_SECONDS, next_linear));
        let (best, first) = linear_best
            .into_iter()
            .chain(minimum_best)
            .min()
            .expect("`last` is a candidate");
        cost[last + 1] = best;
        from[last + 1] = first;
    }
    let mut sessions = Vec::new();
    let mut end = n;
    while end > 0 {
        let first = from[end];
        sessions.push((first, end - 1));
        end = first;
    }
    sessions.reverse();
    sessions
}

/// The least billed seconds over every grouping of busy periods into sessions, by trying them
/// all (for the self-checks; exponential in the number of busy periods).
pub fn brute_force_billed(messages: &[Message], start_overhead: i64) -> i64 {
    let (periods, _) = busy_periods(messages);
    let n = periods.len();
    if n == 0 {
        return 0;
    }
    (0u64..1 << (n - 1))
        .map(|breaks| {
            let mut total = 0;
            let mut first = 0;
            for last in 0..n {
                if last == n - 1 || breaks & (1 << last) != 0 {
                    total += session_cost(&periods, first, last, start_overhead);
                    first = last + 1;
                }
            }
            total
        })
        .min()
        .expect("at least one grouping")
}
