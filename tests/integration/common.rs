//! Shared harness of the operator's integration tests: the CRD on the shared real API server,
//! a moto server per test, and the controller running in-process, scoped to the test's own
//! namespace.
//!
//! [`Harness::strict`] also enforces IAM in moto for every principal ([`testbed::iam`]): the
//! controller signs as the operator's user (its only policy is
//! `deploy/aws/operator-policy.json`), the agent play and worker processes as the roles the
//! operator created, the test's own calls (`Harness::sdk`) as an admin user; a request IAM
//! refuses fails the test at its end, naming principal, action and resource.

use ecs_worker_operator::api::EcsSelfTerminatingWorker;
use ecs_worker_operator::aws::ClientFactory;
use ecs_worker_operator::controller::{self, Config, Context};
use ecs_worker_operator::metrics::{CallLabels, Metrics, is_write};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, CustomResourceExt};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use testbed::{Moto, TestNamespace};
use tokio_util::sync::CancellationToken;

pub struct Harness {
    pub ns: String,
    pub client: Client,
    pub moto: Moto,
    pub sdk: aws_config::SdkConfig,
    pub metrics: Arc<Metrics>,
    pub api: Api<EcsSelfTerminatingWorker>,
    stop: Option<CancellationToken>,
    controller: Option<tokio::task::JoinHandle<()>>,
    /// The test fails at its end if any request (operator, worker or the test's own) broke a
    /// rule AWS enforces (moto checks every request against AWS's models and documented
    /// limits); see [`Harness::expect_aws_violations`].
    fail_on_aws_violations: bool,
    /// With IAM enforced ([`Harness::strict`]): the principals of the test's moto server.
    pub iam: Option<Arc<testbed::iam::Principals>>,
}

/// The owner tag value the in-process controller writes for `namespace/name`.
pub fn owner(namespace: &str, name: &str) -> String {
    ecs_worker_operator::plan::desired::Owner {
        cluster: Config::default().cluster_id,
        namespace: namespace.into(),
        name: name.into(),
    }
    .value()
}

pub async fn install_crd(client: &Client) -> anyhow::Result<()> {
    testbed::crd::install(client, &EcsSelfTerminatingWorker::crd()).await
}

impl Harness {
    /// Namespace + moto + CRD, controller not started.
    pub async fn new(prefix: &str) -> anyhow::Result<Harness> {
        let t = TestNamespace::new(prefix).await?;
        install_crd(&t.client).await?;
        let moto = Moto::start().await?;
        let sdk = moto.sdk_config().await;
        Ok(Harness {
            api: Api::namespaced(t.client.clone(), &t.name),
            ns: t.name,
            client: t.client,
            moto,
            sdk,
            metrics: Arc::new(Metrics::default()),
            stop: None,
            controller: None,
            fail_on_aws_violations: true,
            iam: None,
        })
    }

    /// [`Harness::new`] with IAM enforced in moto for every principal; `sdk` signs as the
    /// test's admin user.
    pub async fn strict(prefix: &str) -> anyhow::Result<Harness> {
        let mut h = Harness::new(prefix).await?;
        let iam = testbed::iam::Principals::enforce(h.moto.endpoint()).await?;
        h.sdk = iam.admin_sdk();
        h.iam = Some(iam);
        Ok(h)
    }

    /// Starts the controller (in-process, this namespace only).
    pub fn start_controller(&mut self, drift_interval: Duration) {
        let credentials = match &self.iam {
            Some(iam) => iam.operator.provider(),
            None => ClientFactory::emulator_credentials(),
        };
        let factory = ClientFactory::new(
            Some(self.moto.endpoint().to_string()),
            Some(credentials),
            self.metrics.clone(),
        );
        let config = Config {
            namespace: Some(self.ns.clone()),
            label_selector: None,
            drift_interval,
            instance: Some("test".into()),
            ..Config::default()
        };
        let ctx = Arc::new(Context::new(
            self.client.clone(),
            factory,
            self.metrics.clone(),
            config,
        ));
        let stop = CancellationToken::new();
        self.stop = Some(stop.clone());
        self.controller = Some(tokio::spawn(controller::run(ctx, stop)));
    }

    /// Stops the controller and waits for it (a crash as far as AWS and status are concerned).
    pub async fn stop_controller(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.cancel();
        }
        if let Some(h) = self.controller.take() {
            h.abort();
            let _ = h.await;
        }
    }

    /// Applies a worker from YAML (server-side apply).
    pub async fn apply_yaml(&self, yaml: &str) -> anyhow::Result<EcsSelfTerminatingWorker> {
        let w: EcsSelfTerminatingWorker = serde_yaml::from_str(yaml)?;
        let name = w.metadata.name.clone().unwrap_or_default();
        Ok(self
            .api
            .patch(
                &name,
                &PatchParams::apply("tests").force(),
                &Patch::Apply(&w),
            )
            .await?)
    }

    /// Applies worker `name` ([`worker_yaml`] with `extra_spec`), waits until it is Ready, and
    /// returns its AWS names and the resources its status records.
    pub async fn apply_ready(
        &self,
        name: &str,
        extra_spec: &str,
    ) -> anyhow::Result<(
        ecs_worker_operator::plan::desired::Names,
        ecs_worker_operator::api::AwsResources,
    )> {
        self.apply_yaml(&worker_yaml(name, extra_spec)).await?;
        let w = self.wait_ready(name).await?;
        Ok((
            ecs_worker_operator::plan::desired::Names::new(&self.ns, name),
            w.status.map(|s| s.resources).unwrap_or_default(),
        ))
    }

    /// Waits until `pred` holds for the named worker.
    pub async fn wait_for(
        &self,
        name: &str,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&EcsSelfTerminatingWorker) -> bool,
    ) -> anyhow::Result<EcsSelfTerminatingWorker> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(w) = self.api.get_opt(name).await?
                && pred(&w)
            {
                return Ok(w);
            }
            if tokio::time::Instant::now() > deadline {
                let w = self.api.get_opt(name).await?;
                let denied = match &self.iam {
                    Some(iam) => match iam.denials().await {
                        Ok(found) if found.is_empty() => String::new(),
                        Ok(found) => format!("\n{}", testbed::iam::describe_denials(&found)),
                        Err(e) => format!("\nreading IAM denials: {e}"),
                    },
                    None => String::new(),
                };
                anyhow::bail!(
                    "timed out waiting for {what}; last seen status: {}{denied}",
                    serde_json::to_string_pretty(&w.and_then(|w| w.status))?
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn wait_ready(&self, name: &str) -> anyhow::Result<EcsSelfTerminatingWorker> {
        self.wait_for(name, Duration::from_secs(60), "Ready=True", |w| {
            w.condition("Ready").is_some_and(|c| c.status == "True")
        })
        .await
    }

    /// The worker's Events once one has `reason` (an Event follows the AWS change it reports).
    pub async fn wait_event(
        &self,
        name: &str,
        reason: &str,
    ) -> anyhow::Result<Vec<(String, String, String)>> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let events = self.events(name).await?;
            if events.iter().any(|(_, r, _)| r == reason) {
                return Ok(events);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "no {reason} Event for {name} within 30 s: {events:?}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Events recorded for a worker, as (type, reason, note).
    pub async fn events(&self, name: &str) -> anyhow::Result<Vec<(String, String, String)>> {
        let events: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.client.clone(), &self.ns);
        Ok(events
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(|e| {
                (
                    e.type_.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.note.unwrap_or_default(),
                )
            })
            .collect())
    }

    /// Changes a label so the controller reconciles again (no spec change, no trigger).
    pub async fn poke(&self, name: &str) -> anyhow::Result<()> {
        let patch = serde_json::json!({"metadata": {"labels": {"poke": format!("{}", rand::random::<u32>())}}});
        self.api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }
}

impl Harness {
    /// The controller's AWS call attempts so far, by service/operation/outcome, read from the
    /// metrics it exports (`ecs_worker_operator_aws_calls_total`).
    pub fn aws_call_counts(&self) -> BTreeMap<CallLabels, u64> {
        aws_call_counts(&self.metrics.encode())
    }

    /// Total (reads, writes) AWS call attempts so far.
    pub fn aws_reads_writes(&self) -> (u64, u64) {
        self.aws_call_counts()
            .iter()
            .fold((0, 0), |(r, w), (l, n)| {
                if is_write(&l.operation) {
                    (r, w + n)
                } else {
                    (r + n, w)
                }
            })
    }
}

/// The `ecs_worker_operator_aws_calls_total` samples of a text exposition.
pub fn aws_call_counts(exposition: &str) -> BTreeMap<CallLabels, u64> {
    let mut counts = BTreeMap::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("ecs_worker_operator_aws_calls_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |key: &str| {
            labels
                .split("\",")
                .find_map(|kv| kv.strip_prefix(&format!("{key}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        let labels = CallLabels {
            service: label("service"),
            operation: label("operation"),
            outcome: label("outcome"),
        };
        *counts.entry(labels).or_default() += value.trim().parse::<u64>().unwrap_or(0);
    }
    counts
}

impl Harness {
    /// For a test that sends requests AWS would refuse on purpose: they are still refused as
    /// AWS refuses them, but no longer fail the test at its end.
    #[allow(dead_code)] // no test sends such requests today
    pub fn expect_aws_violations(&mut self) {
        self.fail_on_aws_violations = false;
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.cancel();
        }
        if let Some(h) = self.controller.take() {
            h.abort();
        }
        // Printed at once (a failure below would hide it), failing the test at the end.
        let iam_problem = self.iam.take().and_then(|iam| {
            testbed::iam::Principals::forget(iam.endpoint());
            let problem = match iam.denials_blocking() {
                Ok(found) if found.is_empty() => None,
                Ok(found) => Some(testbed::iam::describe_denials(&found)),
                Err(e) => Some(format!("reading the requests IAM refused: {e}")),
            };
            if let Some(problem) = &problem {
                eprintln!("{problem}");
            }
            problem
        });
        if self.fail_on_aws_violations {
            let problem = match self.moto.violations_blocking() {
                Ok(found) if found.is_empty() => None,
                Ok(found) => Some(testbed::moto::describe_violations(&found)),
                Err(e) => Some(format!("reading the requests AWS would refuse: {e}")),
            };
            if let Some(problem) = problem {
                if std::thread::panicking() {
                    eprintln!("{problem}");
                } else {
                    panic!("{problem}");
                }
            }
        }
        if let Some(problem) = iam_problem
            && !std::thread::panicking()
        {
            panic!("{problem}");
        }
    }
}

/// A worker named `name`: the minimal spec with 6000 MiB, plus `extra_spec` (YAML of spec
/// fields; a `schedule` replaces the default `cronRate`, a null removes a field).
pub fn worker_yaml(name: &str, extra_spec: &str) -> String {
    let mut spec = ecs_worker_operator::api::testing::minimal_spec_json();
    spec["memoryLimitMiB"] = 6000.into();
    let extra: serde_json::Value = serde_yaml::from_str(extra_spec).expect("spec YAML");
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        if extra.contains_key("schedule") {
            spec.remove("cronRate");
        }
        for (key, value) in extra {
            match value {
                serde_json::Value::Null => spec.remove(key),
                value => spec.insert(key.clone(), value.clone()),
            };
        }
    }
    serde_yaml::to_string(&serde_json::json!({
        "apiVersion": "ecsworker.dev/v1alpha1",
        "kind": "EcsSelfTerminatingWorker",
        "metadata": { "name": name },
        "spec": spec,
    }))
    .expect("serializes")
}

/// A binary of this workspace in `target/debug`, built by `cargo build --workspace
/// --all-targets` (`make test` builds before it tests; a test never runs cargo itself).
pub fn workspace_binary(name: &str) -> anyhow::Result<std::path::PathBuf> {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let path = target.join("debug").join(name);
    anyhow::ensure!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --all-targets` (or `make test`) first",
        path.display()
    );
    Ok(path)
}

/// The worker binary (`target/debug/ecs-worker`).
pub fn worker_binary() -> anyhow::Result<std::path::PathBuf> {
    workspace_binary("ecs-worker")
}

/// Sets the run-now annotation.
pub async fn trigger(
    api: &kube::Api<ecs_worker_operator::api::EcsSelfTerminatingWorker>,
    name: &str,
    value: &str,
) -> anyhow::Result<()> {
    let patch = serde_json::json!({"metadata": {"annotations": {ecs_worker_operator::api::TRIGGER_ANNOTATION: value}}});
    api.patch(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

/// Worker settings that end a run within seconds of the queue going empty, with a handler
/// that takes each message as it comes (for [`worker_yaml`]).
pub const FAST_DRAIN: &str = "queue:\n  receiveWaitTimeSeconds: 1\nworker:\n  emptyReceives: 1\n  handler: 'cat > /dev/null'";

/// Plays the ECS agent of worker `names` in the background, running the real worker binary.
pub fn real_worker(
    h: &Harness,
    names: &ecs_worker_operator::plan::desired::Names,
) -> anyhow::Result<testbed::agent::Player> {
    use testbed::agent::{Agent, Play, Player};
    Ok(Player::start(
        Agent::new(&h.sdk, &names.cluster, &names.auto_scaling_group),
        Play::RealWorker {
            binary: worker_binary()?,
            endpoint: h.moto.endpoint().into(),
            extra_env: Vec::new(),
        },
    ))
}

/// Sends `n` messages (`m0`, `m1`, ...) to the queue at `url`.
pub async fn send_messages(h: &Harness, url: &str, n: usize) -> anyhow::Result<()> {
    let sqs = aws_sdk_sqs::Client::new(&h.sdk);
    for i in 0..n {
        sqs.send_message()
            .queue_url(url)
            .message_body(format!("m{i}"))
            .send()
            .await?;
    }
    Ok(())
}

/// Waits until worker `name` records a run other than `previous` and is idle again.
pub async fn next_run(
    h: &Harness,
    name: &str,
    previous: Option<&str>,
) -> anyhow::Result<ecs_worker_operator::api::RunRecord> {
    use ecs_worker_operator::api::Phase;
    let w = h
        .wait_for(
            name,
            Duration::from_secs(120),
            "a run recorded, idle",
            |w| {
                w.status.as_ref().is_some_and(|s| {
                    s.last_run
                        .as_ref()
                        .is_some_and(|r| Some(r.id.as_str()) != previous)
                        && s.current_run.is_none()
                        && s.phase == Some(Phase::Idle)
                })
            },
        )
        .await?;
    w.status
        .and_then(|s| s.last_run)
        .ok_or_else(|| anyhow::anyhow!("no run recorded"))
}

/// The queue's (visible, in flight) counts; -1 for a count SQS did not return.
pub async fn depth(sqs: &aws_sdk_sqs::Client, url: &str) -> anyhow::Result<(i64, i64)> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await?;
    let get = |k: A| {
        out.attributes()
            .and_then(|a| a.get(&k))
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1)
    };
    Ok((
        get(A::ApproximateNumberOfMessages),
        get(A::ApproximateNumberOfMessagesNotVisible),
    ))
}

/// A policy statement's `Action` or `Resource`: one string or a list of them.
pub fn strings(v: &serde_json::Value) -> Vec<String> {
    match v {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect(),
        _ => vec![],
    }
}

/// An ECS environment (a container definition's or a RunTask override's) as (name, value).
pub fn env_pairs<'a>(
    env: impl IntoIterator<Item = &'a aws_sdk_ecs::types::KeyValuePair>,
) -> Vec<(String, String)> {
    env.into_iter()
        .map(|kv| {
            let text = |s: Option<&str>| s.unwrap_or_default().to_string();
            (text(kv.name()), text(kv.value()))
        })
        .collect()
}
