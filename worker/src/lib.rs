//! `ecs-worker`: the process that runs inside the worker's ECS task. It drains an SQS queue,
//! runs a handler per message, and when the queue is truly empty removes its own EC2 capacity.
//! This module holds the [`Worker`] that ties the steps together, its [`Report`] and the exit
//! codes ([`Exit`]); `worker/README.md` documents the contract.

#![forbid(unsafe_code)]

pub mod app;
pub mod aws;
pub mod config;
pub mod drain;
pub mod handler;
pub mod heartbeat;
pub mod metrics;
pub mod queue;
pub mod termination;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

pub use config::{Config, TerminationMode};
pub use drain::End;
pub use handler::{CommandHandler, Handler, Message, from_fn};
pub use metrics::Snapshot;
pub use termination::Terminated;

/// The worker's exit codes (the ECS task's container exit code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Exit {
    /// Queue drained, every handled message succeeded, capacity removed as configured.
    Success = 0,
    /// The worker could not run: bad configuration, or SQS kept refusing it.
    Error = 1,
    /// At least one handler run failed (the messages were left for retry or the dead-letter
    /// queue). Reported whether the queue was drained or the worker was stopped.
    MessagesFailed = 3,
    /// Stopped by SIGTERM/SIGINT before the queue was drained; unfinished messages were made
    /// visible again. No message failed.
    Interrupted = ecs_worker_contract::exit::INTERRUPTED as u8,
    /// Queue drained, but removing the capacity failed (it may still be running).
    TerminationFailed = 5,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// What a worker run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// How the drain loop ended; `None` if it could not start.
    pub end: Option<End>,
    /// Why the worker stopped early, if it did.
    pub error: Option<String>,
    pub counters: Snapshot,
    /// The outcome recorded on the worker's ECS task before the capacity step
    /// ([`termination::OUTCOME_TAG`]): the task ARN, or why it could not be recorded. `None` when
    /// not attempted: no drain, `WORKER_TERMINATION=none`, or not running as an ECS task.
    pub recorded: Option<Result<String, String>>,
    /// The termination step, run only after a drain.
    pub termination: Option<Result<Terminated, String>>,
}

impl Report {
    /// The exit code for this run; the first that applies of 1, 5, 3, 4, 0.
    pub fn exit(&self) -> Exit {
        if self.error.is_some() {
            Exit::Error
        } else if matches!(self.termination, Some(Err(_))) {
            Exit::TerminationFailed
        } else if self.counters.failed > 0 {
            Exit::MessagesFailed
        } else if self.end == Some(End::Interrupted) {
            Exit::Interrupted
        } else {
            Exit::Success
        }
    }
}

/// A configured worker: queue, capacity and handler.
pub struct Worker<H> {
    config: Config,
    queue: queue::Queue,
    capacity: termination::Capacity,
    handler: Arc<H>,
    counters: Arc<metrics::Counters>,
}

impl<H: Handler> Worker<H> {
    pub fn new(config: Config, clients: &aws::Clients, handler: H) -> Self {
        Worker {
            queue: queue::Queue::new(clients.sqs.clone(), config.queue_url.clone()),
            capacity: termination::Capacity::new(clients.autoscaling.clone(), clients.ecs.clone()),
            config,
            handler: Arc::new(handler),
            counters: Arc::new(metrics::Counters::default()),
        }
    }

    /// Live counters, readable while the worker runs.
    pub fn counters(&self) -> Arc<metrics::Counters> {
        self.counters.clone()
    }

    /// Drains the queue, then removes the capacity. Cancel `shutdown` to stop early (SIGTERM).
    pub async fn run(self, shutdown: CancellationToken) -> Report {
        let mut report = Report {
            end: None,
            error: None,
            counters: Snapshot::default(),
            recorded: None,
            termination: None,
        };
        if let Err(e) = self.config.validate() {
            report.error = Some(e.to_string());
            return report;
        }
        let redrive = match self.queue.redrive().await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(queue = %self.queue.url(), error = %e, "cannot read the queue");
                report.error = Some(e.to_string());
                return report;
            }
        };
        match &redrive {
            Some(r) => tracing::info!(
                dead_letter_queue = %r.dead_letter_target_arn,
                max_receive_count = r.max_receive_count,
                "failed messages go to the dead-letter queue after max_receive_count receives"
            ),
            None => tracing::warn!(
                "the queue has no redrive policy: a message that always fails is retried until \
                 the queue's retention period drops it"
            ),
        }
        tracing::info!(
            queue = %self.queue.url(),
            concurrency = self.config.concurrency,
            prefetch = %self.config.prefetch.to_env(),
            visibility_seconds = self.config.visibility_timeout.as_secs(),
            termination = self.config.termination.as_str(),
            "draining"
        );

        let drained = drain::drain(
            &self.config,
            self.queue.clone(),
            self.handler.clone(),
            self.counters.clone(),
            redrive,
            shutdown,
        )
        .await;
        report.counters = self.counters.snapshot();
        match drained {
            Ok(end) => report.end = Some(end),
            Err(e) => {
                report.error = Some(e.to_string());
                return report;
            }
        }
        if report.end == Some(End::Drained) {
            tracing::info!("queue drained");
            if self.config.termination != TerminationMode::None {
                // Removing the capacity may take the ECS agent down before it reports this
                // container's exit code: the outcome goes on the task first.
                report.recorded = self
                    .capacity
                    .record_outcome(&self.config, report.exit())
                    .await;
                match &report.recorded {
                    Some(Ok(task)) => tracing::info!(
                        task = %task,
                        outcome = report.exit().code(),
                        "outcome recorded on the task"
                    ),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "could not record the outcome on the task")
                    }
                    None => {}
                }
            }
            let terminated = self.capacity.terminate(&self.config).await;
            match &terminated {
                Ok(t) => tracing::info!(result = ?t, "capacity step done"),
                Err(e) => tracing::error!(error = %e, "could not remove the worker's capacity"),
            }
            report.termination = Some(terminated.map_err(|e| e.to_string()));
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(end: Option<End>, failed: u64) -> Report {
        Report {
            end,
            error: None,
            counters: Snapshot {
                failed,
                ..Snapshot::default()
            },
            recorded: None,
            termination: None,
        }
    }

    #[test]
    fn exit_codes_in_order_of_precedence() {
        assert_eq!(report(Some(End::Drained), 0).exit(), Exit::Success);
        assert_eq!(report(Some(End::Drained), 2).exit(), Exit::MessagesFailed);
        assert_eq!(report(Some(End::Interrupted), 0).exit(), Exit::Interrupted);
        assert_eq!(
            report(Some(End::Interrupted), 1).exit(),
            Exit::MessagesFailed
        );

        let mut r = report(Some(End::Drained), 1);
        r.termination = Some(Err("denied".into()));
        assert_eq!(r.exit(), Exit::TerminationFailed);
        r.error = Some("queue gone".into());
        assert_eq!(r.exit(), Exit::Error);

        assert_eq!(
            [
                Exit::Success,
                Exit::Error,
                Exit::MessagesFailed,
                Exit::Interrupted,
                Exit::TerminationFailed
            ]
            .map(Exit::code),
            [0, 1, 3, 4, 5]
        );
    }
}
