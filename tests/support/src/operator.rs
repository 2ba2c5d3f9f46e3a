//! The operator binary as its own process against a test control plane and an AWS emulator:
//! the one way benches and tests start it.

use std::path::Path;
use std::process::{Command, Stdio};

/// The `run` command of the operator `binary` (a bench or integration test has its path in
/// `CARGO_BIN_EXE_ecs-worker-operator`): the control plane's admin `kubeconfig`, `namespace`
/// only, every AWS call to `aws_endpoint` with the emulator credentials, metrics on a free
/// loopback port, output appended to `log`. The operator's settings that the environment could
/// change (sharding, leader election, drift interval, log format) keep their defaults.
pub fn command(
    binary: &Path,
    kubeconfig: &Path,
    namespace: &str,
    aws_endpoint: &str,
    log: &Path,
) -> std::io::Result<Command> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let mut cmd = Command::new(binary);
    cmd.args([
        "run",
        "--namespace",
        namespace,
        "--aws-endpoint",
        aws_endpoint,
        "--emulator-credentials",
        "--metrics-addr",
        &format!("127.0.0.1:{}", crate::free_port()),
    ])
    .arg("--kubeconfig")
    .arg(kubeconfig)
    .env("NO_COLOR", "1")
    .env("AWS_EC2_METADATA_DISABLED", "true")
    .stdin(Stdio::null())
    .stdout(Stdio::from(out.try_clone()?))
    .stderr(Stdio::from(out));
    for var in [
        "LABEL_SELECTOR",
        "LEADER_ELECTION",
        "DRIFT_INTERVAL_SECONDS",
        "LOG_FORMAT",
    ] {
        cmd.env_remove(var);
    }
    Ok(cmd)
}
