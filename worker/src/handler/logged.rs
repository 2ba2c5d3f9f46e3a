//! One log line per message (id, receive count, outcome, handler duration): at `info` with
//! `WORKER_LOG_FORMAT=json`, at `debug` otherwise.

use std::time::Instant;

use super::{BoxError, Handler, Message};

/// Wraps a handler with per-message log lines.
pub struct Logged<H> {
    inner: H,
    info: bool,
}

impl<H> Logged<H> {
    /// `info`: log each message at info level (else debug).
    pub fn new(inner: H, info: bool) -> Self {
        Logged { inner, info }
    }
}

/// Logs `abandoned` if the run is dropped before it finished.
struct Run {
    id: String,
    receive_count: u32,
    started: Instant,
    info: bool,
    done: bool,
}

impl Run {
    fn log(&self, outcome: &str, error: Option<&str>) {
        let duration_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        if self.info {
            tracing::info!(
                message_id = %self.id,
                receive_count = self.receive_count,
                outcome,
                duration_ms,
                error,
                "message"
            );
        } else {
            tracing::debug!(
                message_id = %self.id,
                receive_count = self.receive_count,
                outcome,
                duration_ms,
                error,
                "message"
            );
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if !self.done {
            self.log("abandoned", None);
        }
    }
}

impl<H: Handler> Handler for Logged<H> {
    fn handle(
        &self,
        message: Message,
    ) -> impl std::future::Future<Output = Result<(), BoxError>> + Send {
        let mut run = Run {
            id: message.id.clone(),
            receive_count: message.receive_count,
            started: Instant::now(),
            info: self.info,
            done: false,
        };
        let handled = self.inner.handle(message);
        async move {
            let result = handled.await;
            run.done = true;
            match &result {
                Ok(()) => run.log("succeeded", None),
                Err(e) => run.log("failed", Some(&e.to_string())),
            }
            result
        }
    }
}
