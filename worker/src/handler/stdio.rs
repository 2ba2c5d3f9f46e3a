//! `stdio` mode: `WORKER_HANDLER` is started once and kept up; each message is one JSON line on
//! its stdin and its answer one JSON line on its stdout. Anything else on stdout is a protocol
//! error that fails the messages in flight and restarts the process. The protocol is in
//! `worker/README.md` ("A long-lived handler").

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::process::{self, Launch, Shared, Supervisor};
use super::{BoxError, Handler, Message, Supervised};
use crate::config::Config;

/// Longest answer line accepted.
const MAX_LINE: u64 = 1024 * 1024;

type Reply = Result<(), String>;
type Pending = Mutex<HashMap<String, VecDeque<oneshot::Sender<Reply>>>>;

/// A running stdio handler process: its stdin and the messages waiting for an answer.
struct Conn {
    stdin: tokio::sync::Mutex<ChildStdin>,
    pending: Arc<Pending>,
}

/// Talks JSON lines with a long-lived process.
#[derive(Clone)]
pub struct StdioHandler {
    process: Shared<Arc<Conn>>,
    timeout: Option<Duration>,
}

impl StdioHandler {
    /// Starts `config.handler_command`. Fails only if it cannot be spawned.
    pub async fn start(config: &Config, fatal: CancellationToken) -> Result<Self, String> {
        let command_line = config
            .handler_command
            .clone()
            .ok_or_else(|| format!("{} is required", crate::config::HANDLER))?;
        let supervisor = Supervisor::start(Launcher { command_line }, fatal).await?;
        Ok(StdioHandler {
            process: Arc::new(supervisor),
            timeout: config.handler_timeout,
        })
    }
}

/// Removes an abandoned message's waiter (handler timeout, shutdown).
struct Waiting {
    pending: Arc<Pending>,
    id: String,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Ok(mut pending) = self.pending.lock()
            && let Some(waiters) = pending.get_mut(&self.id)
        {
            waiters.retain(|w| !w.is_closed());
            if waiters.is_empty() {
                pending.remove(&self.id);
            }
        }
    }
}

impl Supervised for StdioHandler {
    fn failure(&self) -> Option<String> {
        self.process.failure()
    }

    async fn shutdown(&self) {
        self.process.shutdown().await;
    }
}

impl Handler for StdioHandler {
    fn handle(
        &self,
        message: Message,
    ) -> impl std::future::Future<Output = Result<(), BoxError>> + Send {
        let this = self.clone();
        async move {
            let generation = this.process.current().await?;
            let conn = generation.live.clone();
            let mut line = serde_json::json!({
                "id": message.id,
                "body": message.body,
                "receiveCount": message.receive_count,
                "attributes": message.attributes,
            });
            if let Some(at) = message.first_received_at {
                line["firstReceivedAt"] = super::http::iso8601(at).into();
            }
            if let Some(limit) = this.timeout {
                line["deadline"] = super::http::iso8601(SystemTime::now() + limit).into();
            }
            let mut line = serde_json::to_vec(&line)?;
            line.push(b'\n');

            let (tx, rx) = oneshot::channel();
            conn.pending
                .lock()
                .map_err(|_| "handler state poisoned")?
                .entry(message.id.clone())
                .or_default()
                .push_back(tx);
            let _waiting = Waiting {
                pending: conn.pending.clone(),
                id: message.id.clone(),
            };
            let exchange = async {
                {
                    let mut stdin = conn.stdin.lock().await;
                    stdin.write_all(&line).await?;
                    stdin.flush().await?;
                }
                Ok::<_, std::io::Error>(rx.await)
            };
            let reply = tokio::select! {
                r = exchange => r,
                _ = generation.exited.cancelled() => {
                    return Err("the handler process ended while handling the message".into());
                }
            };
            match reply {
                Err(e) => {
                    Err(format!("could not write the message to the handler's stdin: {e}").into())
                }
                Ok(Err(_)) => Err("the handler process ended while handling the message".into()),
                Ok(Ok(Ok(()))) => Ok(()),
                Ok(Ok(Err(e))) => Err(e.into()),
            }
        }
    }
}

/// An answer line.
#[derive(serde::Deserialize)]
struct Answer {
    id: String,
    ok: bool,
    #[serde(default)]
    error: Option<String>,
}

/// Reads answers until stdout closes or carries something that is not an answer; then fails
/// every message still waiting and, for a protocol error, kills the process group.
async fn read_answers(stdout: ChildStdout, pending: Arc<Pending>, pid: Option<u32>) {
    let mut reader = BufReader::new(stdout);
    let mut buf = Vec::new();
    let failure = loop {
        buf.clear();
        let read = (&mut reader)
            .take(MAX_LINE + 1)
            .read_until(b'\n', &mut buf)
            .await;
        match read {
            Ok(0) => break None,
            Ok(_) => {}
            Err(e) => break Some(format!("could not read the handler's stdout: {e}")),
        }
        if buf.last() != Some(&b'\n') && buf.len() as u64 > MAX_LINE {
            break Some(format!(
                "the handler wrote a line over {MAX_LINE} bytes on stdout"
            ));
        }
        let text = String::from_utf8_lossy(&buf);
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let answer = match serde_json::from_str::<Answer>(text) {
            Ok(a) => a,
            Err(e) => {
                let preview: String = text.chars().take(200).collect();
                break Some(format!(
                    "the handler wrote a line on stdout that is not an answer ({e}): {preview:?}; \
                     stdout carries only {{\"id\":...,\"ok\":...}} lines, write logs to stderr"
                ));
            }
        };
        let waiter = pending.lock().ok().and_then(|mut p| {
            let waiters = p.get_mut(&answer.id)?;
            let mut found = None;
            while let Some(w) = waiters.pop_front() {
                if !w.is_closed() {
                    found = Some(w);
                    break;
                }
            }
            if waiters.is_empty() {
                p.remove(&answer.id);
            }
            found
        });
        let reply = if answer.ok {
            Ok(())
        } else {
            Err(format!(
                "handler answered failure: {}",
                answer.error.as_deref().unwrap_or("no error given")
            ))
        };
        match waiter {
            Some(w) => {
                let _ = w.send(reply);
            }
            None => tracing::warn!(
                message_id = %answer.id,
                "the handler answered for a message the worker is not waiting for; ignored"
            ),
        }
    };
    let waiters: Vec<_> = pending
        .lock()
        .map(|mut p| p.drain().flat_map(|(_, w)| w).collect())
        .unwrap_or_default();
    if let Some(reason) = failure {
        tracing::error!(
            error = %reason,
            in_flight = waiters.len(),
            "handler protocol error; failing its messages in flight (they are retried) and restarting it"
        );
        for w in waiters {
            let _ = w.send(Err(reason.clone()));
        }
        process::signal_group(pid, rustix::process::Signal::KILL);
    }
    // On end of file the waiters drop here and their messages fail with "process ended".
}

struct Launcher {
    command_line: String,
}

impl Launch for Launcher {
    type Live = Arc<Conn>;

    async fn launch(&self) -> Result<(Child, Arc<Conn>), String> {
        let mut child = process::spawn(&self.command_line, true)
            .map_err(|e| format!("could not start `/bin/sh -c {}`: {e}", self.command_line))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("the handler process has no stdin or stdout pipe".to_owned());
        };
        tracing::info!(command = %self.command_line, "handler process started");
        let pending = Arc::new(Pending::default());
        tokio::spawn(read_answers(stdout, pending.clone(), child.id()));
        Ok((
            child,
            Arc::new(Conn {
                stdin: tokio::sync::Mutex::new(stdin),
                pending,
            }),
        ))
    }
}
