//! Everything that talks to AWS. Decisions live in `plan`; this module observes and executes.
//!
//! - this file: the one client factory (region, credentials, endpoint override, retries, call
//!   metrics) shared by every service client;
//! - [`error`]: AWS errors classified into what a user or the retry policy can act on;
//! - [`provision`]: ensure / delete the resources a worker owns, look-before-create, by name
//!   and owner tag, so a crash never duplicates anything;
//! - `network`: where instances run (given subnets, the default VPC, or the VPC the operator
//!   creates) and that network's deletion;
//! - [`cycle`]: observe the run-cycle state and execute the cycle's actions;
//! - [`groups`]: one shared, seconds-old view of all managed Auto Scaling groups per account
//!   and region, so idle ticks do not read each group on its own.

pub mod cycle;
pub mod error;
pub mod groups;
mod network;
pub mod provision;

pub use error::{AwsError, ErrorKind};

use crate::metrics::Metrics;
use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_sqs::config::{Credentials, SharedCredentialsProvider};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Static keys read from a worker's credentials Secret. `Debug` never prints the values.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct StaticKeys {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for StaticKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StaticKeys(<redacted>)")
    }
}

/// One client per AWS service, all sharing region, credentials and call metrics.
#[derive(Clone, Debug)]
pub struct AwsClients {
    pub sqs: aws_sdk_sqs::Client,
    pub ecs: aws_sdk_ecs::Client,
    pub autoscaling: aws_sdk_autoscaling::Client,
    pub ec2: aws_sdk_ec2::Client,
    pub ssm: aws_sdk_ssm::Client,
    pub iam: aws_sdk_iam::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
    /// Shared by every worker of this region and identity.
    pub groups: Arc<groups::GroupView>,
}

/// Builds (and caches) [`AwsClients`] per region and credentials.
pub struct ClientFactory {
    endpoint: Option<String>,
    default_credentials: Option<SharedCredentialsProvider>,
    base: tokio::sync::OnceCell<SdkConfig>,
    metrics: Arc<Metrics>,
    max_attempts: u32,
    cache: Mutex<HashMap<(String, Option<StaticKeys>), AwsClients>>,
}

impl ClientFactory {
    /// `endpoint`: send every call there (a local emulator); `default_credentials`: used
    /// when a worker names no Secret (None: the standard AWS chain — IRSA, Pod Identity, env).
    pub fn new(
        endpoint: Option<String>,
        default_credentials: Option<SharedCredentialsProvider>,
        metrics: Arc<Metrics>,
    ) -> ClientFactory {
        ClientFactory {
            endpoint,
            default_credentials,
            base: tokio::sync::OnceCell::new(),
            metrics,
            max_attempts: 5,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Dummy static keys, for local emulators that only check that requests are signed.
    pub fn emulator_credentials() -> SharedCredentialsProvider {
        SharedCredentialsProvider::new(Credentials::new(
            "emulator", "emulator", None, None, "emulator",
        ))
    }

    async fn base(&self) -> &SdkConfig {
        self.base
            .get_or_init(|| async {
                let mut loader = aws_config::defaults(BehaviorVersion::latest())
                    .retry_config(
                        RetryConfig::standard()
                            .with_max_attempts(self.max_attempts)
                            .with_initial_backoff(Duration::from_millis(200))
                            .with_max_backoff(Duration::from_secs(10)),
                    )
                    .timeout_config(
                        aws_config::timeout::TimeoutConfig::builder()
                            .operation_attempt_timeout(Duration::from_secs(30))
                            .connect_timeout(Duration::from_secs(5))
                            .build(),
                    );
                if let Some(endpoint) = &self.endpoint {
                    loader = loader.endpoint_url(endpoint);
                }
                if let Some(credentials) = &self.default_credentials {
                    loader = loader.credentials_provider(credentials.clone());
                }
                // A region is set per worker. This one is where the operator's own credentials
                // are resolved (STS for IRSA, Pod Identity or a profile's role): the pod's
                // AWS_REGION, which EKS sets, so that China and GovCloud credentials go to
                // their partition's STS; us-east-1 when unset (without probing IMDS).
                let home = std::env::var("AWS_REGION")
                    .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
                    .unwrap_or_else(|_| "us-east-1".to_string());
                loader.region(Region::new(home)).load().await
            })
            .await
    }

    /// Clients for one region and (optionally) a worker's own static keys.
    pub async fn clients(&self, region: &str, keys: Option<StaticKeys>) -> AwsClients {
        let key = (region.to_string(), keys.clone());
        if let Some(c) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return c.clone();
        }
        let mut builder = self
            .base()
            .await
            .to_builder()
            .region(Region::new(region.to_string()));
        if let Some(k) = keys {
            builder =
                builder.credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                    k.access_key_id,
                    k.secret_access_key,
                    k.session_token,
                    None,
                    "worker-secret",
                )));
        }
        let config = builder.build();
        let counter = CallCounter(self.metrics.clone());
        macro_rules! client {
            ($sdk:ident) => {
                $sdk::Client::from_conf(
                    $sdk::config::Builder::from(&config)
                        .interceptor(counter.clone())
                        .build(),
                )
            };
        }
        let clients = AwsClients {
            sqs: client!(aws_sdk_sqs),
            ecs: client!(aws_sdk_ecs),
            autoscaling: client!(aws_sdk_autoscaling),
            ec2: client!(aws_sdk_ec2),
            ssm: client!(aws_sdk_ssm),
            iam: client!(aws_sdk_iam),
            logs: client!(aws_sdk_cloudwatchlogs),
            groups: Arc::default(),
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        // Keys rotate: keep the cache from growing without bound.
        if cache.len() > 1024 {
            cache.clear();
        }
        cache.insert(key, clients.clone());
        clients
    }
}

/// Counts every attempt (retries included) by service, operation and outcome.
#[derive(Clone)]
struct CallCounter(Arc<Metrics>);

impl std::fmt::Debug for CallCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallCounter")
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "CallCounter"
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let (service, operation) = cfg
            .load::<Metadata>()
            .map(|m| (m.service().to_string(), m.name().to_string()))
            .unwrap_or_else(|| ("unknown".into(), "unknown".into()));
        let outcome = match context.response().map(|r| r.status().as_u16()) {
            Some(s) if s < 400 => "ok",
            Some(429) => "throttled",
            Some(s) if s < 500 => "client_error",
            Some(_) => "server_error",
            None => "transport_error",
        };
        self.0.aws_call(&service, &operation, outcome);
        Ok(())
    }
}
