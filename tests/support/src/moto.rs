//! The moto AWS emulator in server mode, one server per [`Moto`] value.
//!
//! The server runs `python/moto_ext.py` (moto plus the test-only ECS agent calls and fixes, ECS
//! task transitions frozen) from the project venv that `hack/moto-venv.sh` creates.

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
