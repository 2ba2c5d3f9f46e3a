//! The worker's configuration: the environment the operator's task definition fills in, its
//! defaults, and validation. The variable names and the handler modes are the contract shared
//! with the operator (`worker/contract`, re-exported here); `worker/README.md` documents the same
//! table for people writing task definitions by hand.
//!
//! Only the environment is read, never the command line: the task definition's command may add
//! anything to it. A variable set to blanks counts as unset.

use std::time::Duration;

use clap::{Args, Command, FromArgMatches, ValueEnum};

pub use ecs_worker_contract::HandlerMode;
pub use ecs_worker_contract::env::*;
use ecs_worker_contract::termination;

/// How long `auto` prefetch lets a held message wait for a handler at most, by the handler
/// durations measured so far (see [`Prefetch::Auto`]).
pub const PREFETCH_WINDOW: Duration = Duration::from_secs(1);
/// Most messages `auto` prefetch holds beyond the running handlers: two receive batches, so one
/// receive can be in flight while the handlers work through the previous one.
pub const PREFETCH_AUTO_MAX: usize = 20;

/// Largest visibility timeout SQS accepts, seconds (12 hours).
pub const MAX_VISIBILITY_SECONDS: u64 = 43_200;

/// Default of [`HANDLER_URL`].
pub const DEFAULT_HANDLER_URL: &str = "http://127.0.0.1:8080/";

/// How many messages the worker holds beyond the running handlers ([`PREFETCH`]).
///
/// A held message is invisible to every other worker and its visibility clock runs (the
/// heartbeat keeps renewing it), so holding many ahead is fast for short messages and unfair for
/// long ones: another instance could have started them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Prefetch {
    /// As many as the handlers, at the pace measured so far, start within [`PREFETCH_WINDOW`]:
    /// `floor(concurrency * window / handler duration)`, at most [`PREFETCH_AUTO_MAX`]. None
    /// until a first handler run has been timed, and none while every handler has been running
    /// longer than the window. Quick handlers get full receives of 10 with the next one in
    /// flight; handlers longer than the window get nothing ahead.
    #[default]
    Auto,
    /// Exactly this many (0: receive only for a free handler).
    Fixed(usize),
}

impl Prefetch {
    /// The value as written in [`PREFETCH`].
    pub fn to_env(self) -> String {
        match self {
            Prefetch::Auto => "auto".to_owned(),
            Prefetch::Fixed(n) => n.to_string(),
        }
    }
}

impl From<usize> for Prefetch {
    fn from(n: usize) -> Prefetch {
        Prefetch::Fixed(n)
    }
}

/// What the worker does to its EC2 capacity after it drained the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TerminationMode {
    /// Terminate the worker's own instance through Auto Scaling, decrementing the group's desired
    /// capacity, so each instance removes only itself.
    #[value(name = termination::INSTANCE)]
    Instance,
    /// Set the whole group's desired capacity to 0 (the original system's behaviour).
    #[value(name = termination::GROUP)]
    Group,
    /// Leave capacity alone (local runs, or when the operator scales down itself).
    #[value(name = termination::NONE)]
    None,
}

impl TerminationMode {
    /// The value as written in [`TERMINATION`].
    pub fn as_str(self) -> &'static str {
        match self {
            TerminationMode::Instance => termination::INSTANCE,
            TerminationMode::Group => termination::GROUP,
            TerminationMode::None => termination::NONE,
        }
    }
}

/// Log line format ([`LOG_FORMAT`]): `text` or `json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    /// One JSON object per line, per-message lines included, and a JSON summary at the end.
    Json,
}

/// An environment value the worker cannot run with.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("{name}={value:?} is invalid: {expected}")]
    Invalid {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
    /// A refusal of the parser that is not a setting's own (none is expected).
    #[error("invalid configuration: {0}")]
    Other(String),
}

/// Everything the drain loop and the termination step need to know.
///
/// Build it from the environment with [`Config::from_env`] (each field from the variable its
/// `env` names), or in code with [`Config::new`] and field updates.
#[derive(Debug, Clone, Args)]
pub struct Config {
    #[arg(long, env = QUEUE_URL, default_value = "", value_parser = text)]
    pub queue_url: String,
    #[arg(long, env = CLUSTER, value_parser = text)]
    pub cluster: Option<String>,
    #[arg(long, env = AUTOSCALING_GROUP, value_parser = text)]
    pub autoscaling_group: Option<String>,
    /// Command line of the command handler; `None` when a Rust handler is used.
    #[arg(long, env = HANDLER, value_parser = text)]
    pub handler_command: Option<String>,
    /// How messages reach the handler; ignored by a Rust handler.
    #[arg(long, env = HANDLER_MODE, default_value = "command",
        value_parser = var::<HandlerMode>(HANDLER_MODE, "one of command, http, stdio", |v| v.parse().ok()))]
    pub handler_mode: HandlerMode,
    /// `http` mode: where messages are POSTed.
    #[arg(long, env = HANDLER_URL, default_value = DEFAULT_HANDLER_URL, value_parser = text)]
    pub handler_url: String,
    /// `http` mode: readiness path (2xx = ready); `None` = any HTTP answer at the URL.
    #[arg(long, env = HANDLER_READY_PATH, value_parser = text)]
    pub handler_ready_path: Option<String>,
    /// `http` mode: longest wait for the handler to become ready (at start and after a restart);
    /// the default leaves room for a large model to load.
    #[arg(long, env = HANDLER_READY_TIMEOUT, default_value = "300",
        value_parser = var(HANDLER_READY_TIMEOUT, "whole seconds from 1 to 86400", seconds::<1, 86_400>))]
    pub handler_ready_timeout: Duration,
    #[arg(long, env = LOG_FORMAT, default_value = "text",
        value_parser = var(LOG_FORMAT, "text or json", keyword::<LogFormat>))]
    pub log_format: LogFormat,
    #[arg(long, env = CONCURRENCY, default_value = "1",
        value_parser = var(CONCURRENCY, "an integer from 1 to 1000", int::<usize, 1, 1000>))]
    pub concurrency: usize,
    #[arg(long, env = PREFETCH, default_value = "auto",
        value_parser = var(PREFETCH, "auto, or an integer from 0 to 1000", |v| match v {
            "auto" => Some(Prefetch::Auto),
            _ => int::<usize, 0, 1000>(v).map(Prefetch::Fixed),
        }))]
    pub prefetch: Prefetch,
    #[arg(long, env = EMPTY_RECEIVES, default_value = "2",
        value_parser = var(EMPTY_RECEIVES, "an integer from 1 to 1000", int::<u32, 1, 1000>))]
    pub empty_receives: u32,
    #[arg(long, env = WAIT_SECONDS, default_value = "20",
        value_parser = var(WAIT_SECONDS, "whole seconds from 1 to 20 (0 would be a short poll)", seconds::<1, 20>))]
    pub wait: Duration,
    #[arg(long, env = VISIBILITY_TIMEOUT, default_value = "60",
        value_parser = var(VISIBILITY_TIMEOUT, "whole seconds from 1 to 43200", seconds::<1, MAX_VISIBILITY_SECONDS>))]
    pub visibility_timeout: Duration,
    /// `None` (`0`): no limit. Spelled `std::option::Option` so that clap takes it as the
    /// parser's value rather than as "may be absent".
    #[arg(long, env = HANDLER_TIMEOUT, default_value = "0",
        value_parser = var(HANDLER_TIMEOUT, "whole seconds, 0 for no limit", |v| {
            seconds::<0, { u32::MAX as u64 }>(v).map(|d| (!d.is_zero()).then_some(d))
        }))]
    pub handler_timeout: std::option::Option<Duration>,
    #[arg(long, env = RETRY_BACKOFF, default_value = "30",
        value_parser = var(RETRY_BACKOFF, "whole seconds from 0 to 43200", seconds::<0, MAX_VISIBILITY_SECONDS>))]
    pub retry_backoff: Duration,
    #[arg(long, env = RETRY_BACKOFF_MAX, default_value = "900",
        value_parser = var(RETRY_BACKOFF_MAX, "whole seconds from 0 to 43200", seconds::<0, MAX_VISIBILITY_SECONDS>))]
    pub retry_backoff_max: Duration,
    #[arg(long, env = SHUTDOWN_GRACE, default_value = "25",
        value_parser = var(SHUTDOWN_GRACE, "whole seconds from 0 to 86400", seconds::<0, 86_400>))]
    pub shutdown_grace: Duration,
    #[arg(long, env = TERMINATION, default_value = termination::INSTANCE,
        value_parser = var(TERMINATION, "one of instance, group, none", keyword::<TerminationMode>))]
    pub termination: TerminationMode,
    #[arg(long, env = INSTANCE_ID, value_parser = text)]
    pub instance_id: Option<String>,
    /// Task metadata endpoint (v4) base URL, from the ECS agent.
    #[arg(long, env = ECS_METADATA_URI_V4, value_parser = text)]
    pub ecs_metadata_uri: Option<String>,
}

impl Config {
    /// Defaults for everything but the queue.
    pub fn new(queue_url: impl Into<String>) -> Self {
        let defaults = Self::read(Self::command().mut_args(|arg| arg.env(None)), Vec::new());
        Config {
            queue_url: queue_url.into(),
            ..defaults.expect("the defaults are valid values")
        }
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let command = Self::command().mut_args(|arg| match arg.get_env().map(std::env::var) {
            Some(Ok(value)) if !value.trim().is_empty() => arg,
            // Blank, or not UTF-8: unset, so the default applies.
            _ => arg.env(None),
        });
        Self::read(command, Vec::new())?.validated()
    }

    /// Reads the variables through `lookup` (a variable name to its value) instead of the
    /// process environment: each value becomes its setting's flag.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut flags = Vec::new();
        let command = Self::command().mut_args(|arg| {
            let value = arg.get_env().and_then(|name| lookup(name.to_str()?));
            if let (Some(value), Some(long)) = (value, arg.get_long())
                && !value.trim().is_empty()
            {
                flags.push(format!("--{long}={value}"));
            }
            arg.env(None)
        });
        Self::read(command, flags)?.validated()
    }

    fn command() -> Command {
        Self::augment_args(Command::new("ecs-worker").no_binary_name(true))
    }

    fn read(command: Command, flags: Vec<String>) -> Result<Self, ConfigError> {
        let matches = command.try_get_matches_from(flags);
        matches
            .and_then(|m| Self::from_arg_matches(&m))
            .map_err(|e| {
                // A setting's value parser fails with the error naming its variable.
                match std::error::Error::source(&e).and_then(|s| s.downcast_ref::<ConfigError>()) {
                    Some(e) => e.clone(),
                    None => ConfigError::Other(e.kind().to_string()),
                }
            })
    }

    fn validated(self) -> Result<Self, ConfigError> {
        self.validate().map(|()| self)
    }

    /// Cross-field rules, also worth running on a [`Config`] built in code.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.queue_url.is_empty() {
            return Err(ConfigError::Missing(QUEUE_URL));
        }
        if self.handler_mode == HandlerMode::Http {
            let url_ok = reqwest::Url::parse(&self.handler_url)
                .is_ok_and(|u| u.scheme() == "http" && u.host().is_some());
            if !url_ok {
                return Err(ConfigError::Invalid {
                    name: HANDLER_URL,
                    value: self.handler_url.clone(),
                    expected: "an http:// URL with a host, such as http://127.0.0.1:8080/",
                });
            }
            if let Some(path) = &self.handler_ready_path
                && !path.starts_with('/')
            {
                return Err(ConfigError::Invalid {
                    name: HANDLER_READY_PATH,
                    value: path.clone(),
                    expected: "a path starting with /",
                });
            }
        }
        if self.handler_mode == HandlerMode::Stdio && self.handler_command.is_none() {
            return Err(ConfigError::Missing(HANDLER));
        }
        if self.termination == TerminationMode::Group && self.autoscaling_group.is_none() {
            return Err(ConfigError::Missing(AUTOSCALING_GROUP));
        }
        if self.concurrency == 0 {
            return Err(ConfigError::Invalid {
                name: CONCURRENCY,
                value: "0".into(),
                expected: "an integer from 1 to 1000",
            });
        }
        Ok(())
    }

    /// Most messages the worker holds at once: running handlers plus prefetched messages.
    /// `handler_pace` is how long handler runs take (the drain loop's measure), `None` before
    /// the first; it matters only to [`Prefetch::Auto`].
    pub fn max_held(&self, handler_pace: Option<Duration>) -> usize {
        let ahead = match self.prefetch {
            Prefetch::Fixed(n) => n,
            Prefetch::Auto => match handler_pace {
                None => 0,
                Some(pace) => {
                    let pace = pace.max(Duration::from_micros(100));
                    let per_window = PREFETCH_WINDOW.as_secs_f64() / pace.as_secs_f64();
                    ((self.concurrency as f64 * per_window).floor() as usize).min(PREFETCH_AUTO_MAX)
                }
            },
        };
        self.concurrency + ahead
    }

    /// How often the visibility of held messages is renewed: a third of the visibility timeout,
    /// so two renewals can fail before a message is handed to someone else.
    pub fn heartbeat_interval(&self) -> Duration {
        (self.visibility_timeout / 3).max(Duration::from_millis(200))
    }
}

/// The value parser of the variable `name`: `parse` of the trimmed value, or the error naming
/// the variable and what it takes (`expected`).
fn var<T: 'static>(
    name: &'static str,
    expected: &'static str,
    parse: fn(&str) -> Option<T>,
) -> impl Fn(&str) -> Result<T, ConfigError> + Clone + Send + Sync + 'static {
    move |value| {
        let value = value.trim();
        parse(value).ok_or_else(|| ConfigError::Invalid {
            name,
            value: value.to_owned(),
            expected,
        })
    }
}

fn text(value: &str) -> Result<String, std::convert::Infallible> {
    Ok(value.trim().to_owned())
}

fn keyword<T: ValueEnum>(value: &str) -> Option<T> {
    T::from_str(value, false).ok()
}

/// An integer from `MIN` to `MAX`.
fn int<T: TryFrom<u64>, const MIN: u64, const MAX: u64>(value: &str) -> Option<T> {
    let n = value.parse().ok().filter(|n| (MIN..=MAX).contains(n))?;
    T::try_from(n).ok()
}

/// Whole seconds from `MIN` to `MAX`.
fn seconds<const MIN: u64, const MAX: u64>(value: &str) -> Option<Duration> {
    int::<u64, MIN, MAX>(value).map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn queue_url_is_required() {
        assert_eq!(parse(&[]).unwrap_err(), ConfigError::Missing(QUEUE_URL));
        assert_eq!(
            parse(&[(QUEUE_URL, "  ")]).unwrap_err(),
            ConfigError::Missing(QUEUE_URL)
        );
    }

    #[test]
    fn defaults() {
        let c = parse(&[(QUEUE_URL, "http://q")]).unwrap();
        assert_eq!(c.queue_url, "http://q");
        assert_eq!(c.concurrency, 1);
        assert_eq!(c.prefetch, Prefetch::Auto);
        assert_eq!(c.empty_receives, 2);
        assert_eq!(c.wait, Duration::from_secs(20));
        assert_eq!(c.visibility_timeout, Duration::from_secs(60));
        assert_eq!(c.handler_timeout, None);
        assert_eq!(c.termination, TerminationMode::Instance);
        assert_eq!(c.heartbeat_interval(), Duration::from_secs(20));
        assert_eq!(
            c.max_held(None),
            1,
            "nothing ahead before a handler was timed"
        );
    }

    #[test]
    fn every_setting_is_read() {
        let c = parse(&[
            (QUEUE_URL, "http://q"),
            (CLUSTER, "c"),
            (AUTOSCALING_GROUP, "g"),
            (HANDLER, "python3 /app/handler.py"),
            (CONCURRENCY, "4"),
            (PREFETCH, "6"),
            (EMPTY_RECEIVES, "3"),
            (WAIT_SECONDS, "1"),
            (VISIBILITY_TIMEOUT, "9"),
            (HANDLER_TIMEOUT, "120"),
            (RETRY_BACKOFF, "0"),
            (RETRY_BACKOFF_MAX, "60"),
            (SHUTDOWN_GRACE, "5"),
            (TERMINATION, "group"),
            (INSTANCE_ID, "i-123"),
            (ECS_METADATA_URI_V4, "http://169.254.170.2/v4/abc"),
        ])
        .unwrap();
        assert_eq!(c.cluster.as_deref(), Some("c"));
        assert_eq!(c.autoscaling_group.as_deref(), Some("g"));
        assert_eq!(
            c.handler_command.as_deref(),
            Some("python3 /app/handler.py")
        );
        assert_eq!(
            (c.concurrency, c.prefetch, c.max_held(None)),
            (4, Prefetch::Fixed(6), 10)
        );
        assert_eq!(c.empty_receives, 3);
        assert_eq!(c.wait, Duration::from_secs(1));
        assert_eq!(c.heartbeat_interval(), Duration::from_secs(3));
        assert_eq!(c.handler_timeout, Some(Duration::from_secs(120)));
        assert_eq!(c.retry_backoff, Duration::ZERO);
        assert_eq!(c.retry_backoff_max, Duration::from_secs(60));
        assert_eq!(c.shutdown_grace, Duration::from_secs(5));
        assert_eq!(c.termination, TerminationMode::Group);
        assert_eq!(c.instance_id.as_deref(), Some("i-123"));
        assert_eq!(
            c.ecs_metadata_uri.as_deref(),
            Some("http://169.254.170.2/v4/abc")
        );
    }

    #[test]
    fn handler_modes() {
        let c = parse(&[(QUEUE_URL, "q")]).unwrap();
        assert_eq!(c.handler_mode, HandlerMode::Command);
        assert_eq!(c.handler_url, "http://127.0.0.1:8080/");
        assert_eq!(c.handler_ready_path, None);
        assert_eq!(c.handler_ready_timeout, Duration::from_secs(300));
        assert_eq!(c.log_format, LogFormat::Text);

        let c = parse(&[
            (QUEUE_URL, "q"),
            (HANDLER_MODE, "http"),
            (HANDLER_URL, "http://localhost:9000/jobs"),
            (HANDLER_READY_PATH, "/healthz"),
            (HANDLER_READY_TIMEOUT, "20"),
            (LOG_FORMAT, "json"),
        ])
        .unwrap();
        assert_eq!(c.handler_mode, HandlerMode::Http);
        assert_eq!(c.handler_url, "http://localhost:9000/jobs");
        assert_eq!(c.handler_ready_path.as_deref(), Some("/healthz"));
        assert_eq!(c.handler_ready_timeout, Duration::from_secs(20));
        assert_eq!(c.log_format, LogFormat::Json);

        // stdio needs the command it keeps running; http does not (the server may be started
        // by something else in the container).
        assert_eq!(
            parse(&[(QUEUE_URL, "q"), (HANDLER_MODE, "stdio")]).unwrap_err(),
            ConfigError::Missing(HANDLER)
        );
        assert!(parse(&[(QUEUE_URL, "q"), (HANDLER_MODE, "stdio"), (HANDLER, "cat")]).is_ok());
        for (name, value) in [
            (HANDLER_MODE, "grpc"),
            (HANDLER_URL, "https://127.0.0.1/"),
            (HANDLER_URL, "not a url"),
            (HANDLER_READY_PATH, "healthz"),
            (HANDLER_READY_TIMEOUT, "0"),
            (LOG_FORMAT, "yaml"),
        ] {
            let err =
                parse(&[(QUEUE_URL, "q"), (HANDLER_MODE, "http"), (name, value)]).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Invalid { name: n, .. } if *n == name),
                "{name}={value}: {err}"
            );
        }
    }

    #[test]
    fn new_has_the_defaults() {
        let parsed = parse(&[(QUEUE_URL, "q")]).unwrap();
        assert_eq!(format!("{:?}", Config::new("q")), format!("{parsed:?}"));
    }

    #[test]
    fn values_are_trimmed_and_blank_ones_are_unset() {
        let c = parse(&[
            (QUEUE_URL, " q "),
            (CLUSTER, " c "),
            (HANDLER, ""),
            (CONCURRENCY, " 4 "),
            (WAIT_SECONDS, " \t"),
            (TERMINATION, " none "),
        ])
        .unwrap();
        assert_eq!(c.queue_url, "q");
        assert_eq!(c.cluster.as_deref(), Some("c"));
        assert_eq!(c.handler_command, None);
        assert_eq!(c.concurrency, 4);
        assert_eq!(c.wait, Duration::from_secs(20));
        assert_eq!(c.termination, TerminationMode::None);
    }

    #[test]
    fn errors_name_the_variable_and_what_it_takes() {
        let message = |vars: &[(&str, &str)]| parse(vars).unwrap_err().to_string();
        assert_eq!(message(&[]), "WORKER_QUEUE_URL is required");
        assert_eq!(
            message(&[(QUEUE_URL, "q"), (CONCURRENCY, " two ")]),
            r#"WORKER_CONCURRENCY="two" is invalid: an integer from 1 to 1000"#
        );
        assert_eq!(
            message(&[(QUEUE_URL, "q"), (HANDLER_TIMEOUT, "-5")]),
            r#"WORKER_HANDLER_TIMEOUT="-5" is invalid: whole seconds, 0 for no limit"#
        );
    }

    #[test]
    fn handler_timeout_zero_means_no_limit() {
        let c = parse(&[(QUEUE_URL, "q"), (HANDLER_TIMEOUT, "0")]).unwrap();
        assert_eq!(c.handler_timeout, None);
    }

    #[test]
    fn short_poll_is_rejected() {
        let err = parse(&[(QUEUE_URL, "q"), (WAIT_SECONDS, "0")]).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { name, .. } if name == WAIT_SECONDS));
    }

    #[test]
    fn out_of_range_and_garbage_are_rejected() {
        for (name, value) in [
            (CONCURRENCY, "0"),
            (CONCURRENCY, "-1"),
            (CONCURRENCY, "two"),
            (WAIT_SECONDS, "21"),
            (VISIBILITY_TIMEOUT, "43201"),
            (VISIBILITY_TIMEOUT, "1.5"),
            (TERMINATION, "everything"),
        ] {
            let err = parse(&[(QUEUE_URL, "q"), (name, value)]).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Invalid { name: n, .. } if *n == name),
                "{name}={value}: {err}"
            );
        }
    }

    #[test]
    fn group_termination_needs_the_group() {
        assert_eq!(
            parse(&[(QUEUE_URL, "q"), (TERMINATION, "group")]).unwrap_err(),
            ConfigError::Missing(AUTOSCALING_GROUP)
        );
        assert!(parse(&[(QUEUE_URL, "q"), (TERMINATION, "instance")]).is_ok());
    }

    #[test]
    fn prefetch_is_auto_or_a_number() {
        for (value, want) in [
            ("auto", Prefetch::Auto),
            ("0", Prefetch::Fixed(0)),
            ("9", Prefetch::Fixed(9)),
        ] {
            let c = parse(&[(QUEUE_URL, "q"), (PREFETCH, value)]).unwrap();
            assert_eq!(c.prefetch, want);
            assert_eq!(c.prefetch.to_env(), value);
        }
        for value in ["Auto", "-1", "1001", "lots"] {
            let err = parse(&[(QUEUE_URL, "q"), (PREFETCH, value)]).unwrap_err();
            assert!(matches!(err, ConfigError::Invalid { name, .. } if name == PREFETCH));
        }
    }

    #[test]
    fn auto_prefetch_holds_what_the_handlers_start_within_the_window() {
        let ms = Duration::from_millis;
        let mut c = Config::new("q");
        // Quick handlers: the cap, two receive batches ahead.
        assert_eq!(c.max_held(Some(ms(2))), 1 + PREFETCH_AUTO_MAX);
        assert_eq!(c.max_held(Some(Duration::ZERO)), 1 + PREFETCH_AUTO_MAX);
        // 100 ms handlers: 10 start within a second.
        assert_eq!(c.max_held(Some(ms(100))), 1 + 10);
        assert_eq!(c.max_held(Some(ms(400))), 1 + 2);
        assert_eq!(c.max_held(Some(ms(1000))), 1 + 1);
        // Longer than the window: nothing ahead, a receive per free handler.
        assert_eq!(c.max_held(Some(ms(1001))), 1);
        assert_eq!(c.max_held(Some(ms(60_000))), 1);
        // More handlers start more messages within the window.
        c.concurrency = 8;
        assert_eq!(c.max_held(Some(ms(400))), 8 + 20);
        assert_eq!(c.max_held(Some(ms(1000))), 8 + 8);
        assert_eq!(c.max_held(Some(ms(5000))), 8 + 1);
        assert_eq!(c.max_held(None), 8);
        // A fixed prefetch ignores the pace.
        c.prefetch = Prefetch::Fixed(3);
        assert_eq!(c.max_held(None), 11);
        assert_eq!(c.max_held(Some(ms(1))), 11);
    }

    #[test]
    fn heartbeat_interval_has_a_floor() {
        let mut c = Config::new("q");
        c.visibility_timeout = Duration::from_secs(1);
        assert_eq!(c.heartbeat_interval(), Duration::from_secs(1) / 3);
        c.visibility_timeout = Duration::from_millis(300);
        assert_eq!(c.heartbeat_interval(), Duration::from_millis(200));
    }
}
