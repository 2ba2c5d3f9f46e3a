//! The install side: `deploy/` on the real API server, the operator running as the
//! ServiceAccount it creates, the IAM policy and the Deployment's command line (Argo CD: argocd.rs).
//!
//! - `deploy/` applies with strict server-side validation and shows no drift afterwards; its pod
//!   template passes Pod Security "restricted" (a server-side dry-run Pod: this control plane
//!   runs no pods).
//! - The operator, in-process with a client that authenticates as the ServiceAccount (a token
//!   from the TokenRequest API), wins the leader Lease, provisions a worker whose keys are in a
//!   Secret to Ready=True against moto, records Events and deletes everything again: the RBAC
//!   is sufficient. Verbs the ClusterRole does not grant are refused with 403.
//! - `deploy/aws/operator-policy.json` allows every AWS call in `src/aws/` and nothing else.

use crate::common::{self, strings};

use ecs_worker_operator::api::{EcsSelfTerminatingWorker, FINALIZER};
use ecs_worker_operator::aws::ClientFactory;
use ecs_worker_operator::controller::{self, Config, Context, MANAGER};
use ecs_worker_operator::metrics::Metrics;
use ecs_worker_operator::plan::desired::{MANAGED_BY, MANAGED_BY_TAG, Names};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, ResourceExt};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use testbed::{ControlPlane, Moto, TestNamespace};

const NAMESPACE: &str = "ecs-worker-operator";
const SERVICE_ACCOUNT: &str = "ecs-worker-operator";
const LEASE: &str = controller::leader::LEASE_NAME;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> anyhow::Result<String> {
    let full = repo().join(path);
    std::fs::read_to_string(&full).map_err(|e| anyhow::anyhow!("{}: {e}", full.display()))
}

/// `kubectl --kubeconfig <admin> ARGS` from the repository root; its stdout.
fn kubectl(cp: &ControlPlane, args: &[&str]) -> anyhow::Result<String> {
    let out = cp.kubectl().args(args).current_dir(repo()).output()?;
    anyhow::ensure!(
        out.status.success(),
        "kubectl {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// Whether a call was refused by authorization (403 Forbidden).
fn forbidden<T>(result: Result<T, kube::Error>) -> Option<String> {
    match result {
        Err(kube::Error::Api(e)) if e.code == 403 => Some(e.message),
        _ => None,
    }
}

/// A client authenticating as the install's ServiceAccount, with a token from the
/// TokenRequest API.
async fn service_account_client(
    cp: &ControlPlane,
    admin: &Client,
    dir: &Path,
) -> anyhow::Result<Client> {
    service_account_client_of(cp, admin, dir, NAMESPACE, SERVICE_ACCOUNT).await
}

/// A client authenticating as `namespace/account`, with a token from the TokenRequest API.
pub(crate) async fn service_account_client_of(
    cp: &ControlPlane,
    admin: &Client,
    dir: &Path,
    namespace: &str,
    account: &str,
) -> anyhow::Result<Client> {
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            bound_object_ref: None,
        },
        ..Default::default()
    };
    let issued = Api::<ServiceAccount>::namespaced(admin.clone(), namespace)
        .create_token_request(account, &PostParams::default(), &request)
        .await?;
    let token = issued
        .status
        .map(|s| s.token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| anyhow::anyhow!("TokenRequest returned no token"))?;
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: testbed\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: {account}\n  user:\n    token: {token}\ncontexts:\n- name: operator\n  context:\n    cluster: testbed\n    user: {account}\n    namespace: {namespace}\ncurrent-context: operator\n",
        server = cp.server_url(),
        ca = cp.ca_path().display(),
    );
    let path = dir.join(format!("{namespace}-{account}.kubeconfig"));
    std::fs::write(&path, kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&path)?,
        &KubeConfigOptions::default(),
    )
    .await?;
    Ok(Client::try_from(config)?)
}

async fn wait_crd_established(admin: &Client) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    let established = kube::runtime::wait::await_condition(
        crds,
        "ecsselfterminatingworkers.ecsworker.dev",
        kube::runtime::wait::conditions::is_crd_established(),
    );
    tokio::time::timeout(Duration::from_secs(30), established).await??;
    Ok(())
}

/// Checks the applied Deployment against what the install promises, and that its pod template
/// is admitted by Pod Security "restricted" (enforced on the namespace) in a dry run.
async fn check_deployment(admin: &Client) -> anyhow::Result<()> {
    let deployment = Api::<Deployment>::namespaced(admin.clone(), NAMESPACE)
        .get("ecs-worker-operator")
        .await?;
    let spec = deployment.spec.clone().unwrap_or_default();
    assert_eq!(spec.replicas, Some(2));
    let template = spec.template;
    let pod_spec = template.spec.clone().unwrap_or_default();
    assert_eq!(
        pod_spec.service_account_name.as_deref(),
        Some(SERVICE_ACCOUNT)
    );
    let c = pod_spec.containers.first().cloned().unwrap_or_default();
    let args = c.args.clone().unwrap_or_default();
    assert_eq!(args.first().map(String::as_str), Some("run"), "{args:?}");
    assert!(args.iter().any(|a| a == "--leader-election"), "{args:?}");
    assert!(
        args.windows(2)
            .any(|w| w[0] == "--log-format" && w[1] == "json"),
        "{args:?}"
    );
    let env = c.env.clone().unwrap_or_default();
    let field = |name: &str| {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value_from.as_ref()?.field_ref.as_ref())
            .map(|f| f.field_path.clone())
    };
    assert_eq!(field("POD_NAME").as_deref(), Some("metadata.name"));
    assert_eq!(
        field("LEASE_NAMESPACE").as_deref(),
        Some("metadata.namespace")
    );
    let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|h| h.path.clone())
    };
    assert_eq!(probe_path(&c.liveness_probe).as_deref(), Some("/healthz"));
    assert_eq!(probe_path(&c.readiness_probe).as_deref(), Some("/readyz"));
    assert!(c.ports.iter().flatten().any(|p| p.container_port == 8080));
    let resources = c.resources.clone().unwrap_or_default();
    for (what, list) in [
        ("requests", &resources.requests),
        ("limits", &resources.limits),
    ] {
        let list = list.clone().unwrap_or_default();
        assert!(
            list.contains_key("cpu") && list.contains_key("memory"),
            "resources.{what}: {list:?}"
        );
    }
    let sc = c.security_context.clone().unwrap_or_default();
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.and_then(|c| c.drop),
        Some(vec!["ALL".to_string()])
    );
    let pod_sc = pod_spec.security_context.clone().unwrap_or_default();
    assert_eq!(
        pod_sc.seccomp_profile.map(|s| s.type_).as_deref(),
        Some("RuntimeDefault")
    );

    // The namespace enforces "restricted": the template is admitted, a weaker one is not.
    let pods: Api<Pod> = Api::namespaced(admin.clone(), NAMESPACE);
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let pod = |spec: k8s_openapi::api::core::v1::PodSpec| Pod {
        metadata: kube::api::ObjectMeta {
            name: Some("operator-dry-run".into()),
            labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    };
    pods.create(&dry_run, &pod(pod_spec.clone()))
        .await
        .map_err(|e| anyhow::anyhow!("the operator pod is not admitted: {e}"))?;
    let mut weaker = pod_spec.clone();
    if let Some(sc) = weaker.containers[0].security_context.as_mut() {
        sc.allow_privilege_escalation = Some(true);
    }
    assert!(
        forbidden(pods.create(&dry_run, &pod(weaker)).await).is_some(),
        "Pod Security restricted is not enforced on {NAMESPACE}"
    );
    Ok(())
}

/// Waits for `pred` on the worker while the operator task keeps running.
async fn wait_worker(
    api: &Api<EcsSelfTerminatingWorker>,
    name: &str,
    operator: &tokio::task::JoinHandle<anyhow::Result<()>>,
    what: &str,
    pred: impl Fn(Option<&EcsSelfTerminatingWorker>) -> bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let w = api.get_opt(name).await?;
        if pred(w.as_ref()) {
            return Ok(());
        }
        anyhow::ensure!(
            !operator.is_finished(),
            "the operator stopped while waiting for {what}"
        );
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; status: {}",
            serde_json::to_string_pretty(&w.and_then(|w| w.status))?
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn deploy_applies_and_its_service_account_provisions_a_worker_and_nothing_more()
-> anyhow::Result<()> {
    let cp = ControlPlane::shared()?;
    let admin = cp.client().await?;

    // The CRD first (kustomize cannot reach crds/ from deploy/), then the base; strict
    // server-side field validation rejects any unknown or misplaced field.
    kubectl(
        cp,
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--validate=strict",
            "-f",
            "crds/",
        ],
    )?;
    wait_crd_established(&admin).await?;
    kubectl(
        cp,
        &[
            "apply",
            "--server-side",
            "--validate=strict",
            "-k",
            "deploy/",
        ],
    )?;
    kubectl(
        cp,
        &[
            "apply",
            "--server-side",
            "--validate=strict",
            "--dry-run=server",
            "-k",
            "deploy/",
        ],
    )?;
    let diff = cp
        .kubectl()
        .args(["diff", "--server-side", "-k", "deploy/"])
        .current_dir(repo())
        .output()?;
    assert!(
        diff.status.success(),
        "deploy/ drifts right after being applied:\n{}{}",
        String::from_utf8_lossy(&diff.stdout),
        String::from_utf8_lossy(&diff.stderr)
    );
    Api::<ServiceAccount>::namespaced(admin.clone(), NAMESPACE)
        .get(SERVICE_ACCOUNT)
        .await?;
    Api::<ClusterRole>::all(admin.clone())
        .get("ecs-worker-operator")
        .await?;
    let service = Api::<Service>::namespaced(admin.clone(), NAMESPACE)
        .get("ecs-worker-operator-metrics")
        .await?;
    assert!(
        service
            .spec
            .and_then(|s| s.ports)
            .unwrap_or_default()
            .iter()
            .any(|p| p.port == 8080)
    );
    check_deployment(&admin).await?;

    let t = TestNamespace::new("deploy").await?;
    let ns = t.name.clone();
    let workers: Api<EcsSelfTerminatingWorker> = Api::namespaced(admin.clone(), &ns);

    // The operator, authenticated as the ServiceAccount, leading through the Lease.
    let dir = tempfile::tempdir()?;
    let operator_client = service_account_client(cp, &admin, dir.path()).await?;
    let moto = Moto::start().await?;
    let metrics = Arc::new(Metrics::default());
    // No default AWS credentials: the worker's own Secret must be read.
    let factory = ClientFactory::new(Some(moto.endpoint().to_string()), None, metrics.clone());
    let identity = "ecs-worker-operator-deploy-test";
    // Every namespace, as deployed, but only this test's object: the other tests' workers
    // (running at the same time, in their own namespaces) are not this operator's to touch.
    let config = Config {
        namespace: None,
        label_selector: Some(format!("{DEPLOY_TEST_LABEL}=yes")),
        drift_interval: Duration::from_secs(300),
        instance: Some(identity.into()),
        ..Config::default()
    };
    let ctx = Arc::new(Context::new(
        operator_client.clone(),
        factory,
        metrics,
        config,
    ));
    let stop = tokio_util::sync::CancellationToken::new();
    let leader_client = operator_client.clone();
    let leader_stop = stop.clone();
    let operator = tokio::spawn(async move {
        controller::leader::run_as_leader(leader_client, NAMESPACE, identity, ctx, leader_stop)
            .await
    });

    let secret: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "aws-keys"},
        "stringData": {"AWS_ACCESS_KEY_ID": "deploy-test", "AWS_SECRET_ACCESS_KEY": "deploy-test"}
    }))?;
    Api::<Secret>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await?;
    let name = "rbac-proof";
    let mut worker: EcsSelfTerminatingWorker = serde_yaml::from_str(&common::worker_yaml(
        name,
        "credentials:\n  secretRef:\n    name: aws-keys",
    ))?;
    worker
        .metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(DEPLOY_TEST_LABEL.into(), "yes".into());
    workers
        .patch(
            name,
            &PatchParams::apply("tests").force(),
            &Patch::Apply(&worker),
        )
        .await?;
    wait_worker(&workers, name, &operator, "Ready=True", |w| {
        w.and_then(|w| w.condition("Ready"))
            .is_some_and(|c| c.status == "True")
    })
    .await?;

    // What the RBAC allowed: the finalizer (patch), status (patch on /status), Events, the Lease.
    let w = workers.get(name).await?;
    assert!(
        w.finalizers().iter().any(|f| f == FINALIZER),
        "{:?}",
        w.finalizers()
    );
    assert!(
        w.status
            .as_ref()
            .and_then(|s| s.resources.queue_url.as_ref())
            .is_some()
    );
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(admin.clone(), &ns)
        .list(&ListParams::default())
        .await?;
    assert!(
        events
            .items
            .iter()
            .any(
                |e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                    && e.reporting_controller.as_deref() == Some(MANAGER)
                    && e.reporting_instance.as_deref() == Some(identity)
                    && e.reason.as_deref() == Some("Provisioned")
            ),
        "no Provisioned Event from the operator: {:?}",
        events
            .items
            .iter()
            .map(|e| (e.reason.clone(), e.reporting_controller.clone()))
            .collect::<Vec<_>>()
    );
    // spec.queue.export: the queue's ConfigMap (get, then server-side apply).
    let exported = Api::<ConfigMap>::namespaced(admin.clone(), &ns)
        .get(&format!("{name}-queue"))
        .await?;
    assert_eq!(
        exported.data.as_ref().and_then(|d| d.get("QUEUE_URL")),
        w.status
            .as_ref()
            .and_then(|s| s.resources.queue_url.as_ref())
    );
    let leases: Api<Lease> = Api::namespaced(admin.clone(), NAMESPACE);
    let holder = leases
        .get(LEASE)
        .await?
        .spec
        .and_then(|s| s.holder_identity);
    assert_eq!(holder.as_deref(), Some(identity));

    // What it does not grant is refused.
    let user = format!("system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}");
    let as_operator_secrets: Api<Secret> = Api::namespaced(operator_client.clone(), &ns);
    let as_operator_workers: Api<EcsSelfTerminatingWorker> =
        Api::namespaced(operator_client.clone(), &ns);
    let other_lease = Lease {
        metadata: kube::api::ObjectMeta {
            name: Some("not-the-leader-lease".into()),
            ..Default::default()
        },
        spec: None,
    };
    let refusals: [(&str, Option<String>); 11] = [
        (
            "delete a Secret",
            forbidden(
                as_operator_secrets
                    .delete("aws-keys", &DeleteParams::default())
                    .await,
            ),
        ),
        (
            "list Secrets",
            forbidden(as_operator_secrets.list(&ListParams::default()).await),
        ),
        (
            "watch Secrets",
            forbidden(
                as_operator_secrets
                    .watch(&kube::api::WatchParams::default(), "0")
                    .await
                    .map(|_| ()),
            ),
        ),
        (
            "list Pods",
            forbidden(
                Api::<Pod>::all(operator_client.clone())
                    .list(&ListParams::default())
                    .await,
            ),
        ),
        (
            "list ConfigMaps",
            forbidden(
                Api::<ConfigMap>::namespaced(operator_client.clone(), &ns)
                    .list(&ListParams::default())
                    .await,
            ),
        ),
        (
            "create a worker",
            forbidden(
                as_operator_workers
                    .create(
                        &PostParams::default(),
                        &serde_yaml::from_str::<EcsSelfTerminatingWorker>(&common::worker_yaml(
                            "intruder", "",
                        ))?,
                    )
                    .await,
            ),
        ),
        (
            "update (PUT) a worker",
            forbidden(
                as_operator_workers
                    .replace(name, &PostParams::default(), &w)
                    .await,
            ),
        ),
        (
            "delete a worker",
            forbidden(
                as_operator_workers
                    .delete(name, &DeleteParams::default())
                    .await,
            ),
        ),
        (
            "create a Lease elsewhere",
            forbidden(
                Api::<Lease>::namespaced(operator_client.clone(), &ns)
                    .create(&PostParams::default(), &other_lease)
                    .await,
            ),
        ),
        (
            "get another Lease",
            forbidden(
                Api::<Lease>::namespaced(operator_client.clone(), NAMESPACE)
                    .get("not-the-leader-lease")
                    .await,
            ),
        ),
        (
            "scale its own Deployment",
            forbidden(
                Api::<Deployment>::namespaced(operator_client.clone(), NAMESPACE)
                    .patch(
                        "ecs-worker-operator",
                        &PatchParams::default(),
                        &Patch::Merge(serde_json::json!({"spec": {"replicas": 5}})),
                    )
                    .await,
            ),
        ),
    ];
    for (what, refused) in &refusals {
        let message = refused
            .as_deref()
            .unwrap_or_else(|| panic!("the ServiceAccount could {what}"));
        assert!(
            message.contains(&user),
            "{what}: refused, but not for {user}: {message}"
        );
    }

    // Deletion through the finalizer (Secret read, AWS cleanup, finalizer removed by patch).
    workers.delete(name, &DeleteParams::default()).await?;
    wait_worker(
        &workers,
        name,
        &operator,
        "the worker to be finalized",
        |w| w.is_none(),
    )
    .await?;
    let names = Names::new(&ns, name);
    let sqs = aws_sdk_sqs::Client::new(&moto.sdk_config().await);
    let left = sqs
        .list_queues()
        .queue_name_prefix(&names.base)
        .send()
        .await?;
    assert!(
        left.queue_urls().is_empty(),
        "queues left: {:?}",
        left.queue_urls()
    );

    // Stopping the leader releases the Lease (patch) for a standby.
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), operator).await???;
    let holder = leases
        .get(LEASE)
        .await?
        .spec
        .and_then(|s| s.holder_identity);
    assert_eq!(holder, None, "the Lease was not released");
    moto.assert_no_violations().await?;
    Ok(())
}

/// `service:Operation` of every AWS call in src/aws/ (each goes through `.aws("svc", "Op")`).
/// The label that makes an object the deploy test operator's.
const DEPLOY_TEST_LABEL: &str = "ecsworker.dev/deploy-test";

fn aws_calls() -> anyhow::Result<BTreeSet<String>> {
    let mut calls = BTreeSet::new();
    for entry in std::fs::read_dir(repo().join("src/aws"))? {
        let text = std::fs::read_to_string(entry?.path())?;
        for rest in text.split(".aws(\"").skip(1) {
            let call: String = rest.chars().take_while(|c| *c != ')').collect();
            let parts: Vec<&str> = call
                .split('"')
                .filter(|p| !p.trim().is_empty() && p.trim() != ",")
                .collect();
            anyhow::ensure!(
                parts.len() == 2,
                "cannot read the AWS call in: .aws(\"{call})"
            );
            calls.insert(format!("{}:{}", parts[0], parts[1]));
        }
    }
    Ok(calls)
}

#[test]
fn iam_policy_allows_every_aws_call_the_operator_makes_and_nothing_else() -> anyhow::Result<()> {
    let policy: serde_json::Value =
        serde_json::from_str(&read("deploy/aws/operator-policy.json")?)?;
    let statements = policy["Statement"].as_array().cloned().unwrap_or_default();
    let mut allowed: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for s in &statements {
        assert_eq!(s["Effect"], "Allow", "{s}");
        assert!(
            s.get("NotAction").is_none() && s.get("NotResource").is_none(),
            "{s}"
        );
        let resources = strings(&s["Resource"]);
        for action in strings(&s["Action"]) {
            assert!(!action.contains('*'), "wildcard action {action}");
            // Unconditioned `*` only for reads, and for the one ECS write without resource-level permission.
            if resources.iter().any(|r| r == "*") && s.get("Condition").is_none() {
                let op = action.split(':').nth(1).unwrap_or_default();
                assert!(
                    op.starts_with("Describe")
                        || op.starts_with("List")
                        || action == "ecs:DeregisterTaskDefinition",
                    "{action} on * without a condition"
                );
            }
            allowed.entry(action).or_default().push(s.clone());
        }
    }

    let calls = aws_calls()?;
    assert!(
        calls.len() > 40,
        "found only {} AWS calls in src/aws: {calls:?}",
        calls.len()
    );
    for call in &calls {
        assert!(
            allowed.contains_key(call),
            "{call} is called in src/aws/ but not allowed by deploy/aws/operator-policy.json"
        );
    }
    // Permissions AWS checks on top of the calls themselves (tag on create, pass role, the
    // instances an Auto Scaling group launches, service-linked roles on first use).
    let dependent = [
        "sqs:TagQueue",
        "logs:TagResource",
        "logs:TagLogGroup",
        "iam:TagRole",
        "iam:TagInstanceProfile",
        "iam:PassRole",
        "iam:CreateServiceLinkedRole",
        "ecs:TagResource",
        "autoscaling:CreateOrUpdateTags",
        "ec2:CreateTags",
        "ec2:RunInstances",
    ];
    for action in allowed.keys() {
        assert!(
            calls.contains(action) || dependent.contains(&action.as_str()),
            "{action} is allowed but never needed"
        );
    }
    for action in dependent {
        assert!(allowed.contains_key(action), "{action} missing");
    }

    // Scoping: names the operator generates, and the tags it sets.
    let names = Names::new("team", "worker");
    assert!(names.base.starts_with("ecsw-") && names.log_group.starts_with("/ecs-worker/"));
    for s in &allowed["iam:PassRole"] {
        assert_eq!(strings(&s["Resource"]), ["arn:aws:iam::*:role/ecsw-*"]);
        assert!(s["Condition"]["StringEquals"]["iam:PassedToService"].is_array());
    }
    for s in &allowed["ssm:GetParameter"] {
        assert_eq!(
            strings(&s["Resource"]),
            // Public parameters are named with and without the account in their ARN.
            ["arn:aws:ssm:*:*:parameter/aws/service/ecs/optimized-ami/*"]
        );
    }
    let spec = ecs_worker_operator::api::testing::minimal_spec();
    assert!(
        ecs_worker_operator::plan::desired::ami_parameter(&spec)
            .starts_with("/aws/service/ecs/optimized-ami/")
    );
    let text = read("deploy/aws/operator-policy.json")?;
    assert!(text.contains(&format!(
        "\"aws:RequestTag/{MANAGED_BY_TAG}\": \"{MANAGED_BY}\""
    )));
    assert!(text.contains(&format!(
        "\"aws:ResourceTag/{MANAGED_BY_TAG}\": \"{MANAGED_BY}\""
    )));
    for (action, statements) in &allowed {
        let service = action.split(':').next().unwrap_or_default();
        let op = action.split(':').nth(1).unwrap_or_default();
        let read_only = op.starts_with("Describe") || op.starts_with("List");
        if ["sqs", "iam", "autoscaling"].contains(&service)
            && action != "iam:CreateServiceLinkedRole"
            && !read_only
        {
            for s in statements {
                // A queue the user brings (spec.queue.existingQueueArn) has any name: the one
                // grant beyond the ecsw- names reads queues, and nothing else.
                if strings(&s["Action"]) == ["sqs:GetQueueUrl", "sqs:GetQueueAttributes"]
                    && strings(&s["Resource"]) == ["arn:aws:sqs:*:*:*"]
                {
                    continue;
                }
                for r in strings(&s["Resource"]) {
                    assert!(
                        r.contains("/ecsw-") || r.contains(":ecsw-"),
                        "{action} on {r} is not limited to ecsw- names"
                    );
                }
            }
        }
    }
    Ok(())
}

#[test]
fn the_deployment_command_line_is_accepted_by_the_operator() -> anyhow::Result<()> {
    let text = read("deploy/base/deployment.yaml")?;
    let deployment: Deployment = serde_yaml::from_str(&text)?;
    let container = deployment
        .spec
        .and_then(|s| s.template.spec)
        .map(|s| s.containers[0].clone())
        .ok_or_else(|| anyhow::anyhow!("no container"))?;
    let args = container.args.unwrap_or_default();
    // clap rejects an unknown flag or value before it reaches `--help`.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ecs-worker-operator"))
        .args(&args)
        .arg("--help")
        .output()?;
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{args:?} refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for env in container.env.unwrap_or_default() {
        if env.name != "RUST_LOG" {
            assert!(
                help.contains(&format!("[env: {}=", env.name)),
                "the operator reads no {} (run --help):\n{help}",
                env.name
            );
        }
    }
    Ok(())
}
