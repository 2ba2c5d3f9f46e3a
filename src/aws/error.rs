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
    /// AWS has not yet made a resource created moments ago visible to the service that uses
    /// it (eventual consistency): retry soon, nobody needs to act.
    Propagating,
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
            ErrorKind::Throttling
                | ErrorKind::Transient
                | ErrorKind::Propagating
                | ErrorKind::Other
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

/// How AWS answers a use of a resource created moments ago: the resource "does not exist"
/// (IAM `NoSuchEntity`, SQS `NonExistentQueue`, EC2 `Invalid*.NotFound`, ECS
/// `ClusterNotFoundException`), or Auto Scaling refuses a launch template whose new instance
/// profile IAM has not yet propagated.
/// <https://docs.aws.amazon.com/IAM/latest/UserGuide/troubleshoot_general.html#troubleshoot_general_eventual-consistency>
/// <https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html>
/// <https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_CreateQueue.html>
pub fn is_propagation(e: &AwsError) -> bool {
    let m = e.message.to_ascii_lowercase();
    e.is(ErrorKind::NotFound)
        || e.is(ErrorKind::Propagating)
        || m.contains("invalid iaminstanceprofile")
        || m.contains("instance profile") && m.contains("invalid")
        || m.contains("valid fully-formed launch template")
        || e.code.contains("EntityAlreadyExists")
        || (e.is(ErrorKind::InvalidParameter) && m.contains("does not exist"))
}

/// Delays between the attempts of [`settle`]: about 15 s in all, the time IAM and EC2 changes
/// commonly take to propagate. A use still refused after that is retried on the next
/// reconcile, a few seconds later.
pub const SETTLE_DELAYS_MS: [u64; 5] = [500, 1_000, 2_000, 4_000, 8_000];

/// Runs `call`, a use of resources this pass has just ensured, again while AWS answers as it
/// does right after a create ([`is_propagation`]); the last such error comes back as
/// [`ErrorKind::Propagating`], with a message that says so.
pub async fn settle<T, F, Fut>(what: &str, call: F) -> Result<T, AwsError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, AwsError>>,
{
    settle_with(&SETTLE_DELAYS_MS, what, call).await
}

/// [`settle`] when the resource the call uses was created by the operator; otherwise the call
/// once, its error as AWS gave it (a resource the user named that AWS does not know is the
/// user's to fix, not AWS's to propagate).
pub async fn settle_if<T, F, Fut>(
    created_here: bool,
    what: &str,
    mut call: F,
) -> Result<T, AwsError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, AwsError>>,
{
    if created_here {
        settle(what, call).await
    } else {
        call().await
    }
}

async fn settle_with<T, F, Fut>(delays_ms: &[u64], what: &str, mut call: F) -> Result<T, AwsError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, AwsError>>,
{
    let mut delays = delays_ms.iter();
    loop {
        match call().await {
            Err(e) if is_propagation(&e) => match delays.next() {
                Some(ms) => {
                    tracing::debug!(what, error = %e, "not yet visible; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(*ms)).await;
                }
                None => {
                    return Err(AwsError {
                        kind: ErrorKind::Propagating,
                        message: format!(
                            "{}; AWS has not yet made {what} visible (changes take a few seconds to propagate); retrying",
                            e.message
                        ),
                        ..e
                    });
                }
            },
            other => return other,
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
                // The error chain in words: a Debug dump carries response headers (a date)
                // that would change the status message, and so the object, on every attempt.
                SdkError::DispatchFailure(e) => (
                    "DispatchFailure".to_string(),
                    e.as_connector_error()
                        .map(|c| {
                            aws_smithy_types::error::display::DisplayErrorContext(c).to_string()
                        })
                        .unwrap_or_else(|| "the request could not be sent".to_string()),
                ),
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

    fn err(code: &str, message: &str) -> AwsError {
        AwsError {
            service: "autoscaling",
            operation: "CreateAutoScalingGroup",
            code: code.into(),
            message: message.into(),
            kind: classify(code, Some(400)),
        }
    }

    #[test]
    fn propagation_errors_are_told_apart_from_refused_values() {
        assert!(is_propagation(&err(
            "ValidationError",
            "You must use a valid fully-formed launch template. Value (ecsw-x) for parameter iamInstanceProfile.name is invalid. Invalid IamInstanceProfile"
        )));
        assert!(is_propagation(&err("NoSuchEntity", "role not found")));
        assert!(is_propagation(&err("InvalidVpcID.NotFound", "vpc-1")));
        assert!(is_propagation(&err("EntityAlreadyExists", "role exists")));
        assert!(!is_propagation(&err(
            "ValidationError",
            "Max bound, 200, must be greater than or equal to min bound, 0"
        )));
        assert!(!is_propagation(&err("AccessDenied", "no")));
    }

    #[tokio::test]
    async fn settle_retries_then_reports_propagating() {
        const FAST: [u64; 3] = [1, 1, 1];
        let calls = std::sync::atomic::AtomicU32::new(0);
        let ok: Result<u32, AwsError> = settle_with(&FAST, "the instance profile", || async {
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if n < 2 {
                Err(err("NoSuchEntity", "x"))
            } else {
                Ok(n)
            }
        })
        .await;
        assert_eq!(ok.ok(), Some(2));
        let never: Result<(), AwsError> = settle_with(&FAST, "the role", || async {
            Err(err("NoSuchEntity", "gone"))
        })
        .await;
        let e = never.expect_err("still missing");
        assert_eq!(e.kind, ErrorKind::Propagating);
        assert!(
            e.message.contains("not yet made the role visible"),
            "{}",
            e.message
        );
        let refused: Result<(), AwsError> = settle_with(&FAST, "x", || async {
            Err(err("ValidationError", "bad value"))
        })
        .await;
        assert_eq!(
            refused.expect_err("refused").kind,
            ErrorKind::InvalidParameter
        );
        // A resource the user named: one call, AWS's answer as it is.
        let calls = std::sync::atomic::AtomicU32::new(0);
        let named: Result<(), AwsError> = settle_if(false, "the user's profile", || async {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err(err("ValidationError", "Invalid IamInstanceProfile"))
        })
        .await;
        assert_eq!(
            named.expect_err("refused").kind,
            ErrorKind::InvalidParameter
        );
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
