//! The committed CRD YAML is exactly what the Rust types generate.

use ecs_worker_operator::api::EcsSelfTerminatingWorker;
use kube::CustomResourceExt;

#[test]
fn committed_crd_matches_the_types() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/ecsselfterminatingworkers.ecsworker.dev.yaml"
    );
    let committed = std::fs::read_to_string(path).expect("crds/ file exists");
    let generated =
        serde_yaml::to_string(&EcsSelfTerminatingWorker::crd()).expect("serializable CRD");
    assert!(
        committed == generated,
        "crds/ is stale: run `cargo run -- crd > crds/ecsselfterminatingworkers.ecsworker.dev.yaml` (or `make crd`) and commit it"
    );
}
