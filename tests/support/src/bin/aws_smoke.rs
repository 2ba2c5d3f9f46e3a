//! `make aws-smoke`: one worker through its whole life on real AWS. Opt-in, never part of
//! `make test`: it creates billable resources with the caller's credentials.
//!
//! It runs the operator binary of this build against AWS itself, takes one worker from apply
//! through a run back to zero and through its deletion, and fails unless every run succeeded and
//! nothing the worker owned is left in the account. On any failure it cleans up and prints every
//! leftover with the AWS CLI commands that remove it; `--moto` runs the same steps against the
//! local emulator. Steps, census, settings and costs: `docs/aws.md` (AWS smoke test).

use anyhow::{Context as _, anyhow, bail, ensure};
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use k8s_openapi::api::core::v1::{Event, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant, SystemTime};
use testbed::ControlPlane;
use testbed::process::Guard;

const HELP: &str = "\
aws-smoke: the operator against real AWS, once, end to end (see README.md, \"AWS smoke test\").

  AWS_REGION=us-east-1 SMOKE_IMAGE=<an image ECS can pull> make aws-smoke
  hack/aws-smoke.sh --moto      # the same steps against the local moto emulator, no AWS

Environment:
  AWS_REGION             required: the region every resource is created in
  SMOKE_IMAGE            required: the worker image (worker/Dockerfile), pushed where ECS can
                         pull it, e.g. <account>.dkr.ecr.<region>.amazonaws.com/ecs-worker:smoke
  SMOKE_INSTANCE_TYPE    default t4g.micro on an arm64 machine, t3.micro elsewhere (the image
                         is normally built for the machine that builds it)
  SMOKE_ARM              true/false; default: whether SMOKE_INSTANCE_TYPE is a Graviton type
  SMOKE_MESSAGES         messages sent to the queue (default 5, at most 10)
  SMOKE_NETWORK          default (the region's default VPC) or managed (spec.network.managedVpc)
  SMOKE_HANDLER          spec.worker.handler (default: the image's WORKER_HANDLER)
  SMOKE_TIMEOUT_MINUTES  deadline of the whole test (default 25)
  SMOKE_CLEANUP_MINUTES  extra time the cleanup after a failure may take (default 15)
AWS credentials come from the default chain (AWS_PROFILE, aws sso login, environment keys).
";

/// Namespace of the smoke worker on the local control plane.
const NS: &str = "aws-smoke";
/// User tag on every AWS resource of the smoke worker (value: the object's name), so a census
/// by tag also finds the resources of an earlier run that was killed.
const SMOKE_TAG: &str = "ecs-worker-smoke-test";
/// The operator's owner and managed-by tags (`plan::desired`).
const OWNER_TAG: &str = "ecsworker.dev/owner";
const MANAGED_BY_TAG: &str = "ecsworker.dev/managed-by";
/// The operator's run-now annotation.
const RUN_NOW: &str = "ecsworker.dev/run-now";
/// Set in the re-run child (see [`supervise`]).
const SUPERVISED: &str = "AWS_SMOKE_SUPERVISED";
/// Soft memory limit of the worker container: the worker and a Python handler fit well within
/// it, and with the ECS agent and Docker it fits a 1 GiB instance.
const MEMORY_MIB: i64 = 256;
/// How long resources may take to disappear after the finalizer finished (SQS and the tagging
/// API answer from eventually consistent views).
const SETTLE: Duration = Duration::from_secs(180);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    let settings = match Settings::from_env(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("aws-smoke: {e:#}");
            return ExitCode::from(2);
        }
    };
    if std::env::var_os(SUPERVISED).is_none() {
        return supervise(&args);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("aws-smoke: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(smoke_test(settings))
}

static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(signal: libc::c_int) {
    let pid = CHILD.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe; the pid is our own child's.
        unsafe { libc::kill(pid, signal) };
    }
}

/// Runs this binary again in a process group of its own, forwarding SIGINT and SIGTERM to it.
/// A terminal's Ctrl-C goes to its whole foreground process group: without this, it would stop
/// the API server, etcd and the operator before the smoke test could use them to clean up.
fn supervise(args: &[String]) -> ExitCode {
    use std::os::unix::process::CommandExt as _;
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("aws-smoke: own path: {e}");
            return ExitCode::FAILURE;
        }
    };
    let handler = forward as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: installs a handler that only reads an atomic and calls kill(2).
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
    let mut child = match Command::new(exe)
        .args(args)
        .env(SUPERVISED, "1")
        .process_group(0)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("aws-smoke: start: {e}");
            return ExitCode::FAILURE;
        }
    };
    CHILD.store(child.id() as i32, Ordering::Relaxed);
    match child.wait() {
        Ok(status) => match status.code() {
            Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            None => ExitCode::from(130),
        },
        Err(e) => {
            eprintln!("aws-smoke: wait: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What the environment asks for.
#[derive(Clone, Debug)]
struct Settings {
    moto: bool,
    region: String,
    image: String,
    instance_type: String,
    arm: bool,
    messages: usize,
    managed_vpc: bool,
    handler: Option<String>,
    timeout: Duration,
    cleanup_timeout: Duration,
}

impl Settings {
    fn from_env(args: &[String]) -> anyhow::Result<Settings> {
        let moto = args.iter().any(|a| a == "--moto");
        if let Some(a) = args.iter().find(|a| *a != "--moto") {
            bail!("unknown argument {a:?}: settings come from the environment (see --help)");
        }
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let (region, image) = if moto {
            (
                testbed::moto::REGION.to_string(),
                "ecs-worker:local".to_string(),
            )
        } else {
            let region = var("AWS_REGION");
            let image = var("SMOKE_IMAGE");
            let mut missing = Vec::new();
            if region.is_none() {
                missing.push("  AWS_REGION   the region to test in, e.g. AWS_REGION=us-east-1");
            }
            if image.is_none() {
                missing.push(
                    "  SMOKE_IMAGE  a worker image ECS can pull (build worker/Dockerfile, push it to your ECR)",
                );
            }
            if !missing.is_empty() {
                bail!(
                    "missing settings:\n{}\nThe smoke test runs against real AWS with your credentials and creates billable resources: see README.md, \"AWS smoke test\".",
                    missing.join("\n")
                );
            }
            let overrides: Vec<String> = std::env::vars()
                .map(|(k, _)| k)
                .filter(|k| k.starts_with("AWS_ENDPOINT_URL") || k == "AWS_ENDPOINT_OVERRIDE")
                .collect();
            ensure!(
                overrides.is_empty(),
                "{} set: the smoke test runs against AWS itself; unset it (or use --moto for the local emulator)",
                overrides.join(", ")
            );
            (region.unwrap_or_default(), image.unwrap_or_default())
        };
        let instance_type = match var("SMOKE_INSTANCE_TYPE") {
            Some(t) if !moto => t,
            _ if !moto && std::env::consts::ARCH == "aarch64" => "t4g.micro".to_string(),
            _ => "t3.micro".to_string(),
        };
        let arm = match var("SMOKE_ARM").as_deref() {
            None => graviton(&instance_type),
            Some("true" | "1") => true,
            Some("false" | "0") => false,
            Some(v) => bail!("SMOKE_ARM={v:?}: use true or false"),
        };
        let messages = testbed::env_number("SMOKE_MESSAGES", 5)?;
        ensure!(
            (1..=10).contains(&messages),
            "SMOKE_MESSAGES={messages}: send 1 to 10 messages"
        );
        let managed_vpc = match var("SMOKE_NETWORK").as_deref() {
            None | Some("default") => false,
            Some("managed") => true,
            Some(v) => bail!("SMOKE_NETWORK={v:?}: use default or managed"),
        };
        let timeout = testbed::env_number("SMOKE_TIMEOUT_MINUTES", 25)?;
        ensure!(
            (5..=180).contains(&timeout),
            "SMOKE_TIMEOUT_MINUTES={timeout}: use 5 to 180"
        );
        let cleanup = testbed::env_number("SMOKE_CLEANUP_MINUTES", 15)?;
        ensure!(
            (1..=120).contains(&cleanup),
            "SMOKE_CLEANUP_MINUTES={cleanup}: use 1 to 120"
        );
        Ok(Settings {
            moto,
            region,
            image,
            instance_type,
            arm,
            messages: messages as usize,
            managed_vpc,
            handler: var("SMOKE_HANDLER"),
            timeout: Duration::from_secs(timeout as u64 * 60),
            cleanup_timeout: Duration::from_secs(cleanup as u64 * 60),
        })
    }
}

/// Graviton (arm64) instance types: `a1`, and families whose generation digit is followed by
/// `g` (`t4g`, `m7g`, `c6gn`, `x2gd`, `g5g`).
fn graviton(instance_type: &str) -> bool {
    let family = instance_type.split('.').next().unwrap_or_default();
    if family == "a1" {
        return true;
    }
    let after_letters = family.trim_start_matches(|c: char| c.is_ascii_lowercase());
    let after_digits = after_letters.trim_start_matches(|c: char| c.is_ascii_digit());
    after_digits.len() < after_letters.len() && after_digits.starts_with('g')
}

/// An error and its sources in one line (an SDK error's own Display says only "service error"
/// or "dispatch failure"; the cause is in its sources).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// `Err` naming the call, with the SDK error's whole chain.
fn sdk<T, E, R>(result: Result<T, SdkError<E, R>>, call: &str) -> anyhow::Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    result.map_err(|e| anyhow!("{call}: {}", chain(&e)))
}

/// `Ok(None)` when AWS answers that the resource does not exist.
fn found<T, E, R>(result: Result<T, SdkError<E, R>>, call: &str) -> anyhow::Result<Option<T>>
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) => {
            let code = e.code().unwrap_or_default();
            let gone = code.ends_with("NotFound")
                || code.ends_with("NotFoundException")
                || code.contains("NonExistentQueue")
                || code == "QueueDoesNotExist"
                || code == "NoSuchEntity";
            if gone {
                Ok(None)
            } else {
                Err(anyhow!("{call}: {}", chain(&e)))
            }
        }
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn human(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1} s")
    } else {
        format!("{} min {:02} s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

fn step(text: &str) {
    println!("\n==> {text}");
}

/// The last segment of an ARN, URL or path.
fn last(s: &str) -> &str {
    s.rsplit(['/', ':']).next().unwrap_or(s)
}

/// Clients of every service the smoke test reads or writes, sharing one configuration.
struct Aws {
    sqs: aws_sdk_sqs::Client,
    ecs: aws_sdk_ecs::Client,
    asg: aws_sdk_autoscaling::Client,
    ec2: aws_sdk_ec2::Client,
    iam: aws_sdk_iam::Client,
    logs: aws_sdk_cloudwatchlogs::Client,
    tagging: aws_sdk_resourcegroupstagging::Client,
    sts: aws_sdk_sts::Client,
    config: SdkConfig,
}

impl Aws {
    fn new(config: SdkConfig) -> Aws {
        Aws {
            sqs: aws_sdk_sqs::Client::new(&config),
            ecs: aws_sdk_ecs::Client::new(&config),
            asg: aws_sdk_autoscaling::Client::new(&config),
            ec2: aws_sdk_ec2::Client::new(&config),
            iam: aws_sdk_iam::Client::new(&config),
            logs: aws_sdk_cloudwatchlogs::Client::new(&config),
            tagging: aws_sdk_resourcegroupstagging::Client::new(&config),
            sts: aws_sdk_sts::Client::new(&config),
            config,
        }
    }
}

/// The local processes: control plane, operator, and with `--moto` the ECS agent stand-in.
struct Bed {
    cp: ControlPlane,
    client: kube::Client,
    operator: Option<Guard>,
    operator_log: PathBuf,
    player: Option<testbed::agent::Player>,
}

/// One instance seen in the group, for the instance-seconds of the summary.
#[derive(Debug, Default)]
struct InstanceSeen {
    launched: Option<i64>,
    ended: Option<i64>,
    public_ip: bool,
}

/// A resource kind, in the order removing them works (instances before the group's network,
/// roles out of profiles before the roles).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Group,
    Instance,
    Task,
    ContainerInstance,
    Cluster,
    TaskDefinition,
    LaunchTemplate,
    SecurityGroup,
    NetworkInterface,
    Volume,
    Subnet,
    RouteTable,
    InternetGateway,
    Vpc,
    InstanceProfile,
    Role,
    Queue,
    LogGroup,
    Other,
}

/// A resource that exists, with the commands that remove it.
#[derive(Clone, Debug)]
struct Found {
    kind: Kind,
    id: String,
    note: String,
    commands: Vec<String>,
}

/// What a census found, and what it could not check.
#[derive(Debug, Default)]
struct Census {
    found: Vec<Found>,
    errors: Vec<String>,
}

#[derive(Default)]
struct Record {
    account: Option<String>,
    identity: Option<String>,
    phases: Vec<(&'static str, Duration)>,
    resources: Value,
    owner: Option<String>,
    runs: BTreeMap<String, Value>,
    tasks: Vec<String>,
    instances: BTreeMap<String, InstanceSeen>,
    created: Vec<Found>,
    leftovers: Option<Census>,
    /// Whether the worker was sent to the API server (before that, nothing exists in AWS).
    applied: bool,
}

struct Smoke {
    settings: Settings,
    name: String,
    aws: Option<Aws>,
    /// With `--moto`: the emulator, started before everything else.
    moto: Option<testbed::Moto>,
    bed: Option<Bed>,
    rec: Record,
}

async fn interrupted() -> &'static str {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let term = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "interrupted (Ctrl-C)",
        _ = term => "terminated (SIGTERM)",
    }
}

async fn smoke_test(settings: Settings) -> ExitCode {
    testbed::control_plane::install_crypto_provider();
    let started = Instant::now();
    let (timeout, cleanup_timeout) = (settings.timeout, settings.cleanup_timeout);
    let mut smoke = Smoke {
        name: format!("smoke-{:08x}", rand::random::<u32>()),
        settings,
        aws: None,
        moto: None,
        bed: None,
        rec: Record::default(),
    };
    let outcome = tokio::select! {
        r = tokio::time::timeout(timeout, smoke.run()) => r.unwrap_or_else(|_| Err(anyhow!(
            "the smoke test did not finish within {} (SMOKE_TIMEOUT_MINUTES)", human(timeout)
        ))),
        why = interrupted() => Err(anyhow!("{why}")),
    };
    if let Err(e) = &outcome {
        eprintln!("\n!!! smoke test failed: {e:#}");
    }
    if outcome.is_err() && smoke.rec.applied {
        smoke.diagnose().await;
        step(&format!(
            "cleaning up: deleting the worker and waiting for the operator (at most {}; Ctrl-C abandons)",
            human(cleanup_timeout)
        ));
        let cleanup = tokio::select! {
            r = tokio::time::timeout(cleanup_timeout, smoke.cleanup()) => r.unwrap_or_else(|_| Err(anyhow!(
                "the cleanup did not finish within {} (SMOKE_CLEANUP_MINUTES)", human(cleanup_timeout)
            ))),
            why = interrupted() => Err(anyhow!("{why} during the cleanup: abandoned")),
        };
        if let Err(e) = cleanup {
            eprintln!("!!! {e:#}");
        }
        smoke.refresh_instances().await;
        if smoke.rec.leftovers.is_none() {
            step("looking for leftovers");
            let census = smoke.census().await;
            smoke.delete_inactive_task_definitions().await;
            smoke.rec.leftovers = Some(census);
        }
    }
    if let Some(bed) = smoke.bed.as_mut() {
        if let Some(player) = bed.player.take() {
            player.stop().await;
        }
        if let Some(mut op) = bed.operator.take() {
            op.stop();
        }
    }
    smoke.summary(&outcome, started.elapsed());
    if outcome.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

impl Smoke {
    fn aws(&self) -> anyhow::Result<&Aws> {
        self.aws
            .as_ref()
            .ok_or_else(|| anyhow!("no AWS configuration yet"))
    }

    fn bed(&self) -> anyhow::Result<&Bed> {
        self.bed
            .as_ref()
            .ok_or_else(|| anyhow!("the local control plane is not running"))
    }

    fn workers(&self) -> anyhow::Result<Api<DynamicObject>> {
        let resource = ApiResource {
            group: "ecsworker.dev".into(),
            version: "v1alpha1".into(),
            api_version: "ecsworker.dev/v1alpha1".into(),
            kind: "EcsSelfTerminatingWorker".into(),
            plural: "ecsselfterminatingworkers".into(),
        };
        Ok(Api::namespaced_with(
            self.bed()?.client.clone(),
            NS,
            &resource,
        ))
    }

    /// The worker object as JSON; `None` once it is gone.
    async fn object(&self) -> anyhow::Result<Option<Value>> {
        let obj = self.workers()?.get_opt(&self.name).await?;
        Ok(obj.map(|o| serde_json::to_value(o).unwrap_or_default()))
    }

    fn phase(&mut self, name: &'static str, since: Instant) {
        let took = since.elapsed();
        println!("    ({name}: {})", human(took));
        self.rec.phases.push((name, took));
    }

    async fn run(&mut self) -> anyhow::Result<()> {
        let t = Instant::now();
        self.preflight().await?;
        self.phase("preflight", t);

        let t = Instant::now();
        self.start_bed().await?;
        self.phase("local control plane, CRD, operator", t);

        let t = Instant::now();
        let queue_url = self.provision().await?;
        self.phase("provisioning (apply -> Ready)", t);

        let t = Instant::now();
        self.send(&queue_url).await?;
        self.phase("messages sent, run triggered", t);

        let t = Instant::now();
        self.cycle(&queue_url).await?;
        self.phase("cycle (run-now -> capacity back to zero)", t);

        let t = Instant::now();
        self.check_run().await?;
        self.inventory().await?;
        self.phase("checks (runs, tasks, DLQ, census)", t);

        let t = Instant::now();
        self.delete().await?;
        self.phase("deletion (delete -> finalizer done)", t);

        let t = Instant::now();
        self.verify_gone().await?;
        self.phase("leftover check", t);
        Ok(())
    }

    async fn preflight(&mut self) -> anyhow::Result<()> {
        let s = self.settings.clone();
        if s.moto {
            step("starting the moto AWS emulator (--moto: no AWS account is used)");
            let moto = testbed::Moto::start_long_lived().await?;
            println!("    emulator {}", moto.endpoint());
            self.aws = Some(Aws::new(moto.sdk_config().await));
            self.moto = Some(moto);
        } else {
            step(&format!(
                "checking AWS credentials (default chain) in {}",
                s.region
            ));
            let config = aws_config::defaults(BehaviorVersion::latest())
                .region(Region::new(s.region.clone()))
                .load()
                .await;
            self.aws = Some(Aws::new(config));
        }
        let aws = self.aws()?;
        let me = sdk(
            aws.sts.get_caller_identity().send().await,
            "sts:GetCallerIdentity",
        )
        .context(
            "AWS did not confirm an identity: check the credentials (AWS_PROFILE and `aws sso login`, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) and that AWS is reachable",
        )?;
        let (account, identity) = (
            me.account().unwrap_or_default().to_string(),
            me.arn().unwrap_or_default().to_string(),
        );
        println!("    account {account} as {identity}");
        println!(
            "    worker {NS}/{}: {} ({}), image {}, {} messages, {} network",
            self.name,
            s.instance_type,
            if s.arm { "arm64" } else { "x86_64" },
            s.image,
            s.messages,
            if s.managed_vpc {
                "managed VPC"
            } else {
                "default VPC"
            },
        );
        if !s.managed_vpc {
            let vpcs = sdk(
                aws.ec2
                    .describe_vpcs()
                    .filters(ec2_filter("is-default", &["true"]))
                    .send()
                    .await,
                "ec2:DescribeVpcs",
            )?;
            ensure!(
                !vpcs.vpcs().is_empty(),
                "{} has no default VPC: run with SMOKE_NETWORK=managed (the operator then creates a VPC for the worker)",
                s.region
            );
        }
        let earlier = sdk(
            aws.tagging
                .get_resources()
                .tag_filters(
                    aws_sdk_resourcegroupstagging::types::TagFilter::builder()
                        .key(SMOKE_TAG)
                        .build(),
                )
                .send()
                .await,
            "tag:GetResources",
        )?;
        let earlier: BTreeSet<&str> = earlier
            .resource_tag_mapping_list()
            .iter()
            .filter_map(|m| m.resource_arn())
            .collect();
        if !earlier.is_empty() {
            println!(
                "    note: {} resources tagged {SMOKE_TAG} by earlier smoke runs are listed by the tagging API (it lists deleted ones for a while; this run does not touch them): {}",
                earlier.len(),
                earlier
                    .iter()
                    .take(5)
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        self.rec.account = Some(account);
        self.rec.identity = Some(identity);
        Ok(())
    }

    fn poll(&self) -> Duration {
        if self.settings.moto {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(3)
        }
    }

    async fn start_bed(&mut self) -> anyhow::Result<()> {
        step("starting a local Kubernetes API server (etcd + kube-apiserver) and the operator");
        let cp = ControlPlane::start().await?;
        println!(
            "    API server {}   kubeconfig {}",
            cp.server_url(),
            cp.kubeconfig_path().display()
        );
        let client = cp.client().await?;
        let crd_file =
            testbed::repo_root().join("crds/ecsselfterminatingworkers.ecsworker.dev.yaml");
        let crd: CustomResourceDefinition =
            serde_yaml::from_str(&std::fs::read_to_string(&crd_file)?)
                .with_context(|| format!("parse {}", crd_file.display()))?;
        testbed::crd::install(&client, &crd).await?;
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}}))?;
        Api::<Namespace>::all(client.clone())
            .create(&Default::default(), &ns)
            .await?;
        let logs = build_dir()?
            .parent()
            .map(|p| p.join("aws-smoke"))
            .unwrap_or_else(|| PathBuf::from("aws-smoke"));
        std::fs::create_dir_all(&logs)?;
        let operator_log = logs.join(format!("{}-operator.log", self.name));
        self.bed = Some(Bed {
            cp,
            client,
            operator: None,
            operator_log,
            player: None,
        });
        self.start_operator()?;
        let bed = self.bed()?;
        println!(
            "    operator {} against {} (log: {})",
            build_dir()?.join("ecs-worker-operator").display(),
            match &self.moto {
                Some(m) => format!("the emulator at {}", m.endpoint()),
                None => "AWS with the default credential chain".to_string(),
            },
            bed.operator_log.display()
        );
        Ok(())
    }

    /// Starts the operator binary of this build (again, after it exited), its output appended
    /// to the run's operator log.
    fn start_operator(&mut self) -> anyhow::Result<()> {
        let binary = build_dir()?.join("ecs-worker-operator");
        ensure!(
            binary.exists(),
            "{} not found: build first (cargo build --workspace --bins)",
            binary.display()
        );
        let endpoint = self.moto.as_ref().map(|m| m.endpoint().to_string());
        let bed = self
            .bed
            .as_mut()
            .ok_or_else(|| anyhow!("no control plane"))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&bed.operator_log)?;
        let mut cmd = Command::new(binary);
        cmd.args([
            "run",
            "--namespace",
            NS,
            "--metrics-addr",
            &format!("127.0.0.1:{}", testbed::free_port()),
        ])
        .arg("--kubeconfig")
        .arg(bed.cp.kubeconfig_path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log));
        if let Some(endpoint) = &endpoint {
            cmd.args(["--aws-endpoint", endpoint, "--emulator-credentials"]);
        }
        // Settings of the caller's shell that would change the operator under test.
        for var in [
            "AWS_ENDPOINT_OVERRIDE",
            "WATCH_NAMESPACE",
            "LABEL_SELECTOR",
            "LEADER_ELECTION",
            "DRIFT_INTERVAL_SECONDS",
            "MAX_CONCURRENT_RECONCILES",
            "LOG_FORMAT",
        ] {
            cmd.env_remove(var);
        }
        bed.operator = Some(testbed::process::spawn_long_lived("operator", cmd)?);
        Ok(())
    }

    fn operator_exited(&mut self) -> bool {
        self.bed
            .as_mut()
            .and_then(|b| b.operator.as_mut())
            .is_none_or(|o| o.exited())
    }

    fn check_operator(&mut self) -> anyhow::Result<()> {
        ensure!(
            !self.operator_exited(),
            "the operator exited; its log: {}",
            self.bed()
                .map(|b| b.operator_log.display().to_string())
                .unwrap_or_default()
        );
        Ok(())
    }

    fn manifest(&self) -> Value {
        let s = &self.settings;
        let mut spec = json!({
            "instanceType": s.instance_type,
            "arm": s.arm,
            "memoryLimitMiB": MEMORY_MIB,
            "region": s.region,
            "cronRate": "1_MINUTE",
            "image": s.image,
            "maxInstances": 1,
            "logRetentionDays": 1,
            // A failed run leaves messages behind; the cleanup must still remove the queue.
            "deletionPolicy": "DeleteWithMessages",
            "tags": {SMOKE_TAG: self.name},
        });
        if s.managed_vpc {
            spec["network"] = json!({"managedVpc": {}});
        }
        let handler = match (&s.handler, s.moto) {
            (Some(h), _) => Some(h.clone()),
            // The local worker runs the example handler from the repository.
            (None, true) => Some(
                match testbed::repo_root().join("worker/examples/handler.py") {
                    p if p.exists() => format!("python3 {}", p.display()),
                    _ => "cat > /dev/null".to_string(),
                },
            ),
            (None, false) => None,
        };
        if let Some(h) = handler {
            spec["worker"] = json!({"handler": h});
        }
        if s.moto {
            spec["queue"] = json!({"receiveWaitTimeSeconds": 1});
        }
        json!({
            "apiVersion": "ecsworker.dev/v1alpha1",
            "kind": "EcsSelfTerminatingWorker",
            "metadata": {"name": self.name, "namespace": NS},
            "spec": spec,
        })
    }

    /// Keeps the latest resource list and records each finished run; a run that did not
    /// succeed with exit code 0 fails the test at once.
    fn note(&mut self, status: &Value) -> anyhow::Result<()> {
        if status["resources"]
            .as_object()
            .is_some_and(|r| !r.is_empty())
        {
            self.rec.resources = status["resources"].clone();
        }
        if let Some(id) = status["lastRun"]["id"].as_str()
            && !self.rec.runs.contains_key(id)
        {
            let run = status["lastRun"].clone();
            println!("    run {id} ended: {}", run_line(&run));
            self.rec.runs.insert(id.to_string(), run.clone());
            ensure!(
                run["outcome"] == "Succeeded" && run["exitCode"] == 0,
                "run {id} did not succeed with exit code 0: {}",
                run_line(&run)
            );
        }
        Ok(())
    }

    async fn provision(&mut self) -> anyhow::Result<String> {
        step(&format!(
            "applying the worker {NS}/{} and waiting until it is Ready",
            self.name
        ));
        let manifest = self.manifest();
        for line in serde_yaml::to_string(&manifest["spec"])?.lines() {
            println!("      {line}");
        }
        let obj: DynamicObject = serde_json::from_value(manifest)?;
        self.rec.applied = true;
        self.workers()?.create(&Default::default(), &obj).await?;
        let t0 = Instant::now();
        let mut shown = String::new();
        let mut degraded = None;
        loop {
            self.check_operator()?;
            let obj = self
                .object()
                .await?
                .ok_or_else(|| anyhow!("the worker object disappeared"))?;
            let status = &obj["status"];
            self.note(status)?;
            let line = describe(status);
            if line != shown {
                println!("    {:>8}  {line}", human(t0.elapsed()));
                shown = line;
            }
            check_conditions(status, &mut degraded)?;
            let ready = condition(status, "Ready").is_some_and(|c| c["status"] == "True");
            let r = &status["resources"];
            if ready
                && let (Some(url), Some(cluster), Some(group)) = (
                    r["queueUrl"].as_str(),
                    r["clusterArn"].as_str(),
                    r["autoScalingGroupName"].as_str(),
                )
            {
                let (url, cluster, group) = (
                    url.to_string(),
                    last(cluster).to_string(),
                    group.to_string(),
                );
                self.owner_tag(&url).await?;
                self.start_player(&cluster, &group)?;
                return Ok(url);
            }
            tokio::time::sleep(self.poll()).await;
        }
    }

    /// Reads the owner tag the operator put on the queue (its value is the operator's to
    /// choose), so the census can search by it.
    async fn owner_tag(&mut self, queue_url: &str) -> anyhow::Result<()> {
        let out = sdk(
            self.aws()?
                .sqs
                .list_queue_tags()
                .queue_url(queue_url)
                .send()
                .await,
            "sqs:ListQueueTags",
        )?;
        let tags = out.tags().cloned().unwrap_or_default();
        ensure!(
            tags.get(SMOKE_TAG) == Some(&self.name) && tags.contains_key(MANAGED_BY_TAG),
            "the queue lacks the spec's tag {SMOKE_TAG}={} or {MANAGED_BY_TAG}: {tags:?}",
            self.name
        );
        let owner = tags
            .get(OWNER_TAG)
            .cloned()
            .ok_or_else(|| anyhow!("the queue has no {OWNER_TAG} tag: {tags:?}"))?;
        println!("    queue {queue_url}, tagged {OWNER_TAG}={owner}");
        self.rec.owner = Some(owner);
        Ok(())
    }

    /// With `--moto`: the test bed plays the ECS agent, running the real worker binary of this
    /// build for each task the operator starts.
    fn start_player(&mut self, cluster: &str, group: &str) -> anyhow::Result<()> {
        let Some(moto) = &self.moto else {
            return Ok(());
        };
        let worker = build_dir()?.join("ecs-worker");
        ensure!(
            worker.exists(),
            "{} not found: build first (cargo build --workspace --bins)",
            worker.display()
        );
        let agent = testbed::agent::Agent::new(&self.aws()?.config, cluster, group);
        let player = testbed::agent::Player::start(
            agent,
            testbed::agent::Play::RealWorker {
                binary: worker.clone(),
                endpoint: moto.endpoint().to_string(),
                extra_env: vec![],
            },
        );
        println!(
            "    (--moto) the ECS agent is played locally: {} runs each task",
            worker.display()
        );
        if let Some(bed) = self.bed.as_mut() {
            bed.player = Some(player);
        }
        Ok(())
    }

    async fn send(&mut self, queue_url: &str) -> anyhow::Result<()> {
        step(&format!(
            "sending {} messages and triggering a run ({RUN_NOW})",
            self.settings.messages
        ));
        for i in 0..self.settings.messages {
            let body = json!({"smoke": self.name, "message": i}).to_string();
            sdk(
                self.aws()?
                    .sqs
                    .send_message()
                    .queue_url(queue_url)
                    .message_body(body)
                    .send()
                    .await,
                "sqs:SendMessage",
            )?;
        }
        let patch = json!({"metadata": {"annotations": {RUN_NOW: unix_now().to_string()}}});
        self.workers()?
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    async fn cycle(&mut self, queue_url: &str) -> anyhow::Result<()> {
        step(
            "waiting for the cycle: scale-up, the instance joins, the worker drains the queue, capacity back to zero",
        );
        let group = self.rec.resources["autoScalingGroupName"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let t0 = Instant::now();
        let mut shown = String::new();
        let mut degraded = None;
        loop {
            self.check_operator()?;
            let obj = self
                .object()
                .await?
                .ok_or_else(|| anyhow!("the worker object disappeared"))?;
            let status = obj["status"].clone();
            self.note(&status)?;
            let (desired, instances) = self.group(&group).await?;
            self.note_instances(&instances).await?;
            let (visible, in_flight, delayed) = self.depth(queue_url).await?;
            let phase = status["phase"].as_str().unwrap_or("-");
            let listed: Vec<String> = instances.iter().map(|(i, s)| format!("{i} {s}")).collect();
            let line = format!(
                "phase {phase:<11} desired {desired}  instances [{}]  queue {visible} visible, {in_flight} in flight  runs ended {}",
                listed.join(", "),
                self.rec.runs.len()
            );
            if line != shown {
                println!("    {:>8}  {line}", human(t0.elapsed()));
                shown = line;
            }
            check_conditions(&status, &mut degraded)?;
            let done = !self.rec.runs.is_empty()
                && status["currentRun"].is_null()
                && phase == "Idle"
                && desired == 0
                && instances.is_empty()
                && visible + in_flight + delayed == 0;
            if done {
                return Ok(());
            }
            tokio::time::sleep(self.poll()).await;
        }
    }

    async fn group(&self, name: &str) -> anyhow::Result<(i32, Vec<(String, String)>)> {
        let out = sdk(
            self.aws()?
                .asg
                .describe_auto_scaling_groups()
                .auto_scaling_group_names(name)
                .send()
                .await,
            "autoscaling:DescribeAutoScalingGroups",
        )?;
        let g = out
            .auto_scaling_groups()
            .first()
            .ok_or_else(|| anyhow!("Auto Scaling group {name} not found"))?;
        let instances = g
            .instances()
            .iter()
            .map(|i| {
                (
                    i.instance_id().unwrap_or_default().to_string(),
                    i.lifecycle_state()
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default(),
                )
            })
            .collect();
        Ok((g.desired_capacity().unwrap_or_default(), instances))
    }

    /// Notes when each instance launched (EC2's launch time) and when it left the group or
    /// began terminating, for the instance-seconds of the summary.
    async fn note_instances(&mut self, instances: &[(String, String)]) -> anyhow::Result<()> {
        let now = unix_now();
        let live: BTreeSet<&str> = instances
            .iter()
            .filter(|(_, state)| !state.starts_with("Terminat"))
            .map(|(id, _)| id.as_str())
            .collect();
        for (id, seen) in self.rec.instances.iter_mut() {
            if seen.ended.is_none() && !live.contains(id.as_str()) {
                seen.ended = Some(now);
            }
        }
        let new: Vec<String> = live
            .iter()
            .filter(|id| !self.rec.instances.contains_key(**id))
            .map(|id| id.to_string())
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        // EC2 may not list an instance for a moment after Auto Scaling launched it.
        let Some(out) = found(
            self.aws()?
                .ec2
                .describe_instances()
                .set_instance_ids(Some(new))
                .send()
                .await,
            "ec2:DescribeInstances",
        )?
        else {
            return Ok(());
        };
        for i in out.reservations().iter().flat_map(|r| r.instances()) {
            let id = i.instance_id().unwrap_or_default().to_string();
            println!(
                "    instance {id} ({}) launched{}",
                i.instance_type().map(|t| t.as_str()).unwrap_or("?"),
                i.public_ip_address()
                    .map(|ip| format!(", public IPv4 {ip}"))
                    .unwrap_or_default()
            );
            self.rec.instances.insert(
                id,
                InstanceSeen {
                    launched: i.launch_time().map(|t| t.secs()),
                    ended: None,
                    public_ip: i.public_ip_address().is_some(),
                },
            );
        }
        Ok(())
    }

    /// After a cleanup: instances seen running that have since begun terminating.
    async fn refresh_instances(&mut self) {
        let open: Vec<String> = self
            .rec
            .instances
            .iter()
            .filter(|(_, i)| i.ended.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        let Ok(aws) = self.aws() else { return };
        if open.is_empty() {
            return;
        }
        let Ok(out) = aws
            .ec2
            .describe_instances()
            .set_instance_ids(Some(open))
            .send()
            .await
        else {
            return;
        };
        let now = unix_now();
        for i in out.reservations().iter().flat_map(|r| r.instances()) {
            let state = i.state().and_then(|s| s.name()).map(|n| n.as_str());
            if matches!(state, Some("shutting-down" | "terminated"))
                && let Some(seen) = self
                    .rec
                    .instances
                    .get_mut(i.instance_id().unwrap_or_default())
            {
                seen.ended = Some(now);
            }
        }
    }

    async fn depth(&self, queue_url: &str) -> anyhow::Result<(i64, i64, i64)> {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let out = sdk(
            self.aws()?
                .sqs
                .get_queue_attributes()
                .queue_url(queue_url)
                .attribute_names(A::ApproximateNumberOfMessages)
                .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
                .attribute_names(A::ApproximateNumberOfMessagesDelayed)
                .send()
                .await,
            "sqs:GetQueueAttributes",
        )?;
        let get = |a: A| {
            out.attributes()
                .and_then(|m| m.get(&a))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok((
            get(A::ApproximateNumberOfMessages),
            get(A::ApproximateNumberOfMessagesNotVisible),
            get(A::ApproximateNumberOfMessagesDelayed),
        ))
    }

    async fn check_run(&mut self) -> anyhow::Result<()> {
        step("checking the runs, ECS's record of the tasks and the dead-letter queue");
        ensure!(!self.rec.runs.is_empty(), "no run was recorded");
        for (id, run) in &self.rec.runs {
            println!("    run {id}: {}", run_line(run));
        }
        let cluster = self.rec.resources["clusterArn"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let tasks = self.tasks(&cluster).await?;
        ensure!(!tasks.is_empty(), "ECS lists no task in {cluster}");
        let mut bad = Vec::new();
        for t in &tasks {
            println!("    task {}", t.line);
            if !t.stopped {
                bad.push(format!("{} has not stopped", t.arn));
            }
            if let Some(code) = t.exit_codes.iter().flatten().find(|c| **c != 0) {
                bad.push(format!("{} exited with code {code}", t.arn));
            }
        }
        self.rec.tasks = tasks.iter().map(|t| t.line.clone()).collect();
        ensure!(bad.is_empty(), "{}", bad.join("; "));
        if let Some(dlq) = self.rec.resources["deadLetterQueueUrl"].as_str() {
            let (v, f, d) = self.depth(dlq).await?;
            ensure!(
                v + f + d == 0,
                "{} messages in the dead-letter queue: a handler failed",
                v + f + d
            );
            println!("    dead-letter queue empty");
        }
        for line in self.worker_log(Some("\"worker finished\""), 5).await? {
            println!("    worker log: {line}");
        }
        Ok(())
    }

    /// Every task ECS lists in the cluster (running or stopped), with exit codes.
    async fn tasks(&self, cluster: &str) -> anyhow::Result<Vec<TaskSeen>> {
        use aws_sdk_ecs::types::DesiredStatus;
        let ecs = &self.aws()?.ecs;
        let mut arns = Vec::new();
        for desired in [DesiredStatus::Running, DesiredStatus::Stopped] {
            let out = sdk(
                ecs.list_tasks()
                    .cluster(cluster)
                    .desired_status(desired)
                    .send()
                    .await,
                "ecs:ListTasks",
            )?;
            arns.extend(out.task_arns().iter().cloned());
        }
        arns.sort();
        arns.dedup();
        let mut seen = Vec::new();
        for chunk in arns.chunks(100) {
            let out = sdk(
                ecs.describe_tasks()
                    .cluster(cluster)
                    .set_tasks(Some(chunk.to_vec()))
                    .send()
                    .await,
                "ecs:DescribeTasks",
            )?;
            for t in out.tasks() {
                let containers: Vec<String> = t
                    .containers()
                    .iter()
                    .map(|c| {
                        format!(
                            "{} exit {}{}",
                            c.name().unwrap_or("?"),
                            c.exit_code()
                                .map(|e| e.to_string())
                                .unwrap_or_else(|| "none".into()),
                            c.reason().map(|r| format!(" ({r})")).unwrap_or_default()
                        )
                    })
                    .collect();
                let arn = t.task_arn().unwrap_or_default().to_string();
                seen.push(TaskSeen {
                    line: format!(
                        "{} started by {}: {}, {}{}",
                        last(&arn),
                        t.started_by().unwrap_or("?"),
                        t.last_status().unwrap_or("?"),
                        containers.join(", "),
                        t.stopped_reason()
                            .filter(|r| !r.is_empty())
                            .map(|r| format!("; stopped: {r}"))
                            .unwrap_or_default()
                    ),
                    stopped: t.last_status() == Some("STOPPED"),
                    exit_codes: t.containers().iter().map(|c| c.exit_code()).collect(),
                    arn,
                });
            }
        }
        Ok(seen)
    }

    /// The worker's CloudWatch log lines (matching `pattern`), the last `limit` of them.
    async fn worker_log(&self, pattern: Option<&str>, limit: usize) -> anyhow::Result<Vec<String>> {
        let Some(group) = self.rec.resources["logGroup"].as_str() else {
            return Ok(Vec::new());
        };
        let logs = &self.aws()?.logs;
        let mut lines = Vec::new();
        let mut token = None;
        for _ in 0..20 {
            let Some(out) = found(
                logs.filter_log_events()
                    .log_group_name(group)
                    .set_filter_pattern(pattern.map(str::to_string))
                    .set_next_token(token.take())
                    .send()
                    .await,
                "logs:FilterLogEvents",
            )?
            else {
                break;
            };
            lines.extend(
                out.events()
                    .iter()
                    .filter_map(|e| e.message())
                    .map(|m| m.trim_end().to_string()),
            );
            match out.next_token() {
                Some(t) => token = Some(t.to_string()),
                None => break,
            }
        }
        let skip = lines.len().saturating_sub(limit);
        Ok(lines.split_off(skip))
    }

    async fn inventory(&mut self) -> anyhow::Result<()> {
        step("census before the deletion: what the worker owns, found by tag and by name");
        let census = self.census().await;
        for f in &census.found {
            println!(
                "    {:<17} {}{}",
                format!("{:?}", f.kind),
                f.id,
                note(&f.note)
            );
        }
        let errors = census.errors.join("; ");
        ensure!(
            census.errors.is_empty(),
            "the census could not check everything: {errors}"
        );
        let kinds: BTreeSet<Kind> = census.found.iter().map(|f| f.kind).collect();
        let mut expected = vec![
            Kind::Group,
            Kind::Cluster,
            Kind::TaskDefinition,
            Kind::LaunchTemplate,
            Kind::SecurityGroup,
            Kind::InstanceProfile,
            Kind::Role,
            Kind::Queue,
            Kind::LogGroup,
        ];
        if self.settings.managed_vpc {
            expected.extend([
                Kind::Subnet,
                Kind::RouteTable,
                Kind::InternetGateway,
                Kind::Vpc,
            ]);
        }
        let blind: Vec<Kind> = expected
            .into_iter()
            .filter(|k| !kinds.contains(k))
            .collect();
        ensure!(
            blind.is_empty(),
            "the census does not see the worker's {blind:?}: it could not notice them left behind"
        );
        self.rec.created = census.found;
        Ok(())
    }

    async fn delete(&mut self) -> anyhow::Result<()> {
        step("deleting the worker: its finalizer scales to zero and removes every AWS resource");
        self.workers()?
            .delete(&self.name, &DeleteParams::default())
            .await?;
        self.wait_gone(false).await
    }

    /// Waits until the object is gone (the finalizer finished). With `restart`, an operator
    /// that exited is started again.
    async fn wait_gone(&mut self, restart: bool) -> anyhow::Result<()> {
        let t0 = Instant::now();
        let mut shown = String::new();
        loop {
            if restart && self.operator_exited() {
                println!("    the operator is not running; starting it again");
                self.start_operator()?;
            } else {
                self.check_operator()?;
            }
            let Some(obj) = self.object().await? else {
                println!(
                    "    {:>8}  the worker object is gone: the finalizer finished",
                    human(t0.elapsed())
                );
                return Ok(());
            };
            let _ = self.note(&obj["status"]);
            let line = describe(&obj["status"]);
            if line != shown {
                println!("    {:>8}  {line}", human(t0.elapsed()));
                shown = line;
            }
            tokio::time::sleep(self.poll()).await;
        }
    }

    async fn verify_gone(&mut self) -> anyhow::Result<()> {
        step("checking that nothing is left (tagging API and per-service reads)");
        let t0 = Instant::now();
        loop {
            let census = self.census().await;
            let clean = census.found.is_empty() && census.errors.is_empty();
            if clean || t0.elapsed() > SETTLE {
                let left = census_line(&census);
                self.rec.leftovers = Some(census);
                self.delete_inactive_task_definitions().await;
                ensure!(
                    clean,
                    "still there {} after the finalizer finished: {left}",
                    human(SETTLE)
                );
                println!("    nothing left");
                return Ok(());
            }
            println!(
                "    {:>8}  still there: {}",
                human(t0.elapsed()),
                census_line(&census)
            );
            tokio::time::sleep(if self.settings.moto {
                Duration::from_secs(1)
            } else {
                Duration::from_secs(15)
            })
            .await;
        }
    }

    /// After a failure: deletes the worker and waits for the operator's cleanup.
    async fn cleanup(&mut self) -> anyhow::Result<()> {
        if self.bed.is_none() {
            println!("    nothing was applied");
            return Ok(());
        }
        let obj = self
            .object()
            .await
            .context("the local API server does not answer, so the operator cannot clean up")?;
        let Some(obj) = obj else {
            println!("    the worker object does not exist (never applied, or already deleted)");
            return Ok(());
        };
        if obj["metadata"]["deletionTimestamp"].is_null() {
            self.workers()?
                .delete(&self.name, &DeleteParams::default())
                .await?;
        }
        self.wait_gone(true).await
    }

    /// Prints what explains a failure: the status, the Events, the operator's and the
    /// worker's last log lines, and ECS's record of the tasks.
    async fn diagnose(&mut self) {
        if self.bed.is_some()
            && let Ok(Some(obj)) = self.object().await
        {
            let status = &obj["status"];
            step("the worker's status");
            println!("    phase {}", status["phase"]);
            for c in status["conditions"].as_array().into_iter().flatten() {
                println!(
                    "    {} = {} ({}): {}",
                    c["type"].as_str().unwrap_or("?"),
                    c["status"].as_str().unwrap_or("?"),
                    c["reason"].as_str().unwrap_or("?"),
                    c["message"].as_str().unwrap_or("")
                );
            }
            for key in ["currentRun", "lastRun"] {
                if !status[key].is_null() {
                    println!("    {key}: {}", status[key]);
                }
            }
            step("its Events");
            match self.events().await {
                Ok(events) => events.iter().for_each(|e| println!("    {e}")),
                Err(e) => println!("    (could not list Events: {e:#})"),
            }
        }
        if let Ok(bed) = self.bed() {
            step(&format!(
                "the operator's last log lines ({})",
                bed.operator_log.display()
            ));
            let text = std::fs::read_to_string(&bed.operator_log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            for line in &lines[lines.len().saturating_sub(40)..] {
                println!("    {line}");
            }
        }
        if self.aws.is_some() && self.rec.resources["logGroup"].is_string() {
            step("the worker's last log lines (CloudWatch Logs)");
            match self.worker_log(None, 40).await {
                Ok(lines) if lines.is_empty() => println!("    (none)"),
                Ok(lines) => lines.iter().for_each(|l| println!("    {l}")),
                Err(e) => println!("    (could not read them: {e:#})"),
            }
        }
        if self.aws.is_some()
            && let Some(cluster) = self.rec.resources["clusterArn"].as_str()
        {
            step("ECS's record of the worker's tasks");
            match self.tasks(cluster).await {
                Ok(tasks) if tasks.is_empty() => println!("    (none)"),
                Ok(tasks) => tasks.iter().for_each(|t| println!("    {}", t.line)),
                Err(e) => println!("    (could not list them: {e:#})"),
            }
        }
    }

    async fn events(&self) -> anyhow::Result<Vec<String>> {
        let events = Api::<Event>::namespaced(self.bed()?.client.clone(), NS)
            .list(&ListParams::default().fields(&format!("involvedObject.name={}", self.name)))
            .await?;
        Ok(events
            .items
            .iter()
            .map(|e| {
                format!(
                    "{} {}: {}",
                    e.type_.as_deref().unwrap_or("?"),
                    e.reason.as_deref().unwrap_or("?"),
                    e.message.as_deref().unwrap_or("")
                )
            })
            .collect())
    }
}

/// One task as ECS describes it.
struct TaskSeen {
    arn: String,
    line: String,
    stopped: bool,
    exit_codes: Vec<Option<i32>>,
}

/// The directory of this binary: the build's `target/<profile>`, which holds the operator and
/// worker binaries too.
fn build_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.parent()
        .map(PathBuf::from)
        .ok_or_else(|| anyhow!("no directory for {}", exe.display()))
}

fn condition<'a>(status: &'a Value, type_: &str) -> Option<&'a Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// Condition reasons the operator documents as needing a person (README, "Status and
/// troubleshooting"): the test fails at once.
const TERMINAL: &[&str] = &[
    "InvalidSpec",
    "SecretNotFound",
    "SecretInvalid",
    "AccessDenied",
    "InvalidParameter",
    "NoNetwork",
    "ScaleUpTimedOut",
    "RunFailed",
    "NameConflict",
];
/// Reasons the operator retries for as long as they last; any other reason (`Propagating`, a
/// create AWS has not made visible yet, among them) fails the test once it has lasted
/// [`STUCK`].
const TRANSIENT: &[&str] = &[
    "AwsUnavailable",
    "AwsError",
    "Provisioning",
    "Deleting",
    "QueueRetained",
];

/// How long a Degraded reason outside [`TERMINAL`] and [`TRANSIENT`] may last.
const STUCK: Duration = Duration::from_secs(300);

fn check_conditions(status: &Value, since: &mut Option<(String, Instant)>) -> anyhow::Result<()> {
    ensure!(
        status["phase"] != "Failed",
        "the worker is in phase Failed: {}",
        describe(status)
    );
    let Some(c) = condition(status, "Degraded").filter(|c| c["status"] == "True") else {
        *since = None;
        return Ok(());
    };
    let reason = c["reason"].as_str().unwrap_or_default().to_string();
    let message = c["message"].as_str().unwrap_or_default();
    ensure!(
        !TERMINAL.contains(&reason.as_str()),
        "Degraded/{reason}: {message}"
    );
    let first = match since {
        Some((r, t)) if *r == reason => *t,
        _ => {
            *since = Some((reason.clone(), Instant::now()));
            Instant::now()
        }
    };
    ensure!(
        TRANSIENT.contains(&reason.as_str()) || first.elapsed() < STUCK,
        "Degraded/{reason} for over {}: {message}",
        human(STUCK)
    );
    Ok(())
}

/// Phase and conditions in one line.
fn describe(status: &Value) -> String {
    let mut line = format!("phase {}", status["phase"].as_str().unwrap_or("-"));
    for c in status["conditions"].as_array().into_iter().flatten() {
        let reason = c["reason"].as_str().unwrap_or("");
        line.push_str(&format!(
            "  {}={}{}",
            c["type"].as_str().unwrap_or("?"),
            c["status"].as_str().unwrap_or("?"),
            if reason.is_empty() {
                String::new()
            } else {
                format!(" ({reason})")
            }
        ));
        if c["type"] == "Degraded" && c["status"] == "True" {
            line.push_str(&format!(": {}", c["message"].as_str().unwrap_or("")));
        }
    }
    line
}

fn timestamp(v: &Value) -> Option<jiff::Timestamp> {
    v.as_str()?.parse().ok()
}

/// A run record in one line: outcome, exit code, messages, and its timeline from scale-up.
fn run_line(run: &Value) -> String {
    let since = |key: &str| -> String {
        match (timestamp(&run["scaleUpAt"]), timestamp(&run[key])) {
            (Some(a), Some(b)) => human(Duration::from_millis(
                (b - a).get_milliseconds().max(0) as u64
            )),
            _ => "-".into(),
        }
    };
    format!(
        "{}, exit code {}, {} instance(s), messages {} -> {}, scale-up at {}, tasks started +{}, stopped +{}{}",
        run["outcome"].as_str().unwrap_or("?"),
        run["exitCode"],
        run["instances"],
        run["messagesBefore"],
        run["messagesAfter"],
        run["scaleUpAt"].as_str().unwrap_or("?"),
        since("startedAt"),
        since("stoppedAt"),
        run["stopReason"]
            .as_str()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    )
}

fn note(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!("  ({text})")
    }
}

fn census_line(census: &Census) -> String {
    let mut parts: Vec<String> = census
        .found
        .iter()
        .map(|f| format!("{:?} {}", f.kind, f.id))
        .collect();
    parts.extend(census.errors.iter().map(|e| format!("not checked: {e}")));
    parts.join(", ")
}

/// A resource's kind and id from its ARN (as the tagging API lists them).
fn classify(arn: &str) -> (Kind, String) {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [_, _, service, _, _, resource] = parts[..] else {
        return (Kind::Other, arn.to_string());
    };
    let (rtype, rid) = resource.split_once(['/', ':']).unwrap_or(("", resource));
    let kind = match (service, rtype) {
        ("sqs", _) => return (Kind::Queue, resource.to_string()),
        ("logs", "log-group") => return (Kind::LogGroup, rid.trim_end_matches(":*").to_string()),
        ("ecs", "cluster") => return (Kind::Cluster, rid.to_string()),
        ("iam", "role") => return (Kind::Role, last(rid).to_string()),
        ("iam", "instance-profile") => return (Kind::InstanceProfile, last(rid).to_string()),
        ("autoscaling", _) => return (Kind::Group, last(resource).to_string()),
        ("ecs", "task-definition") => Kind::TaskDefinition,
        ("ecs", "task") => Kind::Task,
        ("ecs", "container-instance") => Kind::ContainerInstance,
        ("ec2", "instance") => return (Kind::Instance, rid.to_string()),
        ("ec2", "security-group") => return (Kind::SecurityGroup, rid.to_string()),
        ("ec2", "launch-template") => return (Kind::LaunchTemplate, rid.to_string()),
        ("ec2", "vpc") => return (Kind::Vpc, rid.to_string()),
        ("ec2", "subnet") => return (Kind::Subnet, rid.to_string()),
        ("ec2", "internet-gateway") => return (Kind::InternetGateway, rid.to_string()),
        ("ec2", "route-table") => return (Kind::RouteTable, rid.to_string()),
        ("ec2", "volume") => return (Kind::Volume, rid.to_string()),
        ("ec2", "network-interface") => return (Kind::NetworkInterface, rid.to_string()),
        _ => Kind::Other,
    };
    (kind, arn.to_string())
}

/// The cluster of an ECS task or container instance ARN (`.../task/<cluster>/<id>`).
fn cluster_of(arn: &str) -> &str {
    arn.rsplit('/').nth(1).unwrap_or_default()
}

fn ec2_filter(name: &str, values: &[&str]) -> aws_sdk_ec2::types::Filter {
    aws_sdk_ec2::types::Filter::builder()
        .name(name)
        .set_values(Some(values.iter().map(|v| v.to_string()).collect()))
        .build()
}

impl Smoke {
    /// Every resource of the worker that exists now. Candidates come from the status's resource
    /// list, the tagging API (by the smoke tag and the owner tag), Auto Scaling and EC2 reads
    /// filtered by the smoke tag, and name scans of IAM roles and instance profiles, queues,
    /// log groups, clusters and task definitions (so an untagged or partly created resource is
    /// not missed); each is then read from its own service, which says whether it still exists.
    async fn census(&self) -> Census {
        let mut census = Census::default();
        let Ok(aws) = self.aws() else {
            return census;
        };
        let mut candidates = self.status_candidates();
        let sources = [
            self.by_tags(aws).await,
            self.by_ec2_tags(aws).await,
            self.by_names(aws).await,
        ];
        for source in sources {
            match source {
                Ok(found) => candidates.extend(found),
                Err(e) => census.errors.push(format!("{e:#}")),
            }
        }
        for (kind, id) in candidates {
            match self.alive(aws, kind, &id).await {
                Ok(Some(f)) => census.found.push(f),
                Ok(None) => {}
                Err(e) => census.errors.push(format!("{kind:?} {id}: {e:#}")),
            }
        }
        census
    }

    fn status_candidates(&self) -> BTreeSet<(Kind, String)> {
        let r = &self.rec.resources;
        let mut c = BTreeSet::new();
        let mut add = |kind: Kind, key: &str, whole: bool| {
            if let Some(v) = r[key].as_str() {
                c.insert((kind, if whole { v } else { last(v) }.to_string()));
            }
        };
        add(Kind::Queue, "queueUrl", false);
        add(Kind::Queue, "deadLetterQueueUrl", false);
        add(Kind::LogGroup, "logGroup", true);
        add(Kind::Role, "instanceRoleArn", false);
        add(Kind::Role, "taskRoleArn", false);
        add(Kind::Role, "executionRoleArn", false);
        add(Kind::InstanceProfile, "instanceProfileArn", false);
        add(Kind::SecurityGroup, "securityGroupId", true);
        add(Kind::LaunchTemplate, "launchTemplateId", true);
        add(Kind::Group, "autoScalingGroupName", true);
        add(Kind::Cluster, "clusterArn", false);
        add(Kind::TaskDefinition, "taskDefinitionArn", true);
        // Without a managed VPC these are the default VPC's, which the worker does not own.
        if self.settings.managed_vpc {
            add(Kind::Vpc, "vpcId", true);
            add(Kind::InternetGateway, "internetGatewayId", true);
            add(Kind::RouteTable, "routeTableId", true);
            for s in r["subnetIds"].as_array().into_iter().flatten() {
                if let Some(s) = s.as_str() {
                    c.insert((Kind::Subnet, s.to_string()));
                }
            }
        }
        c
    }

    /// The tagging API's GetResources, by the smoke tag and by the owner tag.
    async fn by_tags(&self, aws: &Aws) -> anyhow::Result<Vec<(Kind, String)>> {
        use aws_sdk_resourcegroupstagging::types::TagFilter;
        let mut filters = vec![(SMOKE_TAG, self.name.clone())];
        if let Some(owner) = &self.rec.owner {
            filters.push((OWNER_TAG, owner.clone()));
        }
        let mut found = Vec::new();
        for (key, value) in filters {
            let mut pages = aws
                .tagging
                .get_resources()
                .tag_filters(TagFilter::builder().key(key).values(value).build())
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = sdk(page, "tag:GetResources")?;
                found.extend(
                    page.resource_tag_mapping_list()
                        .iter()
                        .filter_map(|m| m.resource_arn())
                        .map(classify),
                );
            }
        }
        Ok(found)
    }

    /// Auto Scaling groups (not in the tagging API) and EC2 resources by the smoke tag.
    async fn by_ec2_tags(&self, aws: &Aws) -> anyhow::Result<Vec<(Kind, String)>> {
        let tag = format!("tag:{SMOKE_TAG}");
        let by_tag = || ec2_filter(&tag, &[&self.name]);
        let mut found = Vec::new();
        let groups = sdk(
            aws.asg
                .describe_auto_scaling_groups()
                .filters(
                    aws_sdk_autoscaling::types::Filter::builder()
                        .name(&tag)
                        .values(&self.name)
                        .build(),
                )
                .send()
                .await,
            "autoscaling:DescribeAutoScalingGroups",
        )?;
        found.extend(
            groups
                .auto_scaling_groups()
                .iter()
                .filter_map(|g| g.auto_scaling_group_name())
                .map(|n| (Kind::Group, n.to_string())),
        );
        let ec2 = &aws.ec2;
        let out = sdk(
            ec2.describe_instances()
                .filters(by_tag())
                .filters(ec2_filter(
                    "instance-state-name",
                    &["pending", "running", "shutting-down", "stopping", "stopped"],
                ))
                .send()
                .await,
            "ec2:DescribeInstances",
        )?;
        found.extend(
            out.reservations()
                .iter()
                .flat_map(|r| r.instances())
                .filter_map(|i| i.instance_id())
                .map(|id| (Kind::Instance, id.to_string())),
        );
        // Each EC2 kind the worker may own, by the smoke tag: (call, list, id, kind).
        macro_rules! by_tag {
            ($call:ident, $list:ident, $id:ident, $kind:expr, $name:literal) => {
                let out = sdk(ec2.$call().filters(by_tag()).send().await, $name)?;
                found.extend(
                    out.$list()
                        .iter()
                        .filter_map(|x| x.$id())
                        .map(|id| ($kind, id.to_string())),
                );
            };
        }
        by_tag!(
            describe_launch_templates,
            launch_templates,
            launch_template_id,
            Kind::LaunchTemplate,
            "ec2:DescribeLaunchTemplates"
        );
        by_tag!(
            describe_security_groups,
            security_groups,
            group_id,
            Kind::SecurityGroup,
            "ec2:DescribeSecurityGroups"
        );
        by_tag!(
            describe_volumes,
            volumes,
            volume_id,
            Kind::Volume,
            "ec2:DescribeVolumes"
        );
        by_tag!(
            describe_network_interfaces,
            network_interfaces,
            network_interface_id,
            Kind::NetworkInterface,
            "ec2:DescribeNetworkInterfaces"
        );
        by_tag!(describe_vpcs, vpcs, vpc_id, Kind::Vpc, "ec2:DescribeVpcs");
        by_tag!(
            describe_subnets,
            subnets,
            subnet_id,
            Kind::Subnet,
            "ec2:DescribeSubnets"
        );
        by_tag!(
            describe_internet_gateways,
            internet_gateways,
            internet_gateway_id,
            Kind::InternetGateway,
            "ec2:DescribeInternetGateways"
        );
        by_tag!(
            describe_route_tables,
            route_tables,
            route_table_id,
            Kind::RouteTable,
            "ec2:DescribeRouteTables"
        );
        Ok(found)
    }

    /// Name scans: every `ecsw-` resource whose name contains the worker's name.
    async fn by_names(&self, aws: &Aws) -> anyhow::Result<Vec<(Kind, String)>> {
        let mine = |n: &str| n.contains(&self.name);
        let mut found = Vec::new();
        let mut pages = aws.iam.list_roles().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = sdk(page, "iam:ListRoles")?;
            found.extend(
                page.roles()
                    .iter()
                    .map(|r| r.role_name())
                    .filter(|n| mine(n))
                    .map(|n| (Kind::Role, n.to_string())),
            );
        }
        let mut pages = aws.iam.list_instance_profiles().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = sdk(page, "iam:ListInstanceProfiles")?;
            found.extend(
                page.instance_profiles()
                    .iter()
                    .map(|p| p.instance_profile_name())
                    .filter(|n| mine(n))
                    .map(|n| (Kind::InstanceProfile, n.to_string())),
            );
        }
        let mut pages = aws
            .sqs
            .list_queues()
            .queue_name_prefix("ecsw-")
            .max_results(1000)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = sdk(page, "sqs:ListQueues")?;
            found.extend(
                page.queue_urls()
                    .iter()
                    .map(|u| last(u))
                    .filter(|n| mine(n))
                    .map(|n| (Kind::Queue, n.to_string())),
            );
        }
        let mut pages = aws
            .logs
            .describe_log_groups()
            .log_group_name_prefix("/ecs-worker/")
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = sdk(page, "logs:DescribeLogGroups")?;
            found.extend(
                page.log_groups()
                    .iter()
                    .filter_map(|g| g.log_group_name())
                    .filter(|n| mine(n))
                    .map(|n| (Kind::LogGroup, n.to_string())),
            );
        }
        let mut pages = aws.ecs.list_clusters().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = sdk(page, "ecs:ListClusters")?;
            found.extend(
                page.cluster_arns()
                    .iter()
                    .map(|a| last(a))
                    .filter(|n| mine(n))
                    .map(|n| (Kind::Cluster, n.to_string())),
            );
        }
        found.extend(
            self.task_definitions(aws, aws_sdk_ecs::types::TaskDefinitionStatus::Active)
                .await?
                .into_iter()
                .map(|a| (Kind::TaskDefinition, a)),
        );
        Ok(found)
    }

    /// The worker's task definition revisions in `status`.
    async fn task_definitions(
        &self,
        aws: &Aws,
        status: aws_sdk_ecs::types::TaskDefinitionStatus,
    ) -> anyhow::Result<Vec<String>> {
        let mut arns = Vec::new();
        let mut pages = aws
            .ecs
            .list_task_definitions()
            .family_prefix("ecsw-")
            .status(status)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = sdk(page, "ecs:ListTaskDefinitions")?;
            arns.extend(
                page.task_definition_arns()
                    .iter()
                    .filter(|a| a.contains(&self.name))
                    .cloned(),
            );
        }
        Ok(arns)
    }

    /// Whether the resource exists now, and how to remove it.
    async fn alive(&self, aws: &Aws, kind: Kind, id: &str) -> anyhow::Result<Option<Found>> {
        let r = format!(" --region {}", self.settings.region);
        let found_it = |note: String, commands: Vec<String>| {
            Some(Found {
                kind,
                id: id.to_string(),
                note,
                commands,
            })
        };
        // An EC2 resource that is gone when its describe call answers NotFound (or lists nothing).
        macro_rules! ec2_exists {
            ($call:ident, $by:ident, $list:ident, $name:literal, $command:literal) => {
                found(aws.ec2.$call().$by(id).send().await, $name)?
                    .filter(|o| !o.$list().is_empty())
                    .and_then(|_| {
                        found_it(String::new(), vec![format!("aws ec2 {} {id}{r}", $command)])
                    })
            };
        }
        Ok(match kind {
            Kind::Queue => found(
                aws.sqs.get_queue_url().queue_name(id).send().await,
                "sqs:GetQueueUrl",
            )?
            .and_then(|o| {
                let url = o.queue_url().unwrap_or_default().to_string();
                found_it(
                    url.clone(),
                    vec![format!("aws sqs delete-queue --queue-url {url}{r}")],
                )
            }),
            Kind::LogGroup => {
                let out = sdk(
                    aws.logs
                        .describe_log_groups()
                        .log_group_name_prefix(id)
                        .send()
                        .await,
                    "logs:DescribeLogGroups",
                )?;
                let exists = out
                    .log_groups()
                    .iter()
                    .any(|g| g.log_group_name() == Some(id));
                exists
                    .then(|| {
                        found_it(
                            String::new(),
                            vec![format!(
                                "aws logs delete-log-group --log-group-name {id}{r}"
                            )],
                        )
                    })
                    .flatten()
            }
            Kind::Role => {
                let Some(_) = found(
                    aws.iam.get_role().role_name(id).send().await,
                    "iam:GetRole",
                )?
                else {
                    return Ok(None);
                };
                let mut commands = Vec::new();
                let profiles = sdk(
                    aws.iam
                        .list_instance_profiles_for_role()
                        .role_name(id)
                        .send()
                        .await,
                    "iam:ListInstanceProfilesForRole",
                )?;
                for p in profiles.instance_profiles() {
                    commands.push(format!(
                        "aws iam remove-role-from-instance-profile --instance-profile-name {} --role-name {id}",
                        p.instance_profile_name()
                    ));
                }
                let inline = sdk(
                    aws.iam.list_role_policies().role_name(id).send().await,
                    "iam:ListRolePolicies",
                )?;
                for p in inline.policy_names() {
                    commands.push(format!(
                        "aws iam delete-role-policy --role-name {id} --policy-name {p}"
                    ));
                }
                let attached = sdk(
                    aws.iam
                        .list_attached_role_policies()
                        .role_name(id)
                        .send()
                        .await,
                    "iam:ListAttachedRolePolicies",
                )?;
                for p in attached.attached_policies() {
                    commands.push(format!(
                        "aws iam detach-role-policy --role-name {id} --policy-arn {}",
                        p.policy_arn().unwrap_or_default()
                    ));
                }
                commands.push(format!("aws iam delete-role --role-name {id}"));
                found_it(String::new(), commands)
            }
            Kind::InstanceProfile => found(
                aws.iam
                    .get_instance_profile()
                    .instance_profile_name(id)
                    .send()
                    .await,
                "iam:GetInstanceProfile",
            )?
            .and_then(|o| {
                let mut commands: Vec<String> = o
                    .instance_profile()
                    .map(|p| p.roles())
                    .unwrap_or_default()
                    .iter()
                    .map(|role| {
                        format!(
                            "aws iam remove-role-from-instance-profile --instance-profile-name {id} --role-name {}",
                            role.role_name()
                        )
                    })
                    .collect();
                commands.push(format!(
                    "aws iam delete-instance-profile --instance-profile-name {id}"
                ));
                found_it(String::new(), commands)
            }),
            Kind::Group => {
                let out = sdk(
                    aws.asg
                        .describe_auto_scaling_groups()
                        .auto_scaling_group_names(id)
                        .send()
                        .await,
                    "autoscaling:DescribeAutoScalingGroups",
                )?;
                out.auto_scaling_groups().first().and_then(|g| {
                    found_it(
                        format!(
                            "desired {}, {} instances{}",
                            g.desired_capacity().unwrap_or_default(),
                            g.instances().len(),
                            g.status().map(|s| format!(", {s}")).unwrap_or_default()
                        ),
                        vec![format!(
                            "aws autoscaling delete-auto-scaling-group --auto-scaling-group-name {id} --force-delete{r}"
                        )],
                    )
                })
            }
            Kind::Instance => {
                let out = found(
                    aws.ec2.describe_instances().instance_ids(id).send().await,
                    "ec2:DescribeInstances",
                )?;
                let state = out.as_ref().and_then(|o| {
                    o.reservations()
                        .iter()
                        .flat_map(|r| r.instances())
                        .find_map(|i| i.state()?.name().map(|n| n.as_str().to_string()))
                });
                match state {
                    Some(s) if s != "terminated" => found_it(
                        s,
                        vec![format!("aws ec2 terminate-instances --instance-ids {id}{r}")],
                    ),
                    _ => None,
                }
            }
            Kind::Cluster => {
                let out = sdk(
                    aws.ecs.describe_clusters().clusters(id).send().await,
                    "ecs:DescribeClusters",
                )?;
                out.clusters()
                    .iter()
                    .find(|c| c.status() != Some("INACTIVE"))
                    .and_then(|c| {
                        found_it(
                            format!(
                                "{}, {} container instances, {} running tasks",
                                c.status().unwrap_or("?"),
                                c.registered_container_instances_count(),
                                c.running_tasks_count()
                            ),
                            vec![format!("aws ecs delete-cluster --cluster {id}{r}")],
                        )
                    })
            }
            Kind::TaskDefinition => {
                let result = aws
                    .ecs
                    .describe_task_definition()
                    .task_definition(id)
                    .send()
                    .await;
                // ECS answers a revision it does not know with ClientException.
                let result = match result {
                    Err(e) if e.code() == Some("ClientException") => return Ok(None),
                    other => other,
                };
                let status = sdk(result, "ecs:DescribeTaskDefinition")?
                    .task_definition()
                    .and_then(|d| d.status().map(|s| s.as_str().to_string()));
                match status.as_deref() {
                    Some("ACTIVE") => found_it(
                        "ACTIVE".into(),
                        vec![
                            format!("aws ecs deregister-task-definition --task-definition {id}{r}"),
                            format!("aws ecs delete-task-definitions --task-definitions {id}{r}"),
                        ],
                    ),
                    _ => None,
                }
            }
            Kind::Task => {
                let cluster = cluster_of(id);
                // A task of a deleted cluster: ClusterNotFoundException.
                let Some(out) = found(
                    aws.ecs
                        .describe_tasks()
                        .cluster(cluster)
                        .tasks(id)
                        .send()
                        .await,
                    "ecs:DescribeTasks",
                )?
                else {
                    return Ok(None);
                };
                out.tasks()
                    .iter()
                    .find(|t| t.last_status() != Some("STOPPED"))
                    .and_then(|t| {
                        found_it(
                            t.last_status().unwrap_or("?").to_string(),
                            vec![format!("aws ecs stop-task --cluster {cluster} --task {id}{r}")],
                        )
                    })
            }
            Kind::ContainerInstance => {
                let cluster = cluster_of(id);
                let Some(out) = found(
                    aws.ecs
                        .describe_container_instances()
                        .cluster(cluster)
                        .container_instances(id)
                        .send()
                        .await,
                    "ecs:DescribeContainerInstances",
                )?
                else {
                    return Ok(None);
                };
                out.container_instances()
                    .iter()
                    .find(|c| c.status() != Some("INACTIVE"))
                    .and_then(|c| {
                        found_it(
                            c.status().unwrap_or("?").to_string(),
                            vec![format!(
                                "aws ecs deregister-container-instance --cluster {cluster} --container-instance {id} --force{r}"
                            )],
                        )
                    })
            }
            Kind::SecurityGroup => ec2_exists!(describe_security_groups, group_ids, security_groups, "ec2:DescribeSecurityGroups", "delete-security-group --group-id"),
            Kind::LaunchTemplate => ec2_exists!(describe_launch_templates, launch_template_ids, launch_templates, "ec2:DescribeLaunchTemplates", "delete-launch-template --launch-template-id"),
            Kind::Vpc => ec2_exists!(describe_vpcs, vpc_ids, vpcs, "ec2:DescribeVpcs", "delete-vpc --vpc-id"),
            Kind::Subnet => ec2_exists!(describe_subnets, subnet_ids, subnets, "ec2:DescribeSubnets", "delete-subnet --subnet-id"),
            Kind::NetworkInterface => ec2_exists!(describe_network_interfaces, network_interface_ids, network_interfaces, "ec2:DescribeNetworkInterfaces", "delete-network-interface --network-interface-id"),
            Kind::RouteTable => found(
                aws.ec2
                    .describe_route_tables()
                    .route_table_ids(id)
                    .send()
                    .await,
                "ec2:DescribeRouteTables",
            )?
            .and_then(|o| o.route_tables().first().cloned())
            .and_then(|t| {
                let mut commands: Vec<String> = t
                    .associations()
                    .iter()
                    .filter(|a| a.main() != Some(true))
                    .filter_map(|a| a.route_table_association_id())
                    .map(|a| format!("aws ec2 disassociate-route-table --association-id {a}{r}"))
                    .collect();
                commands.push(format!(
                    "aws ec2 delete-route-table --route-table-id {id}{r}"
                ));
                found_it(String::new(), commands)
            }),
            Kind::InternetGateway => found(
                aws.ec2
                    .describe_internet_gateways()
                    .internet_gateway_ids(id)
                    .send()
                    .await,
                "ec2:DescribeInternetGateways",
            )?
            .and_then(|o| o.internet_gateways().first().cloned())
            .and_then(|g| {
                let mut commands: Vec<String> = g
                    .attachments()
                    .iter()
                    .filter_map(|a| a.vpc_id())
                    .map(|vpc| {
                        format!(
                            "aws ec2 detach-internet-gateway --internet-gateway-id {id} --vpc-id {vpc}{r}"
                        )
                    })
                    .collect();
                commands.push(format!(
                    "aws ec2 delete-internet-gateway --internet-gateway-id {id}{r}"
                ));
                found_it(String::new(), commands)
            }),
            Kind::Volume => found(
                aws.ec2.describe_volumes().volume_ids(id).send().await,
                "ec2:DescribeVolumes",
            )?
            .and_then(|o| o.volumes().first().cloned())
            .filter(|v| v.state().map(|s| s.as_str()) != Some("deleted"))
            .and_then(|_| {
                found_it(
                    String::new(),
                    vec![format!("aws ec2 delete-volume --volume-id {id}{r}")],
                )
            }),
            Kind::Other => found_it(
                "listed by the Resource Groups Tagging API; a kind this test does not know: check it by hand".into(),
                vec![],
            ),
        })
    }

    /// ECS keeps deregistered (INACTIVE) task definition revisions until they are deleted;
    /// they cost nothing, but smoke runs would pile them up.
    async fn delete_inactive_task_definitions(&self) {
        let Ok(aws) = self.aws() else { return };
        let arns = match self
            .task_definitions(aws, aws_sdk_ecs::types::TaskDefinitionStatus::Inactive)
            .await
        {
            Ok(a) => a,
            Err(e) => {
                println!("    note: could not list INACTIVE task definitions: {e:#}");
                return;
            }
        };
        let mut deleted = 0;
        for chunk in arns.chunks(10) {
            match aws
                .ecs
                .delete_task_definitions()
                .set_task_definitions(Some(chunk.to_vec()))
                .send()
                .await
            {
                Ok(_) => deleted += chunk.len(),
                Err(e) => {
                    println!(
                        "    note: {} INACTIVE task definition revision(s) stay (no cost): ecs:DeleteTaskDefinitions: {}",
                        arns.len() - deleted,
                        chain(&e)
                    );
                    return;
                }
            }
        }
        if deleted > 0 {
            println!(
                "    deleted {deleted} INACTIVE task definition revision(s) of the worker (ECS keeps deregistered revisions until deleted)"
            );
        }
    }

    fn summary(&self, outcome: &anyhow::Result<()>, total: Duration) {
        let s = &self.settings;
        step("summary");
        println!(
            "    worker {NS}/{} in {}{}: {} ({}), image {}",
            self.name,
            s.region,
            if s.moto { " (moto emulator)" } else { "" },
            s.instance_type,
            if s.arm { "arm64" } else { "x86_64" },
            s.image
        );
        if let (Some(account), Some(identity)) = (&self.rec.account, &self.rec.identity) {
            println!("    account {account}, as {identity}");
        }
        println!("    phases:");
        for (name, took) in &self.rec.phases {
            println!("      {name:<44} {:>12}", human(*took));
        }
        println!("      {:<44} {:>12}", "total", human(total));
        if !self.rec.runs.is_empty() {
            println!("    runs (status.lastRun as each ended):");
            for (id, run) in &self.rec.runs {
                println!("      {id}: {}", run_line(run));
            }
        }
        if !self.rec.tasks.is_empty() {
            println!("    worker tasks (ECS):");
            for t in &self.rec.tasks {
                println!("      {t}");
            }
        }
        if !self.rec.instances.is_empty() {
            let now = unix_now();
            let mut seconds = 0;
            println!("    instances (launch -> terminating):");
            for (id, i) in &self.rec.instances {
                let up = i.launched.map(|l| i.ended.unwrap_or(now) - l).unwrap_or(0);
                seconds += up.max(60);
                println!(
                    "      {id}: {up} s{}{}",
                    if i.ended.is_none() {
                        " (still up when last seen)"
                    } else {
                        ""
                    },
                    if i.public_ip {
                        ", with a public IPv4 address"
                    } else {
                        ""
                    }
                );
            }
            let public = self.rec.instances.values().any(|i| i.public_ip);
            println!(
                "    billed: about {seconds} instance-seconds of {} (EC2 bills at least 60 s per start), as many root-volume-seconds{}; README.md, \"AWS smoke test\", has the formula",
                s.instance_type,
                if public {
                    " and public-IPv4-address-seconds"
                } else {
                    ""
                }
            );
        }
        if !self.rec.created.is_empty() {
            let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
            for f in &self.rec.created {
                *kinds.entry(format!("{:?}", f.kind)).or_default() += 1;
            }
            let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
            println!(
                "    resources the worker owned before deletion ({}): {}",
                self.rec.created.len(),
                kinds.join(", ")
            );
        }
        match &self.rec.leftovers {
            Some(c) if c.found.is_empty() && c.errors.is_empty() => {
                println!("    left in the account: nothing");
            }
            Some(c) => {
                if !c.found.is_empty() {
                    println!(
                        "    LEFT IN THE ACCOUNT, with the commands that remove them (in this order):"
                    );
                    let mut found = c.found.clone();
                    found.sort_by(|a, b| (a.kind, &a.id).cmp(&(b.kind, &b.id)));
                    // A role's removal from its profile is listed under both; print it once.
                    let mut printed = BTreeSet::new();
                    for f in &found {
                        println!("      {:?} {}{}", f.kind, f.id, note(&f.note));
                        for cmd in f.commands.iter().filter(|c| printed.insert(c.as_str())) {
                            println!("        {cmd}");
                        }
                    }
                }
                for e in &c.errors {
                    println!("    NOT CHECKED: {e}");
                }
                println!(
                    "    (the tagging API also lists them: aws resourcegroupstaggingapi get-resources --tag-filters Key={SMOKE_TAG},Values={} --region {})",
                    self.name, s.region
                );
            }
            None if !self.rec.applied => {
                println!("    nothing was created in AWS (the worker was never applied)")
            }
            None => println!("    left in the account: not checked"),
        }
        if let Some(bed) = &self.bed {
            println!("    operator log: {}", bed.operator_log.display());
        }
        match outcome {
            Ok(()) => println!("\nAWS SMOKE TEST PASSED"),
            Err(e) => println!("\nAWS SMOKE TEST FAILED: {e:#}"),
        }
    }
}
