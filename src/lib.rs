//! ecs-worker-operator: runs queue-driven batch workers on AWS ECS-on-EC2 that cost nothing
//! while there is no work.
//!
//! One reconcile (`controller::reconcile::apply`), step by step:
//! 0. the echo of this controller's own status write ends the pass (`controller`);
//! 1. `check_spec`: `api::validate` checks what the schema cannot (bounds from `api::limits`)
//!    and returns a `ValidatedSpec`; an invalid spec is terminal, with no AWS call;
//! 2. `connect`: the worker's AWS identity (its Secret, its role or the operator's own) as
//!    clients (`aws`);
//! 3. `provision`: `aws::provision` makes AWS match `plan::desired` (look before create,
//!    drift repaired) when the spec changed or the drift check is due;
//! 4. `advance_cycle`: `aws::cycle::observe` reads, `plan::cycle::decide` (pure) decides,
//!    `aws::cycle::execute` writes; the decision becomes status, Events and `metrics`;
//! 5. Ready, the status saved (server-side apply), the requeue the decision asked for.
//!
//! Deletion (`cleanup`) connects the same way, stops the tasks and deletes what the worker
//! owns.
#![forbid(unsafe_code)]

pub mod api;
pub mod aws;
pub mod controller;
pub mod http;
pub mod metrics;
pub mod plan;
pub mod schedule;
