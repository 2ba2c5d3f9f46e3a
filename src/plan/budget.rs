//! The spend guardrail (`spec.budget`): instance-hours over a rolling 24 hours, counted by the
//! hour in which each run ended, and blackout windows in which no run starts.
//!
//! Pure, like the cycle that asks it: whether a run may start now, and where the budget stands
//! (`status.budget`) after a decision.

use crate::api::{BlackoutWindow, BudgetSpec, BudgetStatus, RunRecord, RunStatus, UsageHour};
use crate::schedule::Schedule;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The rolling window, in seconds.
pub const WINDOW: i64 = 86_400;
const HOUR: i64 = 3_600;

/// Instance-seconds of `instances` from `from` to `until` (none before `from`).
pub fn instance_seconds(instances: i32, from: Timestamp, until: Timestamp) -> i64 {
    i64::from(instances.max(0)) * (until.as_second() - from.as_second()).max(0)
}

/// The hours still inside the window at `now`, with `ended` (a run that ended in this
/// decision) added to the hour it ended in.
pub fn account(hours: &[UsageHour], ended: Option<&RunRecord>, now: Timestamp) -> Vec<UsageHour> {
    let mut kept: Vec<UsageHour> = hours
        .iter()
        .filter(|h| h.hour.0.as_second() + WINDOW > now.as_second())
        .cloned()
        .collect();
    if let Some(run) = ended {
        let used = instance_seconds(run.instances, run.scale_up_at.0, run.stopped_at.0);
        let start = run.stopped_at.0.as_second().div_euclid(HOUR) * HOUR;
        match kept.iter_mut().find(|h| h.hour.0.as_second() == start) {
            Some(h) => h.instance_seconds += used,
            None => {
                if let Ok(hour) = Timestamp::from_second(start) {
                    kept.push(UsageHour {
                        hour: Time(hour),
                        instance_seconds: used,
                    });
                }
            }
        }
        kept.sort_by_key(|h| h.hour.0);
    }
    kept
}

/// Where the budget stands at `now`: the ended runs of `hours` plus what `current` has used.
/// `None` without `maxInstanceHoursPerDay`.
pub fn standing(
    spec: Option<&BudgetSpec>,
    hours: Vec<UsageHour>,
    current: Option<&RunStatus>,
    now: Timestamp,
) -> Option<BudgetStatus> {
    let limit = i64::from(spec?.max_instance_hours_per_day?) * HOUR;
    let going = current.map_or(0, |r| instance_seconds(r.instances, r.scale_up_at.0, now));
    let ended: i64 = hours.iter().map(|h| h.instance_seconds).sum();
    let used = ended + going;
    let exhausted = used >= limit;
    // The first moment an hour leaving the window brings the count under the limit.
    let resets_at = exhausted.then(|| {
        let mut left = used;
        hours.iter().find_map(|h| {
            left -= h.instance_seconds;
            (left < limit)
                .then(|| Timestamp::from_second(h.hour.0.as_second() + WINDOW).ok())
                .flatten()
        })
    });
    Some(BudgetStatus {
        used_instance_seconds: used,
        limit_instance_seconds: limit,
        exhausted,
        resets_at: resets_at.flatten().map(Time),
        hours,
    })
}

/// The end of the blackout window `now` is in, if any (the latest end when windows overlap).
/// Windows whose start does not parse are left to validation.
pub fn blackout_until(windows: &[BlackoutWindow], now: Timestamp) -> Option<Timestamp> {
    windows
        .iter()
        .filter_map(|w| {
            let schedule = Schedule::parse_cron(&w.start).ok()?;
            let length = i64::from(w.duration_minutes.max(0)) * 60;
            let since = Timestamp::from_second(now.as_second() - length).ok()?;
            // The first opening after `now - length`; at or before `now`, the window is open.
            let opened = schedule.next_after(since)?;
            (opened <= now)
                .then(|| Timestamp::from_second(opened.as_second() + length).ok())
                .flatten()
        })
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RunOutcome;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).expect("valid")
    }

    /// A Monday, 00:00 UTC.
    const T0: i64 = 1_795_996_800;

    fn ended(instances: i32, from: i64, to: i64) -> RunRecord {
        RunRecord {
            id: format!("run-{from}"),
            outcome: RunOutcome::Succeeded,
            scale_up_at: Time(at(from)),
            started_at: None,
            stopped_at: Time(at(to)),
            instances,
            exit_code: Some(0),
            stop_reason: None,
            messages_before: 1,
            messages_after: Some(0),
            on_demand_fallback: false,
        }
    }

    fn budget(hours: i32) -> BudgetSpec {
        BudgetSpec {
            max_instance_hours_per_day: Some(hours),
            ..BudgetSpec::default()
        }
    }

    #[test]
    fn runs_are_counted_by_the_hour_they_ended_in_and_leave_after_24_hours() {
        let hours = account(&[], Some(&ended(2, T0 + 600, T0 + 2400)), at(T0 + 2400));
        assert_eq!(hours.len(), 1);
        assert_eq!(hours[0].hour, Time(at(T0)));
        assert_eq!(hours[0].instance_seconds, 3600);
        let hours = account(&hours, Some(&ended(1, T0 + 3000, T0 + 3500)), at(T0 + 3500));
        assert_eq!(hours[0].instance_seconds, 4100);
        assert_eq!(account(&hours, None, at(T0 + WINDOW - 1)).len(), 1);
        assert!(account(&hours, None, at(T0 + WINDOW)).is_empty());
    }

    #[test]
    fn the_budget_is_used_up_at_the_limit_and_says_when_it_resets() {
        let hours = vec![
            UsageHour {
                hour: Time(at(T0)),
                instance_seconds: 2 * HOUR,
            },
            UsageHour {
                hour: Time(at(T0 + 5 * HOUR)),
                instance_seconds: HOUR,
            },
        ];
        let now = at(T0 + 6 * HOUR);
        let s = standing(Some(&budget(3)), hours.clone(), None, now).expect("bounded");
        assert!(s.exhausted);
        assert_eq!(s.used_instance_seconds, 3 * HOUR);
        assert_eq!(s.resets_at, Some(Time(at(T0 + WINDOW))));
        let s = standing(Some(&budget(4)), hours.clone(), None, now).expect("bounded");
        assert!(!s.exhausted && s.resets_at.is_none());
        // The run going counts what it has used so far.
        let going = RunStatus {
            id: "run".into(),
            scale_up_at: Time(at(T0 + 6 * HOUR - 1800)),
            instances: 2,
            messages_before: 1,
            tasks_started_at: None,
            on_demand_fallback: false,
        };
        let s = standing(Some(&budget(4)), hours, Some(&going), now).expect("bounded");
        assert!(s.exhausted, "{s:?}");
        assert!(standing(None, Vec::new(), None, now).is_none());
        assert!(standing(Some(&BudgetSpec::default()), Vec::new(), None, now).is_none());
    }

    #[test]
    fn blackout_windows_hold_from_their_start_for_their_length() {
        let weekdays_9_to_17 = [BlackoutWindow {
            start: "0 9 * * 1-5".into(),
            duration_minutes: 480,
        }];
        assert_eq!(blackout_until(&weekdays_9_to_17, at(T0 + 8 * HOUR)), None);
        assert_eq!(
            blackout_until(&weekdays_9_to_17, at(T0 + 9 * HOUR)),
            Some(at(T0 + 17 * HOUR))
        );
        assert_eq!(
            blackout_until(&weekdays_9_to_17, at(T0 + 17 * HOUR - 1)),
            Some(at(T0 + 17 * HOUR))
        );
        assert_eq!(blackout_until(&weekdays_9_to_17, at(T0 + 17 * HOUR)), None);
        // Sunday (T0 - 1 day) has no window.
        assert_eq!(
            blackout_until(&weekdays_9_to_17, at(T0 - WINDOW + 10 * HOUR)),
            None
        );
    }
}
