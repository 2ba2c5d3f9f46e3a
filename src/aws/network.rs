//! Where a worker's instances run, and the network the operator creates when asked.
//!
//! [`Provisioner::placement`] picks the subnets: those in `spec.network.subnetIds`, the default
//! VPC's default subnets, or those of the managed VPC (`spec.network.managedVpc`), which it
//! ensures piece by piece (VPC, internet gateway, two subnets in two Availability Zones, a route
//! table with the default route, associations). Every piece is found by its owner and role tags
//! before anything is created, so a crash is adopted and a piece deleted out of band is
//! created again. [`Provisioner::delete_network`] removes the security group and the managed
//! network after the instances are gone, in the order AWS requires; while AWS still holds a
//! dependency (a network interface of a terminated instance), deletion waits.

use super::error::{AwsError, ErrorKind, SdkResultExt, settle};
use super::provision::{ProvisionError, Provisioner, Report};
use crate::api::{AwsResources, ManagedVpcSpec};
use crate::plan::desired::OWNER_TAG;
use crate::plan::network::{self, Cidr, ROLE_TAG, SUBNET_COUNT, role};
use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};

/// The subnets instances launch in, and their VPC.
pub(super) struct Placement {
    pub vpc_id: String,
    pub subnet_ids: Vec<String>,
}

fn filter(name: impl Into<String>, value: impl Into<String>) -> Filter {
    Filter::builder().name(name).values(value).build()
}

/// A network piece AWS cannot delete yet because something still uses it.
fn dependency(e: &AwsError) -> bool {
    e.code == "DependencyViolation"
}

impl Provisioner<'_> {
    /// This worker's pieces: owner tag of this cluster, or the `namespace/name` value earlier
    /// versions wrote (see [`crate::plan::desired::Owner::holder`]).
    fn owned(&self) -> Filter {
        Filter::builder()
            .name(format!("tag:{OWNER_TAG}"))
            .values(self.owner.value())
            .values(format!("{}/{}", self.owner.namespace, self.owner.name))
            .build()
    }

    fn with_role(role: &str) -> Filter {
        filter(format!("tag:{ROLE_TAG}"), role)
    }

    /// Tags of a created EC2 resource: the worker's tags, plus a role tag and a `Name` for the
    /// console when it is a piece of the managed network.
    pub(super) fn ec2_tags(
        &self,
        resource_type: ResourceType,
        role: Option<&str>,
    ) -> TagSpecification {
        let mut tags: Vec<Tag> = self
            .tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        if let Some(role) = role {
            tags.push(Tag::builder().key(ROLE_TAG).value(role).build());
            if !self.tags.contains_key("Name") {
                let name = match role {
                    role::VPC => self.names.base.clone(),
                    other => format!("{}-{other}", self.names.base),
                };
                tags.push(Tag::builder().key("Name").value(name).build());
            }
        }
        TagSpecification::builder()
            .resource_type(resource_type)
            .set_tags(Some(tags))
            .build()
    }

    /// The subnets for the Auto Scaling group; records the managed network in `res`.
    pub(super) async fn placement(
        &self,
        res: &mut AwsResources,
        report: &mut Report,
    ) -> Result<Placement, ProvisionError> {
        let managed = self
            .spec
            .network
            .as_ref()
            .and_then(|n| n.managed_vpc.as_ref());
        match managed {
            Some(vpc) => Ok(self.ensure_managed_network(vpc, res, report).await?),
            None => {
                let placement = self.existing_subnets().await?;
                // A managed network left from before `managedVpc` was removed goes once
                // nothing runs in it.
                self.delete_managed_vpcs().await?;
                res.vpc_id = Some(placement.vpc_id.clone());
                res.internet_gateway_id = None;
                res.route_table_id = None;
                res.availability_zones.clear();
                Ok(placement)
            }
        }
    }

    /// Given subnets, else the default VPC's default subnets; no write either way.
    async fn existing_subnets(&self) -> Result<Placement, ProvisionError> {
        let ec2 = &self.aws.ec2;
        let given = self
            .spec
            .network
            .as_ref()
            .map(|n| n.subnet_ids.clone())
            .unwrap_or_default();
        if !given.is_empty() {
            let out = ec2
                .describe_subnets()
                .set_subnet_ids(Some(given.clone()))
                .send()
                .await
                .aws("ec2", "DescribeSubnets")?;
            let vpc_id = out
                .subnets()
                .iter()
                .find_map(|s| s.vpc_id())
                .map(str::to_string)
                .unwrap_or_default();
            return Ok(Placement {
                vpc_id,
                subnet_ids: given,
            });
        }
        let vpcs = ec2
            .describe_vpcs()
            .filters(filter("is-default", "true"))
            .send()
            .await
            .aws("ec2", "DescribeVpcs")?;
        let Some(vpc_id) = vpcs
            .vpcs()
            .iter()
            .find_map(|v| v.vpc_id())
            .map(str::to_string)
        else {
            return Err(ProvisionError::NoNetwork(self.spec.region.clone()));
        };
        let subnets = ec2
            .describe_subnets()
            .filters(filter("vpc-id", &vpc_id))
            .filters(filter("default-for-az", "true"))
            .send()
            .await
            .aws("ec2", "DescribeSubnets")?;
        let mut ids: Vec<String> = subnets
            .subnets()
            .iter()
            .filter_map(|s| s.subnet_id())
            .map(str::to_string)
            .collect();
        ids.sort();
        if ids.is_empty() {
            return Err(ProvisionError::NoNetwork(self.spec.region.clone()));
        }
        Ok(Placement {
            vpc_id,
            subnet_ids: ids,
        })
    }

    async fn ensure_managed_network(
        &self,
        spec: &ManagedVpcSpec,
        res: &mut AwsResources,
        report: &mut Report,
    ) -> Result<Placement, AwsError> {
        let cidr = network::check_cidr(&spec.cidr_block).map_err(|message| AwsError {
            service: "ec2",
            operation: "CreateVpc",
            code: "InvalidParameterValue".into(),
            message,
            kind: ErrorKind::InvalidParameter,
        })?;
        let vpc_id = self.ensure_vpc(&cidr, report).await?;
        res.vpc_id = Some(vpc_id.clone());
        let igw = self.ensure_internet_gateway(&vpc_id, report).await?;
        res.internet_gateway_id = Some(igw.clone());
        let subnets = self.ensure_subnets(&vpc_id, &cidr, report).await?;
        res.availability_zones = subnets.iter().map(|(_, zone)| zone.clone()).collect();
        let subnet_ids: Vec<String> = subnets.into_iter().map(|(id, _)| id).collect();
        let route_table = self
            .ensure_route_table(&vpc_id, &igw, &subnet_ids, report)
            .await?;
        res.route_table_id = Some(route_table);
        Ok(Placement { vpc_id, subnet_ids })
    }

    async fn ensure_vpc(&self, cidr: &Cidr, report: &mut Report) -> Result<String, AwsError> {
        let ec2 = &self.aws.ec2;
        let found = ec2
            .describe_vpcs()
            .filters(self.owned())
            .filters(Self::with_role(role::VPC))
            .send()
            .await
            .aws("ec2", "DescribeVpcs")?;
        if let Some(vpc) = found.vpcs().first() {
            let id = vpc.vpc_id().unwrap_or_default().to_string();
            if vpc.cidr_block() != Some(cidr.to_string().as_str()) {
                // The CIDR is immutable at admission; a VPC with another one predates the spec.
                return Err(AwsError {
                    service: "ec2",
                    operation: "CreateVpc",
                    code: "CidrMismatch".into(),
                    message: format!(
                        "the worker's VPC {id} has CIDR {}, not spec.network.managedVpc.cidrBlock {cidr}",
                        vpc.cidr_block().unwrap_or("?")
                    ),
                    kind: ErrorKind::InvalidParameter,
                });
            }
            return Ok(id);
        }
        let out = ec2
            .create_vpc()
            .cidr_block(cidr.to_string())
            .tag_specifications(self.ec2_tags(ResourceType::Vpc, Some(role::VPC)))
            .send()
            .await
            .aws("ec2", "CreateVpc")?;
        report.created.push("Vpc");
        out.vpc()
            .and_then(|v| v.vpc_id())
            .map(str::to_string)
            .ok_or_else(|| AwsError::unexpected("ec2", "CreateVpc", "no VPC id"))
    }

    async fn ensure_internet_gateway(
        &self,
        vpc_id: &str,
        report: &mut Report,
    ) -> Result<String, AwsError> {
        let ec2 = &self.aws.ec2;
        let found = ec2
            .describe_internet_gateways()
            .filters(self.owned())
            .filters(Self::with_role(role::INTERNET_GATEWAY))
            .send()
            .await
            .aws("ec2", "DescribeInternetGateways")?;
        let (id, attached) = match found.internet_gateways().first() {
            Some(g) => (
                g.internet_gateway_id().unwrap_or_default().to_string(),
                g.attachments().iter().any(|a| a.vpc_id() == Some(vpc_id)),
            ),
            None => {
                let out = ec2
                    .create_internet_gateway()
                    .tag_specifications(
                        self.ec2_tags(ResourceType::InternetGateway, Some(role::INTERNET_GATEWAY)),
                    )
                    .send()
                    .await
                    .aws("ec2", "CreateInternetGateway")?;
                report.created.push("InternetGateway");
                let id = out
                    .internet_gateway()
                    .and_then(|g| g.internet_gateway_id())
                    .map(str::to_string)
                    .ok_or_else(|| {
                        AwsError::unexpected("ec2", "CreateInternetGateway", "no gateway id")
                    })?;
                (id, false)
            }
        };
        if !attached {
            settle("the new network", || async {
                ec2.attach_internet_gateway()
                    .internet_gateway_id(&id)
                    .vpc_id(vpc_id)
                    .send()
                    .await
                    .aws("ec2", "AttachInternetGateway")
            })
            .await?;
            report.updated.push("InternetGatewayAttachment");
        }
        Ok(id)
    }

    /// The two subnets as `(id, zone)`, in role order; a missing one is created in the best
    /// zone the other does not use.
    async fn ensure_subnets(
        &self,
        vpc_id: &str,
        cidr: &Cidr,
        report: &mut Report,
    ) -> Result<Vec<(String, String)>, AwsError> {
        let ec2 = &self.aws.ec2;
        let found = ec2
            .describe_subnets()
            .filters(filter("vpc-id", vpc_id))
            .filters(self.owned())
            .send()
            .await
            .aws("ec2", "DescribeSubnets")?;
        let mut slots: Vec<Option<(String, String)>> = (0..SUBNET_COUNT)
            .map(|i| {
                let role = role::subnet(i);
                found
                    .subnets()
                    .iter()
                    .find(|s| {
                        s.tags()
                            .iter()
                            .any(|t| t.key() == Some(ROLE_TAG) && t.value() == Some(role.as_str()))
                    })
                    .map(|s| {
                        (
                            s.subnet_id().unwrap_or_default().to_string(),
                            s.availability_zone().unwrap_or_default().to_string(),
                        )
                    })
            })
            .collect();
        if slots.iter().all(Option::is_some) {
            return Ok(slots.into_iter().flatten().collect());
        }
        let zones = self.ranked_zones().await?;
        let cidrs = network::subnet_cidrs(cidr);
        for i in 0..SUBNET_COUNT {
            if slots[i].is_some() {
                continue;
            }
            let used: Vec<&str> = slots.iter().flatten().map(|(_, z)| z.as_str()).collect();
            let zone = zones
                .iter()
                .find(|z| !used.contains(&z.as_str()))
                .or_else(|| zones.first())
                .ok_or_else(|| {
                    AwsError::unexpected(
                        "ec2",
                        "DescribeAvailabilityZones",
                        format!("region {} lists no available zone", self.spec.region),
                    )
                })?
                .clone();
            let out = settle("the new network", || async {
                ec2.create_subnet()
                    .vpc_id(vpc_id)
                    .cidr_block(cidrs[i].to_string())
                    .availability_zone(&zone)
                    .tag_specifications(self.ec2_tags(ResourceType::Subnet, Some(&role::subnet(i))))
                    .send()
                    .await
                    .aws("ec2", "CreateSubnet")
            })
            .await?;
            report.created.push("Subnet");
            let id = out
                .subnet()
                .and_then(|s| s.subnet_id())
                .map(str::to_string)
                .ok_or_else(|| AwsError::unexpected("ec2", "CreateSubnet", "no subnet id"))?;
            slots[i] = Some((id, zone));
        }
        Ok(slots.into_iter().flatten().collect())
    }

    /// Available zones of the region, those offering the instance type first.
    async fn ranked_zones(&self) -> Result<Vec<String>, AwsError> {
        let ec2 = &self.aws.ec2;
        let zones = ec2
            .describe_availability_zones()
            .filters(filter("state", "available"))
            .filters(filter("zone-type", "availability-zone"))
            .send()
            .await
            .aws("ec2", "DescribeAvailabilityZones")?;
        let available: Vec<String> = zones
            .availability_zones()
            .iter()
            .filter_map(|z| z.zone_name())
            .map(str::to_string)
            .collect();
        let offerings = ec2
            .describe_instance_type_offerings()
            .location_type(aws_sdk_ec2::types::LocationType::AvailabilityZone)
            // Zones offering the preferred type first.
            .filters(filter(
                "instance-type",
                self.spec
                    .instance_types()
                    .first()
                    .copied()
                    .unwrap_or_default(),
            ))
            .send()
            .await
            .aws("ec2", "DescribeInstanceTypeOfferings")?;
        let offering: Vec<String> = offerings
            .instance_type_offerings()
            .iter()
            .filter_map(|o| o.location())
            .map(str::to_string)
            .collect();
        Ok(network::rank_zones(&available, &offering))
    }

    async fn ensure_route_table(
        &self,
        vpc_id: &str,
        internet_gateway: &str,
        subnet_ids: &[String],
        report: &mut Report,
    ) -> Result<String, AwsError> {
        let ec2 = &self.aws.ec2;
        let found = ec2
            .describe_route_tables()
            .filters(filter("vpc-id", vpc_id))
            .filters(self.owned())
            .filters(Self::with_role(role::ROUTE_TABLE))
            .send()
            .await
            .aws("ec2", "DescribeRouteTables")?;
        let (id, table) = match found.route_tables().first() {
            Some(t) => (
                t.route_table_id().unwrap_or_default().to_string(),
                Some(t.clone()),
            ),
            None => {
                let out = settle("the new network", || async {
                    ec2.create_route_table()
                        .vpc_id(vpc_id)
                        .tag_specifications(
                            self.ec2_tags(ResourceType::RouteTable, Some(role::ROUTE_TABLE)),
                        )
                        .send()
                        .await
                        .aws("ec2", "CreateRouteTable")
                })
                .await?;
                report.created.push("RouteTable");
                let id = out
                    .route_table()
                    .and_then(|t| t.route_table_id())
                    .map(str::to_string)
                    .ok_or_else(|| {
                        AwsError::unexpected("ec2", "CreateRouteTable", "no route table id")
                    })?;
                (id, None)
            }
        };
        let routes = table.as_ref().map(|t| t.routes()).unwrap_or_default();
        let default_route = routes
            .iter()
            .find(|r| r.destination_cidr_block() == Some("0.0.0.0/0"));
        match default_route {
            Some(r) if r.gateway_id() == Some(internet_gateway) => {}
            Some(_) => {
                settle("the new network", || async {
                    ec2.replace_route()
                        .route_table_id(&id)
                        .destination_cidr_block("0.0.0.0/0")
                        .gateway_id(internet_gateway)
                        .send()
                        .await
                        .aws("ec2", "ReplaceRoute")
                })
                .await?;
                report.updated.push("DefaultRoute");
            }
            None => {
                settle("the new network", || async {
                    ec2.create_route()
                        .route_table_id(&id)
                        .destination_cidr_block("0.0.0.0/0")
                        .gateway_id(internet_gateway)
                        .send()
                        .await
                        .aws("ec2", "CreateRoute")
                })
                .await?;
                report.created.push("DefaultRoute");
            }
        }
        let associations = table.as_ref().map(|t| t.associations()).unwrap_or_default();
        let mut associated = Vec::new();
        for a in associations {
            match a.subnet_id() {
                Some(subnet) if subnet_ids.iter().any(|s| s == subnet) => associated.push(subnet),
                // A subnet that is no longer the worker's (deleted out of band).
                Some(_) => {
                    ec2.disassociate_route_table()
                        .association_id(a.route_table_association_id().unwrap_or_default())
                        .send()
                        .await
                        .aws("ec2", "DisassociateRouteTable")?;
                    report.updated.push("RouteTableAssociation");
                }
                None => {}
            }
        }
        for subnet in subnet_ids {
            if !associated.contains(&subnet.as_str()) {
                settle("the new network", || async {
                    ec2.associate_route_table()
                        .route_table_id(&id)
                        .subnet_id(subnet)
                        .send()
                        .await
                        .aws("ec2", "AssociateRouteTable")
                })
                .await?;
                report.updated.push("RouteTableAssociation");
            }
        }
        Ok(id)
    }

    /// The egress-only security group of the instances (a new group allows all egress and no
    /// ingress) in the instances' VPC. The worker's groups left in other VPCs (the network
    /// changed) are deleted once no instance uses them.
    pub(super) async fn ensure_security_group(
        &self,
        vpc_id: &str,
        report: &mut Report,
    ) -> Result<String, AwsError> {
        let ec2 = &self.aws.ec2;
        let found = self.owned_security_groups().await?;
        let mut current = None;
        for group in &found {
            let id = group.group_id().unwrap_or_default();
            if group.vpc_id() == Some(vpc_id) {
                current.get_or_insert_with(|| id.to_string());
            } else {
                let deleted = ec2
                    .delete_security_group()
                    .group_id(id)
                    .send()
                    .await
                    .aws("ec2", "DeleteSecurityGroup");
                waiting(deleted, "security group", id)?;
            }
        }
        if let Some(id) = current {
            return Ok(id);
        }
        let out = settle("the new network", || async {
            ec2.create_security_group()
                .group_name(&self.names.security_group)
                .description("ecs-worker-operator worker instances: egress only")
                .vpc_id(vpc_id)
                .tag_specifications(self.ec2_tags(ResourceType::SecurityGroup, None))
                .send()
                .await
                .aws("ec2", "CreateSecurityGroup")
        })
        .await?;
        report.created.push("SecurityGroup");
        out.group_id()
            .map(str::to_string)
            .ok_or_else(|| AwsError::unexpected("ec2", "CreateSecurityGroup", "no group id"))
    }

    async fn owned_security_groups(
        &self,
    ) -> Result<Vec<aws_sdk_ec2::types::SecurityGroup>, AwsError> {
        let out = self
            .aws
            .ec2
            .describe_security_groups()
            .filters(filter("group-name", &self.names.security_group))
            .filters(self.owned())
            .send()
            .await
            .aws("ec2", "DescribeSecurityGroups")?;
        Ok(out.security_groups().to_vec())
    }

    /// Deletes the security group and the managed network (call once no instance is left).
    /// `Some(reason)` while AWS still holds a dependency; call again later.
    pub(super) async fn delete_network(&self) -> Result<Option<String>, AwsError> {
        let ec2 = &self.aws.ec2;
        for group in self.owned_security_groups().await? {
            let id = group.group_id().unwrap_or_default();
            let deleted = ec2
                .delete_security_group()
                .group_id(id)
                .send()
                .await
                .aws("ec2", "DeleteSecurityGroup");
            if let Some(wait) = waiting(deleted, "security group", id)? {
                return Ok(Some(wait));
            }
        }
        self.delete_managed_vpcs().await
    }

    /// Deletes every managed VPC of the worker with what is in it, and its internet gateways;
    /// `Some(reason)` while AWS still holds a dependency.
    async fn delete_managed_vpcs(&self) -> Result<Option<String>, AwsError> {
        let ec2 = &self.aws.ec2;
        let vpcs = ec2
            .describe_vpcs()
            .filters(self.owned())
            .filters(Self::with_role(role::VPC))
            .send()
            .await
            .aws("ec2", "DescribeVpcs")?;
        for vpc in vpcs.vpcs().iter().filter_map(|v| v.vpc_id()) {
            if let Some(wait) = self.delete_vpc(vpc).await? {
                return Ok(Some(wait));
            }
        }
        // The gateways, detached from their VPCs above; one created just before a crash may
        // never have been attached.
        let gateways = ec2
            .describe_internet_gateways()
            .filters(self.owned())
            .send()
            .await
            .aws("ec2", "DescribeInternetGateways")?;
        for gateway in gateways.internet_gateways() {
            let id = gateway.internet_gateway_id().unwrap_or_default();
            for attachment in gateway.attachments() {
                let detached = ec2
                    .detach_internet_gateway()
                    .internet_gateway_id(id)
                    .vpc_id(attachment.vpc_id().unwrap_or_default())
                    .send()
                    .await
                    .aws("ec2", "DetachInternetGateway");
                if let Some(wait) = waiting(detached, "internet gateway", id)? {
                    return Ok(Some(wait));
                }
            }
            let deleted = ec2
                .delete_internet_gateway()
                .internet_gateway_id(id)
                .send()
                .await
                .aws("ec2", "DeleteInternetGateway");
            if let Some(wait) = waiting(deleted, "internet gateway", id)? {
                return Ok(Some(wait));
            }
        }
        Ok(None)
    }

    /// Subnets, route tables, the gateway's attachment and the VPC itself (the gateway goes in
    /// [`Self::delete_managed_vpcs`]).
    async fn delete_vpc(&self, vpc: &str) -> Result<Option<String>, AwsError> {
        let ec2 = &self.aws.ec2;
        let subnets = ec2
            .describe_subnets()
            .filters(filter("vpc-id", vpc))
            .send()
            .await
            .aws("ec2", "DescribeSubnets")?;
        for id in subnets.subnets().iter().filter_map(|s| s.subnet_id()) {
            let deleted = ec2
                .delete_subnet()
                .subnet_id(id)
                .send()
                .await
                .aws("ec2", "DeleteSubnet");
            if let Some(wait) = waiting(deleted, "subnet", id)? {
                return Ok(Some(wait));
            }
        }
        let tables = ec2
            .describe_route_tables()
            .filters(filter("vpc-id", vpc))
            .filters(self.owned())
            .send()
            .await
            .aws("ec2", "DescribeRouteTables")?;
        for table in tables.route_tables() {
            let id = table.route_table_id().unwrap_or_default();
            for association in table
                .associations()
                .iter()
                .filter(|a| a.main() != Some(true))
            {
                let removed = ec2
                    .disassociate_route_table()
                    .association_id(association.route_table_association_id().unwrap_or_default())
                    .send()
                    .await
                    .aws("ec2", "DisassociateRouteTable");
                if let Some(wait) = waiting(removed, "route table", id)? {
                    return Ok(Some(wait));
                }
            }
            let deleted = ec2
                .delete_route_table()
                .route_table_id(id)
                .send()
                .await
                .aws("ec2", "DeleteRouteTable");
            if let Some(wait) = waiting(deleted, "route table", id)? {
                return Ok(Some(wait));
            }
        }
        let gateways = ec2
            .describe_internet_gateways()
            .filters(filter("attachment.vpc-id", vpc))
            .send()
            .await
            .aws("ec2", "DescribeInternetGateways")?;
        for id in gateways
            .internet_gateways()
            .iter()
            .filter_map(|g| g.internet_gateway_id())
        {
            let detached = ec2
                .detach_internet_gateway()
                .internet_gateway_id(id)
                .vpc_id(vpc)
                .send()
                .await
                .aws("ec2", "DetachInternetGateway");
            if let Some(wait) = waiting(detached, "internet gateway", id)? {
                return Ok(Some(wait));
            }
        }
        let deleted = ec2
            .delete_vpc()
            .vpc_id(vpc)
            .send()
            .await
            .aws("ec2", "DeleteVpc");
        waiting(deleted, "VPC", vpc)
    }
}

/// A delete that succeeded is `None`; one AWS refuses because something still depends on the
/// resource is a reason to wait, and so is NotFound: the id was just listed by its tags, so
/// EC2 has not yet made a new resource visible to deletes (a resource really gone is not
/// listed on the next pass).
/// <https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html>
fn waiting<T>(r: Result<T, AwsError>, what: &str, id: &str) -> Result<Option<String>, AwsError> {
    match r {
        Ok(_) => Ok(None),
        Err(e) if e.is(ErrorKind::NotFound) => Ok(Some(format!(
            "waiting for AWS to make the new {what} {id} visible: {}",
            e.message
        ))),
        Err(e) if dependency(&e) => Ok(Some(format!(
            "waiting for AWS to release the {what} {id}: {}",
            e.message
        ))),
        Err(e) => Err(e),
    }
}
