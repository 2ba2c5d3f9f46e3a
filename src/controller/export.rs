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

/// Name of a worker's queue ConfigMap.
pub fn config_map_name(worker: &str) -> String {
    format!("{worker}-queue")
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
    let cm = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/managed-by": MANAGER,
                "ecsworker.dev/worker": worker.name_any(),
            },
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
