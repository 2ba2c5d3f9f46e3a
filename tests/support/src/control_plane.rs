//! A real Kubernetes control plane: etcd + kube-apiserver on free loopback ports.
//!
//! Binaries come from `hack/k8s-tools.sh` (built once from Go modules, cached by version);
//! `openssl` makes one CA, a serving certificate for localhost/127.0.0.1 and an admin client
//! certificate in `system:masters`. There is no controller-manager and no kubelet: namespaces
//! never finish terminating, no Pod runs, no default ServiceAccount exists, so each test uses a
//! fresh namespace ([`TestNamespace`]). Outage tests start a private control plane to restart
//! kube-apiserver alone while etcd keeps its data ([`ControlPlane::restart_apiserver`]), or to
//! add a replica on the same etcd ([`ControlPlane::replica_apiserver`]).

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
    etcd_port: u16,
    /// etcd.
    guards: Mutex<Vec<Guard>>,
    /// kube-apiserver on `port` (None while stopped).
    apiserver: Mutex<Option<Guard>>,
}

/// A second kube-apiserver on the control plane's etcd, on its own port; stopped on drop.
pub struct ApiServerReplica {
    guard: Guard,
    port: u16,
    kubeconfig: PathBuf,
}

impl ApiServerReplica {
    /// `https://127.0.0.1:PORT`
    pub fn server_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// An admin client of this replica.
    pub async fn client(&self) -> anyhow::Result<Client> {
        client_at(&self.kubeconfig, Some(self.port)).await
    }

    /// Stops the replica (SIGTERM, then SIGKILL after 5 s).
    pub fn stop(mut self) {
        self.guard.stop();
    }
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
            etcd_port,
            guards: Mutex::new(Vec::new()),
            apiserver: Mutex::new(None),
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
        cp.write_kubeconfig()?;
        cp.start_apiserver()
            .await
            .with_context(|| format!("kube-apiserver not ready; logs in {}", cp.dir.display()))?;
        Ok(cp)
    }

    /// The kube-apiserver command serving on `port` (the control plane's own or a replica's).
    fn apiserver_command(&self, port: u16, log: &str) -> anyhow::Result<Command> {
        let d = |f: &str| self.dir.join(f).display().to_string();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(log))?;
        let etcd = format!("--etcd-servers=http://127.0.0.1:{}", self.etcd_port);
        let mut api = Command::new(self.bin.join("kube-apiserver"));
        api.arg(etcd)
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
            // One issuer for every server of this control plane, as in an HA setup.
            .arg(format!(
                "--service-account-issuer=https://127.0.0.1:{}/",
                self.port
            ))
            .arg(format!("--service-account-key-file={}", d("sa.key")))
            .arg(format!(
                "--service-account-signing-key-file={}",
                d("sa.key")
            ))
            .arg(format!("--cert-dir={}", d("cert-dir")))
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        Ok(api)
    }

    /// Starts kube-apiserver on the control plane's port (again, after
    /// [`ControlPlane::stop_apiserver`]) and waits until it serves.
    pub async fn start_apiserver(&self) -> anyhow::Result<()> {
        {
            let mut api = self.apiserver.lock().expect("apiserver lock");
            anyhow::ensure!(api.is_none(), "kube-apiserver is running already");
            let cmd = self.apiserver_command(self.port, "apiserver.log")?;
            *api = Some(process::spawn_long_lived("kube-apiserver", cmd)?);
        }
        self.wait_ready(self.port, None).await
    }

    /// Kills kube-apiserver only (SIGKILL: a crash, every client connection drops at once);
    /// etcd and its data stay. Clients get connection errors until
    /// [`ControlPlane::start_apiserver`].
    pub fn stop_apiserver(&self) {
        if let Some(mut g) = self.take_apiserver() {
            // SAFETY: kill(2) on our own child; the guard has not reaped it yet.
            unsafe { libc::kill(g.pid() as i32, libc::SIGKILL) };
            g.stop();
        }
    }

    fn take_apiserver(&self) -> Option<Guard> {
        self.apiserver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Kills and starts kube-apiserver on the same port; etcd keeps running with its data.
    pub async fn restart_apiserver(&self) -> anyhow::Result<()> {
        self.stop_apiserver();
        self.start_apiserver().await
    }

    /// Starts a second kube-apiserver on this control plane's etcd, on a free port, and waits
    /// until it serves. Changes made through it are in etcd for every server of the control
    /// plane, like changes made through another replica of an HA control plane.
    pub async fn replica_apiserver(&self) -> anyhow::Result<ApiServerReplica> {
        let port = crate::free_port();
        let cmd = self.apiserver_command(port, "apiserver-replica.log")?;
        let mut guard = process::spawn_long_lived("kube-apiserver replica", cmd)?;
        self.wait_ready(port, Some(&mut guard))
            .await
            .with_context(|| {
                format!(
                    "replica kube-apiserver not ready; logs in {}",
                    self.dir.display()
                )
            })?;
        Ok(ApiServerReplica {
            guard,
            port,
            kubeconfig: self.kubeconfig_path(),
        })
    }

    fn push(&self, g: Guard) {
        self.guards.lock().expect("guards lock").push(g);
    }

    /// Stops the API server, then etcd, and removes the working directory.
    pub fn stop(&self) {
        if let Some(mut g) = self.take_apiserver() {
            g.stop();
        }
        let mut guards =
            std::mem::take(&mut *self.guards.lock().unwrap_or_else(|e| e.into_inner()));
        while let Some(mut g) = guards.pop() {
            g.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Waits until the kube-apiserver on `port` serves; fails early when a process of the
    /// control plane (or `replica`) exits.
    async fn wait_ready(&self, port: u16, mut replica: Option<&mut Guard>) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut last = String::new();
        while Instant::now() < deadline {
            {
                let mut guards = self.guards.lock().expect("guards lock");
                let mut api = self.apiserver.lock().expect("apiserver lock");
                let running = guards
                    .iter_mut()
                    .chain(api.iter_mut())
                    .chain(replica.iter_mut().map(|g| &mut **g));
                for g in running {
                    if g.exited() {
                        anyhow::bail!(
                            "a control plane process (pid {}) exited during start-up",
                            g.pid()
                        );
                    }
                }
            }
            match self.ready_once(port).await {
                Ok(()) => return Ok(()),
                Err(e) => last = format!("{e:#}"),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        anyhow::bail!("not ready within 90 s: {last}")
    }

    async fn ready_once(&self, port: u16) -> anyhow::Result<()> {
        let client = client_at(&self.kubeconfig_path(), Some(port)).await?;
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
        client_at(&self.kubeconfig_path(), None).await
    }

    /// `kubectl --kubeconfig <admin>` ready for more arguments.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(self.bin.join("kubectl"));
        cmd.arg("--kubeconfig").arg(self.kubeconfig_path());
        cmd
    }
}

/// An admin client from `kubeconfig`, sent to `port` on 127.0.0.1 instead when given.
async fn client_at(kubeconfig: &Path, port: Option<u16>) -> anyhow::Result<Client> {
    install_crypto_provider();
    let kubeconfig = Kubeconfig::read_from(kubeconfig)?;
    let mut config =
        Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    if let Some(port) = port {
        config.cluster_url = format!("https://127.0.0.1:{port}").parse()?;
    }
    Ok(Client::try_from(config)?)
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
