//! The worker as a process: logging, configuration from the environment, AWS clients, SIGTERM /
//! SIGINT handling, the summary line and the exit code. The `ecs-worker` binary is [`main`]: the
//! handler mode from `WORKER_HANDLER_MODE` (a command per message, a long-lived HTTP server, or
//! a long-lived stdio process). A Rust handler calls [`main_with`] from its own `main`.
//!
//! A long-lived handler that never becomes ready (or cannot be restarted) stops the worker with
//! exit code 1 — but its capacity is still removed as `WORKER_TERMINATION` says, since an
//! instance whose handler cannot run would otherwise stay up, billed, until someone notices.
//! The messages stay in the queue for the next run.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::ValueEnum;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use crate::config::{self, Config, HandlerMode, LogFormat, TerminationMode};
use crate::handler::{HttpHandler, Logged, StdioHandler, Supervised};
use crate::{CommandHandler, End, Exit, Handler, Report, Snapshot, Worker, aws, termination};

/// Runs a worker process with the handler `make_handler` builds from the configuration.
///
/// Logs go to stderr, filtered by `RUST_LOG` (default `info`), as text or, with
/// `WORKER_LOG_FORMAT=json`, one JSON object per line.
pub async fn main_with<H, F>(make_handler: F) -> ExitCode
where
    H: Handler,
    F: FnOnce(&Config) -> Result<H, String>,
{
    let Some((config, shutdown)) = setup() else {
        return ExitCode::from(Exit::Error.code());
    };
    let handler = match make_handler(&config) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the handler");
            return ExitCode::from(Exit::Error.code());
        }
    };
    let clients = aws::Clients::from_env().await;
    let report = drain_with(&config, &clients, handler, shutdown).await;
    finish(&config, &report)
}

/// The `ecs-worker` binary: the handler mode `WORKER_HANDLER_MODE` asks for.
pub async fn main() -> ExitCode {
    let Some((config, shutdown)) = setup() else {
        return ExitCode::from(Exit::Error.code());
    };
    let clients = aws::Clients::from_env().await;
    let report = match config.handler_mode {
        HandlerMode::Command => match command_handler(&config) {
            Ok(h) => drain_with(&config, &clients, h, shutdown).await,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the handler");
                return ExitCode::from(Exit::Error.code());
            }
        },
        HandlerMode::Http => {
            let started = start(HttpHandler::start(&config, shutdown.clone()), &shutdown).await;
            drain_supervised(&config, &clients, started, shutdown).await
        }
        HandlerMode::Stdio => {
            let started = start(StdioHandler::start(&config, shutdown.clone()), &shutdown).await;
            drain_supervised(&config, &clients, started, shutdown).await
        }
    };
    finish(&config, &report)
}

/// Builds the command handler from `WORKER_HANDLER`.
pub fn command_handler(config: &Config) -> Result<CommandHandler, String> {
    config
        .handler_command
        .as_deref()
        .map(CommandHandler::new)
        .ok_or_else(|| format!("{} is required", config::HANDLER))
}

/// Logs, configuration and signal handling; `None` (after logging why) if the worker cannot run.
fn setup() -> Option<(Config, CancellationToken)> {
    init_logs();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "invalid configuration");
            return None;
        }
    };
    let shutdown = CancellationToken::new();
    if let Err(e) = watch_signals(shutdown.clone()) {
        tracing::error!(error = %e, "cannot install signal handlers");
        return None;
    }
    Some((config, shutdown))
}

async fn drain_with<H: Handler>(
    config: &Config,
    clients: &aws::Clients,
    handler: H,
    shutdown: CancellationToken,
) -> Report {
    let handler = Logged::new(handler, config.log_format == LogFormat::Json);
    Worker::new(config.clone(), clients, handler)
        .run(shutdown)
        .await
}

enum Started<H> {
    Up(H),
    Failed(String),
    Interrupted,
}

/// Drains with a long-lived handler once it started, then stops its process.
async fn drain_supervised<H: Supervised + Clone>(
    config: &Config,
    clients: &aws::Clients,
    started: Started<H>,
    shutdown: CancellationToken,
) -> Report {
    match started {
        Started::Up(h) => {
            let report = drain_with(config, clients, h.clone(), shutdown).await;
            h.shutdown().await;
            after_handler_failure(config, clients, report, h.failure()).await
        }
        Started::Failed(e) => never_ready(config, clients, e).await,
        Started::Interrupted => interrupted_before_start(),
    }
}

/// Waits for a long-lived handler to start, unless SIGTERM comes first.
async fn start<H>(
    starting: impl Future<Output = Result<H, String>>,
    shutdown: &CancellationToken,
) -> Started<H> {
    tokio::select! {
        biased;
        started = starting => match started {
            Ok(h) => Started::Up(h),
            Err(e) => Started::Failed(e),
        },
        _ = shutdown.cancelled() => Started::Interrupted,
    }
}

fn empty_report() -> Report {
    Report {
        end: None,
        error: None,
        counters: Snapshot::default(),
        recorded: None,
        termination: None,
    }
}

fn interrupted_before_start() -> Report {
    tracing::info!("stopped before the handler was ready; no message was received");
    Report {
        end: Some(End::Interrupted),
        ..empty_report()
    }
}

/// The handler never became ready: exit 1, capacity removed all the same.
async fn never_ready(config: &Config, clients: &aws::Clients, error: String) -> Report {
    tracing::error!(
        error = %error,
        "the handler could not be started; no message was received"
    );
    let mut report = Report {
        error: Some(error),
        ..empty_report()
    };
    remove_capacity(config, clients, &mut report).await;
    report
}

/// A long-lived handler that could not be restarted stopped the drain: exit 1, and the capacity
/// is removed as after a drain (the drain itself released the messages).
async fn after_handler_failure(
    config: &Config,
    clients: &aws::Clients,
    mut report: Report,
    failure: Option<String>,
) -> Report {
    let Some(failure) = failure else {
        return report;
    };
    report.error = Some(failure);
    if report.termination.is_none() {
        remove_capacity(config, clients, &mut report).await;
    }
    report
}

async fn remove_capacity(config: &Config, clients: &aws::Clients, report: &mut Report) {
    let capacity = termination::Capacity::new(clients.autoscaling.clone(), clients.ecs.clone());
    if config.termination != TerminationMode::None {
        report.recorded = capacity.record_outcome(config, report.exit()).await;
        if let Some(Err(e)) = &report.recorded {
            tracing::warn!(error = %e, "could not record the outcome on the task");
        }
    }
    let terminated = capacity.terminate(config).await;
    match &terminated {
        Ok(t) => tracing::info!(result = ?t, "capacity step done"),
        Err(e) => tracing::error!(error = %e, "could not remove the worker's capacity"),
    }
    report.termination = Some(terminated.map_err(|e| e.to_string()));
}

/// Logs the summary and turns the report into the exit code.
fn finish(config: &Config, report: &Report) -> ExitCode {
    let exit = report.exit();
    match config.log_format {
        LogFormat::Text => tracing::info!(
            exit_code = exit.code(),
            summary = %serde_json::to_string(report).unwrap_or_default(),
            "worker finished"
        ),
        // The summary as a nested object rather than a JSON string inside a JSON line.
        LogFormat::Json => eprintln!(
            "{}",
            serde_json::json!({
                "timestamp": crate::handler::iso8601(std::time::SystemTime::now()),
                "level": "INFO",
                "message": "worker finished",
                "exit_code": exit.code(),
                "summary": report,
            })
        ),
    }
    ExitCode::from(exit.code())
}

fn init_logs() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let format = std::env::var(config::LOG_FORMAT)
        .ok()
        .and_then(|v| LogFormat::from_str(v.trim(), false).ok())
        .unwrap_or_default();
    // A second initialisation (a Rust handler that set up its own logging) is not an error.
    // Colours only on a terminal: in the task's log (CloudWatch) they would be escape codes.
    let _ = match format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .try_init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_target(false)
            .try_init(),
    };
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT.
fn watch_signals(shutdown: CancellationToken) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(
            signal = name,
            "stopping: no new messages; running handlers get the grace period"
        );
        shutdown.cancel();
    });
    Ok(())
}
