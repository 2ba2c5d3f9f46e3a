//! A real Kubernetes control plane: etcd + kube-apiserver on free loopback ports.
//!
//! Binaries come from `hack/k8s-tools.sh` (built once from Go modules, cached by version).
//! Certificates are generated with `openssl`: one CA, a serving certificate for
//! localhost/127.0.0.1 and an admin client certificate in `system:masters`. There is no
//! controller-manager and no kubelet: namespaces never finish terminating, no Pod runs, no
//! default ServiceAccount exists. Tests use a fresh namespace each ([`TestNamespace`]).

use crate::process::{self, Guard};
use anyhow::Context as _;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A running etcd + kube-apiserver pair.
pub struct ControlPlane {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    guards: Mutex<Vec<Guard>>,
}

impl ControlPlane {
    /// The control plane shared by every test of this binary, started on first use and stopped
    /// (API server first, then etcd, then its directory removed) when the binary exits.
    pub fn shared() -> anyhow::Result<&'static ControlPlane> {
        static SHARED: OnceLock<Result<&'static ControlPlane, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                std::thread::spawn(|| {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| e.to_string())?;
                    let cp = rt
                        .block_on(ControlPlane::start())
                        .map_err(|e| format!("{e:#}"))?;
                    let cp: &'static ControlPlane = Box::leak(Box::new(cp));
                    process::at_exit(|| cp.stop());
                    Ok(cp)
                })
                .join()
                .unwrap_or_else(|_| Err("control plane start-up panicked".into()))
            })
            .clone()
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Starts a new control plane (most tests want [`ControlPlane::shared`]).
    pub async fn start() -> anyhow::Result<ControlPlane> {
        let bin = PathBuf::from(crate::hack_output("k8s-tools.sh")?);
        let dir = tempfile::Builder::new()
            .prefix("ecs-worker-operator-k8s-")
            .tempdir()?
            .keep();
        let etcd_port = crate::free_port();
        let peer_port = crate::free_port();
        let port = crate::free_port();
        // From here on, dropping `cp` (also on an error) stops what started and removes `dir`.
        let cp = ControlPlane {
            dir: dir.clone(),
            bin: bin.clone(),
            port,
            guards: Mutex::new(Vec::new()),
        };
        write_certificates(&dir)?;
        let log = |name: &str| -> anyhow::Result<Stdio> {
            Ok(Stdio::from(std::fs::File::create(dir.join(name))?))
        };

        let mut etcd = Command::new(bin.join("etcd"));
        etcd.arg(format!("--data-dir={}", dir.join("etcd").display()))
            .arg(format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"))
            .arg(format!(
                "--advertise-client-urls=http://127.0.0.1:{etcd_port}"
            ))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"
            ))
            .arg(format!(
                "--initial-cluster=default=http://127.0.0.1:{peer_port}"
            ))
            .arg("--unsafe-no-fsync=true")
            .arg("--log-level=warn")
            .stdout(log("etcd.log")?)
            .stderr(log("etcd.log")?);
        cp.push(process::spawn_long_lived("etcd", etcd)?);

        let d = |f: &str| dir.join(f).display().to_string();
        let mut api = Command::new(bin.join("kube-apiserver"));
        api.arg(format!("--etcd-servers=http://127.0.0.1:{etcd_port}"))
            .arg(format!("--secure-port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg("--advertise-address=127.0.0.1")
            .arg("--endpoint-reconciler-type=none")
            .arg(format!("--tls-cert-file={}", d("server.crt")))
            .arg(format!("--tls-private-key-file={}", d("server.key")))
            .arg(format!("--client-ca-file={}", d("ca.crt")))
            .arg("--service-cluster-ip-range=10.0.0.0/24")
            .arg("--allow-privileged=true")
            .arg("--authorization-mode=RBAC")
            .arg("--disable-admission-plugins=ServiceAccount")
            .arg(format!(
                "--service-account-issuer=https://127.0.0.1:{port}/"
            ))
            .arg(format!("--service-account-key-file={}", d("sa.key")))
            .arg(format!(
                "--service-account-signing-key-file={}",
                d("sa.key")
            ))
            .arg(format!("--cert-dir={}", d("cert-dir")))
            .stdout(log("apiserver.log")?)
            .stderr(log("apiserver.log")?);
        cp.write_kubeconfig()?;
        cp.push(process::spawn_long_lived("kube-apiserver", api)?);
        cp.wait_ready()
            .await
            .with_context(|| format!("kube-apiserver not ready; logs in {}", cp.dir.display()))?;
        Ok(cp)
    }

    fn push(&self, g: Guard) {
        self.guards.lock().expect("guards lock").push(g);
    }

    /// Stops the API server, then etcd, and removes the working directory.
    pub fn stop(&self) {
        let mut guards =
            std::mem::take(&mut *self.guards.lock().unwrap_or_else(|e| e.into_inner()));
        while let Some(mut g) = guards.pop() {
            g.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut last = String::new();
        while Instant::now() < deadline {
            {
                let mut guards = self.guards.lock().expect("guards lock");
                for g in guards.iter_mut() {
                    if g.exited() {
                        anyhow::bail!(
                            "a control plane process (pid {}) exited during start-up",
                            g.pid()
                        );
                    }
                }
            }
            match self.ready_once().await {
                Ok(()) => return Ok(()),
                Err(e) => last = format!("{e:#}"),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        anyhow::bail!("not ready within 90 s: {last}")
    }

    async fn ready_once(&self) -> anyhow::Result<()> {
        let client = self.client().await?;
        let body = client
            .request_text(http_get("/readyz")?)
            .await
            .context("GET /readyz")?;
        anyhow::ensure!(body.trim() == "ok", "readyz: {body}");
        Api::<Namespace>::all(client)
            .get("default")
            .await
            .context("namespace default")?;
        Ok(())
    }

    fn write_kubeconfig(&self) -> anyhow::Result<()> {
        let d = |f: &str| self.dir.join(f).display().to_string();
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: testbed\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: admin\n  user:\n    client-certificate: {crt}\n    client-key: {key}\ncontexts:\n- name: testbed\n  context:\n    cluster: testbed\n    user: admin\n    namespace: default\ncurrent-context: testbed\n",
            server = self.server_url(),
            ca = d("ca.crt"),
            crt = d("admin.crt"),
            key = d("admin.key"),
        );
        std::fs::write(self.kubeconfig_path(), text)?;
        Ok(())
    }

    /// `https://127.0.0.1:PORT`
    pub fn server_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The cluster CA certificate (PEM file).
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// The admin (`system:masters`) kubeconfig.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    /// The directory holding the binaries (`kubectl`, `kube-apiserver`, `etcd`).
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// A new admin client (clients are tied to the runtime that made them: make one per test).
    pub async fn client(&self) -> anyhow::Result<Client> {
        install_crypto_provider();
        let kubeconfig = Kubeconfig::read_from(self.kubeconfig_path())?;
        let config =
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        Ok(Client::try_from(config)?)
    }

    /// `kubectl --kubeconfig <admin>` ready for more arguments.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(self.bin.join("kubectl"));
        cmd.arg("--kubeconfig").arg(self.kubeconfig_path());
        cmd
    }
}

fn http_get(path: &str) -> anyhow::Result<http::Request<Vec<u8>>> {
    Ok(http::Request::get(path).body(Vec::new())?)
}

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("run openssl")?;
    anyhow::ensure!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// CA, serving certificate (localhost, 127.0.0.1), admin client certificate, service account key.
fn write_certificates(dir: &Path) -> anyhow::Result<()> {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "3650",
        "-subj",
        "/CN=testbed-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &ca)?;
    for (name, subject, ext) in [
        (
            "server",
            "/CN=localhost",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
        ),
        (
            "admin",
            "/O=system:masters/CN=admin",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n",
        ),
    ] {
        let (key, csr, crt, extfile) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
            format!("{name}.ext"),
        );
        std::fs::write(dir.join(&extfile), ext)?;
        let mut req = vec!["req"];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", subject]);
        openssl(dir, &req)?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "3650",
                "-extfile",
                &extfile,
            ],
        )?;
    }
    openssl(dir, &["genrsa", "-out", "sa.key", "2048"])?;
    Ok(())
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Makes rustls use one crypto provider (both ring and aws-lc-rs are linked: kube and the AWS
/// SDK each bring one, and rustls refuses to guess).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A fresh namespace on the shared control plane, with an admin client.
pub struct TestNamespace {
    pub name: String,
    pub client: Client,
}

impl TestNamespace {
    /// Creates namespace `<prefix>-<random>` (namespaces are never finalized here: no
    /// controller-manager; the whole etcd is discarded at exit).
    pub async fn new(prefix: &str) -> anyhow::Result<TestNamespace> {
        let cp = ControlPlane::shared()?;
        let client = cp.client().await?;
        let name = format!("{}-{:06x}", prefix, rand::random::<u32>() & 0xffffff);
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}
        }))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
        Ok(TestNamespace { name, client })
    }
}
