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

/// A role the operator assumes for one worker (`spec.credentials.roleArn`), from its own
/// identity, with the session named and tagged after the worker.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AssumedRole {
    pub role_arn: String,
    /// An identifier the role's trust policy may require (`sts:ExternalId`); not a secret.
    pub external_id: Option<String>,
    pub session_duration_seconds: Option<i32>,
    pub namespace: String,
    pub name: String,
}

impl AssumedRole {
    /// `ecsworker.dev/namespace` and `ecsworker.dev/name`: session tags the role's owner can
    /// match in policies (`aws:PrincipalTag/...`) and sees in CloudTrail. Namespace and object
    /// names fit a tag value (at most 256 characters of `[\p{L}\p{Z}\p{N}_.:/=+\-@]`).
    /// <https://docs.aws.amazon.com/STS/latest/APIReference/API_Tag.html>
    pub fn session_tags(&self) -> [(&'static str, String); 2] {
        [
            ("ecsworker.dev/namespace", self.namespace.clone()),
            ("ecsworker.dev/name", self.name.clone()),
        ]
    }

    /// The RoleSessionName: `ecsworker.<namespace>.<name>`, or when longer than AssumeRole's
    /// 64 characters, its first 55 and `-` and 8 hex characters of a hash of the whole, so
    /// distinct workers keep distinct names. Kubernetes names use only characters the session
    /// name allows (`[\w+=,.@-]`).
    /// <https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html>
    pub fn session_name(&self) -> String {
        use sha2::{Digest, Sha256};
        let full = format!("ecsworker.{}.{}", self.namespace, self.name);
        if full.len() <= 64 {
            return full;
        }
        let digest = Sha256::digest(full.as_bytes());
        let hash: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        format!("{}-{hash}", &full[..55])
    }

    /// A condition message for a role the operator could not assume.
    pub fn refusal(&self, detail: &str) -> String {
        let external = match &self.external_id {
            Some(_) => {
                "; if the trust policy requires an external id (sts:ExternalId), spec.credentials.externalId must equal it"
            }
            None => {
                "; if the trust policy requires an external id (sts:ExternalId), set spec.credentials.externalId"
            }
        };
        format!(
            "cannot assume role {} (spec.credentials.roleArn): {detail}; the operator's identity needs sts:AssumeRole and sts:TagSession on the role, and the role's trust policy must allow both for the operator's identity{external} (see docs/cross-account.md)",
            self.role_arn
        )
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
    roles: Mutex<HashMap<(String, AssumedRole), AwsClients>>,
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
            roles: Mutex::new(HashMap::new()),
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
        let clients = self.build(builder.build());
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        // Keys rotate: keep the cache from growing without bound.
        if cache.len() > 1024 {
            cache.clear();
        }
        cache.insert(key, clients.clone());
        clients
    }

    /// Clients for one region acting as an assumed role. The first use assumes the role once
    /// to find out whether the operator may (an error here means no call of the worker can
    /// succeed, and none was made); afterwards the SDK's identity cache renews the session
    /// before it expires.
    pub async fn role_clients(
        &self,
        region: &str,
        role: &AssumedRole,
    ) -> Result<AwsClients, AwsError> {
        use aws_sdk_sqs::config::ProvideCredentials;
        let key = (region.to_string(), role.clone());
        if let Some(c) = self
            .roles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(c.clone());
        }
        let base = self.base().await;
        let mut assume = aws_config::sts::AssumeRoleProvider::builder(role.role_arn.clone())
            .session_name(role.session_name())
            .tags(role.session_tags())
            .configure(base);
        if let Some(id) = &role.external_id {
            assume = assume.external_id(id.clone());
        }
        if let Some(seconds) = role.session_duration_seconds {
            assume = assume.session_length(Duration::from_secs(seconds.max(900) as u64));
        }
        let provider = assume.build().await;
        if let Err(e) = provider.provide_credentials().await {
            return Err(assume_role_error(&e));
        }
        let config = base
            .to_builder()
            .region(Region::new(region.to_string()))
            .credentials_provider(SharedCredentialsProvider::new(provider))
            .build();
        let clients = self.build(config);
        let mut cache = self.roles.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() > 1024 {
            cache.clear();
        }
        cache.insert(key, clients.clone());
        Ok(clients)
    }

    fn build(&self, config: SdkConfig) -> AwsClients {
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
        AwsClients {
            sqs: client!(aws_sdk_sqs),
            ecs: client!(aws_sdk_ecs),
            autoscaling: client!(aws_sdk_autoscaling),
            ec2: client!(aws_sdk_ec2),
            ssm: client!(aws_sdk_ssm),
            iam: client!(aws_sdk_iam),
            logs: client!(aws_sdk_cloudwatchlogs),
            groups: Arc::default(),
        }
    }
}

/// An AssumeRole failure as an [`AwsError`]: STS's `AccessDenied` (the caller may not assume
/// the role, or the trust policy refuses it, a wrong external id or session tags included) is
/// one a user must fix; anything else is retried.
fn assume_role_error<E: std::error::Error>(e: &E) -> AwsError {
    let full = aws_smithy_types::error::display::DisplayErrorContext(e).to_string();
    // The service's code and message (`Error { code: "..", message: "..", aws_request_id: .. }`
    // in the chain), without the request id, so that a condition stays the same from one
    // attempt to the next.
    let field = |name: &str| {
        let start = full.find(&format!("{name}: \""))? + name.len() + 3;
        let len = full[start..].find('"')?;
        Some(full[start..start + len].to_string())
    };
    let detail = match (field("code"), field("message")) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code,
        _ => full.clone(),
    };
    let (code, kind) = if detail.contains("AccessDenied") {
        ("AccessDenied", ErrorKind::AccessDenied)
    } else if detail.contains("ValidationError") || detail.contains("MalformedPolicyDocument") {
        ("ValidationError", ErrorKind::InvalidParameter)
    } else if detail.contains("RegionDisabled") {
        ("RegionDisabledException", ErrorKind::InvalidParameter)
    } else {
        ("CredentialsError", ErrorKind::Transient)
    };
    AwsError {
        service: "sts",
        operation: "AssumeRole",
        code: code.into(),
        message: detail,
        kind,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn role(namespace: &str, name: &str) -> AssumedRole {
        AssumedRole {
            role_arn: "arn:aws:iam::111122223333:role/team".into(),
            external_id: None,
            session_duration_seconds: None,
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// RoleSessionName: 2 to 64 characters of `[\w+=,.@-]`, distinct per worker.
    fn valid_session_name(s: &str) -> bool {
        (2..=64).contains(&s.len())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c))
    }

    #[test]
    fn session_names_name_the_worker_within_the_sts_limits() {
        assert_eq!(
            role("team-a", "thumbs").session_name(),
            "ecsworker.team-a.thumbs"
        );
        let long_ns = "n".repeat(63);
        let a = role(&long_ns, &"w".repeat(253)).session_name();
        let b = role(&long_ns, &format!("{}x", "w".repeat(252))).session_name();
        assert!(valid_session_name(&a) && valid_session_name(&b), "{a} {b}");
        assert_eq!(a.len(), 64);
        assert_ne!(a, b, "workers differing past the cut keep distinct names");
        assert_eq!(a, role(&long_ns, &"w".repeat(253)).session_name());
        for (ns, name) in [("a", "b"), ("x", "my.dotted.name"), ("ns", &"z".repeat(60))] {
            assert!(valid_session_name(&role(ns, name).session_name()));
        }
    }

    #[test]
    fn session_tags_name_namespace_and_worker() {
        let tags = role("team-a", "thumbs").session_tags();
        assert_eq!(
            tags,
            [
                ("ecsworker.dev/namespace", "team-a".to_string()),
                ("ecsworker.dev/name", "thumbs".to_string())
            ]
        );
    }

    #[test]
    fn refusal_names_the_role_and_the_external_id() {
        let mut r = role("ns", "w");
        let m = r.refusal("AccessDenied: no");
        assert!(m.contains("arn:aws:iam::111122223333:role/team"));
        assert!(m.contains("set spec.credentials.externalId"));
        r.external_id = Some("abc".into());
        assert!(r.refusal("x").contains("must equal it"));
    }

    #[test]
    fn assume_role_errors_keep_code_and_message_not_the_request_id() {
        #[derive(Debug)]
        struct E(&'static str);
        impl std::fmt::Display for E {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for E {}
        let e = assume_role_error(&E(
            r#"service error: Error { code: "AccessDenied", message: "User: u is not authorized", aws_request_id: "r-123" }"#,
        ));
        assert_eq!(e.kind, ErrorKind::AccessDenied);
        assert_eq!(e.message, "AccessDenied: User: u is not authorized");
        let e = assume_role_error(&E("dispatch failure: connection refused"));
        assert!(e.is_retryable());
    }
}
