//! Reads the run-cycle state of one worker from AWS and executes the cycle's actions.
//!
//! Observation is cheap when idle: the queue depth, and the group from the shared view of
//! [`super::groups`] (one read per tick, the view's pages shared by all workers); the group
//! is read on its own when there is work, a run, or capacity, and the cluster's container
//! instances and tasks only while capacity is up or a run is recorded.

use super::AwsClients;
use super::error::{AwsError, ErrorKind, SdkResultExt};
use super::groups::group_state;
use crate::api::{EcsSelfTerminatingWorkerSpec, EcsSelfTerminatingWorkerStatus, QueueDepth};
use crate::plan::cycle::{
    Action, ContainerInstanceState, ContainerInstanceStatus, GroupState, LaunchFailure, Observed,
    Tail, TaskState, idle_view_suffices,
};
use crate::plan::desired::{self, Names};
use aws_sdk_autoscaling::types::ScalingActivityStatusCode;
use aws_sdk_ecs::types::{ContainerOverride, KeyValuePair, TaskOverride};
use aws_sdk_sqs::types::QueueAttributeName;

/// Observes queue, group, container instances and tasks. `scheduled`: this pass is the
/// requeue the last one asked for, on an unchanged object (the shared group view may answer).
pub async fn observe(
    aws: &AwsClients,
    names: &Names,
    spec: &EcsSelfTerminatingWorkerSpec,
    status: &EcsSelfTerminatingWorkerStatus,
    scheduled: bool,
) -> Result<Observed, AwsError> {
    let queue = read_queue(aws, status).await?;
    let cached = if scheduled && idle_view_suffices(spec, status, &queue) {
        aws.groups
            .get(&aws.autoscaling, &names.auto_scaling_group)
            .await?
            .filter(GroupState::is_empty)
    } else {
        None
    };
    let group = match cached {
        Some(group) => group,
        None => describe_group(aws, names).await?,
    };
    let mut observed = Observed {
        queue,
        group,
        container_instances: Vec::new(),
        tasks: Vec::new(),
        launch_failures: Vec::new(),
    };
    if let Some(run) = &status.current_run
        && run.tasks_started_at.is_none()
        && observed.group.instances.is_empty()
    {
        observed.launch_failures = launch_failures(aws, names, run.scale_up_at.0).await?;
    }
    if observed.group.is_empty() && status.current_run.is_none() {
        return Ok(observed);
    }
    observed.container_instances = read_container_instances(aws, names).await?;
    observed.tasks = read_tasks(aws, names, status).await?;
    Ok(observed)
}

/// The queue's depth, and the dead-letter queue's when [`dead_letter_read_due`] (else the
/// last one read).
async fn read_queue(
    aws: &AwsClients,
    status: &EcsSelfTerminatingWorkerStatus,
) -> Result<QueueDepth, AwsError> {
    let queue_url = status
        .resources
        .queue_url
        .as_deref()
        .ok_or_else(|| AwsError {
            service: "sqs",
            operation: "GetQueueAttributes",
            code: "NotProvisioned".into(),
            message: "queue not provisioned yet".into(),
            kind: ErrorKind::NotFound,
        })?;
    let visible = QueueAttributeName::ApproximateNumberOfMessages;
    let in_flight = QueueAttributeName::ApproximateNumberOfMessagesNotVisible;
    let counts = queue_counts(aws, queue_url, vec![visible.clone(), in_flight.clone()]).await?;
    let mut queue = QueueDepth {
        visible: counts(visible.clone()),
        in_flight: counts(in_flight),
        dead_letter: None,
    };
    if let Some(dlq_url) = status.resources.dead_letter_queue_url.as_deref() {
        let last = status.queue.as_ref().and_then(|q| q.dead_letter);
        queue.dead_letter = if dead_letter_read_due(last, &queue, status) {
            let counts = queue_counts(aws, dlq_url, vec![visible.clone()]).await?;
            Some(counts(visible))
        } else {
            last
        };
    }
    Ok(queue)
}

/// GetQueueAttributes of `names`: each count by name (0 when absent).
async fn queue_counts(
    aws: &AwsClients,
    url: &str,
    names: Vec<QueueAttributeName>,
) -> Result<impl Fn(QueueAttributeName) -> i64 + use<>, AwsError> {
    let out = aws
        .sqs
        .get_queue_attributes()
        .queue_url(url)
        .set_attribute_names(Some(names))
        .send()
        .await
        .aws("sqs", "GetQueueAttributes")?;
    Ok(move |name: QueueAttributeName| {
        out.attributes()
            .and_then(|a| a.get(&name))
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0)
    })
}

/// The cluster's container instances.
async fn read_container_instances(
    aws: &AwsClients,
    names: &Names,
) -> Result<Vec<ContainerInstanceState>, AwsError> {
    let (ecs, cluster) = (&aws.ecs, &names.cluster);
    let arns = ecs
        .list_container_instances()
        .cluster(cluster)
        .send()
        .await
        .aws("ecs", "ListContainerInstances")?
        .container_instance_arns()
        .to_vec();
    if arns.is_empty() {
        return Ok(Vec::new());
    }
    let out = ecs
        .describe_container_instances()
        .cluster(cluster)
        .set_container_instances(Some(arns))
        .send()
        .await
        .aws("ecs", "DescribeContainerInstances")?;
    let states = out.container_instances().iter().filter_map(|c| {
        Some(ContainerInstanceState {
            arn: c.container_instance_arn()?.to_string(),
            ec2_instance_id: c.ec2_instance_id().map(str::to_string),
            status: ContainerInstanceStatus::from_aws(c.status().unwrap_or_default()),
            running_tasks: c.running_tasks_count() + c.pending_tasks_count(),
        })
    });
    Ok(states.collect())
}

/// The cluster's running tasks and the current run's stopped ones, with their tags.
async fn read_tasks(
    aws: &AwsClients,
    names: &Names,
    status: &EcsSelfTerminatingWorkerStatus,
) -> Result<Vec<TaskState>, AwsError> {
    let (ecs, cluster) = (&aws.ecs, &names.cluster);
    let mut task_arns = ecs
        .list_tasks()
        .cluster(cluster)
        .desired_status(aws_sdk_ecs::types::DesiredStatus::Running)
        .send()
        .await
        .aws("ecs", "ListTasks")?
        .task_arns()
        .to_vec();
    if let Some(run) = &status.current_run {
        let stopped = ecs
            .list_tasks()
            .cluster(cluster)
            .started_by(&run.id)
            .desired_status(aws_sdk_ecs::types::DesiredStatus::Stopped)
            .send()
            .await
            .aws("ecs", "ListTasks")?;
        task_arns.extend(stopped.task_arns().iter().cloned());
    }
    task_arns.sort();
    task_arns.dedup();
    let mut tasks = Vec::new();
    for chunk in task_arns.chunks(100) {
        // With the tags: the outcome a worker recorded on its task before removing its
        // instance, for a task stopped without an exit code.
        // <https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_DescribeTasks.html>
        let out = ecs
            .describe_tasks()
            .cluster(cluster)
            .set_tasks(Some(chunk.to_vec()))
            .include(aws_sdk_ecs::types::TaskField::Tags)
            .send()
            .await
            .aws("ecs", "DescribeTasks")?;
        tasks.extend(out.tasks().iter().map(task_state));
    }
    Ok(tasks)
}

/// What the cycle needs of a described task.
fn task_state(t: &aws_sdk_ecs::types::Task) -> TaskState {
    let time = |d: &aws_smithy_types::DateTime| jiff::Timestamp::from_second(d.secs()).ok();
    TaskState {
        arn: t.task_arn().unwrap_or_default().to_string(),
        started_by: t.started_by().map(str::to_string),
        container_instance_arn: t.container_instance_arn().map(str::to_string),
        last_status: t.last_status().unwrap_or_default().to_string(),
        exit_code: t.containers().iter().find_map(|c| c.exit_code()),
        recorded_exit_code: t
            .tags()
            .iter()
            .find(|tag| tag.key() == Some(desired::OUTCOME_TAG))
            .and_then(|tag| tag.value()?.parse().ok()),
        stop_reason: t.stopped_reason().map(str::to_string),
        started_at: t.started_at().or(t.created_at()).and_then(time),
        stopped_at: t.stopped_at().and_then(time),
        stop_requested: t.desired_status() == Some("STOPPED") && t.last_status() != Some("STOPPED"),
    }
}

/// Whether this pass reads the dead-letter queue's depth. A message reaches the dead-letter
/// queue only after being received from the main queue more than `maxReceiveCount` times
/// (<https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-dead-letter-queues.html>),
/// so an idle worker whose dead-letter queue was last seen empty keeps its one read per tick;
/// one that holds messages is read every pass, so a purge or redrive is seen at the next tick.
pub fn dead_letter_read_due(
    last: Option<i64>,
    queue: &QueueDepth,
    status: &EcsSelfTerminatingWorkerStatus,
) -> bool {
    last.is_none_or(|n| n > 0)
        || queue.visible > 0
        || queue.in_flight > 0
        || status.current_run.is_some()
}

/// The group's failed launch activities since `since`, newest first. Auto Scaling reports
/// why a launch failed (no capacity, a quota, an invalid parameter) in seconds, long before a
/// join timeout would. The first page (newest 20) is enough: a run waits on the latest.
/// <https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_DescribeScalingActivities.html>
async fn launch_failures(
    aws: &AwsClients,
    names: &Names,
    since: jiff::Timestamp,
) -> Result<Vec<LaunchFailure>, AwsError> {
    let out = aws
        .autoscaling
        .describe_scaling_activities()
        .auto_scaling_group_name(&names.auto_scaling_group)
        .max_records(20)
        .send()
        .await
        .aws("autoscaling", "DescribeScalingActivities")?;
    Ok(out
        .activities()
        .iter()
        .filter(|a| a.status_code() == Some(&ScalingActivityStatusCode::Failed))
        .filter(|a| {
            a.start_time()
                .is_some_and(|t| t.secs() >= since.as_second())
        })
        .map(|a| LaunchFailure {
            message: a
                .status_message()
                .or(a.description())
                .unwrap_or("launch failed")
                .to_string(),
        })
        .collect())
}

/// The worker's own group, read now.
async fn describe_group(aws: &AwsClients, names: &Names) -> Result<GroupState, AwsError> {
    let groups = aws
        .autoscaling
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(&names.auto_scaling_group)
        .send()
        .await
        .aws("autoscaling", "DescribeAutoScalingGroups")?;
    groups
        .auto_scaling_groups()
        .first()
        .map(group_state)
        .ok_or_else(|| AwsError {
            service: "autoscaling",
            operation: "DescribeAutoScalingGroups",
            code: "NotFound".into(),
            message: format!("group {} not found", names.auto_scaling_group),
            kind: ErrorKind::NotFound,
        })
}

/// Executes the cycle's actions in order.
pub async fn execute(aws: &AwsClients, names: &Names, actions: &[Action]) -> Result<(), AwsError> {
    for action in actions {
        match action {
            // ECS sends the worker SIGTERM, then SIGKILL after the container's stop timeout.
            // <https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_StopTask.html>
            Action::StopTask { task_arn, reason } => {
                aws.ecs
                    .stop_task()
                    .cluster(&names.cluster)
                    .task(task_arn)
                    .reason(reason)
                    .send()
                    .await
                    .aws("ecs", "StopTask")?;
            }
            // Only the distribution changes: properties an update leaves out stay as they are.
            // <https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_UpdateAutoScalingGroup.html>
            Action::SetOnDemandPercentage {
                percentage,
                desired,
            } => {
                use aws_sdk_autoscaling::types::{InstancesDistribution, MixedInstancesPolicy};
                aws.autoscaling
                    .update_auto_scaling_group()
                    .auto_scaling_group_name(&names.auto_scaling_group)
                    .mixed_instances_policy(
                        MixedInstancesPolicy::builder()
                            .instances_distribution(
                                InstancesDistribution::builder()
                                    .on_demand_percentage_above_base_capacity(*percentage)
                                    .build(),
                            )
                            .build(),
                    )
                    .desired_capacity(*desired)
                    .send()
                    .await
                    .aws("autoscaling", "UpdateAutoScalingGroup")?;
            }
            Action::SetDesiredCapacity(n) => {
                aws.autoscaling
                    .set_desired_capacity()
                    .auto_scaling_group_name(&names.auto_scaling_group)
                    .desired_capacity(*n)
                    .honor_cooldown(false)
                    .send()
                    .await
                    .aws("autoscaling", "SetDesiredCapacity")?;
            }
            Action::TerminateInstance { instance_id } => {
                let r = aws
                    .autoscaling
                    .terminate_instance_in_auto_scaling_group()
                    .instance_id(instance_id)
                    .should_decrement_desired_capacity(true)
                    .send()
                    .await
                    .aws("autoscaling", "TerminateInstanceInAutoScalingGroup");
                match r {
                    Ok(_) => {}
                    // Already gone (the worker removed itself first): nothing left to do.
                    Err(e) if e.is(ErrorKind::NotFound) || e.is(ErrorKind::InvalidParameter) => {
                        tracing::debug!(instance_id, error = %e, "instance already left the group");
                    }
                    Err(e) => return Err(e),
                }
            }
            Action::RunTasks {
                run_id,
                first,
                count,
                tail,
            } => {
                let mut from = *first;
                let end = first.saturating_add(*count);
                while from < end {
                    let n = (end - from).min(RUN_TASK_MAX_COUNT);
                    run_tasks(aws, names, run_id, from, n, *tail).await?;
                    from += n;
                }
            }
        }
    }
    Ok(())
}

/// Most tasks one RunTask call starts.
/// <https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_RunTask.html#ECS-RunTask-request-count>
pub const RUN_TASK_MAX_COUNT: i32 = 10;

/// One RunTask call: the run's tasks `first` to `first + count - 1`, with the client token of
/// that slice. ECS answers a token it served before with the first result when the parameters
/// are the same (nothing new starts) and with `ConflictException` when they differ (a slice
/// started before with another count): either way that slice has started already.
/// <https://docs.aws.amazon.com/AmazonECS/latest/APIReference/ECS_Idempotency.html>
async fn run_tasks(
    aws: &AwsClients,
    names: &Names,
    run_id: &str,
    first: i32,
    count: i32,
    tail: Option<Tail>,
) -> Result<(), AwsError> {
    let out = aws
        .ecs
        .run_task()
        .set_overrides(tail.map(tail_override))
        .cluster(&names.cluster)
        .task_definition(&names.task_family)
        .count(count)
        .launch_type(aws_sdk_ecs::types::LaunchType::Ec2)
        .started_by(run_id)
        .client_token(client_token(names, run_id, first))
        .placement_constraints(
            aws_sdk_ecs::types::PlacementConstraint::builder()
                .r#type(aws_sdk_ecs::types::PlacementConstraintType::DistinctInstance)
                .build(),
        )
        .send()
        .await
        .aws("ecs", "RunTask");
    let out = match out {
        Ok(out) => out,
        Err(e) if e.code.contains("ConflictException") => {
            tracing::debug!(run_id, first, error = %e, "tasks of this slice started before");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    if out.tasks().is_empty() && !out.failures().is_empty() {
        let reasons: Vec<String> = out
            .failures()
            .iter()
            .map(|f| format!("{}: {}", f.arn().unwrap_or("-"), f.reason().unwrap_or("-")))
            .collect();
        return Err(AwsError::unexpected(
            "ecs",
            "RunTask",
            format!("no task placed: {}", reasons.join("; ")),
        ));
    }
    Ok(())
}

/// RunTask's override of the worker container's environment for a run's own tail.
fn tail_override(tail: Tail) -> TaskOverride {
    let environment = desired::tail_environment(tail)
        .into_iter()
        .map(|(name, value)| KeyValuePair::builder().name(name).value(value).build());
    TaskOverride::builder()
        .container_overrides(
            ContainerOverride::builder()
                .name(desired::CONTAINER_NAME)
                .set_environment(Some(environment.collect()))
                .build(),
        )
        .build()
}

/// RunTask idempotency token of the run's tasks from `first` on: the worker's name hash, the
/// run id and `first`; at most 64 ASCII characters (33-126), unique per worker, run and slice.
/// <https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_RunTask.html#ECS-RunTask-request-clientToken>
pub fn client_token(names: &Names, run_id: &str, first: i32) -> String {
    let hash = &names.base[names.base.len().saturating_sub(8)..];
    let mut token = format!("{hash}-{run_id}-{first}");
    token.truncate(64);
    token
}

/// Stops every task of the worker's cluster (the worker returns unfinished messages to the
/// queue on SIGTERM). A missing cluster means there is nothing to stop.
pub async fn stop_all_tasks(aws: &AwsClients, names: &Names) -> Result<(), AwsError> {
    let listed = aws
        .ecs
        .list_tasks()
        .cluster(&names.cluster)
        .desired_status(aws_sdk_ecs::types::DesiredStatus::Running)
        .send()
        .await
        .aws("ecs", "ListTasks");
    let arns = match listed {
        Ok(out) => out.task_arns().to_vec(),
        Err(e) if e.is(ErrorKind::NotFound) || e.code.contains("ClusterNotFound") => return Ok(()),
        Err(e) => return Err(e),
    };
    for arn in arns {
        aws.ecs
            .stop_task()
            .cluster(&names.cluster)
            .task(arn)
            .reason("EcsSelfTerminatingWorker deleted")
            .send()
            .await
            .aws("ecs", "StopTask")?;
    }
    Ok(())
}
