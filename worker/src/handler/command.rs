//! The language-neutral handler: a command line run once per message with `/bin/sh -c`, in a
//! process group of its own that is killed whole when the worker gives up on the run. Exit
//! status 0 means done. The contract is in `worker/README.md` ("A command, in any language").

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

use super::{BoxError, Handler, Message};

/// Environment variable holding the SQS message id.
pub const MESSAGE_ID_ENV: &str = "WORKER_MESSAGE_ID";
/// Environment variable holding the receive count (1 on the first delivery).
pub const RECEIVE_COUNT_ENV: &str = "WORKER_RECEIVE_COUNT";
/// Environment variable holding the message attributes as a JSON object of name to string value.
pub const MESSAGE_ATTRIBUTES_ENV: &str = "WORKER_MESSAGE_ATTRIBUTES";

/// Shell that runs the command line.
const SHELL: &str = "/bin/sh";

/// Why a command run counts as failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("could not start `{SHELL} -c {command}`: {source}")]
    Spawn { command: String, source: io::Error },
    #[error("could not write the message body to the handler's stdin: {0}")]
    Stdin(io::Error),
    #[error("could not wait for the handler: {0}")]
    Wait(io::Error),
    #[error("handler exited with status {0}")]
    Exit(i32),
    #[error("handler was killed by signal {0}")]
    Signal(i32),
}

/// Runs a command line per message: the body on stdin, the message id, receive count and
/// attributes in its environment, stdout and stderr the worker's own.
#[derive(Debug, Clone)]
pub struct CommandHandler {
    command_line: String,
}

impl CommandHandler {
    /// `command_line` is passed to `/bin/sh -c` as is, so quoting, `cd dir && ...` and
    /// environment expansion work as in a shell.
    pub fn new(command_line: impl Into<String>) -> Self {
        CommandHandler {
            command_line: command_line.into(),
        }
    }

    /// The command line as given.
    pub fn command_line(&self) -> &str {
        &self.command_line
    }
}

impl Handler for CommandHandler {
    fn handle(
        &self,
        message: Message,
    ) -> impl std::future::Future<Output = Result<(), BoxError>> + Send {
        let command_line = self.command_line.clone();
        async move { run(&command_line, message).await.map_err(Into::into) }
    }
}

async fn run(command_line: &str, message: Message) -> Result<(), CommandError> {
    let attributes =
        serde_json::to_string(&message.attributes).unwrap_or_else(|_| String::from("{}"));
    let child = Command::new(SHELL)
        .arg("-c")
        .arg(command_line)
        .env(MESSAGE_ID_ENV, &message.id)
        .env(RECEIVE_COUNT_ENV, message.receive_count.to_string())
        .env(MESSAGE_ATTRIBUTES_ENV, attributes)
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| CommandError::Spawn {
            command: command_line.to_owned(),
            source,
        })?;
    let mut run = GroupGuard::new(child);

    let stdin = run.child.stdin.take();
    let body = message.body.into_bytes();
    let write = async move {
        let Some(mut stdin) = stdin else {
            return Ok(());
        };
        match stdin.write_all(&body).await {
            // The handler exited (or closed stdin) without reading the whole body: its exit
            // status decides.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            other => other,
        }
        // `stdin` drops here: the handler sees end of file.
    };
    let (written, status) = tokio::join!(write, run.child.wait());
    let status = status.map_err(CommandError::Wait)?;
    run.exited = true;
    written.map_err(CommandError::Stdin)?;
    if status.success() {
        Ok(())
    } else if let Some(code) = status.code() {
        Err(CommandError::Exit(code))
    } else {
        Err(CommandError::Signal(status.signal().unwrap_or(0)))
    }
}

/// Kills a handler's whole process group if the run is abandoned before the handler exited.
struct GroupGuard {
    child: Child,
    exited: bool,
}

impl GroupGuard {
    fn new(child: Child) -> Self {
        GroupGuard {
            child,
            exited: false,
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.exited {
            return;
        }
        // The child is not reaped yet, so its pid (the group id) cannot have been reused.
        let pid = self
            .child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid
            && let Err(e) = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL)
        {
            tracing::debug!(error = %e, "could not kill the handler's process group");
        }
        // `kill_on_drop` then kills and reaps the direct child.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn message(body: &str) -> Message {
        Message {
            id: "id-7".into(),
            body: body.into(),
            receive_count: 3,
            attributes: BTreeMap::from([("kind".to_owned(), "test".to_owned())]),
            first_received_at: None,
        }
    }

    fn temp_dir(name: &str) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix(&format!("ecs-worker-command-{name}-"))
            .tempdir()
            .unwrap()
    }

    #[tokio::test]
    async fn body_and_environment_reach_the_command() {
        let dir = temp_dir("env");
        let out = dir.path().join("out");
        let h = CommandHandler::new(format!(
            "cat > '{0}.body'; echo \"$WORKER_MESSAGE_ID $WORKER_RECEIVE_COUNT $WORKER_MESSAGE_ATTRIBUTES\" > '{0}'",
            out.display()
        ));
        h.handle(message("{\"n\": 1}")).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(out.with_extension("body")).unwrap(),
            "{\"n\": 1}"
        );
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "id-7 3 {\"kind\":\"test\"}\n"
        );
    }

    #[tokio::test]
    async fn exit_status_decides() {
        let h = CommandHandler::new("exit 7");
        let err = h.handle(message("x")).await.unwrap_err();
        assert_eq!(err.to_string(), "handler exited with status 7");

        let h = CommandHandler::new("kill -9 $$");
        let err = h.handle(message("x")).await.unwrap_err();
        assert_eq!(err.to_string(), "handler was killed by signal 9");
    }

    #[tokio::test]
    async fn a_large_body_is_not_required_to_be_read() {
        let h = CommandHandler::new("true");
        let body = "x".repeat(256 * 1024);
        h.handle(message(&body)).await.unwrap();
    }

    #[tokio::test]
    async fn dropping_the_run_kills_the_whole_process_group() {
        let dir = temp_dir("group");
        let marker = dir.path().join("survived");
        // The shell starts a grandchild that would write the marker after a second.
        let h = CommandHandler::new(format!("(sleep 1; touch '{}') & wait", marker.display()));
        let run = h.handle(message("x"));
        assert!(
            tokio::time::timeout(Duration::from_millis(300), run)
                .await
                .is_err()
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(
            !marker.exists(),
            "a process of the abandoned run kept going"
        );
    }
}
