//! The drain loop: receive, run handlers, settle every message, decide when the queue is
//! drained, and wind down on SIGTERM. A message is deleted only after its handler succeeded; the
//! queue counts as drained only after `empty_receives` consecutive empty long polls, each taken
//! while nothing is held and followed by the queue reporting nothing visible, in flight or
//! delayed. `worker/README.md` ("Prefetch and the pipelined drain") describes the pipeline.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, MAX_VISIBILITY_SECONDS};
use crate::handler::Handler;
use crate::heartbeat::{self, HoldKey, InFlight};
use crate::metrics::Counters;
use crate::queue::{MAX_BATCH, Queue, QueueError, Received, Redrive};

/// Consecutive failed receives (each already retried by the SDK) before the worker gives up.
const MAX_RECEIVE_ERRORS: u32 = 6;
/// Attempts of one batch delete before its messages are left to come back.
const DELETE_ATTEMPTS: u32 = 3;
/// DeleteMessageBatch calls in flight at once.
const DELETE_CALLS: usize = 4;

/// How the drain loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum End {
    /// The queue is drained and every held message is settled.
    Drained,
    /// Shutdown was requested before the queue was drained; unfinished messages were released.
    Interrupted,
}

/// Delay before a failed message is received again: `base` doubled for each earlier receive,
/// capped by `max` and by SQS's 12-hour visibility limit.
pub fn retry_delay(receive_count: u32, base: Duration, max: Duration) -> Duration {
    let doublings = receive_count.saturating_sub(1).min(24);
    base.saturating_mul(1u32 << doublings)
        .min(max)
        .min(Duration::from_secs(MAX_VISIBILITY_SECONDS))
}

/// A message's claim on one of the hold slots ([`Config::max_held`]). Dropping it frees the
/// slot and wakes the receive loop.
struct Hold {
    held: Arc<AtomicUsize>,
    progress: Arc<Notify>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.held.fetch_sub(1, Ordering::SeqCst); // free the slot before waking the receive loop
        self.progress.notify_one();
    }
}

/// How long handler runs take, for `auto` prefetch: a moving average of finished runs that
/// follows a slower run at once and a quicker one gradually, raised to the age of the youngest
/// running handler while every run slot is busy (none of them will free a slot sooner).
#[derive(Debug, Default)]
pub struct Pace {
    state: Mutex<PaceState>,
}

#[derive(Debug, Default)]
struct PaceState {
    estimate: Option<Duration>,
    running: HashMap<HoldKey, Instant>,
}

impl Pace {
    fn lock(&self) -> std::sync::MutexGuard<'_, PaceState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn started(&self, key: HoldKey) {
        self.lock().running.insert(key, Instant::now());
    }

    /// Records a finished run (any outcome).
    fn finished(&self, key: HoldKey) {
        let mut state = self.lock();
        let Some(started) = state.running.remove(&key) else {
            return;
        };
        let took = started.elapsed();
        state.estimate = Some(match state.estimate {
            Some(e) if took < e => e.mul_f64(0.8) + took.mul_f64(0.2),
            _ => took,
        });
    }

    /// Forgets a run that did not finish (abandoned at shutdown).
    fn abandoned(&self, key: HoldKey) {
        self.lock().running.remove(&key);
    }

    /// The current estimate with `run_slots` handlers at most; `None` before a first run ended.
    pub fn current(&self, run_slots: usize) -> Option<Duration> {
        let state = self.lock();
        let estimate = state.estimate?;
        if state.running.len() < run_slots {
            return Some(estimate);
        }
        let youngest = state.running.values().map(Instant::elapsed).min();
        Some(youngest.map_or(estimate, |age| age.max(estimate)))
    }
}

/// A succeeded message waiting for the deleter. Its hold slot is already free (the delete does
/// not hold up the next receive); the heartbeat keeps it invisible until the delete is done.
struct Delete {
    key: HoldKey,
    message_id: String,
    receipt_handle: String,
}

/// What a handler run came to.
enum Outcome {
    Done,
    Failed(String),
    TimedOut(Duration),
}

struct Shared<H> {
    config: Config,
    queue: Queue,
    handler: Arc<H>,
    counters: Arc<Counters>,
    redrive: Option<Redrive>,
    in_flight: Arc<InFlight>,
    /// Hold slots taken: messages held and not yet settled, plus those claimed by a receive.
    held: Arc<AtomicUsize>,
    pace: Pace,
    run_slots: Arc<Semaphore>,
    /// Messages held but not started (waiting for a run slot).
    waiting: AtomicUsize,
    /// Notified when a hold slot is freed or a waiting message starts.
    progress: Arc<Notify>,
    deletes: mpsc::UnboundedSender<Delete>,
    /// Cancelled when the worker stops receiving: messages not yet started are released.
    stop: CancellationToken,
    /// Cancelled when the shutdown grace period is over: running handlers are abandoned.
    hard_stop: CancellationToken,
}

/// Drains the queue with `handler` until it is empty or `shutdown` is cancelled.
///
/// Returns an error only when SQS keeps refusing receives; held messages are settled or released
/// in every case before this returns.
pub async fn drain<H: Handler>(
    config: &Config,
    queue: Queue,
    handler: Arc<H>,
    counters: Arc<Counters>,
    redrive: Option<Redrive>,
    shutdown: CancellationToken,
) -> Result<End, QueueError> {
    let in_flight = Arc::new(InFlight::default());
    let (deletes, delete_rx) = mpsc::unbounded_channel();
    let stop = shutdown.child_token();
    let shared = Arc::new(Shared {
        config: config.clone(),
        queue: queue.clone(),
        handler,
        counters: counters.clone(),
        redrive,
        in_flight: in_flight.clone(),
        held: Arc::new(AtomicUsize::new(0)),
        pace: Pace::default(),
        run_slots: Arc::new(Semaphore::new(config.concurrency)),
        waiting: AtomicUsize::new(0),
        progress: Arc::new(Notify::new()),
        deletes,
        stop: stop.clone(),
        hard_stop: CancellationToken::new(),
    });

    let heartbeat_stop = CancellationToken::new();
    let heartbeat = tokio::spawn(heartbeat::run(
        queue.clone(),
        in_flight.clone(),
        config.visibility_timeout,
        config.heartbeat_interval(),
        counters.clone(),
        heartbeat_stop.clone(),
    ));
    let deleter = tokio::spawn(delete_loop(
        queue.clone(),
        delete_rx,
        counters.clone(),
        in_flight.clone(),
    ));

    let mut tasks = JoinSet::new();
    let result = receive_loop(&shared, &stop, &mut tasks).await;

    // Wind down: nothing new starts; running handlers get the grace period.
    stop.cancel();
    if !tasks.is_empty() {
        tracing::info!(
            running = tasks.len(),
            grace_seconds = config.shutdown_grace.as_secs(),
            "waiting for running handlers"
        );
    }
    let finished = tokio::time::timeout(config.shutdown_grace, join_all(&mut tasks)).await;
    if finished.is_err() {
        tracing::warn!(
            abandoned = tasks.len(),
            "shutdown grace period over; stopping handlers and releasing their messages"
        );
        shared.hard_stop.cancel();
        join_all(&mut tasks).await;
    }
    heartbeat_stop.cancel();
    drop(shared); // closes the delete channel once the deleter has taken everything
    if let Err(e) = heartbeat.await {
        tracing::error!(error = %e, "heartbeat task failed");
    }
    if let Err(e) = deleter.await {
        tracing::error!(error = %e, "delete task failed");
    }
    result
}

async fn receive_loop<H: Handler>(
    shared: &Arc<Shared<H>>,
    stop: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Result<End, QueueError> {
    let config = &shared.config;
    let mut empty_in_a_row = 0u32;
    let mut errors_in_a_row = 0u32;
    loop {
        while let Some(joined) = tasks.try_join_next() {
            log_join_error(joined);
        }
        let holds = tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(End::Interrupted),
            holds = shared.claim_slots() => holds,
        };
        let received = tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(End::Interrupted),
            r = shared.queue.receive(holds.len(), config.wait, config.visibility_timeout) => r,
        };
        shared.counters.receives(1);
        let messages = match received {
            Ok(messages) => {
                errors_in_a_row = 0;
                messages
            }
            Err(e) => {
                errors_in_a_row += 1;
                if errors_in_a_row >= MAX_RECEIVE_ERRORS {
                    tracing::error!(error = %e, attempts = errors_in_a_row, "giving up receiving");
                    return Err(e);
                }
                drop(holds);
                let pause = Duration::from_secs(1 << (errors_in_a_row - 1).min(5));
                tracing::warn!(error = %e, retry_in_seconds = pause.as_secs(), "receive failed");
                tokio::select! {
                    _ = stop.cancelled() => return Ok(End::Interrupted),
                    _ = tokio::time::sleep(pause) => {}
                }
                continue;
            }
        };

        if messages.is_empty() {
            shared.counters.empty_receives(1);
            drop(holds);
            if !shared.in_flight.is_empty() || shared.held.load(Ordering::SeqCst) > 0 {
                // Still working on (or deleting) messages: not a sign of an empty queue.
                empty_in_a_row = 0;
                continue;
            }
            match shared.queue.depth().await {
                Ok(depth) if depth.is_empty() => {
                    empty_in_a_row += 1;
                    tracing::debug!(empty_in_a_row, "empty receive on an empty queue");
                }
                Ok(depth) => {
                    empty_in_a_row = 0;
                    tracing::debug!(
                        visible = depth.visible,
                        in_flight = depth.in_flight,
                        delayed = depth.delayed,
                        "empty receive but the queue still has messages"
                    );
                }
                Err(e) => {
                    empty_in_a_row = 0;
                    tracing::warn!(error = %e, "could not read the queue depth");
                }
            }
            if empty_in_a_row >= config.empty_receives {
                return Ok(End::Drained);
            }
            continue;
        }

        empty_in_a_row = 0;
        shared.counters.received(messages.len() as u64);
        let mut holds = holds.into_iter();
        for received in messages {
            let key = shared
                .in_flight
                .insert(&received.message.id, &received.receipt_handle);
            match holds.next() {
                Some(hold) => {
                    shared.waiting.fetch_add(1, Ordering::SeqCst);
                    tasks.spawn(process(shared.clone(), received, key, hold));
                }
                None => {
                    // SQS returned more than was asked for: give the extra back at once.
                    shared.release(key, &received).await;
                }
            }
        }
    }
}

impl<H> Shared<H> {
    /// Hold slots now: the running handlers plus what the prefetch setting holds ahead at the
    /// measured pace.
    fn max_held(&self) -> usize {
        self.config
            .max_held(self.pace.current(self.config.concurrency))
    }

    /// Claims hold slots for the next receive: as soon as a handler would otherwise go idle (a
    /// slot is free and no held message is waiting to start), or once a full batch is free.
    /// Only the receive loop claims, so the count can only have gone down since it was read.
    async fn claim_slots(&self) -> Vec<Hold> {
        loop {
            let notified = self.progress.notified();
            let max_held = self.max_held();
            let free = max_held.saturating_sub(self.held.load(Ordering::SeqCst));
            let full_batch = max_held.min(MAX_BATCH);
            if free >= full_batch || (free > 0 && self.waiting.load(Ordering::SeqCst) == 0) {
                let n = free.min(MAX_BATCH);
                self.held.fetch_add(n, Ordering::SeqCst);
                return (0..n)
                    .map(|_| Hold {
                        held: self.held.clone(),
                        progress: self.progress.clone(),
                    })
                    .collect();
            }
            notified.await;
        }
    }
}

async fn join_all(tasks: &mut JoinSet<()>) {
    while let Some(joined) = tasks.join_next().await {
        log_join_error(joined);
    }
}

fn log_join_error(joined: Result<(), tokio::task::JoinError>) {
    if let Err(e) = joined {
        tracing::error!(error = %e, "message task failed");
    }
}

/// Runs one message from the run-slot wait to its settlement.
async fn process<H: Handler>(shared: Arc<Shared<H>>, received: Received, key: HoldKey, hold: Hold) {
    let run_slot = tokio::select! {
        biased;
        _ = shared.stop.cancelled() => None,
        slot = shared.run_slots.clone().acquire_owned() => Some(slot),
    };
    shared.waiting.fetch_sub(1, Ordering::SeqCst);
    shared.progress.notify_one();
    let Some(run_slot) = run_slot else {
        shared.release(key, &received).await;
        return;
    };
    let message = received.message.clone();
    shared.pace.started(key);
    let run = AssertUnwindSafe(shared.handler.handle(message)).catch_unwind();
    let run = async {
        let result = match shared.config.handler_timeout {
            Some(limit) => match tokio::time::timeout(limit, run).await {
                Ok(r) => r,
                Err(_) => return Outcome::TimedOut(limit),
            },
            None => run.await,
        };
        match result {
            Ok(Ok(())) => Outcome::Done,
            Ok(Err(e)) => Outcome::Failed(e.to_string()),
            Err(panic) => Outcome::Failed(format!("handler panicked: {}", panic_text(&panic))),
        }
    };
    // The handler's future is dropped (a command's process group killed) when `select!` ends,
    // before the message is released.
    let outcome = tokio::select! {
        biased;
        outcome = run => Some(outcome),
        _ = shared.hard_stop.cancelled() => None,
    };
    match outcome {
        Some(_) => shared.pace.finished(key),
        None => shared.pace.abandoned(key),
    }
    drop(run_slot);
    let Some(outcome) = outcome else {
        shared.release(key, &received).await;
        return;
    };

    let message = &received.message;
    match outcome {
        Outcome::Done => {
            shared.counters.succeeded(1);
            tracing::debug!(message_id = %message.id, "handled");
            // The deleter outlives every message task, so this send cannot fail; if it somehow
            // did, the message would come back after its visibility timeout.
            let _ = shared.deletes.send(Delete {
                key,
                message_id: message.id.clone(),
                receipt_handle: received.receipt_handle.clone(),
            });
        }
        Outcome::Failed(reason) => {
            shared.counters.failed(1);
            shared.retry_later(key, &received, &reason).await;
        }
        Outcome::TimedOut(limit) => {
            shared.counters.failed(1);
            shared.counters.timed_out(1);
            let reason = format!("handler timed out after {}s", limit.as_secs());
            shared.retry_later(key, &received, &reason).await;
        }
    }
    drop(hold);
}

impl<H> Shared<H> {
    /// Leaves a failed message for a later receive, after the retry backoff.
    async fn retry_later(&self, key: HoldKey, received: &Received, reason: &str) {
        self.in_flight.remove(key);
        let message = &received.message;
        let delay = retry_delay(
            message.receive_count,
            self.config.retry_backoff,
            self.config.retry_backoff_max,
        );
        let last_try = self
            .redrive
            .as_ref()
            .is_some_and(|r| message.receive_count >= r.max_receive_count);
        tracing::warn!(
            message_id = %message.id,
            receive_count = message.receive_count,
            retry_in_seconds = delay.as_secs(),
            reason,
            "message failed{}",
            if last_try { "; its next receive moves it to the dead-letter queue" } else { "" }
        );
        if let Err(e) = self
            .queue
            .change_visibility(&received.receipt_handle, delay)
            .await
        {
            tracing::warn!(
                message_id = %message.id,
                error = %e,
                "could not set the retry delay; the message comes back when its visibility timeout ends"
            );
        }
    }

    /// Makes an unfinished message visible again at once.
    async fn release(&self, key: HoldKey, received: &Received) {
        self.in_flight.remove(key);
        match self
            .queue
            .change_visibility(&received.receipt_handle, Duration::ZERO)
            .await
        {
            Ok(()) => {
                self.counters.released(1);
                tracing::info!(message_id = %received.message.id, "released unfinished message");
            }
            Err(e) => tracing::warn!(
                message_id = %received.message.id,
                error = %e,
                "could not release the message; it comes back when its visibility timeout ends"
            ),
        }
    }
}

/// Deletes succeeded messages in DeleteMessageBatch calls of up to 10, as they arrive: a partial
/// batch goes out at once when no call is in flight (a lone message is not kept waiting), and
/// while calls are in flight the next ones fill up to 10, with up to [`DELETE_CALLS`] in flight.
/// A message stops being renewed by the heartbeat once its delete call has answered. When the
/// channel closes, everything still pending is sent before this returns.
async fn delete_loop(
    queue: Queue,
    mut rx: mpsc::UnboundedReceiver<Delete>,
    counters: Arc<Counters>,
    in_flight: Arc<InFlight>,
) {
    let mut pending: Vec<Delete> = Vec::new();
    let mut calls = JoinSet::new();
    let mut open = true;
    loop {
        while !pending.is_empty()
            && calls.len() < DELETE_CALLS
            && (pending.len() >= MAX_BATCH || calls.is_empty() || !open)
        {
            let batch: Vec<Delete> = pending.drain(..pending.len().min(MAX_BATCH)).collect();
            calls.spawn(delete_batch(
                queue.clone(),
                batch,
                counters.clone(),
                in_flight.clone(),
            ));
        }
        if !open && pending.is_empty() && calls.is_empty() {
            return;
        }
        tokio::select! {
            received = rx.recv_many(&mut pending, 8 * MAX_BATCH), if open => {
                if received == 0 {
                    open = false;
                }
            }
            Some(joined) = calls.join_next(), if !calls.is_empty() => {
                if let Err(e) = joined {
                    tracing::error!(error = %e, "delete call task failed");
                }
            }
        }
    }
}

/// One DeleteMessageBatch call (retried on a transport or service error), then the messages
/// leave the heartbeat's registry.
async fn delete_batch(
    queue: Queue,
    batch: Vec<Delete>,
    counters: Arc<Counters>,
    in_flight: Arc<InFlight>,
) {
    let handles: Vec<&str> = batch.iter().map(|d| d.receipt_handle.as_str()).collect();
    let mut attempt = 1;
    loop {
        match queue.delete_batch(&handles).await {
            Ok(failed) => {
                counters.deleted((batch.len() - failed.len()) as u64);
                counters.delete_failures(failed.len() as u64);
                for f in failed {
                    let id = batch.get(f.index).map_or("?", |d| d.message_id.as_str());
                    tracing::warn!(
                        message_id = id,
                        code = %f.code,
                        reason = %f.message,
                        "could not delete a handled message; it will be handled again"
                    );
                }
                break;
            }
            Err(e) if attempt < DELETE_ATTEMPTS => {
                tracing::warn!(error = %e, attempt, "batch delete failed; retrying");
                tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
                attempt += 1;
            }
            Err(e) => {
                counters.delete_failures(batch.len() as u64);
                tracing::error!(
                    error = %e,
                    messages = batch.len(),
                    "could not delete handled messages; they will be handled again"
                );
                break;
            }
        }
    }
    for delete in &batch {
        in_flight.remove(delete.key);
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_per_receive_and_is_capped() {
        let base = Duration::from_secs(30);
        let max = Duration::from_secs(900);
        assert_eq!(retry_delay(1, base, max), Duration::from_secs(30));
        assert_eq!(retry_delay(2, base, max), Duration::from_secs(60));
        assert_eq!(retry_delay(3, base, max), Duration::from_secs(120));
        assert_eq!(retry_delay(6, base, max), Duration::from_secs(900));
        assert_eq!(retry_delay(u32::MAX, base, max), Duration::from_secs(900));
        // receive count 0 (attribute missing) is treated as a first receive
        assert_eq!(retry_delay(0, base, max), Duration::from_secs(30));
    }

    #[test]
    fn retry_delay_never_exceeds_the_sqs_limit() {
        let d = retry_delay(
            30,
            Duration::from_secs(43_200),
            Duration::from_secs(43_200 * 4),
        );
        assert_eq!(d, Duration::from_secs(43_200));
    }

    #[test]
    fn zero_backoff_retries_at_once() {
        assert_eq!(
            retry_delay(5, Duration::ZERO, Duration::from_secs(900)),
            Duration::ZERO
        );
    }

    #[test]
    fn pace_follows_a_slower_run_at_once_and_a_quicker_one_gradually() {
        let pace = Pace::default();
        assert_eq!(pace.current(1), None, "nothing timed yet");
        let record = |key: HoldKey, took: Duration| {
            pace.lock().running.insert(key, Instant::now() - took);
            pace.finished(key);
        };
        record(1, Duration::from_millis(10));
        let first = pace.current(1).unwrap();
        assert!(first >= Duration::from_millis(10) && first < Duration::from_millis(20));
        record(2, Duration::from_secs(2));
        assert!(
            pace.current(1).unwrap() >= Duration::from_secs(2),
            "slower: at once"
        );
        record(3, Duration::from_millis(10));
        let after_one_quick = pace.current(1).unwrap();
        assert!(
            after_one_quick > Duration::from_millis(1500),
            "quicker: gradually ({after_one_quick:?})"
        );
        for key in 4..40 {
            record(key, Duration::from_millis(10));
        }
        assert!(pace.current(1).unwrap() < Duration::from_millis(50));
    }

    #[test]
    fn pace_counts_handlers_still_running_when_every_slot_is_busy() {
        let pace = Pace::default();
        pace.lock().running.insert(1, Instant::now());
        pace.finished(1);
        let quick = pace.current(2).unwrap();
        pace.lock()
            .running
            .insert(2, Instant::now() - Duration::from_secs(5));
        // One of two slots busy: the other frees at the quick pace.
        assert_eq!(pace.current(2).unwrap(), quick);
        // Every slot busy for 3 s or more: no slot frees sooner.
        pace.lock()
            .running
            .insert(3, Instant::now() - Duration::from_secs(3));
        assert!(pace.current(2).unwrap() >= Duration::from_secs(3));
        pace.abandoned(3);
        assert_eq!(pace.current(2).unwrap(), quick);
    }

    #[test]
    fn panic_payloads_become_text() {
        let p: Box<dyn std::any::Any + Send> = Box::new("boom");
        assert_eq!(panic_text(p.as_ref()), "boom");
        let p: Box<dyn std::any::Any + Send> = Box::new(String::from("bang"));
        assert_eq!(panic_text(p.as_ref()), "bang");
        let p: Box<dyn std::any::Any + Send> = Box::new(3u8);
        assert_eq!(panic_text(p.as_ref()), "non-string panic payload");
    }
}
