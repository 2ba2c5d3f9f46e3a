//! The moto AWS emulator in server mode, one server per [`Moto`] value.
//!
//! The server runs `python/moto_ext.py` (moto plus the test-only ECS agent calls and fixes, ECS
//! task transitions frozen) from the project venv that `hack/moto-venv.sh` creates. It answers
//! a request AWS would refuse (a constraint of the service's model or a documented limit) as
//! AWS does and records it: [`Moto::violations`].

use crate::process::{self, Guard};
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_sqs::config::{Credentials, SharedCredentialsProvider};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Region every test uses.
pub const REGION: &str = "us-east-1";
/// moto's fixed account id.
pub const ACCOUNT_ID: &str = "123456789012";

/// A running moto server; stopped on drop.
pub struct Moto {
    guard: Guard,
    endpoint: String,
    port: u16,
}

fn venv_python() -> anyhow::Result<&'static str> {
    static PYTHON: OnceLock<Result<String, String>> = OnceLock::new();
    PYTHON
        .get_or_init(|| crate::hack_output("moto-venv.sh").map_err(|e| e.to_string()))
        .as_deref()
        .map_err(|e| anyhow::anyhow!("moto venv: {e}"))
}

impl Moto {
    /// Starts a server tied to the calling thread (use from the test's own thread).
    pub async fn start() -> anyhow::Result<Moto> {
        Self::start_with(false).await
    }

    /// Starts a server that lives until the test binary exits, whichever thread asks.
    pub async fn start_long_lived() -> anyhow::Result<Moto> {
        Self::start_with(true).await
    }

    async fn start_with(long_lived: bool) -> anyhow::Result<Moto> {
        let python = venv_python()?;
        let script = crate::repo_root().join("tests/support/python/moto_ext.py");
        let mut last_err = None;
        for _ in 0..3 {
            let port = crate::free_port();
            let mut cmd = Command::new(python);
            cmd.arg(&script)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let mut guard = if long_lived {
                process::spawn_long_lived("moto", cmd)?
            } else {
                process::spawn("moto", cmd)?
            };
            let endpoint = format!("http://127.0.0.1:{port}");
            match wait_ready(&endpoint, &mut guard).await {
                Ok(()) => {
                    return Ok(Moto {
                        guard,
                        endpoint,
                        port,
                    });
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("moto did not start")))
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// SDK configuration pointed at this server: endpoint override, fixed region, dummy keys.
    pub async fn sdk_config(&self) -> SdkConfig {
        sdk_config_for(&self.endpoint)
    }

    /// Wipes every service's state (ECS task transitions stay frozen).
    pub async fn reset(&self) -> anyhow::Result<()> {
        let resp = reqwest::Client::new()
            .post(format!("{}/moto-api/reset", self.endpoint))
            .send()
            .await?;
        anyhow::ensure!(resp.status().is_success(), "moto reset: {}", resp.status());
        Ok(())
    }
}

/// SDK configuration for any moto-compatible endpoint (region us-east-1, static dummy keys).
pub fn sdk_config_for(endpoint: &str) -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "testing", "testing", None, None, "testbed",
        )))
        .build()
}

async fn wait_ready(endpoint: &str, guard: &mut Guard) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if guard.exited() {
            anyhow::bail!("moto exited during start-up");
        }
        if let Ok(resp) = client
            .get(format!("{endpoint}/moto-api/config"))
            .send()
            .await
            && resp.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("moto at {endpoint} not ready within 60 s")
}

/// A request the server refused because AWS would refuse it: it broke a constraint of the
/// botocore service model or a documented AWS limit (`python/moto_models.py`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub service: String,
    pub operation: String,
    /// AWS's path of the member, e.g. `tags.2.member.value`.
    pub member: String,
    /// The value sent (shortened when long); `None` for a missing required member.
    pub value: Option<String>,
    /// The rule and its limit, e.g. `Member must have value less than or equal to 10`.
    pub constraint: String,
    /// Where the rule comes from: the model shape, or the AWS documentation page.
    pub source: String,
    /// The error code the request was answered with.
    pub code: String,
    /// The access key of the caller (which principal sent it).
    pub access_key_id: String,
    pub user_agent: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value = self.value.as_deref().unwrap_or("null");
        write!(
            f,
            "{}:{} {} = {:?}: {} ({}; answered {}; access key {}; {})",
            self.service,
            self.operation,
            self.member,
            value,
            self.constraint,
            self.source,
            self.code,
            self.access_key_id,
            self.user_agent
        )
    }
}

fn parse_violations(body: &str) -> anyhow::Result<Vec<Violation>> {
    let records: Vec<serde_json::Value> = serde_json::from_str(body)?;
    let text = |r: &serde_json::Value, k: &str| r[k].as_str().unwrap_or_default().to_string();
    Ok(records
        .iter()
        .map(|r| Violation {
            service: text(r, "service"),
            operation: text(r, "operation"),
            member: text(r, "member"),
            value: r["value"].as_str().map(str::to_string),
            constraint: text(r, "constraint"),
            source: text(r, "source"),
            code: text(r, "code"),
            access_key_id: text(r, "accessKeyId"),
            user_agent: text(r, "userAgent"),
        })
        .collect())
}

impl Moto {
    /// Every request this server refused because AWS would refuse it, oldest first.
    pub async fn violations(&self) -> anyhow::Result<Vec<Violation>> {
        let resp = reqwest::Client::new()
            .get(format!("{}/moto-api/strict/violations", self.endpoint))
            .send()
            .await?;
        anyhow::ensure!(resp.status().is_success(), "violations: {}", resp.status());
        parse_violations(&resp.text().await?)
    }

    /// [`Moto::violations`] without an async runtime (for `Drop`): one HTTP/1.0 exchange.
    pub fn violations_blocking(&self) -> anyhow::Result<Vec<Violation>> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "GET /moto-api/strict/violations HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n",
            self.port
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let (head, body) = response
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow::anyhow!("violations: malformed response"))?;
        anyhow::ensure!(
            head.lines().next().is_some_and(|l| l.contains(" 200 ")),
            "violations: {}",
            head.lines().next().unwrap_or_default()
        );
        parse_violations(body)
    }

    /// Fails, naming each request, if any request so far would have been refused by AWS.
    pub async fn assert_no_violations(&self) -> anyhow::Result<()> {
        let found = self.violations().await?;
        anyhow::ensure!(found.is_empty(), "{}", describe_violations(&found));
        Ok(())
    }

    /// Forgets the violations recorded so far.
    pub async fn clear_violations(&self) -> anyhow::Result<()> {
        let resp = reqwest::Client::new()
            .post(format!(
                "{}/moto-api/strict/violations/clear",
                self.endpoint
            ))
            .send()
            .await?;
        anyhow::ensure!(resp.status().is_success(), "clear: {}", resp.status());
        Ok(())
    }

    /// Makes capacity unavailable to one Auto Scaling group's launches: each entry is
    /// (instance type, `spot` or `on-demand`, EC2 error code such as
    /// `InsufficientInstanceCapacity`, `VcpuLimitExceeded` or
    /// `MaxSpotInstanceCountExceeded`). Replaces the group's earlier list; `&[]` makes
    /// everything available again. A launch that finds nothing records a `Failed` scaling
    /// activity with AWS's message (`moto_asg_capacity.py`).
    pub async fn set_unavailable(
        &self,
        group: &str,
        unavailable: &[(&str, &str, &str)],
    ) -> anyhow::Result<()> {
        let entries: Vec<serde_json::Value> = unavailable
            .iter()
            .map(|(t, market, code)| {
                serde_json::json!({ "instanceType": t, "market": market, "code": code })
            })
            .collect();
        let resp = reqwest::Client::new()
            .post(format!("{}/moto-api/asg-ext/capacity", self.endpoint))
            .json(&serde_json::json!({ "group": group, "unavailable": entries }))
            .send()
            .await?;
        let status = resp.status();
        anyhow::ensure!(
            status.is_success(),
            "capacity: {status}: {}",
            resp.text().await?
        );
        Ok(())
    }

    /// Turns the checks against AWS's models and limits on (the default) or off; off, requests
    /// reach moto unchecked and nothing is recorded.
    pub async fn set_strict(&self, enabled: bool) -> anyhow::Result<()> {
        let resp = reqwest::Client::new()
            .post(format!("{}/moto-api/strict/config", self.endpoint))
            .body(serde_json::json!({ "enabled": enabled }).to_string())
            .send()
            .await?;
        anyhow::ensure!(
            resp.status().is_success(),
            "strict config: {}",
            resp.status()
        );
        Ok(())
    }
}

/// A test failure message listing requests AWS would refuse, one a line.
pub fn describe_violations(found: &[Violation]) -> String {
    let mut text = format!("{} request(s) AWS would refuse:", found.len());
    for v in found {
        text.push_str("\n  - ");
        text.push_str(&v.to_string());
    }
    text
}
