//! The README's quick start, run where it can be here: its `helm install` renders the chart
//! with its own flags, and its `kubectl` steps (apply the example, wait for Ready, read the
//! queue URL) run verbatim against the real API server with the controller and the emulator;
//! the printed `kubectl get ecsworkers` sample has the columns kubectl really prints.
//! (`aws` and `docker` steps need AWS and a container engine.)

use crate::common::Harness;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use testbed::{hack_path, run_in_repo as run};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn readme() -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(repo().join("README.md"))?)
}

/// The text from `heading` to the next `## ` heading.
fn section<'a>(text: &'a str, heading: &str) -> anyhow::Result<&'a str> {
    let start = text
        .find(heading)
        .ok_or_else(|| anyhow::anyhow!("README has no {heading:?}"))?;
    let rest = &text[start + heading.len()..];
    Ok(&rest[..rest.find("\n## ").unwrap_or(rest.len())])
}

/// Shell commands in the section's code blocks, continuation lines joined.
fn commands(section: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for line in section.lines() {
        let line = line.trim();
        if line.starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if !in_block {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => pending.push_str(part),
            None => {
                pending.push_str(line);
                out.push(std::mem::take(&mut pending));
            }
        }
    }
    out
}

fn the_command(commands: &[String], prefix: &str) -> anyhow::Result<Vec<String>> {
    let line = commands
        .iter()
        .find(|c| c.starts_with(prefix))
        .ok_or_else(|| anyhow::anyhow!("the quick start has no `{prefix} ...` command"))?;
    shlex::split(line).ok_or_else(|| anyhow::anyhow!("cannot split {line:?}"))
}

#[test]
fn the_quick_start_is_on_the_first_screen() -> anyhow::Result<()> {
    let text = readme()?;
    let start = text
        .find("## Quick start on AWS")
        .ok_or_else(|| anyhow::anyhow!("no quick start"))?;
    let last_step = text[start..]
        .find("7. ")
        .ok_or_else(|| anyhow::anyhow!("the quick start has no step 7"))?;
    let line = text[..start + last_step].lines().count();
    assert!(line <= 60, "the quick start's last step is on line {line}");
    Ok(())
}

#[test]
fn the_quick_start_helm_install_renders_with_its_own_flags() -> anyhow::Result<()> {
    let text = readme()?;
    let quick = commands(section(&text, "## Quick start on AWS")?);
    let mut args = the_command(&quick, "helm install")?;
    // `helm install NAME oci://...` -> `helm template NAME <the chart in this repository>`.
    args[1] = "template".into();
    let chart = args
        .iter_mut()
        .find(|a| a.starts_with("oci://"))
        .ok_or_else(|| anyhow::anyhow!("the helm install names no OCI chart"))?;
    anyhow::ensure!(
        chart.ends_with("/charts/ecs-worker-operator"),
        "unexpected chart {chart}"
    );
    *chart = repo()
        .join("charts/ecs-worker-operator")
        .display()
        .to_string();
    let home = tempfile::tempdir()?;
    let rendered = run(Command::new(hack_path("helm.sh", &[])?)
        .args(&args[1..])
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_DATA_HOME", home.path().join("data")))?;
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&rendered)
        .map(serde::Deserialize::deserialize)
        .collect::<Result<_, _>>()?;
    let account = docs
        .iter()
        .find(|d| d["kind"] == "ServiceAccount")
        .ok_or_else(|| anyhow::anyhow!("no ServiceAccount rendered"))?;
    assert_eq!(
        account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::<account>:role/ecs-worker-operator",
        "{account:?}"
    );
    assert_eq!(account["metadata"]["namespace"], "ecs-worker-operator");
    assert!(
        docs.iter().any(|d| d["kind"] == "CustomResourceDefinition"),
        "the install includes the CRD"
    );
    Ok(())
}

fn kubectl_in(kubeconfig: &Path, ns: &str, args: &[String]) -> anyhow::Result<String> {
    let bin = hack_path("k8s-tools.sh", &[])?.join("kubectl");
    run(Command::new(bin)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--namespace", ns])
        .args(args))
}

// kubectl runs as a blocking child process: the controller needs a thread of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_start_kubectl_steps_run_verbatim_and_the_sample_has_kubectls_columns()
-> anyhow::Result<()> {
    let text = readme()?;
    let quick = commands(section(&text, "## Quick start on AWS")?);
    let mut h = Harness::new("readme").await?;
    h.start_controller(Duration::ZERO);
    let kubeconfig = testbed::ControlPlane::shared()?.kubeconfig_path();

    // Step 4: apply the example and wait for Ready, as written.
    for prefix in ["kubectl apply", "kubectl wait"] {
        let args = the_command(&quick, prefix)?;
        if let Err(e) = kubectl_in(&kubeconfig, &h.ns, &args[1..]) {
            let status = h.api.get("video-encoder").await.map(|w| w.status);
            anyhow::bail!("{e}\nstatus: {status:?}");
        }
    }
    // Step 5: the queue URL, as written (the command substitution's inside).
    let line = quick
        .iter()
        .find(|c| c.starts_with("QUEUE_URL=$("))
        .ok_or_else(|| anyhow::anyhow!("no QUEUE_URL step"))?;
    let inner = line
        .trim_start_matches("QUEUE_URL=$(")
        .trim_end_matches(')');
    let args = shlex::split(inner).ok_or_else(|| anyhow::anyhow!("cannot split {inner:?}"))?;
    let url = kubectl_in(&kubeconfig, &h.ns, &args[1..])?;
    let w = h.api.get("video-encoder").await?;
    let expected = w
        .status
        .as_ref()
        .and_then(|s| s.resources.queue_url.clone())
        .ok_or_else(|| anyhow::anyhow!("no queue URL in status"))?;
    assert_eq!(url.trim(), expected);
    // The URL is the queue's: a message sent to it is there.
    let sqs = aws_sdk_sqs::Client::new(&h.sdk);
    sqs.send_message()
        .queue_url(url.trim())
        .message_body("{}")
        .send()
        .await?;

    // The sample's header is kubectl's; `-o wide` adds the reason and message.
    let mut samples = section(&text, "## The resource")?
        .lines()
        .filter(|l| l.starts_with("NAME "));
    let (sample, sample_wide) = samples
        .next()
        .zip(samples.next())
        .ok_or_else(|| anyhow::anyhow!("no `kubectl get ecsworkers` samples (plain and wide)"))?;
    let printed = kubectl_in(&kubeconfig, &h.ns, &["get".into(), "ecsworkers".into()])?;
    let words = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(
        words(sample),
        words(printed.lines().next().unwrap_or_default()),
        "kubectl printed:\n{printed}"
    );
    let wide = kubectl_in(
        &kubeconfig,
        &h.ns,
        &[
            "get".into(),
            "ecsworkers".into(),
            "-o".into(),
            "wide".into(),
        ],
    )?;
    let header = words(wide.lines().next().unwrap_or_default());
    assert_eq!(words(sample_wide), header, "kubectl printed:\n{wide}");
    assert!(
        header.ends_with(&["REASON".to_string(), "MESSAGE".to_string()]),
        "{wide}"
    );
    println!("{printed}\n{wide}");
    Ok(())
}
