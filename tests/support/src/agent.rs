//! Plays the ECS container agent against moto, which has none.
//!
//! On real EC2 the agent on each instance registers it with the cluster, reports task exits
//! and disappears with the instance. Here a test does the same through the API: [`Agent::sync`]
//! registers the group's InService instances and deregisters those that left it;
//! [`Agent::end_task`] stops a task with a container exit code (moto extension call).

use aws_sdk_autoscaling::Client as AutoScaling;
use aws_sdk_ecs::Client as Ecs;
use aws_sdk_ecs::types::{ContainerStateChange, Task};
use std::collections::BTreeSet;

/// The agent of every instance of one Auto Scaling group in one ECS cluster.
#[derive(Clone)]
pub struct Agent {
    pub ecs: Ecs,
    pub autoscaling: AutoScaling,
    pub cluster: String,
    pub group: String,
}

/// One registered instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registered {
    pub instance_id: String,
    pub container_instance_arn: String,
}

impl Agent {
    pub fn new(config: &aws_config::SdkConfig, cluster: &str, group: &str) -> Agent {
        Agent {
            ecs: Ecs::new(config),
            autoscaling: AutoScaling::new(config),
            cluster: cluster.to_string(),
            group: group.to_string(),
        }
    }

    /// InService instance ids of the group (empty when the group does not exist).
    pub async fn group_instances(&self) -> anyhow::Result<BTreeSet<String>> {
        let out = self
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(&self.group)
            .send()
            .await?;
        Ok(out
            .auto_scaling_groups()
            .iter()
            .flat_map(|g| g.instances())
            .filter(|i| i.lifecycle_state().map(|s| s.as_str()) == Some("InService"))
            .filter_map(|i| i.instance_id().map(str::to_string))
            .collect())
    }

    /// Registered container instances (ACTIVE and DRAINING) of the cluster.
    pub async fn registered(&self) -> anyhow::Result<Vec<Registered>> {
        let arns = self
            .ecs
            .list_container_instances()
            .cluster(&self.cluster)
            .send()
            .await?
            .container_instance_arns()
            .to_vec();
        if arns.is_empty() {
            return Ok(Vec::new());
        }
        let out = self
            .ecs
            .describe_container_instances()
            .cluster(&self.cluster)
            .set_container_instances(Some(arns))
            .send()
            .await?;
        Ok(out
            .container_instances()
            .iter()
            .filter(|c| c.status() != Some("INACTIVE"))
            .filter_map(|c| {
                Some(Registered {
                    instance_id: c.ec2_instance_id()?.to_string(),
                    container_instance_arn: c.container_instance_arn()?.to_string(),
                })
            })
            .collect())
    }

    /// Registers every InService instance not yet registered and deregisters the registered
    /// instances that left the group. Returns the instances newly registered.
    pub async fn sync(&self) -> anyhow::Result<Vec<Registered>> {
        let members = self.group_instances().await?;
        let registered = self.registered().await?;
        for r in registered.iter().filter(|r| !members.contains(&r.instance_id)) {
            self.ecs
                .deregister_container_instance()
                .cluster(&self.cluster)
                .container_instance(&r.container_instance_arn)
                .force(true)
                .send()
                .await?;
        }
        let known: BTreeSet<_> = registered.iter().map(|r| r.instance_id.clone()).collect();
        let mut added = Vec::new();
        for id in members.iter().filter(|id| !known.contains(*id)) {
            let out = self
                .ecs
                .register_container_instance()
                .cluster(&self.cluster)
                .instance_identity_document(serde_json::json!({ "instanceId": id }).to_string())
                .send()
                .await?;
            if let Some(arn) = out.container_instance().and_then(|c| c.container_instance_arn()) {
                added.push(Registered { instance_id: id.clone(), container_instance_arn: arn.to_string() });
            }
        }
        Ok(added)
    }

    /// Tasks of the cluster in the given desired status (`RUNNING` or `STOPPED`), described.
    pub async fn tasks(&self, desired_status: &str) -> anyhow::Result<Vec<Task>> {
        let arns = self
            .ecs
            .list_tasks()
            .cluster(&self.cluster)
            .desired_status(desired_status.into())
            .send()
            .await?
            .task_arns()
            .to_vec();
        if arns.is_empty() {
            return Ok(Vec::new());
        }
        let out = self.ecs.describe_tasks().cluster(&self.cluster).set_tasks(Some(arns)).send().await?;
        Ok(out.tasks().to_vec())
    }

    /// Ends a task the way the agent reports an exited essential container.
    pub async fn end_task(&self, task_arn: &str, exit_code: i32, reason: &str) -> anyhow::Result<()> {
        let task = self
            .ecs
            .describe_tasks()
            .cluster(&self.cluster)
            .tasks(task_arn)
            .send()
            .await?;
        let containers = task
            .tasks()
            .iter()
            .flat_map(|t| t.containers())
            .filter_map(|c| c.name())
            .map(|name| {
                ContainerStateChange::builder()
                    .container_name(name)
                    .exit_code(exit_code)
                    .status("STOPPED")
                    .build()
            })
            .collect::<Vec<_>>();
        self.ecs
            .submit_task_state_change()
            .cluster(&self.cluster)
            .task(task_arn)
            .status("STOPPED")
            .reason(reason)
            .set_containers(Some(containers))
            .send()
            .await?;
        Ok(())
    }
}
