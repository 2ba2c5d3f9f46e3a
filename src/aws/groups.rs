//! One shared, seconds-old view of every Auto Scaling group the operator manages in one
//! account and region.
//!
//! An idle worker's tick needs two facts: the queue holds no work, and its group holds no
//! capacity. The queue has no batch read, but the groups do: one paginated
//! `DescribeAutoScalingGroups`, filtered by the operator's managed-by tag (100 groups a page),
//! answers for every worker that asks within [`MAX_AGE`]; askers that arrive while it runs wait
//! for it rather than sending their own. A fleet of idle workers thus costs about one read per
//! worker per tick, the queue depth.
//!
//! The view is only ever used to confirm that nothing is to be done
//! ([`crate::plan::cycle::idle_view_suffices`]): a group it shows with capacity, or does not
//! show at all (created after the view was taken), is read on its own before any decision.

use super::error::{AwsError, SdkResultExt};
use crate::plan::cycle::{GroupInstance, GroupState, Lifecycle};
use crate::plan::desired::{MANAGED_BY, MANAGED_BY_TAG};
use aws_sdk_autoscaling::types::{AutoScalingGroup, Filter};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How old a view may be when it answers.
pub const MAX_AGE: Duration = Duration::from_secs(5);

/// Largest page `DescribeAutoScalingGroups` returns.
const PAGE: i32 = 100;

/// The shared view of one account and region (one per [`super::AwsClients`]).
#[derive(Debug, Default)]
pub struct GroupView {
    latest: tokio::sync::Mutex<Option<Snapshot>>,
}

#[derive(Debug)]
struct Snapshot {
    taken: Instant,
    groups: Arc<HashMap<String, GroupState>>,
}

impl GroupView {
    /// The named group as seen at most [`MAX_AGE`] ago; `None` when the view does not hold it.
    pub async fn get(
        &self,
        autoscaling: &aws_sdk_autoscaling::Client,
        name: &str,
    ) -> Result<Option<GroupState>, AwsError> {
        let mut latest = self.latest.lock().await;
        let fresh = latest
            .as_ref()
            .filter(|s| s.taken.elapsed() < MAX_AGE)
            .map(|s| s.groups.clone());
        let groups = match fresh {
            Some(groups) => groups,
            None => {
                let taken = Instant::now();
                let groups = Arc::new(describe_managed(autoscaling).await?);
                *latest = Some(Snapshot {
                    taken,
                    groups: groups.clone(),
                });
                groups
            }
        };
        Ok(groups.get(name).cloned())
    }
}

/// Every group carrying the managed-by tag, by name.
async fn describe_managed(
    autoscaling: &aws_sdk_autoscaling::Client,
) -> Result<HashMap<String, GroupState>, AwsError> {
    let mut groups = HashMap::new();
    let mut pages = autoscaling
        .describe_auto_scaling_groups()
        .filters(
            Filter::builder()
                .name(format!("tag:{MANAGED_BY_TAG}"))
                .values(MANAGED_BY)
                .build(),
        )
        .max_records(PAGE)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.aws("autoscaling", "DescribeAutoScalingGroups")?;
        for g in page.auto_scaling_groups() {
            if let Some(name) = g.auto_scaling_group_name() {
                groups.insert(name.to_string(), group_state(g));
            }
        }
    }
    Ok(groups)
}

/// What the run cycle needs of a group.
pub(super) fn group_state(g: &AutoScalingGroup) -> GroupState {
    GroupState {
        desired_capacity: g.desired_capacity().unwrap_or(0),
        instances: g
            .instances()
            .iter()
            .filter_map(|i| {
                Some(GroupInstance {
                    instance_id: i.instance_id()?.to_string(),
                    lifecycle: Lifecycle::from_aws(
                        i.lifecycle_state().map(|s| s.as_str()).unwrap_or_default(),
                    ),
                })
            })
            .collect(),
        on_demand_percentage: g
            .mixed_instances_policy()
            .and_then(|p| p.instances_distribution())
            .and_then(|d| d.on_demand_percentage_above_base_capacity()),
    }
}
