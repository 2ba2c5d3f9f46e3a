//! The `ecs-worker-operator` command: `run` the controller, print the `crd`.

use clap::{Parser, Subcommand, ValueEnum};
use ecs_worker_operator::api::EcsSelfTerminatingWorker;
use ecs_worker_operator::aws::ClientFactory;
use ecs_worker_operator::controller::{self, Config, Context};
use ecs_worker_operator::http::{self, Health};
use ecs_worker_operator::metrics::Metrics;
use kube::CustomResourceExt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Runs queue-driven batch workers on AWS ECS-on-EC2 that cost nothing while there is no work.
#[derive(Parser)]
#[command(name = "ecs-worker-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller: reconcile EcsSelfTerminatingWorker objects into AWS resources and
    /// run their cycles.
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinition YAML (the same as crds/ in the repository).
    Crd,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Parser)]
struct RunArgs {
    /// Kubeconfig file; in-cluster config or ~/.kube/config when absent.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<std::path::PathBuf>,
    /// Watch only this namespace (all namespaces when absent).
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Reconcile only objects matching this label selector, to shard a large fleet over
    /// several operator deployments (e.g. `shard=a`).
    #[arg(long, env = "LABEL_SELECTOR")]
    label_selector: Option<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Send every AWS call to this endpoint (a local emulator such as moto); real AWS when absent.
    #[arg(long, env = "AWS_ENDPOINT_OVERRIDE")]
    aws_endpoint: Option<String>,
    /// Use dummy static AWS keys for workers without a Secret (only with --aws-endpoint).
    #[arg(long, requires = "aws_endpoint")]
    emulator_credentials: bool,
    /// Re-check every owned AWS resource at least this often (seconds) while nothing changes.
    /// A full check also runs as every run starts, and a missing queue or group is noticed
    /// at the next tick.
    #[arg(long, env = "DRIFT_INTERVAL_SECONDS", default_value_t = 3600)]
    drift_interval_seconds: u64,
    /// Reconciles in flight at once; the others wait their turn (bounds memory and the AWS call
    /// rate when a large fleet is applied at once).
    #[arg(long, env = "MAX_CONCURRENT_RECONCILES", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    max_concurrent_reconciles: u16,
    /// Leader election: only the holder of this Lease reconciles; others stand by.
    #[arg(long, env = "LEADER_ELECTION", default_value_t = false)]
    leader_election: bool,
    /// Namespace of the leader election Lease (defaults to --namespace, else `default`; the
    /// Deployment in deploy/ sets it to the pod's namespace).
    #[arg(long, env = "LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Name of this replica (the pod name); a random id when absent.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Identity of this Kubernetes cluster, written into every AWS resource's owner tag so
    /// that operators of two clusters sharing an AWS account and region never adopt or delete
    /// each other's resources. Defaults to the UID of the `kube-system` namespace.
    #[arg(long, env = "CLUSTER_ID")]
    cluster_id: Option<String>,
}

/// The cluster identity: given, or the `kube-system` namespace's UID (stable for the
/// cluster's life, distinct between clusters).
async fn cluster_id(client: &kube::Client, given: Option<String>) -> anyhow::Result<String> {
    if let Some(id) = given {
        return Ok(id);
    }
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(client.clone());
    let ns = namespaces.get("kube-system").await.map_err(|e| {
        anyhow::anyhow!(
            "reading the kube-system namespace for the cluster identity failed ({e}); grant `get` on namespaces/kube-system or set --cluster-id / CLUSTER_ID"
        )
    })?;
    ns.metadata
        .uid
        .ok_or_else(|| anyhow::anyhow!("the kube-system namespace has no uid; set --cluster-id"))
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,kube=warn,aws_config=warn,aws_smithy_runtime=warn")
    });
    // At debug and trace level the SDK prints each call's resolved identity (the orchestrator's
    // endpoint parameters and runtime components, the SigV4 signer's parameters), and with it
    // the access key id of a worker's Secret: those targets stay at info whatever RUST_LOG says.
    let filter = [
        "aws_smithy_runtime::client::orchestrator=info",
        "aws_sigv4=info",
    ]
    .into_iter()
    .filter_map(|d| d.parse().ok())
    .fold(filter, |filter, directive| filter.add_directive(directive));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
        LogFormat::Text => builder.init(),
    }
}

async fn kube_client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(config)?)
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logs(args.log_format);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = kube_client(args.kubeconfig.as_deref()).await?;
    let metrics = Arc::new(Metrics::default());
    let default_credentials = args
        .emulator_credentials
        .then(ClientFactory::emulator_credentials);
    let factory = ClientFactory::new(
        args.aws_endpoint.clone(),
        default_credentials,
        metrics.clone(),
    );
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("ecs-worker-operator-{:08x}", rand::random::<u32>()));
    let cluster_id = cluster_id(&client, args.cluster_id.clone()).await?;
    tracing::info!(cluster_id, "owner tags name this cluster");
    let config = Config {
        cluster_id,
        namespace: args.namespace.clone(),
        label_selector: args.label_selector.clone(),
        drift_interval: Duration::from_secs(args.drift_interval_seconds),
        instance: Some(identity.clone()),
        concurrency: args.max_concurrent_reconciles,
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        factory,
        metrics.clone(),
        config,
    ));
    let ready = Arc::new(AtomicBool::new(false));
    let health = Health {
        metrics,
        ready: ready.clone(),
    };
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(http::serve(
        args.metrics_addr,
        health,
        shutdown.clone().cancelled_owned(),
    ));
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutting down");
            shutdown.cancel();
        });
    }
    // Ready once the watched workers can be listed; until then the error says why.
    {
        let (client, namespace, ready) = (client.clone(), args.namespace.clone(), ready.clone());
        tokio::spawn(async move {
            while let Err(e) = controller::list_once(&client, namespace.as_deref()).await {
                tracing::warn!(error = %e, "not ready: cannot list EcsSelfTerminatingWorkers");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            ready.store(true, Ordering::Relaxed);
        });
    }
    if args.leader_election {
        let lease_ns = args
            .lease_namespace
            .clone()
            .or(args.namespace.clone())
            .unwrap_or_else(|| "default".into());
        controller::leader::run_as_leader(client, &lease_ns, &identity, ctx, shutdown).await?;
    } else {
        controller::run(ctx, shutdown).await;
    }
    server.abort();
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => {
            print!(
                "{}",
                serde_yaml::to_string(&EcsSelfTerminatingWorker::crd())?
            );
            Ok(())
        }
        Command::Run(args) => run(*args).await,
    }
}
