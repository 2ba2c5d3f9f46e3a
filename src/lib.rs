//! ecs-worker-operator: runs queue-driven batch workers on AWS ECS-on-EC2 that cost nothing
//! while there is no work.
//!
//! One reconcile flows through the modules in this order:
//! `controller` (watch, finalizer, status, Events) -> `aws::observe` (read-only calls) ->
//! `plan` (pure: desired resources and the next run-cycle step) -> `aws::execute` (the only
//! writes) -> `controller` (status patch, requeue).
#![forbid(unsafe_code)]

pub mod api;
pub mod plan;
pub mod schedule;
