//! Secret values never travel. A worker takes its AWS keys from a Secret with distinctive
//! values; the real operator binary (a child process, `RUST_LOG=trace`, text logs and then JSON
//! logs) provisions it against moto, runs a cycle with the real worker, sees the Secret rotated,
//! deleted and re-created, and deletes the worker. Then no value (access key id, secret key,
//! session token of every version of the Secret, raw, URL-encoded or base64 at any alignment)
//! may appear in the operator's logs, the namespace's Events, any status the object had, a task
//! definition or task in moto, the launch template (user data decoded too), or `/metrics`.
//! The worker also names an SSM SecureString parameter in `spec.secrets`: its ARN reaches the
//! task definition, its value (in any of the same forms) reaches none of those places.

use crate::common::{Harness, trigger, worker_yaml, workspace_binary};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use ecs_worker_operator::api::conditions::{self, reason};
use ecs_worker_operator::api::{EcsSelfTerminatingWorker, Phase, RunOutcome};
use ecs_worker_operator::controller::credentials::{
    ACCESS_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN,
};
use ecs_worker_operator::plan::desired::Names;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use testbed::agent::{Agent, Play, Player};

/// One version of the credentials Secret. The values look like AWS keys (the secret key has
/// `/` and `+`, so its URL-encoded form differs) and occur nowhere else.
struct Keys {
    access_key_id: &'static str,
    secret_access_key: &'static str,
    session_token: &'static str,
}

const VERSIONS: [Keys; 3] = [
    Keys {
        access_key_id: "AKIAQXLEAKCHECK1V7NZ",
        secret_access_key: "lEaKcHeCk1/sEcReTkEy+Zq8Wv3Tn6Rb2Ym9Hx4Jd7Gs",
        session_token: "IQoJleakcheck1SessionTokenZmFrZS10b2tlbi1vbmU+Tq7Vx3Wp9Kd2Lr5Ns8",
    },
    Keys {
        access_key_id: "AKIAQXLEAKCHECK2V7NZ",
        secret_access_key: "lEaKcHeCk2/sEcReTkEy+Pm4Dk8Qs1Xw6Uj3Ez7Ct5Ha",
        session_token: "IQoJleakcheck2SessionTokenZmFrZS10b2tlbi10d28+Bf6Gy2Hn8Jm4Ko1Lp3",
    },
    Keys {
        access_key_id: "AKIAQXLEAKCHECK3V7NZ",
        secret_access_key: "lEaKcHeCk3/sEcReTkEy+Rt5Yu7Io9Pa2Sd4Fg6Hj8Kl",
        session_token: "IQoJleakcheck3SessionTokenZmFrZS10b2tlbi10aHJlZQ+Wq1Er3Ty5Ui7Op9",
    },
];

impl Keys {
    fn values(&self) -> [(&'static str, &'static str); 3] {
        [
            (ACCESS_KEY_ID, self.access_key_id),
            (SECRET_ACCESS_KEY, self.secret_access_key),
            (SESSION_TOKEN, self.session_token),
        ]
    }
}

/// Value of the SSM SecureString parameter the worker names in `spec.secrets`; it occurs
/// nowhere else.
const PARAMETER_VALUE: &str = "ssm-LeakCheck-Vq7/Zp+Kd3Wm8Rt2Xy5LnQ4s";

/// The forms a value can take on its way somewhere: itself, URL-encoded, and base64 (standard
/// and URL-safe) at each of the three byte alignments it can have inside a longer encoded
/// text. For base64, only the characters that depend on the value alone are kept.
fn forms(value: &str) -> Vec<(String, String)> {
    let mut out = vec![("raw".to_string(), value.to_string())];
    let encoded: String = value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    if encoded != value {
        out.push(("url-encoded".into(), encoded));
    }
    for (name, engine) in [("base64", &STANDARD), ("base64url", &URL_SAFE)] {
        for align in 0..3usize {
            let mut bytes = vec![0u8; align];
            bytes.extend_from_slice(value.as_bytes());
            let text = engine.encode(&bytes);
            // The first group holds prefix bytes unless aligned; the last may hold what follows.
            let start = if align == 0 { 0 } else { 4 };
            let end = text.trim_end_matches('=').len().saturating_sub(4);
            if end > start + 16 {
                out.push((
                    format!("{name} at offset {align}"),
                    text[start..end].to_string(),
                ));
            }
        }
    }
    out
}

/// Every (place, key, form) where a value of `keys` shows up in `places`.
fn leaks(keys: &[Keys], places: &[(String, String)]) -> Vec<String> {
    let mut found = Vec::new();
    for (place, text) in places {
        for (version, k) in keys.iter().enumerate() {
            for (key, value) in k.values() {
                for (form, needle) in forms(value) {
                    if let Some(at) = text.find(&needle) {
                        // What surrounds it, for the report.
                        let from = text.floor_char_boundary(at.saturating_sub(200));
                        let to = text.ceil_char_boundary((at + needle.len() + 80).min(text.len()));
                        // A JSON log line names the code that wrote it.
                        let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
                        let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
                        let target =
                            serde_json::from_str::<serde_json::Value>(&text[line_start..line_end])
                                .ok()
                                .and_then(|v| {
                                    v.get("target").and_then(|t| t.as_str()).map(str::to_owned)
                                })
                                .map(|t| format!(" (target {t})"))
                                .unwrap_or_default();
                        found.push(format!(
                            "{key} of Secret version {} ({form}) in {place}{target}: …{}…",
                            version + 1,
                            text[from..to].replace('\n', " ")
                        ));
                    }
                }
            }
        }
    }
    found
}

#[test]
fn the_leak_search_finds_every_planted_form() {
    let clean = "level=INFO msg=\"provisioned\" key=AKIA**** secret=** redacted **".to_string();
    assert!(leaks(&VERSIONS, &[("clean".into(), clean)]).is_empty());
    for (version, keys) in VERSIONS.iter().enumerate() {
        for (key, value) in keys.values() {
            let mut samples = vec![
                format!("DEBUG credentials {{ {key}: \"{value}\" }}"),
                format!(
                    "body=Action=GetQueueUrl&Secret={}",
                    value.replace('/', "%2F").replace('+', "%2B")
                ),
            ];
            // Inside a Secret's base64 data and inside base64 user data, at every alignment.
            for prefix in ["", "x", "xy", "{\"k\":\""] {
                let plain = format!("{prefix}{value}\"}}");
                samples.push(format!("data: {}", STANDARD.encode(&plain)));
                samples.push(format!("token={}", URL_SAFE.encode(&plain)));
            }
            for sample in samples {
                let found = leaks(&VERSIONS, &[("sample".into(), sample.clone())]);
                assert!(
                    found
                        .iter()
                        .any(|f| f.starts_with(&format!("{key} of Secret version {}", version + 1))),
                    "{key} not found in {sample}"
                );
            }
        }
    }
}

fn secret(keys: &Keys) -> Secret {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": { "name": "aws-keys" },
        "stringData": {
            ACCESS_KEY_ID: keys.access_key_id,
            SECRET_ACCESS_KEY: keys.secret_access_key,
            SESSION_TOKEN: keys.session_token,
        },
    }))
    .expect("a Secret")
}

/// The operator binary as a child process, logs in files.
struct Operator {
    guard: testbed::process::Guard,
    log: PathBuf,
    metrics: String,
}

impl Operator {
    async fn start(h: &Harness, dir: &Path, name: &str, json: bool) -> anyhow::Result<Operator> {
        let cp = testbed::ControlPlane::shared()?;
        let port = testbed::free_port();
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log)?;
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ecs-worker-operator"));
        cmd.arg("run")
            .arg("--kubeconfig")
            .arg(cp.kubeconfig_path())
            .args(["--namespace", &h.ns])
            .args(["--aws-endpoint", h.moto.endpoint()])
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .args(["--identity", name])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "trace")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        if json {
            cmd.args(["--log-format", "json"]);
        }
        let guard = testbed::process::spawn(name, cmd)?;
        let operator = Operator {
            guard,
            log,
            metrics: format!("http://127.0.0.1:{port}/metrics"),
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client
                .get(operator.metrics.replace("/metrics", "/healthz"))
                .send()
                .await
                && r.status().is_success()
            {
                return Ok(operator);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the operator did not serve /healthz; log: {}",
                operator.log.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn metrics(&self) -> anyhow::Result<String> {
        Ok(reqwest::get(&self.metrics).await?.text().await?)
    }

    /// SIGTERM, wait; returns the whole log.
    fn stop(mut self) -> anyhow::Result<String> {
        self.guard.stop();
        Ok(std::fs::read_to_string(&self.log)?)
    }
}

/// What moto holds that the operator wrote and a value could hide in: task definitions (every
/// revision, active or not), tasks (with their overrides), launch template versions (user data
/// decoded) and the Auto Scaling group.
async fn aws_places(
    h: &Harness,
    names: &Names,
    when: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let ecs = aws_sdk_ecs::Client::new(&h.sdk);
    let ec2 = aws_sdk_ec2::Client::new(&h.sdk);
    let asg = aws_sdk_autoscaling::Client::new(&h.sdk);
    let mut places = Vec::new();
    let mut revisions = 0;
    for status in [
        aws_sdk_ecs::types::TaskDefinitionStatus::Active,
        aws_sdk_ecs::types::TaskDefinitionStatus::Inactive,
    ] {
        let arns = ecs
            .list_task_definitions()
            .status(status)
            .send()
            .await?
            .task_definition_arns()
            .to_vec();
        for arn in arns {
            let def = ecs
                .describe_task_definition()
                .task_definition(&arn)
                .send()
                .await?;
            places.push((
                format!("task definition {arn} ({when})"),
                format!("{def:?}"),
            ));
            revisions += 1;
        }
    }
    for desired in [
        aws_sdk_ecs::types::DesiredStatus::Running,
        aws_sdk_ecs::types::DesiredStatus::Stopped,
    ] {
        let Ok(list) = ecs
            .list_tasks()
            .cluster(&names.cluster)
            .desired_status(desired)
            .send()
            .await
        else {
            continue; // the cluster is gone
        };
        if list.task_arns().is_empty() {
            continue;
        }
        let tasks = ecs
            .describe_tasks()
            .cluster(&names.cluster)
            .set_tasks(Some(list.task_arns().to_vec()))
            .send()
            .await?;
        places.push((format!("tasks ({when})"), format!("{tasks:?}")));
    }
    let templates = ec2.describe_launch_templates().send().await?;
    for t in templates.launch_templates() {
        let id = t.launch_template_id().unwrap_or_default();
        let versions = ec2
            .describe_launch_template_versions()
            .launch_template_id(id)
            .send()
            .await?;
        for v in versions.launch_template_versions() {
            let user_data = v
                .launch_template_data()
                .and_then(|d| d.user_data())
                .unwrap_or_default();
            let decoded = STANDARD
                .decode(user_data)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            let place = format!(
                "launch template {id} version {} ({when})",
                v.version_number().unwrap_or_default()
            );
            places.push((place.clone(), format!("{v:?}")));
            places.push((format!("{place} user data"), decoded));
        }
    }
    let groups = asg.describe_auto_scaling_groups().send().await?;
    places.push((
        format!("auto scaling groups ({when})"),
        format!("{groups:?}"),
    ));
    println!("{when}: {revisions} task definition revision(s) described");
    Ok(places)
}

/// Every Event of the namespace, both APIs, as JSON.
async fn events(h: &Harness) -> anyhow::Result<(usize, String)> {
    let new: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(h.client.clone(), &h.ns);
    let old: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(h.client.clone(), &h.ns);
    let new = new.list(&ListParams::default()).await?;
    let old = old.list(&ListParams::default()).await?;
    Ok((
        new.items.len(),
        format!(
            "{}\n{}",
            serde_json::to_string(&new)?,
            serde_json::to_string(&old)?
        ),
    ))
}

/// Waits for `pred` on the worker and keeps the object (status included) it saw.
async fn wait_and_keep(
    h: &Harness,
    seen: &mut Vec<(String, String)>,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&EcsSelfTerminatingWorker) -> bool,
) -> anyhow::Result<EcsSelfTerminatingWorker> {
    let w = h.wait_for("keys", timeout, what, pred).await?;
    seen.push((
        format!("the object when {what}"),
        serde_json::to_string(&w)?,
    ));
    Ok(w)
}

fn degraded_by(w: &EcsSelfTerminatingWorker, r: &str) -> bool {
    w.condition(conditions::DEGRADED)
        .is_some_and(|c| c.status == "True" && c.reason == r)
}

#[tokio::test]
async fn secret_values_appear_in_no_log_event_status_aws_resource_or_metric() -> anyhow::Result<()>
{
    let began = Instant::now();
    let h = Harness::new("secrets").await?;
    let dir = tempfile::tempdir()?;
    let secrets: Api<Secret> = Api::namespaced(h.client.clone(), &h.ns);
    let names = Names::new(&h.ns, "keys");
    let mut places: Vec<(String, String)> = Vec::new();

    // Provisioning and one run, text logs.
    let operator = Operator::start(&h, dir.path(), "operator-text", false).await?;
    secrets
        .create(&PostParams::default(), &secret(&VERSIONS[0]))
        .await?;
    // A parameter in Parameter Store, named by ARN in spec.secrets.
    let ssm = aws_sdk_ssm::Client::new(&h.sdk);
    ssm.put_parameter()
        .name("/team/leak-check/license")
        .value(PARAMETER_VALUE)
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await?;
    let parameter_arn = ssm
        .get_parameter()
        .name("/team/leak-check/license")
        .send()
        .await?
        .parameter()
        .and_then(|p| p.arn())
        .ok_or_else(|| anyhow::anyhow!("no parameter ARN"))?
        .to_string();
    let handled = dir.path().join("handled");
    let spec = format!(
        "secrets:\n- name: LICENSE_KEY\n  valueFrom: \"{parameter_arn}\"\ncredentials:\n  secretRef:\n    name: aws-keys\nqueue:\n  receiveWaitTimeSeconds: 1\n  visibilityTimeoutSeconds: 30\nworker:\n  emptyReceives: 1\n  handler: \"cat >> {0}; echo >> {0}\"",
        handled.display()
    );
    h.apply_yaml(&worker_yaml("keys", &spec)).await?;
    let w = wait_and_keep(&h, &mut places, "Ready", Duration::from_secs(90), |w| {
        w.condition(conditions::READY)
            .is_some_and(|c| c.status == "True")
    })
    .await?;
    let queue_url = w
        .status
        .as_ref()
        .and_then(|s| s.resources.queue_url.clone())
        .ok_or_else(|| anyhow::anyhow!("no queue url in the status"))?;
    let sqs = aws_sdk_sqs::Client::new(&h.sdk);
    for i in 0..5 {
        sqs.send_message()
            .queue_url(&queue_url)
            .message_body(format!("{{\"n\": {i}}}"))
            .send()
            .await?;
    }
    let player = Player::start(
        Agent::new(&h.sdk, &names.cluster, &names.auto_scaling_group),
        Play::RealWorker {
            binary: workspace_binary("ecs-worker")?,
            endpoint: h.moto.endpoint().into(),
            extra_env: vec![],
        },
    );
    trigger(&h.api, "keys", "1").await?;
    let w = wait_and_keep(
        &h,
        &mut places,
        "a run finished",
        Duration::from_secs(120),
        |w| {
            w.status
                .as_ref()
                .and_then(|s| s.last_run.as_ref())
                .is_some()
        },
    )
    .await?;
    let run = w.status.and_then(|s| s.last_run).expect("a run");
    assert_eq!(run.outcome, RunOutcome::Succeeded, "{run:?}");
    assert_eq!(std::fs::read_to_string(&handled)?.lines().count(), 5);
    wait_and_keep(
        &h,
        &mut places,
        "Idle after the run",
        Duration::from_secs(60),
        |w| w.status.as_ref().and_then(|s| s.phase) == Some(Phase::Idle),
    )
    .await?;
    player.stop().await;
    places.extend(aws_places(&h, &names, "after the run").await?);
    assert!(
        places
            .iter()
            .any(|(p, t)| p.starts_with("task definition") && t.contains(&parameter_arn)),
        "no task definition names {parameter_arn}"
    );

    // Rotation: the next reconcile reads the new keys.
    secrets
        .patch(
            "aws-keys",
            &PatchParams::apply("tests").force(),
            &Patch::Apply(&secret(&VERSIONS[1])),
        )
        .await?;
    trigger(&h.api, "keys", "2").await?;
    wait_and_keep(
        &h,
        &mut places,
        "trigger 2 was handled",
        Duration::from_secs(60),
        |w| {
            w.status.as_ref().and_then(|s| s.last_trigger.as_deref()) == Some("2")
                && w.condition(conditions::READY)
                    .is_some_and(|c| c.status == "True")
        },
    )
    .await?;
    places.push((
        "/metrics (text-log operator)".into(),
        operator.metrics().await?,
    ));
    places.push(("operator log (text)".into(), operator.stop()?));

    // The rest with JSON logs: the Secret deleted, the object deleted while it is missing,
    // the Secret re-created, the deletion completes.
    let operator = Operator::start(&h, dir.path(), "operator-json", true).await?;
    secrets.delete("aws-keys", &DeleteParams::default()).await?;
    h.poke("keys").await?;
    wait_and_keep(
        &h,
        &mut places,
        "Degraded SecretNotFound",
        Duration::from_secs(60),
        |w| degraded_by(w, reason::SECRET_NOT_FOUND),
    )
    .await?;
    h.api.delete("keys", &DeleteParams::default()).await?;
    wait_and_keep(
        &h,
        &mut places,
        "deletion waits for the Secret",
        Duration::from_secs(60),
        |w| {
            w.status.as_ref().and_then(|s| s.phase) == Some(Phase::Deleting)
                && degraded_by(w, reason::SECRET_NOT_FOUND)
        },
    )
    .await?;
    places.extend(aws_places(&h, &names, "while deletion waits").await?);
    secrets
        .create(&PostParams::default(), &secret(&VERSIONS[2]))
        .await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while let Some(w) = h.api.get_opt("keys").await? {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the worker was not deleted after its Secret came back: {:?}",
            w.status
        );
        if w.status.is_some() {
            places.push((
                "the object while deleting".into(),
                serde_json::to_string(&w)?,
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    places.extend(aws_places(&h, &names, "after deletion").await?);
    places.push((
        "/metrics (JSON-log operator)".into(),
        operator.metrics().await?,
    ));
    let json_log = operator.stop()?;
    let (event_count, events_text) = events(&h).await?;
    places.push(("Events of the namespace".into(), events_text));
    places.push(("operator log (JSON)".into(), json_log.clone()));

    // The operator really ran and logged at trace level, in both formats.
    let text_log = &places
        .iter()
        .find(|(p, _)| p == "operator log (text)")
        .expect("text log")
        .1;
    for (name, log) in [("text", text_log), ("JSON", &json_log)] {
        assert!(
            log.contains("TRACE") || log.contains("\"level\":\"TRACE\""),
            "the {name} log has no trace lines"
        );
    }
    assert!(
        json_log
            .lines()
            .filter(|l| !l.trim().is_empty())
            .all(|l| l.starts_with('{')),
        "the JSON log has non-JSON lines"
    );
    assert!(event_count >= 3, "only {event_count} Events recorded");

    let mut found = leaks(&VERSIONS, &places);
    for (place, text) in &places {
        for (form, needle) in forms(PARAMETER_VALUE) {
            if text.contains(&needle) {
                found.push(format!(
                    "the spec.secrets parameter's value ({form}) in {place}"
                ));
            }
        }
    }
    let bytes: usize = places.iter().map(|(_, t)| t.len()).sum();
    println!(
        "searched {} places ({} KiB: logs {} KiB text + {} KiB JSON, {event_count} Events) for {} \
         forms of 10 values in {:.1} s: {} found",
        places.len(),
        bytes / 1024,
        text_log.len() / 1024,
        json_log.len() / 1024,
        VERSIONS
            .iter()
            .flat_map(|k| k.values())
            .map(|(_, v)| forms(v).len())
            .sum::<usize>()
            + forms(PARAMETER_VALUE).len(),
        began.elapsed().as_secs_f64(),
        found.len()
    );
    assert!(
        found.is_empty(),
        "Secret values leaked:\n{}",
        found.join("\n")
    );
    Ok(())
}
