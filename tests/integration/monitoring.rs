//! The monitoring pack (`deploy/monitoring/`) against promtool, the real API server and the
//! metrics the operator really exports.
//!
//! - The PrometheusRule's rule groups pass `promtool check rules`, and its unit tests
//!   (`deploy/monitoring/tests/alerts_test.yaml`) pass `promtool test rules`, with one test
//!   expecting each alert to fire; promtool is built from the Go module proxy
//!   (`hack/promtool.sh`).
//! - Every query of the Grafana dashboard parses (promtool, as recording rules).
//! - `kubectl kustomize deploy/monitoring` applies with a server-side dry run against the
//!   Prometheus Operator's own CRDs.
//! - The operator binary, run against the strict test bed (IAM enforced with
//!   `deploy/aws/operator-policy.json`), exports after a real worker's run every metric the
//!   dashboard and the alerts use; the dead-letter gauge follows the queue; every series of
//!   the worker is gone once the worker is deleted.

use crate::common::{Harness, trigger, worker_binary, worker_yaml};
use ecs_worker_operator::plan::desired::Names;
use serde::Deserialize as _;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use testbed::agent::{Agent, Play, Player};

const RULES: &str = "deploy/monitoring/prometheusrule.yaml";
const RULE_TESTS: &str = "deploy/monitoring/tests/alerts_test.yaml";
const DASHBOARD: &str = "deploy/monitoring/dashboard.json";

/// Names in the queries that are PromQL (functions, keywords, Grafana variables) or label
/// names, not metric names. An identifier that is neither in this list nor an operator or
/// `process_` metric fails the test: a metric from elsewhere would go unchecked.
const NOT_METRICS: &[&str] = &[
    "sum",
    "max",
    "min",
    "by",
    "on",
    "and",
    "or",
    "unless",
    "rate",
    "increase",
    "histogram_quantile",
    "time",
    "vector",
    "label_values",
    "le",
    "namespace",
    "name",
    "type",
    "status",
    "outcome",
    "reason",
    "service",
    "operation",
    "instance",
    "job",
];

fn repo() -> PathBuf {
    testbed::repo_root()
}

fn promtool() -> anyhow::Result<PathBuf> {
    testbed::hack_path("promtool.sh", &[])
}

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    anyhow::ensure!(out.status.success(), "{cmd:?} failed:\n{text}");
    Ok(text)
}

/// The PrometheusRule's `spec` (a plain Prometheus rule file).
fn rule_groups() -> anyhow::Result<serde_yaml::Value> {
    let rule: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo().join(RULES))?)?;
    Ok(rule["spec"].clone())
}

/// (alert name, expression) of every alert.
fn alerts() -> anyhow::Result<Vec<(String, String)>> {
    let spec = rule_groups()?;
    let mut out = Vec::new();
    for group in spec["groups"].as_sequence().into_iter().flatten() {
        for rule in group["rules"].as_sequence().into_iter().flatten() {
            if let (Some(a), Some(e)) = (rule["alert"].as_str(), rule["expr"].as_str()) {
                out.push((a.to_string(), e.to_string()));
            }
        }
    }
    Ok(out)
}

/// Every PromQL query of the dashboard (panels' targets and the variables' queries), with
/// Grafana's variables replaced so that they parse.
fn dashboard_queries() -> anyhow::Result<Vec<String>> {
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(repo().join(DASHBOARD))?)?;
    let mut raw = Vec::new();
    fn targets(panels: &Value, raw: &mut Vec<String>) {
        for p in panels.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    raw.push(e.to_string());
                }
            }
            targets(&p["panels"], raw);
        }
    }
    targets(&dash["panels"], &mut raw);
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            let q = v["query"]["query"].as_str().or(v["query"].as_str());
            raw.push(q.unwrap_or_default().to_string());
        }
    }
    Ok(raw
        .into_iter()
        .map(|q| {
            let q = q
                .replace("$__rate_interval", "5m")
                .replace("$__range", "1d")
                .replace("$__interval", "1m")
                .replace("$namespace", ".*")
                .replace("$name", ".*");
            // `label_values(selector, label)`: Grafana's; the selector is PromQL.
            match q.strip_prefix("label_values(") {
                Some(rest) => rest
                    .rsplit_once(',')
                    .map(|(sel, _)| sel.trim().to_string())
                    .unwrap_or(rest.to_string()),
                None => q,
            }
        })
        .collect())
}

/// Metric names in a query: every identifier outside string literals and range brackets
/// that is not PromQL or a label name ([`NOT_METRICS`]).
fn metric_names(query: &str) -> BTreeSet<String> {
    let mut clean = String::new();
    let (mut in_string, mut in_range) = (false, false);
    for c in query.chars() {
        match c {
            '"' => in_string = !in_string,
            '[' if !in_string => in_range = true,
            ']' if !in_string => in_range = false,
            _ if in_string || in_range => {}
            _ => clean.push(c),
        }
    }
    clean
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| {
            t.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        })
        .filter(|t| !NOT_METRICS.contains(t))
        .map(str::to_string)
        .collect()
}

/// Sample names of a text exposition (`_total`, `_bucket`, ... included), with those of the
/// families it declares (`# TYPE`) that have no sample yet (errors by reason before the first).
fn sample_names(exposition: &str) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect();
    for l in exposition.lines() {
        let mut words = l.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(family), Some(kind)) =
            (words.next(), words.next(), words.next(), words.next())
        {
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{family}{s}")));
        }
    }
    names
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() -> anyhow::Result<()> {
    let promtool = promtool()?;
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("rules.yaml"),
        serde_yaml::to_string(&rule_groups()?)?,
    )?;
    std::fs::copy(repo().join(RULE_TESTS), dir.path().join("alerts_test.yaml"))?;
    let checked = run(Command::new(&promtool).current_dir(dir.path()).args([
        "check",
        "rules",
        "rules.yaml",
    ]))?;
    let alerts = alerts()?;
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", alerts.len())),
        "{checked}"
    );
    run(Command::new(&promtool).current_dir(dir.path()).args([
        "test",
        "rules",
        "alerts_test.yaml",
    ]))?;

    // Each alert has a test case that expects it to fire, and one that expects silence.
    let tests: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo().join(RULE_TESTS))?)?;
    let cases: Vec<&serde_yaml::Value> = tests["tests"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|t| t["alert_rule_test"].as_sequence().into_iter().flatten())
        .collect();
    for (alert, _) in &alerts {
        let of_alert = || {
            cases
                .iter()
                .filter(|c| c["alertname"].as_str() == Some(alert))
        };
        assert!(
            of_alert().any(|c| c["exp_alerts"].as_sequence().is_some_and(|a| !a.is_empty())),
            "no unit test expects {alert} to fire"
        );
        assert!(
            of_alert().any(|c| c["exp_alerts"].as_sequence().is_some_and(|a| a.is_empty())),
            "no unit test expects {alert} to stay silent"
        );
    }

    // promtool fails the unit tests of a broken rule: the DLQ alert with a wrong threshold.
    let mut broken = rule_groups()?;
    let text = serde_yaml::to_string(&broken)?.replace(
        "ecs_worker_operator_dead_letter_queue_depth) > 0",
        "ecs_worker_operator_dead_letter_queue_depth) > 5",
    );
    broken = serde_yaml::from_str(&text)?;
    std::fs::write(
        dir.path().join("rules.yaml"),
        serde_yaml::to_string(&broken)?,
    )?;
    let out = Command::new(&promtool)
        .current_dir(dir.path())
        .args(["test", "rules", "alerts_test.yaml"])
        .output()?;
    assert!(!out.status.success(), "a broken rule passed its unit tests");
    Ok(())
}

#[test]
fn dashboard_queries_parse() -> anyhow::Result<()> {
    let queries = dashboard_queries()?;
    assert!(queries.len() >= 15, "{queries:?}");
    let rules: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| serde_json::json!({"record": format!("dashboard:query_{i}"), "expr": q}))
        .collect();
    let file = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("dashboard-rules.yaml");
    std::fs::write(&path, serde_yaml::to_string(&file)?)?;
    let out = run(Command::new(promtool()?)
        .arg("check")
        .arg("rules")
        .arg(&path))?;
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{out}"
    );
    Ok(())
}

#[test]
fn monitoring_pack_applies_to_the_real_api_server() -> anyhow::Result<()> {
    let cp = testbed::ControlPlane::shared()?;
    let crds = Command::new(repo().join("hack/prometheus-operator-crds.sh"))
        .stderr(std::process::Stdio::inherit())
        .output()?;
    anyhow::ensure!(
        crds.status.success(),
        "hack/prometheus-operator-crds.sh failed"
    );
    let crds = String::from_utf8(crds.stdout)?.trim().to_string();
    run(cp
        .kubectl()
        .args(["apply", "--server-side", "--force-conflicts", "-f", &crds]))?;
    for crd in [
        "servicemonitors.monitoring.coreos.com",
        "prometheusrules.monitoring.coreos.com",
    ] {
        run(cp.kubectl().args([
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            &format!("crd/{crd}"),
        ]))?;
    }
    let rendered = run(cp
        .kubectl()
        .arg("kustomize")
        .arg(repo().join("deploy/monitoring")))?;
    for kind in [
        "kind: ServiceMonitor",
        "kind: PrometheusRule",
        "kind: ConfigMap",
    ] {
        assert!(rendered.contains(kind), "{kind} missing:\n{rendered}");
    }
    // The dashboard in the ConfigMap is the file.
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&rendered)
        .map(serde_yaml::Value::deserialize)
        .collect::<Result<_, _>>()?;
    let cm = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap")
        .expect("the dashboard ConfigMap");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(
        cm["data"]["ecs-worker-operator.json"].as_str(),
        Some(std::fs::read_to_string(repo().join(DASHBOARD))?.as_str())
    );
    // The namespace of the install need not exist for a dry run of namespaced objects in it:
    // create it if missing.
    let _ = cp
        .kubectl()
        .args(["create", "namespace", "ecs-worker-operator"])
        .output()?;
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), &rendered)?;
    run(cp
        .kubectl()
        .args([
            "apply",
            "--server-side",
            "--dry-run=server",
            "--validate=strict",
            "-f",
        ])
        .arg(file.path()))?;
    Ok(())
}

/// The operator binary against the harness's control plane and moto, signing as the
/// operator's IAM user; metrics on a free port.
struct Operator {
    _guard: testbed::process::Guard,
    metrics: String,
    log: PathBuf,
}

impl Operator {
    fn start(h: &Harness, dir: &Path) -> anyhow::Result<Operator> {
        let cp = testbed::ControlPlane::shared()?;
        let port = testbed::free_port();
        let log = dir.join("operator.log");
        let out = std::fs::File::create(&log)?;
        let iam = h.iam.as_ref().expect("a strict harness");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ecs-worker-operator"));
        cmd.arg("run")
            .arg("--kubeconfig")
            .arg(cp.kubeconfig_path())
            .args(["--namespace", &h.ns])
            .args(["--aws-endpoint", h.moto.endpoint()])
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .envs(iam.operator.env())
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let guard = testbed::process::spawn("operator", cmd)?;
        Ok(Operator {
            _guard: guard,
            metrics: format!("http://127.0.0.1:{port}/metrics"),
            log,
        })
    }

    async fn scrape(&self) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match reqwest::get(&self.metrics).await {
                Ok(r) if r.status().is_success() => return Ok(r.text().await?),
                _ if Instant::now() > deadline => anyhow::bail!(
                    "no /metrics; operator log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                ),
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Scrapes until `pred` holds for the exposition.
    async fn scrape_until(
        &self,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = self.scrape().await?;
            if pred(&text) {
                return Ok(text);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last scrape:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// The value of one sample line starting with `series` (name and labels).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn dashboard_and_alerts_use_only_metrics_the_operator_exports() -> anyhow::Result<()> {
    let h = Harness::strict("monitoring").await?;
    let dir = tempfile::tempdir()?;
    let op = Operator::start(&h, dir.path())?;
    let name = "watched";
    h.apply_yaml(&worker_yaml(
        name,
        "queue:\n  receiveWaitTimeSeconds: 1\n  visibilityTimeoutSeconds: 30\nworker:\n  emptyReceives: 1\n  handler: \"cat > /dev/null\"",
    ))
    .await?;
    let w = h.wait_ready(name).await?;
    let resources = w.status.map(|s| s.resources).unwrap_or_default();
    let url = resources.queue_url.expect("queue URL");
    let dlq = resources
        .dead_letter_queue_url
        .expect("dead-letter queue URL");
    let sqs = aws_sdk_sqs::Client::new(&h.sdk);
    for i in 0..5 {
        sqs.send_message()
            .queue_url(&url)
            .message_body(format!("{{\"n\":{i}}}"))
            .send()
            .await?;
    }
    // A message in the dead-letter queue, as a message that failed maxReceiveCount times.
    sqs.send_message()
        .queue_url(&dlq)
        .message_body("{\"failed\":true}")
        .send()
        .await?;
    let names = Names::new(&h.ns, name);
    let player = Player::start(
        Agent::new(&h.sdk, &names.cluster, &names.auto_scaling_group),
        Play::RealWorker {
            binary: worker_binary()?,
            endpoint: h.moto.endpoint().into(),
            extra_env: vec![],
        },
    );
    trigger(&h.api, name, "1").await?;
    let worker = format!("namespace=\"{}\",name=\"{name}\"", h.ns);
    let succeeded = format!("ecs_worker_operator_runs_total{{{worker},outcome=\"succeeded\"}}");
    let dlq_series = format!("ecs_worker_operator_dead_letter_queue_depth{{{worker}}}");
    let text = op
        .scrape_until("a successful run and the dead-letter message", |t| {
            value(t, &succeeded) == Some(1.0) && value(t, &dlq_series) == Some(1.0)
        })
        .await?;
    player.stop().await;

    // The metrics the pack uses, all present in what the operator exports.
    let mut exported = sample_names(&text);
    // Families that appear with their first sample only, which this run does not cause
    // (prometheus-client writes no descriptor for an empty family): checked against the
    // operator's own registry once it has one.
    let reference = ecs_worker_operator::metrics::Metrics::default();
    reference
        .reconcile_errors
        .get_or_create(&ecs_worker_operator::metrics::ReasonLabels {
            reason: "aws_throttling".into(),
        })
        .inc();
    let after_an_error = sample_names(&reference.encode());
    let errors = "ecs_worker_operator_reconcile_errors_total";
    assert!(
        after_an_error.contains(errors),
        "{errors} is not a metric of the operator"
    );
    exported.insert(errors.to_string());
    let mut used = BTreeSet::new();
    for q in dashboard_queries()? {
        used.extend(metric_names(&q));
    }
    for (_, expr) in alerts()? {
        used.extend(metric_names(&expr));
    }
    for m in &used {
        assert!(
            m.starts_with("ecs_worker_operator_") || m.starts_with("process_"),
            "{m}: not a metric of the operator (or add it to NOT_METRICS if it is PromQL)"
        );
        assert!(
            exported.contains(m),
            "{m} is used by deploy/monitoring but not exported:\n{text}"
        );
    }
    for m in [
        "ecs_worker_operator_dead_letter_queue_depth",
        "ecs_worker_operator_last_successful_run_timestamp_seconds",
        "ecs_worker_operator_leader",
        "ecs_worker_operator_run_duration_seconds_bucket",
        "process_cpu_seconds_total",
    ] {
        assert!(used.contains(m), "the pack does not use {m}: {used:?}");
    }

    // Per-worker values after the run.
    assert_eq!(value(&text, "ecs_worker_operator_leader"), Some(1.0));
    assert_eq!(
        value(
            &text,
            &format!("ecs_worker_operator_condition{{{worker},type=\"Ready\",status=\"True\"}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            &format!("ecs_worker_operator_schedule_period_seconds{{{worker}}}")
        ),
        Some(3600.0)
    );
    assert_eq!(
        value(
            &text,
            &format!("ecs_worker_operator_run_duration_seconds_count{{{worker}}}")
        ),
        Some(1.0)
    );
    let last_success = value(
        &text,
        &format!("ecs_worker_operator_last_successful_run_timestamp_seconds{{{worker}}}"),
    )
    .expect("last successful run time");
    let now = jiff::Timestamp::now().as_second() as f64;
    assert!(
        (now - 300.0..=now + 1.0).contains(&last_success),
        "{last_success}"
    );
    assert!(value(&text, "process_resident_memory_bytes").is_some_and(|v| v > 0.0));
    assert!(value(&text, "process_open_fds").is_some_and(|v| v > 0.0));

    // Purged, the dead-letter queue reads 0 at the next pass.
    sqs.purge_queue().queue_url(&dlq).send().await?;
    trigger(&h.api, name, "2").await?;
    op.scrape_until("the purged dead-letter queue at 0", |t| {
        value(t, &dlq_series) == Some(0.0)
    })
    .await?;

    // Deleted: no series of the worker is left.
    h.api.delete(name, &Default::default()).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while h.api.get_opt(name).await?.is_some() {
        anyhow::ensure!(Instant::now() < deadline, "worker not deleted");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let text = op
        .scrape_until("no series of the deleted worker", |t| !t.contains(&worker))
        .await?;
    assert!(text.contains("ecs_worker_operator_leader 1"), "{text}");
    Ok(())
}
