//! Test support for ecs-worker-operator: real local components, no mocks.
//!
//! A real kube-apiserver + etcd ([`control_plane`]) and the moto AWS emulator ([`moto`]), held
//! to AWS's IAM rules for every principal ([`iam`]) and, through a fault-injecting, recording
//! proxy ([`proxy`]), to its failures and eventual consistency; [`agent`] plays the ECS agent,
//! and [`crd`] and [`operator`] install the CRD and run the operator binary against them.
//! `docs/testing.md` describes the test bed as a whole.
//!
//! Every process started here is killed when the test binary exits (normally, by panic, or by
//! signal: children get `PR_SET_PDEATHSIG`), and temporary directories are removed.

pub mod agent;
pub mod control_plane;
pub mod crd;
pub mod iam;
pub mod kstatus;
pub mod moto;
pub mod operator;
pub mod process;
pub mod proxy;

pub use control_plane::{ControlPlane, TestNamespace};
pub use moto::Moto;

use std::path::PathBuf;

/// The repository root (this crate lives in `tests/support`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root exists")
}

/// A free TCP port on 127.0.0.1 (bound and released; callers retry on the rare reuse race).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a loopback port")
}

/// The whole number in environment variable `name`, or `default` when it is not set.
pub fn env_number(name: &str, default: i64) -> anyhow::Result<i64> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a whole number")),
        Err(_) => Ok(default),
    }
}

/// Runs a `hack/` script and returns the last line it printed (the path it reports).
pub(crate) fn hack_output(script: &str) -> anyhow::Result<String> {
    Ok(hack_path(script, &[])?.display().to_string())
}

/// Runs `hack/SCRIPT ARGS` (a tool-cache script: it builds or finds a tool) and returns the
/// path it printed last.
pub fn hack_path(script: &str, args: &[&str]) -> anyhow::Result<std::path::PathBuf> {
    let out = std::process::Command::new(repo_root().join("hack").join(script))
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()?;
    anyhow::ensure!(out.status.success(), "hack/{script} failed: {}", out.status);
    let text = String::from_utf8(out.stdout)?;
    text.lines()
        .last()
        .map(|l| std::path::PathBuf::from(l.trim()))
        .ok_or_else(|| anyhow::anyhow!("hack/{script} printed nothing"))
}

/// Runs a command from the repository root: its stdout, or an error with both outputs.
pub fn run_in_repo(cmd: &mut std::process::Command) -> anyhow::Result<String> {
    let out = cmd.current_dir(repo_root()).output()?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}
