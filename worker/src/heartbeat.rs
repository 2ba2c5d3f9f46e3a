//! Keeping held messages invisible: the registry of messages the worker holds (received, not yet
//! settled) and the heartbeat that renews their visibility timeout while handlers run, so a long
//! job is not handed to another worker.
//!
//! Renewals go out as ChangeMessageVisibilityBatch calls of up to 10 entries, several at once,
//! beside the receives, handler runs and deletes (none of them waits for a renewal). SQS
//! accepts visibility timeouts from 0 to 12 hours counted from the call
//! (<https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_ChangeMessageVisibilityBatch.html>,
//! <https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_ChangeMessageVisibility.html>).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::metrics::Counters;
use crate::queue::{MAX_BATCH, Queue};

/// ChangeMessageVisibilityBatch calls in flight at once during one renewal round.
const RENEW_CALLS: usize = 4;

/// Key of one held message in the registry (a message received twice gets two keys).
pub type HoldKey = u64;

#[derive(Debug, Clone)]
struct Held {
    message_id: String,
    receipt_handle: String,
}

/// Messages whose visibility the worker keeps renewing.
#[derive(Debug, Default)]
pub struct InFlight {
    next: AtomicU64,
    held: Mutex<HashMap<HoldKey, Held>>,
}

impl InFlight {
    fn lock(&self) -> MutexGuard<'_, HashMap<HoldKey, Held>> {
        // A panic while holding this lock cannot leave the map half-updated (single inserts and
        // removes), so a poisoned lock is still usable.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts renewing a message's visibility.
    pub fn insert(&self, message_id: &str, receipt_handle: &str) -> HoldKey {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            key,
            Held {
                message_id: message_id.to_owned(),
                receipt_handle: receipt_handle.to_owned(),
            },
        );
        key
    }

    /// Stops renewing; true if the message was held.
    pub fn remove(&self, key: HoldKey) -> bool {
        self.lock().remove(&key).is_some()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn contains(&self, key: HoldKey) -> bool {
        self.lock().contains_key(&key)
    }

    fn snapshot(&self) -> Vec<(HoldKey, Held)> {
        self.lock().iter().map(|(k, h)| (*k, h.clone())).collect()
    }
}

/// Every `interval`, sets the visibility timeout of every held message to `visibility` from now,
/// until `stop` is cancelled.
pub async fn run(
    queue: Queue,
    in_flight: Arc<InFlight>,
    visibility: Duration,
    interval: Duration,
    counters: Arc<Counters>,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticks.tick().await; // the first tick is immediate; messages were just received
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let held = in_flight.snapshot();
        futures::stream::iter(held.chunks(MAX_BATCH))
            .for_each_concurrent(RENEW_CALLS, |chunk| {
                renew(&queue, &in_flight, chunk, visibility, &counters)
            })
            .await;
    }
}

/// Renews up to 10 held messages in one call.
async fn renew(
    queue: &Queue,
    in_flight: &InFlight,
    chunk: &[(HoldKey, Held)],
    visibility: Duration,
    counters: &Counters,
) {
    let handles: Vec<&str> = chunk
        .iter()
        .map(|(_, h)| h.receipt_handle.as_str())
        .collect();
    match queue.change_visibility_batch(&handles, visibility).await {
        Ok(failed) => {
            counters.extended((chunk.len() - failed.len()) as u64);
            for f in failed {
                let Some((key, held)) = chunk.get(f.index) else {
                    continue;
                };
                // A message settled while the call was in flight is no longer ours.
                if in_flight.contains(*key) {
                    counters.extend_failures(1);
                    tracing::warn!(
                        message_id = %held.message_id,
                        code = %f.code,
                        reason = %f.message,
                        "could not extend a message's visibility; another worker may receive it"
                    );
                }
            }
        }
        Err(e) => {
            counters.extend_failures(chunk.len() as u64);
            tracing::warn!(error = %e, messages = chunk.len(), "visibility heartbeat failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_tracks_each_receive_separately() {
        let r = InFlight::default();
        let a = r.insert("m1", "h1");
        let b = r.insert("m1", "h2");
        assert_ne!(a, b);
        assert_eq!(r.len(), 2);
        assert!(r.remove(a));
        assert!(!r.remove(a));
        assert_eq!(r.len(), 1);
        assert_eq!(r.snapshot()[0].1.receipt_handle, "h2");
        assert!(r.remove(b));
        assert!(r.is_empty());
    }
}
