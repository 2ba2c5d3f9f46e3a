//! The AWS identity a worker's calls use: the operator's own (no `spec.credentials`), static
//! keys from the Secret its spec names (`secretRef`), or a role the operator assumes from its
//! own identity (`roleArn`, see docs/cross-account.md). Key values go straight into the SDK's
//! credential provider; they are never logged, put in an Event, a status or a task definition
//! (`StaticKeys`' Debug is redacted, errors name keys, never values).

use crate::api::CredentialsSpec;
use crate::aws::{AssumedRole, AwsClients, AwsError, ClientFactory, StaticKeys};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

pub const ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
pub const SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
pub const SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error(
        "Secret {namespace}/{name} named by spec.credentials.secretRef does not exist; create it with keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    )]
    NotFound { namespace: String, name: String },
    #[error(
        "Secret {namespace}/{name} named by spec.credentials.secretRef lacks key(s) {missing}; it needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (AWS_SESSION_TOKEN optional)"
    )]
    MissingKeys {
        namespace: String,
        name: String,
        missing: String,
    },
    #[error("reading Secret {namespace}/{name}: {source}")]
    Kube {
        namespace: String,
        name: String,
        source: kube::Error,
    },
}

impl CredentialsError {
    /// The condition reason this error is reported under.
    pub fn reason(&self) -> &'static str {
        match self {
            CredentialsError::NotFound { .. } => crate::api::conditions::reason::SECRET_NOT_FOUND,
            _ => crate::api::conditions::reason::SECRET_INVALID,
        }
    }
}

/// Whose credentials sign a worker's AWS calls.
#[derive(Debug, Clone)]
pub enum Identity {
    /// The operator's own (its default credential chain).
    Operator,
    /// Static keys from the worker's Secret.
    Keys(StaticKeys),
    /// A role assumed from the operator's own identity.
    Role(AssumedRole),
}

impl Identity {
    /// The clients acting as this identity. Only a role can fail here: the operator could not
    /// assume it (the error's message names the role and what to grant); no call of the
    /// worker was made.
    pub async fn clients(
        self,
        factory: &ClientFactory,
        region: &str,
    ) -> Result<AwsClients, AwsError> {
        match self {
            Identity::Operator => Ok(factory.clients(region, None).await),
            Identity::Keys(k) => Ok(factory.clients(region, Some(k)).await),
            Identity::Role(role) => factory.role_clients(region, &role).await.map_err(|e| {
                let message = role.refusal(&e.message);
                AwsError { message, ..e }
            }),
        }
    }
}

/// The identity `spec` names for the worker `namespace/name`; reads the Secret for keys.
pub async fn load(
    client: &Client,
    namespace: &str,
    worker: &str,
    spec: Option<&CredentialsSpec>,
) -> Result<Identity, CredentialsError> {
    let Some(spec) = spec else {
        return Ok(Identity::Operator);
    };
    if let Some(role_arn) = &spec.role_arn {
        return Ok(Identity::Role(AssumedRole {
            role_arn: role_arn.clone(),
            external_id: spec.external_id.clone(),
            session_duration_seconds: spec.session_duration_seconds,
            namespace: namespace.into(),
            name: worker.into(),
        }));
    }
    let Some(secret_ref) = &spec.secret_ref else {
        // Admission refuses credentials naming neither; an object from before that rule
        // falls back to the operator's identity as if none were set.
        return Ok(Identity::Operator);
    };
    let name = secret_ref.name.clone();
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(&name)
        .await
        .map_err(|source| CredentialsError::Kube {
            namespace: namespace.into(),
            name: name.clone(),
            source,
        })?
        .ok_or_else(|| CredentialsError::NotFound {
            namespace: namespace.into(),
            name: name.clone(),
        })?;
    let value = |key: &str| -> Option<String> {
        let from_data = secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .and_then(|b| String::from_utf8(b.0.clone()).ok());
        let from_string = secret
            .string_data
            .as_ref()
            .and_then(|d| d.get(key))
            .cloned();
        from_data
            .or(from_string)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let (id, key) = (value(ACCESS_KEY_ID), value(SECRET_ACCESS_KEY));
    let missing: Vec<&str> = [
        (ACCESS_KEY_ID, id.is_none()),
        (SECRET_ACCESS_KEY, key.is_none()),
    ]
    .into_iter()
    .filter_map(|(k, m)| m.then_some(k))
    .collect();
    match (id, key) {
        (Some(access_key_id), Some(secret_access_key)) => Ok(Identity::Keys(StaticKeys {
            access_key_id,
            secret_access_key,
            session_token: value(SESSION_TOKEN),
        })),
        _ => Err(CredentialsError::MissingKeys {
            namespace: namespace.into(),
            name,
            missing: missing.join(", "),
        }),
    }
}
