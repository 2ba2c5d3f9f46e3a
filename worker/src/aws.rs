//! The one place AWS clients are made. Region, credentials and the endpoint come from the
//! standard chain (`AWS_REGION`, the task role, `AWS_ENDPOINT_URL` for a local emulator), so the
//! worker has no AWS settings of its own.

use aws_config::{BehaviorVersion, SdkConfig};

/// The clients the worker uses.
#[derive(Debug, Clone)]
pub struct Clients {
    pub sqs: aws_sdk_sqs::Client,
    pub autoscaling: aws_sdk_autoscaling::Client,
    pub ecs: aws_sdk_ecs::Client,
}

impl Clients {
    /// Clients sharing one SDK configuration.
    pub fn new(sdk: &SdkConfig) -> Self {
        Clients {
            sqs: aws_sdk_sqs::Client::new(sdk),
            autoscaling: aws_sdk_autoscaling::Client::new(sdk),
            ecs: aws_sdk_ecs::Client::new(sdk),
        }
    }

    /// Clients configured from the environment.
    pub async fn from_env() -> Self {
        let sdk = aws_config::defaults(BehaviorVersion::latest()).load().await;
        Self::new(&sdk)
    }
}
