//! Plays the ECS container agent against moto, which has none.
//!
//! What the agent on a real instance does, a test does through the API: [`Agent::sync`]
//! registers the group's InService instances and deregisters those that left it, and [`Player`]
//! runs the real worker binary for each task, with a task metadata endpoint v4, and delivers the
//! stops ECS asks for. A worker's exit is reported with its exit code while its host is up
//! ([`Agent::end_task`]); once the host is gone, ECS stops the task without one
//! ([`Agent::host_terminated`]). With IAM enforced ([`crate::iam`]), each call signs as the
//! principal that makes it on AWS ([`Agent`]).

use crate::iam::Principals;
use aws_sdk_autoscaling::Client as AutoScaling;
use aws_sdk_autoscaling::types::AutoScalingGroup;
use aws_sdk_ec2::Client as Ec2;
use aws_sdk_ecs::Client as Ecs;
use aws_sdk_ecs::types::{ContainerStateChange, Task, TaskDefinition};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// The agent of every instance of one Auto Scaling group in one ECS cluster.
///
/// On a server with IAM enforced ([`crate::iam`]), the calls the real ECS agent makes
/// (RegisterContainerInstance, DeregisterContainerInstance, SubmitTaskStateChange) sign as the
/// instance role (the role of the instance profile the group's launch template names, assumed
/// as EC2 assumes it), and a worker process gets its task role's credentials as ECS gives them.
/// What only the test reads (groups, instances, container instances, tasks, definitions) signs
/// as the test's admin user (the configuration the agent was made with). What ECS and EC2 do on
/// their own (stopping the tasks of a host that went away, draining an instance on a Spot
/// interruption notice, reclaiming a Spot instance) is no API call of a principal: the play
/// makes those changes as the admin user.
#[derive(Clone)]
pub struct Agent {
    pub ecs: Ecs,
    pub autoscaling: AutoScaling,
    ec2: Ec2,
    pub cluster: String,
    pub group: String,
    /// The emulator's endpoint and region (ECS's own doings go to its extension API).
    endpoint: Option<String>,
    region: Option<String>,
    /// With IAM enforced on the server: its principals.
    iam: Option<Arc<Principals>>,
}

/// One registered instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registered {
    pub instance_id: String,
    pub container_instance_arn: String,
}

/// Whether an EC2 instance still hosts its agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// `pending` or `running`.
    Up,
    /// `shutting-down` or `terminated`, or no longer known to EC2.
    Terminated,
    /// `stopping` or `stopped`.
    Stopped,
}

impl Agent {
    pub fn new(config: &aws_config::SdkConfig, cluster: &str, group: &str) -> Agent {
        Agent {
            ecs: Ecs::new(config),
            autoscaling: AutoScaling::new(config),
            ec2: Ec2::new(config),
            cluster: cluster.to_string(),
            group: group.to_string(),
            endpoint: config
                .endpoint_url()
                .map(|e| e.trim_end_matches('/').to_string()),
            region: config.region().map(|r| r.to_string()),
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

    /// Whether EC2 instance `instance_id` is still up, by its EC2 state.
    /// <https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/ec2-instance-lifecycle.html>
    pub async fn host(&self, instance_id: &str) -> anyhow::Result<Host> {
        let out = self
            .ec2
            .describe_instances()
            .instance_ids(instance_id)
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            Err(e)
                if e.as_service_error()
                    .and_then(|s| aws_sdk_ec2::error::ProvideErrorMetadata::code(s))
                    == Some("InvalidInstanceID.NotFound") =>
            {
                return Ok(Host::Terminated);
            }
            Err(e) => return Err(e.into()),
        };
        let state = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find(|i| i.instance_id() == Some(instance_id))
            .and_then(|i| i.state())
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_string());
        Ok(match state.as_deref() {
            Some("pending" | "running") => Host::Up,
            Some("stopping" | "stopped") => Host::Stopped,
            _ => Host::Terminated,
        })
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

    /// Tasks of the cluster in the given desired status (`RUNNING` or `STOPPED`), described
    /// with their tags.
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
            .include(aws_sdk_ecs::types::TaskField::Tags)
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

    /// What ECS does when EC2 instance `instance_id` is terminated (or stopped) while tasks
    /// run on it and its agent has not reported them: every such task goes to STOPPED with no
    /// container exit code and the stopped reason "Host EC2 (instance i-...) terminated."
    /// (or "stopped."). Returns the ARNs of the tasks it stopped; tasks already stopped keep
    /// what the agent reported. `host` picks the wording: [`Host::Stopped`] "stopped.", else
    /// "terminated.". Needs the emulator's extension (`moto_ecs_host_stop.py`).
    /// <https://docs.aws.amazon.com/AmazonECS/latest/developerguide/stopped-task-errors.html>
    pub async fn host_terminated(
        &self,
        instance_id: &str,
        host: &Host,
    ) -> anyhow::Result<Vec<String>> {
        let (Some(endpoint), Some(region)) = (&self.endpoint, &self.region) else {
            anyhow::bail!("only the emulator stops the tasks of a host on request");
        };
        let state = match host {
            Host::Stopped => "stopped",
            Host::Up | Host::Terminated => "terminated",
        };
        let resp = reqwest::Client::new()
            .post(format!("{endpoint}/moto-api/ecs-ext/host-terminated"))
            .timeout(std::time::Duration::from_secs(10))
            .json(&serde_json::json!({
                "instanceId": instance_id,
                "region": region,
                "state": state,
            }))
            .send()
            .await?;
        let status = resp.status();
        let body = resp.text().await?;
        anyhow::ensure!(status.is_success(), "host-terminated: {status}: {body}");
        let body: serde_json::Value = serde_json::from_str(&body)?;
        Ok(body["stopped"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect())
    }

    /// What ECS does on a Spot Instance interruption notice for an instance whose agent has
    /// Spot Instance draining on: its container instance goes to DRAINING (the state
    /// `UpdateContainerInstancesState` sets). Tasks keep running: ECS stops only service
    /// tasks of a draining instance. Returns the container instance's ARN.
    /// <https://docs.aws.amazon.com/AmazonECS/latest/developerguide/spot-instance-draining-linux-container.html>
    ///
    /// The operator's user data turns Spot Instance draining on
    /// (`ECS_ENABLE_SPOT_INSTANCE_DRAINING=true`). ECS places nothing new on a draining
    /// instance, and leaves standalone tasks (RunTask's) running: stopping them is up to
    /// whoever started them, here the operator's run cycle.
    /// <https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_UpdateContainerInstancesState.html>
    pub async fn spot_interruption(&self, instance_id: &str) -> anyhow::Result<String> {
        let registered = self
            .registered()
            .await?
            .into_iter()
            .find(|r| r.instance_id == instance_id)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "instance {instance_id} is not registered in {}",
                    self.cluster
                )
            })?;
        let out = self
            .ecs
            .update_container_instances_state()
            .cluster(&self.cluster)
            .container_instances(&registered.container_instance_arn)
            .status(aws_sdk_ecs::types::ContainerInstanceStatus::Draining)
            .send()
            .await?;
        anyhow::ensure!(
            out.failures().is_empty(),
            "draining {instance_id}: {:?}",
            out.failures()
        );
        Ok(registered.container_instance_arn)
    }

    /// EC2 reclaiming Spot instance `instance_id` at the end of its interruption notice: it is
    /// terminated (the group notices and, as long as its desired capacity asks for it,
    /// launches another). An instance already gone is left as it is. Returns whether this
    /// terminated it.
    /// <https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/spot-interruptions.html>
    pub async fn reclaim(&self, instance_id: &str) -> anyhow::Result<bool> {
        if self.host(instance_id).await? == Host::Terminated {
            return Ok(false);
        }
        self.ec2
            .terminate_instances()
            .instance_ids(instance_id)
            .send()
            .await?;
        Ok(true)
    }

    /// Tells the emulator that the play runs the container of task `task_arn`, so a StopTask
    /// of it only asks for the stop (`moto_ecs_agent_stop.py`). Nothing to do elsewhere.
    async fn runs_container_of(&self, task_arn: &str) -> anyhow::Result<()> {
        let (Some(endpoint), Some(region)) = (&self.endpoint, &self.region) else {
            return Ok(());
        };
        let resp = reqwest::Client::new()
            .post(format!("{endpoint}/moto-api/ecs-ext/agent-tasks"))
            .timeout(std::time::Duration::from_secs(10))
            .json(&serde_json::json!({ "taskArn": task_arn, "region": region }))
            .send()
            .await?;
        let status = resp.status();
        let body = resp.text().await?;
        anyhow::ensure!(status.is_success(), "agent-tasks: {status}: {body}");
        Ok(())
    }

    /// Delivers the stops ECS asked for to the worker processes still running, as the agent's
    /// `docker stop` does: SIGTERM once the task's `desiredStatus` is STOPPED, SIGKILL when the
    /// container's stop timeout has passed since.
    async fn deliver_stops(&self, running: &mut [Worker]) -> anyhow::Result<()> {
        let now = tokio::time::Instant::now();
        for worker in running.iter_mut() {
            if worker.exit.is_none() && worker.kill_at.is_some_and(|t| now >= t) {
                tracing::info!(task = %worker.arn, "stop timeout passed; SIGKILL");
                let _ = worker.child.start_kill();
            }
        }
        let asked: Vec<String> = running
            .iter()
            .filter(|w| w.exit.is_none() && w.kill_at.is_none())
            .map(|w| w.arn.clone())
            .collect();
        if asked.is_empty() {
            return Ok(());
        }
        let mut stopping = BTreeSet::new();
        for chunk in asked.chunks(100) {
            let out = self
                .ecs
                .describe_tasks()
                .cluster(&self.cluster)
                .set_tasks(Some(chunk.to_vec()))
                .send()
                .await?;
            stopping.extend(
                out.tasks()
                    .iter()
                    .filter(|t| t.desired_status() == Some("STOPPED"))
                    .filter_map(|t| t.task_arn().map(str::to_string)),
            );
        }
        for worker in running.iter_mut().filter(|w| stopping.contains(&w.arn)) {
            if let Some(pid) = worker.child.id() {
                tracing::info!(task = %worker.arn, pid, "task stop asked for; SIGTERM");
                // SAFETY: kill(2) on the pid of a child this play spawned and has not reaped.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            }
            worker.kill_at = Some(now + worker.stop_timeout);
        }
        Ok(())
    }

    /// Reports the exit of a worker: the exit code through the agent while its host is up,
    /// else ECS stops the task without one.
    async fn report_exit(&self, worker: &Worker, exit_code: i32) -> anyhow::Result<Ended> {
        let host = match worker.instance_id.as_deref() {
            Some(id) => self.host(id).await?,
            None => Host::Up,
        };
        match (&host, worker.instance_id.as_deref()) {
            (Host::Terminated | Host::Stopped, Some(id)) => {
                self.host_terminated(id, &host).await?;
            }
            _ => {
                self.end_task(&worker.arn, exit_code, "Essential container in task exited")
                    .await?;
            }
        }
        Ok(Ended {
            task_arn: worker.arn.clone(),
            exit_code,
            reported: host == Host::Up,
        })
    }
}

/// How [`Player`] ends the tasks it sees start.
#[derive(Clone, Debug)]
pub enum Play {
    /// Run the real worker binary as a local process with the task's environment, plus the
    /// emulator endpoint, `ECS_CONTAINER_METADATA_URI_V4` (the play's task metadata endpoint)
    /// and credentials: with IAM enforced the task role's, as ECS gives them; otherwise dummy
    /// keys. `extra_env` comes last (a test may set `WORKER_INSTANCE_ID` there, which the
    /// worker then uses instead of asking ECS). The exit is reported as described in the
    /// module documentation.
    RealWorker {
        binary: std::path::PathBuf,
        endpoint: String,
        extra_env: Vec<(String, String)>,
    },
    /// Only register/deregister instances; the test ends tasks itself.
    InstancesOnly,
}

/// A task whose worker exited, as the play reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ended {
    pub task_arn: String,
    /// The worker process's exit code (137 when a signal ended it).
    pub exit_code: i32,
    /// Whether the agent reported the exit code; `false`: the host was gone by then, so ECS
    /// stopped the task without one.
    pub reported: bool,
}

/// Plays the agent continuously in the background until dropped.
///
/// A stop ECS asks for (StopTask: the task's `desiredStatus` goes to STOPPED while it still
/// runs) reaches the worker process as `docker stop` reaches a container: SIGTERM, then SIGKILL
/// once the container's `stopTimeout` ([`DEFAULT_STOP_TIMEOUT`] unless set) has passed; the
/// exit code (128 + the signal when one ended it) is then reported and the task keeps
/// StopTask's stop code and reason. The play tells the emulator which tasks it runs a process
/// for, so StopTask only asks for their stop (moto extension `moto_ecs_agent_stop.py`).
/// <https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_StopTask.html>
pub struct Player {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
    /// Every task ended so far.
    pub ended: Arc<Mutex<Vec<Ended>>>,
}

impl Player {
    pub fn start(agent: Agent, play: Play) -> Player {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let ended = Arc::new(Mutex::new(Vec::new()));
        let ended2 = ended.clone();
        // Bound here so that a failure shows at once; served by the play's own task.
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .expect("bind a loopback port for the task metadata endpoint");
        let handle = tokio::spawn(async move {
            let metadata = match MetadataEndpoint::serve(listener) {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(error = %e, "task metadata endpoint failed to start");
                    return;
                }
            };
            let mut playing = Playing::default();
            loop {
                if let Err(e) = agent.step(&play, &metadata, &mut playing, &ended2).await {
                    tracing::debug!(error = %e, "agent step failed");
                }
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tokio::time::sleep(std::time::Duration::from_millis(250)) => {}
                }
            }
            playing.kill_all().await;
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

/// What one agent has going: the tasks it started a worker process for, and those processes
/// until their exit is reported.
#[derive(Default)]
pub struct Playing {
    started: BTreeSet<String>,
    running: Vec<Worker>,
}

impl Playing {
    /// Whether a worker process runs or its exit is not reported yet.
    pub fn has_workers(&self) -> bool {
        !self.running.is_empty()
    }

    /// Kills and reaps every worker process.
    pub async fn kill_all(&mut self) {
        for mut worker in self.running.drain(..) {
            let _ = worker.child.kill().await;
        }
    }
}

/// A worker process the play runs for a task.
struct Worker {
    arn: String,
    /// Its task's id: its path on the task metadata endpoint.
    task_id: String,
    /// The EC2 instance of its container instance, when the play knew it.
    instance_id: Option<String>,
    child: tokio::process::Child,
    /// Its exit code, once it exited and until the exit is reported.
    exit: Option<i32>,
    /// When ECS asked for its task's stop: SIGTERM was sent, SIGKILL follows at this time.
    kill_at: Option<tokio::time::Instant>,
    /// Its container's `stopTimeout`.
    stop_timeout: std::time::Duration,
}

/// The time `docker stop` gives a container between SIGTERM and SIGKILL when its definition
/// sets no `stopTimeout` (the agent's `ECS_CONTAINER_STOP_TIMEOUT` default).
/// <https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task_definition_parameters.html#container_definition_timeout>
pub const DEFAULT_STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A process's exit code as a container's: its own, or 128 + the signal that ended it.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(137)
}

impl Agent {
    /// One step of the play ([`Player`] takes one every 250 ms): report the exits of the
    /// workers that ended, deliver the stops ECS asks for, [`Agent::sync`] the instances and,
    /// with [`Play::RealWorker`], start a worker process for each task that starts.
    pub async fn step(
        &self,
        play: &Play,
        metadata: &MetadataEndpoint,
        playing: &mut Playing,
        ended: &Mutex<Vec<Ended>>,
    ) -> anyhow::Result<()> {
        let Playing { started, running } = playing;
        // Workers that exited: report their exit like the agent (or, with the host gone, ECS)
        // does. One that cannot be reported now is tried again at the next step.
        for worker in running.iter_mut().filter(|w| w.exit.is_none()) {
            if let Some(status) = worker.child.try_wait()? {
                worker.exit = Some(exit_code(status));
            }
        }
        self.deliver_stops(running).await?;
        let mut failed = None;
        let mut still = Vec::new();
        for worker in running.drain(..) {
            let Some(code) = worker.exit else {
                still.push(worker);
                continue;
            };
            match self.report_exit(&worker, code).await {
                Ok(report) => {
                    metadata.forget(&worker.task_id);
                    ended.lock().unwrap_or_else(|e| e.into_inner()).push(report);
                }
                Err(e) => {
                    failed.get_or_insert(e);
                    still.push(worker);
                }
            }
        }
        *running = still;
        if let Some(e) = failed {
            return Err(e);
        }
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
                .map(|r| r.instance_id.clone());
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
            let task_id = arn.rsplit('/').next().unwrap_or_default().to_string();
            let metadata_uri = metadata.add(
                &task_id,
                task_metadata(&self.cluster, &task, def.task_definition()),
            );
            let mut cmd = tokio::process::Command::new(binary);
            cmd.kill_on_drop(true).stdin(std::process::Stdio::null());
            for var in [
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN",
                "AWS_PROFILE",
                "WORKER_INSTANCE_ID",
                "ECS_CONTAINER_METADATA_URI_V4",
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
                .env("ECS_CONTAINER_METADATA_URI_V4", &metadata_uri);
            for (k, v) in extra_env {
                cmd.env(k, v);
            }
            // With the emulator: from now on a StopTask of this task only asks for its stop,
            // which the play delivers to the process.
            if let Err(e) = self.runs_container_of(&arn).await {
                metadata.forget(&task_id);
                started.remove(&arn);
                return Err(e);
            }
            let stop_timeout = container
                .as_ref()
                .and_then(|c| c.stop_timeout())
                .and_then(|s| u64::try_from(s).ok())
                .map_or(DEFAULT_STOP_TIMEOUT, std::time::Duration::from_secs);
            match cmd.spawn() {
                Ok(child) => running.push(Worker {
                    arn,
                    task_id,
                    instance_id,
                    child,
                    exit: None,
                    kill_at: None,
                    stop_timeout,
                }),
                Err(e) => {
                    metadata.forget(&task_id);
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }
}

/// The task metadata a container of `task` reads at `${ECS_CONTAINER_METADATA_URI_V4}/task`
/// on an EC2 container instance: the fields of the v4 response the agent knows from the task
/// and its definition (`Cluster` as the agent was configured: the cluster's name).
/// <https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task-metadata-endpoint-v4-response.html>
pub fn task_metadata(
    cluster: &str,
    task: &Task,
    def: Option<&TaskDefinition>,
) -> serde_json::Value {
    let arn = task.task_arn().unwrap_or_default();
    let task_id = arn.rsplit('/').next().unwrap_or_default();
    let family = def.and_then(|d| d.family()).unwrap_or_default();
    let revision = def.map(|d| d.revision()).unwrap_or_default().to_string();
    let containers: Vec<serde_json::Value> = def
        .map(|d| d.container_definitions())
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let name = c.name().unwrap_or_default();
            // Docker ids are 64 hex digits; this one is made from the task id.
            let docker_id = format!("{:0<62}{i:02x}", task_id.replace('-', ""));
            serde_json::json!({
                "DockerId": docker_id,
                "Name": name,
                "DockerName": format!("ecs-{family}-{revision}-{name}-{}", &docker_id[..20]),
                "Image": c.image().unwrap_or_default(),
                "Labels": {
                    "com.amazonaws.ecs.cluster": cluster,
                    "com.amazonaws.ecs.container-name": name,
                    "com.amazonaws.ecs.task-arn": arn,
                    "com.amazonaws.ecs.task-definition-family": family,
                    "com.amazonaws.ecs.task-definition-version": revision,
                },
                "DesiredStatus": "RUNNING",
                "KnownStatus": "RUNNING",
                "Type": "NORMAL",
            })
        })
        .collect();
    serde_json::json!({
        "Cluster": cluster,
        "TaskARN": arn,
        "Family": family,
        "Revision": revision,
        "DesiredStatus": "RUNNING",
        "KnownStatus": "RUNNING",
        "LaunchType": "EC2",
        "Containers": containers,
    })
}

/// Serves one task's metadata (`Cluster`, `TaskARN`, ...) at `${URI}/task` for the rest of the
/// test (the endpoint stops with the test's runtime); returns the URI to give a worker as
/// `ECS_CONTAINER_METADATA_URI_V4`. For workers run outside the play.
pub fn serve_task_metadata(metadata: serde_json::Value) -> anyhow::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let endpoint = MetadataEndpoint::serve(listener)?;
    let uri = endpoint.add("task", metadata);
    // Dropping would stop it; the test's runtime ends its task instead.
    std::mem::forget(endpoint);
    Ok(uri)
}

/// The task metadata endpoint v4 of the play's tasks, on 127.0.0.1: `GET /v4/<task id>/task`
/// answers the task's metadata, `GET /v4/<task id>` its (first) container's, anything else
/// 404. Stops serving when dropped.
/// <https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task-metadata-endpoint-v4.html>
pub struct MetadataEndpoint {
    base: String,
    tasks: Arc<Mutex<BTreeMap<String, serde_json::Value>>>,
    server: tokio::task::JoinHandle<()>,
}

impl MetadataEndpoint {
    /// Serves on a free loopback port (inside a Tokio runtime).
    pub fn start() -> anyhow::Result<MetadataEndpoint> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        MetadataEndpoint::serve(listener)
    }

    fn serve(listener: std::net::TcpListener) -> anyhow::Result<MetadataEndpoint> {
        let addr = listener.local_addr()?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let tasks: Arc<Mutex<BTreeMap<String, serde_json::Value>>> = Arc::default();
        let served = tasks.clone();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer(stream, served.clone()));
            }
        });
        Ok(MetadataEndpoint {
            base: format!("http://{addr}/v4"),
            tasks,
            server,
        })
    }

    /// Serves `metadata` for task `task_id`; returns its `ECS_CONTAINER_METADATA_URI_V4`.
    fn add(&self, task_id: &str, metadata: serde_json::Value) -> String {
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(task_id.to_string(), metadata);
        format!("{}/{task_id}", self.base)
    }

    fn forget(&self, task_id: &str) {
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(task_id);
    }
}

impl Drop for MetadataEndpoint {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Answers one request of the task metadata endpoint (small GETs without a body).
async fn answer(
    mut stream: tokio::net::TcpStream,
    tasks: Arc<Mutex<BTreeMap<String, serde_json::Value>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 16 * 1024 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&head);
    let mut line = head.lines().next().unwrap_or_default().split(' ');
    let (method, path) = (
        line.next().unwrap_or_default(),
        line.next().unwrap_or_default(),
    );
    let path = path
        .split('?')
        .next()
        .unwrap_or_default()
        .trim_end_matches('/');
    let found = {
        let tasks = tasks.lock().unwrap_or_else(|e| e.into_inner());
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (method, parts.as_slice()) {
            ("GET", ["v4", id, "task"]) => tasks.get(*id).cloned(),
            ("GET", ["v4", id]) => tasks.get(*id).map(|t| t["Containers"][0].clone()),
            _ => None,
        }
    };
    let (status, body) = match found {
        Some(body) => ("200 OK", body.to_string()),
        None => (
            "404 Not Found",
            format!("{{\"error\":\"no metadata at {path}\"}}"),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ecs::types::{ContainerDefinition, Tag};

    fn task(arn: &str) -> Task {
        Task::builder().task_arn(arn).build()
    }

    fn definition() -> TaskDefinition {
        TaskDefinition::builder()
            .family("w-ns-demo")
            .revision(3)
            .container_definitions(
                ContainerDefinition::builder()
                    .name("worker")
                    .image("example/worker:1")
                    .build(),
            )
            .build()
    }

    #[tokio::test]
    async fn the_metadata_endpoint_answers_each_task_at_its_own_path() -> anyhow::Result<()> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let endpoint = MetadataEndpoint::serve(listener)?;
        let arn = "arn:aws:ecs:us-east-1:123456789012:task/c/0123456789abcdef0123456789abcdef";
        let other = "arn:aws:ecs:us-east-1:123456789012:task/c/fedcba9876543210fedcba9876543210";
        let def = definition();
        let uri = endpoint.add(
            "0123456789abcdef0123456789abcdef",
            task_metadata("c", &task(arn), Some(&def)),
        );
        endpoint.add(
            "fedcba9876543210fedcba9876543210",
            task_metadata("c", &task(other), Some(&def)),
        );
        let http = reqwest::Client::new();
        let got: serde_json::Value = http
            .get(format!("{uri}/task"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        assert_eq!(got["Cluster"], "c");
        assert_eq!(got["TaskARN"], arn);
        assert_eq!(
            (&got["Family"], &got["Revision"]),
            (&"w-ns-demo".into(), &"3".into())
        );
        assert_eq!(got["Containers"][0]["Name"], "worker");
        assert_eq!(
            got["Containers"][0]["Labels"]["com.amazonaws.ecs.task-arn"],
            arn
        );
        let docker_id = got["Containers"][0]["DockerId"]
            .as_str()
            .unwrap_or_default();
        assert_eq!(docker_id.len(), 64, "{docker_id}");
        let container: serde_json::Value = http.get(&uri).send().await?.json().await?;
        assert_eq!(container["Name"], "worker");

        endpoint.forget("0123456789abcdef0123456789abcdef");
        let gone = http.get(format!("{uri}/task")).send().await?;
        assert_eq!(gone.status(), reqwest::StatusCode::NOT_FOUND);
        let post = http.post(format!("{uri}/task")).send().await?;
        assert_eq!(post.status(), reqwest::StatusCode::NOT_FOUND);
        Ok(())
    }

    /// A task whose EC2 instance was terminated before its agent reported it: ECS stops it
    /// without a container exit code, keeps its tags, and stops it only once.
    #[tokio::test]
    async fn a_task_whose_host_was_terminated_stops_without_an_exit_code() -> anyhow::Result<()> {
        let moto = crate::Moto::start().await?;
        let config = moto.sdk_config().await;
        let ec2 = Ec2::new(&config);
        let asg = AutoScaling::new(&config);
        let ecs = Ecs::new(&config);
        let ami = ec2
            .describe_images()
            .owners("amazon")
            .send()
            .await?
            .images()
            .iter()
            .find_map(|i| i.image_id().map(str::to_string))
            .ok_or_else(|| anyhow::anyhow!("no image"))?;
        ec2.create_launch_template()
            .launch_template_name("lt-agent")
            .launch_template_data(
                aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                    .image_id(&ami)
                    .instance_type("t3.micro".into())
                    .build(),
            )
            .send()
            .await?;
        asg.create_auto_scaling_group()
            .auto_scaling_group_name("g")
            .launch_template(
                aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                    .launch_template_name("lt-agent")
                    .version("$Latest")
                    .build(),
            )
            .min_size(0)
            .max_size(2)
            .desired_capacity(2)
            .availability_zones("us-east-1a")
            .send()
            .await?;
        ecs.create_cluster().cluster_name("c").send().await?;
        let agent = Agent::new(&config, "c", "g");
        let added = agent.sync().await?;
        assert_eq!(added.len(), 2);
        ecs.register_task_definition()
            .family("f")
            .container_definitions(
                ContainerDefinition::builder()
                    .name("worker")
                    .image("w")
                    .memory_reservation(6000)
                    .build(),
            )
            .send()
            .await?;
        // One task per instance (each takes most of an instance's memory).
        let mut tasks = Vec::new();
        for _ in 0..2 {
            let out = ecs
                .run_task()
                .cluster("c")
                .task_definition("f")
                .send()
                .await?;
            let t = out.tasks().first().cloned().expect("a task");
            tasks.push((
                t.task_arn().unwrap_or_default().to_string(),
                t.container_instance_arn().unwrap_or_default().to_string(),
            ));
        }
        let instance_of = |ci: &str| {
            added
                .iter()
                .find(|r| r.container_instance_arn == ci)
                .map(|r| r.instance_id.clone())
                .expect("placed on a registered instance")
        };
        let (gone_task, gone_instance) = (tasks[0].0.clone(), instance_of(&tasks[0].1));
        let (kept_task, kept_instance) = (tasks[1].0.clone(), instance_of(&tasks[1].1));
        assert_ne!(gone_instance, kept_instance);
        ecs.tag_resource()
            .resource_arn(&gone_task)
            .tags(
                Tag::builder()
                    .key("ecsworker.dev/outcome")
                    .value("0")
                    .build(),
            )
            .send()
            .await?;

        assert_eq!(agent.host(&gone_instance).await?, Host::Up);
        asg.terminate_instance_in_auto_scaling_group()
            .instance_id(&gone_instance)
            .should_decrement_desired_capacity(true)
            .send()
            .await?;
        assert_eq!(agent.host(&gone_instance).await?, Host::Terminated);
        assert_eq!(agent.host(&kept_instance).await?, Host::Up);
        // The agent play deregisters the instance that left (its task is orphaned) before ECS
        // stops the task: the stop must still find it.
        agent.sync().await?;
        assert_eq!(
            agent
                .host_terminated(&gone_instance, &Host::Terminated)
                .await?,
            vec![gone_task.clone()]
        );
        assert!(
            agent
                .host_terminated(&gone_instance, &Host::Terminated)
                .await?
                .is_empty(),
            "a stopped task is stopped once"
        );
        // The other task's host is up: its agent reports the exit code.
        agent
            .end_task(&kept_task, 3, "Essential container in task exited")
            .await?;

        let stopped = agent.tasks("STOPPED").await?;
        let gone = stopped
            .iter()
            .find(|t| t.task_arn() == Some(gone_task.as_str()))
            .expect("the task of the terminated host is stopped");
        assert_eq!(gone.last_status(), Some("STOPPED"));
        assert!(gone.stopped_at().is_some());
        assert_eq!(
            gone.stopped_reason(),
            Some(format!("Host EC2 (instance {gone_instance}) terminated.").as_str())
        );
        assert_eq!(
            gone.stop_code().map(|c| c.as_str()),
            Some("TerminationNotice")
        );
        let exit_codes: Vec<Option<i32>> =
            gone.containers().iter().map(|c| c.exit_code()).collect();
        assert_eq!(exit_codes, vec![None], "no exit code was reported");
        assert_eq!(
            gone.tags()
                .iter()
                .find(|t| t.key() == Some("ecsworker.dev/outcome"))
                .and_then(|t| t.value()),
            Some("0")
        );
        let kept = stopped
            .iter()
            .find(|t| t.task_arn() == Some(kept_task.as_str()))
            .expect("the reported task is stopped");
        assert_eq!(kept.containers()[0].exit_code(), Some(3));
        assert_eq!(
            kept.stop_code().map(|c| c.as_str()),
            Some("EssentialContainerExited")
        );
        let cluster = ecs.describe_clusters().clusters("c").send().await?;
        assert_eq!(
            cluster.clusters().first().map(|c| c.running_tasks_count()),
            Some(0),
            "each stopped task released its place once"
        );
        Ok(())
    }
}
