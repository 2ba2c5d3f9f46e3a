//! kstatus, the status library Flux, kpt and `kubectl wait`-style tools use, run over objects
//! the tests read from the API server: `hack/kstatus.sh` builds a tiny Go command around
//! `sigs.k8s.io/cli-utils/pkg/kstatus/status` (cached like the Kubernetes binaries).

use std::io::Write;
use std::process::{Command, Stdio};

/// kstatus's verdict on one object: `Current`, `InProgress`, `Failed`, ... and its message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Verdict {
    pub status: String,
    pub message: String,
    #[serde(default)]
    pub error: Option<String>,
}

/// Computes the kstatus verdict of each object (in order).
pub fn compute<T: serde::Serialize>(objects: &[T]) -> anyhow::Result<Vec<Verdict>> {
    let bin = crate::hack_output("kstatus.sh")?;
    let mut child = Command::new(bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut input = Vec::new();
    for o in objects {
        serde_json::to_writer(&mut input, o)?;
        input.push(b'\n');
    }
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("kstatus stdin"))?
        .write_all(&input)?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "kstatus failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts = String::from_utf8(out.stdout)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<Vec<Verdict>, _>>()?;
    anyhow::ensure!(
        verdicts.len() == objects.len(),
        "kstatus answered {} times for {} objects",
        verdicts.len(),
        objects.len()
    );
    if let Some(e) = verdicts.iter().find_map(|v| v.error.as_ref()) {
        anyhow::bail!("kstatus could not read an object: {e}");
    }
    Ok(verdicts)
}
