//! kstatus compatibility: every status the controller can write, judged by kstatus itself
//! (`testbed::kstatus`, the library Flux and `kubectl wait`-style tools use). Current only when
//! `Ready` is true for the observed generation; Failed (Stalled) on a reason no retry clears;
//! InProgress (Reconciling) otherwise. The controller writes every status through
//! `conditions::summarize`, so the samples are built with it; the bad-manifest and provisioning
//! suites also judge the objects the running controller wrote.

use ecs_worker_operator::api::conditions::{self, reason};
use ecs_worker_operator::api::{EcsSelfTerminatingWorkerStatus, Phase};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

const EVERY_REASON: [&str; 18] = [
    reason::PROVISIONED,
    reason::PROVISIONING,
    reason::INVALID_SPEC,
    reason::SECRET_NOT_FOUND,
    reason::SECRET_INVALID,
    reason::ACCESS_DENIED,
    reason::INVALID_PARAMETER,
    reason::NO_NETWORK,
    reason::NAME_CONFLICT,
    reason::QUEUE_NOT_FOUND,
    reason::PROPAGATING,
    reason::AWS_UNAVAILABLE,
    reason::AWS_ERROR,
    reason::SCALE_UP_TIMED_OUT,
    reason::RUN_FAILED,
    reason::AS_EXPECTED,
    reason::DELETING,
    reason::QUEUE_RETAINED,
];

const EVERY_PHASE: [Phase; 8] = [
    Phase::Provisioning,
    Phase::Idle,
    Phase::ScalingUp,
    Phase::Running,
    Phase::ScalingDown,
    Phase::Suspended,
    Phase::Failed,
    Phase::Deleting,
];

fn now() -> Time {
    Time(jiff::Timestamp::from_second(1_800_000_000).expect("valid"))
}

/// A status as `Pass::save` writes it: `Ready` as given (or not yet set), the kstatus pair
/// derived from it, the generation observed.
fn status(
    phase: Phase,
    ready: Option<(bool, &str)>,
    observed: i64,
) -> EcsSelfTerminatingWorkerStatus {
    let mut s = EcsSelfTerminatingWorkerStatus {
        phase: Some(phase),
        observed_generation: Some(observed),
        ..Default::default()
    };
    if let Some((ok, r)) = ready {
        conditions::set(
            &mut s.conditions,
            conditions::READY,
            ok,
            r,
            format!("because {r}"),
            Some(observed),
            now(),
        );
        if !ok {
            conditions::set(
                &mut s.conditions,
                conditions::DEGRADED,
                true,
                r,
                format!("because {r}"),
                Some(observed),
                now(),
            );
        }
    }
    conditions::summarize(&mut s.conditions, Some(observed), now());
    s
}

fn object(generation: i64, status: &EcsSelfTerminatingWorkerStatus) -> Value {
    json!({
        "apiVersion": "ecsworker.dev/v1alpha1",
        "kind": "EcsSelfTerminatingWorker",
        "metadata": { "name": "w", "namespace": "ns", "generation": generation },
        "spec": {},
        "status": status,
    })
}

#[test]
fn kstatus_reads_every_status_the_controller_writes_as_intended() -> anyhow::Result<()> {
    let mut samples = Vec::new();
    for phase in EVERY_PHASE {
        let mut readies = vec![None, Some((true, reason::PROVISIONED))];
        readies.extend(EVERY_REASON.iter().map(|r| Some((false, *r))));
        for ready in readies {
            for (generation, observed) in [(3, 3), (4, 3)] {
                let expected = match ready {
                    _ if observed != generation => "InProgress",
                    Some((true, _)) => "Current",
                    Some((false, r)) if reason::TERMINAL.contains(&r) => "Failed",
                    _ => "InProgress",
                };
                let s = status(phase, ready, observed);
                samples.push((
                    format!("{phase:?} {ready:?} generation {generation} observed {observed}"),
                    expected,
                    object(generation, &s),
                ));
            }
        }
    }
    let objects: Vec<&Value> = samples.iter().map(|(_, _, o)| o).collect();
    let verdicts = testbed::kstatus::compute(&objects)?;
    let wrong: Vec<String> = samples
        .iter()
        .zip(&verdicts)
        .filter(|((_, expected, _), v)| v.status != *expected)
        .map(|((what, expected, _), v)| {
            format!(
                "{what}: kstatus says {} ({}), expected {expected}",
                v.status, v.message
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} samples:\n{}",
        wrong.len(),
        samples.len(),
        wrong.join("\n")
    );

    // A stalled worker's kstatus message is the controller's own (what to fix).
    let stalled = object(
        1,
        &status(Phase::Failed, Some((false, reason::INVALID_SPEC)), 1),
    );
    let v = testbed::kstatus::compute(&[stalled])?;
    assert_eq!(v[0].message, "because InvalidSpec");
    Ok(())
}

/// kstatus judges a real object the running controller wrote.
pub async fn assert_kstatus(
    api: &kube::Api<ecs_worker_operator::api::EcsSelfTerminatingWorker>,
    name: &str,
    expected: &str,
) -> anyhow::Result<()> {
    let obj = api.get(name).await?;
    let v = testbed::kstatus::compute(&[&obj])?;
    anyhow::ensure!(
        v[0].status == expected,
        "{name}: kstatus says {} ({}), expected {expected}; status: {:?}",
        v[0].status,
        v[0].message,
        obj.status
    );
    Ok(())
}
