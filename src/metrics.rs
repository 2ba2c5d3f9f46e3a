//! Prometheus metrics of the operator (served at `/metrics`) and the AWS call counter every
//! SDK client reports to.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub service: String,
    pub operation: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabels {
    pub namespace: String,
    pub name: String,
}

/// Every metric the operator exports.
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Counter,
    pub reconcile_errors: Family<ReasonLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub aws_calls: Family<CallLabels, Counter>,
    pub runs: Family<OutcomeLabels, Counter>,
    pub run_duration: Histogram,
    pub instance_seconds: Counter<f64, AtomicU64>,
    pub queue_depth: Family<WorkerLabels, Gauge>,
    /// The same AWS call counts, readable without parsing the exposition format.
    calls: Mutex<BTreeMap<CallLabels, u64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ecs_worker_operator");
        let reconciles = Counter::default();
        let reconcile_errors = Family::<ReasonLabels, Counter>::default();
        let reconcile_duration = Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]);
        let aws_calls = Family::<CallLabels, Counter>::default();
        let runs = Family::<OutcomeLabels, Counter>::default();
        let run_duration = Histogram::new([
            30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0,
        ]);
        let instance_seconds = Counter::<f64, AtomicU64>::default();
        let queue_depth = Family::<WorkerLabels, Gauge>::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by reason",
            reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration",
            reconcile_duration.clone(),
        );
        registry.register(
            "aws_calls",
            "AWS API call attempts by service, operation and outcome",
            aws_calls.clone(),
        );
        registry.register("runs", "Finished worker runs by outcome", runs.clone());
        registry.register(
            "run_duration_seconds",
            "Worker run duration from scale-up to stop",
            run_duration.clone(),
        );
        registry.register(
            "instance_seconds",
            "EC2 instance-seconds used by finished runs",
            instance_seconds.clone(),
        );
        registry.register(
            "queue_depth",
            "Visible messages last seen per worker",
            queue_depth.clone(),
        );
        Metrics {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            aws_calls,
            runs,
            run_duration,
            instance_seconds,
            queue_depth,
            calls: Mutex::new(BTreeMap::new()),
        }
    }
}

impl PartialOrd for CallLabels {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for CallLabels {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (&self.service, &self.operation, &self.outcome).cmp(&(
            &other.service,
            &other.operation,
            &other.outcome,
        ))
    }
}

/// Whether an AWS operation changes state (everything but Describe/List/Get/Receive).
pub fn is_write(operation: &str) -> bool {
    !["Describe", "List", "Get", "Receive"]
        .iter()
        .any(|p| operation.starts_with(p))
}

impl Metrics {
    /// Records one AWS call attempt.
    pub fn aws_call(&self, service: &str, operation: &str, outcome: &str) {
        let labels = CallLabels {
            service: service.into(),
            operation: operation.into(),
            outcome: outcome.into(),
        };
        self.aws_calls.get_or_create(&labels).inc();
        *self
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(labels)
            .or_default() += 1;
    }

    /// Call counts so far, by service/operation/outcome.
    pub fn aws_call_counts(&self) -> BTreeMap<CallLabels, u64> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Total (reads, writes) so far.
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

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
