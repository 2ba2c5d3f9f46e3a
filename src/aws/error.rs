//! AWS errors, classified: what is retried (throttling, 5xx, transport), what a user must fix
//! (access denied, invalid parameter) and what counts as "already gone" (not found).

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// What can be done about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Rate limited: retry later with backoff.
    Throttling,
    /// 5xx, timeout or connection problem: retry later with backoff.
    Transient,
    /// The credentials lack a permission: a user must grant it.
    AccessDenied,
    /// AWS refused a value: a user must change the spec.
    InvalidParameter,
    /// The resource does not exist.
    NotFound,
    /// Anything else.
    Other,
}

/// One failed AWS call.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{service}:{operation} failed: {code}: {message}")]
pub struct AwsError {
    pub service: &'static str,
    pub operation: &'static str,
    pub code: String,
    pub message: String,
    pub kind: ErrorKind,
}

impl AwsError {
    pub fn is(&self, kind: ErrorKind) -> bool {
        self.kind == kind
    }

    /// Retrying later may succeed without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Throttling | ErrorKind::Transient | ErrorKind::Other
        )
    }

    /// An error that is not an AWS response (a response AWS sent that made no sense).
    pub fn unexpected(
        service: &'static str,
        operation: &'static str,
        message: impl Into<String>,
    ) -> AwsError {
        AwsError {
            service,
            operation,
            code: "Unexpected".into(),
            message: message.into(),
            kind: ErrorKind::Other,
        }
    }
}

/// Classifies an error code (and HTTP status, when known).
pub fn classify(code: &str, status: Option<u16>) -> ErrorKind {
    let c = code.to_ascii_lowercase();
    if c.contains("throttl")
        || c.contains("toomanyrequests")
        || c.contains("requestlimitexceeded")
        || c == "slowdown"
        || status == Some(429)
    {
        ErrorKind::Throttling
    } else if c.contains("accessdenied")
        || c.contains("unauthorized")
        || c == "authfailure"
        || c.contains("invalidclienttokenid")
        || c.contains("signaturedoesnotmatch")
        || c.contains("expiredtoken")
        || status == Some(403)
    {
        ErrorKind::AccessDenied
    } else if c.contains("notfound")
        || c.contains("nosuch")
        || c.contains("nonexistent")
        || c.ends_with(".notfound")
        || c == "clusternotfoundexception"
    {
        ErrorKind::NotFound
    } else if c.contains("invalidparameter")
        || c.contains("validation")
        || c.starts_with("invalid")
        || c.contains("malformed")
    {
        ErrorKind::InvalidParameter
    } else if status.is_some_and(|s| s >= 500)
        || c.contains("internal")
        || c.contains("serviceunavailable")
        || c.contains("unavailable")
    {
        ErrorKind::Transient
    } else {
        ErrorKind::Other
    }
}

/// `.aws("sqs", "CreateQueue")` on any SDK result.
pub trait SdkResultExt<T> {
    fn aws(self, service: &'static str, operation: &'static str) -> Result<T, AwsError>;
}

impl<T, E, R> SdkResultExt<T> for Result<T, SdkError<E, R>>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + HttpStatus,
{
    fn aws(self, service: &'static str, operation: &'static str) -> Result<T, AwsError> {
        self.map_err(|err| {
            let status = err.raw_response().map(|r| r.http_status());
            let (code, message) = match &err {
                SdkError::ServiceError(e) => (
                    e.err().code().unwrap_or("Unknown").to_string(),
                    e.err().message().unwrap_or_default().to_string(),
                ),
                SdkError::TimeoutError(_) => {
                    ("Timeout".to_string(), "request timed out".to_string())
                }
                SdkError::DispatchFailure(e) => ("DispatchFailure".to_string(), format!("{e:?}")),
                SdkError::ResponseError(_) => (
                    "ResponseError".to_string(),
                    "unreadable response".to_string(),
                ),
                other => ("Unknown".to_string(), other.to_string()),
            };
            let kind = match &err {
                SdkError::TimeoutError(_)
                | SdkError::DispatchFailure(_)
                | SdkError::ResponseError(_) => ErrorKind::Transient,
                _ => classify(&code, status),
            };
            AwsError {
                service,
                operation,
                code,
                message,
                kind,
            }
        })
    }
}

/// The HTTP status of a raw response, whatever its type.
pub trait HttpStatus {
    fn http_status(&self) -> u16;
}

impl HttpStatus for aws_smithy_runtime_api::http::Response {
    fn http_status(&self) -> u16 {
        self.status().as_u16()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        for (code, status, kind) in [
            ("ThrottlingException", Some(400), ErrorKind::Throttling),
            ("Throttling", Some(400), ErrorKind::Throttling),
            ("RequestLimitExceeded", Some(503), ErrorKind::Throttling),
            ("AccessDeniedException", Some(400), ErrorKind::AccessDenied),
            ("UnauthorizedOperation", Some(403), ErrorKind::AccessDenied),
            (
                "AWS.SimpleQueueService.NonExistentQueue",
                Some(400),
                ErrorKind::NotFound,
            ),
            ("NoSuchEntity", Some(404), ErrorKind::NotFound),
            ("InvalidGroup.NotFound", Some(400), ErrorKind::NotFound),
            ("ResourceNotFoundException", Some(400), ErrorKind::NotFound),
            (
                "InvalidParameterException",
                Some(400),
                ErrorKind::InvalidParameter,
            ),
            ("ValidationError", Some(400), ErrorKind::InvalidParameter),
            ("Unknown", Some(500), ErrorKind::Transient),
            ("InternalFailure", Some(500), ErrorKind::Transient),
            ("AlreadyExists", Some(400), ErrorKind::Other),
        ] {
            assert_eq!(classify(code, status), kind, "{code}");
        }
    }
}
