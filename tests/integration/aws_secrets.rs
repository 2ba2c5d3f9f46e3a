//! Secrets from AWS, on the strict test bed (IAM enforced for the operator, which signs with
//! only deploy/aws/operator-policy.json): a worker whose `spec.secrets` names a Secrets
//! Manager secret (with a JSON key) and an SSM SecureString parameter gets a task definition
//! whose container `secrets` carry exactly those ARNs as `valueFrom`, with nothing of them in
//! its `environment`; the task execution role gets an inline policy granting
//! `secretsmanager:GetSecretValue` and `ssm:GetParameters` on exactly those ARNs (and
//! `kms:Decrypt` on the named key); a policy widened out of band is written back; the policy is
//! rewritten when the list changes and removed when `spec.secrets` is emptied. The example of
//! docs/secrets.md is admitted as written and granted what the page says.

use crate::common::{Harness, worker_yaml};
use ecs_worker_operator::api::EcsSelfTerminatingWorker;
use ecs_worker_operator::plan::desired::{self, Names};
use std::time::Duration;

/// The task definition's container `secrets` and `environment`, read back from moto.
async fn container(
    h: &Harness,
    w: &EcsSelfTerminatingWorker,
) -> anyhow::Result<(Vec<(String, String)>, Vec<(String, String)>)> {
    let arn = w
        .status
        .as_ref()
        .and_then(|s| s.resources.task_definition_arn.clone())
        .unwrap_or_default();
    let ecs = aws_sdk_ecs::Client::new(&h.sdk);
    let td = ecs
        .describe_task_definition()
        .task_definition(arn)
        .send()
        .await?;
    let c = td
        .task_definition()
        .expect("task definition")
        .container_definitions()[0]
        .clone();
    let secrets = c
        .secrets()
        .iter()
        .map(|s| (s.name().to_string(), s.value_from().to_string()))
        .collect();
    Ok((secrets, crate::common::env_pairs(c.environment())))
}

/// The execution role's inline policy `worker`, decoded, or `None` when it has none.
async fn execution_inline(h: &Harness, names: &Names) -> anyhow::Result<Option<String>> {
    let iam = aws_sdk_iam::Client::new(&h.sdk);
    match iam
        .get_role_policy()
        .role_name(&names.execution_role)
        .policy_name("worker")
        .send()
        .await
    {
        Ok(out) => Ok(Some(
            percent_encoding::percent_decode_str(out.policy_document())
                .decode_utf8_lossy()
                .to_string(),
        )),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_no_such_entity_exception()) =>
        {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Polls the execution role's inline policy until `pred` holds.
async fn wait_inline(
    h: &Harness,
    name: &str,
    names: &Names,
    what: &str,
    pred: impl Fn(&Option<String>) -> bool,
) -> anyhow::Result<Option<String>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let have = execution_inline(h, names).await?;
        if pred(&have) {
            return Ok(have);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "execution role policy: {what}; found {have:?}"
        );
        h.poke(name).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn statements(policy: &str) -> anyhow::Result<Vec<(Vec<String>, Vec<String>)>> {
    use crate::common::strings;
    let v: serde_json::Value = serde_json::from_str(policy)?;
    Ok(v["Statement"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            assert_eq!(s["Effect"], "Allow", "{s}");
            assert!(s.get("NotResource").is_none() && s.get("NotAction").is_none());
            (strings(&s["Action"]), strings(&s["Resource"]))
        })
        .collect())
}

#[tokio::test]
async fn secrets_reach_the_task_definition_and_only_their_arns_reach_the_execution_role()
-> anyhow::Result<()> {
    let mut h = Harness::strict("aws-secrets").await?;
    let name = "with-secrets";
    let names = Names::new(&h.ns, name);

    // A SecureString parameter, created for real; its ARN as AWS reports it.
    let ssm = aws_sdk_ssm::Client::new(&h.sdk);
    let parameter_name = format!("/team/{}/license", h.ns);
    ssm.put_parameter()
        .name(&parameter_name)
        .value("parameter-value-never-in-the-task-definition")
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await?;
    let parameter_arn = ssm
        .get_parameter()
        .name(&parameter_name)
        .send()
        .await?
        .parameter()
        .and_then(|p| p.arn())
        .expect("parameter ARN")
        .to_string();
    // A complete Secrets Manager ARN (name, hyphen, six random characters) with a JSON key,
    // and a partial one (the name alone).
    let account = parameter_arn
        .split(':')
        .nth(4)
        .unwrap_or_default()
        .to_string();
    let secret = format!("arn:aws:secretsmanager:us-east-1:{account}:secret:db-credentials-Xy12Ab");
    let secret_with_key = format!("{secret}:password::");
    let partial = format!("arn:aws:secretsmanager:us-east-1:{account}:secret:api/token");
    let key = format!("arn:aws:kms:us-east-1:{account}:key/1234abcd-12ab-34cd-56ef-1234567890ab");

    // Every reconcile compares the AWS resources with the spec (drift repair).
    h.start_controller(Duration::from_millis(1));
    let spec = format!(
        "secrets:\n- name: DB_PASSWORD\n  valueFrom: \"{secret_with_key}\"\n- name: LICENSE\n  valueFrom: \"{parameter_arn}\"\n- name: API_TOKEN\n  valueFrom: \"{partial}\"\nsecretsKmsKeyArn: \"{key}\"\nenv:\n- name: MODEL\n  value: small"
    );
    h.apply_yaml(&worker_yaml(name, &spec)).await?;
    let w = h.wait_ready(name).await?;

    // The container's secrets are the ARNs, as given; the environment has none of them.
    let (secrets, env) = container(&h, &w).await?;
    assert_eq!(
        secrets,
        vec![
            ("DB_PASSWORD".to_string(), secret_with_key.clone()),
            ("LICENSE".to_string(), parameter_arn.clone()),
            ("API_TOKEN".to_string(), partial.clone()),
        ]
    );
    assert!(
        env.iter().all(|(k, v)| {
            !["DB_PASSWORD", "LICENSE", "API_TOKEN"].contains(&k.as_str())
                && !v.contains("secretsmanager")
                && !v.contains(":parameter/")
        }),
        "{env:?}"
    );
    assert!(env.contains(&("MODEL".to_string(), "small".to_string())));

    // The execution role may read exactly those: the secret without the JSON key, the partial
    // ARN with the six-character wildcard, the parameter, and decrypt with the named key.
    let policy = execution_inline(&h, &names)
        .await?
        .expect("an inline policy on the execution role");
    let mut found = statements(&policy)?;
    found.sort();
    let mut want = vec![
        (
            vec!["secretsmanager:GetSecretValue".to_string()],
            vec![format!("{partial}-??????"), secret.clone()],
        ),
        (
            vec!["ssm:GetParameters".to_string()],
            vec![parameter_arn.clone()],
        ),
        (vec!["kms:Decrypt".to_string()], vec![key.clone()]),
    ];
    want.sort();
    assert_eq!(found, want, "{policy}");
    // The managed policy stays attached.
    let iam = aws_sdk_iam::Client::new(&h.sdk);
    let attached = iam
        .list_attached_role_policies()
        .role_name(&names.execution_role)
        .send()
        .await?;
    assert!(
        attached
            .attached_policies()
            .iter()
            .any(|p| p.policy_name() == Some("AmazonECSTaskExecutionRolePolicy"))
    );

    // Widened out of band (every secret of the account): compared and written back.
    iam.put_role_policy()
        .role_name(&names.execution_role)
        .policy_name("worker")
        .policy_document(
            serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "*"}]})
                .to_string(),
        )
        .send()
        .await?;
    let want_back = policy.clone();
    wait_inline(&h, name, &names, "written back", |p| {
        p.as_deref()
            .is_some_and(|p| desired::same_policy(p, &want_back))
    })
    .await?;

    // One secret left, no key: the policy is rewritten to just that parameter.
    h.apply_yaml(&worker_yaml(
        name,
        &format!("secrets:\n- name: LICENSE\n  valueFrom: \"{parameter_arn}\""),
    ))
    .await?;
    let policy = wait_inline(&h, name, &names, "only the parameter", |p| {
        p.as_deref().is_some_and(|p| {
            statements(p).is_ok_and(|s| {
                s == vec![(
                    vec!["ssm:GetParameters".to_string()],
                    vec![parameter_arn.clone()],
                )]
            })
        })
    })
    .await?;
    assert!(desired::same_policy(
        policy.as_deref().unwrap_or_default(),
        &desired::execution_policy(&h.api.get(name).await?.spec).expect("a policy")
    ));

    // No secrets: no inline policy, and a task definition without secrets.
    h.apply_yaml(&worker_yaml(name, "env:\n- name: MODEL\n  value: small"))
        .await?;
    wait_inline(&h, name, &names, "removed", Option::is_none).await?;
    // The family's active revision: registered without secrets.
    let ecs = aws_sdk_ecs::Client::new(&h.sdk);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let td = ecs
            .describe_task_definition()
            .task_definition(&names.task_family)
            .send()
            .await?;
        let c = &td
            .task_definition()
            .expect("task definition")
            .container_definitions()[0];
        if c.secrets().is_empty() {
            assert!(c.environment().iter().any(|kv| kv.name() == Some("MODEL")));
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "task definition still has secrets: {:?}",
            c.secrets()
        );
        h.poke(name).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    h.stop_controller().await;
    Ok(())
}

/// The example of docs/secrets.md is admitted by the real API server as written, and the
/// policy it gets is the one the page describes: the secret once (its JSON-key entry is the
/// same secret), the parameter, and the key.
#[tokio::test]
async fn the_documented_example_is_admitted_and_granted_as_described() -> anyhow::Result<()> {
    use kube::api::{Api, DynamicObject, PostParams};
    let doc = std::fs::read_to_string(testbed::repo_root().join("docs/secrets.md"))?;
    let block = doc
        .split("```yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .ok_or_else(|| anyhow::anyhow!("docs/secrets.md has no yaml example"))?;
    let example: serde_json::Value = serde_yaml::from_str(block)?;
    let mut spec = ecs_worker_operator::api::testing::minimal_spec_json();
    for (k, v) in example["spec"]
        .as_object()
        .ok_or_else(|| anyhow::anyhow!("the example has no spec"))?
    {
        spec[k] = v.clone();
    }

    let t = testbed::TestNamespace::new("secrets-doc").await?;
    crate::common::install_crd(&t.client).await?;
    let ar = kube::api::ApiResource::erase::<EcsSelfTerminatingWorker>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(t.client.clone(), &t.name, &ar);
    let obj: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "ecsworker.dev/v1alpha1", "kind": "EcsSelfTerminatingWorker",
        "metadata": { "name": "documented" }, "spec": spec,
    }))?;
    let pp = PostParams {
        dry_run: true,
        field_manager: None,
    };
    api.create(&pp, &obj).await?;

    let spec: ecs_worker_operator::api::EcsSelfTerminatingWorkerSpec =
        serde_json::from_value(spec)?;
    assert_eq!(spec.secrets.len(), 3);
    let policy = desired::execution_policy(&spec).expect("a policy");
    let mut found = statements(&policy)?;
    found.sort();
    let mut want = vec![
        (
            vec!["secretsmanager:GetSecretValue".to_string()],
            vec![
                "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/video-encoder/db-AbCdEf"
                    .to_string(),
            ],
        ),
        (
            vec!["ssm:GetParameters".to_string()],
            vec![
                "arn:aws:ssm:us-east-1:111122223333:parameter/prod/video-encoder/license"
                    .to_string(),
            ],
        ),
        (
            vec!["kms:Decrypt".to_string()],
            vec![
                "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
                    .to_string(),
            ],
        ),
    ];
    want.sort();
    assert_eq!(found, want, "{policy}");
    Ok(())
}
