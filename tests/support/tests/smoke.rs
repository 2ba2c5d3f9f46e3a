//! The test bed itself: a real kube-apiserver + etcd and a real moto server answer the calls the
//! operator makes.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use std::time::Duration;
use testbed::{ControlPlane, Moto, TestNamespace};

fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("valid object")
}

#[tokio::test]
async fn apiserver_serves_crds_status_secrets_events_and_leases() -> anyhow::Result<()> {
    let t = TestNamespace::new("smoke").await?;
    let crds: Api<CustomResourceDefinition> = Api::all(t.client.clone());
    let crd: CustomResourceDefinition = from_json(serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.smoke.testbed.dev"},
        "spec": {"group": "smoke.testbed.dev", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
                    "status": {"type": "object", "properties": {"phase": {"type": "string"}}}}}}}]}
    }));
    crds.patch(
        "widgets.smoke.testbed.dev",
        &PatchParams::apply("smoke").force(),
        &Patch::Apply(&crd),
    )
    .await?;
    let established = kube::runtime::wait::await_condition(
        crds.clone(),
        "widgets.smoke.testbed.dev",
        kube::runtime::wait::conditions::is_crd_established(),
    );
    tokio::time::timeout(Duration::from_secs(30), established).await??;

    let gvk = GroupVersionKind::gvk("smoke.testbed.dev", "v1", "Widget");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "widgets");
    let widgets: Api<DynamicObject> = Api::namespaced_with(t.client.clone(), &t.name, &ar);
    let w: DynamicObject = from_json(serde_json::json!({
        "apiVersion": "smoke.testbed.dev/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 3}
    }));
    widgets.create(&PostParams::default(), &w).await?;
    widgets
        .patch_status(
            "w1",
            &PatchParams::apply("smoke").force(),
            &Patch::Apply(serde_json::json!({
                "apiVersion": "smoke.testbed.dev/v1", "kind": "Widget", "status": {"phase": "Ready"}
            })),
        )
        .await?;
    let read = widgets.get("w1").await?;
    assert_eq!(read.data["status"]["phase"], "Ready");
    assert_eq!(read.data["spec"]["size"], 3);

    let secrets: Api<Secret> = Api::namespaced(t.client.clone(), &t.name);
    secrets.create(&PostParams::default(), &from_json(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "v"}
    }))).await?;
    let s = secrets.get("s").await?;
    assert_eq!(s.data.expect("data")["k"].0, b"v".to_vec());

    let events: Api<Event> = Api::namespaced(t.client.clone(), &t.name);
    events.create(&PostParams::default(), &from_json(serde_json::json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e1"},
        "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "smoke", "reportingInstance": "smoke-1",
        "action": "Test", "reason": "Smoke", "type": "Normal", "note": "hello",
        "regarding": {"apiVersion": "smoke.testbed.dev/v1", "kind": "Widget", "name": "w1", "namespace": t.name}
    }))).await?;
    assert_eq!(events.get("e1").await?.note.as_deref(), Some("hello"));

    let leases: Api<Lease> = Api::namespaced(t.client.clone(), &t.name);
    leases
        .create(
            &PostParams::default(),
            &from_json(serde_json::json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l1"},
                "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}
            })),
        )
        .await?;
    assert_eq!(
        leases
            .get("l1")
            .await?
            .spec
            .expect("spec")
            .holder_identity
            .as_deref(),
        Some("a")
    );
    Ok(())
}

#[test]
fn kubectl_reports_the_pinned_version_and_readyz_ok() -> anyhow::Result<()> {
    let cp = ControlPlane::shared()?;
    let out = cp.kubectl().args(["version", "-o", "json"]).output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["serverVersion"]["gitVersion"], "v1.34.4");
    assert_eq!(v["clientVersion"]["gitVersion"], "v1.34.4");
    let ready = cp.kubectl().args(["get", "--raw", "/readyz"]).output()?;
    assert_eq!(String::from_utf8_lossy(&ready.stdout).trim(), "ok");
    Ok(())
}

#[tokio::test]
async fn moto_answers_every_client_through_one_endpoint() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let config = moto.sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let url = sqs
        .create_queue()
        .queue_name("smoke")
        .send()
        .await?
        .queue_url()
        .expect("url")
        .to_string();
    assert!(url.starts_with(moto.endpoint()), "{url}");
    let ssm = aws_sdk_ssm::Client::new(&config);
    let ami = ssm
        .get_parameter()
        .name("/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id")
        .send()
        .await?;
    let ami = ami
        .parameter()
        .and_then(|p| p.value())
        .expect("ami")
        .to_string();
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let images = ec2.describe_images().image_ids(&ami).send().await?;
    assert_eq!(images.images().len(), 1, "the SSM AMI exists in EC2");
    let ecs = aws_sdk_ecs::Client::new(&config);
    ecs.create_cluster().cluster_name("smoke").send().await?;
    let asg = aws_sdk_autoscaling::Client::new(&config);
    assert!(
        asg.describe_auto_scaling_groups()
            .send()
            .await?
            .auto_scaling_groups()
            .is_empty()
    );
    let iam = aws_sdk_iam::Client::new(&config);
    iam.create_role()
        .role_name("smoke")
        .assume_role_policy_document("{}")
        .send()
        .await?;
    let logs = aws_sdk_cloudwatchlogs::Client::new(&config);
    logs.create_log_group()
        .log_group_name("/smoke")
        .send()
        .await?;
    assert_eq!(
        logs.describe_log_groups().send().await?.log_groups().len(),
        1
    );
    Ok(())
}

#[tokio::test]
async fn agent_registers_instances_and_ends_tasks_with_an_exit_code() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let config = moto.sdk_config().await;
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let ssm = aws_sdk_ssm::Client::new(&config);
    let ami = ssm
        .get_parameter()
        .name("/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id")
        .send()
        .await?;
    let ami = ami
        .parameter()
        .and_then(|p| p.value())
        .expect("ami")
        .to_string();
    ec2.create_launch_template()
        .launch_template_name("lt-smoke")
        .launch_template_data(
            aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                .image_id(&ami)
                .instance_type("t3.micro".into())
                .build(),
        )
        .send()
        .await?;
    // A later version with user data: the moto extension keeps launches from it working.
    ec2.create_launch_template_version()
        .launch_template_name("lt-smoke")
        .launch_template_data(
            aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                .image_id(&ami)
                .instance_type("t3.micro".into())
                .user_data("IyEvYmluL3NoCg==")
                .build(),
        )
        .send()
        .await?;
    let asg = aws_sdk_autoscaling::Client::new(&config);
    asg.create_auto_scaling_group()
        .auto_scaling_group_name("g")
        .launch_template(
            aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                .launch_template_name("lt-smoke")
                .version("$Latest")
                .build(),
        )
        .min_size(0)
        .max_size(1)
        .desired_capacity(1)
        .availability_zones("us-east-1a")
        .send()
        .await?;
    let ecs = aws_sdk_ecs::Client::new(&config);
    ecs.create_cluster().cluster_name("c").send().await?;
    let agent = testbed::agent::Agent::new(&config, "c", "g");
    let added = agent.sync().await?;
    assert_eq!(added.len(), 1);
    assert!(agent.sync().await?.is_empty(), "registration is idempotent");
    ecs.register_task_definition()
        .family("f")
        .container_definitions(
            aws_sdk_ecs::types::ContainerDefinition::builder()
                .name("worker")
                .image("w")
                .memory_reservation(6000)
                .build(),
        )
        .send()
        .await?;
    let task = ecs
        .run_task()
        .cluster("c")
        .task_definition("f")
        .started_by("run-1")
        .send()
        .await?;
    let arn = task.tasks()[0].task_arn().expect("arn").to_string();
    for _ in 0..6 {
        // Frozen transitions: describing never ends the task.
        assert_eq!(agent.tasks("RUNNING").await?.len(), 1);
    }
    agent
        .end_task(&arn, 3, "Essential container in task exited")
        .await?;
    let stopped = agent.tasks("STOPPED").await?;
    assert_eq!(stopped[0].last_status(), Some("STOPPED"));
    assert_eq!(stopped[0].containers()[0].exit_code(), Some(3));
    assert_eq!(
        stopped[0].stop_code().map(|c| c.as_str()),
        Some("EssentialContainerExited")
    );

    asg.set_desired_capacity()
        .auto_scaling_group_name("g")
        .desired_capacity(0)
        .send()
        .await?;
    agent.sync().await?;
    assert!(
        agent.registered().await?.is_empty(),
        "instances that left the group are deregistered"
    );
    Ok(())
}
