//! Workers provisioned and deleted while AWS is eventually consistent. The operator talks to
//! moto through the recording proxy in its eventual-consistency mode
//! ([`Faults::eventual_consistency`]): for a few seconds after each create, the new role,
//! instance profile, queue, cluster, VPC, subnet, internet gateway, route table or security
//! group is unknown to the calls that use it, and an Auto Scaling group from a launch template
//! whose instance profile is new is refused, as AWS answers them; IAM is enforced, the operator
//! signing as its own principal ([`Harness::strict`]). The worker must be Ready within seconds
//! of the last window closing, never show a condition that asks a user to act (the status is
//! watched throughout, every write of it), create nothing twice, and leave nothing once
//! deleted: once every resource is visible, or at once after Ready, while the newest ones may
//! still be propagating (AWS may then answer the delete that the resource does not exist).

use crate::common::{Harness, worker_yaml};
use aws_sdk_ec2::types::Filter;
use ecs_worker_operator::api::EcsSelfTerminatingWorker;
use ecs_worker_operator::aws::ClientFactory;
use ecs_worker_operator::controller::{self, Config, Context};
use ecs_worker_operator::plan::desired::{Names, OWNER_TAG, Owner};
use futures::StreamExt;
use kube::api::{Api, DeleteParams};
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testbed::proxy::{Fault, Faults, Proxy};

/// How long a new resource stays unknown to the calls that use it.
const WINDOW: Duration = Duration::from_secs(3);
/// How soon after the last new resource became visible the worker must be Ready.
const CONVERGED_WITHIN: Duration = Duration::from_secs(5);

/// The in-process controller, sending its AWS calls to `endpoint` as the operator's principal
/// (IAM is enforced: its only policy is the operator policy); stopped on drop.
struct Operator {
    stop: Option<tokio_util::sync::CancellationToken>,
    task: tokio::task::JoinHandle<()>,
}

impl Operator {
    fn start(h: &Harness, endpoint: &str) -> Operator {
        let credentials = match &h.iam {
            Some(iam) => iam.operator.provider(),
            None => ClientFactory::emulator_credentials(),
        };
        let factory = ClientFactory::new(
            Some(endpoint.to_string()),
            Some(credentials),
            h.metrics.clone(),
        );
        let config = Config {
            namespace: Some(h.ns.clone()),
            label_selector: None,
            drift_interval: Duration::ZERO,
            instance: Some("test".into()),
            ..Config::default()
        };
        let ctx = Arc::new(Context::new(
            h.client.clone(),
            factory,
            h.metrics.clone(),
            config,
        ));
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(controller::run(ctx, stop.clone()));
        Operator {
            stop: Some(stop),
            task,
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.cancel();
        }
        self.task.abort();
    }
}

/// One condition as a status write showed it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    type_: String,
    status: String,
    reason: String,
    message: String,
}

/// Every distinct set of conditions the worker's status showed, with when, from a watch (so
/// no status write is missed); `ready_at` is the first time Ready was True.
#[derive(Default)]
struct History {
    states: Vec<(Instant, Vec<Seen>)>,
    ready_at: Option<Instant>,
}

/// Watches the named worker until the returned task is aborted.
fn watch(
    api: Api<EcsSelfTerminatingWorker>,
    name: &str,
) -> (Arc<Mutex<History>>, tokio::task::JoinHandle<()>) {
    let history = Arc::new(Mutex::new(History::default()));
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let into = history.clone();
    let task = tokio::spawn(async move {
        let mut objects = watcher(api, config)
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(next) = objects.next().await {
            let Ok(w) = next else { continue };
            let seen: Vec<Seen> = w
                .status
                .iter()
                .flat_map(|s| s.conditions.iter())
                .map(|c| Seen {
                    type_: c.type_.clone(),
                    status: c.status.clone(),
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                })
                .collect();
            let now = Instant::now();
            let mut h = into.lock().unwrap_or_else(|e| e.into_inner());
            if h.ready_at.is_none()
                && seen
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            {
                h.ready_at = Some(now);
            }
            if h.states.last().map(|(_, s)| s) != Some(&seen) {
                h.states.push((now, seen));
            }
        }
    });
    (history, task)
}

/// Conditions that ask a user to act, or that say a value is wrong, anywhere in the history:
/// `Degraded=True` for any reason (a resource still propagating needs nobody's attention),
/// and messages that point at the spec (a field of it, or "check the spec") or at permissions.
fn asks_to_act(history: &History) -> Vec<String> {
    let mut found = Vec::new();
    for (_, state) in &history.states {
        for c in state {
            let m = c.message.to_ascii_lowercase();
            let misleading =
                m.contains("check the spec") || m.contains("spec.") || m.contains("grant ");
            if (c.type_ == "Degraded" && c.status == "True") || misleading {
                let line = format!("{}={} {}: {}", c.type_, c.status, c.reason, c.message);
                if !found.contains(&line) {
                    found.push(line);
                }
            }
        }
    }
    found
}

/// What the worker owns in moto, counted by its owner tag and by its names (queried directly,
/// not through the proxy).
async fn census(h: &Harness, name: &str) -> anyhow::Result<BTreeMap<&'static str, usize>> {
    let names = Names::new(&h.ns, name);
    let owner = Owner {
        cluster: Config::default().cluster_id,
        namespace: h.ns.clone(),
        name: name.to_string(),
    }
    .value();
    let owned = || {
        Filter::builder()
            .name(format!("tag:{OWNER_TAG}"))
            .values(&owner)
            .build()
    };
    let mut n = BTreeMap::new();
    let sqs = aws_sdk_sqs::Client::new(&h.sdk);
    let queues = sqs
        .list_queues()
        .queue_name_prefix(&names.queue)
        .send()
        .await?;
    n.insert(
        "queues",
        queues
            .queue_urls()
            .iter()
            .filter(|u| {
                let q = u.rsplit('/').next().unwrap_or_default();
                q == names.queue || q == names.dead_letter_queue
            })
            .count(),
    );
    let logs = aws_sdk_cloudwatchlogs::Client::new(&h.sdk);
    n.insert(
        "log groups",
        logs.describe_log_groups()
            .log_group_name_prefix(&names.log_group)
            .send()
            .await?
            .log_groups()
            .iter()
            .filter(|g| g.log_group_name() == Some(names.log_group.as_str()))
            .count(),
    );
    let iam = aws_sdk_iam::Client::new(&h.sdk);
    let role_names = [
        &names.instance_role,
        &names.task_role,
        &names.execution_role,
    ];
    n.insert(
        "roles",
        iam.list_roles()
            .send()
            .await?
            .roles()
            .iter()
            .filter(|r| role_names.contains(&&r.role_name().to_string()))
            .count(),
    );
    n.insert(
        "instance profiles",
        iam.list_instance_profiles()
            .send()
            .await?
            .instance_profiles()
            .iter()
            .filter(|p| p.instance_profile_name() == names.instance_profile)
            .count(),
    );
    let ec2 = aws_sdk_ec2::Client::new(&h.sdk);
    n.insert(
        "security groups",
        ec2.describe_security_groups()
            .filters(owned())
            .send()
            .await?
            .security_groups()
            .len(),
    );
    n.insert(
        "launch templates",
        ec2.describe_launch_templates()
            .filters(owned())
            .send()
            .await?
            .launch_templates()
            .len(),
    );
    n.insert(
        "vpcs",
        ec2.describe_vpcs()
            .filters(owned())
            .send()
            .await?
            .vpcs()
            .len(),
    );
    n.insert(
        "subnets",
        ec2.describe_subnets()
            .filters(owned())
            .send()
            .await?
            .subnets()
            .len(),
    );
    n.insert(
        "internet gateways",
        ec2.describe_internet_gateways()
            .filters(owned())
            .send()
            .await?
            .internet_gateways()
            .len(),
    );
    n.insert(
        "route tables",
        ec2.describe_route_tables()
            .filters(owned())
            .send()
            .await?
            .route_tables()
            .len(),
    );
    let asg = aws_sdk_autoscaling::Client::new(&h.sdk);
    n.insert(
        "auto scaling groups",
        asg.describe_auto_scaling_groups()
            .filters(
                aws_sdk_autoscaling::types::Filter::builder()
                    .name(format!("tag:{OWNER_TAG}"))
                    .values(&owner)
                    .build(),
            )
            .send()
            .await?
            .auto_scaling_groups()
            .len(),
    );
    let ecs = aws_sdk_ecs::Client::new(&h.sdk);
    n.insert(
        "clusters",
        ecs.describe_clusters()
            .clusters(&names.cluster)
            .send()
            .await?
            .clusters()
            .iter()
            .filter(|c| c.status() == Some("ACTIVE"))
            .count(),
    );
    n.insert(
        "task definitions",
        ecs.list_task_definitions()
            .family_prefix(&names.task_family)
            .status(aws_sdk_ecs::types::TaskDefinitionStatus::Active)
            .send()
            .await?
            .task_definition_arns()
            .len(),
    );
    Ok(n)
}

/// One worker's way through the eventual-consistency proxy.
struct Scenario {
    /// Namespace prefix and worker name.
    prefix: &'static str,
    name: &'static str,
    /// Spec lines beyond the example worker's.
    spec: &'static str,
    /// `spec.network.managedVpc` is set.
    managed_network: bool,
    /// Roles the operator creates (the others are given in `spec.iam`).
    roles: usize,
    /// Error codes the operator must have met: what the scenario exists to exercise.
    meets: &'static [&'static str],
    /// Deleted as soon as it is Ready, not once every resource it created is visible.
    delete_at_once: bool,
}

/// What one worker owns: everything once, the managed network's four kinds when asked for.
fn expected(s: &Scenario) -> BTreeMap<&'static str, usize> {
    let network = usize::from(s.managed_network);
    BTreeMap::from([
        ("queues", 2),
        ("log groups", 1),
        ("roles", s.roles),
        ("instance profiles", 1),
        ("security groups", 1),
        ("launch templates", 1),
        ("vpcs", network),
        ("subnets", 2 * network),
        ("internet gateways", network),
        ("route tables", network),
        ("auto scaling groups", 1),
        ("clusters", 1),
        ("task definitions", 1),
    ])
}

/// Creates that AWS does not answer idempotently, with how often each may succeed (moto
/// silently replaces an Auto Scaling group created again under its name, where AWS refuses).
fn one_of_each(s: &Scenario) -> [(&'static str, usize); 9] {
    let network = usize::from(s.managed_network);
    [
        ("CreateRole", s.roles),
        ("CreateInstanceProfile", 1),
        ("CreateSecurityGroup", 1),
        ("CreateLaunchTemplate", 1),
        ("CreateAutoScalingGroup", 1),
        ("CreateVpc", network),
        ("CreateSubnet", 2 * network),
        ("CreateInternetGateway", network),
        ("CreateRouteTable", network),
    ]
}

/// The last `n` calls through the proxy, one a line: time since the first, operation, answer.
fn calls(proxy: &Proxy, n: usize) -> String {
    let requests = proxy.requests();
    let Some(start) = requests.first().map(|r| r.at) else {
        return String::new();
    };
    requests[requests.len().saturating_sub(n)..]
        .iter()
        .map(|r| {
            format!(
                "{:7.2} s {} {} -> {:?} {}",
                (r.at - start).as_secs_f64(),
                r.service,
                r.operation,
                r.status,
                r.code.as_deref().unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Applies a worker, watches it to Ready through the eventual-consistency proxy, checks what it
/// created, deletes it and checks that nothing is left. Every problem found is reported, not
/// only the first.
async fn provision_and_delete(s: Scenario) -> anyhow::Result<()> {
    let (name, managed_network) = (s.name, s.managed_network);
    let h = Harness::strict(s.prefix).await?;
    // Roles a spec names exist before the worker (made directly, not through the proxy).
    let iam = aws_sdk_iam::Client::new(&h.sdk);
    for role in ["given-task", "given-execution"] {
        iam.create_role()
            .role_name(role)
            .assume_role_policy_document(
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ecs-tasks.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#,
            )
            .send()
            .await?;
    }
    let proxy = Proxy::start(
        h.moto.endpoint(),
        Faults::none().eventual_consistency(WINDOW),
    )?;
    let (history, watching) = watch(h.api.clone(), name);
    let operator = Operator::start(&h, proxy.endpoint());
    let applied = Instant::now();
    h.apply_yaml(&worker_yaml(name, s.spec)).await?;
    let mut problems: Vec<String> = Vec::new();

    // Ready, with every resource in the status, soon after the last window closed.
    let ready = h
        .wait_for(name, Duration::from_secs(90), "Ready=True", |w| {
            w.condition("Ready").is_some_and(|c| c.status == "True")
        })
        .await;
    let faults = proxy
        .requests()
        .into_iter()
        .filter(|r| r.fault == Some(Fault::NotYetVisible))
        .fold(BTreeMap::<String, usize>::new(), |mut by, r| {
            *by.entry(format!("{} {}", r.operation, r.code.unwrap_or_default()))
                .or_default() += 1;
            by
        });
    println!("{name}: answers of not-yet-visible resources: {faults:#?}");
    if faults.is_empty() {
        problems.push(
            "the operator met no resource that was not yet visible: the test tests nothing".into(),
        );
    }
    for code in s.meets {
        if !faults.keys().any(|k| k.ends_with(&format!(" {code}"))) {
            problems.push(format!(
                "the operator never met {code}, which this scenario exists to exercise"
            ));
        }
    }
    match ready {
        Err(e) => problems.push(format!("{e}\nlast AWS calls:\n{}", calls(&proxy, 60))),
        Ok(w) => {
            let ready_at = history
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .ready_at
                .unwrap_or_else(Instant::now);
            let visible_at = proxy
                .all_visible_at()
                .ok_or_else(|| anyhow::anyhow!("the proxy saw no create"))?;
            let after = ready_at.saturating_duration_since(visible_at).as_secs_f64()
                - visible_at.saturating_duration_since(ready_at).as_secs_f64();
            println!(
                "{name}: Ready {:.1} s after apply, {after:+.1} s after the last new resource became visible (window {} s)",
                (ready_at - applied).as_secs_f64(),
                WINDOW.as_secs(),
            );
            if ready_at > visible_at + CONVERGED_WITHIN {
                problems.push(format!(
                    "Ready {after:.1} s after the last new resource became visible (at most {} s)",
                    CONVERGED_WITHIN.as_secs()
                ));
            }
            let r = &w.status.as_ref().expect("status").resources;
            let mut missing: Vec<&str> = [
                ("queueUrl", r.queue_url.is_some()),
                ("deadLetterQueueUrl", r.dead_letter_queue_url.is_some()),
                ("instanceProfileArn", r.instance_profile_arn.is_some()),
                ("taskRoleArn", r.task_role_arn.is_some()),
                ("executionRoleArn", r.execution_role_arn.is_some()),
                ("securityGroupId", r.security_group_id.is_some()),
                ("launchTemplateId", r.launch_template_id.is_some()),
                ("autoScalingGroupName", r.auto_scaling_group_name.is_some()),
                ("clusterArn", r.cluster_arn.is_some()),
                ("taskDefinitionArn", r.task_definition_arn.is_some()),
                ("vpcId", r.vpc_id.is_some()),
                ("subnetIds", !r.subnet_ids.is_empty()),
            ]
            .into_iter()
            .filter(|(_, present)| !present)
            .map(|(field, _)| field)
            .collect();
            if managed_network {
                for (field, present) in [
                    ("internetGatewayId", r.internet_gateway_id.is_some()),
                    ("routeTableId", r.route_table_id.is_some()),
                    ("two subnetIds", r.subnet_ids.len() == 2),
                ] {
                    if !present {
                        missing.push(field);
                    }
                }
            }
            if !missing.is_empty() {
                problems.push(format!("status.resources lacks {missing:?}: {r:#?}"));
            }
        }
    }

    // Nothing created twice.
    let found = census(&h, name).await?;
    if found != expected(&s) {
        problems.push(format!(
            "owned resources {found:?}, expected {:?}",
            expected(&s)
        ));
    }
    let requests = proxy.requests();
    for (operation, want) in one_of_each(&s) {
        let succeeded = requests
            .iter()
            .filter(|r| r.operation == operation && r.status == Some(200))
            .count();
        if succeeded > want {
            problems.push(format!(
                "{operation} succeeded {succeeded} times, not {want}"
            ));
        }
    }

    // Deleted: gone from the API server, nothing left in AWS.
    if !s.delete_at_once
        && let Some(visible) = proxy.all_visible_at()
    {
        tokio::time::sleep_until(visible.into()).await;
    }
    h.api.delete(name, &DeleteParams::default()).await?;
    let deleted = proxy.request_count();
    let deadline = Instant::now() + Duration::from_secs(60);
    while h.api.get_opt(name).await?.is_some() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    if let Some(w) = h.api.get_opt(name).await? {
        problems.push(format!(
            "not finalized within 60 s: {:?}\nlast AWS calls:\n{}",
            w.status,
            calls(&proxy, 40)
        ));
    }
    let left: BTreeMap<_, _> = census(&h, name)
        .await?
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    if !left.is_empty() {
        let tail = proxy.request_count().saturating_sub(deleted) as usize;
        problems.push(format!(
            "left behind after deletion: {left:?}\nAWS calls of the deletion:\n{}",
            calls(&proxy, tail)
        ));
    }

    drop(operator);
    watching.abort();
    let acted = asks_to_act(&history.lock().unwrap_or_else(|e| e.into_inner()));
    if !acted.is_empty() {
        problems.push(format!(
            "conditions that ask a user to act while AWS propagated new resources: {acted:#?}"
        ));
    }
    let warnings: Vec<_> = h
        .events(name)
        .await?
        .into_iter()
        .filter(|(kind, reason, _)| kind == "Warning" && reason != "Propagating")
        .collect();
    if !warnings.is_empty() {
        problems.push(format!("Warning events: {warnings:#?}"));
    }
    anyhow::ensure!(
        problems.is_empty(),
        "{name}: {} problem(s):\n\n{}",
        problems.len(),
        problems.join("\n\n")
    );
    Ok(())
}

#[tokio::test]
async fn a_new_worker_is_provisioned_while_aws_propagates_its_resources_and_deleted()
-> anyhow::Result<()> {
    provision_and_delete(Scenario {
        prefix: "consistent",
        name: "fresh",
        spec: "",
        managed_network: false,
        roles: 3,
        meets: &["NoSuchEntity", "AWS.SimpleQueueService.NonExistentQueue"],
        delete_at_once: false,
    })
    .await
}

#[tokio::test]
async fn a_managed_network_is_built_while_aws_propagates_each_piece_and_deleted()
-> anyhow::Result<()> {
    provision_and_delete(Scenario {
        prefix: "consistent-net",
        name: "own-net",
        spec: "network:\n  managedVpc: {}",
        managed_network: true,
        roles: 3,
        meets: &[
            "InvalidInternetGatewayID.NotFound",
            "InvalidRouteTableID.NotFound",
        ],
        delete_at_once: false,
    })
    .await
}

/// With the task and execution roles given, the group is created moments after its instance
/// profile got its role: Auto Scaling refuses the launch template until IAM has propagated
/// the profile, as it does on AWS.
#[tokio::test]
async fn the_group_waits_for_its_new_instance_profile() -> anyhow::Result<()> {
    provision_and_delete(Scenario {
        prefix: "consistent-profile",
        name: "profile",
        spec: "iam:\n  taskRoleArn: arn:aws:iam::123456789012:role/given-task\n  executionRoleArn: arn:aws:iam::123456789012:role/given-execution",
        managed_network: false,
        roles: 1,
        meets: &["ValidationError"],
        delete_at_once: true,
    })
    .await
}

/// Deleted the moment it is Ready: the security group created last (used by nothing that EC2
/// validates) may still be unknown to `DeleteSecurityGroup`, which AWS then answers
/// `InvalidGroup.NotFound`; the worker must not be finalized while it still exists.
#[tokio::test]
async fn a_worker_deleted_the_moment_it_is_ready_leaves_nothing() -> anyhow::Result<()> {
    provision_and_delete(Scenario {
        prefix: "consistent-gone",
        name: "gone",
        spec: "network:\n  managedVpc: {}",
        managed_network: true,
        roles: 3,
        meets: &["InvalidInternetGatewayID.NotFound"],
        delete_at_once: true,
    })
    .await
}
