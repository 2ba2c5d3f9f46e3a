//! Self-termination: after the queue is drained, the worker removes its own capacity as
//! `WORKER_TERMINATION` says, first recording its outcome on its ECS task
//! ([`Capacity::record_outcome`]). Its instance comes from `WORKER_INSTANCE_ID` or the ECS task
//! metadata, never from the EC2 instance metadata service. `worker/README.md` ("Environment
//! contract") describes both steps.

use std::time::Duration;

use aws_sdk_autoscaling::error::DisplayErrorContext;

use crate::Exit;
use crate::config::{Config, ECS_METADATA_URI_V4, INSTANCE_ID, TerminationMode};

/// Tag the worker puts on its own ECS task before it removes its capacity: the exit code it is
/// about to exit with (`0`, or `3` when a message failed). The operator reads it for a task that
/// stopped without an exit code. The task role may write this tag key only.
pub use ecs_worker_contract::OUTCOME_TAG;

/// What the termination step did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Terminated {
    /// `WORKER_TERMINATION=none`: capacity left alone.
    Skipped,
    /// The instance is terminating and the group's desired capacity was decremented.
    Instance { instance_id: String, group: String },
    /// The group's desired capacity was set to 0.
    Group { group: String },
}

/// Why the worker could not remove its capacity.
#[derive(Debug, thiserror::Error)]
pub enum TerminationError {
    #[error("could not find this worker's EC2 instance id ({0}); set {INSTANCE_ID}")]
    InstanceId(String),
    #[error("instance {0} is not in any Auto Scaling group")]
    NotInGroup(String),
    #[error(
        "instance {instance_id} belongs to Auto Scaling group {actual}, not {expected}; left running"
    )]
    WrongGroup {
        instance_id: String,
        actual: String,
        expected: String,
    },
    #[error("Auto Scaling {operation} failed: {message}")]
    AutoScaling {
        operation: &'static str,
        message: String,
    },
}

/// Task metadata fields the worker reads (`${ECS_CONTAINER_METADATA_URI_V4}/task`).
#[derive(Debug, serde::Deserialize)]
struct TaskMetadata {
    #[serde(rename = "Cluster")]
    cluster: Option<String>,
    #[serde(rename = "TaskARN")]
    task_arn: Option<String>,
}

/// The ECS task the worker runs in, as its task metadata names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcsTask {
    /// Cluster name or ARN (`WORKER_CLUSTER` when the metadata leaves it out).
    pub cluster: String,
    pub arn: String,
}

/// The AWS capabilities the termination step needs.
#[derive(Debug, Clone)]
pub struct Capacity {
    autoscaling: aws_sdk_autoscaling::Client,
    ecs: aws_sdk_ecs::Client,
    http: reqwest::Client,
}

impl Capacity {
    pub fn new(autoscaling: aws_sdk_autoscaling::Client, ecs: aws_sdk_ecs::Client) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Capacity {
            autoscaling,
            ecs,
            http,
        }
    }

    /// Removes the worker's capacity as `config.termination` says.
    pub async fn terminate(&self, config: &Config) -> Result<Terminated, TerminationError> {
        match config.termination {
            TerminationMode::None => Ok(Terminated::Skipped),
            TerminationMode::Group => {
                let group = config.autoscaling_group.clone().ok_or_else(|| {
                    TerminationError::AutoScaling {
                        operation: "SetDesiredCapacity",
                        message: "no Auto Scaling group configured".into(),
                    }
                })?;
                self.autoscaling
                    .set_desired_capacity()
                    .auto_scaling_group_name(&group)
                    .desired_capacity(0)
                    .send()
                    .await
                    .map_err(|e| autoscaling_error("SetDesiredCapacity", e))?;
                Ok(Terminated::Group { group })
            }
            TerminationMode::Instance => {
                let instance_id = self.instance_id(config).await?;
                self.terminate_instance(&instance_id, config.autoscaling_group.as_deref())
                    .await
            }
        }
    }

    async fn terminate_instance(
        &self,
        instance_id: &str,
        expected_group: Option<&str>,
    ) -> Result<Terminated, TerminationError> {
        let out = self
            .autoscaling
            .describe_auto_scaling_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| autoscaling_error("DescribeAutoScalingInstances", e))?;
        let group = out
            .auto_scaling_instances()
            .iter()
            .find(|i| i.instance_id() == Some(instance_id))
            .and_then(|i| i.auto_scaling_group_name())
            .ok_or_else(|| TerminationError::NotInGroup(instance_id.to_owned()))?
            .to_owned();
        if let Some(expected) = expected_group
            && expected != group
        {
            return Err(TerminationError::WrongGroup {
                instance_id: instance_id.to_owned(),
                actual: group,
                expected: expected.to_owned(),
            });
        }
        self.autoscaling
            .terminate_instance_in_auto_scaling_group()
            .instance_id(instance_id)
            .should_decrement_desired_capacity(true)
            .send()
            .await
            .map_err(|e| autoscaling_error("TerminateInstanceInAutoScalingGroup", e))?;
        Ok(Terminated::Instance {
            instance_id: instance_id.to_owned(),
            group,
        })
    }

    /// Finds the worker's EC2 instance id: `WORKER_INSTANCE_ID`, else through its ECS task.
    pub async fn instance_id(&self, config: &Config) -> Result<String, TerminationError> {
        if let Some(id) = &config.instance_id {
            return Ok(id.clone());
        }
        let task = self
            .task(config)
            .await
            .map_err(|e| TerminationError::InstanceId(format!("ECS task metadata: {e}")))?;
        self.instance_of(&task)
            .await
            .map_err(TerminationError::InstanceId)
    }

    /// The worker's ECS task, from the task metadata endpoint v4.
    pub async fn task(&self, config: &Config) -> Result<EcsTask, String> {
        let uri = config.ecs_metadata_uri.as_deref().ok_or_else(|| {
            format!("{ECS_METADATA_URI_V4} is not set: not running as an ECS task")
        })?;
        let url = format!("{}/task", uri.trim_end_matches('/'));
        let task: TaskMetadata = self
            .http
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("GET {url}: {e}"))?
            .json()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let arn = task
            .task_arn
            .ok_or_else(|| format!("{url} has no TaskARN"))?;
        let cluster = task
            .cluster
            .or_else(|| config.cluster.clone())
            .ok_or_else(|| format!("{url} has no Cluster"))?;
        Ok(EcsTask { cluster, arn })
    }

    /// The EC2 instance of a task: its container instance (DescribeTasks), then that
    /// container instance's `ec2InstanceId` (DescribeContainerInstances).
    async fn instance_of(&self, task: &EcsTask) -> Result<String, String> {
        let tasks = self
            .ecs
            .describe_tasks()
            .cluster(&task.cluster)
            .tasks(&task.arn)
            .send()
            .await
            .map_err(|e| format!("ECS DescribeTasks: {}", DisplayErrorContext(e)))?;
        let container_instance = tasks
            .tasks()
            .iter()
            .find_map(|t| t.container_instance_arn())
            .ok_or_else(|| format!("task {} has no container instance", task.arn))?;

        let instances = self
            .ecs
            .describe_container_instances()
            .cluster(&task.cluster)
            .container_instances(container_instance)
            .send()
            .await
            .map_err(|e| format!("ECS DescribeContainerInstances: {}", DisplayErrorContext(e)))?;
        instances
            .container_instances()
            .iter()
            .find_map(|ci| ci.ec2_instance_id())
            .map(str::to_owned)
            .ok_or_else(|| {
                format!("container instance {container_instance} has no EC2 instance id")
            })
    }

    /// Records `exit` on the worker's ECS task as tag [`OUTCOME_TAG`] and returns the task ARN.
    /// `None` when the worker does not run as an ECS task (no task metadata endpoint): then
    /// nothing else can report its exit either.
    pub async fn record_outcome(
        &self,
        config: &Config,
        exit: Exit,
    ) -> Option<Result<String, String>> {
        config.ecs_metadata_uri.as_ref()?;
        let recorded = async {
            let task = self
                .task(config)
                .await
                .map_err(|e| format!("ECS task metadata: {e}"))?;
            let tag = aws_sdk_ecs::types::Tag::builder()
                .key(OUTCOME_TAG)
                .value(exit.code().to_string())
                .build();
            self.ecs
                .tag_resource()
                .resource_arn(&task.arn)
                .tags(tag)
                .send()
                .await
                .map_err(|e| format!("ECS TagResource: {}", DisplayErrorContext(e)))?;
            Ok(task.arn)
        };
        Some(recorded.await)
    }
}

fn autoscaling_error(operation: &'static str, e: impl std::error::Error) -> TerminationError {
    TerminationError::AutoScaling {
        operation,
        message: DisplayErrorContext(e).to_string(),
    }
}
