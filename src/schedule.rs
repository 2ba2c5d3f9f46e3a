//! When a worker's cycle ticks: the original's `N_UNIT` rate (`7_HOURS`, `1_MINUTE`,
//! `2_SECONDS`) or a 5-field cron expression, evaluated in UTC. Pure.
//!
//! A rate ticks at the multiples of its period counted from the Unix epoch, so the next tick
//! is a function of the time alone: no state to lose when the operator restarts, and every
//! replica agrees.

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::{Timestamp, tz::TimeZone};
use std::fmt;

/// A parsed schedule.
#[derive(Clone, Debug)]
pub enum Schedule {
    /// Every `seconds` seconds.
    Rate { seconds: i64, text: String },
    /// A 5-field cron expression in UTC.
    Cron { cron: Box<Cron>, text: String },
}

/// Why a schedule is invalid; the message names the field and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("spec.cronRate {0:?} is not NUMBER_UNIT (e.g. 7_HOURS, 1_HOUR, 1_MINUTE, 2_SECONDS)")]
    BadRate(String),
    #[error("spec.cronRate {0:?} is longer than a year; use spec.schedule for rare runs")]
    RateTooLong(String),
    #[error(
        "spec.schedule {text:?} is not a 5-field cron expression (minute hour day-of-month month day-of-week): {reason}"
    )]
    BadCron { text: String, reason: String },
    #[error("set exactly one of spec.cronRate or spec.schedule")]
    NotExactlyOne,
}

const MAX_RATE_SECONDS: i64 = 366 * 24 * 3600;

impl Schedule {
    /// Parses the spec's two fields; exactly one must be set.
    pub fn from_spec(
        cron_rate: Option<&str>,
        schedule: Option<&str>,
    ) -> Result<Schedule, ScheduleError> {
        match (cron_rate, schedule) {
            (Some(rate), None) => Self::parse_rate(rate),
            (None, Some(cron)) => Self::parse_cron(cron),
            _ => Err(ScheduleError::NotExactlyOne),
        }
    }

    /// `NUMBER_UNIT`, unit one of SECOND(S), MINUTE(S), HOUR(S), DAY(S).
    pub fn parse_rate(text: &str) -> Result<Schedule, ScheduleError> {
        let bad = || ScheduleError::BadRate(text.to_string());
        let (number, unit) = text.split_once('_').ok_or_else(bad)?;
        if number.is_empty()
            || !number.bytes().all(|b| b.is_ascii_digit())
            || number.starts_with('0')
        {
            return Err(bad());
        }
        let n: i64 = number.parse().map_err(|_| bad())?;
        let unit_seconds = match unit.strip_suffix('S').unwrap_or(unit) {
            "SECOND" => 1,
            "MINUTE" => 60,
            "HOUR" => 3600,
            "DAY" => 86400,
            _ => return Err(bad()),
        };
        let seconds = n
            .checked_mul(unit_seconds)
            .filter(|s| *s <= MAX_RATE_SECONDS)
            .ok_or_else(|| ScheduleError::RateTooLong(text.to_string()))?;
        Ok(Schedule::Rate {
            seconds,
            text: text.to_string(),
        })
    }

    /// A 5-field cron expression (no seconds, no year).
    pub fn parse_cron(text: &str) -> Result<Schedule, ScheduleError> {
        let bad = |reason: String| ScheduleError::BadCron {
            text: text.to_string(),
            reason,
        };
        if text.split_whitespace().count() != 5 {
            return Err(bad("expected 5 fields".into()));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(text)
            .map_err(|e| bad(e.to_string()))?;
        // A pattern that never matches (e.g. February 31st) is refused rather than never run.
        let probe = Timestamp::UNIX_EPOCH.to_zoned(TimeZone::UTC);
        cron.find_next_occurrence(&probe, false)
            .map_err(|e| bad(e.to_string()))?;
        Ok(Schedule::Cron {
            cron: Box::new(cron),
            text: text.to_string(),
        })
    }

    /// The first tick strictly after `now`.
    pub fn next_after(&self, now: Timestamp) -> Option<Timestamp> {
        match self {
            Schedule::Rate { seconds, .. } => {
                let s = now.as_second();
                let next = (s.div_euclid(*seconds) + 1).checked_mul(*seconds)?;
                Timestamp::from_second(next).ok()
            }
            Schedule::Cron { cron, .. } => cron
                .find_next_occurrence(&now.to_zoned(TimeZone::UTC), false)
                .ok()
                .map(|z| z.timestamp()),
        }
    }

    /// The last tick at or before `now`: the tests' check of [`Schedule::next_after`].
    #[cfg(test)]
    pub fn last_at_or_before(&self, now: Timestamp) -> Option<Timestamp> {
        match self {
            Schedule::Rate { seconds, .. } => {
                Timestamp::from_second(now.as_second().div_euclid(*seconds) * seconds).ok()
            }
            Schedule::Cron { cron, .. } => cron
                .find_previous_occurrence(&now.to_zoned(TimeZone::UTC), true)
                .ok()
                .map(|z| z.timestamp()),
        }
    }
}

impl fmt::Display for Schedule {
    /// `rate(7 hours)` / `cron(*/15 * * * *)`, as shown in `status.schedule`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Rate { text, .. } => {
                let (n, unit) = text.split_once('_').unwrap_or((text, ""));
                let unit = unit.to_lowercase();
                let unit = if n == "1" {
                    unit.trim_end_matches('s').to_string()
                } else if unit.ends_with('s') {
                    unit
                } else {
                    format!("{unit}s")
                };
                write!(f, "rate({n} {unit})")
            }
            Schedule::Cron { text, .. } => write!(f, "cron({text})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn rates_of_the_original() {
        for (text, secs) in [
            ("7_HOURS", 25200),
            ("1_HOUR", 3600),
            ("1_MINUTE", 60),
            ("2_SECONDS", 2),
            ("3_DAYS", 259200),
            ("1_DAY", 86400),
            ("5_MINUTE", 300),
        ] {
            match Schedule::parse_rate(text) {
                Ok(Schedule::Rate { seconds, .. }) => assert_eq!(seconds, secs, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn bad_rates_are_refused_with_the_field_name() {
        for text in [
            "",
            "7",
            "HOURS",
            "0_HOURS",
            "07_HOURS",
            "7_hours",
            "7_WEEKS",
            "-1_HOURS",
            "7__HOURS",
            "7_HOURSS",
            "1.5_HOURS",
            "99999999999999999999_SECONDS",
        ] {
            let err = Schedule::parse_rate(text).expect_err(text);
            assert!(err.to_string().contains("spec.cronRate"), "{err}");
        }
        assert!(matches!(
            Schedule::parse_rate("400_DAYS"),
            Err(ScheduleError::RateTooLong(_))
        ));
    }

    #[test]
    fn rate_ticks_on_epoch_multiples() {
        let s = Schedule::parse_rate("7_HOURS").expect("valid");
        let now = ts("2026-01-01T05:00:00Z");
        let next = s.next_after(now).expect("next");
        assert_eq!(next.as_second() % 25200, 0);
        assert!(next > now && next.as_second() - now.as_second() <= 25200);
        // Exactly on a tick: the next one is a full period later; the last one is now.
        assert_eq!(
            s.next_after(next).expect("next").as_second() - next.as_second(),
            25200
        );
        assert_eq!(s.last_at_or_before(next), Some(next));
    }

    #[test]
    fn cron_next_and_previous() {
        let s = Schedule::parse_cron("*/15 * * * *").expect("valid");
        assert_eq!(
            s.next_after(ts("2026-01-01T05:07:13Z")),
            Some(ts("2026-01-01T05:15:00Z"))
        );
        assert_eq!(
            s.next_after(ts("2026-01-01T05:15:00Z")),
            Some(ts("2026-01-01T05:30:00Z"))
        );
        assert_eq!(
            s.last_at_or_before(ts("2026-01-01T05:15:00Z")),
            Some(ts("2026-01-01T05:15:00Z"))
        );
        let daily = Schedule::parse_cron("30 2 * * 1-5").expect("valid");
        assert_eq!(
            daily.next_after(ts("2026-01-02T03:00:00Z")),
            Some(ts("2026-01-05T02:30:00Z"))
        );
    }

    #[test]
    fn bad_cron_is_refused_with_the_field_name() {
        for text in [
            "",
            "* * * *",
            "* * * * * *",
            "61 * * * *",
            "* 25 * * *",
            "a b c d e",
            "0 0 31 2 *",
        ] {
            let err = Schedule::parse_cron(text).expect_err(text);
            assert!(err.to_string().contains("spec.schedule"), "{text}: {err}");
        }
    }

    #[test]
    fn exactly_one_field() {
        assert_eq!(
            Schedule::from_spec(None, None)
                .expect_err("none")
                .to_string(),
            "set exactly one of spec.cronRate or spec.schedule"
        );
        assert!(Schedule::from_spec(Some("1_HOUR"), Some("* * * * *")).is_err());
        assert!(Schedule::from_spec(Some("1_HOUR"), None).is_ok());
    }

    #[test]
    fn display_like_eventbridge() {
        assert_eq!(
            Schedule::parse_rate("7_HOURS").expect("v").to_string(),
            "rate(7 hours)"
        );
        assert_eq!(
            Schedule::parse_rate("1_HOUR").expect("v").to_string(),
            "rate(1 hour)"
        );
        assert_eq!(
            Schedule::parse_rate("2_SECOND").expect("v").to_string(),
            "rate(2 seconds)"
        );
        assert_eq!(
            Schedule::parse_cron("0 * * * *").expect("v").to_string(),
            "cron(0 * * * *)"
        );
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(s in "\\PC{0,40}") {
            let _ = Schedule::parse_rate(&s);
            let _ = Schedule::parse_cron(&s);
        }

        #[test]
        fn next_tick_is_after_now(n in 1i64..10_000, unit in 0usize..4, now in 0i64..4_000_000_000) {
            let text = format!("{n}_{}", ["SECONDS", "MINUTES", "HOURS", "DAYS"][unit]);
            if let Ok(s) = Schedule::parse_rate(&text) {
                let now = Timestamp::from_second(now).expect("valid");
                let next = s.next_after(now).expect("next");
                proptest::prop_assert!(next > now);
                proptest::prop_assert!(s.last_at_or_before(now).expect("last") <= now);
            }
        }
    }
}

/// Bounded fuzzing of the parsers and the tick arithmetic: no input panics, and every schedule
/// that parses ticks strictly after any `now`. `PROPTEST_CASES=100000 cargo test --workspace
/// --lib fuzz` runs longer.
#[cfg(test)]
pub(crate) mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// Cases per property in `make test`, unless `PROPTEST_CASES` says otherwise.
    pub(crate) fn config(cases: u32) -> ProptestConfig {
        let mut config = ProptestConfig::default();
        if std::env::var_os("PROPTEST_CASES").is_none() {
            config.cases = cases;
        }
        config
    }

    /// Seconds of 4000-01-01: croner searches up to the year 5000, so every valid pattern
    /// has a next tick before it.
    const YEAR_4000: i64 = 64_060_588_800;

    /// A `NUMBER_UNIT` that is valid or one edit away from it.
    fn near_rate() -> impl Strategy<Value = String> {
        let number = prop_oneof![
            4 => (1u64..1000).prop_map(|n| n.to_string()),
            2 => (1u64..=999_999_999).prop_map(|n| n.to_string()),
            1 => any::<u64>().prop_map(|n| n.to_string()),
            1 => prop::sample::select(vec!["", "0", "00", "07", "-1", "+1", "1.5", " 1", "1e3",
                "１", "٣", "99999999999999999999999"]).prop_map(str::to_owned),
        ];
        let separator = prop::sample::select(vec!["_", "_", "_", "__", "-", " ", ""]);
        let unit = prop::sample::select(vec![
            "SECOND", "SECONDS", "MINUTE", "MINUTES", "HOUR", "HOURS", "DAY", "DAYS", "seconds",
            "Hour", "WEEKS", "SS", "SECONDSS", "S", "", "HOURS_", "DAYſ", "MİNUTE",
        ]);
        let suffix = prop_oneof![8 => Just(String::new()), 1 => "\\PC{1,3}"];
        (number, separator, unit, suffix)
            .prop_map(|(n, sep, unit, suffix)| format!("{n}{sep}{unit}{suffix}"))
    }

    /// One cron field: the syntax croner understands (lists, ranges, steps, names, `L`, `W`,
    /// `#`, `?`), with values in and out of range, and now and then garbage.
    fn cron_field() -> impl Strategy<Value = String> {
        let atom = prop_oneof![
            3 => (0u32..62).prop_map(|n| n.to_string()),
            2 => Just("*".to_owned()),
            1 => prop::sample::select(vec!["?", "L", "LW", "5L", "15W", "1W", "31W", "JAN", "dec",
                "MON", "sun", "FRI", "7", "0", "99", "-1", "4294967296", "2#5", "5#1", "1#6", "L-3"])
                .prop_map(str::to_owned),
        ];
        let term = (
            atom.clone(),
            prop::option::of(atom),
            prop::option::of(0u32..64),
        )
            .prop_map(|(a, b, step)| {
                let mut t = a;
                if let Some(b) = b {
                    t = format!("{t}-{b}");
                }
                if let Some(step) = step {
                    t = format!("{t}/{step}");
                }
                t
            });
        prop_oneof![
            12 => prop::collection::vec(term, 1..4).prop_map(|terms| terms.join(",")),
            1 => "\\PC{1,4}",
        ]
    }

    /// Five fields most of the time; four or six now and then.
    fn near_cron() -> impl Strategy<Value = String> {
        let count = prop_oneof![10 => Just(5usize), 1 => Just(4usize), 1 => Just(6usize)];
        (
            count.prop_flat_map(|n| prop::collection::vec(cron_field(), n)),
            prop::sample::select(vec![" ", "  ", "\t"]),
        )
            .prop_map(|(fields, sep)| fields.join(sep))
    }

    /// A time the operator may run at (1970 to 4000), most often near the present.
    fn now() -> impl Strategy<Value = Timestamp> {
        prop_oneof![
            3 => 1_700_000_000i64..2_100_000_000,
            1 => 0i64..YEAR_4000,
        ]
        .prop_map(|s| Timestamp::from_second(s).expect("in range"))
    }

    /// Every tick property a parsed schedule must have at `now`.
    fn check_ticks(schedule: &Schedule, now: Timestamp) -> Result<(), TestCaseError> {
        let next = schedule.next_after(now);
        prop_assert!(next.is_some(), "{schedule} has no tick after {now}");
        let next = next.expect("checked");
        prop_assert!(next > now, "{schedule}: next {next} not after {now}");
        if let Some(last) = schedule.last_at_or_before(now) {
            prop_assert!(last <= now, "{schedule}: last {last} after {now}");
        }
        // `next` is a tick itself, and nothing ticks between `now` and it.
        prop_assert_eq!(schedule.last_at_or_before(next), Some(next), "{}", schedule);
        let just_before = next - jiff::SignedDuration::from_secs(1);
        if let Some(previous) = schedule.last_at_or_before(just_before) {
            prop_assert!(
                previous <= now,
                "{schedule}: tick {previous} between {now} and {next}"
            );
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(config(2000))]

        #[test]
        fn near_valid_rates_parse_exactly_or_are_refused(text in near_rate(), now in now()) {
            match Schedule::parse_rate(&text) {
                Ok(s) => {
                    let Schedule::Rate { seconds, .. } = &s else {
                        return Err(TestCaseError::fail("a rate parsed as cron"));
                    };
                    let (number, unit) = text.split_once('_').expect("NUMBER_UNIT");
                    let n: i64 = number.parse().expect("a number");
                    let unit_seconds = match unit.strip_suffix('S').unwrap_or(unit) {
                        "SECOND" => 1,
                        "MINUTE" => 60,
                        "HOUR" => 3600,
                        "DAY" => 86400,
                        other => return Err(TestCaseError::fail(format!("unit {other:?} accepted"))),
                    };
                    prop_assert_eq!(*seconds, n * unit_seconds);
                    prop_assert!((1..=MAX_RATE_SECONDS).contains(seconds));
                    check_ticks(&s, now)?;
                    let next = s.next_after(now).expect("checked");
                    prop_assert_eq!(next.as_second() % seconds, 0);
                    prop_assert!(next.as_second() - now.as_second() <= *seconds);
                    let shown = s.to_string();
                    prop_assert!(shown.starts_with(&format!("rate({n} ")) && shown.ends_with(')'), "{}", shown);
                }
                Err(e) => prop_assert!(e.to_string().contains("spec.cronRate"), "{}", e),
            }
        }
    }

    proptest! {
        #![proptest_config(config(1000))]

        #[test]
        fn any_text_is_parsed_without_panic(text in "\\PC{0,64}", other in "\\PC{0,16}") {
            for parsed in [
                Schedule::parse_rate(&text),
                Schedule::parse_cron(&text),
                Schedule::from_spec(Some(&text), None),
                Schedule::from_spec(None, Some(&text)),
                Schedule::from_spec(Some(&text), Some(&other)),
            ] {
                match parsed {
                    Ok(s) => prop_assert!(!s.to_string().is_empty()),
                    Err(e) => prop_assert!(e.to_string().starts_with("spec.") || e == ScheduleError::NotExactlyOne),
                }
            }
        }

        #[test]
        fn near_valid_cron_parses_and_ticks_or_is_refused(text in near_cron(), now in now()) {
            match Schedule::parse_cron(&text) {
                Ok(s) => {
                    prop_assert_eq!(text.split_whitespace().count(), 5);
                    check_ticks(&s, now)?;
                    prop_assert_eq!(s.to_string(), format!("cron({text})"));
                }
                Err(e) => prop_assert!(e.to_string().contains("spec.schedule"), "{}", e),
            }
        }

        #[test]
        fn ticks_at_any_representable_time_do_not_panic(
            rate in near_rate(),
            cron in near_cron(),
            second in Timestamp::MIN.as_second()..=Timestamp::MAX.as_second(),
        ) {
            let now = Timestamp::from_second(second).expect("in range");
            for s in [Schedule::parse_rate(&rate), Schedule::parse_cron(&cron)].into_iter().flatten() {
                if let Some(next) = s.next_after(now) {
                    prop_assert!(next > now);
                }
                if let Some(last) = s.last_at_or_before(now) {
                    prop_assert!(last <= now);
                }
            }
        }
    }
}
