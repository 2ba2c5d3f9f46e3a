//! Counters of what the worker did to messages. Shared by the drain loop, the heartbeat and the
//! deleter; read as a [`Snapshot`] for the final summary log line and the exit code.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters, updated from many tasks.
#[derive(Debug, Default)]
pub struct Counters {
    receives: AtomicU64,
    empty_receives: AtomicU64,
    received: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    timed_out: AtomicU64,
    deleted: AtomicU64,
    delete_failures: AtomicU64,
    released: AtomicU64,
    extended: AtomicU64,
    extend_failures: AtomicU64,
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Snapshot {
    /// ReceiveMessage calls.
    pub receives: u64,
    /// ReceiveMessage calls that returned nothing.
    pub empty_receives: u64,
    /// Messages received (a message received twice counts twice).
    pub received: u64,
    /// Handler runs that succeeded.
    pub succeeded: u64,
    /// Handler runs that failed, timed out or panicked; the message was left for a retry or the
    /// dead-letter queue.
    pub failed: u64,
    /// Of `failed`, runs stopped by the handler timeout.
    pub timed_out: u64,
    /// Messages deleted after success.
    pub deleted: u64,
    /// Deletes SQS refused (the message will be received again).
    pub delete_failures: u64,
    /// Messages made visible again unhandled at shutdown.
    pub released: u64,
    /// Visibility extensions sent by the heartbeat.
    pub extended: u64,
    /// Visibility extensions SQS refused.
    pub extend_failures: u64,
}

macro_rules! counter {
    ($($name:ident),*) => {
        impl Counters {
            $(
                #[doc = concat!("Adds `n` to `", stringify!($name), "`.")]
                pub fn $name(&self, n: u64) {
                    self.$name.fetch_add(n, Ordering::Relaxed);
                }
            )*

            /// Reads every counter.
            pub fn snapshot(&self) -> Snapshot {
                Snapshot { $($name: self.$name.load(Ordering::Relaxed)),* }
            }
        }
    };
}

counter!(
    receives,
    empty_receives,
    received,
    succeeded,
    failed,
    timed_out,
    deleted,
    delete_failures,
    released,
    extended,
    extend_failures
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_reads_what_was_added() {
        let c = Counters::default();
        c.received(10);
        c.succeeded(9);
        c.failed(1);
        c.deleted(9);
        c.received(2);
        let s = c.snapshot();
        assert_eq!(s.received, 12);
        assert_eq!(s.succeeded, 9);
        assert_eq!(s.failed, 1);
        assert_eq!(s.deleted, 9);
        assert_eq!(s.released, 0);
    }
}
