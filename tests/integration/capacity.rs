//! Capacity end to end: Spot over several instance types, a launch that cannot get capacity,
//! and Spot falling back to On-Demand. The real controller and API server, moto with IAM
//! enforced, its Auto Scaling launches playing EC2's capacity (`moto_asg_capacity.py`), and the
//! ECS agent played by the test support running the real worker binary.

use crate::common::{FAST_DRAIN, Harness, next_run, real_worker, send_messages, trigger};
use aws_sdk_autoscaling::types::AutoScalingGroup;
use ecs_worker_operator::api::RunOutcome;
use ecs_worker_operator::plan::desired::Names;
use std::time::{Duration, SystemTime};
use testbed::agent::Agent;

async fn group(h: &Harness, names: &Names) -> anyhow::Result<AutoScalingGroup> {
    let out = aws_sdk_autoscaling::Client::new(&h.sdk)
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(&names.auto_scaling_group)
        .send()
        .await?;
    out.auto_scaling_groups()
        .first()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no group {}", names.auto_scaling_group))
}

fn on_demand_percentage(g: &AutoScalingGroup) -> Option<i32> {
    g.mixed_instances_policy()?
        .instances_distribution()?
        .on_demand_percentage_above_base_capacity()
}

/// The group's activities, newest first: (status code, description, status message, start).
async fn activities(
    h: &Harness,
    names: &Names,
) -> anyhow::Result<Vec<(String, String, String, i64)>> {
    let out = aws_sdk_autoscaling::Client::new(&h.sdk)
        .describe_scaling_activities()
        .auto_scaling_group_name(&names.auto_scaling_group)
        .send()
        .await?;
    Ok(out
        .activities()
        .iter()
        .map(|a| {
            (
                a.status_code()
                    .map(|c| c.as_str().to_string())
                    .unwrap_or_default(),
                a.description().unwrap_or_default().to_string(),
                a.status_message().unwrap_or_default().to_string(),
                a.start_time().map(|t| t.secs()).unwrap_or_default(),
            )
        })
        .collect())
}

/// EC2 instance type and lifecycle (`spot`, or none for On-Demand) of the group's launches.
async fn launched(h: &Harness, names: &Names) -> anyhow::Result<Vec<(String, Option<String>)>> {
    let ids: Vec<String> = activities(h, names)
        .await?
        .into_iter()
        .filter(|(code, ..)| code == "Successful")
        .filter_map(|(_, d, ..)| {
            d.strip_prefix("Launching a new EC2 instance: ")
                .map(str::to_string)
        })
        .collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let out = aws_sdk_ec2::Client::new(&h.sdk)
        .describe_instances()
        .set_instance_ids(Some(ids))
        .send()
        .await?;
    Ok(out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .map(|i| {
            (
                i.instance_type()
                    .map(|t| t.as_str().to_string())
                    .unwrap_or_default(),
                i.instance_lifecycle().map(|l| l.as_str().to_string()),
            )
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spot_worker_over_three_instance_types_runs_a_full_cycle() -> anyhow::Result<()> {
    let mut h = Harness::strict("cap-spot").await?;
    h.start_controller(Duration::from_secs(300));
    let name = "spot3";
    let spec = format!(
        "capacity:\n  type: Spot\n  instanceTypes: [t3.medium, t3a.medium, m6i.large]\nrootVolumeGiB: 100\n{FAST_DRAIN}"
    );
    let (names, resources) = h.apply_ready(name, &spec).await?;

    // The group launches from a mixed instances policy: the three types in order, all Spot,
    // price-capacity-optimized, Capacity Rebalancing on.
    let g = group(&h, &names).await?;
    let policy = g.mixed_instances_policy().expect("mixed instances policy");
    let types: Vec<&str> = policy
        .launch_template()
        .map(|l| {
            l.overrides()
                .iter()
                .filter_map(|o| o.instance_type())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(types, ["t3.medium", "t3a.medium", "m6i.large"]);
    let dist = policy.instances_distribution().expect("distribution");
    assert_eq!(dist.on_demand_percentage_above_base_capacity(), Some(0));
    assert_eq!(dist.on_demand_base_capacity(), Some(0));
    assert_eq!(
        dist.spot_allocation_strategy(),
        Some("price-capacity-optimized")
    );
    assert_eq!(g.capacity_rebalance(), Some(true));
    assert!(g.launch_template().is_none(), "{g:?}");

    // The launch template: a 100 GiB encrypted gp3 root volume, basic monitoring.
    let versions = aws_sdk_ec2::Client::new(&h.sdk)
        .describe_launch_template_versions()
        .launch_template_id(resources.launch_template_id.clone().unwrap_or_default())
        .versions("$Latest")
        .send()
        .await?;
    let data = versions.launch_template_versions()[0]
        .launch_template_data()
        .expect("data");
    let root = &data.block_device_mappings()[0];
    assert_eq!(root.device_name(), Some("/dev/xvda"));
    let ebs = root.ebs().expect("ebs");
    assert_eq!(ebs.volume_size(), Some(100));
    assert_eq!(ebs.volume_type().map(|v| v.as_str()), Some("gp3"));
    assert_eq!(ebs.encrypted(), Some(true));
    assert_eq!(data.monitoring().and_then(|m| m.enabled()), Some(false));

    // No Spot capacity for the first type: the group takes the next.
    h.moto
        .set_unavailable(
            &names.auto_scaling_group,
            &[("t3.medium", "spot", "InsufficientInstanceCapacity")],
        )
        .await?;
    send_messages(&h, resources.queue_url.as_deref().unwrap_or_default(), 5).await?;
    let _player = real_worker(&h, &names)?;
    trigger(&h.api, name, "1").await?;
    let run = next_run(&h, name, None).await?;
    assert_eq!(run.outcome, RunOutcome::Succeeded, "{run:?}");
    assert!(!run.on_demand_fallback);
    assert_eq!(
        launched(&h, &names).await?,
        [("t3a.medium".to_string(), Some("spot".to_string()))]
    );
    let g = group(&h, &names).await?;
    assert_eq!((g.desired_capacity(), g.instances().len()), (Some(0), 0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn insufficient_capacity_surfaces_within_5_seconds_and_capacity_goes_back_to_zero()
-> anyhow::Result<()> {
    let mut h = Harness::strict("cap-ice").await?;
    h.start_controller(Duration::from_secs(300));
    let name = "ice";
    // The join timeout (300 s) is far beyond what the test waits: only the activity can end
    // the run in time.
    let (names, resources) = h.apply_ready(name, FAST_DRAIN).await?;
    let url = resources.queue_url.unwrap_or_default();
    h.moto
        .set_unavailable(
            &names.auto_scaling_group,
            &[("t3.medium", "on-demand", "InsufficientInstanceCapacity")],
        )
        .await?;
    send_messages(&h, &url, 3).await?;
    trigger(&h.api, name, "1").await?;

    let w = h
        .wait_for(
            name,
            Duration::from_secs(60),
            "Degraded InsufficientCapacity",
            |w| {
                w.condition("Degraded")
                    .is_some_and(|c| c.status == "True" && c.reason == "InsufficientCapacity")
            },
        )
        .await?;
    let seen = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)?
        .as_secs_f64();
    let failed = activities(&h, &names)
        .await?
        .into_iter()
        .find(|(code, ..)| code == "Failed")
        .expect("a failed activity");
    let after = seen - failed.3 as f64;
    eprintln!("insufficient capacity: condition seen {after:.1} s after the failed activity");
    assert!(after < 5.0, "{after} s");
    assert!(
        failed
            .2
            .contains("We currently do not have sufficient t3.medium capacity"),
        "{failed:?}"
    );
    let condition = w.condition("Degraded").expect("degraded");
    assert!(condition.message.contains(&failed.2), "{condition:?}");

    let run = next_run(&h, name, None).await?;
    assert_eq!(run.outcome, RunOutcome::LaunchFailed, "{run:?}");
    assert_eq!(run.stop_reason.as_deref(), Some(failed.2.as_str()));
    assert_eq!(run.started_at, None);
    let g = group(&h, &names).await?;
    assert_eq!((g.desired_capacity(), g.instances().len()), (Some(0), 0));
    let events = h.events(name).await?;
    assert!(
        events.iter().any(|(t, r, m)| t == "Warning"
            && r == "InsufficientCapacity"
            && m.contains("scaling back to 0")),
        "{events:?}"
    );
    // Nothing ever ran.
    let agent = Agent::new(&h.sdk, &names.cluster, &names.auto_scaling_group);
    assert!(agent.tasks("RUNNING").await?.is_empty());
    assert!(agent.tasks("STOPPED").await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn spot_with_fallback_completes_the_run_on_demand_and_the_next_run_tries_spot_again()
-> anyhow::Result<()> {
    let mut h = Harness::strict("cap-fallback").await?;
    h.start_controller(Duration::from_secs(300));
    let name = "fallback";
    let spec = format!(
        "capacity:\n  type: SpotWithFallback\n  instanceTypes: [t3.medium, t3a.medium]\n{FAST_DRAIN}"
    );
    let (names, resources) = h.apply_ready(name, &spec).await?;
    let url = resources.queue_url.unwrap_or_default();
    h.moto
        .set_unavailable(
            &names.auto_scaling_group,
            &[
                ("t3.medium", "spot", "InsufficientInstanceCapacity"),
                ("t3a.medium", "spot", "InsufficientInstanceCapacity"),
            ],
        )
        .await?;
    send_messages(&h, &url, 4).await?;
    let _player = real_worker(&h, &names)?;
    trigger(&h.api, name, "1").await?;

    let first = next_run(&h, name, None).await?;
    assert_eq!(first.outcome, RunOutcome::Succeeded, "{first:?}");
    assert!(first.on_demand_fallback, "{first:?}");
    assert_eq!(
        launched(&h, &names).await?,
        [("t3.medium".to_string(), None)]
    );
    let events = h.events(name).await?;
    assert!(
        events.iter().any(|(t, r, m)| t == "Warning"
            && r == "OnDemandFallback"
            && m.contains("There is no Spot capacity available")
            && m.contains("continuing On-Demand")),
        "{events:?}"
    );
    assert_eq!(on_demand_percentage(&group(&h, &names).await?), Some(100));

    // Spot is back: the next run launches Spot again.
    h.moto
        .set_unavailable(&names.auto_scaling_group, &[])
        .await?;
    send_messages(&h, &url, 2).await?;
    trigger(&h.api, name, "2").await?;
    let second = next_run(&h, name, Some(first.id.as_str())).await?;
    assert_eq!(second.outcome, RunOutcome::Succeeded, "{second:?}");
    assert!(!second.on_demand_fallback, "{second:?}");
    assert_eq!(on_demand_percentage(&group(&h, &names).await?), Some(0));
    let spot_launches = launched(&h, &names)
        .await?
        .into_iter()
        .filter(|(_, lifecycle)| lifecycle.as_deref() == Some("spot"))
        .count();
    assert_eq!(spot_launches, 1);
    Ok(())
}
