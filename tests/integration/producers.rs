//! The queue seen from its producers, against the real API server and moto with IAM enforced:
//! `spec.queue.export` keeps the `<name>-queue` ConfigMap (owned by the worker, following the
//! queue, restored when deleted, gone when export is off), and `spec.queue.allowSendFrom` is
//! rendered into the queue's access policy, repaired after an out-of-band change and removed
//! with the list.

use crate::common::{Harness, worker_yaml};
use aws_sdk_sqs::types::QueueAttributeName;
use ecs_worker_operator::api::EcsSelfTerminatingWorker;
use ecs_worker_operator::plan::desired;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;
use std::time::Duration;

/// Waits until the ConfigMap `name` satisfies `pred` (`None` = absent).
async fn wait_config_map(
    api: &Api<ConfigMap>,
    name: &str,
    what: &str,
    pred: impl Fn(Option<&ConfigMap>) -> bool,
) -> anyhow::Result<Option<ConfigMap>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let cm = api.get_opt(name).await?;
        if pred(cm.as_ref()) {
            return Ok(cm);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; last seen: {:?}",
            cm.map(|c| c.data)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn data(cm: Option<&ConfigMap>) -> BTreeMap<String, String> {
    cm.and_then(|c| c.data.clone()).unwrap_or_default()
}

#[tokio::test]
async fn the_queue_config_map_is_owned_follows_the_queue_and_goes_when_export_is_off()
-> anyhow::Result<()> {
    let mut h = Harness::strict("export").await?;
    h.start_controller(Duration::ZERO);
    let name = "exporter";
    let no_dlq = "queue:\n  deadLetter:\n    enabled: false";
    h.apply_yaml(&worker_yaml(name, no_dlq)).await?;
    let w = h.wait_ready(name).await?;
    let r = w.status.as_ref().expect("status").resources.clone();
    let cms: Api<ConfigMap> = Api::namespaced(h.client.clone(), &h.ns);
    let cm_name = format!("{name}-queue");

    // Created with the queue's keys, owned (controller) by the worker so it is
    // garbage-collected with it.
    let cm = wait_config_map(&cms, &cm_name, "the queue ConfigMap", |c| c.is_some())
        .await?
        .expect("present");
    let queue_only = BTreeMap::from([
        ("QUEUE_URL".to_string(), r.queue_url.clone().expect("url")),
        ("QUEUE_ARN".to_string(), r.queue_arn.clone().expect("arn")),
        ("AWS_REGION".to_string(), "us-east-1".to_string()),
    ]);
    assert_eq!(data(Some(&cm)), queue_only);
    let owners = cm.owner_references();
    assert_eq!(owners.len(), 1, "{owners:?}");
    assert_eq!(Some(&owners[0].uid), w.meta().uid.as_ref());
    assert_eq!(owners[0].controller, Some(true));
    assert_eq!(owners[0].kind, "EcsSelfTerminatingWorker");
    assert_eq!(
        owners[0].api_version,
        EcsSelfTerminatingWorker::api_version(&())
    );
    assert!(
        cm.managed_fields()
            .iter()
            .any(|f| f.manager.as_deref() == Some("ecs-worker-operator")
                && f.operation.as_deref() == Some("Apply")),
        "{:?}",
        cm.managed_fields()
    );

    // The queue changes (a dead-letter queue is added): its keys join the rest.
    h.apply_yaml(&worker_yaml(name, "")).await?;
    let cm = match wait_config_map(&cms, &cm_name, "the DLQ keys", |c| {
        data(c).contains_key("DLQ_URL")
    })
    .await
    {
        Ok(cm) => cm,
        Err(e) => {
            let w = h.api.get(name).await?;
            anyhow::bail!("{e}; worker: {:?} {:?}", w.metadata.generation, w.status)
        }
    };
    let w = h
        .wait_for(name, Duration::from_secs(30), "the DLQ in status", |w| {
            w.status
                .as_ref()
                .is_some_and(|s| s.resources.dead_letter_queue_arn.is_some())
        })
        .await?;
    let r = w.status.as_ref().expect("status").resources.clone();
    let mut expected = queue_only.clone();
    expected.insert(
        "DLQ_URL".into(),
        r.dead_letter_queue_url.clone().expect("dlq url"),
    );
    expected.insert(
        "DLQ_ARN".into(),
        r.dead_letter_queue_arn.clone().expect("dlq arn"),
    );
    assert_eq!(data(cm.as_ref()), expected);

    // Edited out of band: the drift check writes the queue's address back.
    let edit = serde_json::json!({"data": {"QUEUE_URL": "https://elsewhere"}});
    cms.patch(&cm_name, &PatchParams::default(), &Patch::Merge(&edit))
        .await?;
    h.poke(name).await?;
    wait_config_map(&cms, &cm_name, "the ConfigMap to be restored", |c| {
        data(c) == expected
    })
    .await?;

    // Deleted out of band: the drift check re-creates it.
    cms.delete(&cm_name, &DeleteParams::default()).await?;
    wait_config_map(&cms, &cm_name, "the ConfigMap to be deleted", |c| {
        c.is_none_or(|c| c.metadata.deletion_timestamp.is_some())
    })
    .await?;
    h.poke(name).await?;
    wait_config_map(&cms, &cm_name, "the ConfigMap to come back", |c| {
        data(c) == expected
    })
    .await?;

    // The dead-letter queue turned off again: its keys go, the queue's stay.
    h.apply_yaml(&worker_yaml(name, no_dlq)).await?;
    let cm = wait_config_map(&cms, &cm_name, "the DLQ keys to go", |c| {
        !data(c).contains_key("DLQ_URL")
    })
    .await?;
    assert_eq!(data(cm.as_ref()), queue_only);

    // Export turned off: the ConfigMap is deleted.
    h.apply_yaml(&worker_yaml(
        name,
        "queue:\n  deadLetter:\n    enabled: false\n  export: false",
    ))
    .await?;
    wait_config_map(&cms, &cm_name, "the ConfigMap to be gone", |c| c.is_none()).await?;
    Ok(())
}

#[tokio::test]
async fn a_config_map_the_worker_does_not_own_is_left_alone() -> anyhow::Result<()> {
    let mut h = Harness::strict("export-conflict").await?;
    let cms: Api<ConfigMap> = Api::namespaced(h.client.clone(), &h.ns);
    let theirs: ConfigMap = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "taken-queue"},
        "data": {"QUEUE_URL": "someone else's"}
    }))?;
    cms.create(&Default::default(), &theirs).await?;
    h.start_controller(Duration::ZERO);
    h.apply_yaml(&worker_yaml("taken", "")).await?;
    h.wait_ready("taken").await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let events = h.events("taken").await?;
        if events.iter().any(|(t, reason, note)| {
            t == "Warning" && reason == "QueueExportConflict" && note.contains("taken-queue")
        }) {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no QueueExportConflict Event: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cm = cms.get("taken-queue").await?;
    assert_eq!(
        data(Some(&cm)),
        BTreeMap::from([("QUEUE_URL".to_string(), "someone else's".to_string())])
    );
    assert!(cm.owner_references().is_empty());
    Ok(())
}

/// The queue's `Policy` attribute as moto holds it.
async fn queue_policy(sqs: &aws_sdk_sqs::Client, url: &str) -> anyhow::Result<Option<String>> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::Policy)
        .send()
        .await?;
    Ok(out
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::Policy))
        .filter(|p| !p.is_empty())
        .cloned())
}

#[tokio::test]
async fn producers_are_rendered_into_the_queue_policy_repaired_and_removed() -> anyhow::Result<()> {
    let mut h = Harness::strict("producers").await?;
    h.start_controller(Duration::ZERO);
    let name = "fed";
    let producers = "queue:\n  allowSendFrom:\n  - snsTopicArn: arn:aws:sns:us-east-1:444455556666:orders\n  - s3BucketArn: arn:aws:s3:::uploads-bucket\n    sourceAccount: \"444455556666\"\n  - eventBridgeRuleArn: arn:aws:events:us-east-1:123456789012:rule/nightly\n  - principalArn: arn:aws:iam::444455556666:role/producer";
    h.apply_yaml(&worker_yaml(name, producers)).await?;
    let w = h.wait_ready(name).await?;
    let r = w.status.as_ref().expect("status").resources.clone();
    let (url, arn) = (r.queue_url.expect("url"), r.queue_arn.expect("arn"));
    let sqs = aws_sdk_sqs::Client::new(&h.sdk);

    // Read back from the emulator: one statement per producer, send-only for the services,
    // each limited to its source.
    let policy = queue_policy(&sqs, &url).await?.expect("a queue policy");
    let v: serde_json::Value = serde_json::from_str(&policy)?;
    let statements = v["Statement"].as_array().expect("statements");
    assert_eq!(statements.len(), 4, "{policy}");
    let by_principal = |key: &str, value: &str| {
        statements
            .iter()
            .find(|s| s["Principal"][key] == value)
            .unwrap_or_else(|| panic!("no statement for {value}: {policy}"))
            .clone()
    };
    let sns = by_principal("Service", "sns.amazonaws.com");
    assert_eq!(sns["Action"], "sqs:SendMessage");
    assert_eq!(sns["Resource"], arn.as_str());
    assert_eq!(
        sns["Condition"]["ArnEquals"]["aws:SourceArn"],
        "arn:aws:sns:us-east-1:444455556666:orders"
    );
    let s3 = by_principal("Service", "s3.amazonaws.com");
    assert_eq!(s3["Action"], "sqs:SendMessage");
    assert_eq!(
        s3["Condition"]["ArnLike"]["aws:SourceArn"],
        "arn:aws:s3:::uploads-bucket"
    );
    assert_eq!(
        s3["Condition"]["StringEquals"]["aws:SourceAccount"],
        "444455556666"
    );
    let events = by_principal("Service", "events.amazonaws.com");
    assert_eq!(events["Action"], "sqs:SendMessage");
    assert_eq!(
        events["Condition"]["ArnEquals"]["aws:SourceArn"],
        "arn:aws:events:us-east-1:123456789012:rule/nightly"
    );
    let role = by_principal("AWS", "arn:aws:iam::444455556666:role/producer");
    assert_eq!(role["Resource"], arn.as_str());
    assert!(
        role["Action"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == "sqs:SendMessage"))
    );
    let desired_policy = desired::queue_policy(&w.spec, &arn);
    assert!(desired::same_queue_policy(
        Some(&policy),
        desired_policy.as_deref()
    ));

    // Changed out of band (anyone may send): the drift check puts the rendered policy back.
    let open = serde_json::json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": "*", "Action": "sqs:SendMessage", "Resource": arn
    }]})
    .to_string();
    sqs.set_queue_attributes()
        .queue_url(&url)
        .attributes(QueueAttributeName::Policy, open)
        .send()
        .await?;
    h.poke(name).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = queue_policy(&sqs, &url).await?;
        if desired::same_queue_policy(now.as_deref(), desired_policy.as_deref()) {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "queue policy not repaired: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // The list removed: so is the policy.
    h.apply_yaml(&worker_yaml(name, "")).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = queue_policy(&sqs, &url).await?;
        if now.is_none() {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "queue policy not removed: {now:?}; events: {:?}; status: {:?}",
            h.events(name).await?,
            h.api.get(name).await?.status
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(())
}
