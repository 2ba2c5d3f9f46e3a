//! The process inside a worker task: how it receives, when it handles, and when it ends.
//!
//! One state machine plays both designs' workers: this project's ([`Behaviour::ours`]) and the
//! original's ([`Behaviour::original`]). SQS calls take no time; a handler starts the moment
//! its message is received.

use crate::model::Queue;
use crate::traces::Message;
use anyhow::{Result, bail, ensure};
use ecs_worker_contract::env;

/// What the worker does to its capacity when it ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Termination {
    /// `TerminateInstanceInAutoScalingGroup` of its own instance, decrementing the desired
    /// capacity (`WORKER_TERMINATION=instance`).
    OwnInstance,
    /// `SetDesiredCapacity(0)` of the whole group (the original; `WORKER_TERMINATION=group`).
    GroupToZero,
}

/// How a worker receives and when it stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Behaviour {
    /// Long-poll wait of each receive; 0 is a short poll.
    pub wait: i64,
    /// Consecutive empty receives after which the worker ends.
    pub empty_receives: u32,
    /// An empty receive counts only when the queue then shows nothing visible or in flight.
    pub confirms_with_depth: bool,
    pub termination: Termination,
}

impl Behaviour {
    /// This project's worker.
    ///
    /// The worker of `worker/src/drain.rs` with concurrency 1 and no prefetch: long polls of
    /// `WORKER_WAIT_SECONDS`, which return as soon as a message is visible; it ends after
    /// `WORKER_EMPTY_RECEIVES` consecutive empty polls, each followed by the queue reporting
    /// nothing visible and nothing in flight, and then removes capacity as `termination` says
    /// (by default its own instance).
    pub fn ours(wait: i64, empty_receives: u32, termination: Termination) -> Behaviour {
        Behaviour {
            wait,
            empty_receives,
            confirms_with_depth: true,
            termination,
        }
    }

    /// This behaviour with the environment of a RunTask override applied, read as the worker
    /// reads `WORKER_EMPTY_RECEIVES` and `WORKER_WAIT_SECONDS`.
    pub fn overridden(self, environment: &[(String, String)]) -> Result<Behaviour> {
        let mut b = self;
        for (name, value) in environment {
            match name.as_str() {
                env::EMPTY_RECEIVES => b.empty_receives = value.parse()?,
                env::WAIT_SECONDS => b.wait = value.parse()?,
                other => bail!("the worker model does not read {other}"),
            }
        }
        ensure!(
            b.empty_receives >= 1 && (1..=20).contains(&b.wait),
            "the worker refuses {environment:?}"
        );
        Ok(b)
    }

    /// The original's worker.
    ///
    /// Short polls for one message, and on the first empty receive it sets the group's desired
    /// capacity to 0.
    pub fn original() -> Behaviour {
        Behaviour {
            wait: 0,
            empty_receives: 1,
            confirms_with_depth: false,
            termination: Termination::GroupToZero,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// A receive is outstanding until `until` (a short poll ends when it starts).
    Receiving {
        until: i64,
    },
    Handling {
        message: usize,
        until: i64,
    },
    Ended,
}

/// What a worker did at one instant, for the accounting of the simulated account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Did {
    /// Received a message and started its handler.
    Started { message: usize },
    /// A handler succeeded and its message was deleted.
    Finished { message: usize },
    /// The worker decided the queue is drained and ends; its termination step follows.
    Drained,
}

/// One worker process.
#[derive(Clone, Debug)]
pub struct Worker {
    behaviour: Behaviour,
    state: State,
    empty_in_a_row: u32,
}

impl Worker {
    /// A worker whose first receive starts at `now`.
    pub fn start(behaviour: Behaviour, now: i64) -> Worker {
        Worker {
            behaviour,
            state: State::Receiving {
                until: now + behaviour.wait,
            },
            empty_in_a_row: 0,
        }
    }

    /// Runs the worker up to `now`: finishes a handler that is done, receives a visible
    /// message, settles a receive that came back empty. Appends what it did to `did`.
    pub fn wake(&mut self, now: i64, queue: &mut Queue, messages: &[Message], did: &mut Vec<Did>) {
        loop {
            match self.state {
                State::Handling { message, until } if until <= now => {
                    queue.delete();
                    did.push(Did::Finished { message });
                    self.state = State::Receiving {
                        until: now + self.behaviour.wait,
                    };
                }
                State::Handling { .. } | State::Ended => return,
                State::Receiving { until } => {
                    if let Some(message) = queue.receive() {
                        self.empty_in_a_row = 0;
                        did.push(Did::Started { message });
                        self.state = State::Handling {
                            message,
                            until: now + messages[message].handler,
                        };
                        continue;
                    }
                    if until > now {
                        return;
                    }
                    let counts = !self.behaviour.confirms_with_depth || queue.is_empty();
                    self.empty_in_a_row = if counts { self.empty_in_a_row + 1 } else { 0 };
                    if self.empty_in_a_row >= self.behaviour.empty_receives {
                        self.state = State::Ended;
                        did.push(Did::Drained);
                        return;
                    }
                    self.state = State::Receiving {
                        until: now + self.behaviour.wait,
                    };
                    if self.behaviour.wait == 0 {
                        continue;
                    }
                    return;
                }
            }
        }
    }

    /// When the worker next has something to do by itself (a handler ends, a poll times out).
    pub fn next_wake(&self) -> Option<i64> {
        match self.state {
            State::Receiving { until } | State::Handling { until, .. } => Some(until),
            State::Ended => None,
        }
    }

    /// SIGTERM (a Spot interruption): the worker gives up the handler running, returns its
    /// message to the queue at once and ends. Returns that message and the handler seconds it
    /// did not run.
    pub fn stop(&mut self, now: i64, queue: &mut Queue) -> Option<(usize, i64)> {
        let given_up = match self.state {
            State::Handling { message, until } => {
                queue.release(message);
                Some((message, until - now))
            }
            _ => None,
        };
        self.state = State::Ended;
        given_up
    }

    /// A handler is running.
    pub fn is_handling(&self) -> bool {
        matches!(self.state, State::Handling { .. })
    }
}
