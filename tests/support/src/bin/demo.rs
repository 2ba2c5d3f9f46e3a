//! `make demo`: the whole product on this machine, with nothing but local processes.
//!
//! Starts a real kube-apiserver + etcd and the moto AWS emulator, installs the CRD, runs the
//! operator, applies `examples/worker.yaml` with a short schedule, queues a batch of messages
//! and plays the ECS agent by running the REAL worker binary for each task the operator
//! starts. Shows `kubectl get ecsworkers` as the worker goes Idle -> ScalingUp -> Running ->
//! Idle, checks the queue is drained and capacity is back at zero, deletes the worker, and
//! stops everything it started.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testbed::agent::{Agent, Play, Player};
use testbed::{ControlPlane, Moto};

const NS: &str = "demo";
const NAME: &str = "video-encoder";
const MESSAGES: usize = 25;

fn step(text: &str) {
    println!("\n==> {text}");
}

fn kubectl(cp: &ControlPlane, args: &[&str]) -> anyhow::Result<String> {
    let out = cp.kubectl().args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn status(cp: &ControlPlane) -> anyhow::Result<serde_json::Value> {
    let text = kubectl(cp, &["get", "ecsworker", NAME, "-n", NS, "-o", "json"])?;
    Ok(serde_json::from_str::<serde_json::Value>(&text)?["status"].clone())
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    testbed::control_plane::install_crypto_provider();
    let started = Instant::now();
    let root = testbed::repo_root();
    let bin = target_dir(&root).join("debug");
    let (operator, worker) = (bin.join("ecs-worker-operator"), bin.join("ecs-worker"));
    anyhow::ensure!(
        operator.exists() && worker.exists(),
        "build first: cargo build --workspace --bins"
    );

    step(
        "starting a local Kubernetes API server (etcd + kube-apiserver) and the moto AWS emulator",
    );
    let cp = ControlPlane::start().await?;
    let moto = Moto::start().await?;
    println!(
        "    API server {}   AWS emulator {}",
        cp.server_url(),
        moto.endpoint()
    );
    println!("    kubeconfig: {}", cp.kubeconfig_path().display());

    step("installing the CRD and a namespace");
    print!(
        "{}",
        kubectl(
            &cp,
            &["apply", "-f", &root.join("crds").display().to_string()]
        )?
    );
    kubectl(&cp, &["create", "namespace", NS])?;

    step("running the operator (its log: demo-operator.log in the kubeconfig's folder)");
    let log_path = cp.kubeconfig_path().with_file_name("demo-operator.log");
    let log = std::fs::File::create(&log_path)?;
    let mut cmd = Command::new(&operator);
    cmd.args([
        "run",
        "--namespace",
        NS,
        "--aws-endpoint",
        moto.endpoint(),
        "--emulator-credentials",
    ])
    .arg("--kubeconfig")
    .arg(cp.kubeconfig_path())
    .args([
        "--metrics-addr",
        &format!("127.0.0.1:{}", testbed::free_port()),
    ])
    .stdout(Stdio::from(log.try_clone()?))
    .stderr(Stdio::from(log));
    let _operator = testbed::process::spawn("operator", cmd)?;

    step("applying examples/worker.yaml with a 10-second schedule and a fast local worker");
    let mut w: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(root.join("examples/worker.yaml"))?)?;
    let handler = root.join("worker/examples/handler.py");
    let handler = if handler.exists() {
        format!("python3 {}", handler.display())
    } else {
        "cat > /dev/null".to_string()
    };
    let spec = &mut w["spec"];
    spec["cronRate"] = "10_SECONDS".into();
    spec["queue"]["receiveWaitTimeSeconds"] = 1.into();
    spec["worker"]["handler"] = handler.clone().into();
    spec["worker"]["emptyReceives"] = 1.into();
    let manifest = std::env::temp_dir().join(format!("demo-worker-{}.yaml", std::process::id()));
    std::fs::write(&manifest, serde_yaml::to_string(&w)?)?;
    print!(
        "{}",
        kubectl(
            &cp,
            &["apply", "-n", NS, "-f", &manifest.display().to_string()]
        )?
    );
    let _ = std::fs::remove_file(&manifest);
    println!("    handler: {handler}");

    let deadline = Instant::now() + Duration::from_secs(60);
    let queue_url = loop {
        let s = status(&cp)?;
        let ready = s["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        if ready && let Some(url) = s["resources"]["queueUrl"].as_str() {
            break url.to_string();
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "worker not Ready within 60 s: {s}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    print!("{}", kubectl(&cp, &["get", "ecsworkers", "-n", NS])?);

    step(&format!(
        "sending {MESSAGES} messages to the queue; the ECS agent is played locally, running target/debug/ecs-worker for each task"
    ));
    let config = moto.sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    for i in 0..MESSAGES {
        sqs.send_message()
            .queue_url(&queue_url)
            .message_body(format!("{{\"video\": \"clip-{i:02}.mp4\"}}"))
            .send()
            .await?;
    }
    let s = status(&cp)?;
    let resources = &s["resources"];
    let agent = Agent::new(
        &config,
        resources["clusterArn"]
            .as_str()
            .unwrap_or_default()
            .rsplit('/')
            .next()
            .unwrap_or_default(),
        resources["autoScalingGroupName"]
            .as_str()
            .unwrap_or_default(),
    );
    let player = Player::start(
        agent.clone(),
        Play::RealWorker {
            binary: worker.clone(),
            endpoint: moto.endpoint().to_string(),
            extra_env: vec![],
        },
    );

    step("watching the worker: Idle -> ScalingUp -> Running -> Idle");
    let mut last_phase = String::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let s = status(&cp)?;
        let phase = s["phase"].as_str().unwrap_or_default().to_string();
        if phase != last_phase {
            print!(
                "{}",
                kubectl(&cp, &["get", "ecsworkers", "-n", NS, "--no-headers"])?
            );
            last_phase = phase.clone();
        }
        let done = s["lastRun"].is_object()
            && phase == "Idle"
            && agent.group_instances().await?.is_empty();
        if done {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the cycle did not finish within 180 s: {s}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    player.stop().await;

    let s = status(&cp)?;
    let run = &s["lastRun"];
    step("the run, as recorded in status.lastRun");
    println!(
        "    outcome {}   exit code {}   messages before {}   after {}",
        run["outcome"], run["exitCode"], run["messagesBefore"], run["messagesAfter"]
    );
    println!(
        "    scale-up {}   tasks started {}   stopped {}",
        run["scaleUpAt"], run["startedAt"], run["stoppedAt"]
    );
    let events = kubectl(
        &cp,
        &[
            "get",
            "events",
            "-n",
            NS,
            "--sort-by=.metadata.creationTimestamp",
            "-o",
            "custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message",
        ],
    )?;
    print!("{events}");
    let group = aws_sdk_autoscaling::Client::new(&config)
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(&agent.group)
        .send()
        .await?;
    let desired = group
        .auto_scaling_groups()
        .first()
        .and_then(|g| g.desired_capacity())
        .unwrap_or(-1);
    println!(
        "    queue visible now: {}   group desired capacity: {desired}",
        s["queue"]["visible"]
    );
    anyhow::ensure!(
        run["outcome"] == "Succeeded" && s["queue"]["visible"] == 0 && desired == 0,
        "the demo run did not end as expected"
    );

    step("deleting the worker: the finalizer removes every AWS resource it created");
    kubectl(
        &cp,
        &["delete", "ecsworker", NAME, "-n", NS, "--timeout=60s"],
    )?;
    let left = sqs.list_queues().send().await?.queue_urls().len();
    println!("    queues left in the emulator: {left}");

    step(&format!(
        "done in {:.0} s; stopping the operator, moto, kube-apiserver and etcd",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}
