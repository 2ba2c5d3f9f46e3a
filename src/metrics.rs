//! Prometheus metrics of the operator (served at `/metrics`) and the AWS call counter every
//! SDK client reports to.
//!
//! Every metric of the operator is named `ecs_worker_operator_*`; the per-worker ones carry
//! `namespace` and `name` (the worker object's) and are removed when the worker's finalizer
//! has finished ([`Metrics::forget_worker`]). The standard `process_*` metrics of the
//! process (CPU, memory, file descriptors, start time) are read from `/proc/self` at each
//! scrape ([`ProcessCollector`]). `deploy/monitoring/README.md` lists every metric.

use crate::api::{EcsSelfTerminatingWorkerStatus, QueueDepth, RunOutcome};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

/// Prefix of every operator metric.
pub const PREFIX: &str = "ecs_worker_operator";

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct CallLabels {
    pub service: String,
    pub operation: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct WorkerLabels {
    pub namespace: String,
    pub name: String,
}

impl WorkerLabels {
    pub fn new(namespace: &str, name: &str) -> WorkerLabels {
        WorkerLabels {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// A finished run of one worker.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    pub namespace: String,
    pub name: String,
    /// `succeeded`, `failed` or `scale_up_timed_out`.
    pub outcome: String,
}

/// One status of one condition of one worker (the kube-state-metrics convention: the series
/// of the current status is 1, those of the other two are 0).
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ConditionLabels {
    pub namespace: String,
    pub name: String,
    pub r#type: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
}

/// Label value of a run outcome.
pub fn outcome_label(outcome: RunOutcome) -> &'static str {
    match outcome {
        RunOutcome::Succeeded => "succeeded",
        RunOutcome::Failed => "failed",
        RunOutcome::ScaleUpTimedOut => "scale_up_timed_out",
        RunOutcome::Interrupted => "interrupted",
        RunOutcome::LaunchFailed => "launch_failed",
    }
}

const OUTCOMES: [RunOutcome; 5] = [
    RunOutcome::Succeeded,
    RunOutcome::Failed,
    RunOutcome::ScaleUpTimedOut,
    RunOutcome::Interrupted,
    RunOutcome::LaunchFailed,
];
const CONDITION_STATUSES: [&str; 3] = ["True", "False", "Unknown"];

fn run_duration_histogram() -> Histogram {
    Histogram::new([
        30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0,
    ])
}

/// Every metric the operator exports.
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Counter,
    pub reconcile_errors: Family<ReasonLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub aws_calls: Family<CallLabels, Counter>,
    pub runs: Family<RunLabels, Counter>,
    pub run_duration: Family<WorkerLabels, Histogram, fn() -> Histogram>,
    pub instance_seconds: Family<WorkerLabels, Counter<f64, AtomicU64>>,
    pub queue_depth: Family<WorkerLabels, Gauge>,
    pub queue_in_flight: Family<WorkerLabels, Gauge>,
    pub dead_letter_depth: Family<WorkerLabels, Gauge>,
    pub last_success: Family<WorkerLabels, Gauge>,
    pub schedule_period: Family<WorkerLabels, Gauge>,
    pub condition: Family<ConditionLabels, Gauge>,
    /// 1 while this process runs the controller (holds the Lease, or runs without leader
    /// election), 0 while it stands by.
    pub leader: Gauge,
    /// The condition series exported per worker, so that a condition that disappears from
    /// the status, and every series of a deleted worker, can be removed.
    shown: Mutex<HashMap<WorkerLabels, BTreeSet<ConditionLabels>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut root = Registry::default();
        root.register_collector(Box::new(ProcessCollector));
        let registry = root.sub_registry_with_prefix(PREFIX);
        let reconciles = Counter::default();
        let reconcile_errors = Family::<ReasonLabels, Counter>::default();
        let reconcile_duration = Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]);
        let aws_calls = Family::<CallLabels, Counter>::default();
        let runs = Family::<RunLabels, Counter>::default();
        let run_duration =
            Family::<WorkerLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                run_duration_histogram,
            );
        let instance_seconds = Family::<WorkerLabels, Counter<f64, AtomicU64>>::default();
        let queue_depth = Family::<WorkerLabels, Gauge>::default();
        let queue_in_flight = Family::<WorkerLabels, Gauge>::default();
        let dead_letter_depth = Family::<WorkerLabels, Gauge>::default();
        let last_success = Family::<WorkerLabels, Gauge>::default();
        let schedule_period = Family::<WorkerLabels, Gauge>::default();
        let condition = Family::<ConditionLabels, Gauge>::default();
        let leader = Gauge::default();
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
        registry.register(
            "runs",
            "Finished worker runs by worker and outcome (succeeded, failed, scale_up_timed_out)",
            runs.clone(),
        );
        registry.register(
            "run_duration_seconds",
            "Worker run duration from scale-up to stop, per worker",
            run_duration.clone(),
        );
        registry.register(
            "instance_seconds",
            "EC2 instance-seconds used by finished runs, per worker",
            instance_seconds.clone(),
        );
        registry.register(
            "queue_depth",
            "Visible messages of the worker's queue (ApproximateNumberOfMessages) last seen",
            queue_depth.clone(),
        );
        registry.register(
            "queue_in_flight",
            "Messages of the worker's queue received and not yet deleted (ApproximateNumberOfMessagesNotVisible) last seen",
            queue_in_flight.clone(),
        );
        registry.register(
            "dead_letter_queue_depth",
            "Messages in the worker's dead-letter queue last seen",
            dead_letter_depth.clone(),
        );
        registry.register(
            "last_successful_run_timestamp_seconds",
            "When the worker's last successful run stopped (Unix time); absent before the first",
            last_success.clone(),
        );
        registry.register(
            "schedule_period_seconds",
            "Seconds between the worker's next two schedule ticks",
            schedule_period.clone(),
        );
        registry.register(
            "condition",
            "Status of each condition of each worker: 1 on the series of the current status",
            condition.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica runs the controller (leader, or leader election off), 0 on a standby",
            leader.clone(),
        );
        Metrics {
            registry: root,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            aws_calls,
            runs,
            run_duration,
            instance_seconds,
            queue_depth,
            queue_in_flight,
            dead_letter_depth,
            last_success,
            schedule_period,
            condition,
            leader,
            shown: Mutex::new(HashMap::new()),
        }
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
    }

    /// Records what one pass of the run cycle saw: the queue's counts (the dead-letter queue's
    /// when it was read) and the schedule's period. Creates the worker's run counters and
    /// duration histogram at zero, so `increase()` sees its first run.
    pub fn observe_cycle(
        &self,
        namespace: &str,
        name: &str,
        queue: &QueueDepth,
        schedule_period: Option<i64>,
    ) {
        let worker = WorkerLabels::new(namespace, name);
        self.queue_depth.get_or_create(&worker).set(queue.visible);
        self.queue_in_flight
            .get_or_create(&worker)
            .set(queue.in_flight);
        match queue.dead_letter {
            Some(n) => {
                self.dead_letter_depth.get_or_create(&worker).set(n);
            }
            None => {
                self.dead_letter_depth.remove(&worker);
            }
        }
        match schedule_period {
            Some(s) => {
                self.schedule_period.get_or_create(&worker).set(s);
            }
            None => {
                self.schedule_period.remove(&worker);
            }
        }
        for outcome in OUTCOMES {
            let _ = self.runs.get_or_create(&run_labels(&worker, outcome));
        }
        let _ = self.instance_seconds.get_or_create(&worker);
        let _ = self.run_duration.get_or_create(&worker);
    }

    /// Records a run that just finished: its outcome, its duration from scale-up to stop and
    /// the instance-seconds it used.
    pub fn record_run(
        &self,
        namespace: &str,
        name: &str,
        outcome: RunOutcome,
        seconds: f64,
        instances: i32,
    ) {
        let worker = WorkerLabels::new(namespace, name);
        self.runs.get_or_create(&run_labels(&worker, outcome)).inc();
        self.run_duration.get_or_create(&worker).observe(seconds);
        self.instance_seconds
            .get_or_create(&worker)
            .inc_by(seconds * f64::from(instances.max(0)));
    }

    /// Records the status about to be written: its conditions and the last successful run.
    pub fn observe_status(
        &self,
        namespace: &str,
        name: &str,
        status: &EcsSelfTerminatingWorkerStatus,
    ) {
        let worker = WorkerLabels::new(namespace, name);
        if let Some(run) = &status.last_run
            && run.outcome == RunOutcome::Succeeded
        {
            self.last_success
                .get_or_create(&worker)
                .set(run.stopped_at.0.as_second());
        }
        let mut now = BTreeSet::new();
        for c in &status.conditions {
            for s in CONDITION_STATUSES {
                let labels = ConditionLabels {
                    namespace: namespace.into(),
                    name: name.into(),
                    r#type: c.type_.clone(),
                    status: s.into(),
                };
                self.condition
                    .get_or_create(&labels)
                    .set(i64::from(c.status == s));
                now.insert(labels);
            }
        }
        let mut shown = self.shown.lock().unwrap_or_else(|e| e.into_inner());
        let before = shown.insert(worker, now.clone()).unwrap_or_default();
        for gone in before.difference(&now) {
            self.condition.remove(gone);
        }
    }

    /// Removes every series of a worker (its finalizer has removed it from AWS).
    pub fn forget_worker(&self, namespace: &str, name: &str) {
        let worker = WorkerLabels::new(namespace, name);
        for outcome in OUTCOMES {
            self.runs.remove(&run_labels(&worker, outcome));
        }
        self.run_duration.remove(&worker);
        self.instance_seconds.remove(&worker);
        self.queue_depth.remove(&worker);
        self.queue_in_flight.remove(&worker);
        self.dead_letter_depth.remove(&worker);
        self.last_success.remove(&worker);
        self.schedule_period.remove(&worker);
        let shown = self
            .shown
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&worker)
            .unwrap_or_default();
        for labels in shown {
            self.condition.remove(&labels);
        }
    }

    /// Whether this replica runs the controller.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn run_labels(worker: &WorkerLabels, outcome: RunOutcome) -> RunLabels {
    RunLabels {
        namespace: worker.namespace.clone(),
        name: worker.name.clone(),
        outcome: outcome_label(outcome).into(),
    }
}

/// Seconds between the next two ticks of a schedule after `now` (a cron schedule's period
/// varies; this is the one ahead).
pub fn schedule_period(schedule: &crate::schedule::Schedule, now: jiff::Timestamp) -> Option<i64> {
    let first = schedule.next_after(now)?;
    let second = schedule.next_after(first)?;
    Some(second.as_second() - first.as_second())
}

/// The standard process metrics of the Prometheus client libraries
/// (<https://prometheus.io/docs/instrumenting/writing_clientlibs/#process-metrics>), read from
/// `/proc/self` at each scrape: `process_cpu_seconds_total`, `process_resident_memory_bytes`,
/// `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`,
/// `process_start_time_seconds`. Nothing is exported where `/proc` is not Linux's.
#[derive(Debug)]
pub struct ProcessCollector;

/// What [`ProcessCollector`] reads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: i64,
    pub virtual_bytes: i64,
    pub open_fds: Option<i64>,
    pub max_fds: Option<i64>,
    pub start_time_seconds: Option<f64>,
}

/// Clock ticks per second of the times in `/proc/<pid>/stat` (`USER_HZ`): 100 on every
/// architecture Linux exports to user space the same way Prometheus's own `procfs` library
/// assumes it (`userHZ = 100`, <https://github.com/prometheus/procfs/blob/master/proc_stat.go>).
const USER_HZ: f64 = 100.0;

impl ProcessStats {
    /// Reads this process's statistics; None where `/proc/self/stat` is missing or unreadable.
    pub fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let mut stats = ProcessStats::parse(&stat, &status)?;
        stats.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as i64);
        stats.max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|l| max_open_files(&l));
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| boot_time(&s));
        let started_ticks = stat_fields(&stat).and_then(|f| f.get(19)?.parse::<f64>().ok());
        stats.start_time_seconds = boot.zip(started_ticks).map(|(b, t)| b + t / USER_HZ);
        Some(stats)
    }

    /// CPU time and memory from the texts of `/proc/self/stat` and `/proc/self/status`.
    pub fn parse(stat: &str, status: &str) -> Option<ProcessStats> {
        let fields = stat_fields(stat)?;
        // After the command: state(0) ... utime(11) stime(12) (proc(5), fields 14 and 15).
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
                .map(|k| k * 1024)
        };
        Some(ProcessStats {
            cpu_seconds: (utime + stime) / USER_HZ,
            resident_bytes: kib("VmRSS:").unwrap_or(0),
            virtual_bytes: kib("VmSize:").unwrap_or(0),
            ..ProcessStats::default()
        })
    }
}

/// The fields of `/proc/<pid>/stat` after the command name (which may hold spaces and
/// parentheses, so the split starts after its last `)`).
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().collect())
}

/// The soft limit of `Max open files` in `/proc/<pid>/limits`.
fn max_open_files(limits: &str) -> Option<i64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    soft.parse().ok()
}

/// `btime` of `/proc/stat`: boot time, Unix seconds.
fn boot_time(stat: &str) -> Option<f64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(stats) = ProcessStats::read() else {
            return Ok(());
        };
        let counter = ConstCounter::new(stats.cpu_seconds);
        counter.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            counter.metric_type(),
        )?)?;
        let mut gauge = |name: &str, help: &str, value: f64| -> Result<(), std::fmt::Error> {
            let g = ConstGauge::new(value);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
        };
        gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            stats.resident_bytes as f64,
        )?;
        gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            stats.virtual_bytes as f64,
        )?;
        if let Some(n) = stats.open_fds {
            gauge(
                "process_open_fds",
                "Number of open file descriptors",
                n as f64,
            )?;
        }
        if let Some(n) = stats.max_fds {
            gauge(
                "process_max_fds",
                "Maximum number of open file descriptors",
                n as f64,
            )?;
        }
        if let Some(t) = stats.start_time_seconds {
            gauge(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                t,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RunRecord;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn series(text: &str, prefix: &str) -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with('#') && l.starts_with(prefix))
            .map(str::to_string)
            .collect()
    }

    fn condition(type_: &str, status: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: "R".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
        }
    }

    fn queue(visible: i64, in_flight: i64, dead_letter: Option<i64>) -> QueueDepth {
        QueueDepth {
            visible,
            in_flight,
            dead_letter,
        }
    }

    #[test]
    fn runs_carry_the_worker_and_start_at_zero() {
        let m = Metrics::default();
        m.observe_cycle("ns", "a", &queue(3, 1, Some(2)), Some(60));
        let text = m.encode();
        for outcome in ["succeeded", "failed", "scale_up_timed_out"] {
            assert!(
                text.contains(&format!(
                    "ecs_worker_operator_runs_total{{namespace=\"ns\",name=\"a\",outcome=\"{outcome}\"}} 0"
                )),
                "{text}"
            );
        }
        m.record_run("ns", "a", RunOutcome::Failed, 100.0, 2);
        let text = m.encode();
        assert!(text.contains(
            "ecs_worker_operator_runs_total{namespace=\"ns\",name=\"a\",outcome=\"failed\"} 1"
        ));
        assert!(text.contains(
            "ecs_worker_operator_instance_seconds_total{namespace=\"ns\",name=\"a\"} 200.0"
        ));
        assert!(text.contains(
            "ecs_worker_operator_run_duration_seconds_count{namespace=\"ns\",name=\"a\"} 1"
        ));
        assert!(text.contains("ecs_worker_operator_queue_depth{namespace=\"ns\",name=\"a\"} 3"));
        assert!(
            text.contains("ecs_worker_operator_queue_in_flight{namespace=\"ns\",name=\"a\"} 1")
        );
        assert!(text.contains(
            "ecs_worker_operator_dead_letter_queue_depth{namespace=\"ns\",name=\"a\"} 2"
        ));
        assert!(text.contains(
            "ecs_worker_operator_schedule_period_seconds{namespace=\"ns\",name=\"a\"} 60"
        ));
        // A worker without a dead-letter queue has no dead-letter series.
        m.observe_cycle("ns", "a", &queue(0, 0, None), None);
        let text = m.encode();
        assert!(series(&text, "ecs_worker_operator_dead_letter_queue_depth{").is_empty());
        assert!(series(&text, "ecs_worker_operator_schedule_period_seconds{").is_empty());
    }

    #[test]
    fn conditions_follow_the_status_and_a_deleted_worker_leaves_no_series() {
        let m = Metrics::default();
        let mut status = EcsSelfTerminatingWorkerStatus {
            conditions: vec![condition("Ready", "True"), condition("Degraded", "False")],
            ..Default::default()
        };
        status.last_run = Some(RunRecord {
            id: "r1".into(),
            outcome: RunOutcome::Succeeded,
            scale_up_at: Time(jiff::Timestamp::from_second(1_000).unwrap()),
            started_at: None,
            stopped_at: Time(jiff::Timestamp::from_second(1_700_000_000).unwrap()),
            instances: 1,
            exit_code: Some(0),
            stop_reason: None,
            messages_before: 1,
            messages_after: Some(0),
            on_demand_fallback: false,
        });
        m.observe_cycle("ns", "a", &queue(0, 0, Some(0)), Some(60));
        m.observe_status("ns", "a", &status);
        m.observe_status("ns", "b", &status);
        let text = m.encode();
        let ready = series(
            &text,
            "ecs_worker_operator_condition{namespace=\"ns\",name=\"a\",type=\"Ready\"",
        );
        let mut ready = ready;
        ready.sort();
        assert_eq!(
            ready,
            [
                "ecs_worker_operator_condition{namespace=\"ns\",name=\"a\",type=\"Ready\",status=\"False\"} 0",
                "ecs_worker_operator_condition{namespace=\"ns\",name=\"a\",type=\"Ready\",status=\"True\"} 1",
                "ecs_worker_operator_condition{namespace=\"ns\",name=\"a\",type=\"Ready\",status=\"Unknown\"} 0",
            ],
            "{text}"
        );
        assert!(text.contains(
            "ecs_worker_operator_last_successful_run_timestamp_seconds{namespace=\"ns\",name=\"a\"} 1700000000"
        ));

        // Ready turns False; Degraded leaves the status: its series go.
        status.conditions = vec![condition("Ready", "False")];
        m.observe_status("ns", "a", &status);
        let text = m.encode();
        assert!(text.contains(
            "ecs_worker_operator_condition{namespace=\"ns\",name=\"a\",type=\"Ready\",status=\"False\"} 1"
        ));
        assert!(text.contains(
            "ecs_worker_operator_condition{namespace=\"ns\",name=\"a\",type=\"Ready\",status=\"True\"} 0"
        ));
        assert!(!text.contains("name=\"a\",type=\"Degraded\""), "{text}");

        // Deleted: nothing of "a" is left, "b" is untouched.
        m.forget_worker("ns", "a");
        let text = m.encode();
        let left: Vec<_> = text.lines().filter(|l| l.contains("name=\"a\"")).collect();
        assert!(left.is_empty(), "{left:?}");
        assert!(text.contains("name=\"b\",type=\"Degraded\",status=\"False\"} 1"));
    }

    #[test]
    fn leader_gauge_follows_the_controller() {
        let m = Metrics::default();
        assert!(m.encode().contains("ecs_worker_operator_leader 0\n"));
        m.set_leader(true);
        assert!(m.encode().contains("ecs_worker_operator_leader 1\n"));
    }

    #[test]
    fn schedule_period_is_the_gap_between_the_next_two_ticks() {
        let now = jiff::Timestamp::from_second(1_700_000_030).unwrap();
        let rate = crate::schedule::Schedule::parse_rate("7_HOURS").unwrap();
        assert_eq!(schedule_period(&rate, now), Some(7 * 3600));
        let cron = crate::schedule::Schedule::parse_cron("*/15 * * * *").unwrap();
        assert_eq!(schedule_period(&cron, now), Some(900));
    }

    #[test]
    fn process_stats_parse_procfs_text() {
        // A command name with spaces and parentheses; utime 250 and stime 50 ticks.
        let stat = "42 (my (odd) cmd) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 1234 5000000 300 18446744073709551615";
        let status = "Name:\tx\nVmSize:\t  123456 kB\nVmRSS:\t    2048 kB\n";
        let s = ProcessStats::parse(stat, status).unwrap();
        assert_eq!(s.cpu_seconds, 3.0);
        assert_eq!(s.resident_bytes, 2048 * 1024);
        assert_eq!(s.virtual_bytes, 123456 * 1024);
        assert_eq!(stat_fields(stat).unwrap()[19], "1234");
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
        assert_eq!(
            boot_time("cpu 1 2 3\nbtime 1700000000\n"),
            Some(1_700_000_000.0)
        );
    }

    #[test]
    fn process_metrics_are_exported_without_the_operator_prefix() {
        let text = Metrics::default().encode();
        if !std::path::Path::new("/proc/self/stat").exists() {
            return;
        }
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_virtual_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds ",
        ] {
            let line = text
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("no {name} in {text}"));
            let value: f64 = line[name.len()..].trim().parse().unwrap();
            assert!(value > 0.0 || name.starts_with("process_cpu"), "{line}");
        }
        let start: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("process_start_time_seconds "))
            .unwrap()
            .parse()
            .unwrap();
        let now = jiff::Timestamp::now().as_second() as f64;
        assert!(
            start <= now + 1.0 && start > now - 86400.0 * 365.0,
            "{start}"
        );
    }
}
