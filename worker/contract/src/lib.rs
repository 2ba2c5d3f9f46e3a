//! What the operator and the worker it starts agree on: the environment variables the
//! operator's task definition sets and the worker reads, their values, the worker's exit codes
//! and the tag it records its outcome in. Both sides name these through this crate, so neither
//! can drift from the other.

/// The worker's environment variables (`worker/README.md` documents the same table for people
/// writing task definitions by hand).
pub mod env {
    /// URL of the SQS queue to drain. Required.
    pub const QUEUE_URL: &str = "WORKER_QUEUE_URL";
    /// ECS cluster the task runs in; used to find the container instance when the task metadata
    /// does not name the cluster.
    pub const CLUSTER: &str = "WORKER_CLUSTER";
    /// Auto Scaling group that owns the worker's capacity.
    pub const AUTOSCALING_GROUP: &str = "WORKER_AUTOSCALING_GROUP";
    /// Handler command line, run with `/bin/sh -c`.
    pub const HANDLER: &str = "WORKER_HANDLER";
    /// How the worker talks to the handler: `command` (a process per message, the default), `http`
    /// (POST each message to a long-lived server) or `stdio` (JSON lines with a long-lived process).
    pub const HANDLER_MODE: &str = "WORKER_HANDLER_MODE";
    /// `http` mode: where each message is POSTed.
    pub const HANDLER_URL: &str = "WORKER_HANDLER_URL";
    /// `http` mode: path answered with a 2xx once the handler is ready; unset = any HTTP answer at
    /// [`HANDLER_URL`] counts.
    pub const HANDLER_READY_PATH: &str = "WORKER_HANDLER_READY_PATH";
    /// `http` mode: how long the handler may take to become ready, seconds.
    pub const HANDLER_READY_TIMEOUT: &str = "WORKER_HANDLER_READY_TIMEOUT_SECONDS";
    /// Log format: `text` (default) or `json` (one JSON object per line).
    pub const LOG_FORMAT: &str = "WORKER_LOG_FORMAT";
    /// Handlers running in parallel.
    pub const CONCURRENCY: &str = "WORKER_CONCURRENCY";
    /// Messages the worker may hold beyond the running handlers: `auto` (the default: as many as the handlers start within 1 s at their measured
    /// pace) or a fixed number.
    pub const PREFETCH: &str = "WORKER_PREFETCH";
    /// Consecutive empty long polls, with the queue showing nothing visible, in flight or delayed,
    /// before the worker decides the queue is drained.
    pub const EMPTY_RECEIVES: &str = "WORKER_EMPTY_RECEIVES";
    /// Long-poll wait of each receive, seconds (1–20).
    pub const WAIT_SECONDS: &str = "WORKER_WAIT_SECONDS";
    /// Visibility timeout the worker holds on each message it has, seconds; renewed every third.
    pub const VISIBILITY_TIMEOUT: &str = "WORKER_VISIBILITY_TIMEOUT";
    /// Longest a handler may run on one message, seconds; 0 = no limit.
    pub const HANDLER_TIMEOUT: &str = "WORKER_HANDLER_TIMEOUT";
    /// First retry delay after a failure, seconds; doubled per receive.
    pub const RETRY_BACKOFF: &str = "WORKER_RETRY_BACKOFF";
    /// Upper bound of the retry delay, seconds.
    pub const RETRY_BACKOFF_MAX: &str = "WORKER_RETRY_BACKOFF_MAX";
    /// Time running handlers get to finish after SIGTERM, seconds.
    pub const SHUTDOWN_GRACE: &str = "WORKER_SHUTDOWN_GRACE";
    /// What the worker does to its capacity once the queue is drained: `instance`, `group`, `none`.
    pub const TERMINATION: &str = "WORKER_TERMINATION";
    /// EC2 instance id to terminate, overriding discovery.
    pub const INSTANCE_ID: &str = "WORKER_INSTANCE_ID";
    /// Set by the ECS agent in every container: base URL of the task metadata endpoint v4.
    pub const ECS_METADATA_URI_V4: &str = "ECS_CONTAINER_METADATA_URI_V4";
}

/// Values of [`env::TERMINATION`].
pub mod termination {
    /// The worker terminates its own instance, decrementing the group's desired capacity.
    pub const INSTANCE: &str = "instance";
    /// The worker sets the group's desired capacity to 0 (the original stack's behaviour).
    pub const GROUP: &str = "group";
    /// The worker leaves capacity alone; the operator scales in.
    pub const NONE: &str = "none";
}

/// The worker's exit codes the operator reads.
pub mod exit {
    /// Stopped (SIGTERM) before the queue was drained, after returning its unfinished messages
    /// to the queue: a Spot interruption or a scale-in, not a failure.
    pub const INTERRUPTED: i32 = 4;
}

/// Tag the worker puts on its own ECS task before it removes its capacity: the exit code it is
/// about to exit with, for a task whose host goes before the agent reports it.
pub const OUTCOME_TAG: &str = "ecsworker.dev/outcome";

/// How the worker hands messages to the handler (`WORKER_HANDLER_MODE`). `command` (default):
/// `handler` runs once per message, body on stdin, exit status 0 = done. `http`: each message
/// is POSTed to a long-lived HTTP server in the container at `handlerUrl`, with the Elastic
/// Beanstalk worker daemon's headers (X-Aws-Sqsd-Msgid, X-Aws-Sqsd-Receive-Count,
/// X-Aws-Sqsd-Attr-*, ...); a 2xx answer = done. The worker first waits until the server
/// answers its readiness probe, and starts and supervises `handler` as that server when it is
/// set. `stdio`: `handler` is started once; one JSON line per message goes to its stdin and one
/// JSON answer line comes back on its stdout. The long-lived modes load a model or open a pool
/// once instead of once per message.
#[derive(serde::Deserialize, serde::Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum HandlerMode {
    /// The handler command runs once per message.
    #[default]
    Command,
    /// Each message is POSTed to a long-lived HTTP server.
    Http,
    /// The handler command runs once; JSON lines on its stdin and stdout.
    Stdio,
}

impl HandlerMode {
    /// The value of [`env::HANDLER_MODE`].
    pub fn as_str(self) -> &'static str {
        match self {
            HandlerMode::Command => "command",
            HandlerMode::Http => "http",
            HandlerMode::Stdio => "stdio",
        }
    }
}

impl std::str::FromStr for HandlerMode {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "command" => Ok(HandlerMode::Command),
            "http" => Ok(HandlerMode::Http),
            "stdio" => Ok(HandlerMode::Stdio),
            _ => Err(()),
        }
    }
}
