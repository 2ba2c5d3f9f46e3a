//! The network a worker runs in, against the real API server and moto: a managed VPC created
//! across two zones, used by the group's instances, repaired and removed; the terminal
//! condition (with zero AWS writes) when there is no network at all; CIDRs refused at
//! admission.

use crate::common::{self, Harness, worker_yaml};
use aws_sdk_ec2::types::Filter;
use ecs_worker_operator::api::conditions::reason;
use ecs_worker_operator::plan::desired::{Names, OWNER_TAG};
use ecs_worker_operator::plan::network::ROLE_TAG;
use kube::api::{DeleteParams, Patch, PatchParams};
use std::collections::BTreeSet;
use std::time::Duration;

fn filter(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

/// The managed network of a worker as moto has it, found by owner tag.
#[derive(Debug, Default)]
struct Network {
    vpcs: Vec<(String, String)>,
    /// (id, zone, cidr)
    subnets: Vec<(String, String, String)>,
    /// (id, attached VPCs)
    gateways: Vec<(String, Vec<String>)>,
    /// (id, default route target, associated subnets)
    route_tables: Vec<(String, Option<String>, BTreeSet<String>)>,
    security_groups: Vec<String>,
}

impl Network {
    fn is_empty(&self) -> bool {
        self.vpcs.is_empty()
            && self.subnets.is_empty()
            && self.gateways.is_empty()
            && self.route_tables.is_empty()
            && self.security_groups.is_empty()
    }

    /// One VPC, two subnets in two zones, an attached gateway, a route table sending
    /// 0.0.0.0/0 to it and associated with both subnets, one security group.
    fn complete(&self) -> Result<(), String> {
        let fail = |what: &str| Err(format!("{what}: {self:#?}"));
        let [(vpc, _)] = self.vpcs.as_slice() else {
            return fail("not exactly one VPC");
        };
        let zones: BTreeSet<&String> = self.subnets.iter().map(|(_, z, _)| z).collect();
        if self.subnets.len() != 2 || zones.len() != 2 {
            return fail("not two subnets in two zones");
        }
        let [(igw, attached)] = self.gateways.as_slice() else {
            return fail("not exactly one internet gateway");
        };
        if attached.as_slice() != std::slice::from_ref(vpc) {
            return fail("gateway not attached to the VPC");
        }
        let [(_, route, associated)] = self.route_tables.as_slice() else {
            return fail("not exactly one route table");
        };
        let subnets: BTreeSet<String> = self.subnets.iter().map(|(id, _, _)| id.clone()).collect();
        if route.as_ref() != Some(igw) || associated != &subnets {
            return fail("route table incomplete");
        }
        if self.security_groups.len() != 1 {
            return fail("not exactly one security group");
        }
        Ok(())
    }
}

async fn network(h: &Harness, name: &str) -> anyhow::Result<Network> {
    let ec2 = aws_sdk_ec2::Client::new(&h.sdk);
    let owner = || filter(&format!("tag:{OWNER_TAG}"), &common::owner(&h.ns, name));
    let vpcs = ec2.describe_vpcs().filters(owner()).send().await?;
    let subnets = ec2.describe_subnets().filters(owner()).send().await?;
    let gateways = ec2
        .describe_internet_gateways()
        .filters(owner())
        .send()
        .await?;
    let tables = ec2.describe_route_tables().filters(owner()).send().await?;
    let groups = ec2
        .describe_security_groups()
        .filters(owner())
        .send()
        .await?;
    Ok(Network {
        vpcs: vpcs
            .vpcs()
            .iter()
            .map(|v| {
                (
                    v.vpc_id().unwrap_or_default().to_string(),
                    v.cidr_block().unwrap_or_default().to_string(),
                )
            })
            .collect(),
        subnets: subnets
            .subnets()
            .iter()
            .map(|s| {
                (
                    s.subnet_id().unwrap_or_default().to_string(),
                    s.availability_zone().unwrap_or_default().to_string(),
                    s.cidr_block().unwrap_or_default().to_string(),
                )
            })
            .collect(),
        gateways: gateways
            .internet_gateways()
            .iter()
            .map(|g| {
                (
                    g.internet_gateway_id().unwrap_or_default().to_string(),
                    g.attachments()
                        .iter()
                        .filter_map(|a| a.vpc_id().map(str::to_string))
                        .collect(),
                )
            })
            .collect(),
        route_tables: tables
            .route_tables()
            .iter()
            .map(|t| {
                (
                    t.route_table_id().unwrap_or_default().to_string(),
                    t.routes()
                        .iter()
                        .find(|r| r.destination_cidr_block() == Some("0.0.0.0/0"))
                        .and_then(|r| r.gateway_id().map(str::to_string)),
                    t.associations()
                        .iter()
                        .filter_map(|a| a.subnet_id().map(str::to_string))
                        .collect(),
                )
            })
            .collect(),
        security_groups: groups
            .security_groups()
            .iter()
            .filter_map(|g| g.group_id().map(str::to_string))
            .collect(),
    })
}

async fn wait_network(
    h: &Harness,
    name: &str,
    what: &str,
    pred: impl Fn(&Network) -> bool,
) -> anyhow::Result<Network> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let n = network(h, name).await?;
        if pred(&n) {
            return Ok(n);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {n:#?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn managed_vpc_spans_two_zones_carries_the_instances_is_repaired_and_removed()
-> anyhow::Result<()> {
    let mut h = Harness::strict("net").await?;
    h.start_controller(Duration::ZERO);
    let name = "own-net";
    h.apply_yaml(&worker_yaml(
        name,
        "network:\n  managedVpc:\n    cidrBlock: 10.42.0.0/16",
    ))
    .await?;
    let w = h.wait_ready(name).await?;
    let net = network(&h, name).await?;
    net.complete().map_err(anyhow::Error::msg)?;
    assert_eq!(net.vpcs[0].1, "10.42.0.0/16");
    let cidrs: BTreeSet<&str> = net.subnets.iter().map(|(_, _, c)| c.as_str()).collect();
    assert_eq!(cidrs, BTreeSet::from(["10.42.0.0/17", "10.42.128.0/17"]));

    // Status names every piece.
    let r = &w.status.as_ref().expect("status").resources;
    assert_eq!(r.vpc_id.as_ref(), Some(&net.vpcs[0].0));
    assert_eq!(r.internet_gateway_id.as_ref(), Some(&net.gateways[0].0));
    assert_eq!(r.route_table_id.as_ref(), Some(&net.route_tables[0].0));
    assert_eq!(r.security_group_id.as_ref(), Some(&net.security_groups[0]));
    let subnet_ids: BTreeSet<String> = net.subnets.iter().map(|(id, _, _)| id.clone()).collect();
    assert_eq!(
        r.subnet_ids.iter().cloned().collect::<BTreeSet<_>>(),
        subnet_ids
    );
    assert_eq!(r.availability_zones.len(), 2);

    // Every piece says which role it plays.
    let ec2 = aws_sdk_ec2::Client::new(&h.sdk);
    let vpc = &ec2
        .describe_vpcs()
        .vpc_ids(&net.vpcs[0].0)
        .send()
        .await?
        .vpcs()[0]
        .clone();
    assert!(
        vpc.tags()
            .iter()
            .any(|t| t.key() == Some(ROLE_TAG) && t.value() == Some("vpc"))
    );

    // The security group allows no ingress.
    let sg = ec2
        .describe_security_groups()
        .group_ids(&net.security_groups[0])
        .send()
        .await?;
    let sg = &sg.security_groups()[0];
    assert_eq!(sg.vpc_id(), Some(net.vpcs[0].0.as_str()));
    assert!(sg.ip_permissions().is_empty(), "{sg:?}");

    // The group launches into those subnets, from a template asking for a public address.
    let names = Names::new(&h.ns, name);
    let asg = aws_sdk_autoscaling::Client::new(&h.sdk);
    let group = asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(&names.auto_scaling_group)
        .send()
        .await?;
    let zones: BTreeSet<String> = group.auto_scaling_groups()[0]
        .vpc_zone_identifier()
        .unwrap_or_default()
        .split(',')
        .map(str::to_string)
        .collect();
    assert_eq!(zones, subnet_ids);
    let lt = ec2
        .describe_launch_template_versions()
        .launch_template_id(r.launch_template_id.clone().unwrap_or_default())
        .versions("$Latest")
        .send()
        .await?;
    let data = lt.launch_template_versions()[0]
        .launch_template_data()
        .expect("template data");
    let nic = &data.network_interfaces()[0];
    assert_eq!(nic.associate_public_ip_address(), Some(true));
    assert_eq!(nic.groups(), [net.security_groups[0].clone()]);

    // Out-of-band damage is repaired: the default route, a subnet, the gateway's attachment.
    let (rt, igw, vpc_id) = (
        net.route_tables[0].0.clone(),
        net.gateways[0].0.clone(),
        net.vpcs[0].0.clone(),
    );
    ec2.delete_route()
        .route_table_id(&rt)
        .destination_cidr_block("0.0.0.0/0")
        .send()
        .await?;
    let gone = net.subnets[1].0.clone();
    ec2.delete_subnet().subnet_id(&gone).send().await?;
    ec2.detach_internet_gateway()
        .internet_gateway_id(&igw)
        .vpc_id(&vpc_id)
        .send()
        .await?;
    h.poke(name).await?;
    let repaired = wait_network(&h, name, "repair", |n| {
        n.complete().is_ok() && !n.subnets.iter().any(|(id, _, _)| id == &gone)
    })
    .await?;
    assert_eq!(repaired.vpcs, net.vpcs, "the VPC itself was kept");
    // The subnets are back first; the Event comes once the pass has checked everything else.
    h.wait_event(name, "Repaired").await?;

    // Instances the group launches land in the managed subnets.
    asg.set_desired_capacity()
        .auto_scaling_group_name(&names.auto_scaling_group)
        .desired_capacity(1)
        .send()
        .await?;
    let launched = ec2
        .describe_instances()
        .filters(filter(
            &format!("tag:{OWNER_TAG}"),
            &common::owner(&h.ns, name),
        ))
        .send()
        .await?;
    let instances: Vec<_> = launched
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .collect();
    assert!(!instances.is_empty(), "the group launched no instance");
    let repaired_subnets: BTreeSet<String> = repaired
        .subnets
        .iter()
        .map(|(id, _, _)| id.clone())
        .collect();
    for i in &instances {
        assert!(
            i.subnet_id().is_some_and(|s| repaired_subnets.contains(s)),
            "instance {:?} in subnet {:?}, not in {repaired_subnets:?}",
            i.instance_id(),
            i.subnet_id()
        );
    }
    asg.set_desired_capacity()
        .auto_scaling_group_name(&names.auto_scaling_group)
        .desired_capacity(0)
        .send()
        .await?;

    // Deleting the worker leaves no piece of the network behind.
    h.api.delete(name, &DeleteParams::default()).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while h.api.get_opt(name).await?.is_some() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "not finalized: {:?}",
            h.api.get_opt(name).await?.and_then(|w| w.status)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let left = network(&h, name).await?;
    assert!(left.is_empty(), "left behind: {left:#?}");
    let vpc_gone = ec2
        .describe_vpcs()
        .filters(filter("vpc-id", &vpc_id))
        .send()
        .await?;
    assert!(vpc_gone.vpcs().is_empty());
    Ok(())
}

/// Removes the region's default VPC the way an organisation's account has none.
async fn delete_default_vpc(h: &Harness) -> anyhow::Result<()> {
    let ec2 = aws_sdk_ec2::Client::new(&h.sdk);
    let vpcs = ec2
        .describe_vpcs()
        .filters(filter("is-default", "true"))
        .send()
        .await?;
    for vpc in vpcs.vpcs().iter().filter_map(|v| v.vpc_id()) {
        let subnets = ec2
            .describe_subnets()
            .filters(filter("vpc-id", vpc))
            .send()
            .await?;
        for s in subnets.subnets().iter().filter_map(|s| s.subnet_id()) {
            ec2.delete_subnet().subnet_id(s).send().await?;
        }
        let gateways = ec2
            .describe_internet_gateways()
            .filters(filter("attachment.vpc-id", vpc))
            .send()
            .await?;
        for g in gateways
            .internet_gateways()
            .iter()
            .filter_map(|g| g.internet_gateway_id())
        {
            ec2.detach_internet_gateway()
                .internet_gateway_id(g)
                .vpc_id(vpc)
                .send()
                .await?;
            ec2.delete_internet_gateway()
                .internet_gateway_id(g)
                .send()
                .await?;
        }
        ec2.delete_vpc().vpc_id(vpc).send().await?;
    }
    Ok(())
}

#[tokio::test]
async fn without_any_network_the_worker_says_which_field_to_set_and_writes_nothing()
-> anyhow::Result<()> {
    let mut h = Harness::strict("nonet").await?;
    delete_default_vpc(&h).await?;
    h.start_controller(Duration::ZERO);
    let name = "no-net";
    h.apply_yaml(&worker_yaml(name, "")).await?;
    let w = h
        .wait_for(name, Duration::from_secs(60), "Degraded=True", |w| {
            w.condition("Degraded").is_some_and(|c| c.status == "True")
        })
        .await?;
    let degraded = w.condition("Degraded").expect("Degraded");
    assert_eq!(degraded.reason, reason::NO_NETWORK);
    for field in ["spec.network.subnetIds", "spec.network.managedVpc"] {
        assert!(degraded.message.contains(field), "{}", degraded.message);
    }
    let events = h.events(name).await?;
    assert!(
        events.iter().any(|(t, r, note)| t == "Warning"
            && r == reason::NO_NETWORK
            && note.contains("spec.network.managedVpc")),
        "{events:?}"
    );
    let (reads, writes) = h.aws_reads_writes();
    assert!(reads > 0);
    assert_eq!(writes, 0, "{:?}", h.aws_call_counts());

    // Asking for a managed network gets the worker going.
    let patch = serde_json::json!({"spec": {"network": {"managedVpc": {}}}});
    h.api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    h.wait_ready(name).await?;
    let net = network(&h, name).await?;
    net.complete().map_err(anyhow::Error::msg)?;
    assert_eq!(net.vpcs[0].1, "10.0.0.0/16");

    // Switching to given subnets (in the user's own VPC) deletes the managed network.
    let ec2 = aws_sdk_ec2::Client::new(&h.sdk);
    let own = ec2.create_vpc().cidr_block("10.9.0.0/16").send().await?;
    let own_vpc = own.vpc().and_then(|v| v.vpc_id()).unwrap_or_default();
    let own_subnet = ec2
        .create_subnet()
        .vpc_id(own_vpc)
        .cidr_block("10.9.0.0/24")
        .send()
        .await?;
    let own_subnet = own_subnet
        .subnet()
        .and_then(|s| s.subnet_id())
        .unwrap_or_default()
        .to_string();
    let patch =
        serde_json::json!({"spec": {"network": {"managedVpc": null, "subnetIds": [own_subnet]}}});
    h.api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let left = wait_network(&h, name, "the managed network to go", |n| {
        n.vpcs.is_empty() && n.subnets.is_empty() && n.gateways.is_empty()
    })
    .await?;
    assert_eq!(left.security_groups.len(), 1, "{left:#?}");
    let w = h
        .wait_for(
            name,
            Duration::from_secs(60),
            "Ready in the own subnet",
            |w| {
                w.condition("Ready").is_some_and(|c| c.status == "True")
                    && w.status
                        .as_ref()
                        .is_some_and(|s| s.resources.subnet_ids == [own_subnet.clone()])
            },
        )
        .await?;
    let r = &w.status.expect("status").resources;
    assert_eq!(r.vpc_id.as_deref(), Some(own_vpc));
    assert!(
        r.internet_gateway_id.is_none() && r.route_table_id.is_none(),
        "{r:?}"
    );
    h.api.delete(name, &DeleteParams::default()).await?;
    Ok(())
}

#[tokio::test]
async fn bad_cidrs_are_refused_at_admission_naming_the_field() -> anyhow::Result<()> {
    let h = Harness::strict("cidr").await?;
    for (cidr, says) in [
        ("10.0.0.0", "IPv4 CIDR"),
        ("fd00::/64", "IPv4 CIDR"),
        ("10.0.0.0/8", "/16 to /27"),
        ("10.0.0.0/28", "/16 to /27"),
        ("10.0.1.0/16", "host bits"),
        ("8.8.0.0/16", "private range"),
        ("172.17.0.0/16", "172.17.0.0/16"),
    ] {
        let err = h
            .apply_yaml(&worker_yaml(
                "bad-cidr",
                &format!("network:\n  managedVpc:\n    cidrBlock: \"{cidr}\""),
            ))
            .await
            .expect_err(cidr)
            .to_string();
        assert!(
            err.contains("spec.network.managedVpc.cidrBlock") && err.contains(says),
            "{cidr}: {err}"
        );
    }
    let err = h
        .apply_yaml(&worker_yaml(
            "bad-mix",
            "network:\n  managedVpc: {}\n  subnetIds: [subnet-0123456789abcdef0]",
        ))
        .await
        .expect_err("managedVpc with subnetIds")
        .to_string();
    assert!(err.contains("spec.network.subnetIds"), "{err}");
    let err = h
        .apply_yaml(&worker_yaml(
            "bad-private",
            "network:\n  managedVpc: {}\n  assignPublicIp: false",
        ))
        .await
        .expect_err("managedVpc without public addresses")
        .to_string();
    assert!(err.contains("spec.network.assignPublicIp"), "{err}");

    // The CIDR of an existing managed VPC cannot change.
    h.apply_yaml(&worker_yaml(
        "fixed",
        "network:\n  managedVpc:\n    cidrBlock: 10.1.0.0/16",
    ))
    .await?;
    let err = h
        .apply_yaml(&worker_yaml(
            "fixed",
            "network:\n  managedVpc:\n    cidrBlock: 10.2.0.0/16",
        ))
        .await
        .expect_err("CIDR change")
        .to_string();
    assert!(err.contains("cannot change"), "{err}");
    Ok(())
}
