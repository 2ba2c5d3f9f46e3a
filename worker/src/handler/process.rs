//! A handler process the worker starts once and keeps up (`http` mode with `WORKER_HANDLER`,
//! and `stdio` mode): started with `/bin/sh -c` in its own process group, restarted with backoff
//! when it exits, and stopped on shutdown (SIGTERM to its group, SIGKILL after [`STOP_GRACE`]).

use std::future::Future;
use std::io;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Time a handler process gets between SIGTERM and SIGKILL when the worker stops it.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// First delay before restarting a process that exited; doubled per quick exit in a row.
const RESTART_BACKOFF: Duration = Duration::from_millis(500);
/// Upper bound of the restart delay.
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A process that stayed up this long resets the restart backoff.
const STABLE_AFTER: Duration = Duration::from_secs(30);

/// Shell that runs the handler command line.
const SHELL: &str = "/bin/sh";

/// Starts `command_line` with `/bin/sh -c` in its own process group. stderr is the worker's;
/// stdout too unless `pipes` (then stdin and stdout are pipes for the `stdio` protocol).
pub(crate) fn spawn(command_line: &str, pipes: bool) -> io::Result<Child> {
    let mut command = Command::new(SHELL);
    command
        .arg("-c")
        .arg(command_line)
        .stderr(Stdio::inherit())
        .process_group(0)
        .kill_on_drop(true);
    if pipes {
        command.stdin(Stdio::piped()).stdout(Stdio::piped());
    } else {
        command.stdin(Stdio::null()).stdout(Stdio::inherit());
    }
    command.spawn()
}

/// Sends `signal` to the process group led by `pid`.
pub(crate) fn signal_group(pid: Option<u32>, signal: rustix::process::Signal) {
    let pid = pid
        .and_then(|id| i32::try_from(id).ok())
        .and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid
        && let Err(e) = rustix::process::kill_process_group(pid, signal)
    {
        tracing::debug!(error = %e, "could not signal the handler's process group");
    }
}

/// SIGTERM to the process group, then SIGKILL after `grace`; reaps the process.
pub(crate) async fn stop(child: &mut Child, grace: Duration) {
    let pid = child.id();
    signal_group(pid, rustix::process::Signal::TERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        tracing::warn!(
            grace_seconds = grace.as_secs(),
            "handler process did not stop after SIGTERM; killing it"
        );
    }
    // Children of the handler that outlived it, or the handler itself, are killed with the group.
    signal_group(pid, rustix::process::Signal::KILL);
    let _ = child.wait().await;
}

/// Describes how a process ended, for logs and errors.
pub(crate) fn describe(status: io::Result<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(signal)) => format!("was killed by signal {signal}"),
            _ => format!("ended ({s})"),
        },
        Err(e) => format!("could not be waited for: {e}"),
    }
}

/// How one kind of long-lived handler starts its process and decides it is usable.
pub(crate) trait Launch: Send + Sync + 'static {
    /// What handler calls use to reach a running process (for `stdio`, its pipes).
    type Live: Clone + Send + Sync + 'static;

    /// Starts the process and waits until it is usable. The error names the command and why.
    fn launch(&self) -> impl Future<Output = Result<(Child, Self::Live), String>> + Send;
}

/// One run of the handler process.
#[derive(Clone)]
pub(crate) struct Generation<T> {
    pub live: T,
    /// Cancelled when this process has exited.
    pub exited: CancellationToken,
}

#[derive(Clone)]
enum State<T> {
    Starting,
    Up(Generation<T>),
    /// The process could not be (re)started; the worker stops.
    Failed(String),
    Stopped,
}

/// Keeps one handler process running and publishes it as a [`Generation`]: handler calls wait
/// until one is up, and a generation's `exited` token fails every message in flight on it the
/// moment its process dies, so those messages are retried instead of waiting out a timeout.
/// A start that never becomes usable ([`Launch::launch`] fails: the process died at once or an
/// HTTP handler never answered its readiness probe) is fatal: the supervisor records the error
/// and cancels the `fatal` token it was given, which stops the drain.
pub(crate) struct Supervisor<T> {
    state: watch::Receiver<State<T>>,
    stop: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl<T: Clone + Send + Sync + 'static> Supervisor<T> {
    /// Starts the process and returns once it is usable, or with the error of a failed start.
    /// After that, a restart that fails cancels `fatal`.
    pub async fn start<L: Launch<Live = T>>(
        launcher: L,
        fatal: CancellationToken,
    ) -> Result<Self, String> {
        let (tx, mut rx) = watch::channel(State::Starting);
        let stop = CancellationToken::new();
        let task = tokio::spawn(supervise(launcher, tx, stop.clone(), fatal));
        let supervisor = Supervisor {
            state: rx.clone(),
            stop,
            task: Mutex::new(Some(task)),
        };
        let first = rx
            .wait_for(|s| !matches!(s, State::Starting))
            .await
            .map(|s| s.clone());
        match first {
            Ok(State::Up(_)) => Ok(supervisor),
            Ok(State::Failed(e)) => Err(e),
            _ => Err("the handler process supervisor ended".to_owned()),
        }
    }

    /// The running process, waiting while it restarts. An error once it cannot be restarted or
    /// was stopped.
    pub async fn current(&self) -> Result<Generation<T>, String> {
        let mut rx = self.state.clone();
        let state = rx
            .wait_for(|s| match s {
                State::Starting => false,
                State::Up(g) => !g.exited.is_cancelled(),
                State::Failed(_) | State::Stopped => true,
            })
            .await
            .map(|s| s.clone());
        match state {
            Ok(State::Up(g)) => Ok(g),
            Ok(State::Failed(e)) => Err(e),
            _ => Err("the handler process was stopped".to_owned()),
        }
    }

    /// Why the process could not be restarted, if that happened.
    pub fn failure(&self) -> Option<String> {
        match &*self.state.borrow() {
            State::Failed(e) => Some(e.clone()),
            _ => None,
        }
    }

    /// Stops the process (SIGTERM, SIGKILL after [`STOP_GRACE`]) and waits until it is gone.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "handler process supervisor failed");
        }
    }
}

impl<T> Drop for Supervisor<T> {
    fn drop(&mut self) {
        // The task's process has kill_on_drop; stopping the task drops it.
        self.stop.cancel();
    }
}

async fn supervise<L: Launch>(
    launcher: L,
    state: watch::Sender<State<L::Live>>,
    stop: CancellationToken,
    fatal: CancellationToken,
) {
    let mut quick_exits = 0u32;
    let mut first = true;
    loop {
        state.send_replace(State::Starting);
        let launched = tokio::select! {
            biased;
            _ = stop.cancelled() => {
                state.send_replace(State::Stopped);
                return;
            }
            launched = launcher.launch() => launched,
        };
        let (mut child, live) = match launched {
            Ok(up) => up,
            Err(e) => {
                // The first start's error goes to `start`'s caller; a failed restart stops the
                // worker.
                if !first {
                    tracing::error!(error = %e, "handler process could not be restarted");
                    fatal.cancel();
                }
                state.send_replace(State::Failed(e));
                return;
            }
        };
        first = false;
        let started = Instant::now();
        let exited = CancellationToken::new();
        state.send_replace(State::Up(Generation {
            live,
            exited: exited.clone(),
        }));
        tokio::select! {
            biased;
            _ = stop.cancelled() => {
                exited.cancel();
                stop_child(&mut child).await;
                state.send_replace(State::Stopped);
                return;
            }
            status = child.wait() => {
                exited.cancel();
                // Whatever the process left behind in its group goes with it.
                signal_group(child.id(), rustix::process::Signal::KILL);
                quick_exits = if started.elapsed() >= STABLE_AFTER { 0 } else { quick_exits + 1 };
                let delay = RESTART_BACKOFF
                    .saturating_mul(1u32 << quick_exits.saturating_sub(1).min(10))
                    .min(RESTART_BACKOFF_MAX);
                tracing::error!(
                    how = %describe(status),
                    restart_in_ms = delay.as_millis() as u64,
                    "handler process ended; its messages in flight failed and will be retried"
                );
                state.send_replace(State::Starting);
                tokio::select! {
                    _ = stop.cancelled() => {
                        state.send_replace(State::Stopped);
                        return;
                    }
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

async fn stop_child(child: &mut Child) {
    tracing::info!("stopping the handler process");
    stop(child, STOP_GRACE).await;
}

/// Shares a supervisor between clones of a handler.
pub(crate) type Shared<T> = Arc<Supervisor<T>>;
