//! Pure decisions. No I/O: given the spec, what was observed in AWS, the status and the time,
//! say what should exist and what to do next.
//!
//! - [`desired`]: the AWS resources a spec asks for (names, tags, AMI parameter, launch
//!   template data, task definition) and their fingerprints.
//! - [`cycle`]: the run-cycle state machine (tick, scale up, wait for instances, run tasks,
//!   record the run, scale to zero).
//! - [`network`]: the VPC a worker asks the operator to create (CIDR rules, subnets, zones).
//! - [`budget`]: the spend guardrail the cycle consults (instance-hours, blackout windows).

pub mod budget;
pub mod cycle;
pub mod desired;
pub mod network;
