//! Per-team roles (`spec.credentials.roleArn`), with IAM enforced in moto
//! ([`Harness::strict`]): the operator's user gets what docs/cross-account.md tells a platform
//! team to grant (sts:AssumeRole and sts:TagSession on the team roles), each team role trusts
//! the operator's user and carries deploy/aws/operator-policy.json as its permissions.
//!
//! - A worker is provisioned entirely as the assumed role: every AWS call of the worker is
//!   signed by the role's session (named after the worker), and the session tags
//!   `ecsworker.dev/namespace` / `ecsworker.dev/name` are in the emulator's authorization
//!   record of the AssumeRole request (its sts:TagSession check).
//! - A role whose trust policy requires an external id the worker does not give is refused:
//!   Stalled with reason AccessDenied naming the role and the external id, and not one AWS
//!   call of the worker was made.

use crate::common::Harness;
use crate::common::worker_yaml;
use ecs_worker_operator::api::conditions;
use std::time::Duration;

const OPERATOR_POLICY: &str = include_str!("../../deploy/aws/operator-policy.json");

/// What a platform team grants the operator's identity: assume and tag sessions of the team
/// roles (here every role under the path `/teams/`).
async fn grant_operator(iam: &aws_sdk_iam::Client) -> anyhow::Result<()> {
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "AssumeTeamRoles",
            "Effect": "Allow",
            "Action": ["sts:AssumeRole", "sts:TagSession"],
            "Resource": "arn:aws:iam::*:role/teams/*"
        }]
    });
    iam.put_user_policy()
        .user_name(testbed::iam::OPERATOR_USER)
        .policy_name("assume-team-roles")
        .policy_document(policy.to_string())
        .send()
        .await?;
    Ok(())
}

/// A team role under `/teams/` trusting the operator's user (sts:AssumeRole and
/// sts:TagSession, optionally only with an external id), with the operator's policy.
async fn team_role(
    h: &Harness,
    iam: &aws_sdk_iam::Client,
    name: &str,
    external_id: Option<&str>,
) -> anyhow::Result<String> {
    let operator = &h.iam.as_ref().expect("strict harness").operator.arn;
    let mut assume = serde_json::json!({
        "Effect": "Allow",
        "Principal": { "AWS": operator },
        "Action": "sts:AssumeRole"
    });
    if let Some(id) = external_id {
        assume["Condition"] = serde_json::json!({ "StringEquals": { "sts:ExternalId": id } });
    }
    let trust = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            assume,
            {
                "Effect": "Allow",
                "Principal": { "AWS": operator },
                "Action": "sts:TagSession",
                // docs/cross-account.md: only the two tags, and only for this namespace.
                "Condition": {
                    "ForAllValues:StringEquals": {
                        "aws:TagKeys": ["ecsworker.dev/namespace", "ecsworker.dev/name"]
                    },
                    "StringEquals": { "aws:RequestTag/ecsworker.dev/namespace": h.ns }
                }
            }
        ]
    });
    let arn = iam
        .create_role()
        .role_name(name)
        .path("/teams/")
        .assume_role_policy_document(trust.to_string())
        .send()
        .await?
        .role()
        .map(|r| r.arn().to_string())
        .unwrap_or_default();
    iam.put_role_policy()
        .role_name(name)
        .policy_name("ecs-worker-operator")
        .policy_document(OPERATOR_POLICY)
        .send()
        .await?;
    Ok(arn)
}

#[tokio::test]
async fn a_worker_is_provisioned_through_an_assumed_role_with_session_tags() -> anyhow::Result<()> {
    let mut h = Harness::strict("assume-role").await?;
    let iam = aws_sdk_iam::Client::new(&h.sdk);
    grant_operator(&iam).await?;
    let role = team_role(&h, &iam, "team-a-workers", Some("team-a-7f3c")).await?;
    h.start_controller(Duration::from_secs(300));
    let name = "team-a";
    h.apply_yaml(&worker_yaml(
        name,
        &format!(
            "credentials:\n  roleArn: {role}\n  externalId: team-a-7f3c\n  sessionDurationSeconds: 900"
        ),
    ))
    .await?;
    let w = h.wait_ready(name).await?;
    let status = w.status.clone().unwrap_or_default();
    assert!(
        status.resources.queue_url.is_some(),
        "the queue exists: {status:?}"
    );

    let decisions = h.iam.as_ref().expect("strict").decisions().await?;
    let session = format!("assumed-role/team-a-workers/ecsworker.{}.{name}", h.ns);
    // The session tags, as STS received them with the AssumeRole request.
    let tagged = decisions.iter().find(|d| {
        d["action"] == "sts:TagSession"
            && d["resource"] == role.as_str()
            && d["principal"]
                .as_str()
                .is_some_and(|p| p.ends_with(":user/ecs-worker-operator"))
    });
    let tagged = tagged.unwrap_or_else(|| panic!("no sts:TagSession by the operator on {role}"));
    let ctx = &tagged["context"];
    assert_eq!(
        ctx["aws:requesttag/ecsworker.dev/namespace"],
        serde_json::json!([h.ns]),
        "{tagged}"
    );
    assert_eq!(
        ctx["aws:requesttag/ecsworker.dev/name"],
        serde_json::json!([name]),
        "{tagged}"
    );
    // Every call for the worker was signed by the role's session, none by the operator's user.
    let worker_calls: Vec<&serde_json::Value> = decisions
        .iter()
        .filter(|d| !d["operation"].as_str().unwrap_or("").starts_with("sts:"))
        .filter(|d| {
            d["principal"]
                .as_str()
                .is_some_and(|p| p.contains(":user/ecs-worker-operator") || p.contains(&session))
        })
        .collect();
    assert!(
        worker_calls
            .iter()
            .any(|d| d["operation"] == "sqs:CreateQueue"),
        "the queue was created: {worker_calls:?}"
    );
    for d in &worker_calls {
        assert!(
            d["principal"]
                .as_str()
                .is_some_and(|p| p.contains(&session)),
            "signed by the role's session {session}: {d}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_role_the_operator_cannot_assume_is_access_denied_naming_the_role() -> anyhow::Result<()>
{
    let mut h = Harness::strict("assume-denied").await?;
    let iam = aws_sdk_iam::Client::new(&h.sdk);
    grant_operator(&iam).await?;
    let role = team_role(&h, &iam, "team-b-workers", Some("team-b-secretless-id")).await?;
    h.start_controller(Duration::from_secs(300));
    let name = "team-b";
    // No externalId: the trust policy requires one.
    h.apply_yaml(&worker_yaml(
        name,
        &format!("credentials:\n  roleArn: {role}"),
    ))
    .await?;
    let w = h
        .wait_for(name, Duration::from_secs(60), "Stalled/AccessDenied", |w| {
            w.condition(conditions::STALLED)
                .is_some_and(|c| c.status == "True" && c.reason == "AccessDenied")
        })
        .await?;
    let message = w
        .condition(conditions::READY)
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(message.contains(&role), "names the role: {message}");
    assert!(
        message.contains("spec.credentials.externalId"),
        "names the external id requirement: {message}"
    );
    assert_eq!(
        h.aws_reads_writes(),
        (0, 0),
        "no AWS call of the worker was made"
    );
    let iam_bed = h.iam.clone().expect("strict");
    let denials = iam_bed.denials().await?;
    assert!(
        !denials.is_empty()
            && denials
                .iter()
                .all(|d| d.action == "sts:AssumeRole" && d.resource == role),
        "only the AssumeRole was refused: {denials:?}"
    );
    // The refusal is expected: it must not fail the test at its end.
    h.stop_controller().await;
    iam_bed.clear_denials().await?;
    Ok(())
}
