//! Self-termination: after the queue is drained, the worker removes its own capacity.
//!
//! In `instance` mode it finds its EC2 instance id and calls Auto Scaling
//! TerminateInstanceInAutoScalingGroup with ShouldDecrementDesiredCapacity, so with several
//! instances each one removes only itself and the group does not replace it. In `group` mode it
//! sets the group's desired capacity to 0 (the original system's behaviour).
//!
//! The instance id comes from, in order:
//! 1. `WORKER_INSTANCE_ID`;
//! 2. the ECS task metadata endpoint v4: `${ECS_CONTAINER_METADATA_URI_V4}/task` names the
//!    cluster and the task ARN (it does not name the container instance), ECS DescribeTasks gives
//!    the task's container instance, and DescribeContainerInstances its `ec2InstanceId`. This
//!    works in every network mode, unlike IMDS, which a bridge-mode container reaches only when
//!    the instance's IMDSv2 hop limit is at least 2;
//! 3. the EC2 instance metadata service (IMDSv2) as a last resort, unless
//!    `AWS_EC2_METADATA_DISABLED=true`.

use std::time::Duration;

use aws_sdk_autoscaling::error::DisplayErrorContext;

use crate::config::{Config, EC2_METADATA_DISABLED, INSTANCE_ID, TerminationMode};

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

    /// Finds the worker's EC2 instance id (see the module docs for the order).
    pub async fn instance_id(&self, config: &Config) -> Result<String, TerminationError> {
        if let Some(id) = &config.instance_id {
            return Ok(id.clone());
        }
        let mut tried = Vec::new();
        if let Some(uri) = &config.ecs_metadata_uri {
            match self
                .instance_id_from_ecs(uri, config.cluster.as_deref())
                .await
            {
                Ok(id) => return Ok(id),
                Err(e) => tried.push(format!("ECS task metadata: {e}")),
            }
        }
        if config.imds_disabled {
            tried.push(format!(
                "instance metadata: disabled by {EC2_METADATA_DISABLED}"
            ));
        } else {
            match instance_id_from_imds().await {
                Ok(id) => return Ok(id),
                Err(e) => tried.push(format!("instance metadata: {e}")),
            }
        }
        Err(TerminationError::InstanceId(tried.join("; ")))
    }

    async fn instance_id_from_ecs(
        &self,
        metadata_uri: &str,
        cluster: Option<&str>,
    ) -> Result<String, String> {
        let url = format!("{}/task", metadata_uri.trim_end_matches('/'));
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
        let task_arn = task
            .task_arn
            .ok_or_else(|| format!("{url} has no TaskARN"))?;
        let cluster = task
            .cluster
            .or_else(|| cluster.map(str::to_owned))
            .ok_or_else(|| format!("{url} has no Cluster"))?;

        let tasks = self
            .ecs
            .describe_tasks()
            .cluster(&cluster)
            .tasks(&task_arn)
            .send()
            .await
            .map_err(|e| format!("ECS DescribeTasks: {}", DisplayErrorContext(e)))?;
        let container_instance = tasks
            .tasks()
            .iter()
            .find_map(|t| t.container_instance_arn())
            .ok_or_else(|| format!("task {task_arn} has no container instance"))?;

        let instances = self
            .ecs
            .describe_container_instances()
            .cluster(&cluster)
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
}

async fn instance_id_from_imds() -> Result<String, String> {
    let client = aws_config::imds::Client::builder()
        .max_attempts(2)
        .connect_timeout(Duration::from_secs(1))
        .read_timeout(Duration::from_secs(2))
        .build();
    client
        .get("/latest/meta-data/instance-id")
        .await
        .map(String::from)
        .map_err(|e| DisplayErrorContext(e).to_string())
}

fn autoscaling_error(operation: &'static str, e: impl std::error::Error) -> TerminationError {
    TerminationError::AutoScaling {
        operation,
        message: DisplayErrorContext(e).to_string(),
    }
}
