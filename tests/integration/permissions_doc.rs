//! `docs/aws.md`'s "AWS permissions, per principal" lists what the code needs: the operator's
//! actions are exactly those of `deploy/aws/operator-policy.json` (which `deploy.rs` checks
//! against the calls in `src/aws/`), the worker task role's exactly those of the policy
//! `plan::desired::task_policy` writes (which `worker_policy.rs` checks against the worker's
//! calls), the instance and execution roles name the AWS managed policies the operator
//! attaches, and the execution role's actions are exactly those of the inline policy
//! `plan::desired::execution_policy` writes for `spec.secrets`.

use ecs_worker_operator::plan::desired::{self, TaskPolicyInputs};
use std::collections::BTreeSet;

fn section<'a>(readme: &'a str, heading: &str) -> &'a str {
    let start = readme
        .find(heading)
        .unwrap_or_else(|| panic!("docs/aws.md has no {heading:?}"));
    let rest = &readme[start + heading.len()..];
    let end = rest.find("\n#").unwrap_or(rest.len());
    &rest[..end]
}

/// Every `service:Action` in backticks.
fn actions(text: &str) -> BTreeSet<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|t| {
            t.split_once(':').is_some_and(|(svc, op)| {
                !svc.is_empty()
                    && svc
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && op.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                    && op.chars().all(|c| c.is_ascii_alphanumeric())
            })
        })
        .map(str::to_string)
        .collect()
}

fn policy_actions(policy: &serde_json::Value) -> BTreeSet<String> {
    policy["Statement"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| crate::common::strings(&s["Action"]))
        .collect()
}

#[test]
fn readme_lists_every_permission_of_each_principal() -> anyhow::Result<()> {
    let root = testbed::repo_root();
    let readme = std::fs::read_to_string(root.join("docs/aws.md"))?;

    let operator: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        root.join("deploy/aws/operator-policy.json"),
    )?)?;
    assert_eq!(
        actions(section(&readme, "### Operator")),
        policy_actions(&operator),
        "docs/aws.md's operator actions against deploy/aws/operator-policy.json"
    );

    let task: serde_json::Value = serde_json::from_str(&desired::task_policy(&TaskPolicyInputs {
        partition: "aws",
        region: "us-east-1",
        queue_arn: "arn:aws:sqs:us-east-1:123456789012:q",
        group_name: "g",
        cluster_arn: "arn:aws:ecs:us-east-1:123456789012:cluster/c",
        cluster_name: "c",
    }))?;
    assert_eq!(
        actions(section(&readme, "### Worker task role")),
        policy_actions(&task),
        "docs/aws.md's task role actions against plan::desired::task_policy"
    );

    // The execution role's inline policy, with every kind of secret and a key.
    let with_secrets = ecs_worker_operator::api::testing::spec_with(serde_json::json!({
        "secrets": [
            {"name": "A", "valueFrom": "arn:aws:secretsmanager:us-east-1:123456789012:secret:a-AbCdEf"},
            {"name": "B", "valueFrom": "arn:aws:ssm:us-east-1:123456789012:parameter/b"},
        ],
        "secretsKmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/k",
    }));
    let execution: serde_json::Value = serde_json::from_str(
        &desired::execution_policy(&with_secrets).expect("a policy with secrets"),
    )?;
    assert_eq!(
        actions(section(&readme, "### Task execution role")),
        policy_actions(&execution),
        "docs/aws.md's execution role actions against plan::desired::execution_policy"
    );

    for (heading, arn) in [
        (
            "### Container instance role",
            desired::instance_managed_policy("aws"),
        ),
        (
            "### Task execution role",
            desired::execution_managed_policy("aws"),
        ),
    ] {
        let name = arn.rsplit('/').next().unwrap_or_default();
        assert!(
            section(&readme, heading).contains(&format!("`{name}`")),
            "docs/aws.md's {heading} names {name}"
        );
    }
    Ok(())
}
