//! IAM enforced in the emulator (`python/moto_iam.py`, `testbed::iam`), through the real SDK
//! clients: resources are the ARNs AWS authorizes, condition keys come from the request and from
//! moto's state, the checks AWS adds on its own (iam:PassRole, tag-on-create) are made, an
//! explicit Deny wins, a call the emulator cannot map is refused unless the caller may do
//! anything, roles are assumed only by the services they trust, and every refusal is recorded
//! with principal, action and resource.

use aws_sdk_sqs::error::ProvideErrorMetadata;
use std::sync::Arc;
use testbed::Moto;
use testbed::iam::{Denial, Keys, Principals};

const OWNER_TAG: &str = "ecsworker.dev/managed-by";
const OWNER: &str = "ecs-worker-operator";

struct Bed {
    moto: Moto,
    iam: Arc<Principals>,
}

impl Bed {
    async fn start() -> anyhow::Result<Bed> {
        let moto = Moto::start().await?;
        let iam = Principals::enforce(moto.endpoint()).await?;
        Ok(Bed { moto, iam })
    }

    fn as_operator(&self) -> aws_config::SdkConfig {
        self.iam.operator.sdk_config(self.moto.endpoint())
    }

    fn as_admin(&self) -> aws_config::SdkConfig {
        self.iam.admin_sdk()
    }

    /// The refusals recorded since the last call, then forgotten.
    async fn take_denials(&self) -> anyhow::Result<Vec<Denial>> {
        let found = self.iam.denials().await?;
        self.iam.clear_denials().await?;
        Ok(found)
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        Principals::forget(self.moto.endpoint());
    }
}

fn code<E: ProvideErrorMetadata>(e: &aws_sdk_sqs::error::SdkError<E>) -> String {
    e.as_service_error()
        .and_then(|s| s.code())
        .unwrap_or("(not a service error)")
        .to_string()
}

/// Exactly one refusal, of `action` on a resource containing `resource`, by `principal`.
fn one_denial(found: &[Denial], principal: &Keys, action: &str, resource: &str) {
    assert_eq!(found.len(), 1, "{found:#?}");
    let d = &found[0];
    assert_eq!(d.principal, principal.arn, "{d}");
    assert_eq!(d.action, action, "{d}");
    assert!(d.resource.contains(resource), "{d}");
}

#[tokio::test]
async fn the_operator_may_create_its_own_queues_and_no_other() -> anyhow::Result<()> {
    let bed = Bed::start().await?;
    let sqs = aws_sdk_sqs::Client::new(&bed.as_operator());
    let url = sqs
        .create_queue()
        .queue_name("ecsw-team-a-resize")
        .tags(OWNER_TAG, OWNER)
        .send()
        .await?;
    assert!(url.queue_url().is_some());
    assert!(bed.take_denials().await?.is_empty());

    let refused = sqs
        .create_queue()
        .queue_name("payments")
        .send()
        .await
        .expect_err("the operator's policy names ecsw-* queues only");
    assert_eq!(code(&refused), "AccessDeniedException", "{refused:?}");
    let found = bed.take_denials().await?;
    one_denial(
        &found,
        &bed.iam.operator,
        "sqs:CreateQueue",
        ":sqs:us-east-1:123456789012:payments",
    );
    assert!(
        found[0]
            .reason
            .contains("no identity-based policy allows it")
    );
    Ok(())
}

#[tokio::test]
async fn request_tags_are_conditions_and_tagging_on_create_is_checked_too() -> anyhow::Result<()> {
    let bed = Bed::start().await?;
    let ecs = aws_sdk_ecs::Client::new(&bed.as_operator());
    let tag = |k: &str, v: &str| aws_sdk_ecs::types::Tag::builder().key(k).value(v).build();

    // Without the owner tag the create statement's aws:RequestTag condition does not hold.
    let refused = ecs
        .create_cluster()
        .cluster_name("ecsw-untagged")
        .send()
        .await
        .expect_err("CreateCluster needs the owner tag");
    assert_eq!(code(&refused), "AccessDeniedException");
    one_denial(
        &bed.take_denials().await?,
        &bed.iam.operator,
        "ecs:CreateCluster",
        "cluster/ecsw-untagged",
    );
    // Another value does not do either.
    ecs.create_cluster()
        .cluster_name("ecsw-other")
        .tags(tag(OWNER_TAG, "someone-else"))
        .send()
        .await
        .expect_err("the owner tag must say ecs-worker-operator");
    one_denial(
        &bed.take_denials().await?,
        &bed.iam.operator,
        "ecs:CreateCluster",
        "cluster/ecsw-other",
    );
    // With it, ecs:TagResource is checked as well, with ecs:CreateAction = CreateCluster.
    ecs.create_cluster()
        .cluster_name("ecsw-tagged")
        .tags(tag(OWNER_TAG, OWNER))
        .send()
        .await?;
    let decisions = bed.iam.decisions().await?;
    assert!(bed.take_denials().await?.is_empty());
    let tag_check = decisions
        .iter()
        .find(|d| d["operation"] == "ecs:CreateCluster" && d["action"] == "ecs:TagResource")
        .ok_or_else(|| anyhow::anyhow!("no ecs:TagResource check: {decisions:#?}"))?;
    assert_eq!(
        tag_check["context"]["ecs:createaction"],
        serde_json::json!(["CreateCluster"])
    );
    Ok(())
}

#[tokio::test]
async fn resource_tags_come_from_the_resource_itself() -> anyhow::Result<()> {
    let bed = Bed::start().await?;
    let admin = aws_sdk_ec2::Client::new(&bed.as_admin());
    let vpc = admin
        .describe_vpcs()
        .send()
        .await?
        .vpcs()
        .first()
        .and_then(|v| v.vpc_id())
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("no default VPC"))?;
    let create = |name: &'static str, owned: bool| {
        let admin = admin.clone();
        let vpc = vpc.clone();
        async move {
            let mut req = admin
                .create_security_group()
                .group_name(name)
                .description("test")
                .vpc_id(vpc);
            if owned {
                req = req.tag_specifications(
                    aws_sdk_ec2::types::TagSpecification::builder()
                        .resource_type(aws_sdk_ec2::types::ResourceType::SecurityGroup)
                        .tags(
                            aws_sdk_ec2::types::Tag::builder()
                                .key(OWNER_TAG)
                                .value(OWNER)
                                .build(),
                        )
                        .build(),
                );
            }
            anyhow::Ok(req.send().await?.group_id().unwrap_or_default().to_string())
        }
    };
    let foreign = create("someone-elses", false).await?;
    let owned = create("ecsw-owned", true).await?;
    let ec2 = aws_sdk_ec2::Client::new(&bed.as_operator());
    let refused = ec2
        .delete_security_group()
        .group_id(&foreign)
        .send()
        .await
        .expect_err("an untagged group is not the operator's");
    assert_eq!(code(&refused), "UnauthorizedOperation", "{refused:?}");
    one_denial(
        &bed.take_denials().await?,
        &bed.iam.operator,
        "ec2:DeleteSecurityGroup",
        &format!("security-group/{foreign}"),
    );
    ec2.delete_security_group().group_id(&owned).send().await?;
    assert!(bed.take_denials().await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn run_task_checks_pass_role_for_the_roles_of_the_definition() -> anyhow::Result<()> {
    let bed = Bed::start().await?;
    let admin = bed.as_admin();
    let trust = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}]
    })
    .to_string();
    let role = aws_sdk_iam::Client::new(&admin)
        .create_role()
        .role_name("payments-admin")
        .assume_role_policy_document(&trust)
        .send()
        .await?
        .role()
        .map(|r| r.arn().to_string())
        .unwrap_or_default();
    let ecs_admin = aws_sdk_ecs::Client::new(&admin);
    ecs_admin
        .create_cluster()
        .cluster_name("ecsw-c")
        .send()
        .await?;
    ecs_admin
        .register_task_definition()
        .family("ecsw-f")
        .task_role_arn(&role)
        .container_definitions(
            aws_sdk_ecs::types::ContainerDefinition::builder()
                .name("worker")
                .image("worker:1")
                .memory_reservation(64)
                .build(),
        )
        .send()
        .await?;
    let refused = aws_sdk_ecs::Client::new(&bed.as_operator())
        .run_task()
        .cluster("ecsw-c")
        .task_definition("ecsw-f")
        .send()
        .await
        .expect_err("the operator may pass only ecsw-* roles");
    assert_eq!(code(&refused), "AccessDeniedException", "{refused:?}");
    let found = bed.take_denials().await?;
    one_denial(&found, &bed.iam.operator, "iam:PassRole", &role);
    assert_eq!(found[0].operation, "ecs:RunTask");
    assert!(
        found[0].context.contains("ecs-tasks.amazonaws.com"),
        "{}",
        found[0]
    );
    Ok(())
}

#[tokio::test]
async fn an_explicit_deny_wins_over_any_allow() -> anyhow::Result<()> {
    let bed = Bed::start().await?;
    // A role whose policy allows everything on the queue but denies deleting it, assumed as
    // the service it trusts.
    let iam = aws_sdk_iam::Client::new(&bed.as_admin());
    let trust = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}]
    });
    let arn = iam
        .create_role()
        .role_name("queue-keeper")
        .assume_role_policy_document(trust.to_string())
        .send()
        .await?
        .role()
        .map(|r| r.arn().to_string())
        .unwrap_or_default();
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "Everything", "Effect": "Allow", "Action": "sqs:*", "Resource": "*"},
            {"Sid": "NeverDelete", "Effect": "Deny", "Action": "sqs:DeleteQueue", "Resource": "arn:aws:sqs:*:*:kept"}
        ]
    });
    iam.put_role_policy()
        .role_name("queue-keeper")
        .policy_name("queues")
        .policy_document(policy.to_string())
        .send()
        .await?;
    let keys = bed.iam.task_role(&arn).await?;
    let sqs = aws_sdk_sqs::Client::new(&keys.sdk_config(bed.moto.endpoint()));
    let kept = sqs.create_queue().queue_name("kept").send().await?;
    let other = sqs.create_queue().queue_name("other").send().await?;
    sqs.delete_queue()
        .queue_url(other.queue_url().unwrap_or_default())
        .send()
        .await?;
    sqs.delete_queue()
        .queue_url(kept.queue_url().unwrap_or_default())
        .send()
        .await
        .expect_err("denied explicitly");
    let found = bed.take_denials().await?;
    one_denial(&found, &keys, "sqs:DeleteQueue", ":kept");
    assert!(
        found[0].reason.contains("explicitly denied") && found[0].reason.contains("NeverDelete"),
        "{}",
        found[0]
    );
    // The session is the role's, as ECS gives it to a task.
    assert!(keys.arn.contains(":assumed-role/queue-keeper/"), "{keys:?}");
    Ok(())
}

#[tokio::test]
async fn roles_are_assumed_only_by_the_services_they_trust() -> anyhow::Result<()> {
    let bed = Bed::start().await?;
    let iam = aws_sdk_iam::Client::new(&bed.as_admin());
    let trust = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]
    });
    let arn = iam
        .create_role()
        .role_name("instance-only")
        .assume_role_policy_document(trust.to_string())
        .send()
        .await?
        .role()
        .map(|r| r.arn().to_string())
        .unwrap_or_default();
    let err = bed
        .iam
        .task_role(&arn)
        .await
        .expect_err("ECS may not assume a role that trusts EC2 only");
    assert!(err.to_string().contains("does not allow"), "{err}");
    let found = bed.take_denials().await?;
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].principal, "ecs-tasks.amazonaws.com");
    assert_eq!(found[0].action, "sts:AssumeRole");

    iam.create_instance_profile()
        .instance_profile_name("instance-only")
        .send()
        .await?;
    iam.add_role_to_instance_profile()
        .instance_profile_name("instance-only")
        .role_name("instance-only")
        .send()
        .await?;
    let profile = format!(
        "arn:aws:iam::{}:instance-profile/instance-only",
        testbed::moto::ACCOUNT_ID
    );
    let keys = bed.iam.instance_profile_role(&profile).await?;
    assert!(
        keys.arn.contains(":assumed-role/instance-only/"),
        "{keys:?}"
    );
    // The role has no policy: the session authenticates and may do nothing.
    aws_sdk_sqs::Client::new(&keys.sdk_config(bed.moto.endpoint()))
        .list_queues()
        .send()
        .await
        .expect_err("a role without policies may do nothing");
    one_denial(&bed.take_denials().await?, &keys, "sqs:ListQueues", "*");
    Ok(())
}

/// A user assuming a role (the operator's per-team roles, docs/cross-account.md): the trust
/// policy's sts:ExternalId condition is evaluated, and session tags need sts:TagSession in the
/// trust policy too, checked with aws:RequestTag and recorded in the decisions.
#[tokio::test]
async fn assume_role_checks_the_external_id_and_session_tags_against_the_trust_policy()
-> anyhow::Result<()> {
    let bed = Bed::start().await?;
    let iam = aws_sdk_iam::Client::new(&bed.as_admin());
    let operator = bed.iam.operator.arn.clone();
    iam.put_user_policy()
        .user_name(testbed::iam::OPERATOR_USER)
        .policy_name("assume")
        .policy_document(
            serde_json::json!({
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": ["sts:AssumeRole", "sts:TagSession"], "Resource": "*"}]
            })
            .to_string(),
        )
        .send()
        .await?;
    let assume = serde_json::json!({
        "Effect": "Allow",
        "Principal": {"AWS": operator},
        "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"sts:ExternalId": "right-id"}}
    });
    let arn = iam
        .create_role()
        .role_name("team")
        .assume_role_policy_document(
            serde_json::json!({"Version": "2012-10-17", "Statement": [assume.clone()]}).to_string(),
        )
        .send()
        .await?
        .role()
        .map(|r| r.arn().to_string())
        .unwrap_or_default();
    let sts = aws_sdk_sts::Client::new(&bed.as_operator());
    let attempt = |external_id: Option<&str>, tag: Option<&str>| {
        let mut req = sts
            .assume_role()
            .role_arn(&arn)
            .role_session_name("ecsworker.ns.w")
            .set_external_id(external_id.map(str::to_string));
        if let Some(value) = tag {
            req = req.tags(
                aws_sdk_sts::types::Tag::builder()
                    .key("ecsworker.dev/namespace")
                    .value(value)
                    .build()
                    .expect("key and value"),
            );
        }
        req.send()
    };
    for wrong in [None, Some("wrong-id")] {
        let e = attempt(wrong, None)
            .await
            .expect_err("the external id is required");
        assert_eq!(
            e.as_service_error().and_then(|s| s.code()),
            Some("AccessDenied")
        );
        one_denial(
            &bed.take_denials().await?,
            &bed.iam.operator,
            "sts:AssumeRole",
            &arn,
        );
    }
    attempt(Some("right-id"), None).await?;
    // Session tags: the trust policy does not allow sts:TagSession yet.
    attempt(Some("right-id"), Some("ns"))
        .await
        .expect_err("tags need sts:TagSession in the trust policy");
    one_denial(
        &bed.take_denials().await?,
        &bed.iam.operator,
        "sts:TagSession",
        &arn,
    );
    let tag_session = serde_json::json!({
        "Effect": "Allow",
        "Principal": {"AWS": operator},
        "Action": "sts:TagSession",
        "Condition": {"StringEquals": {"aws:RequestTag/ecsworker.dev/namespace": "ns"}}
    });
    iam.update_assume_role_policy()
        .role_name("team")
        .policy_document(
            serde_json::json!({"Version": "2012-10-17", "Statement": [assume, tag_session]})
                .to_string(),
        )
        .send()
        .await?;
    attempt(Some("right-id"), Some("other-ns"))
        .await
        .expect_err("the trust policy's tag condition holds for ns only");
    one_denial(
        &bed.take_denials().await?,
        &bed.iam.operator,
        "sts:TagSession",
        &arn,
    );
    let session = attempt(Some("right-id"), Some("ns")).await?;
    assert!(
        session
            .assumed_role_user()
            .is_some_and(|u| u.arn().ends_with(":assumed-role/team/ecsworker.ns.w")),
        "{session:?}"
    );
    let decisions = bed.iam.decisions().await?;
    assert!(
        decisions.iter().any(|d| d["action"] == "sts:TagSession"
            && d["context"]["aws:requesttag/ecsworker.dev/namespace"] == serde_json::json!(["ns"])),
        "the session tag is recorded: {decisions:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_call_the_emulator_cannot_map_fails_loudly_except_for_the_admin() -> anyhow::Result<()> {
    let bed = Bed::start().await?;
    aws_sdk_ec2::Client::new(&bed.as_operator())
        .describe_key_pairs()
        .send()
        .await
        .expect_err("not in moto_iam.py's table");
    let found = bed.take_denials().await?;
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0]
            .reason
            .contains("no resource mapping for ec2:DescribeKeyPairs"),
        "{}",
        found[0]
    );
    aws_sdk_ec2::Client::new(&bed.as_admin())
        .describe_key_pairs()
        .send()
        .await?;
    assert!(bed.take_denials().await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn once_enforced_unknown_keys_are_refused() -> anyhow::Result<()> {
    let bed = Bed::start().await?;
    let err = aws_sdk_sqs::Client::new(&testbed::moto::sdk_config_for(bed.moto.endpoint()))
        .list_queues()
        .send()
        .await
        .expect_err("dummy keys belong to no principal");
    assert!(!code(&err).is_empty());
    let found = bed.take_denials().await?;
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].principal.starts_with("access key ")
            && found[0].reason.contains("authentication failed"),
        "{}",
        found[0]
    );
    Ok(())
}

#[test]
fn the_evaluator_follows_aws_policy_evaluation_logic() -> anyhow::Result<()> {
    testbed::iam::evaluator_unit_tests()
}
