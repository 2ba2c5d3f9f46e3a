//! `spec.queue.export`: the ConfigMap `<name>-queue` with the queue's address, for producers
//! in the cluster to read with `envFrom`.
//!
//! Kept after every provisioning pass (spec change or drift check): read first, written with
//! server-side apply (field manager [`MANAGER`]) only when its data differ, deleted when
//! export is turned off. It is owned by the worker (an ownerReference with `controller:
//! true`), so Kubernetes garbage-collects it with the worker. A ConfigMap of that name the
//! worker does not control is never touched.

use super::MANAGER;
use crate::api::{AwsResources, EcsSelfTerminatingWorker};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;

/// Event reason when a ConfigMap of the export's name belongs to someone else.
pub const EXPORT_CONFLICT: &str = "QueueExportConflict";

/// Longest object name Kubernetes accepts (a DNS subdomain).
const MAX_NAME: usize = 253;
/// Longest label value Kubernetes accepts.
const MAX_LABEL_VALUE: usize = 63;

/// Name of a worker's queue ConfigMap: `<worker>-queue`, or, for a worker name too long for
/// that, its start and a digest of the whole name (`<start>-<8 hex>-queue`).
pub fn config_map_name(worker: &str) -> String {
    let plain = format!("{worker}-queue");
    if plain.len() <= MAX_NAME {
        return plain;
    }
    let digest = crate::plan::desired::short_digest(worker);
    let room = MAX_NAME - "-queue".len() - digest.len() - 1;
    // A DNS subdomain's labels start and end with a letter or digit.
    let start = worker[..room].trim_end_matches(['-', '.']);
    format!("{start}-{digest}-queue")
}

/// The keys of the ConfigMap: the queue's and dead-letter queue's URL and ARN (the latter two
/// only with a dead-letter queue) and the region. `None` until the queue exists.
pub fn data(resources: &AwsResources, region: &str) -> Option<BTreeMap<String, String>> {
    let mut d = BTreeMap::from([
        ("QUEUE_URL".to_string(), resources.queue_url.clone()?),
        ("QUEUE_ARN".to_string(), resources.queue_arn.clone()?),
        ("AWS_REGION".to_string(), region.to_string()),
    ]);
    if let Some(url) = &resources.dead_letter_queue_url {
        d.insert("DLQ_URL".into(), url.clone());
    }
    if let Some(arn) = &resources.dead_letter_queue_arn {
        d.insert("DLQ_ARN".into(), arn.clone());
    }
    Some(d)
}

/// What [`sync`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Unchanged,
    Applied,
    Deleted,
    /// A ConfigMap of that name exists and is not controlled by this worker: left alone.
    Conflict(String),
}

fn controlled_by(cm: &ConfigMap, worker: &EcsSelfTerminatingWorker) -> bool {
    let uid = worker.uid();
    cm.owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == uid.as_ref())
}

/// Makes the ConfigMap match `spec.queue.export` and the recorded queue.
pub async fn sync(
    client: &kube::Client,
    worker: &EcsSelfTerminatingWorker,
    namespace: &str,
    resources: &AwsResources,
) -> Result<Outcome, kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let name = config_map_name(&worker.name_any());
    let found = api.get_opt(&name).await?;
    if let Some(cm) = &found
        && !controlled_by(cm, worker)
    {
        return Ok(Outcome::Conflict(format!(
            "ConfigMap {namespace}/{name} exists and is not controlled by this worker: the queue's address is not exported"
        )));
    }
    let wanted = if worker.spec.queue.export {
        data(resources, &worker.spec.region)
    } else {
        None
    };
    let Some(wanted) = wanted else {
        if found.is_some() {
            api.delete(&name, &DeleteParams::default()).await?;
            return Ok(Outcome::Deleted);
        }
        return Ok(Outcome::Unchanged);
    };
    if found.as_ref().and_then(|cm| cm.data.as_ref()) == Some(&wanted) {
        return Ok(Outcome::Unchanged);
    }
    let owner = worker
        .controller_owner_ref(&())
        .expect("a worker read from the API server has a uid");
    let mut labels = BTreeMap::from([("app.kubernetes.io/managed-by", MANAGER.to_string())]);
    // A label value holds at most 63 characters; the ownerReference names the worker anyway.
    if worker.name_any().len() <= MAX_LABEL_VALUE {
        labels.insert("ecsworker.dev/worker", worker.name_any());
    }
    let cm = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [owner],
        },
        "data": wanted,
    });
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&cm),
    )
    .await?;
    Ok(Outcome::Applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_map_name_fits_kubernetes_for_every_worker_name() {
        assert_eq!(config_map_name("video-encoder"), "video-encoder-queue");
        let longest = "a".repeat(MAX_NAME - "-queue".len());
        assert_eq!(config_map_name(&longest), format!("{longest}-queue"));
        for name in [
            "a".repeat(MAX_NAME),
            format!("{}.{}", "b".repeat(230), "c".repeat(22)),
            format!("{}.{}", "d".repeat(237), "e".repeat(15)),
            format!("{}-{}", "f".repeat(237), "g".repeat(15)),
        ] {
            let cm = config_map_name(&name);
            assert!(cm.len() <= MAX_NAME, "{cm}");
            assert!(cm.ends_with("-queue"));
            assert!(!cm.contains(".-") && !cm.contains("-."), "{cm}");
        }
        // Two long names that share their start get two ConfigMaps.
        let a = format!("{}a", "x".repeat(MAX_NAME - 1));
        let b = format!("{}b", "x".repeat(MAX_NAME - 1));
        assert_ne!(config_map_name(&a), config_map_name(&b));
    }

    #[test]
    fn data_has_the_dead_letter_queue_only_when_there_is_one() {
        let mut r = AwsResources::default();
        assert_eq!(data(&r, "us-east-1"), None);
        r.queue_url = Some("https://sqs/q".into());
        r.queue_arn = Some("arn:aws:sqs:us-east-1:1:q".into());
        let d = data(&r, "us-east-1").unwrap();
        assert_eq!(
            d.keys().collect::<Vec<_>>(),
            ["AWS_REGION", "QUEUE_ARN", "QUEUE_URL"]
        );
        r.dead_letter_queue_url = Some("https://sqs/q-dlq".into());
        r.dead_letter_queue_arn = Some("arn:aws:sqs:us-east-1:1:q-dlq".into());
        let d = data(&r, "us-east-1").unwrap();
        assert_eq!(d["DLQ_URL"], "https://sqs/q-dlq");
        assert_eq!(d["DLQ_ARN"], "arn:aws:sqs:us-east-1:1:q-dlq");
        assert_eq!(d["AWS_REGION"], "us-east-1");
    }
}
