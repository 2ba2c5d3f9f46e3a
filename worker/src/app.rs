//! The worker as a process: logging, configuration from the environment, AWS clients, SIGTERM /
//! SIGINT handling, the summary line and the exit code. The `ecs-worker` binary is this with the
//! command handler; a Rust handler calls [`main_with`] from its own `main`.

use std::io::IsTerminal;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use crate::config::{self, Config};
use crate::{CommandHandler, Exit, Handler, Worker, aws};

/// Runs a worker process with the handler `make_handler` builds from the configuration.
///
/// Logs go to stderr, filtered by `RUST_LOG` (default `info`).
pub async fn main_with<H, F>(make_handler: F) -> ExitCode
where
    H: Handler,
    F: FnOnce(&Config) -> Result<H, String>,
{
    init_logs();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "invalid configuration");
            return ExitCode::from(Exit::Error.code());
        }
    };
    let handler = match make_handler(&config) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the handler");
            return ExitCode::from(Exit::Error.code());
        }
    };
    let clients = aws::Clients::from_env().await;
    let shutdown = CancellationToken::new();
    if let Err(e) = watch_signals(shutdown.clone()) {
        tracing::error!(error = %e, "cannot install signal handlers");
        return ExitCode::from(Exit::Error.code());
    }

    let report = Worker::new(config, &clients, handler).run(shutdown).await;
    let exit = report.exit();
    tracing::info!(
        exit_code = exit.code(),
        summary = %serde_json::to_string(&report).unwrap_or_default(),
        "worker finished"
    );
    ExitCode::from(exit.code())
}

/// Builds the command handler from `WORKER_HANDLER`.
pub fn command_handler(config: &Config) -> Result<CommandHandler, String> {
    config
        .handler_command
        .as_deref()
        .map(CommandHandler::new)
        .ok_or_else(|| format!("{} is required", config::HANDLER))
}

fn init_logs() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // A second initialisation (a Rust handler that set up its own logging) is not an error.
    // Colours only on a terminal: in the task's log (CloudWatch) they would be escape codes.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
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
