//! Static check of every IAM policy the project writes or asks for, where evaluating requests
//! cannot judge it: the operator's own policy (`deploy/aws/operator-policy.json`), the task
//! role policy the operator writes for each worker (in each partition), the trust policies of
//! the roles it creates, and the table of calls the emulator evaluates
//! (`tests/support/python/moto_iam.py`). parliament checks each against AWS's Service
//! Authorization Reference; see `testbed::iam::check_policies`.

use ecs_worker_operator::plan::desired::{self, Names};
use testbed::iam::{Finding, PolicyDoc, check_emulator_actions, check_policies};

fn errors(found: &[Finding]) -> Vec<String> {
    found
        .iter()
        .filter(|f| f.error)
        .map(Finding::to_string)
        .collect()
}

fn operator_policy() -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::from_str(&std::fs::read_to_string(
        testbed::repo_root().join("deploy/aws/operator-policy.json"),
    )?)?)
}

/// The policies the operator writes, for one worker in one region.
fn written_policies(region: &str) -> anyhow::Result<Vec<PolicyDoc>> {
    let names = Names::new("team-a", "resize");
    let partition = desired::partition(region);
    let account = testbed::moto::ACCOUNT_ID;
    let queue_arn = format!("arn:{partition}:sqs:{region}:{account}:{}", names.queue);
    let cluster_arn = format!(
        "arn:{partition}:ecs:{region}:{account}:cluster/{}",
        names.cluster
    );
    let task = desired::task_policy(&desired::TaskPolicyInputs {
        partition,
        region,
        queue_arn: &queue_arn,
        group_name: &names.auto_scaling_group,
        cluster_arn: &cluster_arn,
        cluster_name: &names.cluster,
    });
    let mut docs = vec![PolicyDoc {
        name: format!("task role policy ({region})"),
        trust: false,
        document: serde_json::from_str(&task)?,
    }];
    for service in ["ec2.amazonaws.com", "ecs-tasks.amazonaws.com"] {
        docs.push(PolicyDoc {
            name: format!("trust policy ({service})"),
            trust: true,
            document: serde_json::from_str(&desired::trust_policy(service))?,
        });
    }
    Ok(docs)
}

#[test]
fn operator_and_role_policies_name_real_actions_resource_types_and_condition_keys()
-> anyhow::Result<()> {
    let mut docs = vec![PolicyDoc {
        name: "deploy/aws/operator-policy.json".into(),
        trust: false,
        document: operator_policy()?,
    }];
    for region in ["us-east-1", "cn-north-1", "us-gov-west-1"] {
        docs.extend(written_policies(region)?);
    }
    let found = check_policies(&docs)?;
    let errors = errors(&found);
    assert!(
        errors.is_empty(),
        "policies AWS would not apply as written:\n  - {}",
        errors.join("\n  - ")
    );
    Ok(())
}

#[test]
fn the_static_check_refuses_what_it_is_for() -> anyhow::Result<()> {
    // One statement per kind of mistake, each of which IAM accepts but never applies as meant.
    let bad = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "UnknownAction", "Effect": "Allow", "Action": "ecs:RunTasks", "Resource": "*"},
            {"Sid": "KeyOfAnotherService", "Effect": "Allow", "Action": "sqs:GetQueueUrl", "Resource": "*",
             "Condition": {"StringEquals": {"ecs:cluster": "x"}}},
            {"Sid": "RequestTagOnDelete", "Effect": "Allow", "Action": "ec2:DeleteVpc", "Resource": "arn:aws:ec2:*:*:vpc/*",
             "Condition": {"StringEquals": {"aws:RequestTag/owner": "me"}}},
            {"Sid": "TagKeysWithoutSetOperator", "Effect": "Allow", "Action": "ecs:TagResource", "Resource": "*",
             "Condition": {"StringEquals": {"aws:TagKeys": "owner"}}},
            {"Sid": "WrongResourceType", "Effect": "Allow", "Action": "sqs:DeleteQueue", "Resource": "arn:aws:ecs:*:*:cluster/x"},
            {"Sid": "MalformedArn", "Effect": "Allow", "Action": "sqs:DeleteQueue", "Resource": "arn:aws:sqs:queue"}
        ]
    });
    let trust = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "ecs-tasks"}, "Action": "sts:AssumeRole", "Resource": "*"}]
    });
    let found = check_policies(&[
        PolicyDoc {
            name: "bad".into(),
            trust: false,
            document: bad,
        },
        PolicyDoc {
            name: "bad trust".into(),
            trust: true,
            document: trust,
        },
    ])?;
    let issues: Vec<(&str, &str)> = found
        .iter()
        .filter(|f| f.error)
        .map(|f| (f.policy.as_str(), f.issue.as_str()))
        .collect();
    for want in [
        ("bad", "UNKNOWN_ACTION"),
        ("bad", "UNKNOWN_CONDITION_FOR_ACTION"),
        ("bad", "TAG_KEY_NOT_FOR_ACTION"),
        ("bad", "MULTIVALUED_KEY_WITHOUT_SET_OPERATOR"),
        ("bad", "RESOURCE_MISMATCH"),
        ("bad", "INVALID_ARN"),
        ("bad trust", "TRUST_POLICY"),
    ] {
        assert!(issues.contains(&want), "{want:?} not found in {found:#?}");
    }
    Ok(())
}

#[test]
fn every_action_the_emulator_evaluates_exists() -> anyhow::Result<()> {
    let errors = errors(&check_emulator_actions()?);
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    Ok(())
}

#[test]
fn the_operator_may_attach_exactly_the_managed_policies_its_roles_use() -> anyhow::Result<()> {
    let policy = operator_policy()?;
    let statements = policy["Statement"].as_array().cloned().unwrap_or_default();
    let attach = statements
        .iter()
        .find(|s| {
            s["Action"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == "iam:AttachRolePolicy"))
        })
        .ok_or_else(|| anyhow::anyhow!("no statement allows iam:AttachRolePolicy"))?;
    let mut allowed: Vec<String> = attach["Condition"]["ArnEquals"]["iam:PolicyARN"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    allowed.sort();
    let mut used = vec![
        desired::instance_managed_policy("aws"),
        desired::execution_managed_policy("aws"),
    ];
    used.sort();
    assert_eq!(allowed, used);
    Ok(())
}
