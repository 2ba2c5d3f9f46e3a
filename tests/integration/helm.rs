//! The Helm chart (`charts/ecs-worker-operator`) against the kustomize install and the real API
//! server, with `helm` built from the Go module proxy (`hack/helm.sh`).
//!
//! - `helm lint --strict` passes for the default values and for the two value sets in the
//!   chart's `ci/` (every value away from its default; every optional object off).
//! - The default render and `kubectl kustomize deploy/` plus `crds/` are the same objects once
//!   the differences listed in [`INTENDED_DIFFERENCES`] (and in the chart README) are taken out.
//! - Every render applies with `kubectl apply --server-side --dry-run=server --validate=strict`
//!   on the shared control plane, the ServiceMonitor and PrometheusRule against the Prometheus
//!   Operator's own CRDs (`hack/prometheus-operator-crds.sh`).
//! - The PrometheusRule carries deploy/monitoring's rule groups (the chart's file links to it).
//! - The CRD keeps itself: `helm.sh/resource-policy: keep` from the chart (unless
//!   `crds.keep: false`), Argo CD's `Prune=false,Delete=false` from the generated YAML, and the
//!   chart's CRD file is a link to the generated one.
//! - The tool-cache scripts started twice at once on an empty cache both succeed and build once.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use testbed::{ControlPlane, TestNamespace};

const CHART: &str = "charts/ecs-worker-operator";
const CRD_FILE: &str = "crds/ecsselfterminatingworkers.ecsworker.dev.yaml";
const CHART_CRD_FILE: &str =
    "charts/ecs-worker-operator/files/ecsselfterminatingworkers.ecsworker.dev.yaml";
const ALL_TOGGLES: &str = "charts/ecs-worker-operator/ci/all-toggles-values.yaml";
const MINIMAL: &str = "charts/ecs-worker-operator/ci/minimal-values.yaml";

/// What the chart's default render adds to or changes from `deploy/` on purpose; each is one
/// step of [`normalize_helm`] (and a row of "Differences from deploy/" in the chart README).
const INTENDED_DIFFERENCES: &[&str] = &[
    "Helm's standard labels on every object: helm.sh/chart, app.kubernetes.io/version, app.kubernetes.io/managed-by=Helm (kustomize: managed-by=kustomize)",
    "app.kubernetes.io/instance=<release> on every object and in every selector, so two releases never select each other's pods",
    "the pod template carries the common labels too (kustomize labels metadata only)",
    "app.kubernetes.io/component=metrics on the metrics Service, which the ServiceMonitor selects",
    "the CRD is part of the release (crds.install) with helm.sh/resource-policy: keep (crds.keep) and the chart's labels",
    "no Namespace: `helm install --create-namespace` creates it, or namespace.create=true renders it with the same Pod Security labels",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

use testbed::{hack_path as hack, run_in_repo as run};

/// The cached `helm` binary (`hack/helm.sh` pins the version), built on first use.
fn helm_bin() -> anyhow::Result<PathBuf> {
    hack("helm.sh", &[])
}

/// `helm` with its caches and configuration in `home`, so a test reads no user settings.
fn helm(home: &Path) -> anyhow::Result<Command> {
    let mut cmd = Command::new(helm_bin()?);
    cmd.env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env_remove("KUBECONFIG");
    Ok(cmd)
}

/// `helm template RELEASE chart -n NAMESPACE ARGS`, parsed.
fn render(home: &Path, release: &str, namespace: &str, args: &[&str]) -> anyhow::Result<Docs> {
    let yaml = run(helm(home)?
        .args(["template", release, CHART, "--namespace", namespace])
        .args(args))?;
    parse(&yaml)
}

type Docs = Vec<Value>;

/// Every non-empty document of a YAML stream.
fn parse(yaml: &str) -> anyhow::Result<Docs> {
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value: Value = serde::Deserialize::deserialize(doc)?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// `kind/namespace/name` of an object.
fn key(object: &Value) -> String {
    let meta = &object["metadata"];
    format!(
        "{}/{}/{}",
        object["kind"].as_str().unwrap_or("?"),
        meta["namespace"].as_str().unwrap_or(""),
        meta["name"].as_str().unwrap_or("?")
    )
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> anyhow::Result<&'a Value> {
    match find(docs, kind).as_slice() {
        [d] => Ok(d),
        other => anyhow::bail!("expected one {kind}, found {}", other.len()),
    }
}

/// Removes `keys` from every label map and label selector in `value`.
fn strip_labels(value: &mut Value, keys: &[&str]) {
    match value {
        Value::Object(map) => {
            for (field, inner) in map.iter_mut() {
                if matches!(field.as_str(), "labels" | "matchLabels" | "selector")
                    && let Value::Object(labels) = inner
                {
                    for k in keys {
                        labels.remove(*k);
                    }
                }
                strip_labels(inner, keys);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| strip_labels(i, keys)),
        _ => {}
    }
}

/// The chart's default render with [`INTENDED_DIFFERENCES`] taken out.
fn normalize_helm(docs: Docs) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for mut d in docs {
        // Helm's labels, the release instance (labels and selectors), the component label.
        strip_labels(
            &mut d,
            &[
                "helm.sh/chart",
                "app.kubernetes.io/version",
                "app.kubernetes.io/managed-by",
                "app.kubernetes.io/instance",
                "app.kubernetes.io/component",
            ],
        );
        // The pod template carries the common labels too.
        if let Some(labels) = d
            .pointer_mut("/spec/template/metadata/labels")
            .and_then(Value::as_object_mut)
        {
            labels.remove("app.kubernetes.io/part-of");
        }
        out.insert(key(&d), d);
    }
    out
}

/// `kubectl kustomize deploy/` with kustomize's managed-by label taken out.
fn normalize_kustomize(docs: Docs) -> BTreeMap<String, Value> {
    docs.into_iter()
        .map(|mut d| {
            strip_labels(&mut d, &["app.kubernetes.io/managed-by"]);
            (key(&d), d)
        })
        .collect()
}

fn kubectl_bin() -> anyhow::Result<PathBuf> {
    Ok(hack("k8s-tools.sh", &[])?.join("kubectl"))
}

fn read(path: &str) -> anyhow::Result<String> {
    let full = repo().join(path);
    std::fs::read_to_string(&full).map_err(|e| anyhow::anyhow!("{}: {e}", full.display()))
}

/// `value` with every number as a float: the generated CRD writes `maximum: 100.0` where Helm's
/// YAML round trip writes `100`, the same JSON number to the API server.
fn numbers_as_floats(value: &Value) -> Value {
    match value {
        Value::Number(n) => n.as_f64().map(Value::from).unwrap_or(Value::Null),
        Value::Array(items) => Value::Array(items.iter().map(numbers_as_floats).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), numbers_as_floats(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn pretty(v: &Value) -> String {
    serde_yaml::to_string(v).unwrap_or_else(|e| e.to_string())
}

#[test]
fn helm_lint_passes_for_the_default_and_both_ci_value_sets() -> anyhow::Result<()> {
    let home = tempfile::tempdir()?;
    for values in [None, Some(ALL_TOGGLES), Some(MINIMAL)] {
        let mut cmd = helm(home.path())?;
        cmd.args(["lint", "--strict", CHART]);
        if let Some(v) = values {
            cmd.args(["--values", v]);
        }
        let out = run(&mut cmd)?;
        assert!(out.contains("0 chart(s) failed"), "{values:?}: {out}");
    }
    // Lint is not a rubber stamp: values.schema.json refuses a misspelt key and a wrong type.
    for bad in ["serviceAcount.create=false", "replicas=two"] {
        let out = helm(home.path())?
            .args(["lint", "--strict", CHART, "--set", bad])
            .current_dir(repo())
            .output()?;
        assert!(!out.status.success(), "lint accepted {bad}");
    }
    // A ServiceAccount that is neither created nor named does not render.
    let out = helm(home.path())?
        .args([
            "template",
            "r",
            CHART,
            "--set",
            "serviceAccount.create=false",
        ])
        .current_dir(repo())
        .output()?;
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("serviceAccount.name is required"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn default_render_is_the_kustomize_install_plus_the_crd() -> anyhow::Result<()> {
    let home = tempfile::tempdir()?;
    let helm_docs = render(
        home.path(),
        "ecs-worker-operator",
        "ecs-worker-operator",
        &[],
    )?;
    let kustomize = normalize_kustomize(parse(&run(
        Command::new(kubectl_bin()?).args(["kustomize", "deploy/"])
    )?)?);
    let generated_crd = parse(&read(CRD_FILE)?)?.remove(0);

    // The CRD: the generated one, with the chart's keep annotation and labels.
    let crd = one(&helm_docs, "CustomResourceDefinition")?.clone();
    assert_eq!(
        crd.pointer("/metadata/annotations/helm.sh~1resource-policy"),
        Some(&Value::from("keep")),
        "{}",
        pretty(&crd["metadata"])
    );
    assert_eq!(
        crd.pointer("/metadata/annotations/argocd.argoproj.io~1sync-options"),
        Some(&Value::from("Prune=false,Delete=false")),
    );
    let mut chart_crd = crd.clone();
    let meta = chart_crd["metadata"].as_object_mut().expect("metadata");
    meta.remove("labels");
    meta["annotations"]
        .as_object_mut()
        .expect("annotations")
        .remove("helm.sh/resource-policy");
    assert!(
        numbers_as_floats(&chart_crd) == numbers_as_floats(&generated_crd),
        "the chart's CRD differs from {CRD_FILE}"
    );

    // Everything else: the objects of deploy/, but for the documented differences.
    let mut chart = normalize_helm(helm_docs);
    chart.retain(|_, d| d["kind"] != "CustomResourceDefinition");
    let namespace = kustomize
        .get("Namespace//ecs-worker-operator")
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("deploy/ has no Namespace"))?;
    let mut expected = kustomize.clone();
    expected.remove("Namespace//ecs-worker-operator");
    let chart_keys: Vec<_> = chart.keys().collect();
    let expected_keys: Vec<_> = expected.keys().collect();
    assert_eq!(chart_keys, expected_keys, "different objects");
    for (k, want) in &expected {
        assert!(
            chart[k] == *want,
            "{k} differs from deploy/ beyond the intended differences {INTENDED_DIFFERENCES:#?}\n--- chart:\n{}--- deploy/:\n{}",
            pretty(&chart[k]),
            pretty(want)
        );
    }

    // namespace.create renders deploy/'s Namespace.
    let with_ns = normalize_helm(render(
        home.path(),
        "ecs-worker-operator",
        "ecs-worker-operator",
        &["--set", "namespace.create=true"],
    )?);
    assert_eq!(
        with_ns.get("Namespace//ecs-worker-operator"),
        Some(&namespace),
        "namespace.create=true"
    );
    Ok(())
}

#[test]
fn the_chart_crd_is_the_generated_crd_and_keeps_itself() -> anyhow::Result<()> {
    // One CRD: the chart's file is a link to the generated one (`helm package` stores its
    // content), so it cannot go stale.
    let link = std::fs::read_link(repo().join(CHART_CRD_FILE))?;
    assert_eq!(
        repo()
            .join(CHART_CRD_FILE)
            .parent()
            .map(|d| d.join(&link).canonicalize())
            .transpose()?,
        Some(repo().join(CRD_FILE).canonicalize()?),
        "{CHART_CRD_FILE} -> {link:?}"
    );
    let home = tempfile::tempdir()?;
    let annotations = |args: &[&str]| -> anyhow::Result<Option<Value>> {
        let docs = render(home.path(), "r", "ns", args)?;
        Ok(find(&docs, "CustomResourceDefinition")
            .first()
            .map(|crd| crd["metadata"]["annotations"].clone()))
    };
    let kept = annotations(&[])?.expect("a CRD by default");
    assert_eq!(kept["helm.sh/resource-policy"], "keep");
    assert_eq!(
        kept["argocd.argoproj.io/sync-options"],
        "Prune=false,Delete=false"
    );
    let not_kept = annotations(&["--set", "crds.keep=false"])?.expect("a CRD");
    assert!(not_kept.get("helm.sh/resource-policy").is_none());
    assert_eq!(
        not_kept["argocd.argoproj.io/sync-options"],
        "Prune=false,Delete=false"
    );
    assert_eq!(annotations(&["--set", "crds.install=false"])?, None);

    // Argo CD: the generated CRD syncs first and is never pruned or deleted, and the example
    // Applications apply server-side.
    let crd = parse(&read(CRD_FILE)?)?.remove(0);
    assert_eq!(
        crd["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"],
        "-1"
    );
    let apps = parse(&read("deploy/argocd/application.yaml")?)?;
    let installs: Vec<&Value> = apps
        .iter()
        .filter(|a| {
            a["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .starts_with("ecs-worker-operator")
        })
        .collect();
    assert_eq!(installs.len(), 2, "the deploy/ and the chart Applications");
    for app in installs {
        let options = app["spec"]["syncPolicy"]["syncOptions"].clone();
        assert!(
            options
                .as_array()
                .is_some_and(|o| o.contains(&Value::from("ServerSideApply=true"))),
            "{}: {options}",
            app["metadata"]["name"]
        );
        assert!(
            app["metadata"]["finalizers"].is_null(),
            "deleting the Application must not cascade"
        );
    }
    Ok(())
}

/// `kubectl apply --server-side --dry-run=server --validate=strict` of `docs`; its output.
fn dry_run(cp: &ControlPlane, dir: &Path, name: &str, docs: &[Value]) -> anyhow::Result<String> {
    let path = dir.join(format!("{name}.yaml"));
    let mut yaml = String::new();
    for d in docs {
        yaml.push_str("---\n");
        yaml.push_str(&serde_yaml::to_string(d)?);
    }
    std::fs::write(&path, yaml)?;
    let out = run(cp
        .kubectl()
        .args([
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager",
            "helm-chart-test",
            "--dry-run=server",
            "--validate=strict",
            "-f",
        ])
        .arg(&path))?;
    // kubectl prints `kind.group/name serverside-applied (server dry run)` per object.
    for d in docs {
        let name = d["metadata"]["name"].as_str().unwrap_or("?");
        let kind = d["kind"].as_str().unwrap_or("?").to_lowercase();
        assert!(
            out.lines().any(|l| l.starts_with(&kind)
                && l.ends_with(&format!("/{name} serverside-applied (server dry run)"))),
            "{kind}/{name} missing from\n{out}"
        );
    }
    Ok(out)
}

#[tokio::test]
async fn every_render_applies_to_the_real_api_server() -> anyhow::Result<()> {
    let cp = ControlPlane::shared()?;
    // The Prometheus Operator's CRDs, for the ServiceMonitor and PrometheusRule.
    let monitoring_crds = hack("prometheus-operator-crds.sh", &[])?;
    run(cp
        .kubectl()
        .args(["apply", "--server-side", "--force-conflicts", "-f"])
        .arg(&monitoring_crds))?;
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

    let release_ns = TestNamespace::new("helm").await?;
    let workers_ns = TestNamespace::new("helm-workers").await?;
    let home = tempfile::tempdir()?;
    let ns = release_ns.name.as_str();

    let default = render(home.path(), "ecs-worker-operator", ns, &[])?;
    let all = render(
        home.path(),
        "everything",
        ns,
        &[
            "--values",
            ALL_TOGGLES,
            "--set",
            &format!("watchNamespace={}", workers_ns.name),
        ],
    )?;
    let minimal = render(home.path(), "minimal", ns, &["--values", MINIMAL])?;

    // What the toggles select, before the server sees it.
    let deployment = one(&all, "Deployment")?;
    let env: BTreeMap<&str, &str> = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| Some((e["name"].as_str()?, e["value"].as_str()?)))
        .collect();
    assert_eq!(env.get("WATCH_NAMESPACE"), Some(&workers_ns.name.as_str()));
    assert_eq!(env.get("LABEL_SELECTOR"), Some(&"shard=a"));
    assert_eq!(env.get("CLUSTER_ID"), Some(&"prod-eu-1"));
    assert_eq!(env.get("METRICS_ADDR"), Some(&"0.0.0.0:9090"));
    assert!(
        find(&all, "ClusterRole").is_empty(),
        "watchNamespace + clusterId need no ClusterRole"
    );
    assert!(
        find(&all, "Role")
            .iter()
            .any(|r| r["metadata"]["namespace"] == workers_ns.name.as_str()),
        "no Role in the watched namespace"
    );
    assert_eq!(
        one(&all, "ServiceAccount")?["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::123456789012:role/ecs-worker-operator"
    );
    for kind in [
        "ServiceMonitor",
        "PrometheusRule",
        "Namespace",
        "CustomResourceDefinition",
    ] {
        one(&all, kind)?;
    }
    // The PrometheusRule holds deploy/monitoring's rule groups, then the extra ones.
    let monitoring = parse(&read("deploy/monitoring/prometheusrule.yaml")?)?.remove(0);
    let mut groups = monitoring["spec"]["groups"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        !groups.is_empty(),
        "deploy/monitoring/prometheusrule.yaml has no groups"
    );
    groups.push(serde_json::json!({
        "name": "ecs-worker-operator-extra",
        "rules": [{
            "alert": "EcsWorkerOperatorDown",
            "expr": "absent(up{job=\"workers-operator-metrics\"} == 1)",
            "for": "10m",
            "labels": {"severity": "critical"},
            "annotations": {"summary": "No ecs-worker-operator replica is scraped."}
        }]
    }));
    assert_eq!(
        one(&all, "PrometheusRule")?["spec"]["groups"],
        Value::Array(groups)
    );
    let kinds: Vec<&str> = minimal.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        ["Deployment"],
        "minimal values render only the Deployment"
    );

    // The API server accepts every object of every render (strict field validation).
    let dir = tempfile::tempdir()?;
    dry_run(cp, dir.path(), "default", &default)?;
    dry_run(cp, dir.path(), "all-toggles", &all)?;
    dry_run(cp, dir.path(), "minimal", &minimal)?;

    // And refuses a broken one: the dry run is a real check.
    let mut broken = default.clone();
    for d in broken.iter_mut().filter(|d| d["kind"] == "Deployment") {
        d["spec"]["template"]["spec"]["containers"][0]["notAField"] = Value::from(true);
    }
    assert!(
        dry_run(cp, dir.path(), "broken", &broken).is_err(),
        "an unknown field passed strict validation"
    );
    Ok(())
}

/// The tool-cache scripts (hack/lib.sh `with_lock`): two first runs started at once on an empty
/// cache both succeed, print the same path, and only one of them builds.
#[test]
fn two_first_runs_of_a_tool_cache_script_both_succeed() -> anyhow::Result<()> {
    let cache = tempfile::tempdir()?;
    let start = |script: &str, args: &[&str]| {
        Command::new(repo().join("hack").join(script))
            .args(args)
            .env("ECS_WORKER_CACHE", cache.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
    };
    // A Go command built from the module proxy (Go's build cache makes the second build of
    // the same module quick, so this takes seconds once actionlint was built anywhere), and
    // the Prometheus Operator CRDs fetched from it.
    let cases: [(&str, &[&str], &str); 2] = [
        (
            "go-tool.sh",
            &[
                "actionlint",
                "github.com/rhysd/actionlint/cmd/actionlint",
                "v1.7.12",
            ],
            "building actionlint",
        ),
        ("prometheus-operator-crds.sh", &[], ""),
    ];
    for (script, args, build_message) in cases {
        let first = start(script, args)?;
        let second = start(script, args)?;
        let outputs = [first.wait_with_output()?, second.wait_with_output()?];
        for out in &outputs {
            assert!(
                out.status.success(),
                "{script}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let paths: Vec<String> = outputs
            .iter()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .collect();
        assert_eq!(paths[0], paths[1], "{script}");
        let path = Path::new(&paths[0]);
        assert!(path.starts_with(cache.path()), "{path:?}");
        assert!(path.exists(), "{path:?}");
        if !build_message.is_empty() {
            let builds = outputs
                .iter()
                .filter(|o| String::from_utf8_lossy(&o.stderr).contains(build_message))
                .count();
            assert_eq!(builds, 1, "{script} built {builds} times");
            let version = run(Command::new(path).arg("-version"))?;
            assert!(version.contains("1.7.12"), "{version}");
        }
        // Nothing half-built is left behind.
        let leftovers: Vec<_> = std::fs::read_dir(cache.path())?
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.') && !n.ends_with(".lock"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
    Ok(())
}
