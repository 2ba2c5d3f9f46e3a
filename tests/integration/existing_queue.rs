//! Bring your own queue (`spec.queue.existingQueueArn`), against the real API server and moto
//! with IAM enforced: the operator reads the user's queue (URL, redrive policy) and never
//! changes it, scopes the task role to it, and leaves it and its dead-letter queue with their
//! messages when the worker is deleted; a queue that does not exist stalls the worker with
//! `QueueNotFound` before any AWS write.

use crate::common::{Harness, worker_yaml};
use aws_sdk_sqs::types::QueueAttributeName;
use ecs_worker_operator::api::conditions::{self, reason};
use ecs_worker_operator::plan::desired::Names;
use kube::api::DeleteParams;
use std::collections::HashMap;
use std::time::Duration;

/// Every attribute of a queue, as the emulator holds it.
async fn attributes(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
) -> anyhow::Result<HashMap<QueueAttributeName, String>> {
    Ok(sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await?
        .attributes()
        .cloned()
        .unwrap_or_default())
}

/// The SQS calls of the operator that change something.
fn sqs_writes(h: &Harness) -> Vec<String> {
    h.aws_call_counts()
        .into_keys()
        .filter(|l| l.service == "sqs" && ecs_worker_operator::metrics::is_write(&l.operation))
        .map(|l| l.operation)
        .collect()
}

#[tokio::test]
async fn an_existing_queue_is_used_never_changed_and_left_after_deletion() -> anyhow::Result<()> {
    let mut h = Harness::strict("byoq").await?;
    let sqs = aws_sdk_sqs::Client::new(&h.sdk);
    h.start_controller(Duration::ZERO);

    // A queue that does not exist: Stalled, naming the ARN, and nothing written.
    let missing = "arn:aws:sqs:us-east-1:123456789012:no-such-queue";
    h.apply_yaml(&worker_yaml(
        "lost",
        &format!("queue:\n  existingQueueArn: {missing}"),
    ))
    .await?;
    let w = h
        .wait_for(
            "lost",
            Duration::from_secs(60),
            "Stalled/QueueNotFound",
            |w| {
                w.condition(conditions::STALLED)
                    .is_some_and(|c| c.status == "True" && c.reason == reason::QUEUE_NOT_FOUND)
            },
        )
        .await?;
    let message = w
        .condition(conditions::READY)
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(message.contains(missing), "names the queue: {message}");
    let (reads, writes) = h.aws_reads_writes();
    assert!(reads > 0, "the queue was looked up");
    assert_eq!(writes, 0, "no AWS write: {:?}", h.aws_call_counts());

    // The user's queue, with a redrive policy to the user's dead-letter queue, holding work.
    let dlq_url = sqs
        .create_queue()
        .queue_name("orders-dlq")
        .send()
        .await?
        .queue_url()
        .expect("dlq url")
        .to_string();
    let dlq_arn = attributes(&sqs, &dlq_url).await?[&QueueAttributeName::QueueArn].clone();
    let redrive =
        serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "7"}).to_string();
    let url = sqs
        .create_queue()
        .queue_name("orders")
        .attributes(QueueAttributeName::RedrivePolicy, redrive)
        .attributes(QueueAttributeName::VisibilityTimeout, "120")
        .attributes(QueueAttributeName::MessageRetentionPeriod, "3600")
        .send()
        .await?
        .queue_url()
        .expect("url")
        .to_string();
    for i in 0..3 {
        sqs.send_message()
            .queue_url(&url)
            .message_body(format!("job {i}"))
            .send()
            .await?;
    }
    sqs.send_message()
        .queue_url(&dlq_url)
        .message_body("poison")
        .send()
        .await?;
    let before = attributes(&sqs, &url).await?;
    let dlq_before = attributes(&sqs, &dlq_url).await?;
    let arn = before[&QueueAttributeName::QueueArn].clone();

    let name = "byo";
    h.apply_yaml(&worker_yaml(
        name,
        &format!("queue:\n  existingQueueArn: {arn}"),
    ))
    .await?;
    let w = h.wait_ready(name).await?;
    let r = w.status.as_ref().expect("status").resources.clone();
    assert_eq!(r.queue_url.as_deref(), Some(url.as_str()));
    assert_eq!(r.queue_arn.as_deref(), Some(arn.as_str()));
    assert_eq!(r.dead_letter_queue_arn.as_deref(), Some(dlq_arn.as_str()));
    assert_eq!(r.dead_letter_queue_url.as_deref(), Some(dlq_url.as_str()));

    // The worker's task role may drain exactly that queue.
    let names = Names::new(&h.ns, name);
    let iam = aws_sdk_iam::Client::new(&h.sdk);
    let policy = iam
        .get_role_policy()
        .role_name(&names.task_role)
        .policy_name("worker")
        .send()
        .await?;
    let policy = percent_encoding::percent_decode_str(policy.policy_document())
        .decode_utf8_lossy()
        .to_string();
    let policy: serde_json::Value = serde_json::from_str(&policy)?;
    let drain = policy["Statement"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["Sid"] == "DrainQueue")
        .expect("a DrainQueue statement");
    assert_eq!(drain["Resource"], arn.as_str(), "{policy}");

    // No queue of the operator's own, and the user's queues untouched.
    let queues = sqs.list_queues().send().await?;
    let mut listed: Vec<&str> = queues.queue_urls().iter().map(String::as_str).collect();
    listed.sort();
    let mut expected = vec![url.as_str(), dlq_url.as_str()];
    expected.sort();
    assert_eq!(listed, expected);
    assert_eq!(sqs_writes(&h), Vec::<String>::new());
    h.poke(name).await?;
    h.wait_ready(name).await?;
    assert_eq!(attributes(&sqs, &url).await?, before);
    assert_eq!(attributes(&sqs, &dlq_url).await?, dlq_before);

    // Deleted: both queues stay, with their messages.
    for n in [name, "lost"] {
        h.api.delete(n, &DeleteParams::default()).await?;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while h.api.get_opt(name).await?.is_some() || h.api.get_opt("lost").await?.is_some() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "objects not finalized"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(attributes(&sqs, &url).await?, before);
    assert_eq!(attributes(&sqs, &dlq_url).await?, dlq_before);
    assert_eq!(
        before[&QueueAttributeName::ApproximateNumberOfMessages],
        "3"
    );
    assert_eq!(
        dlq_before[&QueueAttributeName::ApproximateNumberOfMessages],
        "1"
    );
    assert_eq!(sqs_writes(&h), Vec::<String>::new());
    Ok(())
}
