//! Chaos: the real operator binary killed and restarted at random moments, its AWS calls
//! failing, its API server going away — and every worker still converges, nothing is
//! duplicated, nothing is left behind.
//!
//! The operator runs as a child process (`ecs-worker-operator run`, built by cargo for this
//! test binary), scoped to the test's namespace, with every AWS call going through the fault
//! proxy ([`testbed::proxy`]) to a moto server; its log is appended to
//! `target/tmp/chaos-<test>.log`. Kill points and faults come from one seed per test, printed
//! at the start; `CHAOS_SEED=<seed>` replays them. The ECS agent is played for many workers at
//! once by [`Fleet`], which runs the real worker binary for every task. What exists in AWS is
//! counted in moto directly ([`census`]), never through the proxy.

use crate::common::{install_crd, worker_binary, worker_yaml};
use ecs_worker_operator::api::{EcsSelfTerminatingWorker, Phase, RunOutcome, TRIGGER_ANNOTATION};
use ecs_worker_operator::plan::desired::{Names, OWNER_TAG};
use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use testbed::agent::{Agent, Ended, MetadataEndpoint, Play, Playing};
use testbed::process::Guard;
use testbed::proxy::{Faults, Proxy, seed_from_env};
use testbed::{ControlPlane, Moto, TestNamespace};

/// Spec lines of a worker whose run is quick: short long polls, one empty receive ends it.
const QUICK: &str = "queue:\n  receiveWaitTimeSeconds: 1\n  visibilityTimeoutSeconds: 30\nworker:\n  emptyReceives: 1\n  handler: \"cat > /dev/null\"";

// ---- the operator as a child process ------------------------------------------------------

/// The operator binary running as a child process; killed and reaped on drop.
struct Operator {
    guard: Option<Guard>,
    kubeconfig: PathBuf,
    namespace: String,
    aws_endpoint: String,
    log: PathBuf,
    starts: u32,
    kills: u32,
}

impl Operator {
    /// Starts the operator ([`testbed::operator::command`]) against `kubeconfig`, watching
    /// `namespace` only, with every AWS call sent to `aws_endpoint`; the log goes to
    /// `target/tmp/chaos-<name>.log`.
    fn start(
        name: &str,
        kubeconfig: &Path,
        namespace: &str,
        aws_endpoint: &str,
    ) -> anyhow::Result<Operator> {
        let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("chaos-{name}.log"));
        std::fs::write(&log, "")?;
        println!("operator log: {}", log.display());
        let mut op = Operator {
            guard: None,
            kubeconfig: kubeconfig.to_path_buf(),
            namespace: namespace.to_string(),
            aws_endpoint: aws_endpoint.to_string(),
            log,
            starts: 0,
            kills: 0,
        };
        op.spawn()?;
        Ok(op)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        use std::io::Write as _;
        self.starts += 1;
        let mut log = std::fs::OpenOptions::new().append(true).open(&self.log)?;
        writeln!(log, "---- operator start {} ----", self.starts)?;
        let cmd = testbed::operator::command(
            Path::new(env!("CARGO_BIN_EXE_ecs-worker-operator")),
            &self.kubeconfig,
            &self.namespace,
            &self.aws_endpoint,
            &self.log,
        )?;
        self.guard = Some(testbed::process::spawn("ecs-worker-operator", cmd)?);
        Ok(())
    }

    /// SIGKILL (no shutdown, no Lease release: a crash), reaped.
    fn kill(&mut self) {
        if let Some(mut g) = self.guard.take() {
            // Our own child, not reaped yet: the pid is still ours (the guard reaps it below).
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &g.pid().to_string()])
                .status();
            g.stop();
            self.kills += 1;
        }
    }

    /// Fails when the operator exited by itself (a crash), with the end of its log.
    fn ensure_running(&mut self) -> anyhow::Result<()> {
        if let Some(g) = self.guard.as_mut()
            && g.exited()
        {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            anyhow::bail!(
                "the operator exited by itself; last log lines:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        Ok(())
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(mut g) = self.guard.take() {
            g.stop();
        }
    }
}

/// Where one kill hit.
struct Kill {
    phase: &'static str,
    /// Calls counted since the operator's last start: every AWS call, or only those of
    /// [`CYCLE_CALLS`].
    after_calls: u64,
    cycle_calls_only: bool,
    /// Whether the phase still had work left when the operator died.
    mid_phase: bool,
    /// Workers in each phase at that moment.
    phases: BTreeMap<String, usize>,
}

/// Calls only the run cycle makes (observing tasks and instances, scaling, starting tasks):
/// counting these puts a kill inside the cycle rather than in the provisioning check every
/// restart begins with.
const CYCLE_CALLS: &[&str] = &[
    "ListContainerInstances",
    "DescribeContainerInstances",
    "ListTasks",
    "DescribeTasks",
    "RunTask",
    "SetDesiredCapacity",
    "TerminateInstanceInAutoScalingGroup",
];

/// Kills the operator after its `k`-th AWS call from now (only calls of `ops`, when not
/// empty) and starts it again; `done` says whether the phase's work is complete. None when the
/// phase completed first (or no call came for two minutes): nothing was left to interrupt.
async fn kill_after_calls(
    op: &mut Operator,
    proxy: &Proxy,
    api: &Api<EcsSelfTerminatingWorker>,
    (phase, k, ops): (&'static str, u64, &[&str]),
    done: fn(&[EcsSelfTerminatingWorker]) -> bool,
) -> anyhow::Result<Option<Kill>> {
    let mut seen = proxy.request_count();
    let mut counted = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while counted < k {
        if proxy
            .wait_for_requests(seen + 1, Duration::from_millis(300))
            .await
        {
            let new = proxy.requests_since(seen);
            for r in &new {
                if ops.is_empty() || ops.contains(&r.operation.as_str()) {
                    counted += 1;
                }
                seen = r.seq + 1;
                if counted == k {
                    break;
                }
            }
            continue;
        }
        op.ensure_running()?;
        if Instant::now() > deadline || done(&api.list(&Default::default()).await?.items) {
            return Ok(None);
        }
    }
    op.kill();
    let items = api.list(&Default::default()).await?.items;
    op.spawn()?;
    let mut phases = BTreeMap::new();
    for w in &items {
        *phases.entry(phase_name(w)).or_insert(0) += 1;
    }
    Ok(Some(Kill {
        phase,
        after_calls: k,
        cycle_calls_only: !ops.is_empty(),
        mid_phase: !done(&items),
        phases,
    }))
}

fn phase_name(w: &EcsSelfTerminatingWorker) -> String {
    match w.status.as_ref().and_then(|s| s.phase) {
        Some(p) => format!("{p:?}"),
        None => "New".into(),
    }
}

// ---- workers through the API --------------------------------------------------------------

async fn apply(api: &Api<EcsSelfTerminatingWorker>, yaml: &str) -> anyhow::Result<()> {
    let w: EcsSelfTerminatingWorker = serde_yaml::from_str(yaml)?;
    api.patch(
        &w.name_any(),
        &PatchParams::apply("chaos").force(),
        &Patch::Apply(&w),
    )
    .await?;
    Ok(())
}

fn ready(w: &EcsSelfTerminatingWorker) -> bool {
    w.condition("Ready").is_some_and(|c| c.status == "True")
}

fn all_ready(items: &[EcsSelfTerminatingWorker]) -> bool {
    items.iter().all(ready)
}

fn succeeded_and_idle(w: &EcsSelfTerminatingWorker) -> bool {
    w.status.as_ref().is_some_and(|s| {
        s.phase == Some(Phase::Idle)
            && s.current_run.is_none()
            && s.last_run
                .as_ref()
                .is_some_and(|r| r.outcome == RunOutcome::Succeeded)
    })
}

fn all_ran(items: &[EcsSelfTerminatingWorker]) -> bool {
    items.iter().all(succeeded_and_idle)
}

fn all_gone(items: &[EcsSelfTerminatingWorker]) -> bool {
    items.is_empty()
}

/// Polls `check` until it says done (`Ok(None)`), checking that the operator still runs;
/// `Ok(Some(why))` is "not yet", reported on timeout.
async fn until(
    op: &mut Operator,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> anyhow::Result<Option<String>>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        op.ensure_running()?;
        let Some(why) = check().await? else {
            return Ok(());
        };
        anyhow::ensure!(
            started.elapsed() < timeout,
            "not done after {timeout:?}: {why}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until `count` workers exist and `done` holds for them all.
async fn wait_all(
    api: &Api<EcsSelfTerminatingWorker>,
    op: &mut Operator,
    count: usize,
    timeout: Duration,
    done: fn(&[EcsSelfTerminatingWorker]) -> bool,
) -> anyhow::Result<()> {
    until(op, timeout, async || {
        let items = api.list(&Default::default()).await?.items;
        if items.len() == count && done(&items) {
            return Ok(None);
        }
        let mut phases = BTreeMap::new();
        for w in &items {
            *phases.entry(phase_name(w)).or_insert(0) += 1;
        }
        let first = items.first();
        Ok(Some(format!(
            "{} workers by phase {phases:?}; the first: {} {}",
            items.len(),
            first.map(|w| w.name_any()).unwrap_or_default(),
            serde_json::to_string(&first.and_then(|w| w.status.clone()))?
        )))
    })
    .await
}

/// Waits until worker `name` exists and satisfies `pred` (None: until it no longer exists).
async fn wait_one(
    api: &Api<EcsSelfTerminatingWorker>,
    op: &mut Operator,
    name: &str,
    pred: Option<fn(&EcsSelfTerminatingWorker) -> bool>,
) -> anyhow::Result<()> {
    until(op, Duration::from_secs(90), async || {
        let w = api.get_opt(name).await?;
        let done = match (&w, pred) {
            (None, None) => true,
            (Some(w), Some(pred)) => pred(w),
            _ => false,
        };
        Ok((!done).then(|| format!("{name}: {:?}", w.and_then(|w| w.status))))
    })
    .await
}

async fn trigger_all(api: &Api<EcsSelfTerminatingWorker>, value: &str) -> anyhow::Result<()> {
    for w in api.list(&Default::default()).await?.items {
        let patch = serde_json::json!({"metadata": {"annotations": {TRIGGER_ANNOTATION: value}}});
        api.patch(
            &w.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    }
    Ok(())
}

/// Sends `n` messages to every worker's queue (directly to moto).
async fn fill_queues(
    api: &Api<EcsSelfTerminatingWorker>,
    sqs: &aws_sdk_sqs::Client,
    n: usize,
) -> anyhow::Result<()> {
    for w in api.list(&Default::default()).await?.items {
        let url = w
            .status
            .as_ref()
            .and_then(|s| s.resources.queue_url.clone())
            .ok_or_else(|| anyhow::anyhow!("{} has no queue", w.name_any()))?;
        for i in 0..n {
            sqs.send_message()
                .queue_url(&url)
                .message_body(format!("{{\"n\": {i}}}"))
                .send()
                .await?;
        }
    }
    Ok(())
}

// ---- the ECS agent for a fleet ------------------------------------------------------------

/// One worker as the agent plays it.
struct Played {
    agent: Agent,
    /// Container instances still registered after the last round.
    registered: bool,
    playing: Playing,
    ended: std::sync::Mutex<Vec<Ended>>,
}

/// Plays the ECS agent for many workers against moto directly. Each round reads every Auto
/// Scaling group once and takes an [`Agent::step`] (the one [`testbed::agent::Player`] takes)
/// only for the workers whose group has instances, whose instances are still registered or
/// whose worker process runs.
struct Fleet {
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<anyhow::Result<Vec<Played>>>,
}

impl Fleet {
    fn start(
        sdk: &aws_config::SdkConfig,
        endpoint: &str,
        binary: PathBuf,
        names: &[Names],
    ) -> Fleet {
        let asg = aws_sdk_autoscaling::Client::new(sdk);
        let mut played: Vec<Played> = names
            .iter()
            .map(|n| Played {
                agent: Agent::new(sdk, &n.cluster, &n.auto_scaling_group),
                registered: false,
                playing: Playing::default(),
                ended: Default::default(),
            })
            .collect();
        let play = Play::RealWorker {
            binary,
            endpoint: endpoint.to_string(),
            // Fifty workers: their warnings only.
            extra_env: vec![("RUST_LOG".into(), "warn".into())],
        };
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            let metadata = MetadataEndpoint::start()?;
            loop {
                if let Err(e) = round(&asg, &mut played, &play, &metadata).await {
                    tracing::debug!(error = %e, "fleet round failed");
                }
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
            for p in &mut played {
                p.playing.kill_all().await;
            }
            Ok(played)
        });
        Fleet { stop, handle }
    }

    /// Stops playing; kills and reaps worker processes still running. Returns every task ended,
    /// with its exit code.
    async fn stop(self) -> anyhow::Result<Vec<(String, i32)>> {
        let _ = self.stop.send(());
        let played = self.handle.await??;
        let ended = played.into_iter().flat_map(|p| {
            let ended = p.ended.into_inner().unwrap_or_else(|e| e.into_inner());
            ended.into_iter().map(|e| (e.task_arn, e.exit_code))
        });
        Ok(ended.collect())
    }
}

/// Member instance count of every Auto Scaling group (one paginated read).
async fn group_sizes(asg: &aws_sdk_autoscaling::Client) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut sizes = BTreeMap::new();
    let mut pages = asg.describe_auto_scaling_groups().into_paginator().send();
    while let Some(page) = pages.next().await {
        for g in page?.auto_scaling_groups() {
            if let Some(name) = g.auto_scaling_group_name() {
                sizes.insert(name.to_string(), g.instances().len());
            }
        }
    }
    Ok(sizes)
}

async fn round(
    asg: &aws_sdk_autoscaling::Client,
    played: &mut [Played],
    play: &Play,
    metadata: &MetadataEndpoint,
) -> anyhow::Result<()> {
    use futures::StreamExt as _;
    let sizes = group_sizes(asg).await?;
    futures::stream::iter(played.iter_mut())
        .filter(|p| {
            let active = sizes.get(&p.agent.group).copied().unwrap_or(0) > 0
                || p.registered
                || p.playing.has_workers();
            std::future::ready(active)
        })
        .for_each_concurrent(8, |p| async move {
            let stepped = async {
                p.agent
                    .step(play, metadata, &mut p.playing, &p.ended)
                    .await?;
                p.registered = !p.agent.registered().await?.is_empty();
                anyhow::Ok(())
            };
            if let Err(e) = stepped.await {
                tracing::debug!(error = %e, group = p.agent.group, "agent step failed");
            }
        })
        .await;
    Ok(())
}

// ---- what exists in AWS -------------------------------------------------------------------

/// Resources beyond what their owner should have: (kind, owner, how many beyond).
type Surplus = Vec<(String, String, usize)>;

/// Count of every owned AWS resource in moto, by kind and owner (`namespace/name`), read
/// directly (not through the proxy). Instances count only while pending or running.
#[derive(Debug, Default, PartialEq)]
struct Census(BTreeMap<&'static str, BTreeMap<String, usize>>);

impl Census {
    fn add(&mut self, kind: &'static str, owner: &str) {
        *self
            .0
            .entry(kind)
            .or_default()
            .entry(owner.to_string())
            .or_insert(0) += 1;
    }

    fn total(&self) -> usize {
        self.0.values().flat_map(|m| m.values()).sum()
    }

    /// How many of each kind one worker owns once provisioned (the default spec, idle: the
    /// default VPC, no instance).
    fn expected_per_worker(kind: &str) -> usize {
        match kind {
            "queue" => 2,
            "role" => 3,
            "instance" | "vpc" | "subnet" | "internet gateway" => 0,
            _ => 1,
        }
    }

    /// Resources beyond what `owners` should have, as (kind, owner, how many beyond); and the
    /// kinds an owner lacks.
    fn compare(&self, owners: &[String]) -> (Surplus, Vec<String>) {
        let mut extra = Vec::new();
        let mut missing = Vec::new();
        for kind in KINDS {
            let counts = self.0.get(kind).cloned().unwrap_or_default();
            let want = Census::expected_per_worker(kind);
            for owner in owners {
                let have = counts.get(owner).copied().unwrap_or(0);
                if have > want {
                    extra.push((kind.to_string(), owner.clone(), have - want));
                } else if have < want {
                    missing.push(format!("{kind} of {owner}: {have} of {want}"));
                }
            }
            for (owner, n) in &counts {
                if !owners.contains(owner) {
                    extra.push((kind.to_string(), owner.clone(), *n));
                }
            }
        }
        (extra, missing)
    }
}

const KINDS: [&str; 13] = [
    "queue",
    "log group",
    "cluster",
    "task definition",
    "role",
    "instance profile",
    "security group",
    "launch template",
    "auto scaling group",
    "instance",
    "vpc",
    "subnet",
    "internet gateway",
];

/// Everything owned by workers of `namespace` (`workers`: every name ever applied there,
/// for the kinds found by name).
/// The cluster identity the operator binary writes into owner tags: the kube-system
/// namespace's UID.
async fn cluster_uid(client: &kube::Client) -> anyhow::Result<String> {
    Ok(
        Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
            .get("kube-system")
            .await?
            .metadata
            .uid
            .unwrap_or_default(),
    )
}

async fn census(
    sdk: &aws_config::SdkConfig,
    cluster: &str,
    namespace: &str,
    workers: &[String],
) -> anyhow::Result<Census> {
    let mut c = Census::default();
    let ours = |owner: &str| owner.starts_with(&format!("{cluster}/{namespace}/"));
    let names: Vec<(String, Names)> = workers
        .iter()
        .map(|w| {
            (
                format!("{cluster}/{namespace}/{w}"),
                Names::new(namespace, w),
            )
        })
        .collect();
    let by_name = |pick: fn(&Names) -> Vec<&String>, name: &str| {
        names
            .iter()
            .find(|(_, n)| pick(n).iter().any(|x| x.as_str() == name))
            .map(|(o, _)| o.clone())
    };

    // Each resource belongs to the owner its tag names, else to the worker whose name it has
    // (an untagged resource is not missed).
    let owner = |tag: Option<&str>, pick: fn(&Names) -> Vec<&String>, name: &str| {
        tag.filter(|o| ours(o))
            .map(str::to_string)
            .or_else(|| by_name(pick, name))
    };

    let sqs = aws_sdk_sqs::Client::new(sdk);
    let mut pages = sqs.list_queues().into_paginator().send();
    while let Some(page) = pages.next().await {
        for url in page?.queue_urls() {
            let tags = sqs.list_queue_tags().queue_url(url).send().await?;
            let tag = tags
                .tags()
                .and_then(|t| t.get(OWNER_TAG))
                .map(String::as_str);
            let name = url.rsplit('/').next().unwrap_or_default();
            if let Some(o) = owner(tag, |n| vec![&n.queue, &n.dead_letter_queue], name) {
                c.add("queue", &o);
            }
        }
    }

    let logs = aws_sdk_cloudwatchlogs::Client::new(sdk);
    let mut pages = logs.describe_log_groups().into_paginator().send();
    while let Some(page) = pages.next().await {
        for g in page?.log_groups() {
            let arn = g.arn().unwrap_or_default().trim_end_matches(":*");
            let tags = logs
                .list_tags_for_resource()
                .resource_arn(arn)
                .send()
                .await?;
            let tag = tags
                .tags()
                .and_then(|t| t.get(OWNER_TAG))
                .map(String::as_str);
            let name = g.log_group_name().unwrap_or_default();
            if let Some(o) = owner(tag, |n| vec![&n.log_group], name) {
                c.add("log group", &o);
            }
        }
    }

    let ecs = aws_sdk_ecs::Client::new(sdk);
    fn ecs_owner(tags: &[aws_sdk_ecs::types::Tag]) -> Option<&str> {
        tags.iter()
            .find(|t| t.key() == Some(OWNER_TAG))
            .and_then(|t| t.value())
    }
    let clusters = ecs.list_clusters().send().await?.cluster_arns().to_vec();
    for chunk in clusters.chunks(100) {
        let out = ecs
            .describe_clusters()
            .set_clusters(Some(chunk.to_vec()))
            .include(aws_sdk_ecs::types::ClusterField::Tags)
            .send()
            .await?;
        for cl in out
            .clusters()
            .iter()
            .filter(|c| c.status() == Some("ACTIVE"))
        {
            let name = cl.cluster_name().unwrap_or_default();
            if let Some(o) = owner(ecs_owner(cl.tags()), |n| vec![&n.cluster], name) {
                c.add("cluster", &o);
            }
        }
    }
    let mut pages = ecs
        .list_task_definitions()
        .status(aws_sdk_ecs::types::TaskDefinitionStatus::Active)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        for arn in page?.task_definition_arns() {
            let out = ecs
                .describe_task_definition()
                .task_definition(arn)
                .include(aws_sdk_ecs::types::TaskDefinitionField::Tags)
                .send()
                .await?;
            let family = out
                .task_definition()
                .and_then(|d| d.family())
                .unwrap_or_default();
            if let Some(o) = owner(ecs_owner(out.tags()), |n| vec![&n.task_family], family) {
                c.add("task definition", &o);
            }
        }
    }

    let iam = aws_sdk_iam::Client::new(sdk);
    fn iam_owner(tags: &[aws_sdk_iam::types::Tag]) -> Option<&str> {
        tags.iter()
            .find(|t| t.key() == OWNER_TAG)
            .map(|t| t.value())
    }
    let mut pages = iam.list_roles().into_paginator().send();
    while let Some(page) = pages.next().await {
        for r in page?.roles() {
            let tags = iam.list_role_tags().role_name(r.role_name()).send().await?;
            let pick: fn(&Names) -> Vec<&String> =
                |n| vec![&n.instance_role, &n.task_role, &n.execution_role];
            if let Some(o) = owner(iam_owner(tags.tags()), pick, r.role_name()) {
                c.add("role", &o);
            }
        }
    }
    let mut pages = iam.list_instance_profiles().into_paginator().send();
    while let Some(page) = pages.next().await {
        for p in page?.instance_profiles() {
            let name = p.instance_profile_name();
            // GetInstanceProfile carries the tags (moto fails ListInstanceProfileTags).
            let got = iam
                .get_instance_profile()
                .instance_profile_name(name)
                .send()
                .await?;
            let tags = got.instance_profile().map(|p| p.tags()).unwrap_or_default();
            if let Some(o) = owner(iam_owner(tags), |n| vec![&n.instance_profile], name) {
                c.add("instance profile", &o);
            }
        }
    }

    let ec2 = aws_sdk_ec2::Client::new(sdk);
    let owned = || {
        aws_sdk_ec2::types::Filter::builder()
            .name("tag-key")
            .values(OWNER_TAG)
            .build()
    };
    fn owner_of(tags: &[aws_sdk_ec2::types::Tag]) -> Option<&str> {
        tags.iter()
            .find(|t| t.key() == Some(OWNER_TAG))
            .and_then(|t| t.value())
    }
    // Network resources have no name of their own: by owner tag.
    macro_rules! tagged {
        ($describe:ident, $items:ident, $kind:literal) => {
            let mut pages = ec2.$describe().filters(owned()).into_paginator().send();
            while let Some(page) = pages.next().await {
                for x in page?.$items() {
                    if let Some(o) = owner_of(x.tags()).filter(|o| ours(o)) {
                        c.add($kind, o);
                    }
                }
            }
        };
    }
    let mut pages = ec2.describe_security_groups().into_paginator().send();
    while let Some(page) = pages.next().await {
        for g in page?.security_groups() {
            let name = g.group_name().unwrap_or_default();
            if let Some(o) = owner(owner_of(g.tags()), |n| vec![&n.security_group], name) {
                c.add("security group", &o);
            }
        }
    }
    // moto answers at most MaxResults templates (default 15) and no NextToken.
    let templates = ec2
        .describe_launch_templates()
        .max_results(200)
        .send()
        .await?;
    for t in templates.launch_templates() {
        let name = t.launch_template_name().unwrap_or_default();
        if let Some(o) = owner(owner_of(t.tags()), |n| vec![&n.launch_template], name) {
            c.add("launch template", &o);
        }
    }
    tagged!(describe_vpcs, vpcs, "vpc");
    tagged!(describe_subnets, subnets, "subnet");
    tagged!(
        describe_internet_gateways,
        internet_gateways,
        "internet gateway"
    );

    let asg = aws_sdk_autoscaling::Client::new(sdk);
    let mut groups: BTreeMap<String, String> = BTreeMap::new();
    let mut pages = asg.describe_auto_scaling_groups().into_paginator().send();
    while let Some(page) = pages.next().await {
        for g in page?.auto_scaling_groups() {
            let tag = g
                .tags()
                .iter()
                .find(|t| t.key() == Some(OWNER_TAG))
                .and_then(|t| t.value());
            let name = g.auto_scaling_group_name().unwrap_or_default();
            if let Some(o) = owner(tag, |n| vec![&n.auto_scaling_group], name) {
                c.add("auto scaling group", &o);
                groups.insert(name.to_string(), o);
            }
        }
    }
    // Instances: by owner tag, or by the group they were launched for (a replaced group's
    // instances keep running without being members of anything).
    let running = aws_sdk_ec2::types::Filter::builder()
        .name("instance-state-name")
        .values("pending")
        .values("running")
        .build();
    let mut pages = ec2
        .describe_instances()
        .filters(running)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        for i in page?.reservations().iter().flat_map(|r| r.instances()) {
            let tags = i.tags();
            let owner = owner_of(tags).map(str::to_string).or_else(|| {
                tags.iter()
                    .find(|t| t.key() == Some("aws:autoscaling:groupName"))
                    .and_then(|t| t.value())
                    .and_then(|g| {
                        groups
                            .get(g)
                            .cloned()
                            .or_else(|| by_name(|n| vec![&n.auto_scaling_group], g))
                    })
            });
            if let Some(o) = owner.filter(|o| ours(o)) {
                c.add("instance", &o);
            }
        }
    }
    Ok(c)
}

/// Tasks of each worker's cluster by the run id they were started with (`startedBy`).
async fn tasks_by_run(
    sdk: &aws_config::SdkConfig,
    names: &Names,
) -> anyhow::Result<BTreeMap<String, usize>> {
    let ecs = aws_sdk_ecs::Client::new(sdk);
    let mut by_run = BTreeMap::new();
    for status in [
        aws_sdk_ecs::types::DesiredStatus::Running,
        aws_sdk_ecs::types::DesiredStatus::Stopped,
    ] {
        let arns = ecs
            .list_tasks()
            .cluster(&names.cluster)
            .desired_status(status)
            .send()
            .await?
            .task_arns()
            .to_vec();
        for chunk in arns.chunks(100) {
            let out = ecs
                .describe_tasks()
                .cluster(&names.cluster)
                .set_tasks(Some(chunk.to_vec()))
                .send()
                .await?;
            for t in out.tasks() {
                *by_run
                    .entry(t.started_by().unwrap_or("-").to_string())
                    .or_insert(0) += 1;
            }
        }
    }
    Ok(by_run)
}

/// Each worker's tasks by run: every task should carry the id of the worker's recorded run,
/// at most one per instance of the run. Returns the task sets beyond that, described.
async fn extra_task_sets(
    sdk: &aws_config::SdkConfig,
    api: &Api<EcsSelfTerminatingWorker>,
    namespace: &str,
) -> anyhow::Result<Vec<String>> {
    let mut extra = Vec::new();
    for w in api.list(&Default::default()).await?.items {
        let name = w.name_any();
        let run = w
            .status
            .as_ref()
            .and_then(|s| s.last_run.clone())
            .ok_or_else(|| anyhow::anyhow!("{name} has no recorded run"))?;
        let by_run = tasks_by_run(sdk, &Names::new(namespace, &name)).await?;
        let in_run = by_run.get(&run.id).copied().unwrap_or(0);
        anyhow::ensure!(in_run > 0, "{name}: no task of run {}: {by_run:?}", run.id);
        if by_run.len() > 1 || in_run > run.instances.max(1) as usize {
            extra.push(format!(
                "{name}: run {} on {} instance(s), tasks by startedBy {by_run:?}",
                run.id, run.instances
            ));
        }
    }
    Ok(extra)
}

// ---- the scenario -------------------------------------------------------------------------

/// Kills in one phase: how many, and the range of AWS calls since the operator's last start
/// each one waits for (drawn from the seed), counting only `ops` when not empty.
struct Kills {
    count: usize,
    after_calls: std::ops::RangeInclusive<u64>,
    ops: &'static [&'static str],
}

/// Workers provisioned, run once each and deleted, with the operator killed in each phase.
struct Scenario {
    /// Namespace prefix and log name.
    name: &'static str,
    workers: usize,
    /// Share of AWS calls that fail (throttling, HTTP 500, resets).
    failing: f64,
    provisioning: Kills,
    run_cycle: Kills,
    deletion: Kills,
    /// Longest wait for each phase.
    timeout: Duration,
}

/// What a scenario measured.
struct Figures {
    seed: u64,
    counts: testbed::proxy::Counts,
    kills: Vec<Kill>,
    operator_kills: u32,
    all_ready: Duration,
    all_ran: Duration,
    all_gone: Duration,
    total: Duration,
    /// Resources beyond one set per worker, after provisioning and after the runs.
    duplicates: (Surplus, Surplus),
    /// Workers whose cluster ran more than their run's one task set.
    extra_task_sets: Vec<String>,
    /// Tasks the agent ended, with their exit codes.
    tasks_ended: Vec<(String, i32)>,
    /// Owned resources left after every worker was deleted.
    left: Census,
}

impl Figures {
    fn print(&self, title: &str) {
        let c = &self.counts;
        println!(
            "{title}: seed {} (replay with CHAOS_SEED={})",
            self.seed, self.seed
        );
        println!(
            "  AWS calls {}; faults injected: {} throttled, {} HTTP 500, {} reset ({:.1} % of calls)",
            c.requests,
            c.throttled,
            c.server_errors,
            c.resets,
            100.0 * c.failed() as f64 / c.requests.max(1) as f64
        );
        for k in &self.kills {
            println!(
                "  killed during {} after {} {}calls ({}); workers by phase {:?}",
                k.phase,
                k.after_calls,
                if k.cycle_calls_only {
                    "run-cycle "
                } else {
                    "AWS "
                },
                if k.mid_phase {
                    "mid-phase"
                } else {
                    "phase done"
                },
                k.phases
            );
        }
        println!(
            "  {} kills; all Ready after {:.1} s; all ran once after {:.1} s more; all gone {:.1} s after deletion; total {:.1} s",
            self.operator_kills,
            self.all_ready.as_secs_f64(),
            self.all_ran.as_secs_f64(),
            self.all_gone.as_secs_f64(),
            self.total.as_secs_f64()
        );
        println!(
            "  duplicates found: {} after provisioning, {} after the runs, {} extra task sets; tasks ended {} (exit 0: {}); resources left after deletion {}",
            self.duplicates.0.iter().map(|d| d.2).sum::<usize>(),
            self.duplicates.1.iter().map(|d| d.2).sum::<usize>(),
            self.extra_task_sets.len(),
            self.tasks_ended.len(),
            self.tasks_ended.iter().filter(|(_, c)| *c == 0).count(),
            self.left.total()
        );
    }

    /// Everything converged: one run per worker, nothing duplicated, nothing left, and every
    /// phase was interrupted at least once while it had work left.
    fn check(&self, workers: usize) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.duplicates.0.is_empty() && self.duplicates.1.is_empty(),
            "duplicated resources (kind, owner, how many beyond): {:?}",
            self.duplicates
        );
        anyhow::ensure!(
            self.extra_task_sets.is_empty(),
            "more than one task set per run: {:?}",
            self.extra_task_sets
        );
        anyhow::ensure!(
            self.tasks_ended.len() == workers && self.tasks_ended.iter().all(|(_, c)| *c == 0),
            "one task per worker, exit 0: {:?}",
            self.tasks_ended
        );
        anyhow::ensure!(self.left.total() == 0, "left behind: {:?}", self.left);
        for phase in ["provisioning", "run cycle", "deletion"] {
            anyhow::ensure!(
                self.kills.iter().any(|k| k.phase == phase && k.mid_phase),
                "no kill landed while {phase} had work left"
            );
        }
        Ok(())
    }
}

/// Runs a scenario against the shared API server: the operator binary behind the fault proxy,
/// workers applied, run (messages, run-now, the agent playing every task with the real worker)
/// and deleted, with kills at seeded points of each phase. Fails when a phase does not
/// converge, a worker is not Ready after its run, or a resource is missing.
async fn run_scenario(s: Scenario) -> anyhow::Result<Figures> {
    let worker = worker_binary()?;
    let started = Instant::now();
    let seed = seed_from_env("CHAOS_SEED");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let t = TestNamespace::new(s.name).await?;
    install_crd(&t.client).await?;
    let api: Api<EcsSelfTerminatingWorker> = Api::namespaced(t.client.clone(), &t.name);
    let moto = Moto::start().await?;
    let direct = moto.sdk_config().await;
    let proxy = Proxy::start(moto.endpoint(), Faults::mix(s.failing, seed))?;
    let cp = ControlPlane::shared()?;
    let mut op = Operator::start(s.name, &cp.kubeconfig_path(), &t.name, proxy.endpoint())?;
    let workers: Vec<String> = (0..s.workers).map(|i| format!("w{i:02}")).collect();
    let cluster = cluster_uid(&t.client).await?;
    let owners: Vec<String> = workers
        .iter()
        .map(|w| format!("{cluster}/{}/{w}", t.name))
        .collect();
    let names: Vec<Names> = workers.iter().map(|w| Names::new(&t.name, w)).collect();
    let mut kills = Vec::new();
    let mut kill = async |op: &mut Operator, phase, plan: &Kills, done| -> anyhow::Result<()> {
        for _ in 0..plan.count {
            let k = rng.random_range(plan.after_calls.clone());
            let at = (phase, k, plan.ops);
            kills.extend(kill_after_calls(op, &proxy, &api, at, done).await?);
        }
        Ok(())
    };

    for w in &workers {
        apply(&api, &worker_yaml(w, QUICK)).await?;
    }
    kill(&mut op, "provisioning", &s.provisioning, all_ready).await?;
    wait_all(&api, &mut op, s.workers, s.timeout, all_ready).await?;
    let all_ready_after = started.elapsed();
    println!(
        "{}: all {} Ready after {:.1} s, {} AWS calls",
        s.name,
        s.workers,
        all_ready_after.as_secs_f64(),
        proxy.request_count()
    );
    let provisioned = census(&direct, &cluster, &t.name, &workers).await?;
    let (_, missing) = provisioned.compare(&owners);
    anyhow::ensure!(
        missing.is_empty(),
        "missing after provisioning: {missing:?}"
    );

    let run_started = Instant::now();
    fill_queues(&api, &aws_sdk_sqs::Client::new(&direct), 2).await?;
    let fleet = Fleet::start(&direct, moto.endpoint(), worker, &names);
    trigger_all(&api, "1").await?;
    kill(&mut op, "run cycle", &s.run_cycle, all_ran).await?;
    let ran = wait_all(&api, &mut op, s.workers, s.timeout, all_ran).await;
    let tasks_ended = fleet.stop().await?;
    ran?;
    let all_ran_after = run_started.elapsed();
    println!(
        "{}: all ran once after {:.1} s more, {} AWS calls",
        s.name,
        all_ran_after.as_secs_f64(),
        proxy.request_count()
    );
    let items = api.list(&Default::default()).await?.items;
    anyhow::ensure!(all_ready(&items), "a worker is not Ready after its run");
    let extra_task_sets = extra_task_sets(&direct, &api, &t.name).await?;
    let after_run = census(&direct, &cluster, &t.name, &workers).await?;
    let (_, missing) = after_run.compare(&owners);
    anyhow::ensure!(missing.is_empty(), "missing after the runs: {missing:?}");

    let deletion_started = Instant::now();
    for w in &workers {
        api.delete(w, &DeleteParams::default()).await?;
    }
    kill(&mut op, "deletion", &s.deletion, all_gone).await?;
    wait_all(&api, &mut op, 0, s.timeout, all_gone).await?;
    let all_gone_after = deletion_started.elapsed();
    let left = census(&direct, &cluster, &t.name, &workers).await?;
    moto.assert_no_violations().await?;
    Ok(Figures {
        seed,
        counts: proxy.counts(),
        kills,
        operator_kills: op.kills,
        all_ready: all_ready_after,
        all_ran: all_ran_after,
        all_gone: all_gone_after,
        total: started.elapsed(),
        duplicates: (provisioned.compare(&owners).0, after_run.compare(&owners).0),
        extra_task_sets,
        tasks_ended,
        left,
    })
}

// ---- the tests ----------------------------------------------------------------------------

/// The operator is killed (SIGKILL) at random points of provisioning, of the run cycle and of
/// deletion, up to eleven times, and restarted each time: every worker still ends provisioned,
/// runs one task set per run, and is deleted without leftovers.
#[tokio::test]
async fn operator_killed_at_random_points_still_converges() -> anyhow::Result<()> {
    let figures = run_scenario(Scenario {
        name: "chaos-crash",
        workers: 3,
        failing: 0.0,
        provisioning: Kills {
            count: 4,
            after_calls: 1..=60,
            ops: &[],
        },
        run_cycle: Kills {
            count: 4,
            after_calls: 1..=25,
            ops: CYCLE_CALLS,
        },
        deletion: Kills {
            count: 3,
            after_calls: 1..=40,
            ops: &[],
        },
        timeout: Duration::from_secs(120),
    })
    .await?;
    figures.print("chaos: operator killed at random points");
    // A kill whose phase finished before its call count came is skipped.
    assert!(
        figures.operator_kills >= 8,
        "{} kills",
        figures.operator_kills
    );
    figures.check(3)
}

/// The campaign's acceptance test: 50 workers provisioned and run through one cycle each
/// while 20 % of the operator's AWS calls fail (throttling, HTTP 500, connection resets) and
/// the operator is killed 5 times; all end Ready, nothing is duplicated, every run started
/// one task set, and deleting them leaves nothing behind.
#[tokio::test]
async fn fifty_workers_converge_through_faults_and_kills() -> anyhow::Result<()> {
    let figures = run_scenario(Scenario {
        name: "chaos-fifty",
        workers: 50,
        failing: 0.2,
        // Each kill counts from the one before; the ranges stay well inside their phases
        // (about 3,600 calls of provisioning, 8,000 of the runs) so that all 5 land.
        provisioning: Kills {
            count: 2,
            after_calls: 200..=900,
            ops: &[],
        },
        run_cycle: Kills {
            count: 2,
            after_calls: 100..=600,
            ops: CYCLE_CALLS,
        },
        deletion: Kills {
            count: 1,
            after_calls: 100..=1000,
            ops: &[],
        },
        timeout: Duration::from_secs(300),
    })
    .await?;
    figures.print("chaos acceptance: 50 workers, 20 % failing AWS calls, 5 kills");
    assert_eq!(figures.operator_kills, 5);
    let c = &figures.counts;
    assert!(
        c.failed() * 100 >= c.requests * 15
            && c.throttled > 0
            && c.server_errors > 0
            && c.resets > 0,
        "about 20 % of the calls failed, of every kind: {c:?}"
    );
    figures.check(50)
}

/// The census counts what it is meant to: resources tagged for a worker and resources that
/// only carry a worker's name, and a second one of a kind shows as a duplicate.
#[tokio::test]
async fn census_counts_tagged_and_named_resources_and_sees_duplicates() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let sdk = moto.sdk_config().await;
    let (ns, worker) = ("census", "w");
    let names = Names::new(ns, worker);
    let owner = format!("c1/{ns}/{worker}");
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    // The worker's two queues (one untagged, known by name) and a third one, tagged.
    sqs.create_queue().queue_name(&names.queue).send().await?;
    for name in [names.dead_letter_queue.as_str(), "another-name"] {
        sqs.create_queue()
            .queue_name(name)
            .tags(OWNER_TAG, &owner)
            .send()
            .await?;
    }
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let vpc = ec2.describe_vpcs().send().await?;
    let vpc = vpc
        .vpcs()
        .first()
        .and_then(|v| v.vpc_id())
        .unwrap_or_default();
    for name in [names.security_group.as_str(), "another-group"] {
        let tags = aws_sdk_ec2::types::TagSpecification::builder()
            .resource_type(aws_sdk_ec2::types::ResourceType::SecurityGroup)
            .tags(
                aws_sdk_ec2::types::Tag::builder()
                    .key(OWNER_TAG)
                    .value(&owner)
                    .build(),
            )
            .build();
        ec2.create_security_group()
            .group_name(name)
            .description("census")
            .vpc_id(vpc)
            .tag_specifications(tags)
            .send()
            .await?;
    }
    let c = census(&sdk, "c1", ns, &[worker.to_string()]).await?;
    assert_eq!(c.total(), 5, "{c:?}");
    let (extra, missing) = c.compare(std::slice::from_ref(&owner));
    assert_eq!(
        extra,
        vec![
            ("queue".to_string(), owner.clone(), 1),
            ("security group".to_string(), owner.clone(), 1)
        ]
    );
    assert!(
        missing.iter().any(|m| m.starts_with("cluster of")),
        "{missing:?}"
    );
    assert_eq!(
        census(&sdk, "c1", "other", &[worker.to_string()])
            .await?
            .total(),
        0
    );
    moto.assert_no_violations().await?;
    Ok(())
}

/// The operator's API server is stopped while the operator runs; work arrives through another
/// API server on the same etcd (an HA replica) during the outage, and right after the server
/// is back. The operator, never restarted, re-establishes its watch and misses nothing: a
/// worker applied during the outage and one applied right after become Ready, a worker
/// deleted during the outage is cleaned up.
#[tokio::test]
async fn operator_rewatches_after_an_apiserver_restart_and_misses_no_work() -> anyhow::Result<()> {
    let started = Instant::now();
    let cp = ControlPlane::start().await?;
    let client = cp.client().await?;
    let ns = "chaos-apiserver";
    let namespace: Namespace = serde_json::from_value(
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
    )?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await?;
    install_crd(&client).await?;
    let api: Api<EcsSelfTerminatingWorker> = Api::namespaced(client.clone(), ns);
    let moto = Moto::start().await?;
    let direct = moto.sdk_config().await;
    let proxy = Proxy::start(moto.endpoint(), Faults::none())?;
    let mut op = Operator::start("apiserver", &cp.kubeconfig_path(), ns, proxy.endpoint())?;
    let cluster = cluster_uid(&cp.client().await?).await?;
    let workers: Vec<String> = ["steady", "doomed", "during", "after"]
        .map(String::from)
        .to_vec();
    apply(&api, &worker_yaml("steady", QUICK)).await?;
    apply(&api, &worker_yaml("doomed", QUICK)).await?;
    wait_all(&api, &mut op, 2, Duration::from_secs(60), all_ready).await?;

    // The outage: the operator's API server is gone; a replica takes the work.
    let down = Instant::now();
    cp.stop_apiserver();
    let replica = cp.replica_apiserver().await?;
    let via_replica: Api<EcsSelfTerminatingWorker> = Api::namespaced(replica.client().await?, ns);
    apply(&via_replica, &worker_yaml("during", QUICK)).await?;
    via_replica
        .delete("doomed", &DeleteParams::default())
        .await?;
    replica.stop();
    let calls_before = proxy.request_count();
    cp.start_apiserver().await?;
    let back = Instant::now();
    // Right after the server is back, before the operator's watch has reconnected.
    apply(&api, &worker_yaml("after", QUICK)).await?;

    wait_one(&api, &mut op, "during", Some(ready)).await?;
    let during_ready = back.elapsed();
    wait_one(&api, &mut op, "after", Some(ready)).await?;
    let after_ready = back.elapsed();
    wait_one(&api, &mut op, "doomed", None).await?;
    let doomed_gone = back.elapsed();
    assert_eq!(op.starts, 1, "the same operator process throughout");
    let remaining: Vec<String> = ["steady", "during", "after"]
        .iter()
        .map(|w| format!("{cluster}/{ns}/{w}"))
        .collect();
    let (extra, missing) = census(&direct, &cluster, ns, &workers)
        .await?
        .compare(&remaining);
    assert!(
        extra.is_empty() && missing.is_empty(),
        "only the three remaining workers own resources: extra {extra:?}, missing {missing:?}"
    );
    println!(
        "chaos: API server outage of {:.1} s; after it was back: 'during' Ready within {:.1} s, 'after' Ready within {:.1} s, 'doomed' cleaned up within {:.1} s; {} AWS calls since; total {:.1} s",
        (back - down).as_secs_f64(),
        during_ready.as_secs_f64(),
        after_ready.as_secs_f64(),
        doomed_gone.as_secs_f64(),
        proxy.request_count() - calls_before,
        started.elapsed().as_secs_f64()
    );

    // Deleted while the operator runs, so the private control plane stops with nothing owned.
    for w in ["steady", "during", "after"] {
        api.delete(w, &DeleteParams::default()).await?;
    }
    wait_all(&api, &mut op, 0, Duration::from_secs(60), all_gone).await?;
    assert_eq!(census(&direct, &cluster, ns, &workers).await?.total(), 0);
    moto.assert_no_violations().await?;
    Ok(())
}
