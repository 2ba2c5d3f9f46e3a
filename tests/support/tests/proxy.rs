//! The fault proxy, checked through the real AWS SDK clients: what each injected fault is to
//! the SDK's retry classifier, that retries get through a faulty proxy to moto, that the SDK
//! gives up on constant throttling, and that a seed replays its faults.

use aws_sdk_sqs::config::retry::{RetryConfig, RetryPartition, TokenBucket};
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use std::time::{Duration, Instant};
use testbed::Moto;
use testbed::proxy::{Fault, Faults, Proxy};

/// What a call ended with, as far as retries are concerned.
#[derive(Debug)]
struct Outcome {
    ok: bool,
    code: Option<String>,
    dispatch_failure: bool,
}

fn outcome<T, E: ProvideErrorMetadata, R>(r: Result<T, SdkError<E, R>>) -> Outcome {
    match r {
        Ok(_) => Outcome {
            ok: true,
            code: None,
            dispatch_failure: false,
        },
        Err(e) => Outcome {
            ok: false,
            code: e.code().map(str::to_string),
            dispatch_failure: matches!(e, SdkError::DispatchFailure(_)),
        },
    }
}

/// The SDK's retryable error kinds, told apart by which retry cost the token bucket charges:
/// throttling; transient (HTTP 500/502/503/504, I/O errors, timeouts); and modeled server
/// errors (none of the proxy's faults is one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Throttling,
    Server,
    Transient,
}

/// A token bucket that can pay for retries of one error kind only: a call is retried iff the
/// SDK classified its error as `kind`.
fn probe_bucket(kind: Kind) -> TokenBucket {
    let cost = |k: Kind| if k == kind { 1 } else { 1000 };
    TokenBucket::builder()
        .capacity(100)
        .throttling_retry_cost(cost(Kind::Throttling))
        .retry_cost(cost(Kind::Server))
        .timeout_retry_cost(cost(Kind::Transient))
        .build()
}

fn fast_retries(attempts: u32) -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(attempts)
        .with_initial_backoff(Duration::from_millis(5))
        .with_max_backoff(Duration::from_millis(50))
}

/// Calls one read operation of `service` through `config` with the given retry partition.
async fn call(
    service: &str,
    config: &aws_config::SdkConfig,
    retry: RetryConfig,
    partition: Option<RetryPartition>,
) -> Outcome {
    macro_rules! client {
        ($sdk:ident) => {{
            let mut b = $sdk::config::Builder::from(config).retry_config(retry);
            if let Some(p) = partition {
                b = b.retry_partition(p);
            }
            $sdk::Client::from_conf(b.build())
        }};
    }
    match service {
        "sqs" => outcome(client!(aws_sdk_sqs).list_queues().send().await),
        "ecs" => outcome(client!(aws_sdk_ecs).list_clusters().send().await),
        "ssm" => outcome(client!(aws_sdk_ssm).describe_parameters().send().await),
        "logs" => outcome(
            client!(aws_sdk_cloudwatchlogs)
                .describe_log_groups()
                .send()
                .await,
        ),
        "autoscaling" => outcome(
            client!(aws_sdk_autoscaling)
                .describe_auto_scaling_groups()
                .send()
                .await,
        ),
        "iam" => outcome(client!(aws_sdk_iam).list_roles().send().await),
        "ec2" => outcome(client!(aws_sdk_ec2).describe_vpcs().send().await),
        other => panic!("no call for {other}"),
    }
}

/// (signing name, operation called, the throttling code AWS uses in that protocol)
const SERVICES: [(&str, &str, &str); 7] = [
    ("sqs", "ListQueues", "RequestThrottled"),
    ("ecs", "ListClusters", "ThrottlingException"),
    ("ssm", "DescribeParameters", "ThrottlingException"),
    ("logs", "DescribeLogGroups", "ThrottlingException"),
    ("autoscaling", "DescribeAutoScalingGroups", "Throttling"),
    ("iam", "ListRoles", "Throttling"),
    ("ec2", "DescribeVpcs", "RequestLimitExceeded"),
];

#[tokio::test]
async fn each_fault_is_the_error_kind_the_sdk_retry_classifier_expects() -> anyhow::Result<()> {
    // Every request is answered by the proxy: nothing reaches this upstream.
    let proxy = Proxy::start("http://127.0.0.1:9", Faults::none())?;
    let config = proxy.sdk_config();
    let mut probes = 0;
    for (fault, faults, kind) in [
        (
            Fault::Throttle,
            Faults::none().throttling(1.0),
            Kind::Throttling,
        ),
        (
            Fault::ServerError,
            Faults::none().server_errors(1.0),
            Kind::Transient,
        ),
        (Fault::Reset, Faults::none().resets(1.0), Kind::Transient),
    ] {
        proxy.set_faults(faults);
        for (service, operation, throttle_code) in SERVICES {
            for probe in [Kind::Throttling, Kind::Server, Kind::Transient] {
                let before = proxy.request_count() as usize;
                let partition = RetryPartition::custom(format!("probe-{probes}"))
                    .token_bucket(probe_bucket(probe))
                    .build();
                probes += 1;
                let out = call(service, &config, fast_retries(3), Some(partition)).await;
                let seen = &proxy.requests()[before..];
                assert!(!out.ok, "{service} {fault:?}: {out:?}");
                assert!(
                    seen.iter().all(|r| r.service == service
                        && r.operation == operation
                        && r.fault == Some(fault)),
                    "{service}: {seen:?}"
                );
                // Retried (3 attempts) exactly when the bucket pays for the kind the SDK saw.
                let expected = if probe == kind { 3 } else { 1 };
                assert_eq!(
                    seen.len(),
                    expected,
                    "{service} {fault:?} with a bucket for {probe:?}: {out:?}"
                );
                match fault {
                    Fault::Throttle => assert_eq!(out.code.as_deref(), Some(throttle_code)),
                    Fault::ServerError => {
                        let code = out.code.as_deref().unwrap_or_default();
                        assert!(code.starts_with("Internal"), "{service}: {out:?}")
                    }
                    _ => assert!(out.dispatch_failure, "{service}: {out:?}"),
                }
            }
        }
    }
    Ok(())
}

#[tokio::test]
async fn constant_throttling_makes_the_sdk_give_up_with_a_throttling_error() -> anyhow::Result<()> {
    let proxy = Proxy::start("http://127.0.0.1:9", Faults::none().throttling(1.0))?;
    let config = proxy.sdk_config();
    for (service, operation, code) in SERVICES {
        let before = proxy.request_count() as usize;
        // The standard strategy with its default bucket and three attempts.
        let out = call(service, &config, fast_retries(3), None).await;
        assert!(!out.ok);
        assert_eq!(out.code.as_deref(), Some(code), "{service}");
        let seen = &proxy.requests()[before..];
        assert_eq!(seen.len(), 3, "{service}: three attempts, then it gives up");
        assert!(seen.iter().all(|r| r.operation == operation));
    }
    assert_eq!(proxy.counts().throttled, 21);
    Ok(())
}

#[tokio::test]
async fn sdk_retries_through_throttles_server_errors_and_resets_and_succeeds() -> anyhow::Result<()>
{
    let moto = Moto::start().await?;
    let seed = testbed::proxy::seed_from_env("PROXY_SEED");
    let proxy = Proxy::start(moto.endpoint(), Faults::mix(0.3, seed))?;
    let config = proxy.sdk_config();
    let retry = fast_retries(12);
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&config)
            .retry_config(retry.clone())
            .build(),
    );
    let url = sqs
        .create_queue()
        .queue_name("through-faults")
        .send()
        .await?
        .queue_url()
        .unwrap_or_default()
        .to_string();
    for i in 0..10 {
        sqs.send_message()
            .queue_url(&url)
            .message_body(format!("{i}"))
            .send()
            .await?;
    }
    for round in 0..12 {
        for (service, _, _) in SERVICES {
            let out = call(service, &config, retry.clone(), None).await;
            assert!(out.ok, "round {round}, {service}: {out:?}");
        }
    }
    // What reached moto happened once: a reset request was never forwarded.
    let direct = aws_sdk_sqs::Client::new(&moto.sdk_config().await);
    let depth = direct
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await?;
    let visible = depth
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages))
        .cloned();
    assert_eq!(visible.as_deref(), Some("10"));
    let counts = proxy.counts();
    println!("through 30 % faults: {counts:?}");
    assert!(
        counts.throttled > 0 && counts.server_errors > 0 && counts.resets > 0,
        "every fault kind was injected and retried: {counts:?}"
    );
    // Each call succeeded exactly once, after as many retries as it met faults.
    let requests = proxy.requests();
    assert_eq!(
        requests.iter().filter(|r| r.status == Some(200)).count(),
        1 + 10 + 12 * SERVICES.len(),
        "one success per call"
    );
    Ok(())
}

#[tokio::test]
async fn a_seed_replays_its_faults_and_faults_switch_at_runtime() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    /// The faults a fixed sequence of calls meets, with retries off.
    async fn run(proxy: &Proxy) -> Vec<(String, Option<Fault>)> {
        let config = proxy.sdk_config();
        for _ in 0..4 {
            for (service, _, _) in SERVICES {
                call(service, &config, fast_retries(1), None).await;
            }
        }
        proxy
            .requests()
            .into_iter()
            .map(|r| (r.operation, r.fault))
            .collect()
    }
    let a = run(&Proxy::start(moto.endpoint(), Faults::mix(0.5, 7))?).await;
    let b = run(&Proxy::start(moto.endpoint(), Faults::mix(0.5, 7))?).await;
    let c = run(&Proxy::start(moto.endpoint(), Faults::mix(0.5, 8))?).await;
    assert_eq!(a.len(), 28);
    assert!(a.iter().any(|(_, f)| f.is_some()));
    assert_eq!(a, b, "same seed, same calls: same faults");
    assert_ne!(a, c, "another seed: other faults");

    // Switched at runtime: from all delayed to none.
    let proxy = Proxy::start(moto.endpoint(), Faults::none())?;
    let config = proxy.sdk_config();
    proxy.set_faults(Faults::none().delayed(1.0, Duration::from_millis(400)));
    let started = Instant::now();
    assert!(call("sqs", &config, fast_retries(1), None).await.ok);
    assert!(started.elapsed() >= Duration::from_millis(400));
    proxy.set_faults(Faults::none());
    assert!(call("sqs", &config, fast_retries(1), None).await.ok);
    let requests = proxy.requests();
    assert_eq!(requests[0].fault, Some(Fault::Delay));
    assert!(requests[0].elapsed >= Some(Duration::from_millis(400)));
    assert_eq!(requests[1].fault, None);
    assert_eq!(proxy.counts().delayed, 1);
    Ok(())
}

/// The error code of a failed call; `None` when it succeeded.
fn code_of<T, E: ProvideErrorMetadata, R>(r: &Result<T, SdkError<E, R>>) -> Option<String> {
    r.as_ref()
        .err()
        .map(|e| e.code().unwrap_or("<no code>").to_string())
}

/// Ids of the resources the eventual-consistency test creates.
struct New {
    queue_url: String,
    cluster_arn: String,
    vpc: String,
    subnet: String,
    gateway: String,
    group: String,
    route_table: String,
    /// The default VPC's main route table (old), to route to the new gateway.
    main_route_table: String,
}

/// Every use of a new resource the eventual-consistency test makes, with the code it met.
async fn uses(
    iam: &aws_sdk_iam::Client,
    sqs: &aws_sdk_sqs::Client,
    ecs: &aws_sdk_ecs::Client,
    ec2: &aws_sdk_ec2::Client,
    new: &New,
) -> Vec<(&'static str, Option<String>)> {
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ecs:ListClusters","Resource":"*"}]}"#;
    vec![
        (
            "GetRole",
            code_of(&iam.get_role().role_name("new-role").send().await),
        ),
        (
            "PutRolePolicy",
            code_of(
                &iam.put_role_policy()
                    .role_name("new-role")
                    .policy_name("p")
                    .policy_document(policy)
                    .send()
                    .await,
            ),
        ),
        (
            "GetInstanceProfile",
            code_of(
                &iam.get_instance_profile()
                    .instance_profile_name("new-profile")
                    .send()
                    .await,
            ),
        ),
        (
            "GetQueueAttributes",
            code_of(
                &sqs.get_queue_attributes()
                    .queue_url(&new.queue_url)
                    .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                    .send()
                    .await,
            ),
        ),
        (
            "GetQueueUrl",
            code_of(&sqs.get_queue_url().queue_name("new-queue").send().await),
        ),
        (
            "ListContainerInstances by name",
            code_of(
                &ecs.list_container_instances()
                    .cluster("new-cluster")
                    .send()
                    .await,
            ),
        ),
        (
            "ListTasks by ARN",
            code_of(&ecs.list_tasks().cluster(&new.cluster_arn).send().await),
        ),
        (
            "DescribeVpcs",
            code_of(&ec2.describe_vpcs().vpc_ids(&new.vpc).send().await),
        ),
        (
            "DescribeSubnets",
            code_of(&ec2.describe_subnets().subnet_ids(&new.subnet).send().await),
        ),
        (
            "DescribeInternetGateways",
            code_of(
                &ec2.describe_internet_gateways()
                    .internet_gateway_ids(&new.gateway)
                    .send()
                    .await,
            ),
        ),
        (
            "CreateRoute",
            code_of(
                &ec2.create_route()
                    .route_table_id(&new.main_route_table)
                    .destination_cidr_block("10.200.0.0/16")
                    .gateway_id(&new.gateway)
                    .send()
                    .await,
            ),
        ),
        (
            "DescribeSecurityGroups",
            code_of(
                &ec2.describe_security_groups()
                    .group_ids(&new.group)
                    .send()
                    .await,
            ),
        ),
        (
            "DescribeRouteTables",
            code_of(
                &ec2.describe_route_tables()
                    .route_table_ids(&new.route_table)
                    .send()
                    .await,
            ),
        ),
    ]
}

/// Retries off: every call is one request, its error as the proxy answered it.
fn one_attempt() -> RetryConfig {
    RetryConfig::standard().with_max_attempts(1)
}

#[tokio::test]
async fn eventual_consistency_hides_new_resources_from_their_users_for_the_window()
-> anyhow::Result<()> {
    use aws_sdk_ec2::types::{
        Filter, LaunchTemplateIamInstanceProfileSpecificationRequest, RequestLaunchTemplateData,
    };
    let moto = Moto::start().await?;
    let window = Duration::from_millis(2500);
    let proxy = Proxy::start(moto.endpoint(), Faults::none())?;
    let config = proxy.sdk_config();
    macro_rules! client {
        ($sdk:ident) => {
            $sdk::Client::from_conf(
                $sdk::config::Builder::from(&config)
                    .retry_config(one_attempt())
                    .build(),
            )
        };
    }
    let (iam, sqs, ecs, ec2, asg) = (
        client!(aws_sdk_iam),
        client!(aws_sdk_sqs),
        client!(aws_sdk_ecs),
        client!(aws_sdk_ec2),
        client!(aws_sdk_autoscaling),
    );
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;

    // Before the mode is on: an instance profile and a launch template naming it; neither is
    // tracked, so a group from that template is created at once later.
    let old_profile = iam
        .create_instance_profile()
        .instance_profile_name("old-profile")
        .send()
        .await?;
    let old_profile_arn = old_profile
        .instance_profile()
        .map(|p| p.arn().to_string())
        .unwrap_or_default();
    let old_template = ec2
        .create_launch_template()
        .launch_template_name("old-template")
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .iam_instance_profile(
                    LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                        .arn(&old_profile_arn)
                        .build(),
                )
                .build(),
        )
        .send()
        .await?;
    let old_template_id = old_template
        .launch_template()
        .and_then(|t| t.launch_template_id())
        .unwrap_or_default()
        .to_string();
    let default_vpc = ec2
        .describe_vpcs()
        .filters(Filter::builder().name("is-default").values("true").build())
        .send()
        .await?
        .vpcs()[0]
        .vpc_id()
        .unwrap_or_default()
        .to_string();
    let default_subnet = ec2
        .describe_subnets()
        .filters(
            Filter::builder()
                .name("vpc-id")
                .values(&default_vpc)
                .build(),
        )
        .send()
        .await?
        .subnets()[0]
        .subnet_id()
        .unwrap_or_default()
        .to_string();
    let main_route_table = ec2
        .describe_route_tables()
        .filters(
            Filter::builder()
                .name("vpc-id")
                .values(&default_vpc)
                .build(),
        )
        .send()
        .await?
        .route_tables()[0]
        .route_table_id()
        .unwrap_or_default()
        .to_string();

    proxy.set_faults(Faults::none().eventual_consistency(window));
    let since = proxy.request_count();

    // IAM: a new role and instance profile are NoSuchEntity to the calls naming them.
    iam.create_role()
        .role_name("new-role")
        .assume_role_policy_document(trust)
        .send()
        .await?;
    let profile_arn = iam
        .create_instance_profile()
        .instance_profile_name("new-profile")
        .send()
        .await?
        .instance_profile()
        .map(|p| p.arn().to_string())
        .unwrap_or_default();
    // SQS: a new queue does not exist for a second.
    let queue_url = sqs
        .create_queue()
        .queue_name("new-queue")
        .send()
        .await?
        .queue_url()
        .unwrap_or_default()
        .to_string();
    // ECS: a new cluster is not found.
    let cluster_arn = ecs
        .create_cluster()
        .cluster_name("new-cluster")
        .send()
        .await?
        .cluster()
        .and_then(|c| c.cluster_arn())
        .unwrap_or_default()
        .to_string();
    // EC2: new ids are Invalid*.NotFound.
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.7.0.0/16")
        .send()
        .await?
        .vpc()
        .and_then(|v| v.vpc_id())
        .unwrap_or_default()
        .to_string();
    let subnet = ec2
        .create_subnet()
        .vpc_id(&default_vpc)
        .cidr_block("172.31.128.0/20")
        .send()
        .await?
        .subnet()
        .and_then(|s| s.subnet_id())
        .unwrap_or_default()
        .to_string();
    let gateway = ec2
        .create_internet_gateway()
        .send()
        .await?
        .internet_gateway()
        .and_then(|g| g.internet_gateway_id())
        .unwrap_or_default()
        .to_string();
    let group = ec2
        .create_security_group()
        .group_name("new-group")
        .description("new")
        .vpc_id(&default_vpc)
        .send()
        .await?
        .group_id()
        .unwrap_or_default()
        .to_string();
    let route_table = ec2
        .create_route_table()
        .vpc_id(&default_vpc)
        .send()
        .await?
        .route_table()
        .and_then(|t| t.route_table_id())
        .unwrap_or_default()
        .to_string();
    // A launch template naming the new profile is accepted (EC2 does not validate it) ...
    let template_id = ec2
        .create_launch_template()
        .launch_template_name("new-template")
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .iam_instance_profile(
                    LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                        .arn(&profile_arn)
                        .build(),
                )
                .build(),
        )
        .send()
        .await?
        .launch_template()
        .and_then(|t| t.launch_template_id())
        .unwrap_or_default()
        .to_string();
    let created = proxy.creations();
    assert_eq!(created.len(), 9, "{created:#?}");
    let created_all = proxy.all_visible_at().expect("creations learned");

    let group_request = |name: &str, template: &str| {
        asg.create_auto_scaling_group()
            .auto_scaling_group_name(name)
            .launch_template(
                aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                    .launch_template_id(template)
                    .version("$Latest")
                    .build(),
            )
            .min_size(0)
            .max_size(1)
            .desired_capacity(0)
            .vpc_zone_identifier(&default_subnet)
    };
    let new = New {
        queue_url: queue_url.clone(),
        cluster_arn: cluster_arn.clone(),
        vpc,
        subnet: subnet.clone(),
        gateway,
        group: group.clone(),
        route_table,
        main_route_table,
    };
    let within = uses(&iam, &sqs, &ecs, &ec2, &new).await;
    let expected = [
        ("GetRole", "NoSuchEntity"),
        ("PutRolePolicy", "NoSuchEntity"),
        ("GetInstanceProfile", "NoSuchEntity"),
        (
            "GetQueueAttributes",
            "AWS.SimpleQueueService.NonExistentQueue",
        ),
        ("GetQueueUrl", "AWS.SimpleQueueService.NonExistentQueue"),
        ("ListContainerInstances by name", "ClusterNotFoundException"),
        ("ListTasks by ARN", "ClusterNotFoundException"),
        ("DescribeVpcs", "InvalidVpcID.NotFound"),
        ("DescribeSubnets", "InvalidSubnetID.NotFound"),
        (
            "DescribeInternetGateways",
            "InvalidInternetGatewayID.NotFound",
        ),
        ("CreateRoute", "InvalidGatewayID.NotFound"),
        ("DescribeSecurityGroups", "InvalidGroup.NotFound"),
        ("DescribeRouteTables", "InvalidRouteTableID.NotFound"),
    ];
    assert_eq!(
        within
            .iter()
            .map(|(call, code)| (*call, code.clone()))
            .collect::<Vec<_>>(),
        expected
            .iter()
            .map(|(call, code)| (*call, Some(code.to_string())))
            .collect::<Vec<_>>(),
        "within the window"
    );
    // The SDK knows these as the modeled "does not exist" errors.
    let missing_queue = sqs.get_queue_url().queue_name("new-queue").send().await;
    assert!(
        missing_queue
            .as_ref()
            .err()
            .and_then(|e| e.as_service_error())
            .is_some_and(|e| e.is_queue_does_not_exist()),
        "{missing_queue:?}"
    );
    let missing_role = iam.get_role().role_name("new-role").send().await;
    assert!(
        missing_role
            .as_ref()
            .err()
            .and_then(|e| e.as_service_error())
            .is_some_and(|e| e.is_no_such_entity_exception()),
        "{missing_role:?}"
    );

    // DescribeClusters lists the new cluster as MISSING, as ECS does a cluster it does not
    // know; the old default is unaffected.
    let described = ecs
        .describe_clusters()
        .clusters("new-cluster")
        .send()
        .await?;
    assert!(described.clusters().is_empty(), "{described:?}");
    assert_eq!(
        described
            .failures()
            .iter()
            .map(|f| (f.arn(), f.reason()))
            .collect::<Vec<_>>(),
        [(Some(cluster_arn.as_str()), Some("MISSING"))]
    );

    // The Auto Scaling group of a template whose instance profile is new is refused in AWS's
    // words; the one of a template whose profile predates the mode is created.
    let refused = group_request("new-group-asg", &template_id).send().await;
    assert_eq!(code_of(&refused).as_deref(), Some("ValidationError"));
    let message = refused
        .as_ref()
        .err()
        .and_then(|e| e.message())
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        message,
        format!(
            "You must use a valid fully-formed launch template. Value ({profile_arn}) for parameter iamInstanceProfile.arn is invalid. Invalid IAM Instance Profile ARN"
        )
    );
    group_request("old-group-asg", &old_template_id)
        .send()
        .await?;

    // An idempotent repeat of a create goes through and does not restart the window; calls
    // that find by filter, prefix or listing are not affected.
    let again = sqs.create_queue().queue_name("new-queue").send().await?;
    assert_eq!(again.queue_url(), Some(queue_url.as_str()));
    let listed = sqs
        .list_queues()
        .queue_name_prefix("new-queue")
        .send()
        .await?;
    assert_eq!(listed.queue_urls(), std::slice::from_ref(&queue_url));
    let by_filter = ec2
        .describe_subnets()
        .filters(Filter::builder().name("subnet-id").values(&subnet).build())
        .send()
        .await?;
    assert_eq!(by_filter.subnets().len(), 1);
    let by_vpc = ec2
        .describe_security_groups()
        .filters(Filter::builder().name("group-id").values(&group).build())
        .send()
        .await?;
    assert_eq!(by_vpc.security_groups().len(), 1);
    assert!(
        iam.list_roles()
            .send()
            .await?
            .roles()
            .iter()
            .any(|r| r.role_name() == "new-role")
    );
    assert!(
        ecs.list_clusters()
            .send()
            .await?
            .cluster_arns()
            .contains(&cluster_arn)
    );
    assert_eq!(
        proxy.creations().len(),
        9,
        "the repeat is not a new creation"
    );

    // Every such answer is in the log, with its code, and reached no upstream.
    let log = proxy.requests_since(since);
    let faulted: Vec<_> = log
        .iter()
        .filter(|r| r.fault == Some(Fault::NotYetVisible))
        .collect();
    assert_eq!(faulted.len(), expected.len() + 2 + 1 + 1, "{faulted:#?}");
    assert_eq!(proxy.counts().not_yet_visible, faulted.len() as u64);
    assert!(faulted.iter().any(|r| r.operation == "DescribeClusters"
        && r.code.as_deref() == Some("MISSING")
        && r.status == Some(200)));
    assert!(
        faulted
            .iter()
            .any(|r| r.operation == "CreateAutoScalingGroup"
                && r.code.as_deref() == Some("ValidationError")
                && r.status == Some(400))
    );
    assert!(
        log.iter()
            .filter(|r| r.fault.is_none())
            .all(|r| r.code.is_none())
    );

    // Switched off at run time: the new resources are usable at once; on again, they are not.
    proxy.set_faults(Faults::none());
    assert_eq!(
        code_of(&iam.get_role().role_name("new-role").send().await),
        None
    );
    proxy.set_faults(Faults::none().eventual_consistency(window));
    assert_eq!(
        code_of(&iam.get_role().role_name("new-role").send().await).as_deref(),
        Some("NoSuchEntity")
    );

    // Once the window has passed, every use succeeds.
    tokio::time::sleep_until(created_all.into()).await;
    let after = uses(&iam, &sqs, &ecs, &ec2, &new).await;
    for (call, code) in &after {
        assert_eq!(code, &None, "{call} after the window");
    }
    let described = ecs
        .describe_clusters()
        .clusters("new-cluster")
        .send()
        .await?;
    assert_eq!(described.clusters().len(), 1, "{described:?}");
    assert!(described.failures().is_empty());

    // Adding the role to the profile must propagate too: the group is refused for another
    // window, then created.
    iam.add_role_to_instance_profile()
        .instance_profile_name("new-profile")
        .role_name("new-role")
        .send()
        .await?;
    let refused = group_request("new-group-asg", &template_id).send().await;
    assert_eq!(code_of(&refused).as_deref(), Some("ValidationError"));
    tokio::time::sleep_until(proxy.all_visible_at().expect("learned").into()).await;
    group_request("new-group-asg", &template_id).send().await?;
    let groups = asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names("new-group-asg")
        .auto_scaling_group_names("old-group-asg")
        .send()
        .await?;
    assert_eq!(groups.auto_scaling_groups().len(), 2);
    Ok(())
}
