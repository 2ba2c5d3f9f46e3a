//! The SQS queue as the worker uses it: long-poll receive, batch delete, visibility changes and
//! the depth counters. The only module that talks to SQS; everything above it sees [`Received`]
//! messages and plain results.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
    MessageSystemAttributeName, QueueAttributeName,
};

use crate::handler::Message;

/// Most messages one SQS batch call accepts.
pub const MAX_BATCH: usize = 10;

/// An SQS call that failed as a whole.
#[derive(Debug, thiserror::Error)]
#[error("SQS {operation} failed: {message}")]
pub struct QueueError {
    pub operation: &'static str,
    pub message: String,
}

impl QueueError {
    fn new(operation: &'static str, error: impl std::error::Error) -> Self {
        QueueError {
            operation,
            message: DisplayErrorContext(error).to_string(),
        }
    }
}

/// A received message and the receipt handle that settles it.
#[derive(Debug, Clone)]
pub struct Received {
    pub message: Message,
    pub receipt_handle: String,
}

/// One entry of a batch call that SQS refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryFailure {
    /// Index of the entry in the slice passed to the call.
    pub index: usize,
    pub code: String,
    pub message: String,
}

/// The queue's message counters (approximate, as SQS reports them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Depth {
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
}

impl Depth {
    /// Nothing to receive now or later: no visible, in-flight or delayed message.
    pub fn is_empty(&self) -> bool {
        self.visible == 0 && self.in_flight == 0 && self.delayed == 0
    }
}

/// The queue settings the worker logs at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redrive {
    pub dead_letter_target_arn: String,
    pub max_receive_count: u32,
}

/// A handle on one queue.
#[derive(Debug, Clone)]
pub struct Queue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl Queue {
    pub fn new(client: aws_sdk_sqs::Client, url: impl Into<String>) -> Self {
        Queue {
            client,
            url: url.into(),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Long-polls for up to `max` (at most 10) messages, each held invisible for `visibility`.
    pub async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Received>, QueueError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, MAX_BATCH) as i32)
            .wait_time_seconds(secs_i32(wait))
            .visibility_timeout(secs_i32(visibility))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(
                MessageSystemAttributeName::ApproximateFirstReceiveTimestamp,
            )
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|e| QueueError::new("ReceiveMessage", e))?;
        let mut received = Vec::new();
        for m in out.messages.unwrap_or_default() {
            let (Some(id), Some(receipt_handle)) = (m.message_id, m.receipt_handle) else {
                tracing::warn!("SQS returned a message without id or receipt handle; skipped");
                continue;
            };
            let receive_count = m
                .attributes
                .as_ref()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            // Epoch milliseconds.
            let first_received_at = m
                .attributes
                .as_ref()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateFirstReceiveTimestamp))
                .and_then(|v| v.parse::<u64>().ok())
                .map(|ms| std::time::UNIX_EPOCH + Duration::from_millis(ms));
            let attributes = m
                .message_attributes
                .unwrap_or_default()
                .into_iter()
                .map(|(name, value)| {
                    let text = match (value.string_value, value.binary_value) {
                        (Some(s), _) => s,
                        (None, Some(b)) => aws_smithy_types::base64::encode(b.as_ref()),
                        (None, None) => String::new(),
                    };
                    (name, text)
                })
                .collect::<BTreeMap<_, _>>();
            received.push(Received {
                message: Message {
                    id,
                    body: m.body.unwrap_or_default(),
                    receive_count,
                    attributes,
                    first_received_at,
                },
                receipt_handle,
            });
        }
        Ok(received)
    }

    /// Deletes up to 10 messages by receipt handle; returns the entries SQS refused.
    pub async fn delete_batch(
        &self,
        receipt_handles: &[&str],
    ) -> Result<Vec<EntryFailure>, QueueError> {
        let entries = receipt_handles
            .iter()
            .enumerate()
            .map(|(i, handle)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(*handle)
                    .build()
                    .map_err(|e| QueueError::new("DeleteMessageBatch", e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out = self
            .client
            .delete_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| QueueError::new("DeleteMessageBatch", e))?;
        Ok(failures(out.failed()))
    }

    /// Sets the visibility timeout of up to 10 messages; returns the entries SQS refused.
    pub async fn change_visibility_batch(
        &self,
        receipt_handles: &[&str],
        visibility: Duration,
    ) -> Result<Vec<EntryFailure>, QueueError> {
        let entries = receipt_handles
            .iter()
            .enumerate()
            .map(|(i, handle)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(*handle)
                    .visibility_timeout(secs_i32(visibility))
                    .build()
                    .map_err(|e| QueueError::new("ChangeMessageVisibilityBatch", e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out = self
            .client
            .change_message_visibility_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| QueueError::new("ChangeMessageVisibilityBatch", e))?;
        Ok(failures(out.failed()))
    }

    /// Sets the visibility timeout of one message.
    pub async fn change_visibility(
        &self,
        receipt_handle: &str,
        visibility: Duration,
    ) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(secs_i32(visibility))
            .send()
            .await
            .map_err(|e| QueueError::new("ChangeMessageVisibility", e))?;
        Ok(())
    }

    /// Reads the visible, in-flight and delayed counters.
    pub async fn depth(&self) -> Result<Depth, QueueError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| QueueError::new("GetQueueAttributes", e))?;
        let attrs = out.attributes.unwrap_or_default();
        let count = |name: QueueAttributeName| -> Result<u64, QueueError> {
            attrs
                .get(&name)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| QueueError {
                    operation: "GetQueueAttributes",
                    message: format!("no numeric {} in the answer", name.as_str()),
                })
        };
        Ok(Depth {
            visible: count(QueueAttributeName::ApproximateNumberOfMessages)?,
            in_flight: count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)?,
            // Older emulators omit the delayed counter; no delayed message is the safe reading
            // only because in-flight and visible are still checked.
            delayed: attrs
                .get(&QueueAttributeName::ApproximateNumberOfMessagesDelayed)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        })
    }

    /// Reads the queue's redrive policy, if it has one. Also proves the queue exists and the
    /// worker may read it.
    pub async fn redrive(&self) -> Result<Option<Redrive>, QueueError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
            .await
            .map_err(|e| QueueError::new("GetQueueAttributes", e))?;
        Ok(out
            .attributes
            .as_ref()
            .and_then(|a| a.get(&QueueAttributeName::RedrivePolicy))
            .and_then(|policy| parse_redrive(policy)))
    }
}

fn failures(failed: &[aws_sdk_sqs::types::BatchResultErrorEntry]) -> Vec<EntryFailure> {
    failed
        .iter()
        .map(|f| EntryFailure {
            index: f.id().parse().unwrap_or(usize::MAX),
            code: f.code().to_owned(),
            message: f.message().unwrap_or_default().to_owned(),
        })
        .collect()
}

fn secs_i32(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

/// Parses an SQS RedrivePolicy attribute (`maxReceiveCount` may be a number or a string).
pub fn parse_redrive(policy: &str) -> Option<Redrive> {
    let v: serde_json::Value = serde_json::from_str(policy).ok()?;
    let arn = v.get("deadLetterTargetArn")?.as_str()?.to_owned();
    let max = v.get("maxReceiveCount")?;
    let max = max
        .as_u64()
        .or_else(|| max.as_str().and_then(|s| s.parse().ok()))?;
    Some(Redrive {
        dead_letter_target_arn: arn,
        max_receive_count: u32::try_from(max).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redrive_policy_in_both_spellings() {
        let want = Some(Redrive {
            dead_letter_target_arn: "arn:aws:sqs:us-east-1:123456789012:dlq".into(),
            max_receive_count: 5,
        });
        assert_eq!(
            parse_redrive(
                r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:123456789012:dlq","maxReceiveCount":5}"#
            ),
            want
        );
        assert_eq!(
            parse_redrive(
                r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:123456789012:dlq","maxReceiveCount":"5"}"#
            ),
            want
        );
        assert_eq!(parse_redrive("not json"), None);
        assert_eq!(parse_redrive(r#"{"maxReceiveCount":5}"#), None);
    }

    #[test]
    fn empty_means_all_three_counters_zero() {
        let zero = Depth {
            visible: 0,
            in_flight: 0,
            delayed: 0,
        };
        assert!(zero.is_empty());
        assert!(!Depth { delayed: 1, ..zero }.is_empty());
        assert!(
            !Depth {
                in_flight: 1,
                ..zero
            }
            .is_empty()
        );
        assert!(!Depth { visible: 1, ..zero }.is_empty());
    }
}
