//! The operator's integration tests, linked into one test binary (each module used to be its
//! own binary; one link of the AWS SDK instead of six keeps builds fast and small).
//!
//! They run against a real kube-apiserver + etcd (shared by the whole binary) and a moto
//! server per test; see `common` for the harness.

mod common;

mod argocd;
mod assume_role;
mod aws_rules;
mod aws_secrets;
mod bad_manifests;
mod budget;
mod capacity;
mod chaos;
mod consistency;
mod crd;
mod cycle;
mod deploy;
mod existing_queue;
mod helm;
mod isolation;
mod kstatus;
mod monitoring;
mod namespaced;
mod network;
mod operations;
mod permissions_doc;
mod policies;
mod producers;
mod provisioning;
mod readme;
mod schema_agreement;
mod secrets;
mod spot;
mod worker_policy;
