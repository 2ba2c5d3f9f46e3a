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
