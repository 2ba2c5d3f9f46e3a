//! Ensures and deletes the AWS resources one worker owns.
//!
//! Every `ensure_*` looks before it creates (by deterministic name, see
//! [`crate::plan::desired::Names`]), so a crash between "create" and "record in status" is
//! adopted on the next reconcile instead of duplicated, and a resource deleted out of band is
//! created again. What "matches the spec" means is decided in `plan::desired` (attributes,
//! fingerprints); this module only reads, compares with that, and writes.

use super::AwsClients;
use super::error::{AwsError, ErrorKind, SdkResultExt, settle, settle_if};
use crate::api::{AwsResources, DeletionPolicy, EcsSelfTerminatingWorkerSpec};
use crate::plan::desired::{
    self, CONTAINER_NAME, FINGERPRINT_TAG, Holder, Names, OWNER_TAG, Owner,
};
use std::collections::{BTreeMap, HashMap};

/// What one `ensure_all` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Resources created because they did not exist (first provisioning or repair).
    pub created: Vec<&'static str>,
    /// Resources changed to match the spec.
    pub updated: Vec<&'static str>,
}

/// Why provisioning cannot go on until something outside AWS errors changes.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error(
        "no subnets: spec.network.subnetIds is empty and region {0} has no default VPC; set spec.network.subnetIds to subnets of your VPC, or set spec.network.managedVpc: {{}} to have the operator create one"
    )]
    NoNetwork(String),
    #[error(
        "{kind} {name} already exists and belongs to someone else ({holder}); nothing was changed. Rename this object, or remove or retag that resource if it is a leftover of this worker"
    )]
    NameConflict {
        kind: &'static str,
        name: String,
        holder: String,
    },
    #[error(
        "spec.queue.existingQueueArn {arn}: the queue does not exist or the operator cannot read it ({detail}); nothing was created. Create the queue, fix the ARN, or let the operator read it (sqs:GetQueueUrl, sqs:GetQueueAttributes)"
    )]
    QueueNotFound { arn: String, detail: String },
}

/// A queue named by `spec.queue.existingQueueArn`, as read.
struct ExistingQueue {
    url: String,
    arn: String,
    dead_letter_url: Option<String>,
    dead_letter_arn: Option<String>,
}

/// Where deletion stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deletion {
    /// Everything owned is gone (or kept by `deletionPolicy: Retain`); `retained` lists the
    /// queues kept because they still hold messages.
    Done { retained: Vec<String> },
    /// Waiting for something AWS does asynchronously (instances terminating).
    Waiting(String),
}

/// The roles a worker's instances and tasks run as.
struct Roles {
    instance_profile_arn: String,
    task_role_arn: String,
    execution_role_arn: String,
}

/// Resources found under a worker's names: (kind, name, owner tag).
type Found = Vec<(&'static str, String, Option<String>)>;

/// Ensures/deletes one worker's resources.
pub struct Provisioner<'a> {
    pub aws: &'a AwsClients,
    pub names: &'a Names,
    pub spec: &'a EcsSelfTerminatingWorkerSpec,
    pub owner: &'a Owner,
    pub tags: BTreeMap<String, String>,
}

impl<'a> Provisioner<'a> {
    pub fn new(
        aws: &'a AwsClients,
        names: &'a Names,
        spec: &'a EcsSelfTerminatingWorkerSpec,
        owner: &'a Owner,
    ) -> Provisioner<'a> {
        Provisioner {
            aws,
            names,
            spec,
            owner,
            tags: owner.tags(spec),
        }
    }
}

/// The [`OWNER_TAG`] value among a resource's tags, given as (key, value) pairs.
fn owner_tag<'t>(
    tags: impl IntoIterator<Item = (Option<&'t str>, Option<&'t str>)>,
) -> Option<String> {
    tags.into_iter()
        .find(|(k, _)| *k == Some(OWNER_TAG))
        .and_then(|(_, v)| v.map(str::to_string))
}

/// The Auto Scaling process that moves capacity between zones.
const AZ_REBALANCE: &str = "AZRebalance";

fn build_err(service: &'static str, e: impl std::fmt::Display) -> AwsError {
    AwsError::unexpected(service, "Build", e.to_string())
}

impl Provisioner<'_> {
    /// Ensures every resource in dependency order and fills `res` with their ids.
    pub async fn ensure_all(&self, res: &mut AwsResources) -> Result<Report, ProvisionError> {
        let mut report = Report::default();
        // A queue the user brings is resolved before anything else: when it cannot be read,
        // nothing is written for the worker.
        let existing = match &self.spec.queue.existing_queue_arn {
            Some(arn) => Some(self.existing_queue(arn).await?),
            None => None,
        };
        // Nothing recorded yet: a resource found under one of the worker's names is adopted
        // only when it is this worker's; anything else stops provisioning before any write.
        if res.queue_url.is_none()
            && let Some((kind, name, holder)) = self.held_by_others().await?.into_iter().next()
        {
            return Err(ProvisionError::NameConflict { kind, name, holder });
        }
        // Network first: without subnets nothing else is worth creating (and when there are
        // none, nothing is written).
        let placement = self.placement(res, &mut report).await?;
        let (queue_url, queue_arn) = match existing {
            Some(q) => {
                res.dead_letter_queue_url = q.dead_letter_url;
                res.dead_letter_queue_arn = q.dead_letter_arn;
                (q.url, q.arn)
            }
            None => self.ensure_owned_queues(res, &mut report).await?,
        };
        res.queue_url = Some(queue_url.clone());
        res.queue_arn = Some(queue_arn.clone());

        self.ensure_log_group(&mut report).await?;
        res.log_group = Some(self.names.log_group.clone());

        let cluster_arn = self.ensure_cluster(&mut report).await?;
        res.cluster_arn = Some(cluster_arn.clone());

        let roles = self
            .ensure_roles(res, &queue_arn, &cluster_arn, &mut report)
            .await?;
        let security_groups = self
            .ensure_security_groups(&placement.vpc_id, res, &mut report)
            .await?;
        res.subnet_ids = placement.subnet_ids.clone();

        let image_id = self.ami().await?;
        let lt = desired::LaunchTemplateSpec {
            image_id,
            instance_type: self
                .spec
                .instance_types()
                .first()
                .copied()
                .unwrap_or_default()
                .to_string(),
            instance_profile_arn: roles.instance_profile_arn,
            security_group_ids: security_groups,
            user_data: desired::user_data(&self.names.cluster, self.spec.gpu),
            assign_public_ip: self.spec.network.as_ref().and_then(|n| {
                // The managed VPC has no NAT gateway: instances need public addresses.
                n.managed_vpc.as_ref().map(|_| true).or(n.assign_public_ip)
            }),
            root_volume_gib: self.spec.root_volume_gib,
        };
        let (lt_id, lt_version) = self.ensure_launch_template(&lt, &mut report).await?;
        res.launch_template_id = Some(lt_id.clone());
        res.launch_template_version = Some(lt_version);

        self.ensure_group(&lt_id, &placement.subnet_ids, &mut report)
            .await?;
        res.auto_scaling_group_name = Some(self.names.auto_scaling_group.clone());

        let td = desired::task_definition(
            self.spec,
            &desired::TaskInputs {
                names: self.names,
                queue_url: &queue_url,
                task_role_arn: &roles.task_role_arn,
                execution_role_arn: &roles.execution_role_arn,
            },
        );
        res.task_definition_arn = Some(self.ensure_task_definition(&td, &mut report).await?);
        Ok(report)
    }

    /// The instance profile and the task and execution roles: those the spec names, or the
    /// worker's own, created or repaired.
    async fn ensure_roles(
        &self,
        res: &mut AwsResources,
        queue_arn: &str,
        cluster_arn: &str,
        report: &mut Report,
    ) -> Result<Roles, ProvisionError> {
        let iam = self.spec.iam.clone().unwrap_or_default();
        let partition = desired::partition(&self.spec.region);
        let instance_profile_arn = match iam.instance_profile_arn {
            Some(arn) => arn,
            None => {
                let role = self
                    .ensure_role(
                        &self.names.instance_role,
                        "ec2.amazonaws.com",
                        None,
                        Some(&desired::instance_managed_policy(partition)),
                        "InstanceRole",
                        report,
                    )
                    .await?;
                res.instance_role_arn = Some(role);
                self.ensure_instance_profile(report).await?
            }
        };
        res.instance_profile_arn = Some(instance_profile_arn.clone());
        let task_role_arn = match iam.task_role_arn {
            Some(arn) => arn,
            None => {
                let policy = desired::task_policy(&desired::TaskPolicyInputs {
                    partition,
                    region: &self.spec.region,
                    queue_arn,
                    group_name: &self.names.auto_scaling_group,
                    cluster_arn,
                    cluster_name: &self.names.cluster,
                });
                self.ensure_role(
                    &self.names.task_role,
                    "ecs-tasks.amazonaws.com",
                    Some(&policy),
                    None,
                    "TaskRole",
                    report,
                )
                .await?
            }
        };
        res.task_role_arn = Some(task_role_arn.clone());
        let execution_role_arn = match iam.execution_role_arn {
            Some(arn) => arn,
            None => {
                // Read access to exactly the spec's secrets, when it has any.
                let secrets = desired::execution_policy(self.spec);
                self.ensure_role(
                    &self.names.execution_role,
                    "ecs-tasks.amazonaws.com",
                    secrets.as_deref(),
                    Some(&desired::execution_managed_policy(partition)),
                    "ExecutionRole",
                    report,
                )
                .await?
            }
        };
        res.execution_role_arn = Some(execution_role_arn.clone());

        Ok(Roles {
            instance_profile_arn,
            task_role_arn,
            execution_role_arn,
        })
    }

    /// The security groups of the instances: the spec's, or the worker's own in `vpc_id`.
    async fn ensure_security_groups(
        &self,
        vpc_id: &str,
        res: &mut AwsResources,
        report: &mut Report,
    ) -> Result<Vec<String>, ProvisionError> {
        let groups = match self
            .spec
            .network
            .as_ref()
            .map(|n| n.security_group_ids.clone())
            .unwrap_or_default()
        {
            given if !given.is_empty() => {
                res.security_group_id = None;
                given
            }
            _ => {
                let sg = self.ensure_security_group(vpc_id, report).await?;
                res.security_group_id = Some(sg.clone());
                vec![sg]
            }
        };
        Ok(groups)
    }

    // ---- who holds the names ----------------------------------------------------------------

    /// Resources found under this worker's names that are not this worker's (another
    /// cluster's operator, another object, or no owner tag), as (kind, name, holder). Reads
    /// only: one look per resource.
    pub async fn held_by_others(&self) -> Result<Vec<(&'static str, String, String)>, AwsError> {
        let mut found = self.queue_and_log_owners().await?;
        found.extend(self.role_owners().await?);
        found.extend(self.compute_owners().await?);
        Ok(found
            .into_iter()
            .filter_map(
                |(kind, name, owner)| match self.owner.holder(owner.as_deref()) {
                    Holder::Us => None,
                    Holder::Other(holder) => Some((kind, name, holder)),
                },
            )
            .collect())
    }

    /// The owner tags of the queues and the log group under this worker's names.
    async fn queue_and_log_owners(&self) -> Result<Found, AwsError> {
        let n = self.names;
        let mut found = Found::new();
        for (kind, name) in [
            ("Queue", &n.queue),
            ("DeadLetterQueue", &n.dead_letter_queue),
        ] {
            if let Some(url) = self.queue_url(name, None).await? {
                let out = self
                    .aws
                    .sqs
                    .list_queue_tags()
                    .queue_url(&url)
                    .send()
                    .await
                    .aws("sqs", "ListQueueTags")?;
                let owner = out.tags().and_then(|t| t.get(OWNER_TAG)).cloned();
                found.push((kind, name.clone(), owner));
            }
        }
        let logs = self
            .aws
            .logs
            .describe_log_groups()
            .log_group_name_prefix(&n.log_group)
            .send()
            .await
            .aws("logs", "DescribeLogGroups")?;
        if let Some(arn) = logs
            .log_groups()
            .iter()
            .find(|g| g.log_group_name() == Some(n.log_group.as_str()))
            .and_then(|g| g.arn())
        {
            let out = self
                .aws
                .logs
                .list_tags_for_resource()
                .resource_arn(arn.trim_end_matches(":*"))
                .send()
                .await
                .aws("logs", "ListTagsForResource")?;
            let owner = out.tags().and_then(|t| t.get(OWNER_TAG)).cloned();
            found.push(("LogGroup", n.log_group.clone(), owner));
        }
        Ok(found)
    }

    /// The owner tags of the roles and instance profile under this worker's names, those the
    /// spec does not name itself.
    async fn role_owners(&self) -> Result<Found, AwsError> {
        let n = self.names;
        let mut found = Found::new();
        let given = self.spec.iam.clone().unwrap_or_default();
        for (kind, name, owned) in [
            (
                "InstanceRole",
                &n.instance_role,
                given.instance_profile_arn.is_none(),
            ),
            ("TaskRole", &n.task_role, given.task_role_arn.is_none()),
            (
                "ExecutionRole",
                &n.execution_role,
                given.execution_role_arn.is_none(),
            ),
        ] {
            if !owned {
                continue;
            }
            match self
                .aws
                .iam
                .get_role()
                .role_name(name)
                .send()
                .await
                .aws("iam", "GetRole")
            {
                Ok(out) => {
                    let tags = out.role().map(|r| r.tags()).unwrap_or_default();
                    let owner = owner_tag(tags.iter().map(|t| (Some(t.key()), Some(t.value()))));
                    found.push((kind, name.clone(), owner));
                }
                Err(e) if e.is(ErrorKind::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        if given.instance_profile_arn.is_none() {
            match self
                .aws
                .iam
                .get_instance_profile()
                .instance_profile_name(&n.instance_profile)
                .send()
                .await
                .aws("iam", "GetInstanceProfile")
            {
                Ok(out) => {
                    let tags = out.instance_profile().map(|p| p.tags()).unwrap_or_default();
                    let owner = owner_tag(tags.iter().map(|t| (Some(t.key()), Some(t.value()))));
                    found.push(("InstanceProfile", n.instance_profile.clone(), owner));
                }
                Err(e) if e.is(ErrorKind::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(found)
    }

    /// The owner tags of the launch template, group, cluster and task definition under this
    /// worker's names.
    async fn compute_owners(&self) -> Result<Found, AwsError> {
        use aws_sdk_ecs::types::{ClusterField, TaskDefinitionField};
        let n = self.names;
        let mut found = Found::new();
        let templates = self
            .aws
            .ec2
            .describe_launch_templates()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("launch-template-name")
                    .values(&n.launch_template)
                    .build(),
            )
            .send()
            .await
            .aws("ec2", "DescribeLaunchTemplates")?;
        for t in templates.launch_templates() {
            let owner = owner_tag(t.tags().iter().map(|t| (t.key(), t.value())));
            found.push(("LaunchTemplate", n.launch_template.clone(), owner));
        }
        let groups = self
            .aws
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(&n.auto_scaling_group)
            .send()
            .await
            .aws("autoscaling", "DescribeAutoScalingGroups")?;
        for g in groups.auto_scaling_groups() {
            let owner = owner_tag(g.tags().iter().map(|t| (t.key(), t.value())));
            found.push(("AutoScalingGroup", n.auto_scaling_group.clone(), owner));
        }
        let clusters = self
            .aws
            .ecs
            .describe_clusters()
            .clusters(&n.cluster)
            .include(ClusterField::Tags)
            .send()
            .await
            .aws("ecs", "DescribeClusters")?;
        for c in clusters
            .clusters()
            .iter()
            .filter(|c| c.status() == Some("ACTIVE"))
        {
            let owner = owner_tag(c.tags().iter().map(|t| (t.key(), t.value())));
            found.push(("Cluster", n.cluster.clone(), owner));
        }
        match self
            .aws
            .ecs
            .describe_task_definition()
            .task_definition(&n.task_family)
            .include(TaskDefinitionField::Tags)
            .send()
            .await
            .aws("ecs", "DescribeTaskDefinition")
        {
            Ok(out) => {
                let owner = owner_tag(out.tags().iter().map(|t| (t.key(), t.value())));
                found.push(("TaskDefinition", n.task_family.clone(), owner));
            }
            // ECS answers ClientException for a family with no revision.
            Err(e) if e.is(ErrorKind::NotFound) || e.code == "ClientException" => {}
            Err(e) => return Err(e),
        }
        Ok(found)
    }

    /// The queue and dead-letter queue the operator creates and owns.
    async fn ensure_owned_queues(
        &self,
        res: &mut AwsResources,
        report: &mut Report,
    ) -> Result<(String, String), AwsError> {
        let dlq_arn = if self.spec.queue.dead_letter.enabled {
            let (url, arn) = self
                .ensure_queue(
                    &self.names.dead_letter_queue,
                    desired::dead_letter_queue_attributes(),
                    "DeadLetterQueue",
                    report,
                )
                .await?;
            res.dead_letter_queue_url = Some(url);
            res.dead_letter_queue_arn = Some(arn.clone());
            Some(arn)
        } else {
            res.dead_letter_queue_url = None;
            res.dead_letter_queue_arn = None;
            None
        };
        let attrs = desired::queue_attributes(self.spec, dlq_arn.as_deref());
        let (queue_url, queue_arn) = self
            .ensure_queue(&self.names.queue, attrs, "Queue", report)
            .await?;
        self.ensure_queue_policy(&queue_url, &queue_arn, report)
            .await?;
        Ok((queue_url, queue_arn))
    }

    /// The queue named by `spec.queue.existingQueueArn`, read and never changed: its URL
    /// (GetQueueUrl with the owner account of the ARN) and the dead-letter queue of its
    /// redrive policy.
    async fn existing_queue(&self, arn: &str) -> Result<ExistingQueue, ProvisionError> {
        use aws_sdk_sqs::types::QueueAttributeName;
        let missing = |detail: String| ProvisionError::QueueNotFound {
            arn: arn.to_string(),
            detail,
        };
        let Some((account, name)) = desired::sqs_arn_account_and_name(arn) else {
            return Err(missing("not an SQS queue ARN".to_string()));
        };
        let url = match self.queue_url(name, Some(account)).await {
            Ok(Some(url)) => url,
            Ok(None) => return Err(missing("no such queue".to_string())),
            Err(e) if e.is(ErrorKind::AccessDenied) => return Err(missing(e.to_string())),
            Err(e) => return Err(e.into()),
        };
        let attrs = match self
            .aws
            .sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .aws("sqs", "GetQueueAttributes")
        {
            Ok(out) => out.attributes().cloned().unwrap_or_default(),
            Err(e) if e.is(ErrorKind::AccessDenied) || e.is(ErrorKind::NotFound) => {
                return Err(missing(e.to_string()));
            }
            Err(e) => return Err(e.into()),
        };
        let dead_letter_arn = attrs
            .get(&QueueAttributeName::RedrivePolicy)
            .and_then(|p| desired::redrive_target(p));
        let dead_letter_url = match dead_letter_arn
            .as_deref()
            .and_then(desired::sqs_arn_account_and_name)
        {
            // A dead-letter queue the operator may not look up is shown by its ARN only.
            Some((account, name)) => self.queue_url(name, Some(account)).await.ok().flatten(),
            None => None,
        };
        Ok(ExistingQueue {
            url,
            arn: arn.to_string(),
            dead_letter_url,
            dead_letter_arn,
        })
    }

    /// The URL of the queue `name` (in `owner`'s account when given), when it exists.
    async fn queue_url(&self, name: &str, owner: Option<&str>) -> Result<Option<String>, AwsError> {
        match self
            .aws
            .sqs
            .get_queue_url()
            .queue_name(name)
            .set_queue_owner_aws_account_id(owner.map(str::to_string))
            .send()
            .await
            .aws("sqs", "GetQueueUrl")
        {
            Ok(out) => Ok(out.queue_url().map(str::to_string)),
            Err(e) if e.is(ErrorKind::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    // ---- queues and logs ------------------------------------------------------------------

    async fn ensure_queue(
        &self,
        name: &str,
        attributes: BTreeMap<String, String>,
        what: &'static str,
        report: &mut Report,
    ) -> Result<(String, String), AwsError> {
        use aws_sdk_sqs::types::QueueAttributeName;
        let sqs = &self.aws.sqs;
        let url = self.queue_url(name, None).await?;
        let url = match url {
            Some(url) => {
                let observed = sqs
                    .get_queue_attributes()
                    .queue_url(&url)
                    .attribute_names(QueueAttributeName::All)
                    .send()
                    .await
                    .aws("sqs", "GetQueueAttributes")?;
                let observed = observed.attributes().cloned().unwrap_or_default();
                let get = |k: &str| {
                    observed
                        .get(&QueueAttributeName::from(k))
                        .map(String::as_str)
                };
                let mut changed: HashMap<QueueAttributeName, String> = HashMap::new();
                for (k, v) in &attributes {
                    let same = if k == "RedrivePolicy" {
                        desired::same_redrive(get(k), Some(v))
                    } else {
                        get(k) == Some(v.as_str())
                    };
                    if !same {
                        changed.insert(QueueAttributeName::from(k.as_str()), v.clone());
                    }
                }
                if !attributes.contains_key("RedrivePolicy")
                    && get("RedrivePolicy").is_some_and(|p| !p.is_empty())
                {
                    changed.insert(QueueAttributeName::RedrivePolicy, String::new());
                }
                if !changed.is_empty() {
                    sqs.set_queue_attributes()
                        .queue_url(&url)
                        .set_attributes(Some(changed))
                        .send()
                        .await
                        .aws("sqs", "SetQueueAttributes")?;
                    report.updated.push(what);
                }
                if let Some(arn) = get("QueueArn") {
                    return Ok((url, arn.to_string()));
                }
                url
            }
            None => {
                let attrs: HashMap<QueueAttributeName, String> = attributes
                    .into_iter()
                    .map(|(k, v)| (QueueAttributeName::from(k.as_str()), v))
                    .collect();
                // A redrive policy naming a dead-letter queue created moments ago may be
                // refused until SQS has propagated it.
                let out = settle("the new dead-letter queue", || async {
                    sqs.create_queue()
                        .queue_name(name)
                        .set_attributes(Some(attrs.clone()))
                        .set_tags(Some(self.tags.clone().into_iter().collect()))
                        .send()
                        .await
                        .aws("sqs", "CreateQueue")
                })
                .await?;
                report.created.push(what);
                out.queue_url()
                    .map(str::to_string)
                    .ok_or_else(|| AwsError::unexpected("sqs", "CreateQueue", "no queue url"))?
            }
        };
        // "After you create a queue, you must wait at least one second after the queue is
        // created to be able to use the queue."
        // <https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_CreateQueue.html>
        let out = settle("the new queue", || async {
            sqs.get_queue_attributes()
                .queue_url(&url)
                .attribute_names(QueueAttributeName::QueueArn)
                .send()
                .await
                .aws("sqs", "GetQueueAttributes")
        })
        .await?;
        let arn = out
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn))
            .cloned()
            .ok_or_else(|| AwsError::unexpected("sqs", "GetQueueAttributes", "no QueueArn"))?;
        Ok((url, arn))
    }

    /// The work queue's access policy for `spec.queue.allowSendFrom`: set when it differs
    /// from the desired one (compared as JSON), removed (set to empty, which SQS takes as no
    /// policy) when the list is empty and a policy is there.
    /// <https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SetQueueAttributes.html>
    async fn ensure_queue_policy(
        &self,
        url: &str,
        arn: &str,
        report: &mut Report,
    ) -> Result<(), AwsError> {
        use aws_sdk_sqs::types::QueueAttributeName;
        let sqs = &self.aws.sqs;
        let desired = desired::queue_policy(self.spec, arn);
        let observed = sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::Policy)
            .send()
            .await
            .aws("sqs", "GetQueueAttributes")?;
        let observed = observed
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::Policy))
            .map(String::as_str);
        if desired::same_queue_policy(observed, desired.as_deref()) {
            return Ok(());
        }
        sqs.set_queue_attributes()
            .queue_url(url)
            .attributes(QueueAttributeName::Policy, desired.unwrap_or_default())
            .send()
            .await
            .aws("sqs", "SetQueueAttributes")?;
        report.updated.push("QueuePolicy");
        Ok(())
    }

    async fn ensure_log_group(&self, report: &mut Report) -> Result<(), AwsError> {
        let logs = &self.aws.logs;
        let name = &self.names.log_group;
        let found = logs
            .describe_log_groups()
            .log_group_name_prefix(name)
            .send()
            .await
            .aws("logs", "DescribeLogGroups")?;
        let existing = found
            .log_groups()
            .iter()
            .find(|g| g.log_group_name() == Some(name.as_str()))
            .cloned();
        match existing {
            Some(g) => {
                if g.retention_in_days() != Some(self.spec.log_retention_days) {
                    logs.put_retention_policy()
                        .log_group_name(name)
                        .retention_in_days(self.spec.log_retention_days)
                        .send()
                        .await
                        .aws("logs", "PutRetentionPolicy")?;
                    report.updated.push("LogGroup");
                }
            }
            None => {
                logs.create_log_group()
                    .log_group_name(name)
                    .set_tags(Some(self.tags.clone().into_iter().collect()))
                    .send()
                    .await
                    .aws("logs", "CreateLogGroup")?;
                settle("the new log group", || async {
                    logs.put_retention_policy()
                        .log_group_name(name)
                        .retention_in_days(self.spec.log_retention_days)
                        .send()
                        .await
                        .aws("logs", "PutRetentionPolicy")
                })
                .await?;
                report.created.push("LogGroup");
            }
        }
        Ok(())
    }

    // ---- IAM ------------------------------------------------------------------------------

    fn iam_tags(&self) -> Result<Vec<aws_sdk_iam::types::Tag>, AwsError> {
        self.tags
            .iter()
            .map(|(k, v)| {
                aws_sdk_iam::types::Tag::builder()
                    .key(k)
                    .value(v)
                    .build()
                    .map_err(|e| build_err("iam", e))
            })
            .collect()
    }

    /// Ensures a role the worker owns: trust for `service`, the inline policy `worker` when
    /// given (compared decoded and rewritten when it differs; removed when not wanted), and
    /// the AWS managed policy when given.
    async fn ensure_role(
        &self,
        name: &str,
        service: &str,
        inline: Option<&str>,
        managed: Option<&str>,
        what: &'static str,
        report: &mut Report,
    ) -> Result<String, AwsError> {
        let iam = &self.aws.iam;
        let arn = match iam
            .get_role()
            .role_name(name)
            .send()
            .await
            .aws("iam", "GetRole")
        {
            Ok(out) => out.role().map(|r| r.arn().to_string()),
            Err(e) if e.is(ErrorKind::NotFound) => None,
            Err(e) => return Err(e),
        };
        let (arn, fresh) = match arn {
            Some(arn) => (arn, false),
            None => {
                let out = iam
                    .create_role()
                    .role_name(name)
                    .assume_role_policy_document(desired::trust_policy(service))
                    .description("ecs-worker-operator")
                    .set_tags(Some(self.iam_tags()?))
                    .send()
                    .await
                    .aws("iam", "CreateRole")
                    .map_err(unseen_if_exists)?;
                report.created.push(what);
                let arn = out
                    .role()
                    .map(|r| r.arn().to_string())
                    .ok_or_else(|| AwsError::unexpected("iam", "CreateRole", "no role"))?;
                (arn, true)
            }
        };
        let current = if fresh {
            None
        } else {
            match iam
                .get_role_policy()
                .role_name(name)
                .policy_name("worker")
                .send()
                .await
                .aws("iam", "GetRolePolicy")
            {
                Ok(out) => Some(out.policy_document().to_string()),
                Err(e) if e.is(ErrorKind::NotFound) => None,
                Err(e) => return Err(e),
            }
        };
        match (inline, current) {
            (Some(want), Some(have)) if desired::same_policy(&have, want) => {}
            (Some(want), have) => {
                settle("the new role", || async {
                    iam.put_role_policy()
                        .role_name(name)
                        .policy_name("worker")
                        .policy_document(want)
                        .send()
                        .await
                        .aws("iam", "PutRolePolicy")
                })
                .await?;
                if !fresh {
                    report.updated.push(what);
                    tracing::debug!(role = name, had = have.is_some(), "inline policy rewritten");
                }
            }
            (None, Some(_)) => {
                ignore_not_found(
                    iam.delete_role_policy()
                        .role_name(name)
                        .policy_name("worker")
                        .send()
                        .await
                        .aws("iam", "DeleteRolePolicy"),
                )?;
                report.updated.push(what);
            }
            (None, None) => {}
        }
        if let Some(policy) = managed {
            let attached = if fresh {
                Vec::new()
            } else {
                iam.list_attached_role_policies()
                    .role_name(name)
                    .send()
                    .await
                    .aws("iam", "ListAttachedRolePolicies")?
                    .attached_policies()
                    .iter()
                    .filter_map(|p| p.policy_arn().map(str::to_string))
                    .collect()
            };
            if !attached.iter().any(|a| a == policy) {
                settle("the new role", || async {
                    iam.attach_role_policy()
                        .role_name(name)
                        .policy_arn(policy)
                        .send()
                        .await
                        .aws("iam", "AttachRolePolicy")
                })
                .await?;
                if !fresh {
                    report.updated.push(what);
                }
            }
        }
        Ok(arn)
    }

    async fn ensure_instance_profile(&self, report: &mut Report) -> Result<String, AwsError> {
        let iam = &self.aws.iam;
        let name = &self.names.instance_profile;
        let profile = match iam
            .get_instance_profile()
            .instance_profile_name(name)
            .send()
            .await
            .aws("iam", "GetInstanceProfile")
        {
            Ok(out) => out.instance_profile().cloned(),
            Err(e) if e.is(ErrorKind::NotFound) => None,
            Err(e) => return Err(e),
        };
        let profile = match profile {
            Some(p) => p,
            None => {
                let out = iam
                    .create_instance_profile()
                    .instance_profile_name(name)
                    .set_tags(Some(self.iam_tags()?))
                    .send()
                    .await
                    .aws("iam", "CreateInstanceProfile")
                    .map_err(unseen_if_exists)?;
                report.created.push("InstanceProfile");
                out.instance_profile().cloned().ok_or_else(|| {
                    AwsError::unexpected("iam", "CreateInstanceProfile", "no profile")
                })?
            }
        };
        if !profile
            .roles()
            .iter()
            .any(|r| r.role_name() == self.names.instance_role)
        {
            settle("the new instance profile", || async {
                iam.add_role_to_instance_profile()
                    .instance_profile_name(name)
                    .role_name(&self.names.instance_role)
                    .send()
                    .await
                    .aws("iam", "AddRoleToInstanceProfile")
            })
            .await?;
        }
        Ok(profile.arn().to_string())
    }

    // ---- compute ----------------------------------------------------------------------------

    async fn ami(&self) -> Result<String, AwsError> {
        let out = self
            .aws
            .ssm
            .get_parameter()
            .name(desired::ami_parameter(self.spec))
            .send()
            .await
            .aws("ssm", "GetParameter")?;
        out.parameter()
            .and_then(|p| p.value())
            .map(str::to_string)
            .ok_or_else(|| AwsError::unexpected("ssm", "GetParameter", "no AMI id"))
    }

    async fn ensure_launch_template(
        &self,
        lt: &desired::LaunchTemplateSpec,
        report: &mut Report,
    ) -> Result<(String, i64), AwsError> {
        use aws_sdk_ec2::types::*;
        let ec2 = &self.aws.ec2;
        let fingerprint = lt.fingerprint();
        let found = ec2
            .describe_launch_templates()
            .filters(
                Filter::builder()
                    .name("launch-template-name")
                    .values(&self.names.launch_template)
                    .build(),
            )
            .send()
            .await
            .aws("ec2", "DescribeLaunchTemplates")?;
        let existing = found.launch_templates().first().cloned();
        let mut data = RequestLaunchTemplateData::builder()
            .image_id(&lt.image_id)
            .instance_type(InstanceType::from(lt.instance_type.as_str()))
            .iam_instance_profile(
                LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                    .arn(&lt.instance_profile_arn)
                    .build(),
            )
            .user_data(&lt.user_data)
            // Basic (5-minute) monitoring: detailed monitoring is billed per instance and a
            // run's instances live minutes to hours.
            // <https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/manage-detailed-monitoring.html>
            .monitoring(
                LaunchTemplatesMonitoringRequest::builder()
                    .enabled(false)
                    .build(),
            )
            // IMDSv2 with a hop limit of 1: the ECS agent on the host reaches the instance
            // metadata, containers in bridge mode (one hop further) do not, so handler code
            // cannot read the instance role's credentials. The worker needs no IMDS (its
            // instance comes from its ECS task).
            // <https://docs.aws.amazon.com/AmazonECS/latest/developerguide/security-iam-roles.html>
            .metadata_options(
                LaunchTemplateInstanceMetadataOptionsRequest::builder()
                    .http_tokens(LaunchTemplateHttpTokensState::Required)
                    .http_put_response_hop_limit(1)
                    .build(),
            )
            .tag_specifications(
                LaunchTemplateTagSpecificationRequest::builder()
                    .resource_type(ResourceType::Instance)
                    .set_tags(Some(
                        self.tags
                            .iter()
                            .map(|(k, v)| Tag::builder().key(k).value(v).build())
                            .collect(),
                    ))
                    .build(),
            );
        if let Some(gib) = lt.root_volume_gib {
            data = data.block_device_mappings(
                LaunchTemplateBlockDeviceMappingRequest::builder()
                    .device_name(desired::ROOT_DEVICE)
                    .ebs(
                        LaunchTemplateEbsBlockDeviceRequest::builder()
                            .volume_size(gib)
                            .volume_type(VolumeType::Gp3)
                            .encrypted(true)
                            .delete_on_termination(true)
                            .build(),
                    )
                    .build(),
            );
        }
        data = match lt.assign_public_ip {
            Some(public) => data.network_interfaces(
                LaunchTemplateInstanceNetworkInterfaceSpecificationRequest::builder()
                    .device_index(0)
                    .associate_public_ip_address(public)
                    .set_groups(Some(lt.security_group_ids.clone()))
                    .build(),
            ),
            None => data.set_security_group_ids(Some(lt.security_group_ids.clone())),
        };
        let data = data.build();
        match existing {
            Some(t) => {
                let id = t.launch_template_id().unwrap_or_default().to_string();
                let latest = t.latest_version_number().unwrap_or(1);
                let versions = ec2
                    .describe_launch_template_versions()
                    .launch_template_id(&id)
                    .versions(latest.to_string())
                    .send()
                    .await
                    .aws("ec2", "DescribeLaunchTemplateVersions")?;
                let current = versions
                    .launch_template_versions()
                    .first()
                    .and_then(|v| v.version_description());
                if current == Some(fingerprint.as_str()) {
                    return Ok((id, latest));
                }
                // New instances start from the new version; running ones are left alone.
                let out = ec2
                    .create_launch_template_version()
                    .launch_template_id(&id)
                    .version_description(&fingerprint)
                    .launch_template_data(data)
                    .send()
                    .await
                    .aws("ec2", "CreateLaunchTemplateVersion")?;
                report.updated.push("LaunchTemplate");
                Ok((
                    id,
                    out.launch_template_version()
                        .and_then(|v| v.version_number())
                        .unwrap_or(latest + 1),
                ))
            }
            None => {
                let out = settle("the new security group", || async {
                    ec2.create_launch_template()
                        .launch_template_name(&self.names.launch_template)
                        .version_description(&fingerprint)
                        .launch_template_data(data.clone())
                        .tag_specifications(self.ec2_tags(ResourceType::LaunchTemplate, None))
                        .send()
                        .await
                        .aws("ec2", "CreateLaunchTemplate")
                })
                .await?;
                report.created.push("LaunchTemplate");
                let t = out.launch_template().ok_or_else(|| {
                    AwsError::unexpected("ec2", "CreateLaunchTemplate", "no template")
                })?;
                Ok((
                    t.launch_template_id().unwrap_or_default().to_string(),
                    t.latest_version_number().unwrap_or(1),
                ))
            }
        }
    }

    async fn ensure_group(
        &self,
        launch_template_id: &str,
        subnets: &[String],
        report: &mut Report,
    ) -> Result<(), AwsError> {
        use aws_sdk_autoscaling::types::{LaunchTemplateSpecification, Tag};
        // Only an instance profile the operator created can be still propagating.
        let profile_is_ours = self
            .spec
            .iam
            .as_ref()
            .is_none_or(|i| i.instance_profile_arn.is_none());
        let asg = &self.aws.autoscaling;
        let name = &self.names.auto_scaling_group;
        let found = asg
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .aws("autoscaling", "DescribeAutoScalingGroups")?;
        let lt = LaunchTemplateSpecification::builder()
            .launch_template_id(launch_template_id)
            .version("$Latest")
            .build();
        let mixed = desired::mixed_capacity(self.spec);
        let zones = subnets.join(",");
        let mut wanted: Vec<&str> = subnets.iter().map(String::as_str).collect();
        wanted.sort_unstable();
        match found.auto_scaling_groups().first() {
            Some(g) => {
                let mut observed_subnets: Vec<&str> = g
                    .vpc_zone_identifier()
                    .unwrap_or_default()
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .collect();
                observed_subnets.sort_unstable();
                let observed_percentage = g
                    .mixed_instances_policy()
                    .and_then(|p| p.instances_distribution())
                    .and_then(|d| d.on_demand_percentage_above_base_capacity());
                let policy = mixed
                    .as_ref()
                    .map(|m| mixed_policy(launch_template_id, m, observed_percentage));
                let lt_ok = match &policy {
                    None => {
                        g.mixed_instances_policy().is_none()
                            && g.launch_template().and_then(|l| l.launch_template_id())
                                == Some(launch_template_id)
                            && g.launch_template().and_then(|l| l.version()) == Some("$Latest")
                    }
                    Some(p) => {
                        mixed_policy_matches(g.mixed_instances_policy(), p)
                            && g.capacity_rebalance()
                                == mixed.as_ref().map(|m| m.capacity_rebalance)
                    }
                };
                if g.max_size() != Some(self.spec.max_instances)
                    || observed_subnets != wanted
                    || !lt_ok
                    || g.min_size() != Some(0)
                {
                    settle_if(
                        profile_is_ours,
                        "the launch template's instance profile",
                        || async {
                            let update = asg
                                .update_auto_scaling_group()
                                .auto_scaling_group_name(name)
                                .min_size(0)
                                .max_size(self.spec.max_instances)
                                .vpc_zone_identifier(&zones);
                            match (&policy, &mixed) {
                                (Some(p), Some(m)) => update
                                    .mixed_instances_policy(p.clone())
                                    .capacity_rebalance(m.capacity_rebalance),
                                _ => update.launch_template(lt.clone()),
                            }
                            .send()
                            .await
                            .aws("autoscaling", "UpdateAutoScalingGroup")
                        },
                    )
                    .await?;
                    report.updated.push("AutoScalingGroup");
                }
                let suspended = g
                    .suspended_processes()
                    .iter()
                    .any(|p| p.process_name() == Some(AZ_REBALANCE));
                if !suspended {
                    self.suspend_az_rebalance().await?;
                    report.updated.push("AutoScalingGroup");
                }
            }
            None => {
                let tags: Vec<Tag> = self
                    .tags
                    .iter()
                    .map(|(k, v)| {
                        Tag::builder()
                            .key(k)
                            .value(v)
                            .propagate_at_launch(true)
                            .resource_id(name)
                            .resource_type("auto-scaling-group")
                            .build()
                    })
                    .collect();
                // Auto Scaling refuses a launch template whose instance profile IAM has not
                // propagated yet ("Invalid IamInstanceProfile"): retried, not reported as a
                // value to fix.
                // <https://docs.aws.amazon.com/autoscaling/ec2/userguide/ts-as-instancelaunchfailure.html>
                settle_if(
                    profile_is_ours,
                    "the launch template's instance profile",
                    || async {
                        let create = asg
                            .create_auto_scaling_group()
                            .auto_scaling_group_name(name);
                        match &mixed {
                            Some(m) => create
                                .mixed_instances_policy(mixed_policy(launch_template_id, m, None))
                                .capacity_rebalance(m.capacity_rebalance),
                            None => create.launch_template(lt.clone()),
                        }
                        .min_size(0)
                        .max_size(self.spec.max_instances)
                        .desired_capacity(0)
                        .vpc_zone_identifier(&zones)
                        .set_tags(Some(tags.clone()))
                        .send()
                        .await
                        .aws("autoscaling", "CreateAutoScalingGroup")
                    },
                )
                .await
                .map_err(unseen_if_exists)?;
                report.created.push("AutoScalingGroup");
                self.suspend_az_rebalance().await?;
            }
        }
        Ok(())
    }

    /// Workers remove their own instances and lower the desired capacity themselves, which
    /// leaves zones unbalanced; with `AZRebalance` running, Auto Scaling would then launch in
    /// one zone and terminate in another to even them out, killing a busy worker.
    /// <https://docs.aws.amazon.com/autoscaling/ec2/userguide/as-suspend-resume-processes.html>
    async fn suspend_az_rebalance(&self) -> Result<(), AwsError> {
        settle("the new Auto Scaling group", || async {
            self.aws
                .autoscaling
                .suspend_processes()
                .auto_scaling_group_name(&self.names.auto_scaling_group)
                .scaling_processes(AZ_REBALANCE)
                .send()
                .await
                .aws("autoscaling", "SuspendProcesses")
        })
        .await
        .map(|_| ())
    }

    async fn ensure_cluster(&self, report: &mut Report) -> Result<String, AwsError> {
        let ecs = &self.aws.ecs;
        let name = &self.names.cluster;
        let found = ecs
            .describe_clusters()
            .clusters(name)
            .send()
            .await
            .aws("ecs", "DescribeClusters")?;
        if let Some(arn) = found
            .clusters()
            .iter()
            .find(|c| c.status() == Some("ACTIVE"))
            .and_then(|c| c.cluster_arn())
        {
            return Ok(arn.to_string());
        }
        let out = ecs
            .create_cluster()
            .cluster_name(name)
            .set_tags(Some(
                self.tags
                    .iter()
                    .map(|(k, v)| aws_sdk_ecs::types::Tag::builder().key(k).value(v).build())
                    .collect(),
            ))
            .send()
            .await
            .aws("ecs", "CreateCluster")?;
        report.created.push("Cluster");
        out.cluster()
            .and_then(|c| c.cluster_arn())
            .map(str::to_string)
            .ok_or_else(|| AwsError::unexpected("ecs", "CreateCluster", "no cluster"))
    }

    async fn ensure_task_definition(
        &self,
        td: &desired::TaskDefinitionSpec,
        report: &mut Report,
    ) -> Result<String, AwsError> {
        use aws_sdk_ecs::types::*;
        let ecs = &self.aws.ecs;
        let fingerprint = td.fingerprint();
        let current = match ecs
            .describe_task_definition()
            .task_definition(&td.family)
            .include(TaskDefinitionField::Tags)
            .send()
            .await
            .aws("ecs", "DescribeTaskDefinition")
        {
            Ok(out) => out.task_definition().and_then(|d| {
                let arn = d.task_definition_arn()?.to_string();
                let active = d.status() == Some(&TaskDefinitionStatus::Active);
                let fp = out
                    .tags()
                    .iter()
                    .find(|t| t.key() == Some(FINGERPRINT_TAG))
                    .and_then(|t| t.value())
                    .map(str::to_string);
                Some((arn, active, fp))
            }),
            // ECS answers ClientException for a family with no revision.
            Err(e) if e.is(ErrorKind::NotFound) || e.code == "ClientException" => None,
            Err(e) => return Err(e),
        };
        if let Some((arn, true, Some(fp))) = &current
            && *fp == fingerprint
        {
            return Ok(arn.clone());
        }
        let mut container = ContainerDefinition::builder()
            .name(CONTAINER_NAME)
            .image(&td.image)
            .essential(true)
            .memory_reservation(td.memory_reservation)
            .set_command(td.command.clone())
            .set_environment(Some(
                td.environment
                    .iter()
                    .map(|(k, v)| KeyValuePair::builder().name(k).value(v).build())
                    .collect(),
            ))
            .set_secrets(if td.secrets.is_empty() {
                None
            } else {
                Some(
                    td.secrets
                        .iter()
                        .map(|(name, from)| {
                            Secret::builder()
                                .name(name)
                                .value_from(from)
                                .build()
                                .map_err(|e| build_err("ecs", e))
                        })
                        .collect::<Result<_, _>>()?,
                )
            })
            .log_configuration(
                LogConfiguration::builder()
                    .log_driver(LogDriver::Awslogs)
                    .options("awslogs-group", &td.log_group)
                    .options("awslogs-region", &td.region)
                    .options("awslogs-stream-prefix", "worker")
                    .build()
                    .map_err(|e| build_err("ecs", e))?,
            );
        if td.gpu {
            container = container.resource_requirements(
                ResourceRequirement::builder()
                    .r#type(ResourceType::Gpu)
                    .value("1")
                    .build()
                    .map_err(|e| build_err("ecs", e))?,
            );
        }
        let mut tags: Vec<Tag> = self
            .tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        tags.push(
            Tag::builder()
                .key(FINGERPRINT_TAG)
                .value(&fingerprint)
                .build(),
        );
        let out = ecs
            .register_task_definition()
            .family(&td.family)
            .task_role_arn(&td.task_role_arn)
            .execution_role_arn(&td.execution_role_arn)
            .network_mode(NetworkMode::Bridge)
            .container_definitions(container.build())
            .set_tags(Some(tags))
            .send()
            .await
            .aws("ecs", "RegisterTaskDefinition")?;
        let arn = out
            .task_definition()
            .and_then(|d| d.task_definition_arn())
            .map(str::to_string)
            .ok_or_else(|| AwsError::unexpected("ecs", "RegisterTaskDefinition", "no arn"))?;
        match current {
            // Running tasks keep their (now inactive) revision; new runs use the new one.
            Some((old, true, _)) => {
                ecs.deregister_task_definition()
                    .task_definition(old)
                    .send()
                    .await
                    .aws("ecs", "DeregisterTaskDefinition")?;
                report.updated.push("TaskDefinition");
            }
            _ => report.created.push("TaskDefinition"),
        }
        Ok(arn)
    }

    // ---- deletion ---------------------------------------------------------------------------

    /// Deletes what the worker owns, in reverse dependency order. Idempotent: call until
    /// [`Deletion::Done`]; NotFound counts as done.
    pub async fn delete_all(&self) -> Result<Deletion, AwsError> {
        // A resource under one of the worker's names that is not this worker's stays.
        let others = self.held_by_others().await?;
        for (kind, name, holder) in &others {
            tracing::warn!(kind, name, holder, "left in place: not this worker's");
        }
        let ours = |kind: &str| !others.iter().any(|(k, _, _)| *k == kind);
        let asg = &self.aws.autoscaling;
        let group = &self.names.auto_scaling_group;
        // Capacity first, whatever the policy: nothing keeps billing after the object is gone.
        let found = asg
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(group)
            .send()
            .await
            .aws("autoscaling", "DescribeAutoScalingGroups")?;
        let group_found = found
            .auto_scaling_groups()
            .first()
            .filter(|_| ours("AutoScalingGroup"));
        if let Some(g) = group_found {
            // A group AWS is already deleting (a deletion interrupted after its call) takes
            // its instances with it; it accepts no update.
            if g.status().is_some_and(|s| s.starts_with("Delete")) {
                return Ok(Deletion::Waiting(format!(
                    "waiting for Auto Scaling group {group} to be deleted"
                )));
            }
            if g.desired_capacity() != Some(0) || g.min_size() != Some(0) {
                asg.update_auto_scaling_group()
                    .auto_scaling_group_name(group)
                    .min_size(0)
                    .desired_capacity(0)
                    .send()
                    .await
                    .aws("autoscaling", "UpdateAutoScalingGroup")?;
            }
            if !g.instances().is_empty() {
                return Ok(Deletion::Waiting(format!(
                    "waiting for {} instance(s) to terminate",
                    g.instances().len()
                )));
            }
        }
        if self.spec.deletion_policy == DeletionPolicy::Retain {
            return Ok(Deletion::Done {
                retained: Vec::new(),
            });
        }
        if group_found.is_some() {
            match asg
                .delete_auto_scaling_group()
                .auto_scaling_group_name(group)
                .force_delete(true)
                .send()
                .await
                .aws("autoscaling", "DeleteAutoScalingGroup")
            {
                Ok(_) => {}
                Err(e) if e.is(ErrorKind::NotFound) || pending_delete(&e) => {}
                Err(e) => return Err(e),
            }
        }
        if ours("Cluster") {
            self.delete_cluster_and_tasks(ours("TaskDefinition"))
                .await?;
        }
        if ours("LaunchTemplate") {
            ignore_not_found(
                self.aws
                    .ec2
                    .delete_launch_template()
                    .launch_template_name(&self.names.launch_template)
                    .send()
                    .await
                    .aws("ec2", "DeleteLaunchTemplate"),
            )?;
        }
        if let Some(reason) = self.delete_network().await? {
            return Ok(Deletion::Waiting(reason));
        }
        self.delete_iam(&ours).await?;
        if ours("LogGroup") {
            ignore_not_found(
                self.aws
                    .logs
                    .delete_log_group()
                    .log_group_name(&self.names.log_group)
                    .send()
                    .await
                    .aws("logs", "DeleteLogGroup"),
            )?;
        }
        let mut retained = Vec::new();
        for (kind, name) in [
            ("Queue", &self.names.queue),
            ("DeadLetterQueue", &self.names.dead_letter_queue),
        ] {
            // A queue the user brought (and its dead-letter queue) is never deleted.
            if self.spec.queue.existing_queue_arn.is_none()
                && ours(kind)
                && let Some(kept) = self.delete_queue(name).await?
            {
                retained.push(kept);
            }
        }
        Ok(Deletion::Done { retained })
    }

    async fn delete_cluster_and_tasks(&self, task_definitions: bool) -> Result<(), AwsError> {
        let ecs = &self.aws.ecs;
        let cluster = &self.names.cluster;
        let clusters = ecs
            .describe_clusters()
            .clusters(cluster)
            .send()
            .await
            .aws("ecs", "DescribeClusters")?;
        if clusters
            .clusters()
            .iter()
            .any(|c| c.status() == Some("ACTIVE"))
        {
            let instances = ecs
                .list_container_instances()
                .cluster(cluster)
                .send()
                .await
                .aws("ecs", "ListContainerInstances")?;
            for arn in instances.container_instance_arns() {
                ignore_not_found(
                    ecs.deregister_container_instance()
                        .cluster(cluster)
                        .container_instance(arn)
                        .force(true)
                        .send()
                        .await
                        .aws("ecs", "DeregisterContainerInstance"),
                )?;
            }
            ignore_not_found(
                ecs.delete_cluster()
                    .cluster(cluster)
                    .send()
                    .await
                    .aws("ecs", "DeleteCluster"),
            )?;
        }
        if !task_definitions {
            return Ok(());
        }
        let defs = ecs
            .list_task_definitions()
            .family_prefix(&self.names.task_family)
            .status(aws_sdk_ecs::types::TaskDefinitionStatus::Active)
            .send()
            .await
            .aws("ecs", "ListTaskDefinitions")?;
        for arn in defs.task_definition_arns() {
            // The prefix also matches longer family names; only this worker's family goes.
            if arn
                .rsplit('/')
                .next()
                .and_then(|f| f.rsplit_once(':'))
                .map(|(f, _)| f)
                == Some(self.names.task_family.as_str())
            {
                ignore_not_found(
                    ecs.deregister_task_definition()
                        .task_definition(arn)
                        .send()
                        .await
                        .aws("ecs", "DeregisterTaskDefinition"),
                )?;
            }
        }
        Ok(())
    }

    async fn delete_iam(&self, ours: &(dyn Fn(&str) -> bool + Sync)) -> Result<(), AwsError> {
        let iam = &self.aws.iam;
        let given = self.spec.iam.clone().unwrap_or_default();
        if given.instance_profile_arn.is_none() && ours("InstanceProfile") {
            ignore_not_found(
                iam.remove_role_from_instance_profile()
                    .instance_profile_name(&self.names.instance_profile)
                    .role_name(&self.names.instance_role)
                    .send()
                    .await
                    .aws("iam", "RemoveRoleFromInstanceProfile"),
            )?;
            ignore_not_found(
                iam.delete_instance_profile()
                    .instance_profile_name(&self.names.instance_profile)
                    .send()
                    .await
                    .aws("iam", "DeleteInstanceProfile"),
            )?;
        }
        let roles = [
            (
                given.instance_profile_arn.is_none(),
                "InstanceRole",
                &self.names.instance_role,
            ),
            (
                given.task_role_arn.is_none(),
                "TaskRole",
                &self.names.task_role,
            ),
            (
                given.execution_role_arn.is_none(),
                "ExecutionRole",
                &self.names.execution_role,
            ),
        ];
        for (owned, kind, role) in roles {
            if !owned || !ours(kind) {
                continue;
            }
            // IAM deletes a role only without policies: inline ones deleted, managed detached.
            // <https://docs.aws.amazon.com/IAM/latest/APIReference/API_DeleteRole.html>
            ignore_not_found(
                iam.delete_role_policy()
                    .role_name(role)
                    .policy_name("worker")
                    .send()
                    .await
                    .aws("iam", "DeleteRolePolicy"),
            )?;
            let attached = match iam
                .list_attached_role_policies()
                .role_name(role)
                .send()
                .await
                .aws("iam", "ListAttachedRolePolicies")
            {
                Ok(out) => out.attached_policies().to_vec(),
                Err(e) if e.is(ErrorKind::NotFound) => Vec::new(),
                Err(e) => return Err(e),
            };
            for policy in attached.iter().filter_map(|p| p.policy_arn()) {
                ignore_not_found(
                    iam.detach_role_policy()
                        .role_name(role)
                        .policy_arn(policy)
                        .send()
                        .await
                        .aws("iam", "DetachRolePolicy"),
                )?;
            }
            ignore_not_found(
                iam.delete_role()
                    .role_name(role)
                    .send()
                    .await
                    .aws("iam", "DeleteRole"),
            )?;
        }
        Ok(())
    }

    /// Deletes a queue unless it still holds messages and the policy protects them; returns
    /// the queue's name when it was kept.
    async fn delete_queue(&self, name: &str) -> Result<Option<String>, AwsError> {
        use aws_sdk_sqs::types::QueueAttributeName;
        let sqs = &self.aws.sqs;
        let url = self.queue_url(name, None).await?;
        let Some(url) = url else { return Ok(None) };
        if self.spec.deletion_policy != DeletionPolicy::DeleteWithMessages {
            let out = sqs
                .get_queue_attributes()
                .queue_url(&url)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
                .send()
                .await
                .aws("sqs", "GetQueueAttributes")?;
            let held: i64 = out
                .attributes()
                .map(|a| a.values().filter_map(|v| v.parse::<i64>().ok()).sum())
                .unwrap_or(0);
            if held > 0 {
                return Ok(Some(name.to_string()));
            }
        }
        ignore_not_found(
            sqs.delete_queue()
                .queue_url(url)
                .send()
                .await
                .aws("sqs", "DeleteQueue"),
        )?;
        Ok(None)
    }
}

/// Auto Scaling's answer to a deletion of a group it is already deleting.
/// <https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_DeleteAutoScalingGroup.html>
fn pending_delete(e: &AwsError) -> bool {
    e.message.to_ascii_lowercase().contains("pending delete")
}

/// A create refused because the resource exists, although a look just before did not find
/// it: AWS has not yet made the new resource visible to reads.
fn unseen_if_exists(e: AwsError) -> AwsError {
    if e.code.contains("AlreadyExists") {
        AwsError {
            kind: ErrorKind::Propagating,
            message: format!(
                "{}; AWS does not show it to reads yet (changes take a few seconds to propagate); retrying",
                e.message
            ),
            ..e
        }
    } else {
        e
    }
}

fn ignore_not_found<T>(r: Result<T, AwsError>) -> Result<(), AwsError> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.is(ErrorKind::NotFound) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The group's mixed instances policy: the launch template with one override per instance
/// type (On-Demand in that order), and the distribution. A `SpotWithFallback` group keeps the
/// percentage it has (`observed`), which the run cycle moves.
/// <https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_MixedInstancesPolicy.html>
fn mixed_policy(
    launch_template_id: &str,
    m: &desired::MixedCapacity,
    observed: Option<i32>,
) -> aws_sdk_autoscaling::types::MixedInstancesPolicy {
    use aws_sdk_autoscaling::types::{
        InstancesDistribution, LaunchTemplate, LaunchTemplateOverrides,
        LaunchTemplateSpecification, MixedInstancesPolicy,
    };
    let percentage = match observed {
        Some(p) if m.percentage_moves => p,
        _ => m.on_demand_percentage,
    };
    MixedInstancesPolicy::builder()
        .launch_template(
            LaunchTemplate::builder()
                .launch_template_specification(
                    LaunchTemplateSpecification::builder()
                        .launch_template_id(launch_template_id)
                        .version("$Latest")
                        .build(),
                )
                .set_overrides(Some(
                    m.instance_types
                        .iter()
                        .map(|t| LaunchTemplateOverrides::builder().instance_type(t).build())
                        .collect(),
                ))
                .build(),
        )
        .instances_distribution(
            InstancesDistribution::builder()
                .on_demand_allocation_strategy("prioritized")
                .on_demand_base_capacity(0)
                .on_demand_percentage_above_base_capacity(percentage)
                .spot_allocation_strategy(m.spot_allocation_strategy)
                .build(),
        )
        .build()
}

/// Whether the group's policy is the wanted one in everything the operator sets.
fn mixed_policy_matches(
    observed: Option<&aws_sdk_autoscaling::types::MixedInstancesPolicy>,
    wanted: &aws_sdk_autoscaling::types::MixedInstancesPolicy,
) -> bool {
    let Some(o) = observed else {
        return false;
    };
    let types = |p: &aws_sdk_autoscaling::types::MixedInstancesPolicy| -> Vec<Option<String>> {
        p.launch_template()
            .map(|l| {
                l.overrides()
                    .iter()
                    .map(|o| o.instance_type().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let template = |p: &aws_sdk_autoscaling::types::MixedInstancesPolicy| {
        p.launch_template()
            .and_then(|l| l.launch_template_specification())
            .map(|s| {
                (
                    s.launch_template_id().map(str::to_string),
                    s.version().map(str::to_string),
                )
            })
    };
    let distribution = |p: &aws_sdk_autoscaling::types::MixedInstancesPolicy| {
        p.instances_distribution().map(|d| {
            (
                d.on_demand_base_capacity().unwrap_or(0),
                d.on_demand_percentage_above_base_capacity(),
                d.spot_allocation_strategy().map(str::to_string),
            )
        })
    };
    types(o) == types(wanted)
        && template(o) == template(wanted)
        && distribution(o) == distribution(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(operation: &'static str, code: &str, message: &str) -> AwsError {
        AwsError {
            service: "autoscaling",
            operation,
            code: code.into(),
            message: message.into(),
            kind: super::super::error::classify(code, Some(400)),
        }
    }

    #[test]
    fn a_group_already_being_deleted_is_told_apart_from_a_refused_deletion() {
        // Auto Scaling's answer to DeleteAutoScalingGroup of a group it is deleting.
        let pending = err(
            "DeleteAutoScalingGroup",
            "ValidationError",
            "AutoScalingGroup name not found - AutoScalingGroup ecsw-a is pending delete.",
        );
        assert!(pending_delete(&pending));
        let other = err(
            "DeleteAutoScalingGroup",
            "ResourceInUse",
            "You cannot delete an AutoScalingGroup while there are instances or pending Spot instance request(s) still in the group.",
        );
        assert!(!pending_delete(&other));
    }

    #[test]
    fn a_create_refused_as_existing_after_a_look_found_nothing_is_propagation() {
        let exists = unseen_if_exists(err("CreateRole", "EntityAlreadyExists", "Role exists"));
        assert_eq!(exists.kind, ErrorKind::Propagating);
        assert!(exists.message.contains("propagate"), "{}", exists.message);
        let denied = unseen_if_exists(err("CreateRole", "AccessDenied", "no"));
        assert_eq!(denied.kind, ErrorKind::AccessDenied);
    }
}
