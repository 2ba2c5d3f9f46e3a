//! The namespaced install (`deploy/overlays/namespaced/`): no ClusterRole, a Role in the one
//! watched namespace, `WATCH_NAMESPACE` and `CLUSTER_ID` on the Deployment. The overlay's RBAC
//! is applied to the real API server (in namespaces of this test's own, so it runs beside the
//! cluster-wide install's test), and the operator, in-process with a client that authenticates
//! as the overlay's ServiceAccount, provisions a worker in the watched namespace against moto,
//! while a worker in another namespace is refused to it (403) and never touched.

use crate::common;
use crate::deploy::service_account_client_of;
use ecs_worker_operator::api::EcsSelfTerminatingWorker;
use ecs_worker_operator::aws::ClientFactory;
use ecs_worker_operator::controller::{self, Config, Context};
use ecs_worker_operator::metrics::Metrics;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_yaml::Value;
use std::sync::Arc;
use std::time::Duration;
use testbed::{ControlPlane, Moto, TestNamespace, hack_path, run_in_repo};

const OVERLAY: &str = "deploy/overlays/namespaced";
const WATCHED: &str = "ecs-workers";
const OPERATOR_NAMESPACE: &str = "ecs-worker-operator";

fn render() -> anyhow::Result<Vec<Value>> {
    let kubectl = hack_path("k8s-tools.sh", &[])?.join("kubectl");
    let yaml = run_in_repo(std::process::Command::new(kubectl).args(["kustomize", OVERLAY]))?;
    Ok(serde_yaml::Deserializer::from_str(&yaml)
        .map(serde::Deserialize::deserialize)
        .collect::<Result<_, _>>()?)
}

fn env_of(deployment: &Value, name: &str) -> Option<String> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_sequence()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str().map(str::to_string))
}

#[test]
fn the_overlay_holds_no_cluster_role_and_watches_one_namespace() -> anyhow::Result<()> {
    let docs = render()?;
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert!(
        !kinds.contains(&"ClusterRole") && !kinds.contains(&"ClusterRoleBinding"),
        "{kinds:?}"
    );
    let role = docs
        .iter()
        .find(|d| d["kind"] == "Role" && d["metadata"]["namespace"] == WATCHED)
        .ok_or_else(|| anyhow::anyhow!("no Role in {WATCHED}"))?;
    assert_eq!(role["metadata"]["name"], "ecs-worker-operator");
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .ok_or_else(|| anyhow::anyhow!("no Deployment"))?;
    assert_eq!(
        env_of(deployment, "WATCH_NAMESPACE").as_deref(),
        Some(WATCHED)
    );
    assert!(env_of(deployment, "CLUSTER_ID").is_some_and(|c| !c.is_empty()));
    Ok(())
}

/// The overlay's ServiceAccount, Role and RoleBinding, moved to this test's namespaces.
fn rbac_in(docs: &[Value], operator_ns: &str, watched_ns: &str) -> Vec<Value> {
    let moved = |ns: &Value| {
        if ns == OPERATOR_NAMESPACE {
            Value::from(operator_ns)
        } else if ns == WATCHED {
            Value::from(watched_ns)
        } else {
            ns.clone()
        }
    };
    docs.iter()
        .filter(|d| {
            d["kind"] == "ServiceAccount"
                || ((d["kind"] == "Role" || d["kind"] == "RoleBinding")
                    && d["metadata"]["namespace"] == WATCHED)
        })
        .map(|d| {
            let mut d = d.clone();
            d["metadata"]["namespace"] = moved(&d["metadata"]["namespace"]);
            if let Some(Value::Sequence(subjects)) = d.get_mut("subjects") {
                for s in subjects {
                    s["namespace"] = moved(&s["namespace"]);
                }
            }
            d
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_namespaced_install_provisions_its_namespace_and_is_refused_another()
-> anyhow::Result<()> {
    let cp = ControlPlane::shared()?;
    let operator_ns = TestNamespace::new("nsop").await?;
    let watched = TestNamespace::new("nswatched").await?;
    let other = TestNamespace::new("nsother").await?;
    let admin = watched.client.clone();
    common::install_crd(&admin).await?;

    let dir = tempfile::tempdir()?;
    let manifest = dir.path().join("rbac.yaml");
    let objects = rbac_in(&render()?, &operator_ns.name, &watched.name);
    assert_eq!(
        objects.len(),
        3,
        "ServiceAccount, Role and RoleBinding: {objects:?}"
    );
    std::fs::write(
        &manifest,
        objects
            .iter()
            .map(serde_yaml::to_string)
            .collect::<Result<Vec<_>, _>>()?
            .join("---\n"),
    )?;
    let applied = cp
        .kubectl()
        .args(["apply", "--server-side", "--validate=strict", "-f"])
        .arg(&manifest)
        .output()?;
    anyhow::ensure!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let operator_client = service_account_client_of(
        cp,
        &admin,
        dir.path(),
        &operator_ns.name,
        "ecs-worker-operator",
    )
    .await?;

    // Another namespace's workers are the Role's blind spot.
    let refused = Api::<EcsSelfTerminatingWorker>::namespaced(operator_client.clone(), &other.name)
        .list(&ListParams::default())
        .await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(e)) if e.code == 403),
        "{refused:?}"
    );
    // Readiness waits for the same list: ready for the watched namespace, not for another.
    controller::list_once(&operator_client, Some(&watched.name)).await?;
    assert!(
        controller::list_once(&operator_client, Some(&other.name))
            .await
            .is_err()
    );

    let moto = Moto::start().await?;
    let metrics = Arc::new(Metrics::default());
    let factory = ClientFactory::new(Some(moto.endpoint().to_string()), None, metrics.clone());
    let config = Config {
        namespace: Some(watched.name.clone()),
        cluster_id: "my-cluster".into(),
        drift_interval: Duration::from_secs(300),
        instance: Some("namespaced-test".into()),
        ..Config::default()
    };
    let ctx = Arc::new(Context::new(operator_client, factory, metrics, config));
    let stop = tokio_util::sync::CancellationToken::new();
    let operator = tokio::spawn(controller::run(ctx, stop.clone()));

    let secret: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "aws-keys"},
        "stringData": {"AWS_ACCESS_KEY_ID": "namespaced-test", "AWS_SECRET_ACCESS_KEY": "namespaced-test"}
    }))?;
    let worker: EcsSelfTerminatingWorker = serde_yaml::from_str(&common::worker_yaml(
        "team-worker",
        "credentials:\n  secretRef:\n    name: aws-keys",
    ))?;
    for ns in [&watched.name, &other.name] {
        Api::<Secret>::namespaced(admin.clone(), ns)
            .create(&PostParams::default(), &secret)
            .await?;
        Api::<EcsSelfTerminatingWorker>::namespaced(admin.clone(), ns)
            .patch(
                "team-worker",
                &PatchParams::apply("tests").force(),
                &Patch::Apply(&worker),
            )
            .await?;
    }

    let mine = Api::<EcsSelfTerminatingWorker>::namespaced(admin.clone(), &watched.name);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let w = mine.get("team-worker").await?;
        if w.condition("Ready").is_some_and(|c| c.status == "True") {
            break;
        }
        anyhow::ensure!(!operator.is_finished(), "the operator stopped");
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "not Ready in the watched namespace: {:?}",
            w.status
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Its queue ConfigMap, written through the Role.
    Api::<ConfigMap>::namespaced(admin.clone(), &watched.name)
        .get("team-worker-queue")
        .await?;
    // The other namespace's worker: no finalizer, no status, nothing in AWS under its names.
    let theirs = Api::<EcsSelfTerminatingWorker>::namespaced(admin.clone(), &other.name)
        .get("team-worker")
        .await?;
    assert!(theirs.metadata.finalizers.unwrap_or_default().is_empty());
    assert!(theirs.status.is_none(), "{:?}", theirs.status);
    let queues = aws_sdk_sqs::Client::new(&moto.sdk_config().await)
        .list_queues()
        .send()
        .await?;
    let names: Vec<String> = queues.queue_urls().to_vec();
    assert!(
        names.iter().all(|u| !u.contains(&other.name)),
        "a queue for the other namespace: {names:?}"
    );
    assert!(
        names.iter().any(|u| u.contains(&watched.name)),
        "no queue for the watched namespace: {names:?}"
    );

    stop.cancel();
    let _ = operator.await;
    Ok(())
}
