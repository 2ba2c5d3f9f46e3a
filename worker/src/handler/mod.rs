//! The handler contract: what a handler is given ([`Message`]) and what it answers, and the ways
//! to write one: a Rust async closure ([`from_fn`]), or a program reached in one of the modes of
//! `WORKER_HANDLER_MODE` ([`CommandHandler`], [`HttpHandler`], [`StdioHandler`]).

mod command;
mod http;
mod logged;
mod process;
mod stdio;

use std::collections::BTreeMap;
use std::future::Future;

pub use command::CommandHandler;
pub(crate) use http::iso8601;
pub use http::{
    ATTRIBUTE_HEADER_PREFIX, DEADLINE_HEADER, FIRST_RECEIVED_HEADER, HttpHandler, MSGID_HEADER,
    QUEUE_HEADER, RECEIVE_COUNT_HEADER,
};
pub use logged::Logged;
pub use process::STOP_GRACE;
pub use stdio::StdioHandler;

/// Boxed error a handler returns to say the message failed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// One received message, as a handler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The SQS message id (stable across receives of the same message).
    pub id: String,
    /// The body, exactly as sent.
    pub body: String,
    /// How many times SQS has handed this message out, this receive included (1 the first time).
    pub receive_count: u32,
    /// Message attributes set by the sender: String and Number values as they are, Binary values
    /// base64-encoded.
    pub attributes: BTreeMap<String, String>,
    /// When SQS first handed this message out (its `ApproximateFirstReceiveTimestamp`), if SQS
    /// said.
    pub first_received_at: Option<std::time::SystemTime>,
}

/// Code run for each message. `Ok` means done (the message is deleted); `Err` means failed (the
/// message is retried later and, after the queue's maxReceiveCount, goes to the dead-letter
/// queue).
///
/// The future is dropped if the handler outlives its timeout or the shutdown grace period;
/// handlers that hold external resources should release them on drop.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, message: Message) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// A handler whose process the worker starts and keeps running between messages (`http` and
/// `stdio` modes).
pub trait Supervised: Handler {
    /// Why the handler process could not be restarted, if that happened.
    fn failure(&self) -> Option<String>;
    /// Stops the handler process (SIGTERM to its group, SIGKILL after [`STOP_GRACE`]).
    fn shutdown(&self) -> impl Future<Output = ()> + Send;
}

/// A [`Handler`] made from an async closure; see [`from_fn`].
#[derive(Debug, Clone)]
pub struct FnHandler<F>(F);

/// Wraps an async closure as a [`Handler`].
///
/// ```
/// use ecs_worker::handler::{from_fn, Message};
///
/// let handler = from_fn(|message: Message| async move {
///     let job: serde_json::Value = serde_json::from_str(&message.body)?;
///     println!("{job}");
///     Ok::<(), serde_json::Error>(())
/// });
/// # let _ = handler;
/// ```
pub fn from_fn<F, Fut, E>(f: F) -> FnHandler<F>
where
    F: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<BoxError>,
{
    FnHandler(f)
}

impl<F, Fut, E> Handler for FnHandler<F>
where
    F: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<BoxError>,
{
    fn handle(&self, message: Message) -> impl Future<Output = Result<(), BoxError>> + Send {
        let fut = (self.0)(message);
        async move { fut.await.map_err(Into::into) }
    }
}

impl<H: Handler> Handler for std::sync::Arc<H> {
    fn handle(&self, message: Message) -> impl Future<Output = Result<(), BoxError>> + Send {
        (**self).handle(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body: &str) -> Message {
        Message {
            id: "m-1".into(),
            body: body.into(),
            receive_count: 1,
            attributes: BTreeMap::new(),
            first_received_at: None,
        }
    }

    #[tokio::test]
    async fn closure_results_pass_through() {
        let h = from_fn(|m: Message| async move {
            if m.body == "ok" {
                Ok(())
            } else {
                Err(std::io::Error::other(format!("bad body {}", m.body)))
            }
        });
        assert!(h.handle(message("ok")).await.is_ok());
        let err = h.handle(message("no")).await.unwrap_err();
        assert_eq!(err.to_string(), "bad body no");
    }

    #[tokio::test]
    async fn anyhow_errors_are_accepted() {
        let h = from_fn(|_m: Message| async move { Err(anyhow::anyhow!("nope")) });
        assert_eq!(
            h.handle(message("x")).await.unwrap_err().to_string(),
            "nope"
        );
    }
}
