//! Reads a worker's AWS keys from the Secret its spec names. The values go straight into the
//! SDK's credential provider; they are never logged, put in an Event, a status or a task
//! definition (`StaticKeys`' Debug is redacted, errors name keys, never values).

use crate::api::CredentialsSpec;
use crate::aws::StaticKeys;
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

/// The keys of the named Secret, or `None` when the spec names none (default chain).
pub async fn load(
    client: &Client,
    namespace: &str,
    spec: Option<&CredentialsSpec>,
) -> Result<Option<StaticKeys>, CredentialsError> {
    let Some(spec) = spec else { return Ok(None) };
    let name = spec.secret_ref.name.clone();
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
        (Some(access_key_id), Some(secret_access_key)) => Ok(Some(StaticKeys {
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
