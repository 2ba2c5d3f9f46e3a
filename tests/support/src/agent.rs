//! Plays the ECS container agent against moto, which has none.
//!
//! On real EC2 the agent on each instance registers it with the cluster, reports task exits
//! and disappears with the instance. Here a test does the same through the API: [`Agent::sync`]
//! registers the group's InService instances and deregisters those that left it;
//! [`Agent::end_task`] stops a task with a container exit code (moto extension call).
//!
//! On a server with IAM enforced ([`crate::iam`]) the calls the real ECS agent makes
//! (RegisterContainerInstance, DeregisterContainerInstance, SubmitTaskStateChange) sign as the
//! instance role (the role of the instance profile the group's launch template names, assumed
//! as EC2 assumes it), a worker process gets its task role's credentials as ECS gives them,
//! and what only the test reads (groups, container instances, tasks, definitions) signs as the
//! test's admin user (the configuration the agent was made with).

use crate::iam::Principals;
use aws_sdk_autoscaling::Client as AutoScaling;
use aws_sdk_autoscaling::types::AutoScalingGroup;
use aws_sdk_ecs::Client as Ecs;
use aws_sdk_ecs::types::{ContainerStateChange, Task};
use std::collections::BTreeSet;
use std::sync::Arc;

/// The agent of every instance of one Auto Scaling group in one ECS cluster.
#[derive(Clone)]
pub struct Agent {
    pub ecs: Ecs,
    pub autoscaling: AutoScaling,
    pub cluster: String,
    pub group: String,
    /// With IAM enforced on the server: its principals.
    iam: Option<Arc<Principals>>,
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
            iam: config.endpoint_url().and_then(Principals::for_endpoint),
        }
    }

    /// The ECS client of the agent on the group's instances: with IAM enforced, signing as the
    /// instance role; otherwise the agent's own client.
    async fn instance_ecs(&self) -> anyhow::Result<Ecs> {
        let Some(iam) = &self.iam else {
            return Ok(self.ecs.clone());
        };
        let profile = iam
            .group_instance_profile(&self.group)
            .await?
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "group {} has no launch template naming an instance profile",
                    self.group
                )
            })?;
        let keys = iam.instance_profile_role(&profile).await?;
        Ok(Ecs::new(&keys.sdk_config(iam.endpoint())))
    }

    /// The group, when it exists.
    async fn describe_group(&self) -> anyhow::Result<Option<AutoScalingGroup>> {
        let out = self
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(&self.group)
            .send()
            .await?;
        Ok(out.auto_scaling_groups().first().cloned())
    }

    /// InService instance ids of the group (empty when the group does not exist).
    pub async fn group_instances(&self) -> anyhow::Result<BTreeSet<String>> {
        Ok(self
            .describe_group()
            .await?
            .iter()
            .flat_map(|g| g.instances())
            .filter(|i| i.lifecycle_state().map(|s| s.as_str()) == Some("InService"))
            .filter_map(|i| i.instance_id().map(str::to_string))
            .collect())
    }

    /// The group's desired capacity and its number of instances, whatever their state.
    pub async fn capacity(&self) -> anyhow::Result<(i32, usize)> {
        let group = self
            .describe_group()
            .await?
            .ok_or_else(|| anyhow::anyhow!("group {} not found", self.group))?;
        Ok((
            group.desired_capacity().unwrap_or(-1),
            group.instances().len(),
        ))
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
        let known: BTreeSet<_> = registered.iter().map(|r| r.instance_id.clone()).collect();
        let left: Vec<&Registered> = registered
            .iter()
            .filter(|r| !members.contains(&r.instance_id))
            .collect();
        if left.is_empty() && members.iter().all(|id| known.contains(id)) {
            return Ok(Vec::new());
        }
        let ecs = self.instance_ecs().await?;
        for r in left {
            ecs.deregister_container_instance()
                .cluster(&self.cluster)
                .container_instance(&r.container_instance_arn)
                .force(true)
                .send()
                .await?;
        }
        let mut added = Vec::new();
        for id in members.iter().filter(|id| !known.contains(*id)) {
            let out = ecs
                .register_container_instance()
                .cluster(&self.cluster)
                .instance_identity_document(serde_json::json!({ "instanceId": id }).to_string())
                .send()
                .await?;
            if let Some(arn) = out
                .container_instance()
                .and_then(|c| c.container_instance_arn())
            {
                added.push(Registered {
                    instance_id: id.clone(),
                    container_instance_arn: arn.to_string(),
                });
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
        let out = self
            .ecs
            .describe_tasks()
            .cluster(&self.cluster)
            .set_tasks(Some(arns))
            .send()
            .await?;
        Ok(out.tasks().to_vec())
    }

    /// Ends a task the way the agent reports an exited essential container.
    pub async fn end_task(
        &self,
        task_arn: &str,
        exit_code: i32,
        reason: &str,
    ) -> anyhow::Result<()> {
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
        self.instance_ecs()
            .await?
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

/// How [`Player`] ends the tasks it sees start.
#[derive(Clone, Debug)]
pub enum Play {
    /// Run the real worker binary as a local process with the task's environment (plus the
    /// emulator endpoint, the instance id and credentials: with IAM enforced the task role's,
    /// as ECS gives them; otherwise dummy keys), and end the task with its exit code.
    RealWorker {
        binary: std::path::PathBuf,
        endpoint: String,
        extra_env: Vec<(String, String)>,
    },
    /// Only register/deregister instances; the test ends tasks itself.
    InstancesOnly,
}

/// Plays the agent continuously in the background until dropped.
pub struct Player {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
    /// Task ARN -> exit code of every task ended so far.
    pub ended: std::sync::Arc<std::sync::Mutex<Vec<(String, i32)>>>,
}

impl Player {
    pub fn start(agent: Agent, play: Play) -> Player {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let ended = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let ended2 = ended.clone();
        let handle = tokio::spawn(async move {
            let mut started: BTreeSet<String> = BTreeSet::new();
            let mut running: Vec<(String, tokio::process::Child)> = Vec::new();
            loop {
                if let Err(e) = agent.step(&play, &mut started, &mut running, &ended2).await {
                    tracing::debug!(error = %e, "agent step failed");
                }
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tokio::time::sleep(std::time::Duration::from_millis(250)) => {}
                }
            }
            for (_, mut child) in running {
                let _ = child.kill().await;
            }
        });
        Player {
            stop: Some(stop),
            handle: Some(handle),
            ended,
        }
    }

    /// Stops playing and kills any worker process still running.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
    }
}

impl Drop for Player {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

impl Agent {
    async fn step(
        &self,
        play: &Play,
        started: &mut BTreeSet<String>,
        running: &mut Vec<(String, tokio::process::Child)>,
        ended: &std::sync::Mutex<Vec<(String, i32)>>,
    ) -> anyhow::Result<()> {
        // Workers that exited: report their exit like the agent does.
        let mut still = Vec::new();
        for (arn, mut child) in running.drain(..) {
            match child.try_wait()? {
                Some(status) => {
                    let code = status.code().unwrap_or(137);
                    self.end_task(&arn, code, "Essential container in task exited")
                        .await?;
                    ended
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((arn, code));
                }
                None => still.push((arn, child)),
            }
        }
        *running = still;
        self.sync().await?;
        let Play::RealWorker {
            binary,
            endpoint,
            extra_env,
        } = play
        else {
            return Ok(());
        };
        let registered = self.registered().await?;
        for task in self.tasks("RUNNING").await? {
            let Some(arn) = task.task_arn().map(str::to_string) else {
                continue;
            };
            if task.last_status() != Some("RUNNING") || started.contains(&arn) {
                continue;
            }
            started.insert(arn.clone());
            let instance_id = registered
                .iter()
                .find(|r| Some(r.container_instance_arn.as_str()) == task.container_instance_arn())
                .map(|r| r.instance_id.clone())
                .unwrap_or_default();
            let def = self
                .ecs
                .describe_task_definition()
                .task_definition(task.task_definition_arn().unwrap_or_default())
                .send()
                .await?;
            let container = def
                .task_definition()
                .and_then(|d| d.container_definitions().first())
                .cloned();
            // The task role's credentials, as ECS gives them to the task's containers.
            let credentials = match &self.iam {
                Some(iam) => match def.task_definition().and_then(|d| d.task_role_arn()) {
                    Some(role) => iam.task_role(role).await?.env(),
                    None => Vec::new(),
                },
                None => vec![
                    ("AWS_ACCESS_KEY_ID".to_string(), "testing".to_string()),
                    ("AWS_SECRET_ACCESS_KEY".to_string(), "testing".to_string()),
                ],
            };
            let mut cmd = tokio::process::Command::new(binary);
            cmd.kill_on_drop(true).stdin(std::process::Stdio::null());
            for var in [
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN",
                "AWS_PROFILE",
            ] {
                cmd.env_remove(var);
            }
            // The definition's environment, then RunTask's override for the container on top,
            // as ECS does.
            let name = container.as_ref().and_then(|c| c.name());
            let overrides = task
                .overrides()
                .into_iter()
                .flat_map(|o| o.container_overrides())
                .filter(|o| o.name() == name)
                .flat_map(|o| o.environment());
            for kv in container
                .iter()
                .flat_map(|c| c.environment())
                .chain(overrides)
            {
                if let (Some(k), Some(v)) = (kv.name(), kv.value()) {
                    cmd.env(k, v);
                }
            }
            cmd.env("AWS_ENDPOINT_URL", endpoint)
                .envs(credentials)
                .env("AWS_EC2_METADATA_DISABLED", "true")
                .env("WORKER_INSTANCE_ID", &instance_id);
            for (k, v) in extra_env {
                cmd.env(k, v);
            }
            running.push((arn, cmd.spawn()?));
        }
        Ok(())
    }
}
