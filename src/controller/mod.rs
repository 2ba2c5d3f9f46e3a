//! The kube-runtime wiring: one `Controller` over `EcsSelfTerminatingWorker` objects, the
//! shared [`Context`], per-object error backoff, Events and status patches.
//!
//! - [`reconcile`]: apply (validate -> credentials -> provision -> run cycle -> status) and
//!   cleanup (the finalizer's deletion of everything owned);
//! - [`credentials`]: the worker's Secret, read without ever exposing its values.

pub mod credentials;
pub mod export;
pub mod leader;
pub mod reconcile;

use crate::api::EcsSelfTerminatingWorker;
use crate::aws::ClientFactory;
use crate::metrics::{Metrics, ReasonLabels};
use futures::StreamExt;
use jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Field manager of every status write (server-side apply).
pub const MANAGER: &str = "ecs-worker-operator";

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Identity of the Kubernetes cluster, part of every resource's owner tag
    /// ([`crate::plan::desired::Owner`]).
    pub cluster_id: String,
    /// Watch one namespace only (all when None).
    pub namespace: Option<String>,
    /// Reconcile only objects matching this label selector (shard a fleet over deployments).
    pub label_selector: Option<String>,
    /// Re-check every owned AWS resource at least this often while nothing changes
    /// (out-of-band deletions are repaired within this time).
    pub drift_interval: Duration,
    /// Name of this replica in Events (`reportingInstance`).
    pub instance: Option<String>,
    /// Reconciles in flight at once: bounds memory and the AWS call rate when a large fleet
    /// arrives at once (all the others wait in the queue, each object still at most once).
    pub concurrency: u16,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cluster_id: "local".into(),
            namespace: None,
            label_selector: None,
            drift_interval: Duration::from_secs(3600),
            instance: None,
            concurrency: 16,
        }
    }
}

/// Per-object memory that is safe to lose (a restart only costs one extra AWS check).
#[derive(Default)]
struct ObjectMemory {
    failures: u32,
    /// Generation and time of the last complete provisioning check.
    ensured: Option<(i64, Instant)>,
    /// When the last provisioning pass began (it may have created resources).
    provisioning: Option<Instant>,
    /// The resource version the last complete pass left the object at, and when that pass
    /// asked to run again.
    settled: Option<(String, Instant)>,
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub aws: ClientFactory,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub config: Config,
    memory: Mutex<HashMap<ObjectRef<EcsSelfTerminatingWorker>, ObjectMemory>>,
}

impl Context {
    pub fn new(
        client: Client,
        aws: ClientFactory,
        metrics: Arc<Metrics>,
        config: Config,
    ) -> Context {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: config.instance.clone(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            aws,
            metrics,
            config,
            memory: Mutex::new(HashMap::new()),
        }
    }

    /// The owner of one object's AWS resources, in this cluster.
    pub fn owner(&self, namespace: &str, name: &str) -> crate::plan::desired::Owner {
        crate::plan::desired::Owner {
            cluster: self.config.cluster_id.clone(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    pub fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn memory<T>(
        &self,
        obj: &ObjectRef<EcsSelfTerminatingWorker>,
        f: impl FnOnce(&mut ObjectMemory) -> T,
    ) -> T {
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        f(memory.entry(obj.clone()).or_default())
    }

    /// Whether the full provisioning check is due for this generation.
    pub(crate) fn ensure_due(
        &self,
        obj: &ObjectRef<EcsSelfTerminatingWorker>,
        generation: i64,
    ) -> bool {
        let interval = self.config.drift_interval;
        self.memory(obj, |m| match m.ensured {
            Some((g, at)) => g != generation || at.elapsed() >= interval,
            None => true,
        })
    }

    pub(crate) fn ensured(&self, obj: &ObjectRef<EcsSelfTerminatingWorker>, generation: i64) {
        self.memory(obj, |m| m.ensured = Some((generation, Instant::now())));
    }

    pub(crate) fn provisioning(&self, obj: &ObjectRef<EcsSelfTerminatingWorker>) {
        self.memory(obj, |m| m.provisioning = Some(Instant::now()));
    }

    /// Time since the last provisioning pass began, if this process ran one.
    pub(crate) fn since_provisioning(
        &self,
        obj: &ObjectRef<EcsSelfTerminatingWorker>,
    ) -> Option<Duration> {
        self.memory(obj, |m| m.provisioning.map(|at| at.elapsed()))
    }

    pub(crate) fn forget_ensured(&self, obj: &ObjectRef<EcsSelfTerminatingWorker>) {
        self.memory(obj, |m| m.ensured = None);
    }

    /// Whether the last complete provisioning check is at most `age` old.
    pub(crate) fn ensured_within(
        &self,
        obj: &ObjectRef<EcsSelfTerminatingWorker>,
        age: Duration,
    ) -> bool {
        self.memory(obj, |m| {
            m.ensured.is_some_and(|(_, at)| at.elapsed() <= age)
        })
    }

    /// Records a complete pass: the object's resource version after its status write and the
    /// requeue it asked for.
    pub(crate) fn settled(
        &self,
        obj: &ObjectRef<EcsSelfTerminatingWorker>,
        resource_version: Option<String>,
        requeue_after: Duration,
    ) {
        let wake = Instant::now() + requeue_after;
        self.memory(obj, |m| m.settled = resource_version.map(|rv| (rv, wake)));
    }

    /// Why this pass runs, judged by the object's resource version against the last complete
    /// pass.
    pub(crate) fn wake(
        &self,
        obj: &ObjectRef<EcsSelfTerminatingWorker>,
        resource_version: Option<&str>,
    ) -> Wake {
        self.memory(obj, |m| match (&m.settled, resource_version) {
            (Some((rv, wake)), Some(current)) if rv == current => {
                match wake.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Wake::Early(left),
                    _ => Wake::Scheduled,
                }
            }
            _ => Wake::Changed,
        })
    }
}

/// Why a pass runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wake {
    /// The object is exactly as the last complete pass left it (the watch event of that pass's
    /// own status write, or a re-list) and the requeue it asked for is this far off: a pass now
    /// would observe AWS only to decide again what the last one decided.
    Early(Duration),
    /// The requeue the last pass asked for, the object unchanged.
    Scheduled,
    /// The object changed since the last complete pass, or there was none in this process.
    Changed,
}

/// The workers the controller watches: in `namespace`, or in every namespace.
fn workers(client: &Client, namespace: Option<&str>) -> Api<EcsSelfTerminatingWorker> {
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// One list of the watched workers: what readiness waits for (the CRD is installed, RBAC
/// allows the watch, the API server answers), on the leader and on a standby alike.
pub async fn list_once(client: &Client, namespace: Option<&str>) -> Result<(), kube::Error> {
    workers(client, namespace)
        .list(&ListParams::default().limit(1))
        .await
        .map(|_| ())
}

/// Runs the controller until `shutdown` is cancelled.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let api = workers(&ctx.client, ctx.config.namespace.as_deref());
    let mut wc = watcher::Config::default().any_semantic();
    if let Some(selector) = &ctx.config.label_selector {
        wc = wc.labels(selector);
    }
    if let Err(e) = list_once(&ctx.client, ctx.config.namespace.as_deref()).await {
        tracing::error!(error = %e, "cannot list EcsSelfTerminatingWorkers: is the CRD installed (crds/) and RBAC granted (deploy/)?");
    }
    let metrics = ctx.metrics.clone();
    metrics.set_leader(true);
    Controller::new(api, wc)
        .with_config(controller::Config::default().concurrency(ctx.config.concurrency))
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile::reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile failed");
            }
        })
        .await;
    metrics.set_leader(false);
}

/// Requeue with per-object exponential backoff (5 s doubling to 5 min, with jitter), so one
/// failing object neither hot-loops nor delays the others.
fn error_policy(
    obj: Arc<EcsSelfTerminatingWorker>,
    err: &reconcile::Error,
    ctx: Arc<Context>,
) -> Action {
    if let Some(wait) = err.expected_wait() {
        tracing::info!(namespace = obj.namespace().unwrap_or_default(), name = obj.name_any(), reason = %err, retry_in = ?wait, "waiting");
        return Action::requeue(wait);
    }
    ctx.metrics
        .reconcile_errors
        .get_or_create(&ReasonLabels {
            reason: err.metric_label().into(),
        })
        .inc();
    let failures = ctx.memory(&ObjectRef::from(obj.as_ref()), |m| {
        m.failures = m.failures.saturating_add(1);
        m.failures
    });
    let delay = backoff(failures, rand::random::<f64>());
    tracing::warn!(namespace = obj.namespace().unwrap_or_default(), name = obj.name_any(), error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Delay after `failures` consecutive failures; `jitter` in [0, 1) adds up to 20 %.
pub fn backoff(failures: u32, jitter: f64) -> Duration {
    let base = 5.0 * 2f64.powi(failures.saturating_sub(1).min(10) as i32);
    let capped = base.min(300.0);
    Duration::from_secs_f64(capped * (1.0 + 0.2 * jitter.clamp(0.0, 1.0)))
}

#[cfg(test)]
mod tests {
    use super::backoff;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1, 0.0), Duration::from_secs(5));
        assert_eq!(backoff(2, 0.0), Duration::from_secs(10));
        assert_eq!(backoff(4, 0.0), Duration::from_secs(40));
        assert_eq!(backoff(30, 0.0), Duration::from_secs(300));
        assert!(backoff(30, 0.99) <= Duration::from_secs(360));
    }
}
