//! Fixtures for tests and benches (feature `testing`): the smallest valid worker, so every
//! test starts from the same manifest and says only what it changes.

use super::{EcsSelfTerminatingWorker, EcsSelfTerminatingWorkerSpec};
use serde_json::{Value, json};

/// The smallest valid spec, as the JSON a user writes.
pub fn minimal_spec_json() -> Value {
    json!({
        "instanceType": "t3.medium",
        "memoryLimitMiB": 512,
        "region": "us-east-1",
        "image": "worker:test",
        "cronRate": "1_HOUR",
    })
}

/// The smallest valid spec with the top-level fields of `extra` added or replaced.
pub fn spec_with(extra: Value) -> EcsSelfTerminatingWorkerSpec {
    let mut spec = minimal_spec_json();
    if let (Some(base), Value::Object(extra)) = (spec.as_object_mut(), extra) {
        base.extend(extra);
    }
    serde_json::from_value(spec).expect("the minimal spec with these fields is a spec")
}

/// The smallest valid spec.
pub fn minimal_spec() -> EcsSelfTerminatingWorkerSpec {
    spec_with(json!({}))
}

/// A worker named `name` with the smallest valid spec.
pub fn minimal_worker(name: &str) -> EcsSelfTerminatingWorker {
    EcsSelfTerminatingWorker::new(name, minimal_spec())
}
