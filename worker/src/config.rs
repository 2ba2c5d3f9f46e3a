//! The worker's configuration: the environment the operator's task definition fills in, its
//! defaults, and validation. The variable names and the handler modes are the contract shared
//! with the operator (`worker/contract`, re-exported here); `worker/README.md` documents the same
//! table for people writing task definitions by hand.
//!
//! Parsing is pure ([`Config::from_lookup`]) so it is unit-tested without touching the process
//! environment.

use std::time::Duration;

pub use ecs_worker_contract::HandlerMode;
pub use ecs_worker_contract::env::*;

/// How long `auto` prefetch lets a held message wait for a handler at most, by the handler
/// durations measured so far (see [`Prefetch::Auto`]).
pub const PREFETCH_WINDOW: Duration = Duration::from_secs(1);
/// Most messages `auto` prefetch holds beyond the running handlers: two receive batches, so one
/// receive can be in flight while the handlers work through the previous one.
pub const PREFETCH_AUTO_MAX: usize = 20;

/// Largest visibility timeout SQS accepts, seconds (12 hours).
pub const MAX_VISIBILITY_SECONDS: u64 = 43_200;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminationMode {
    /// Terminate the worker's own instance through Auto Scaling, decrementing the group's desired
    /// capacity, so each instance removes only itself.
    Instance,
    /// Set the whole group's desired capacity to 0 (the original system's behaviour).
    Group,
    /// Leave capacity alone (local runs, or when the operator scales down itself).
    None,
}

impl TerminationMode {
    /// The value as written in [`TERMINATION`].
    pub fn as_str(self) -> &'static str {
        match self {
            TerminationMode::Instance => "instance",
            TerminationMode::Group => "group",
            TerminationMode::None => "none",
        }
    }
}

impl std::str::FromStr for TerminationMode {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "instance" => Ok(TerminationMode::Instance),
            "group" => Ok(TerminationMode::Group),
            "none" => Ok(TerminationMode::None),
            _ => Err(()),
        }
    }
}

/// Default of [`HANDLER_URL`].
pub const DEFAULT_HANDLER_URL: &str = "http://127.0.0.1:8080/";
/// Default of [`HANDLER_READY_TIMEOUT`], seconds: room for a large model to load.
pub const DEFAULT_HANDLER_READY_TIMEOUT_SECONDS: u64 = 300;

/// Log line format ([`LOG_FORMAT`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    /// One JSON object per line, per-message lines included, and a JSON summary at the end.
    Json,
}

impl LogFormat {
    /// Reads [`LOG_FORMAT`] through `lookup`; `None` for a value that is neither `text` nor
    /// `json`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Option<LogFormat> {
        match lookup(LOG_FORMAT).as_deref().map(str::trim) {
            None | Some("") | Some("text") => Some(LogFormat::Text),
            Some("json") => Some(LogFormat::Json),
            Some(_) => None,
        }
    }
}

/// An environment value the worker cannot run with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("{name}={value:?} is invalid: {expected}")]
    Invalid {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
}

/// Everything the drain loop and the termination step need to know.
///
/// Build it from the environment with [`Config::from_env`], or in code with [`Config::new`] and
/// field updates.
#[derive(Debug, Clone)]
pub struct Config {
    pub queue_url: String,
    pub cluster: Option<String>,
    pub autoscaling_group: Option<String>,
    /// Command line of the command handler; `None` when a Rust handler is used.
    pub handler_command: Option<String>,
    /// How messages reach the handler; ignored by a Rust handler.
    pub handler_mode: HandlerMode,
    /// `http` mode: where messages are POSTed.
    pub handler_url: String,
    /// `http` mode: readiness path (2xx = ready); `None` = any HTTP answer at the URL.
    pub handler_ready_path: Option<String>,
    /// `http` mode: longest wait for the handler to become ready (at start and after a restart).
    pub handler_ready_timeout: Duration,
    pub log_format: LogFormat,
    pub concurrency: usize,
    pub prefetch: Prefetch,
    pub empty_receives: u32,
    pub wait: Duration,
    pub visibility_timeout: Duration,
    pub handler_timeout: Option<Duration>,
    pub retry_backoff: Duration,
    pub retry_backoff_max: Duration,
    pub shutdown_grace: Duration,
    pub termination: TerminationMode,
    pub instance_id: Option<String>,
    /// Task metadata endpoint (v4) base URL, from the ECS agent.
    pub ecs_metadata_uri: Option<String>,
}

impl Config {
    /// Defaults for everything but the queue.
    pub fn new(queue_url: impl Into<String>) -> Self {
        Config {
            queue_url: queue_url.into(),
            cluster: None,
            autoscaling_group: None,
            handler_command: None,
            handler_mode: HandlerMode::Command,
            handler_url: DEFAULT_HANDLER_URL.to_owned(),
            handler_ready_path: None,
            handler_ready_timeout: secs(DEFAULT_HANDLER_READY_TIMEOUT_SECONDS),
            log_format: LogFormat::Text,
            concurrency: 1,
            prefetch: Prefetch::Auto,
            empty_receives: 2,
            wait: Duration::from_secs(20),
            visibility_timeout: Duration::from_secs(60),
            handler_timeout: None,
            retry_backoff: Duration::from_secs(30),
            retry_backoff_max: Duration::from_secs(900),
            shutdown_grace: Duration::from_secs(25),
            termination: TerminationMode::Instance,
            instance_id: None,
            ecs_metadata_uri: None,
        }
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the contract through `lookup` (a variable name to its value). Empty values count as
    /// unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let queue_url = get(QUEUE_URL).ok_or(ConfigError::Missing(QUEUE_URL))?;
        let mut config = Config::new(queue_url);
        config.cluster = get(CLUSTER);
        config.autoscaling_group = get(AUTOSCALING_GROUP);
        config.handler_command = get(HANDLER);
        config.instance_id = get(INSTANCE_ID);
        config.ecs_metadata_uri = get(ECS_METADATA_URI_V4);
        if let Some(v) = get(HANDLER_MODE) {
            config.handler_mode = v.parse().map_err(|()| ConfigError::Invalid {
                name: HANDLER_MODE,
                value: v.clone(),
                expected: "one of command, http, stdio",
            })?;
        }
        if let Some(v) = get(HANDLER_URL) {
            config.handler_url = v;
        }
        config.handler_ready_path = get(HANDLER_READY_PATH);
        if let Some(v) = get(HANDLER_READY_TIMEOUT) {
            config.handler_ready_timeout = secs(parse_in(
                HANDLER_READY_TIMEOUT,
                &v,
                1,
                86_400,
                "whole seconds from 1 to 86400",
            )?);
        }
        config.log_format =
            LogFormat::from_lookup(|name| get(name)).ok_or_else(|| ConfigError::Invalid {
                name: LOG_FORMAT,
                value: get(LOG_FORMAT).unwrap_or_default(),
                expected: "text or json",
            })?;

        if let Some(v) = get(CONCURRENCY) {
            config.concurrency =
                parse_in(CONCURRENCY, &v, 1, 1000, "an integer from 1 to 1000")? as usize;
        }
        if let Some(v) = get(PREFETCH) {
            config.prefetch = if v == "auto" {
                Prefetch::Auto
            } else {
                Prefetch::Fixed(parse_in(
                    PREFETCH,
                    &v,
                    0,
                    1000,
                    "auto, or an integer from 0 to 1000",
                )? as usize)
            };
        }
        if let Some(v) = get(EMPTY_RECEIVES) {
            config.empty_receives =
                parse_in(EMPTY_RECEIVES, &v, 1, 1000, "an integer from 1 to 1000")? as u32;
        }
        if let Some(v) = get(WAIT_SECONDS) {
            config.wait = secs(parse_in(
                WAIT_SECONDS,
                &v,
                1,
                20,
                "whole seconds from 1 to 20 (0 would be a short poll)",
            )?);
        }
        if let Some(v) = get(VISIBILITY_TIMEOUT) {
            config.visibility_timeout = secs(parse_in(
                VISIBILITY_TIMEOUT,
                &v,
                1,
                MAX_VISIBILITY_SECONDS,
                "whole seconds from 1 to 43200",
            )?);
        }
        if let Some(v) = get(HANDLER_TIMEOUT) {
            let s = parse_in(
                HANDLER_TIMEOUT,
                &v,
                0,
                u64::from(u32::MAX),
                "whole seconds, 0 for no limit",
            )?;
            config.handler_timeout = (s > 0).then(|| secs(s));
        }
        if let Some(v) = get(RETRY_BACKOFF) {
            config.retry_backoff = secs(parse_in(
                RETRY_BACKOFF,
                &v,
                0,
                MAX_VISIBILITY_SECONDS,
                "whole seconds from 0 to 43200",
            )?);
        }
        if let Some(v) = get(RETRY_BACKOFF_MAX) {
            config.retry_backoff_max = secs(parse_in(
                RETRY_BACKOFF_MAX,
                &v,
                0,
                MAX_VISIBILITY_SECONDS,
                "whole seconds from 0 to 43200",
            )?);
        }
        if let Some(v) = get(SHUTDOWN_GRACE) {
            config.shutdown_grace = secs(parse_in(
                SHUTDOWN_GRACE,
                &v,
                0,
                86_400,
                "whole seconds from 0 to 86400",
            )?);
        }
        if let Some(v) = get(TERMINATION) {
            config.termination = v.parse().map_err(|()| ConfigError::Invalid {
                name: TERMINATION,
                value: v.clone(),
                expected: "one of instance, group, none",
            })?;
        }
        config.validate()?;
        Ok(config)
    }

    /// Cross-field rules, also worth running on a [`Config`] built in code.
    pub fn validate(&self) -> Result<(), ConfigError> {
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

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn parse_in(
    name: &'static str,
    value: &str,
    min: u64,
    max: u64,
    expected: &'static str,
) -> Result<u64, ConfigError> {
    value
        .parse::<u64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| ConfigError::Invalid {
            name,
            value: value.to_owned(),
            expected,
        })
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
