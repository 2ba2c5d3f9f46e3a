//! The schema and the controller agree on what a schedule is. Generated `cronRate` and
//! `schedule` values (strings generated from the CRD's own `cronRate` pattern, valid cron
//! expressions, and both with a few characters inserted, deleted or replaced) go to the real
//! API server as dry-run creates — so the OpenAPI pattern and the CEL rules are evaluated by
//! the server itself — and to the controller's parser:
//! - `cronRate`: admitted exactly when the controller parses it, a rate longer than a year
//!   included (the schema's CEL rule computes the length);
//! - `schedule`: whatever the controller accepts is admitted (the schema cannot parse cron, so
//!   the other direction is the controller's job).
//!
//! `PROPTEST_CASES` sets the number of generated values per kind (default 200).

use crate::common::install_crd;
use ecs_worker_operator::api::EcsSelfTerminatingWorker;
use ecs_worker_operator::schedule::{Schedule, ScheduleError};
use futures::{StreamExt, stream};
use kube::CustomResourceExt;
use kube::api::{Api, DynamicObject, PostParams};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use testbed::TestNamespace;

fn cases() -> usize {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

/// The `cronRate` pattern of the generated CRD.
fn rate_pattern() -> String {
    let crd = serde_json::to_value(EcsSelfTerminatingWorker::crd()).expect("the CRD serializes");
    crd.pointer(
        "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/cronRate/pattern",
    )
    .and_then(|p| p.as_str())
    .expect("cronRate has a pattern")
    .to_string()
}

/// Characters an edit puts in: the ones schedules are made of, and a few others.
const EDIT_CHARS: &[char] = &[
    '0', '1', '5', '9', '_', 'S', 'D', 'A', 'Y', 'H', 'O', 'U', 'R', 'M', 'I', 'N', 'E', 'C', 's',
    ' ', '\t', '*', '/', ',', '-', '?', 'L', 'W', '#', '.', '１', 'é',
];

/// `valid` values with up to three single-character edits (insert, delete, replace).
fn edited(valid: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    use proptest::prelude::*;
    let edit = (0u8..3, any::<usize>(), prop::sample::select(EDIT_CHARS));
    (valid, prop::collection::vec(edit, 0..4)).prop_map(|(text, edits)| {
        let mut chars: Vec<char> = text.chars().collect();
        for (kind, at, c) in edits {
            let at = at % (chars.len() + 1);
            match kind {
                0 => chars.insert(at, c),
                1 if at < chars.len() => {
                    chars.remove(at);
                }
                _ if at < chars.len() => chars[at] = c,
                _ => chars.push(c),
            }
        }
        chars.into_iter().collect()
    })
}

/// Valid 5-field cron expressions of the common shapes.
fn valid_cron() -> impl Strategy<Value = String> {
    use proptest::prelude::*;
    let minute = prop_oneof![
        (0u32..60).prop_map(|m| m.to_string()),
        (1u32..30).prop_map(|s| format!("*/{s}")),
        Just("*".to_owned()),
        (0u32..30, 30u32..60).prop_map(|(a, b)| format!("{a}-{b}")),
    ];
    let hour = prop_oneof![
        (0u32..24).prop_map(|h| h.to_string()),
        Just("*".to_owned()),
        (0u32..12, 12u32..24).prop_map(|(a, b)| format!("{a},{b}")),
    ];
    let dom = prop_oneof![Just("*".to_owned()), (1u32..29).prop_map(|d| d.to_string())];
    let month = prop_oneof![Just("*".to_owned()), (1u32..13).prop_map(|m| m.to_string())];
    let dow = prop_oneof![
        Just("*".to_owned()),
        Just("1-5".to_owned()),
        (0u32..7).prop_map(|d| d.to_string()),
    ];
    (minute, hour, dom, month, dow).prop_map(|(a, b, c, d, e)| format!("{a} {b} {c} {d} {e}"))
}

fn generate<S: Strategy>(strategy: S, runner: &mut TestRunner, n: usize) -> Vec<S::Value> {
    (0..n)
        .map(|_| strategy.new_tree(runner).expect("a value").current())
        .collect()
}

/// Whether the API server admits a worker whose spec has `field: value` (dry run).
async fn admitted(api: &Api<DynamicObject>, i: usize, field: &str, value: &str) -> bool {
    let mut spec = ecs_worker_operator::api::testing::minimal_spec_json();
    spec.as_object_mut().map(|s| s.remove("cronRate"));
    spec[field] = serde_json::json!(value);
    let obj: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "ecsworker.dev/v1alpha1", "kind": "EcsSelfTerminatingWorker",
        "metadata": { "name": format!("w-{i}") }, "spec": spec,
    }))
    .expect("an object");
    let pp = PostParams {
        dry_run: true,
        field_manager: None,
    };
    match api.create(&pp, &obj).await {
        Ok(_) => true,
        Err(kube::Error::Api(s)) if s.code == 422 => false,
        Err(e) => panic!("dry-run create of {field}={value:?}: {e}"),
    }
}

async fn verdicts(
    api: &Api<DynamicObject>,
    field: &'static str,
    values: Vec<String>,
) -> Vec<(String, bool)> {
    stream::iter(values.into_iter().enumerate())
        .map(|(i, v)| async move {
            let ok = admitted(api, i, field, &v).await;
            (v, ok)
        })
        .buffer_unordered(8)
        .collect()
        .await
}

#[tokio::test]
async fn the_schema_admits_the_schedules_the_controller_parses() -> anyhow::Result<()> {
    let began = std::time::Instant::now();
    let t = TestNamespace::new("schema").await?;
    install_crd(&t.client).await?;
    let ar = kube::api::ApiResource::erase::<EcsSelfTerminatingWorker>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(t.client.clone(), &t.name, &ar);
    let seed: u64 = rand::random();
    println!("values generated from seed {seed}");
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let n = cases();

    // cronRate: from the pattern itself, edited, and the edges of a year.
    // The generator takes no anchors; the pattern is anchored at both ends.
    let pattern = rate_pattern();
    let unanchored = pattern.trim_start_matches('^').trim_end_matches('$');
    anyhow::ensure!(
        unanchored.len() + 2 == pattern.len(),
        "{pattern} is not anchored"
    );
    let from_pattern = || {
        proptest::string::string_regex(unanchored).map_err(|e| anyhow::anyhow!("{pattern}: {e}"))
    };
    let mut rates = generate(from_pattern()?, &mut runner, n / 2);
    rates.extend(generate(edited(from_pattern()?), &mut runner, n));
    rates.extend(
        [
            "31622400_SECONDS",
            "31622401_SECONDS",
            "527040_MINUTES",
            "527041_MINUTES",
            "8784_HOURS",
            "8785_HOURS",
            "366_DAYS",
            "367_DAYS",
            "1_SECOND",
            "999999999_DAYS",
        ]
        .map(str::to_owned),
    );
    let mut disagreements = Vec::new();
    let mut too_long = 0;
    let mut accepted = 0;
    for (value, admitted) in verdicts(&api, "cronRate", rates.clone()).await {
        match (Schedule::parse_rate(&value), admitted) {
            (Ok(_), true) => accepted += 1,
            (Err(ScheduleError::BadRate(_)), false) => {}
            (Err(ScheduleError::RateTooLong(_)), false) => too_long += 1,
            (parsed, admitted) => disagreements.push(format!(
                "cronRate {value:?}: admitted {admitted}, controller {parsed:?}"
            )),
        }
    }

    // schedule: whatever the controller accepts, the schema admits.
    let crons = generate(edited(valid_cron()), &mut runner, n);
    let mut cron_accepted = 0;
    let mut controller_only = 0;
    for (value, admitted) in verdicts(&api, "schedule", crons.clone()).await {
        match (Schedule::parse_cron(&value), admitted) {
            (Ok(_), true) => cron_accepted += 1,
            (Ok(_), false) => disagreements.push(format!(
                "schedule {value:?}: the controller accepts it, the schema refuses it"
            )),
            (Err(_), true) => controller_only += 1,
            (Err(_), false) => {}
        }
    }

    println!(
        "{} cronRate values ({accepted} valid, {too_long} longer than a year, refused by both); \
         {} schedules ({cron_accepted} valid, {controller_only} \
         admitted and refused by the controller); {:.1} s",
        rates.len(),
        crons.len(),
        began.elapsed().as_secs_f64()
    );
    assert!(
        disagreements.is_empty(),
        "schema and controller disagree:\n{}",
        disagreements.join("\n")
    );
    assert!(
        accepted > n / 4 && too_long >= 4 && cron_accepted > n / 10,
        "too few valid values generated"
    );
    Ok(())
}
