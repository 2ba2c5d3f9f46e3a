//! The test bed's strict emulation of AWS's request rules (`python/moto_models.py`) and of ECS
//! RunTask's `clientToken` (`python/moto_ecs_tokens.py`), through the real SDK clients: each
//! rule refuses a request that breaks it with the service's validation error, naming the member
//! and the limit, and records it; the same request at the limit passes and records nothing.

use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use std::fmt::Debug;
use testbed::Moto;

struct Aws {
    moto: Moto,
    ecs: aws_sdk_ecs::Client,
    ec2: aws_sdk_ec2::Client,
    asg: aws_sdk_autoscaling::Client,
    sqs: aws_sdk_sqs::Client,
    iam: aws_sdk_iam::Client,
    logs: aws_sdk_cloudwatchlogs::Client,
    ssm: aws_sdk_ssm::Client,
}

impl Aws {
    async fn start() -> anyhow::Result<Aws> {
        let moto = Moto::start().await?;
        let config = moto.sdk_config().await;
        Ok(Aws {
            ecs: aws_sdk_ecs::Client::new(&config),
            ec2: aws_sdk_ec2::Client::new(&config),
            asg: aws_sdk_autoscaling::Client::new(&config),
            sqs: aws_sdk_sqs::Client::new(&config),
            iam: aws_sdk_iam::Client::new(&config),
            logs: aws_sdk_cloudwatchlogs::Client::new(&config),
            ssm: aws_sdk_ssm::Client::new(&config),
            moto,
        })
    }

    /// The call was refused with `code`, its message names `member` and `constraint`, and
    /// exactly that one violation was recorded.
    async fn refused<T: Debug, E: ProvideErrorMetadata + Debug, R: Debug>(
        &self,
        what: &str,
        result: Result<T, SdkError<E, R>>,
        code: &str,
        member: &str,
        constraint: &str,
    ) -> anyhow::Result<()> {
        let err = match result {
            Ok(out) => anyhow::bail!("{what}: accepted, AWS refuses it: {out:?}"),
            Err(e) => e,
        };
        anyhow::ensure!(
            err.code() == Some(code),
            "{what}: answered {:?} ({:?}), not {code}",
            err.code(),
            err.message()
        );
        let message = err.message().unwrap_or_default();
        anyhow::ensure!(
            message.contains(&format!("at '{member}'")) && message.contains(constraint),
            "{what}: the message does not name {member} and {constraint:?}: {message}"
        );
        let found = self.moto.violations().await?;
        self.moto.clear_violations().await?;
        anyhow::ensure!(
            found.len() == 1
                && found[0].member == member
                && found[0].constraint.contains(constraint)
                && found[0].code == code
                && !found[0].source.is_empty(),
            "{what}: recorded {}",
            testbed::moto::describe_violations(&found)
        );
        Ok(())
    }

    /// The call succeeded and nothing was recorded.
    async fn accepted<T, E: ProvideErrorMetadata + Debug, R: Debug>(
        &self,
        what: &str,
        result: Result<T, SdkError<E, R>>,
    ) -> anyhow::Result<T> {
        let out = result.map_err(|e| anyhow::anyhow!("{what}: refused: {:?}", e.message()))?;
        let found = self.moto.violations().await?;
        anyhow::ensure!(
            found.is_empty(),
            "{what}: {}",
            testbed::moto::describe_violations(&found)
        );
        Ok(out)
    }

    /// A query-protocol request the SDKs would not send (a required member left out), signed
    /// with a dummy SigV4 header so the server routes it: (status, body).
    async fn raw_query(&self, service: &str, body: &str) -> anyhow::Result<(u16, String)> {
        let resp = reqwest::Client::new()
            .post(self.moto.endpoint())
            .header(
                "Content-Type",
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .header(
                "Authorization",
                format!(
                    "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0"
                ),
            )
            .body(body.to_string())
            .send()
            .await?;
        Ok((resp.status().as_u16(), resp.text().await?))
    }
}

fn ecs_tag(key: &str, value: &str) -> aws_sdk_ecs::types::Tag {
    aws_sdk_ecs::types::Tag::builder()
        .key(key)
        .value(value)
        .build()
}

fn ec2_tags(n: usize, value: &str) -> aws_sdk_ec2::types::TagSpecification {
    let mut spec = aws_sdk_ec2::types::TagSpecification::builder()
        .resource_type(aws_sdk_ec2::types::ResourceType::LaunchTemplate);
    for i in 0..n {
        spec = spec.tags(
            aws_sdk_ec2::types::Tag::builder()
                .key(format!("k{i}"))
                .value(value)
                .build(),
        );
    }
    spec.build()
}

fn template_data(ami: &str) -> aws_sdk_ec2::types::RequestLaunchTemplateData {
    aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
        .image_id(ami)
        .instance_type("t3.micro".into())
        .build()
}

async fn ami(aws: &Aws) -> anyhow::Result<String> {
    let out = aws
        .ssm
        .get_parameter()
        .name("/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id")
        .send()
        .await?;
    Ok(out
        .parameter()
        .and_then(|p| p.value())
        .expect("ami")
        .to_string())
}

fn asg_tag(key: &str, value: &str) -> aws_sdk_autoscaling::types::Tag {
    aws_sdk_autoscaling::types::Tag::builder()
        .resource_id("g")
        .resource_type("auto-scaling-group")
        .key(key)
        .value(value)
        .propagate_at_launch(true)
        .build()
}

fn iam_tag(key: &str, value: &str) -> anyhow::Result<aws_sdk_iam::types::Tag> {
    Ok(aws_sdk_iam::types::Tag::builder()
        .key(key)
        .value(value)
        .build()?)
}

/// A launch template, a group of `instances` with that many instances registered to cluster
/// `c`, and task family `f` (memory reservation only, as the operator registers it).
async fn ecs_with_instances(aws: &Aws, instances: i32) -> anyhow::Result<()> {
    let ami = ami(aws).await?;
    aws.ec2
        .create_launch_template()
        .launch_template_name("lt-strict")
        .launch_template_data(template_data(&ami))
        .send()
        .await?;
    aws.asg
        .create_auto_scaling_group()
        .auto_scaling_group_name("g")
        .launch_template(
            aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                .launch_template_name("lt-strict")
                .version("$Latest")
                .build(),
        )
        .min_size(0)
        .max_size(instances)
        .desired_capacity(instances)
        .availability_zones("us-east-1a")
        .send()
        .await?;
    aws.ecs.create_cluster().cluster_name("c").send().await?;
    let config = aws.moto.sdk_config().await;
    testbed::agent::Agent::new(&config, "c", "g").sync().await?;
    aws.ecs
        .register_task_definition()
        .family("f")
        .container_definitions(
            aws_sdk_ecs::types::ContainerDefinition::builder()
                .name("worker")
                .image("w")
                .memory_reservation(64)
                .build(),
        )
        .send()
        .await?;
    Ok(())
}

#[tokio::test]
async fn ecs_requests_are_checked_against_the_model_and_the_documented_limits() -> anyhow::Result<()>
{
    let aws = Aws::start().await?;
    let ecs = &aws.ecs;
    const BAD: &str = "InvalidParameterException";

    // Cluster name: 255 letters, numbers, underscores, hyphens.
    aws.accepted(
        "cluster name of 255",
        ecs.create_cluster()
            .cluster_name("c".repeat(255))
            .send()
            .await,
    )
    .await?;
    aws.refused(
        "cluster name of 256",
        ecs.create_cluster()
            .cluster_name("c".repeat(256))
            .send()
            .await,
        BAD,
        "clusterName",
        "less than or equal to 255",
    )
    .await?;
    aws.refused(
        "cluster name with a dot",
        ecs.create_cluster().cluster_name("a.b").send().await,
        BAD,
        "clusterName",
        "regular expression pattern",
    )
    .await?;

    // Tags (model): 50, values 256; the aws: prefix, keys and values.
    let mut fifty: Vec<_> = (0..49).map(|i| ecs_tag(&format!("k{i}"), "v")).collect();
    fifty.push(ecs_tag("long", &"v".repeat(256)));
    aws.accepted(
        "50 tags, a value of 256",
        ecs.create_cluster()
            .cluster_name("tagged")
            .set_tags(Some(fifty.clone()))
            .send()
            .await,
    )
    .await?;
    aws.refused(
        "51 tags",
        ecs.create_cluster()
            .cluster_name("tagged")
            .set_tags(Some(fifty))
            .tags(ecs_tag("k50", "v"))
            .send()
            .await,
        BAD,
        "tags",
        "less than or equal to 50",
    )
    .await?;
    aws.refused(
        "tag value of 257",
        ecs.create_cluster()
            .cluster_name("tagged")
            .tags(ecs_tag("k", &"v".repeat(257)))
            .send()
            .await,
        BAD,
        "tags.1.member.value",
        "less than or equal to 256",
    )
    .await?;
    aws.refused(
        "aws: tag key",
        ecs.create_cluster()
            .cluster_name("tagged")
            .tags(ecs_tag("AWS:owner", "v"))
            .send()
            .await,
        BAD,
        "tags.1.member.key",
        "reserved prefix aws:",
    )
    .await?;
    aws.refused(
        "aws: tag value",
        ecs.create_cluster()
            .cluster_name("tagged")
            .tags(ecs_tag("owner", "aws:x"))
            .send()
            .await,
        BAD,
        "tags.1.member.value",
        "reserved prefix aws:",
    )
    .await?;
    aws.refused(
        "tag key with a comma (model pattern)",
        ecs.create_cluster()
            .cluster_name("tagged")
            .tags(ecs_tag("a,b", "v"))
            .send()
            .await,
        BAD,
        "tags.1.member.key",
        "regular expression pattern",
    )
    .await?;

    // Task family and container names: 255 letters, numbers, underscores, hyphens.
    let container = |name: &str| {
        aws_sdk_ecs::types::ContainerDefinition::builder()
            .name(name)
            .image("w")
            .memory_reservation(64)
            .build()
    };
    aws.refused(
        "family of 256",
        ecs.register_task_definition()
            .family("f".repeat(256))
            .container_definitions(container("worker"))
            .send()
            .await,
        BAD,
        "family",
        "less than or equal to 255",
    )
    .await?;
    aws.refused(
        "container name with a space",
        ecs.register_task_definition()
            .family("f")
            .container_definitions(container("my worker"))
            .send()
            .await,
        BAD,
        "containerDefinitions.1.member.name",
        "regular expression pattern",
    )
    .await?;
    aws.refused(
        "an unknown network mode (model enum)",
        ecs.register_task_definition()
            .family("f")
            .network_mode("mesh".into())
            .container_definitions(container("worker"))
            .send()
            .await,
        BAD,
        "networkMode",
        "enum value set",
    )
    .await?;

    // RunTask: count 1-10, startedBy 128 of [a-zA-Z0-9/_-], clientToken 64 of ASCII 33-126,
    // overrides 8192 characters as JSON. Validation comes before placement, so no instance is
    // needed to see a refusal.
    let run = || ecs.run_task().cluster("c").task_definition("f");
    aws.refused(
        "count 11",
        run().count(11).send().await,
        BAD,
        "count",
        "less than or equal to 10",
    )
    .await?;
    aws.refused(
        "count 0",
        run().count(0).send().await,
        BAD,
        "count",
        "greater than or equal to 1",
    )
    .await?;
    aws.refused(
        "startedBy of 129",
        run().started_by("s".repeat(129)).send().await,
        BAD,
        "startedBy",
        "less than or equal to 128",
    )
    .await?;
    aws.refused(
        "startedBy with a colon",
        run().started_by("run:1").send().await,
        BAD,
        "startedBy",
        "regular expression pattern",
    )
    .await?;
    aws.refused(
        "StartTask startedBy of 37",
        ecs.start_task()
            .cluster("c")
            .task_definition("f")
            .container_instances("i")
            .started_by("s".repeat(37))
            .send()
            .await,
        BAD,
        "startedBy",
        "less than or equal to 36",
    )
    .await?;
    aws.refused(
        "clientToken of 65",
        run().client_token("t".repeat(65)).send().await,
        BAD,
        "clientToken",
        "less than or equal to 64",
    )
    .await?;
    aws.refused(
        "clientToken with a space",
        run().client_token("a b").send().await,
        BAD,
        "clientToken",
        "regular expression pattern",
    )
    .await?;
    let overrides = |value_len: usize| {
        aws_sdk_ecs::types::TaskOverride::builder()
            .container_overrides(
                aws_sdk_ecs::types::ContainerOverride::builder()
                    .name("worker")
                    .environment(
                        aws_sdk_ecs::types::KeyValuePair::builder()
                            .name("X")
                            .value("v".repeat(value_len))
                            .build(),
                    )
                    .build(),
            )
            .build()
    };
    aws.refused(
        "overrides of 8,193 characters",
        run().overrides(overrides(8192)).send().await,
        BAD,
        "overrides",
        "less than or equal to 8192",
    )
    .await?;

    // At the limits, with instances to place on.
    ecs_with_instances(&aws, 10).await?;
    let out = aws
        .accepted(
            "count 10, startedBy of 128, clientToken of 64, overrides of 8,192",
            run()
                .count(10)
                .started_by("s/_-".repeat(32))
                .client_token("~".repeat(64))
                .overrides(overrides(8192 - 82))
                .send()
                .await,
        )
        .await?;
    assert_eq!(out.tasks().len(), 10);
    Ok(())
}

#[tokio::test]
async fn run_task_client_tokens_behave_as_on_aws() -> anyhow::Result<()> {
    let aws = Aws::start().await?;
    ecs_with_instances(&aws, 4).await?;
    let ecs = &aws.ecs;
    let run = |count: i32, token: &str| {
        ecs.run_task()
            .cluster("c")
            .task_definition("f")
            .count(count)
            .started_by("run-1")
            .client_token(token)
            .send()
    };
    let arns = |out: &aws_sdk_ecs::operation::run_task::RunTaskOutput| {
        let mut arns: Vec<String> = out
            .tasks()
            .iter()
            .filter_map(|t| t.task_arn().map(str::to_string))
            .collect();
        arns.sort();
        arns
    };
    let listed = || async {
        anyhow::Ok(
            ecs.list_tasks()
                .cluster("c")
                .send()
                .await?
                .task_arns()
                .len(),
        )
    };

    let first = run(2, "token-a").await?;
    assert_eq!(first.tasks().len(), 2);
    // Same token, same parameters: the first result, nothing started.
    let again = run(2, "token-a").await?;
    assert_eq!(arns(&again), arns(&first));
    assert_eq!(listed().await?, 2);
    // Same token, another count: ConflictException naming the tasks the token started.
    match run(1, "token-a").await {
        Ok(out) => anyhow::bail!("a reused token with another count was accepted: {out:?}"),
        Err(e) => {
            assert_eq!(e.code(), Some("ConflictException"), "{e:?}");
            match e.into_service_error() {
                aws_sdk_ecs::operation::run_task::RunTaskError::ConflictException(c) => {
                    let mut ids = c.resource_ids().to_vec();
                    ids.sort();
                    assert_eq!(ids, arns(&first));
                }
                other => anyhow::bail!("not a ConflictException: {other:?}"),
            }
        }
    }
    assert_eq!(listed().await?, 2);
    // A new token starts a new set.
    let second = run(2, "token-b").await?;
    assert_eq!(second.tasks().len(), 2);
    assert_eq!(listed().await?, 4);
    // Tokens belong to their cluster: the same token in another cluster is another request.
    ecs.create_cluster().cluster_name("other").send().await?;
    let elsewhere = ecs
        .run_task()
        .cluster("other")
        .task_definition("f")
        .count(1)
        .started_by("run-1")
        .client_token("token-a")
        .send()
        .await;
    assert!(
        !matches!(&elsewhere, Err(e) if e.code() == Some("ConflictException")),
        "a token of cluster c conflicted in cluster other: {elsewhere:?}"
    );
    // Without a token of the caller's, the SDK makes one per call: two calls, two tasks.
    ecs.run_task()
        .cluster("c")
        .task_definition("f")
        .send()
        .await?;
    ecs.run_task()
        .cluster("c")
        .task_definition("f")
        .send()
        .await?;
    assert_eq!(listed().await?, 6);
    // A reset forgets the tokens with the tasks.
    aws.moto.reset().await?;
    ecs_with_instances(&aws, 2).await?;
    assert_eq!(run(1, "token-a").await?.tasks().len(), 1);
    anyhow::ensure!(aws.moto.violations().await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn ec2_requests_are_checked_against_the_documented_limits() -> anyhow::Result<()> {
    let aws = Aws::start().await?;
    let ec2 = &aws.ec2;
    const BAD: &str = "InvalidParameterValue";
    let ami = ami(&aws).await?;
    let template = |name: &str| {
        ec2.create_launch_template()
            .launch_template_name(name)
            .launch_template_data(template_data(&ami))
    };

    aws.accepted(
        "name of 3, 50 tags, value of 256",
        template("a(1")
            .tag_specifications(ec2_tags(50, &"v".repeat(256)))
            .send()
            .await,
    )
    .await?;
    aws.accepted("name of 128", template(&"n".repeat(128)).send().await)
        .await?;
    aws.refused(
        "name of 2",
        template("ab").send().await,
        BAD,
        "launchTemplateName",
        "greater than or equal to 3",
    )
    .await?;
    aws.refused(
        "name of 129",
        template(&"n".repeat(129)).send().await,
        BAD,
        "launchTemplateName",
        "less than or equal to 128",
    )
    .await?;
    aws.refused(
        "name with a space",
        template("my template").send().await,
        BAD,
        "launchTemplateName",
        "regular expression pattern",
    )
    .await?;
    aws.refused(
        "51 tags",
        template("t51")
            .tag_specifications(ec2_tags(51, "v"))
            .send()
            .await,
        BAD,
        "tagSpecifications.1.member.tags",
        "less than or equal to 50",
    )
    .await?;
    aws.refused(
        "tag value of 257",
        template("t257")
            .tag_specifications(ec2_tags(1, &"v".repeat(257)))
            .send()
            .await,
        BAD,
        "tagSpecifications.1.member.tags.1.member.value",
        "less than or equal to 256",
    )
    .await?;
    aws.refused(
        "an aws: tag key",
        template("taws")
            .tag_specifications(
                aws_sdk_ec2::types::TagSpecification::builder()
                    .resource_type(aws_sdk_ec2::types::ResourceType::LaunchTemplate)
                    .tags(
                        aws_sdk_ec2::types::Tag::builder()
                            .key("aws:x")
                            .value("v")
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await,
        BAD,
        "tagSpecifications.1.member.tags.1.member.key",
        "reserved prefix aws:",
    )
    .await?;
    aws.refused(
        "an unknown resource type (model enum)",
        template("tenum")
            .tag_specifications(
                aws_sdk_ec2::types::TagSpecification::builder()
                    .resource_type("no-such-type".into())
                    .tags(
                        aws_sdk_ec2::types::Tag::builder()
                            .key("k")
                            .value("v")
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await,
        BAD,
        "tagSpecifications.1.member.resourceType",
        "enum value set",
    )
    .await?;
    aws.refused(
        "CreateTags with 51 tags",
        ec2.create_tags()
            .resources("lt-0123")
            .set_tags(Some(
                (0..51)
                    .map(|i| {
                        aws_sdk_ec2::types::Tag::builder()
                            .key(format!("k{i}"))
                            .value("v")
                            .build()
                    })
                    .collect(),
            ))
            .send()
            .await,
        BAD,
        "tags",
        "less than or equal to 50",
    )
    .await?;
    aws.refused(
        "hop limit 65",
        ec2.create_launch_template()
            .launch_template_name("hops")
            .launch_template_data(
                aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                    .image_id(&ami)
                    .metadata_options(
                        aws_sdk_ec2::types::LaunchTemplateInstanceMetadataOptionsRequest::builder()
                            .http_put_response_hop_limit(65)
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await,
        BAD,
        "launchTemplateData.metadataOptions.httpPutResponseHopLimit",
        "less than or equal to 64",
    )
    .await?;
    // 16 KiB of user data is 21,848 characters of base64.
    let user_data = |len: usize| {
        ec2.create_launch_template_version()
            .launch_template_name("a(1")
            .launch_template_data(
                aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                    .image_id(&ami)
                    .user_data("A".repeat(len))
                    .build(),
            )
            .send()
    };
    aws.accepted("user data of 16 KiB", user_data(21848).await)
        .await?;
    aws.refused(
        "user data over 16 KiB",
        user_data(21852).await,
        BAD,
        "launchTemplateData.userData",
        "less than or equal to 21848",
    )
    .await?;
    let vpc = aws
        .accepted(
            "a /16 VPC",
            ec2.create_vpc().cidr_block("10.1.0.0/16").send().await,
        )
        .await?;
    let vpc_id = vpc.vpc().and_then(|v| v.vpc_id()).expect("vpc id");
    aws.refused(
        "a /8 VPC",
        ec2.create_vpc().cidr_block("10.0.0.0/8").send().await,
        BAD,
        "cidrBlock",
        "/16 to /28",
    )
    .await?;
    aws.refused(
        "a group named sg-...",
        ec2.create_security_group()
            .group_name("sg-workers")
            .description("workers")
            .vpc_id(vpc_id)
            .send()
            .await,
        BAD,
        "groupName",
        "can't start with sg-",
    )
    .await?;
    aws.refused(
        "a group description with a tilde",
        ec2.create_security_group()
            .group_name("workers")
            .description("workers ~ all")
            .vpc_id(vpc_id)
            .send()
            .await,
        BAD,
        "description",
        "regular expression pattern",
    )
    .await?;
    // A required member left out: EC2's own code for it.
    let (status, body) = aws
        .raw_query(
            "ec2",
            "Action=CreateTags&Version=2016-11-15&ResourceId.1=lt-0123",
        )
        .await?;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("<Code>MissingParameter</Code>") && body.contains("at 'tags'"),
        "{body}"
    );
    let found = aws.moto.violations().await?;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].value, None);
    assert!(
        found[0].constraint.contains("must not be null"),
        "{found:?}"
    );
    Ok(())
}

#[tokio::test]
async fn auto_scaling_requests_are_checked_against_tags_and_group_sizes() -> anyhow::Result<()> {
    let aws = Aws::start().await?;
    let asg = &aws.asg;
    const BAD: &str = "ValidationError";
    let ami = ami(&aws).await?;
    aws.ec2
        .create_launch_template()
        .launch_template_name("lt-g")
        .launch_template_data(template_data(&ami))
        .send()
        .await?;
    let create = |name: &str, min: i32, max: i32| {
        asg.create_auto_scaling_group()
            .auto_scaling_group_name(name)
            .launch_template(
                aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                    .launch_template_name("lt-g")
                    .build(),
            )
            .min_size(min)
            .max_size(max)
            .availability_zones("us-east-1a")
    };
    let fifty: Vec<_> = (0..50).map(|i| asg_tag(&format!("k{i}"), "v")).collect();
    aws.refused(
        "51 tags",
        create("g51", 0, 1)
            .set_tags(Some(fifty.clone()))
            .tags(asg_tag("k50", "v"))
            .send()
            .await,
        BAD,
        "tags",
        "less than or equal to 50",
    )
    .await?;
    aws.refused(
        "tag value of 257 (model)",
        create("g257", 0, 1)
            .tags(asg_tag("k", &"v".repeat(257)))
            .send()
            .await,
        BAD,
        "tags.1.member.value",
        "less than or equal to 256",
    )
    .await?;
    aws.refused(
        "an aws: tag key",
        create("gaws", 0, 1)
            .tags(asg_tag("aws:x", "v"))
            .send()
            .await,
        BAD,
        "tags.1.member.key",
        "reserved prefix aws:",
    )
    .await?;
    aws.refused(
        "name of 256 (model)",
        create(&"g".repeat(256), 0, 1).send().await,
        BAD,
        "autoScalingGroupName",
        "less than or equal to 255",
    )
    .await?;
    aws.refused(
        "MinSize above MaxSize",
        create("gmin", 2, 1).send().await,
        BAD,
        "minSize",
        "MaxSize (1)",
    )
    .await?;
    let mut tags = fifty;
    tags[49] = asg_tag("k49", &"v".repeat(256));
    aws.accepted(
        "50 tags, a value of 256",
        create("gt", 0, 1).set_tags(Some(tags)).send().await,
    )
    .await?;
    aws.accepted(
        "desired at max",
        create("g", 0, 2).desired_capacity(2).send().await,
    )
    .await?;
    aws.refused(
        "desired above the group's max",
        asg.set_desired_capacity()
            .auto_scaling_group_name("g")
            .desired_capacity(3)
            .send()
            .await,
        BAD,
        "desiredCapacity",
        "MaxSize (2)",
    )
    .await?;
    aws.refused(
        "an update's desired below its new min",
        asg.update_auto_scaling_group()
            .auto_scaling_group_name("g")
            .min_size(2)
            .desired_capacity(1)
            .send()
            .await,
        BAD,
        "desiredCapacity",
        "MinSize (2)",
    )
    .await?;
    aws.refused(
        "26 tags in one CreateOrUpdateTags",
        asg.create_or_update_tags()
            .set_tags(Some(
                (0..26).map(|i| asg_tag(&format!("k{i}"), "v")).collect(),
            ))
            .send()
            .await,
        BAD,
        "tags",
        "less than or equal to 25",
    )
    .await?;
    aws.accepted(
        "min raised to 2",
        asg.update_auto_scaling_group()
            .auto_scaling_group_name("g")
            .min_size(2)
            .send()
            .await,
    )
    .await?;
    let group = asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names("g")
        .send()
        .await?;
    let instance = group.auto_scaling_groups()[0].instances()[0]
        .instance_id()
        .expect("instance")
        .to_string();
    aws.refused(
        "a decrement below the min",
        asg.terminate_instance_in_auto_scaling_group()
            .instance_id(&instance)
            .should_decrement_desired_capacity(true)
            .send()
            .await,
        BAD,
        "shouldDecrementDesiredCapacity",
        "below MinSize (2)",
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn iam_requests_are_checked_against_names_paths_tags_and_policy_sizes() -> anyhow::Result<()>
{
    let aws = Aws::start().await?;
    let iam = &aws.iam;
    const BAD: &str = "ValidationError";
    let role = |name: &str| {
        iam.create_role()
            .role_name(name)
            .assume_role_policy_document("{}")
    };
    aws.accepted(
        "role name of 64, 50 tags, value of 256",
        role(&"r".repeat(64))
            .set_tags(Some(
                (0..49)
                    .map(|i| iam_tag(&format!("k{i}"), "v"))
                    .collect::<Result<_, _>>()?,
            ))
            .tags(iam_tag("long", &"v".repeat(256))?)
            .send()
            .await,
    )
    .await?;
    aws.refused(
        "role name of 65 (model and quota: one violation)",
        role(&"r".repeat(65)).send().await,
        BAD,
        "roleName",
        "less than or equal to 64",
    )
    .await?;
    aws.refused(
        "role name with a space (model)",
        role("my role").send().await,
        BAD,
        "roleName",
        "regular expression pattern",
    )
    .await?;
    aws.refused(
        "path without the slashes",
        role("pathless").path("workers").send().await,
        BAD,
        "path",
        "regular expression pattern",
    )
    .await?;
    aws.refused(
        "51 tags (model)",
        role("t51")
            .set_tags(Some(
                (0..51)
                    .map(|i| iam_tag(&format!("k{i}"), "v"))
                    .collect::<Result<_, _>>()?,
            ))
            .send()
            .await,
        BAD,
        "tags",
        "less than or equal to 50",
    )
    .await?;
    aws.refused(
        "an aws: tag key",
        role("taws").tags(iam_tag("aws:owner", "v")?).send().await,
        BAD,
        "tags.1.member.key",
        "reserved prefix aws:",
    )
    .await?;
    aws.refused(
        "session duration 100 (model range)",
        role("short").max_session_duration(100).send().await,
        BAD,
        "maxSessionDuration",
        "greater than or equal to 3600",
    )
    .await?;
    aws.refused(
        "instance profile name of 129",
        iam.create_instance_profile()
            .instance_profile_name("p".repeat(129))
            .send()
            .await,
        BAD,
        "instanceProfileName",
        "less than or equal to 128",
    )
    .await?;
    // Trust policy: 2,048 characters, white space not counted.
    let trust = |len: usize| {
        format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"Service":"ecs-tasks.amazonaws.com"}},"Action":"sts:AssumeRole","Condition":{{"StringEquals":{{"sts:ExternalId":"{}"}}}}}}]}}"#,
            "x".repeat(len - 184)
        )
    };
    aws.accepted(
        "trust policy of 2,048 and white space",
        iam.create_role()
            .role_name("trusting")
            .assume_role_policy_document(format!("{}   \n  ", trust(2048)))
            .send()
            .await,
    )
    .await?;
    aws.refused(
        "trust policy of 2,049",
        iam.create_role()
            .role_name("trusting2")
            .assume_role_policy_document(trust(2049))
            .send()
            .await,
        BAD,
        "assumeRolePolicyDocument",
        "less than or equal to 2048",
    )
    .await?;
    // Inline policies: 10,240 characters for all of a role's together.
    let policy = |len: usize| {
        format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::{}"}}]}}"#,
            "p".repeat(len - 108)
        )
    };
    let put = |name: &str, len: usize| {
        iam.put_role_policy()
            .role_name("trusting")
            .policy_name(name)
            .policy_document(policy(len))
            .send()
    };
    aws.accepted("first inline policy of 6,000", put("one", 6000).await)
        .await?;
    aws.accepted(
        "the same policy replaced by one of 10,240",
        put("one", 10240).await,
    )
    .await?;
    aws.refused(
        "a second policy past the role's 10,240",
        put("two", 120).await,
        BAD,
        "policyDocument",
        "at most 10240",
    )
    .await?;
    aws.refused(
        "a policy with a character past U+00FF (model pattern)",
        iam.put_role_policy()
            .role_name("pathless")
            .policy_name("three")
            .policy_document("{\"x\":\"\u{2603}\"}")
            .send()
            .await,
        BAD,
        "policyDocument",
        "regular expression pattern",
    )
    .await?;
    // A required member left out, in the query protocol.
    let (status, body) = aws
        .raw_query("iam", "Action=CreateRole&Version=2010-05-08&RoleName=bare")
        .await?;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("<Code>ValidationError</Code>")
            && body.contains("Value null at 'assumeRolePolicyDocument'"),
        "{body}"
    );
    Ok(())
}

#[tokio::test]
async fn sqs_requests_are_checked_against_names_attributes_batches_and_tags() -> anyhow::Result<()>
{
    let aws = Aws::start().await?;
    let sqs = &aws.sqs;
    const BAD: &str = "InvalidParameterValue";
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let url = aws
        .accepted(
            "name of 80, every attribute at a limit, 50 tags",
            sqs.create_queue()
                .queue_name("q".repeat(80))
                .attributes(A::VisibilityTimeout, "43200")
                .attributes(A::DelaySeconds, "900")
                .attributes(A::MaximumMessageSize, "1024")
                .attributes(A::MessageRetentionPeriod, "60")
                .attributes(A::ReceiveMessageWaitTimeSeconds, "20")
                .set_tags(Some(
                    (0..49)
                        .map(|i| (format!("k{i}"), "v".to_string()))
                        .chain([("long".to_string(), "v".repeat(256))])
                        .collect(),
                ))
                .send()
                .await,
        )
        .await?
        .queue_url()
        .expect("url")
        .to_string();
    aws.refused(
        "name of 81",
        sqs.create_queue().queue_name("q".repeat(81)).send().await,
        BAD,
        "queueName",
        "regular expression pattern",
    )
    .await?;
    aws.refused(
        "name with a dot",
        sqs.create_queue().queue_name("my.queue").send().await,
        BAD,
        "queueName",
        "regular expression pattern",
    )
    .await?;
    aws.refused(
        "a FIFO queue without .fifo",
        sqs.create_queue()
            .queue_name("ordered")
            .attributes(A::FifoQueue, "true")
            .send()
            .await,
        BAD,
        "queueName",
        ".fifo suffix",
    )
    .await?;
    for (attribute, value, member, constraint) in [
        (
            A::VisibilityTimeout,
            "43201",
            "attributes.VisibilityTimeout",
            "less than or equal to 43200",
        ),
        (
            A::DelaySeconds,
            "901",
            "attributes.DelaySeconds",
            "less than or equal to 900",
        ),
        (
            A::MaximumMessageSize,
            "1023",
            "attributes.MaximumMessageSize",
            "greater than or equal to 1024",
        ),
        (
            A::MessageRetentionPeriod,
            "59",
            "attributes.MessageRetentionPeriod",
            "greater than or equal to 60",
        ),
        (
            A::ReceiveMessageWaitTimeSeconds,
            "21",
            "attributes.ReceiveMessageWaitTimeSeconds",
            "less than or equal to 20",
        ),
        (
            A::RedrivePolicy,
            r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:123456789012:dlq","maxReceiveCount":1001}"#,
            "attributes.RedrivePolicy",
            "maxReceiveCount: Member must have value less than or equal to 1000",
        ),
    ] {
        aws.refused(
            &format!("{attribute} {value}"),
            sqs.set_queue_attributes()
                .queue_url(&url)
                .attributes(attribute.clone(), value)
                .send()
                .await,
            BAD,
            member,
            constraint,
        )
        .await?;
    }
    aws.refused(
        "51 tags",
        sqs.create_queue()
            .queue_name("t51")
            .set_tags(Some(
                (0..51)
                    .map(|i| (format!("k{i}"), "v".to_string()))
                    .collect(),
            ))
            .send()
            .await,
        BAD,
        "tags",
        "less than or equal to 50",
    )
    .await?;
    aws.refused(
        "tag value of 257",
        sqs.create_queue()
            .queue_name("t257")
            .tags("k", "v".repeat(257))
            .send()
            .await,
        BAD,
        "tags.k",
        "less than or equal to 256",
    )
    .await?;
    aws.refused(
        "an aws: tag value",
        sqs.create_queue()
            .queue_name("taws")
            .tags("owner", "aws:x")
            .send()
            .await,
        BAD,
        "tags.owner",
        "reserved prefix aws:",
    )
    .await?;
    aws.refused(
        "receive 11",
        sqs.receive_message()
            .queue_url(&url)
            .max_number_of_messages(11)
            .send()
            .await,
        BAD,
        "maxNumberOfMessages",
        "less than or equal to 10",
    )
    .await?;
    aws.refused(
        "wait 21 s",
        sqs.receive_message()
            .queue_url(&url)
            .wait_time_seconds(21)
            .send()
            .await,
        BAD,
        "waitTimeSeconds",
        "less than or equal to 20",
    )
    .await?;
    aws.refused(
        "visibility 43,201 s",
        sqs.change_message_visibility()
            .queue_url(&url)
            .receipt_handle("h")
            .visibility_timeout(43201)
            .send()
            .await,
        BAD,
        "visibilityTimeout",
        "less than or equal to 43200",
    )
    .await?;
    let entry = |id: String| {
        aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
            .id(id)
            .receipt_handle("h")
            .build()
    };
    aws.refused(
        "a batch of 11",
        sqs.delete_message_batch()
            .queue_url(&url)
            .set_entries(Some(
                (0..11)
                    .map(|i| entry(format!("e{i}")))
                    .collect::<Result<_, _>>()?,
            ))
            .send()
            .await,
        BAD,
        "entries",
        "less than or equal to 10",
    )
    .await?;
    aws.refused(
        "a batch id with a dot",
        sqs.delete_message_batch()
            .queue_url(&url)
            .entries(entry("e.1".into())?)
            .send()
            .await,
        BAD,
        "entries.1.member.id",
        "regular expression pattern",
    )
    .await?;
    aws.accepted(
        "receive 10 for 1 s",
        sqs.receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await,
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn logs_and_ssm_requests_are_checked_and_checks_can_be_turned_off() -> anyhow::Result<()> {
    let aws = Aws::start().await?;
    let logs = &aws.logs;
    aws.accepted(
        "a log group with tags",
        logs.create_log_group()
            .log_group_name("/ecs/worker_1.a#b")
            .tags("owner", "v".repeat(256))
            .send()
            .await,
    )
    .await?;
    aws.accepted(
        "retention 3653 days",
        logs.put_retention_policy()
            .log_group_name("/ecs/worker_1.a#b")
            .retention_in_days(3653)
            .send()
            .await,
    )
    .await?;
    aws.refused(
        "retention 2 days",
        logs.put_retention_policy()
            .log_group_name("/ecs/worker_1.a#b")
            .retention_in_days(2)
            .send()
            .await,
        "InvalidParameterException",
        "retentionInDays",
        "enum value set: [1, 3, 5",
    )
    .await?;
    aws.refused(
        "a log group name with a colon (model pattern)",
        logs.create_log_group()
            .log_group_name("ecs:worker")
            .send()
            .await,
        "InvalidParameterException",
        "logGroupName",
        "regular expression pattern",
    )
    .await?;
    aws.refused(
        "a log group name of 513 (model)",
        logs.create_log_group()
            .log_group_name("l".repeat(513))
            .send()
            .await,
        "InvalidParameterException",
        "logGroupName",
        "less than or equal to 512",
    )
    .await?;
    aws.refused(
        "an aws: tag key",
        logs.create_log_group()
            .log_group_name("tagged")
            .tags("aws:owner", "v")
            .send()
            .await,
        "InvalidParameterException",
        "tags",
        "reserved prefix aws:",
    )
    .await?;
    aws.refused(
        "an empty parameter name (model)",
        aws.ssm.get_parameter().name("").send().await,
        "ValidationException",
        "name",
        "greater than or equal to 1",
    )
    .await?;

    // Off: requests reach moto unchecked and nothing is recorded; on again, they are checked.
    aws.moto.set_strict(false).await?;
    aws.iam
        .create_role()
        .role_name("r".repeat(65))
        .assume_role_policy_document("{}")
        .send()
        .await?;
    assert!(aws.moto.violations().await?.is_empty());
    aws.moto.set_strict(true).await?;
    aws.refused(
        "role name of 65 once on again",
        aws.iam
            .create_role()
            .role_name("s".repeat(65))
            .assume_role_policy_document("{}")
            .send()
            .await,
        "ValidationError",
        "roleName",
        "less than or equal to 64",
    )
    .await?;
    // The blocking read the integration harness uses at a test's end sees the same records.
    aws.logs
        .put_retention_policy()
        .log_group_name("/ecs/worker_1.a#b")
        .retention_in_days(4)
        .send()
        .await
        .expect_err("retention 4 is refused");
    let blocking = aws.moto.violations_blocking()?;
    assert_eq!(blocking, aws.moto.violations().await?);
    assert_eq!(blocking.len(), 1);
    assert!(
        testbed::moto::describe_violations(&blocking)
            .contains("logs:PutRetentionPolicy retentionInDays = \"4\""),
        "{}",
        testbed::moto::describe_violations(&blocking)
    );
    Ok(())
}

#[tokio::test]
async fn every_documented_limit_cites_its_aws_page() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let body = reqwest::get(format!("{}/moto-api/strict/rules", moto.endpoint()))
        .await?
        .text()
        .await?;
    let rows: Vec<serde_json::Value> = serde_json::from_str(&body)?;
    assert!(rows.len() > 50, "{} rows", rows.len());
    for row in &rows {
        let source = row["source"].as_str().unwrap_or_default();
        assert!(
            source.starts_with("https://docs.aws.amazon.com/"),
            "a row without its AWS page: {row}"
        );
        assert!(
            !row["rule"].as_str().unwrap_or_default().is_empty(),
            "{row}"
        );
    }
    assert!(
        rows.iter().any(|r| r["service"] == "ecs"
            && r["member"] == "count"
            && r["rule"] == "integer from 1 to 10"),
        "RunTask's count limit is listed"
    );
    Ok(())
}
