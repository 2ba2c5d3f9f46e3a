//! The network a worker asks the operator to create (`spec.network.managedVpc`), computed
//! without I/O: the VPC CIDR rules, how it splits into two public subnets, which Availability
//! Zones they go to, and the tags that tell each piece's role.
//!
//! The same CIDR rules are admission rules in the CRD (CEL); [`check_cidr`] repeats them for
//! the controller so an object admitted by an older API server still gets a clear message.

use ipnet::Ipv4Net;

/// The VPC CIDR used when `managedVpc.cidrBlock` is not set.
pub const DEFAULT_CIDR: &str = "10.0.0.0/16";
/// Tag saying which piece of the managed network a resource is.
pub const ROLE_TAG: &str = "ecsworker.dev/network";
/// Docker's default bridge on ECS instances; a VPC overlapping it breaks container networking.
pub const DOCKER_BRIDGE: &str = "172.17.0.0/16";
/// The two subnets of the managed network.
pub const SUBNET_COUNT: usize = 2;

/// Value of [`ROLE_TAG`] for each piece.
pub mod role {
    pub const VPC: &str = "vpc";
    pub const INTERNET_GATEWAY: &str = "internet-gateway";
    pub const ROUTE_TABLE: &str = "route-table";
    /// `subnet-1`, `subnet-2`.
    pub fn subnet(index: usize) -> String {
        format!("subnet-{}", index + 1)
    }
}

/// An IPv4 network, `address/prefix`.
pub type Cidr = Ipv4Net;

/// Checks a managed VPC CIDR: IPv4, host bits zero, /16 to /27 (two subnets of at least /28,
/// AWS's smallest), inside a private range, clear of Docker's bridge. The message names the
/// field and says what to write instead.
pub fn check_cidr(s: &str) -> Result<Cidr, String> {
    let field = "spec.network.managedVpc.cidrBlock";
    let cidr: Cidr = s
        .parse()
        .map_err(|_| format!("{field}: {s:?} is not an IPv4 CIDR such as {DEFAULT_CIDR}"))?;
    if !(16..=27).contains(&cidr.prefix_len()) {
        return Err(format!(
            "{field}: {s} has prefix /{}; use /16 to /27 (it is split into two subnets of at least /28)",
            cidr.prefix_len()
        ));
    }
    if cidr != cidr.trunc() {
        return Err(format!(
            "{field}: {s} has host bits set; write {}",
            cidr.trunc()
        ));
    }
    let private = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"];
    if !private
        .iter()
        .any(|p| p.parse::<Cidr>().expect("valid constant").contains(&cidr))
    {
        return Err(format!(
            "{field}: {s} is not in a private range; use one inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16"
        ));
    }
    let bridge: Cidr = DOCKER_BRIDGE.parse().expect("valid constant");
    if bridge.contains(&cidr) || cidr.contains(&bridge) {
        return Err(format!(
            "{field}: {s} overlaps {DOCKER_BRIDGE}, Docker's bridge network on ECS instances; choose another range"
        ));
    }
    Ok(cidr)
}

/// The subnets' CIDRs: the two halves of the VPC (a checked CIDR is at most /27).
pub fn subnet_cidrs(vpc: &Cidr) -> [Cidr; SUBNET_COUNT] {
    let halves: Vec<Cidr> = vpc
        .subnets(vpc.prefix_len() + 1)
        .map(|s| s.collect())
        .unwrap_or_default();
    [halves[0], halves[1]]
}

/// Availability Zones in the order subnets should use them: zones that offer the instance type
/// first (when the region says which do), then every other available zone, each group in name
/// order so the choice is stable across reconciles.
pub fn rank_zones(available: &[String], offering: &[String]) -> Vec<String> {
    let mut available: Vec<String> = available.to_vec();
    available.sort();
    available.dedup();
    let (mut ranked, others): (Vec<String>, Vec<String>) =
        available.into_iter().partition(|z| offering.contains(z));
    ranked.extend(others);
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_cidr_splits_into_two_halves() {
        let vpc = check_cidr(DEFAULT_CIDR).unwrap();
        let [a, b] = subnet_cidrs(&vpc);
        assert_eq!(a.to_string(), "10.0.0.0/17");
        assert_eq!(b.to_string(), "10.0.128.0/17");
        let small = check_cidr("192.168.4.0/27").unwrap();
        assert_eq!(
            subnet_cidrs(&small).map(|c| c.to_string()),
            ["192.168.4.0/28", "192.168.4.16/28"]
        );
    }

    #[test]
    fn bad_cidrs_name_the_field_and_the_fix() {
        for (input, says) in [
            ("10.0.0.0", "not an IPv4 CIDR"),
            ("10.0.0.300/16", "not an IPv4 CIDR"),
            ("fd00::/64", "not an IPv4 CIDR"),
            ("10.0.0.0/33", "not an IPv4 CIDR"),
            ("10.0.0.0/8", "use /16 to /27"),
            ("10.0.0.0/28", "use /16 to /27"),
            ("10.0.1.0/16", "write 10.0.0.0/16"),
            ("8.8.0.0/16", "not in a private range"),
            ("172.17.0.0/16", "overlaps 172.17.0.0/16"),
            ("172.17.128.0/20", "overlaps 172.17.0.0/16"),
        ] {
            let err = check_cidr(input).unwrap_err();
            assert!(
                err.starts_with("spec.network.managedVpc.cidrBlock: "),
                "{err}"
            );
            assert!(err.contains(says), "{input}: {err}");
        }
        for ok in [
            "10.42.0.0/16",
            "172.16.0.0/16",
            "172.18.0.0/20",
            "192.168.0.0/24",
        ] {
            check_cidr(ok).unwrap();
        }
    }

    #[test]
    fn zones_offering_the_instance_type_come_first_in_stable_order() {
        let all: Vec<String> = ["us-east-1c", "us-east-1a", "us-east-1b", "us-east-1e"]
            .map(String::from)
            .to_vec();
        let offering: Vec<String> = ["us-east-1e", "us-east-1b"].map(String::from).to_vec();
        assert_eq!(
            rank_zones(&all, &offering),
            ["us-east-1b", "us-east-1e", "us-east-1a", "us-east-1c"]
        );
        // Unknown offerings: name order.
        assert_eq!(
            rank_zones(&all, &[]),
            ["us-east-1a", "us-east-1b", "us-east-1c", "us-east-1e"]
        );
        assert_eq!(rank_zones(&all[..1], &[]), ["us-east-1c"]);
    }
}
