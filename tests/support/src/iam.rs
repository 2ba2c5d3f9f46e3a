//! IAM enforced in the emulator, for every principal of a test (`python/moto_iam.py` evaluates
//! the policies; it documents what is and is not evaluated).
//!
//! [`Principals::enforce`] creates the operator's user ([`OPERATOR_USER`], whose only policy is
//! `deploy/aws/operator-policy.json`) and the test's admin user ([`ADMIN_USER`]), then turns
//! authentication on: every later request must be signed by a known principal and is authorized
//! against its policies; [`Principals::denials`] lists the refused ones. Roles the operator
//! created are assumed as ECS and EC2 assume them ([`Principals::task_role`],
//! [`Principals::instance_profile_role`]). Servers without [`Principals::enforce`] keep moto's
//! default: no authentication at all, any signature accepted.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_sqs::config::{Credentials, SharedCredentialsProvider};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The operator's IAM user.
///
/// Its only policy is `deploy/aws/operator-policy.json`, read from the repository at test time.
pub const OPERATOR_USER: &str = "ecs-worker-operator";
/// The test's own IAM user.
///
/// Allowed everything: the test's own calls (sending messages, reading state, the EC2 side of
/// the ECS agent play).
pub const ADMIN_USER: &str = "testbed-admin";
/// The service principal ECS assumes task roles as.
pub const TASKS_SERVICE: &str = "ecs-tasks.amazonaws.com";
/// The service principal EC2 assumes instance profile roles as.
pub const EC2_SERVICE: &str = "ec2.amazonaws.com";

/// One principal's credentials. `Debug` does not print the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Keys {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    /// The principal's ARN (user, or `assumed-role/...` session).
    pub arn: String,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({}, {})", self.arn, self.access_key_id)
    }
}

impl Keys {
    fn from_json(v: &serde_json::Value) -> anyhow::Result<Keys> {
        let field = |name: &str| {
            v.get(name)
                .and_then(|x| x.as_str())
                .map(str::to_string)
                .ok_or_else(|| anyhow::anyhow!("no {name} in {v}"))
        };
        Ok(Keys {
            access_key_id: field("AccessKeyId")?,
            secret_access_key: field("SecretAccessKey")?,
            session_token: field("SessionToken").ok(),
            arn: field("Arn")?,
        })
    }

    /// A static credentials provider of these keys.
    pub fn provider(&self) -> SharedCredentialsProvider {
        SharedCredentialsProvider::new(Credentials::new(
            self.access_key_id.clone(),
            self.secret_access_key.clone(),
            self.session_token.clone(),
            None,
            "testbed-iam",
        ))
    }

    /// SDK configuration for `endpoint` (region us-east-1) signing with these keys.
    pub fn sdk_config(&self, endpoint: &str) -> SdkConfig {
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(crate::moto::REGION))
            .endpoint_url(endpoint)
            .credentials_provider(self.provider())
            .build()
    }

    /// The standard AWS environment variables of these keys (what a container gets).
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("AWS_ACCESS_KEY_ID".to_string(), self.access_key_id.clone()),
            (
                "AWS_SECRET_ACCESS_KEY".to_string(),
                self.secret_access_key.clone(),
            ),
        ];
        if let Some(token) = &self.session_token {
            env.push(("AWS_SESSION_TOKEN".to_string(), token.clone()));
        }
        env
    }
}

/// A request the server refused (or could not authenticate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The caller's ARN (or `access key ...` when the key is unknown).
    pub principal: String,
    /// The API call, e.g. `ecs:RunTask`.
    pub operation: String,
    /// The IAM action that was not allowed (the call's own, or one AWS checks with it, such as
    /// `iam:PassRole`).
    pub action: String,
    pub resource: String,
    /// Why: no statement allows it, an explicit Deny (naming the statement), an unmapped call,
    /// an authentication failure.
    pub reason: String,
    /// The condition keys the request carried (besides the principal's own).
    pub context: String,
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} may not {} on {} (call {}): {}",
            self.principal, self.action, self.resource, self.operation, self.reason
        )?;
        if !self.context.is_empty() && self.context != "{}" {
            write!(f, "; request context {}", self.context)?;
        }
        Ok(())
    }
}

fn parse_denials(text: &str) -> anyhow::Result<Vec<Denial>> {
    let list: Vec<serde_json::Value> = serde_json::from_str(text)?;
    let s = |v: &serde_json::Value, k: &str| {
        v.get(k)
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| x.to_string())
            })
            .unwrap_or_default()
    };
    Ok(list
        .iter()
        .map(|v| Denial {
            principal: s(v, "principal"),
            operation: s(v, "operation"),
            action: s(v, "action"),
            resource: s(v, "resource"),
            reason: s(v, "reason"),
            context: v.get("context").map(|c| c.to_string()).unwrap_or_default(),
        })
        .collect())
}

/// A test failure message listing refused requests, one a line (repeats counted, in order of
/// first refusal).
pub fn describe_denials(found: &[Denial]) -> String {
    let mut lines: Vec<(String, usize)> = Vec::new();
    for d in found {
        let line = d.to_string();
        match lines.iter_mut().find(|(l, _)| *l == line) {
            Some((_, n)) => *n += 1,
            None => lines.push((line, 1)),
        }
    }
    let mut text = format!("{} request(s) refused by IAM:", found.len());
    for (line, n) in lines {
        text.push_str("\n  - ");
        text.push_str(&line);
        if n > 1 {
            text.push_str(&format!(" (x{n})"));
        }
    }
    text
}

/// The principals of one server with IAM enforced.
#[derive(Debug)]
pub struct Principals {
    endpoint: String,
    /// The operator's user: its only policy is `deploy/aws/operator-policy.json`.
    pub operator: Keys,
    /// The test's own user, allowed everything.
    pub admin: Keys,
    http: reqwest::Client,
    /// Assumed role sessions by (role or profile ARN, service), reused while they are valid.
    sessions: Mutex<HashMap<(String, String), Keys>>,
}

fn registry() -> &'static Mutex<HashMap<String, Arc<Principals>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<String, Arc<Principals>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

impl Principals {
    /// Creates the operator and admin users on the server at `endpoint`, then turns
    /// authentication on for every later request. Call it on a fresh server, before anything
    /// else talks to it. moto's reset (`Moto::reset`) removes the users but leaves
    /// authentication on: enforce again after one.
    pub async fn enforce(endpoint: &str) -> anyhow::Result<Arc<Principals>> {
        let policy =
            std::fs::read_to_string(crate::repo_root().join("deploy/aws/operator-policy.json"))?;
        let admin_policy = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]
        })
        .to_string();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        let user = |name: &'static str, document: String| {
            let http = http.clone();
            async move {
                let resp = http
                    .post(format!("{endpoint}/moto-api/iam-ext/user"))
                    .header("Content-Type", "application/json")
                    .body(
                        serde_json::json!({
                            "UserName": name,
                            "PolicyName": name,
                            "PolicyDocument": document
                        })
                        .to_string(),
                    )
                    .send()
                    .await?;
                let status = resp.status();
                let body = resp.text().await?;
                anyhow::ensure!(
                    status.is_success(),
                    "creating IAM user {name}: {status} {body}"
                );
                Keys::from_json(&serde_json::from_str(&body)?)
            }
        };
        let operator = user(OPERATOR_USER, policy).await?;
        let admin = user(ADMIN_USER, admin_policy).await?;
        let resp = http
            .post(format!("{endpoint}/moto-api/reset-auth"))
            .header("Content-Type", "text/plain")
            .body("0")
            .send()
            .await?;
        anyhow::ensure!(
            resp.status().is_success(),
            "turning authentication on: {}",
            resp.status()
        );
        let principals = Arc::new(Principals {
            endpoint: endpoint.to_string(),
            operator,
            admin,
            http,
            sessions: Mutex::new(HashMap::new()),
        });
        registry()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(endpoint.to_string(), principals.clone());
        Ok(principals)
    }

    /// The principals of the server at `endpoint`, when IAM is enforced there.
    pub fn for_endpoint(endpoint: &str) -> Option<Arc<Principals>> {
        let endpoint = endpoint.trim_end_matches('/');
        registry()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(endpoint)
            .cloned()
    }

    /// Forgets the server at `endpoint` (it stopped; its port may serve another one).
    pub fn forget(endpoint: &str) {
        registry()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(endpoint.trim_end_matches('/'));
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// SDK configuration signing as the admin user (the test's own calls).
    pub fn admin_sdk(&self) -> SdkConfig {
        self.admin.sdk_config(&self.endpoint)
    }

    async fn assume(
        &self,
        body: serde_json::Value,
        cache_key: (String, String),
    ) -> anyhow::Result<Keys> {
        if let Some(k) = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&cache_key)
        {
            return Ok(k.clone());
        }
        let resp = self
            .http
            .post(format!(
                "{}/moto-api/iam-ext/assume-role-as-service",
                self.endpoint
            ))
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await?;
        let status = resp.status();
        let text = resp.text().await?;
        anyhow::ensure!(
            status.is_success(),
            "{} assuming {}: {status} {text}",
            cache_key.1,
            cache_key.0
        );
        let keys = Keys::from_json(&serde_json::from_str(&text)?)?;
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(cache_key, keys.clone());
        Ok(keys)
    }

    /// Credentials of a task role, as ECS gives them to the task's containers: the role is
    /// assumed as `ecs-tasks.amazonaws.com`, so its trust policy must allow that service.
    pub async fn task_role(&self, role_arn: &str) -> anyhow::Result<Keys> {
        self.assume(
            serde_json::json!({"RoleArn": role_arn, "Service": TASKS_SERVICE, "RoleSessionName": "task"}),
            (role_arn.to_string(), TASKS_SERVICE.to_string()),
        )
        .await
    }

    /// Credentials of the role in an instance profile, as EC2 gives them to an instance
    /// launched with the profile: assumed as `ec2.amazonaws.com`.
    pub async fn instance_profile_role(&self, profile_arn: &str) -> anyhow::Result<Keys> {
        self.assume(
            serde_json::json!({"InstanceProfileArn": profile_arn, "Service": EC2_SERVICE, "RoleSessionName": "instance"}),
            (profile_arn.to_string(), EC2_SERVICE.to_string()),
        )
        .await
    }

    /// The instance profile the instances of an Auto Scaling group get: the one its launch
    /// template version names (read as admin). `None` when the group, its template or the
    /// profile is not there.
    ///
    /// moto does not apply a launch template's profile to instances, so the test bed reads the
    /// profile from the launch template and assumes its role as `ec2.amazonaws.com`
    /// ([`Principals::instance_profile_role`]).
    pub async fn group_instance_profile(&self, group: &str) -> anyhow::Result<Option<String>> {
        let sdk = self.admin_sdk();
        let asg = aws_sdk_autoscaling::Client::new(&sdk);
        let out = asg
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(group)
            .send()
            .await?;
        // The group's launch template, named directly or by its mixed instances policy.
        let Some(spec) = out
            .auto_scaling_groups()
            .first()
            .and_then(|g| {
                g.launch_template().or_else(|| {
                    g.mixed_instances_policy()?
                        .launch_template()?
                        .launch_template_specification()
                })
            })
            .cloned()
        else {
            return Ok(None);
        };
        let ec2 = aws_sdk_ec2::Client::new(&sdk);
        let mut req = ec2
            .describe_launch_template_versions()
            .versions(spec.version().unwrap_or("$Default"));
        req = match (spec.launch_template_id(), spec.launch_template_name()) {
            (Some(id), _) => req.launch_template_id(id),
            (None, Some(name)) => req.launch_template_name(name),
            (None, None) => return Ok(None),
        };
        let versions = req.send().await?;
        let Some(profile) = versions
            .launch_template_versions()
            .first()
            .and_then(|v| v.launch_template_data())
            .and_then(|d| d.iam_instance_profile())
        else {
            return Ok(None);
        };
        if let Some(arn) = profile.arn() {
            return Ok(Some(arn.to_string()));
        }
        Ok(profile.name().map(|name| {
            format!(
                "arn:aws:iam::{}:instance-profile/{name}",
                crate::moto::ACCOUNT_ID
            )
        }))
    }

    /// Every request refused so far, oldest first.
    pub async fn denials(&self) -> anyhow::Result<Vec<Denial>> {
        let resp = self
            .http
            .get(format!("{}/moto-api/iam-ext/denials", self.endpoint))
            .send()
            .await?;
        anyhow::ensure!(resp.status().is_success(), "denials: {}", resp.status());
        parse_denials(&resp.text().await?)
    }

    /// [`Principals::denials`] without an async runtime (for `Drop`): one HTTP/1.0 exchange.
    pub fn denials_blocking(&self) -> anyhow::Result<Vec<Denial>> {
        use std::io::{Read, Write};
        let authority = self
            .endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let mut stream = std::net::TcpStream::connect(authority.as_str())?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "GET /moto-api/iam-ext/denials HTTP/1.0\r\nHost: {authority}\r\n\r\n"
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let (head, body) = response
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow::anyhow!("denials: malformed response"))?;
        anyhow::ensure!(
            head.lines().next().is_some_and(|l| l.contains(" 200 ")),
            "denials: {}",
            head.lines().next().unwrap_or_default()
        );
        parse_denials(body)
    }

    /// Fails, naming principal, action and resource of each, if any request was refused.
    pub async fn assert_no_denials(&self) -> anyhow::Result<()> {
        let found = self.denials().await?;
        anyhow::ensure!(found.is_empty(), "{}", describe_denials(&found));
        Ok(())
    }

    /// Forgets the refusals (and authorization decisions) recorded so far.
    pub async fn clear_denials(&self) -> anyhow::Result<()> {
        let resp = self
            .http
            .post(format!("{}/moto-api/iam-ext/reset", self.endpoint))
            .send()
            .await?;
        anyhow::ensure!(resp.status().is_success(), "reset: {}", resp.status());
        Ok(())
    }

    /// Every authorization check so far (allowed or not), as the server's JSON records:
    /// principal, operation, action, resource, reason.
    pub async fn decisions(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let resp = self
            .http
            .get(format!("{}/moto-api/iam-ext/decisions", self.endpoint))
            .send()
            .await?;
        anyhow::ensure!(resp.status().is_success(), "decisions: {}", resp.status());
        Ok(serde_json::from_str(&resp.text().await?)?)
    }
}

/// One finding of the static policy check (`python/policy_check.py`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The policy's name as given.
    pub policy: String,
    /// parliament's issue (UNKNOWN_ACTION, UNKNOWN_CONDITION_FOR_ACTION, RESOURCE_MISMATCH,
    /// INVALID_ARN, ...) or the checker's own (TAG_KEY_NOT_FOR_ACTION, ...).
    pub issue: String,
    /// An error fails the check; the rest (RESOURCE_STAR, ...) are advice.
    pub error: bool,
    pub detail: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} {}", self.policy, self.issue, self.detail)
    }
}

/// A policy document to check statically.
pub struct PolicyDoc {
    pub name: String,
    /// A role's trust policy (resource-based: Principal, no Resource) rather than an identity
    /// policy.
    pub trust: bool,
    pub document: serde_json::Value,
}

fn run_policy_check(args: &[&str], input: &str) -> anyhow::Result<Vec<Finding>> {
    use std::io::Write;
    let python = crate::hack_output("moto-venv.sh")?;
    let script = crate::repo_root().join("tests/support/python/policy_check.py");
    let mut child = std::process::Command::new(python)
        .arg(script)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdin"))?
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "policy_check.py failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)?;
    Ok(list
        .iter()
        .map(|v| Finding {
            policy: v["policy"].as_str().unwrap_or_default().to_string(),
            issue: v["issue"].as_str().unwrap_or_default().to_string(),
            error: v["error"].as_bool().unwrap_or(true),
            detail: match &v["detail"] {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            },
        })
        .collect())
}

/// Checks policy documents against AWS's Service Authorization Reference with parliament
/// (pinned in `hack/moto-requirements.txt`), plus the checks `python/policy_check.py` adds:
/// unknown actions, condition keys that do not apply to an action, malformed ARNs, resources
/// that match none of an action's resource types, tag keys outside their actions.
pub fn check_policies(docs: &[PolicyDoc]) -> anyhow::Result<Vec<Finding>> {
    let input: Vec<serde_json::Value> = docs
        .iter()
        .map(|d| {
            serde_json::json!({
                "name": d.name,
                "kind": if d.trust { "trust" } else { "identity" },
                "document": d.document,
            })
        })
        .collect();
    run_policy_check(&[], &serde_json::Value::Array(input).to_string())
}

/// Findings about the emulator's own table: every action `python/moto_iam.py` evaluates must
/// exist in the Service Authorization Reference.
pub fn check_emulator_actions() -> anyhow::Result<Vec<Finding>> {
    run_policy_check(&["--check-map"], "")
}

/// Runs the unit tests of the emulator's policy evaluator (`python/test_moto_iam.py`: condition
/// operators, set operators, absent keys, ARN matching, explicit Deny) with the project venv.
pub fn evaluator_unit_tests() -> anyhow::Result<()> {
    let python = crate::hack_output("moto-venv.sh")?;
    let out = std::process::Command::new(python)
        .args(["-m", "unittest", "-v", "test_moto_iam"])
        .current_dir(crate::repo_root().join("tests/support/python"))
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "test_moto_iam.py failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Whether IAM allowed `action` to a principal whose ARN contains `principal`, in the
/// decisions of [`Principals::decisions`].
pub fn was_allowed(decisions: &[serde_json::Value], principal: &str, action: &str) -> bool {
    decisions.iter().any(|d| {
        d["principal"]
            .as_str()
            .is_some_and(|p| p.contains(principal))
            && d["action"] == action
            && d["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("allowed"))
    })
}
