//! The Argo CD side: the resource customizations of EcsSelfTerminatingWorker in
//! `deploy/argocd/resource_customizations/ecsworker.dev/EcsSelfTerminatingWorker/` and the
//! `argocd-cm` patch generated from them.
//!
//! - `hack/lua-test.sh` passes: Argo CD's own test format (`health_test.yaml`,
//!   `actions/action_test.yaml`) run by Lua 5.1 in Argo CD's sandbox, every test counted, every
//!   sample used, and the cases users sync by present (a long run is Healthy, 3 failed runs in
//!   a row are Degraded, InvalidSpec is Degraded, an unobserved generation is Progressing).
//! - The runner's YAML reader reads every file there as serde_yaml does.
//! - `deploy/argocd/argocd-cm-patch.yaml` is what `hack/argocd-cm.sh` generates and embeds the
//!   sources byte for byte; no field whose updates Argo CD is told to skip is in a health message.
//! - Every sample is a worker the real API server accepts, status included.
//! - The Application installs what exists in this repository.

use crate::common;

use ecs_worker_operator::api::EcsSelfTerminatingWorker;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde::Deserialize as _;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use testbed::TestNamespace;

const KIND_DIR: &str =
    "deploy/argocd/resource_customizations/ecsworker.dev/EcsSelfTerminatingWorker";
const KEY: &str = "ecsworker.dev_EcsSelfTerminatingWorker";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: impl AsRef<Path>) -> anyhow::Result<String> {
    let full = repo().join(path);
    std::fs::read_to_string(&full).map_err(|e| anyhow::anyhow!("{}: {e}", full.display()))
}

fn yaml(path: impl AsRef<Path>) -> anyhow::Result<serde_yaml::Value> {
    let text = read(&path)?;
    serde_yaml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.as_ref().display()))
}

/// Every `*.yaml` directly in `dir` (relative to the repository), sorted.
fn yaml_files(dir: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(repo().join(dir))? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) == Some("yaml") {
            out.push(path.strip_prefix(repo())?.to_path_buf());
        }
    }
    out.sort();
    Ok(out)
}

/// Every worker sample: the health test inputs and the action test inputs and outputs.
fn samples() -> anyhow::Result<Vec<PathBuf>> {
    let mut out = yaml_files(&format!("{KIND_DIR}/testdata"))?;
    out.extend(yaml_files(&format!("{KIND_DIR}/actions/testdata"))?);
    anyhow::ensure!(!out.is_empty(), "no samples in {KIND_DIR}");
    Ok(out)
}

/// `(inputPath, status, message)` of every test in health_test.yaml.
fn health_tests() -> anyhow::Result<Vec<(String, String, String)>> {
    let tests = yaml(format!("{KIND_DIR}/health_test.yaml"))?;
    let mut out = Vec::new();
    for t in tests["tests"].as_sequence().into_iter().flatten() {
        let field = |v: &serde_yaml::Value| v.as_str().unwrap_or_default().to_string();
        out.push((
            field(&t["inputPath"]),
            field(&t["healthStatus"]["status"]),
            field(&t["healthStatus"]["message"]),
        ));
    }
    Ok(out)
}

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.current_dir(repo()).output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?} failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

#[test]
fn argo_cd_health_and_action_tests_pass_in_argo_cds_own_format() -> anyhow::Result<()> {
    let stdout = run(&mut Command::new(repo().join("hack/lua-test.sh")))?;
    let health = health_tests()?;
    let actions = yaml(format!("{KIND_DIR}/actions/action_test.yaml"))?;
    let discovery = actions["discoveryTests"].as_sequence().map_or(0, Vec::len);
    let action = actions["actionTests"].as_sequence().map_or(0, Vec::len);
    assert!(
        discovery > 0 && action > 0,
        "action_test.yaml tests nothing"
    );
    let total = health.len() + discovery + action;
    assert!(
        stdout
            .lines()
            .any(|l| l.trim() == format!("{total} passed, 0 failed")),
        "expected {total} tests to pass:\n{stdout}"
    );

    // Every health sample is tested, and each only once.
    let inputs: Vec<&str> = health.iter().map(|(i, _, _)| i.as_str()).collect();
    let tested: BTreeSet<&str> = inputs.iter().copied().collect();
    assert_eq!(tested.len(), inputs.len(), "an input is tested twice");
    let on_disk: BTreeSet<String> = yaml_files(&format!("{KIND_DIR}/testdata"))?
        .iter()
        .map(|p| {
            format!(
                "testdata/{}",
                p.file_name().unwrap_or_default().to_string_lossy()
            )
        })
        .collect();
    assert_eq!(
        on_disk,
        tested
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>(),
        "every sample in testdata/ is a test of health_test.yaml"
    );
    // Every message is asserted, and the cases GitOps users sync by are there.
    assert!(health.iter().all(|(_, _, m)| !m.is_empty()));
    let status_of = |input: &str| {
        health
            .iter()
            .find(|(i, _, _)| i == input)
            .map(|(_, s, _)| s.as_str())
    };
    for (input, want) in [
        ("testdata/long-running.yaml", "Healthy"),
        ("testdata/scaling-up.yaml", "Healthy"),
        ("testdata/suspended.yaml", "Healthy"),
        ("testdata/last-run-failed.yaml", "Healthy"),
        ("testdata/two-runs-failed.yaml", "Healthy"),
        ("testdata/three-runs-failed.yaml", "Degraded"),
        ("testdata/invalid-spec.yaml", "Degraded"),
        ("testdata/generation-not-observed.yaml", "Progressing"),
        ("testdata/provisioning.yaml", "Progressing"),
        ("testdata/deleting.yaml", "Progressing"),
    ] {
        assert_eq!(status_of(input), Some(want), "{input}");
    }
    let covered: BTreeSet<&str> = health.iter().map(|(_, s, _)| s.as_str()).collect();
    assert_eq!(
        covered,
        BTreeSet::from(["Degraded", "Healthy", "Progressing"])
    );
    Ok(())
}

#[test]
fn the_lua_runner_reads_every_yaml_file_as_serde_yaml_does() -> anyhow::Result<()> {
    let mut files = yaml_files(KIND_DIR)?;
    files.extend(samples()?);
    files.extend(yaml_files(&format!("{KIND_DIR}/actions"))?);
    let stdout = run(Command::new(repo().join("hack/lua-test.sh"))
        .arg("--json")
        .args(&files))?;
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), files.len(), "{stdout}");
    for (path, line) in files.iter().zip(lines) {
        let by_lua: serde_json::Value = serde_json::from_str(line)?;
        let by_serde: serde_json::Value = serde_yaml::from_str(&read(path)?)?;
        assert_eq!(by_lua, by_serde, "{} is read differently", path.display());
    }
    Ok(())
}

#[test]
fn argocd_cm_patch_is_generated_from_the_customizations() -> anyhow::Result<()> {
    let generated = run(Command::new(repo().join("hack/argocd-cm.sh")).arg("--stdout"))?;
    assert!(
        read("deploy/argocd/argocd-cm-patch.yaml")? == generated,
        "deploy/argocd/argocd-cm-patch.yaml is stale: run `make argocd` and commit it"
    );

    // What Argo CD reads from it is the sources, byte for byte.
    let patch: serde_yaml::Value = serde_yaml::from_str(&generated)?;
    assert_eq!(patch["kind"].as_str(), Some("ConfigMap"));
    assert_eq!(patch["metadata"]["name"].as_str(), Some("argocd-cm"));
    assert_eq!(patch["metadata"]["namespace"].as_str(), Some("argocd"));
    let data = &patch["data"];
    let health = read(format!("{KIND_DIR}/health.lua"))?;
    assert_eq!(
        data[format!("resource.customizations.health.{KEY}").as_str()].as_str(),
        Some(health.as_str())
    );
    let actions: serde_yaml::Value = serde_yaml::from_str(
        data[format!("resource.customizations.actions.{KEY}").as_str()]
            .as_str()
            .unwrap_or_default(),
    )?;
    assert_eq!(
        actions["discovery.lua"].as_str(),
        Some(read(format!("{KIND_DIR}/actions/discovery.lua"))?.as_str())
    );
    let definitions = actions["definitions"]
        .as_sequence()
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = definitions
        .iter()
        .filter_map(|d| d["name"].as_str())
        .collect();
    assert_eq!(names, ["run-now"]);
    assert_eq!(
        definitions[0]["action.lua"].as_str(),
        Some(read(format!("{KIND_DIR}/actions/run-now/action.lua"))?.as_str())
    );
    let ignore_text = data[format!("resource.customizations.ignoreResourceUpdates.{KEY}").as_str()]
        .as_str()
        .unwrap_or_default();
    assert_eq!(
        ignore_text,
        read(format!("{KIND_DIR}/ignore_resource_updates.yaml"))?
    );

    // The fields that change on every tick are skipped, and no health message shows them
    // (Argo CD would keep showing a stale value).
    let ignore: serde_yaml::Value = serde_yaml::from_str(ignore_text)?;
    let pointers: Vec<&str> = ignore["jsonPointers"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_str())
        .collect();
    for volatile in ["/status/queue", "/status/nextRunTime"] {
        assert!(pointers.contains(&volatile), "{volatile} is not ignored");
    }
    for pointer in &pointers {
        let field = pointer.trim_start_matches('/').replace('/', ".");
        assert!(
            !health.contains(&field),
            "health.lua reads {field}, whose updates Argo CD is told to skip"
        );
    }
    let messages: Vec<(String, String, String)> = health_tests()?;
    for (input, _, message) in &messages {
        let sample = yaml(format!("{KIND_DIR}/{input}"))?;
        if let Some(next) = sample["status"]["nextRunTime"].as_str() {
            assert!(!message.contains(next), "{input}: {message}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn argo_cd_samples_are_workers_the_api_server_accepts() -> anyhow::Result<()> {
    let t = TestNamespace::new("argocd").await?;
    common::install_crd(&t.client).await?;
    let workers: Api<EcsSelfTerminatingWorker> = Api::namespaced(t.client.clone(), &t.name);
    // Untyped, so the status is compared as the API server returns it.
    let raw: Api<DynamicObject> = Api::namespaced_with(
        t.client.clone(),
        &t.name,
        &ApiResource::erase::<EcsSelfTerminatingWorker>(&()),
    );
    let mut names = BTreeSet::new();
    for path in samples()? {
        let text = read(&path)?;
        let at = |e: &dyn std::fmt::Display| anyhow::anyhow!("{}: {e}", path.display());
        let mut sample: EcsSelfTerminatingWorker =
            serde_yaml::from_str(&text).map_err(|e| at(&e))?;
        let status: serde_json::Value = serde_yaml::from_str::<serde_json::Value>(&text)
            .map_err(|e| at(&e))?
            .get("status")
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        if sample
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .map(|p| format!("{p:?}"))
            == Some("Suspended".into())
        {
            assert!(
                sample.spec.suspend,
                "{}: Suspended without spec.suspend",
                path.display()
            );
        }
        // The object as a user applies it (the API server sets generation and deletion).
        let name = format!(
            "{}-{}",
            sample.metadata.name.clone().unwrap_or_default(),
            names.len()
        );
        names.insert(name.clone());
        sample.metadata.name = Some(name.clone());
        sample.metadata.namespace = Some(t.name.clone());
        sample.metadata.generation = None;
        sample.metadata.deletion_timestamp = None;
        sample.metadata.finalizers = None;
        sample.status = None;
        workers
            .create(&PostParams::default(), &sample)
            .await
            .map_err(|e| at(&e))?;
        if status.is_null() {
            continue;
        }
        // The status as the operator writes it: validated against the CRD's status schema
        // (dry run), nothing pruned as unknown.
        let written = raw
            .patch_status(
                &name,
                &PatchParams {
                    dry_run: true,
                    ..Default::default()
                },
                &Patch::Merge(serde_json::json!({ "status": status })),
            )
            .await
            .map_err(|e| at(&e))?;
        let kept = &written.data["status"];
        if let Some(lost) = missing(kept, &status, "status") {
            anyhow::bail!(
                "{}: the API server does not keep {lost} of the status as written (a field the CRD lacks?)",
                path.display()
            );
        }
    }
    Ok(())
}

/// The first part of `wanted` that `got` lacks or holds with another value (`got` may have
/// more: the API server adds the schema's defaults); None when `got` holds all of it.
fn missing(got: &serde_json::Value, wanted: &serde_json::Value, at: &str) -> Option<String> {
    use serde_json::Value;
    match (got, wanted) {
        (Value::Object(got), Value::Object(wanted)) => wanted.iter().find_map(|(k, w)| {
            let here = format!("{at}.{k}");
            match got.get(k) {
                Some(g) => missing(g, w, &here),
                None => Some(here),
            }
        }),
        (Value::Array(got), Value::Array(wanted)) if got.len() == wanted.len() => got
            .iter()
            .zip(wanted)
            .enumerate()
            .find_map(|(i, (g, w))| missing(g, w, &format!("{at}[{i}]"))),
        _ if got == wanted => None,
        _ => Some(format!("{at} ({wanted} became {got})")),
    }
}

#[test]
fn argo_cd_application_installs_what_this_repository_has() -> anyhow::Result<()> {
    let text = read("deploy/argocd/application.yaml")?;
    let apps: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(serde_yaml::Value::deserialize)
        .collect::<Result<_, _>>()?;
    let paths: Vec<&str> = apps[0]["spec"]["sources"]
        .as_sequence()
        .map(|s| s.iter().filter_map(|s| s["path"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(paths, ["crds", "deploy"]);
    for p in paths {
        assert!(repo().join(p).is_dir(), "{p}");
    }
    assert_eq!(
        apps[0]["spec"]["destination"]["namespace"].as_str(),
        Some("ecs-worker-operator")
    );
    Ok(())
}
