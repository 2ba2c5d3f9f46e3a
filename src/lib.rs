//! ecs-worker-operator: runs queue-driven batch workers on AWS ECS-on-EC2 that cost nothing
//! while there is no work.
//!
//! One reconcile flows through the modules in this order:
//! `controller` (watch, finalizer, status, Events) -> `aws::cycle::observe` and
//! `aws::provision` (reads; look before create) -> `plan` (pure: desired resources and the
//! next run-cycle step) -> `aws` (the only writes) -> `controller` (status patch, requeue).
#![forbid(unsafe_code)]

pub mod api;
pub mod aws;
pub mod controller;
pub mod http;
pub mod metrics;
pub mod plan;
pub mod schedule;
