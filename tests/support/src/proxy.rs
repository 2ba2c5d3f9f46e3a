//! A fault-injecting HTTP proxy in front of moto, and the record of every AWS call through it
//! ([`Proxy::requests`]).
//!
//! [`Faults`] picks which signed requests get a [`Fault`]: throttling or HTTP 500 in the shape of
//! the request's protocol, a connection reset, or a delay. The pick is a pure function of the
//! seed and the request's sequence number, so a failing run replays with its seed
//! ([`seed_from_env`]). Unsigned requests (moto's `/moto-api/`) pass untouched.
//!
//! # Eventual consistency
//!
//! With [`Faults::eventual_consistency`], a resource created through the proxy stays unknown to
//! the calls that name it for a window after its create, as on AWS. Which creates, which errors,
//! and what AWS documents: `docs/testing.md` (Eventual consistency in the test proxy).

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request as HttpRequest, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// What the proxy does to a request instead of (or before) forwarding it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// Answered with the protocol's throttling error.
    Throttle,
    /// Answered with HTTP 500.
    ServerError,
    /// Connection reset without an answer; nothing forwarded.
    Reset,
    /// Forwarded after [`Faults::delay`].
    Delay,
    /// Answered as AWS answers a use of a resource created within the eventual-consistency
    /// window ([`Faults::eventual_consistency`]); the code is in [`Request::code`].
    NotYetVisible,
}

/// Which share of requests gets which fault. Shares are probabilities in `[0, 1]`, drawn in
/// the order throttle, server error, reset, delay; their sum should not exceed 1.
#[derive(Clone, Debug, PartialEq)]
pub struct Faults {
    /// Seeds the per-request draw.
    pub seed: u64,
    pub throttle: f64,
    pub server_error: f64,
    pub reset: f64,
    /// Share of requests forwarded late.
    pub delay_share: f64,
    /// Latency added to delayed requests.
    pub delay: Duration,
    /// Only these operations get faults (all when empty), e.g. `["RunTask"]`. The
    /// eventual-consistency window applies to every operation.
    pub operations: Vec<String>,
    /// How long a new resource stays unknown to the calls that use it; zero: off.
    pub consistency_window: Duration,
}

impl Faults {
    /// No fault: a transparent, recording proxy.
    pub fn none() -> Faults {
        Faults {
            seed: 0,
            throttle: 0.0,
            server_error: 0.0,
            reset: 0.0,
            delay_share: 0.0,
            delay: Duration::ZERO,
            operations: Vec::new(),
            consistency_window: Duration::ZERO,
        }
    }

    /// `share` of requests fail: half throttled, a quarter HTTP 500, a quarter reset.
    pub fn mix(share: f64, seed: u64) -> Faults {
        Faults {
            seed,
            throttle: share / 2.0,
            server_error: share / 4.0,
            reset: share / 4.0,
            ..Faults::none()
        }
    }

    pub fn with_seed(mut self, seed: u64) -> Faults {
        self.seed = seed;
        self
    }

    pub fn throttling(mut self, share: f64) -> Faults {
        self.throttle = share;
        self
    }

    pub fn server_errors(mut self, share: f64) -> Faults {
        self.server_error = share;
        self
    }

    pub fn resets(mut self, share: f64) -> Faults {
        self.reset = share;
        self
    }

    pub fn delayed(mut self, share: f64, delay: Duration) -> Faults {
        self.delay_share = share;
        self.delay = delay;
        self
    }

    /// For `window` after each create, uses of the new resource fail as AWS fails them while
    /// it propagates (see the [module documentation](self#eventual-consistency)); zero turns
    /// it off.
    pub fn eventual_consistency(mut self, window: Duration) -> Faults {
        self.consistency_window = window;
        self
    }

    pub fn only(mut self, operations: &[&str]) -> Faults {
        self.operations = operations.iter().map(|s| s.to_string()).collect();
        self
    }

    /// The fault of request number `seq` (deterministic in seed, seq and operation).
    pub fn pick(&self, seq: u64, operation: &str) -> Option<Fault> {
        if !self.operations.is_empty() && !self.operations.iter().any(|o| o == operation) {
            return None;
        }
        let u = unit(self.seed, seq);
        let mut edge = 0.0;
        for (share, fault) in [
            (self.throttle, Fault::Throttle),
            (self.server_error, Fault::ServerError),
            (self.reset, Fault::Reset),
            (self.delay_share, Fault::Delay),
        ] {
            edge += share;
            if u < edge {
                return Some(fault);
            }
        }
        None
    }
}

/// A uniform draw in `[0, 1)` from (seed, seq): splitmix64 of both.
fn unit(seed: u64, seq: u64) -> f64 {
    fn splitmix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let x = splitmix(seed ^ splitmix(seq));
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// The seed named by environment variable `var` (decimal or `0x` hex), else a random one;
/// printed either way so a failing run can be replayed with `var=<seed>`.
pub fn seed_from_env(var: &str) -> u64 {
    let given = std::env::var(var).ok().and_then(|v| {
        let v = v.trim();
        match v.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => v.parse().ok(),
        }
    });
    let seed = given.unwrap_or_else(rand::random);
    eprintln!("seed {seed} (replay with {var}={seed})");
    seed
}

/// One request the proxy received.
#[derive(Clone, Debug)]
pub struct Request {
    /// Arrival order, from 0.
    pub seq: u64,
    /// Arrival time.
    pub at: Instant,
    /// SigV4 signing name (`sqs`, `ecs`, `ec2`, `autoscaling`, `iam`, `ssm`, `logs`); `moto`
    /// for unsigned requests.
    pub service: String,
    /// Operation, e.g. `RunTask`; the path for unsigned requests.
    pub operation: String,
    /// The fault injected, if any.
    pub fault: Option<Fault>,
    /// The error code the proxy answered with (throttling, HTTP 500, or the error of a
    /// resource not yet visible; `MISSING` for a cluster `DescribeClusters` left out).
    pub code: Option<String>,
    /// Status answered (None while in flight and for resets).
    pub status: Option<u16>,
    /// Time from arrival to the answer (None while in flight and for resets).
    pub elapsed: Option<Duration>,
}

/// Totals over every request so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub requests: u64,
    pub throttled: u64,
    pub server_errors: u64,
    pub resets: u64,
    pub delayed: u64,
    pub not_yet_visible: u64,
}

impl Counts {
    /// Requests that failed because of the proxy (delays do not count).
    pub fn failed(&self) -> u64 {
        self.throttled + self.server_errors + self.resets + self.not_yet_visible
    }
}

struct Shared {
    upstream: String,
    faults: Mutex<Faults>,
    log: Mutex<Vec<Request>>,
    arrived: tokio::sync::watch::Sender<u64>,
    client: Client<HttpConnector, Full<Bytes>>,
    visibility: Mutex<Visibility>,
}

/// A running proxy; stopped (and its connections closed) on drop.
pub struct Proxy {
    endpoint: String,
    port: u16,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    /// Starts a proxy to `upstream` (`http://127.0.0.1:PORT`) on its own thread and runtime,
    /// so it serves whatever runtime (or none) the caller uses.
    pub fn start(upstream: &str, faults: Faults) -> anyhow::Result<Proxy> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let endpoint = format!("http://127.0.0.1:{port}");
        eprintln!(
            "fault proxy {endpoint} -> {upstream}, seed {} ({faults:?})",
            faults.seed
        );
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            faults: Mutex::new(faults),
            log: Mutex::new(Vec::new()),
            arrived: tokio::sync::watch::channel(0).0,
            client: Client::builder(TokioExecutor::new()).build_http(),
            visibility: Mutex::new(Visibility::default()),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let served = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fault-proxy-{port}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            eprintln!("fault proxy: {e}");
                            return;
                        }
                    };
                    tokio::select! {
                        _ = stopped => {}
                        _ = accept_loop(listener, served) => {}
                    }
                });
                // Dropping the runtime here closes every connection still open.
            })?;
        Ok(Proxy {
            endpoint,
            port,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`: the endpoint to give AWS clients.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// SDK configuration pointed at the proxy (region us-east-1, dummy keys).
    pub fn sdk_config(&self) -> aws_config::SdkConfig {
        crate::moto::sdk_config_for(&self.endpoint)
    }

    /// Replaces the faults from the next request on.
    pub fn set_faults(&self, faults: Faults) {
        eprintln!(
            "fault proxy {}: seed {} ({faults:?})",
            self.endpoint, faults.seed
        );
        *self.shared.faults.lock().unwrap_or_else(|e| e.into_inner()) = faults;
    }

    pub fn faults(&self) -> Faults {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.shared
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The requests from number `seq` on.
    pub fn requests_since(&self, seq: u64) -> Vec<Request> {
        let log = self.shared.log.lock().unwrap_or_else(|e| e.into_inner());
        log.get(seq as usize..)
            .map(<[_]>::to_vec)
            .unwrap_or_default()
    }

    /// Number of requests received so far.
    pub fn request_count(&self) -> u64 {
        *self.shared.arrived.borrow()
    }

    /// Waits until at least `n` requests have arrived; false when `timeout` passed first.
    pub async fn wait_for_requests(&self, n: u64, timeout: Duration) -> bool {
        let mut rx = self.shared.arrived.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|c| *c >= n))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Totals by fault.
    pub fn counts(&self) -> Counts {
        let log = self.shared.log.lock().unwrap_or_else(|e| e.into_inner());
        let mut c = Counts {
            requests: log.len() as u64,
            ..Counts::default()
        };
        for r in log.iter() {
            match r.fault {
                Some(Fault::Throttle) => c.throttled += 1,
                Some(Fault::ServerError) => c.server_errors += 1,
                Some(Fault::Reset) => c.resets += 1,
                Some(Fault::Delay) => c.delayed += 1,
                Some(Fault::NotYetVisible) => c.not_yet_visible += 1,
                None => {}
            }
        }
        c
    }

    /// The resources learned from their creates in eventual-consistency mode, in creation
    /// order.
    pub fn creations(&self) -> Vec<Creation> {
        self.shared
            .visibility
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .learned
            .iter()
            .map(|l| l.creation.clone())
            .collect()
    }

    /// When every resource learned so far is visible: the last create (or role added to an
    /// instance profile) plus the current window; `None` when nothing was learned.
    pub fn all_visible_at(&self) -> Option<Instant> {
        let window = self.faults().consistency_window;
        self.shared
            .visibility
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .learned
            .iter()
            .map(|l| l.changed.max(l.creation.at) + window)
            .max()
    }

    /// Requests per (service, operation).
    pub fn counts_by_operation(&self) -> BTreeMap<(String, String), u64> {
        let mut by = BTreeMap::new();
        for r in self
            .shared
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            *by.entry((r.service.clone(), r.operation.clone()))
                .or_insert(0) += 1;
        }
        by
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("fault proxy {}: seed {}", self.endpoint, self.faults().seed);
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let reset = Arc::new(AtomicBool::new(false));
            let io = ResettableIo {
                inner: TokioIo::new(stream),
                reset: reset.clone(),
            };
            let service = hyper::service::service_fn(move |req| {
                let (shared, reset) = (shared.clone(), reset.clone());
                async move { handle(shared, reset, req).await }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(io, service)
                .await;
        });
    }
}

/// The connection's stream; when a reset was decided, closing it sends RST instead of FIN.
struct ResettableIo {
    inner: TokioIo<tokio::net::TcpStream>,
    reset: Arc<AtomicBool>,
}

impl Drop for ResettableIo {
    fn drop(&mut self) {
        if self.reset.load(Ordering::SeqCst) {
            let _ = self.inner.inner().set_zero_linger();
        }
    }
}

impl hyper::rt::Read for ResettableIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for ResettableIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The service's error: hyper drops the connection unanswered.
#[derive(Debug)]
enum Dropped {
    /// A reset was injected.
    Reset,
    /// The request or the upstream's answer could not be read.
    Broken(String),
}

impl Dropped {
    fn broken(e: impl std::fmt::Display) -> Dropped {
        Dropped::Broken(e.to_string())
    }
}

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dropped::Reset => f.write_str("connection reset by the fault proxy"),
            Dropped::Broken(e) => write!(f, "fault proxy: {e}"),
        }
    }
}

impl std::error::Error for Dropped {}

/// The wire protocol of a request, which decides the shape of an injected error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    /// awsJson 1.0/1.1; `query_compatible` for SQS (`x-amzn-query-mode: true`).
    Json { v1_0: bool, query_compatible: bool },
    /// EC2's query dialect.
    Ec2,
    /// awsQuery (Auto Scaling, IAM).
    Query,
}

async fn handle(
    shared: Arc<Shared>,
    reset: Arc<AtomicBool>,
    req: HttpRequest<Incoming>,
) -> Result<Response<Full<Bytes>>, Dropped> {
    let at = Instant::now();
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map_err(Dropped::broken)?.to_bytes();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let service = header("authorization").and_then(|a| signing_name(&a));
    let target = header("x-amz-target");
    let operation = match (&service, &target) {
        (None, _) => parts.uri.path().to_string(),
        (Some(_), Some(t)) => t.rsplit('.').next().unwrap_or(t).to_string(),
        (Some(_), None) => form_action(&body, parts.uri.query()).unwrap_or_default(),
    };
    let protocol = match (&service, &target) {
        (_, Some(_)) => Protocol::Json {
            v1_0: header("content-type").is_some_and(|c| c.contains("json-1.0")),
            query_compatible: header("x-amzn-query-mode").is_some_and(|v| v == "true"),
        },
        (Some(s), None) if s == "ec2" => Protocol::Ec2,
        _ => Protocol::Query,
    };
    // The eventual-consistency model reads the parameters of signed requests only.
    let window = service
        .as_ref()
        .map(|_| {
            shared
                .faults
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .consistency_window
        })
        .filter(|w| !w.is_zero());
    let params = window
        .map(|_| parameters(&body, protocol))
        .unwrap_or_default();
    let op = operation.clone();
    let (seq, fault, error, verdict) = {
        let mut log = shared.log.lock().unwrap_or_else(|e| e.into_inner());
        let seq = log.len() as u64;
        let mut fault = match &service {
            Some(_) => shared
                .faults
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pick(seq, &operation),
            None => None,
        };
        let mut verdict = None;
        if let (None, Some(window), Some(service)) = (fault, window, &service) {
            verdict = shared
                .visibility
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .check(service, &operation, &params, window);
            if verdict.is_some() {
                fault = Some(Fault::NotYetVisible);
            }
        }
        let error = match (fault, &verdict) {
            (Some(Fault::Throttle), _) => Some(ErrorAnswer::injected(true, protocol)),
            (Some(Fault::ServerError), _) => Some(ErrorAnswer::injected(false, protocol)),
            (_, Some(Verdict::Fail(e))) => Some(e.clone()),
            _ => None,
        };
        let code = match &verdict {
            Some(Verdict::MissingClusters(_)) => Some("MISSING".to_string()),
            _ => error.as_ref().map(|e| e.code.clone()),
        };
        log.push(Request {
            seq,
            at,
            service: service.clone().unwrap_or_else(|| "moto".into()),
            operation,
            fault,
            code,
            status: None,
            elapsed: None,
        });
        shared.arrived.send_replace(seq + 1);
        (seq, fault, error, verdict)
    };
    let answer = |status: u16| {
        let mut log = shared.log.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = log.get_mut(seq as usize) {
            r.status = Some(status);
            r.elapsed = Some(at.elapsed());
        }
    };
    if let Some(error) = error {
        let resp = error_response(protocol, seq, &error);
        answer(resp.status().as_u16());
        return Ok(resp);
    }
    match fault {
        Some(Fault::Reset) => {
            reset.store(true, Ordering::SeqCst);
            return Err(Dropped::Reset);
        }
        Some(Fault::Delay) => {
            let delay = shared
                .faults
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .delay;
            tokio::time::sleep(delay).await;
        }
        _ => {}
    }

    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut forward = HttpRequest::builder()
        .method(parts.method.clone())
        .uri(format!("{}{path}", shared.upstream));
    for (k, v) in parts.headers.iter() {
        if !is_hop_by_hop(k.as_str()) {
            forward = forward.header(k, v);
        }
    }
    let forward = forward.body(Full::new(body)).map_err(Dropped::broken)?;
    let resp = match shared.client.request(forward).await {
        Ok(r) => r,
        Err(e) => {
            answer(502);
            return Response::builder()
                .status(StatusCode::BAD_GATEWAY)
                .body(Full::new(Bytes::from(format!("upstream: {e}"))))
                .map_err(Dropped::broken);
        }
    };
    let (parts, body) = resp.into_parts();
    let mut body = body.collect().await.map_err(Dropped::broken)?.to_bytes();
    if let (Some(window), Some(service), true) = (window, &service, parts.status.is_success()) {
        if let Some(Verdict::MissingClusters(missing)) = &verdict {
            body = hide_clusters(&body, missing);
        }
        shared
            .visibility
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .learn(service, &op, &params, &body, window);
    }
    let mut out = Response::builder().status(parts.status);
    for (k, v) in parts.headers.iter() {
        if !is_hop_by_hop(k.as_str()) {
            out = out.header(k, v);
        }
    }
    answer(parts.status.as_u16());
    out.body(Full::new(body)).map_err(Dropped::broken)
}

/// Headers that describe one hop (the body is re-sent with its own length).
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection" | "keep-alive" | "transfer-encoding" | "content-length" | "te" | "upgrade"
    )
}

/// `AWS4-HMAC-SHA256 Credential=KEY/DATE/REGION/SERVICE/aws4_request, ...` -> SERVICE.
fn signing_name(authorization: &str) -> Option<String> {
    let scope = authorization.split("Credential=").nth(1)?;
    let scope = scope.split([',', ' ']).next()?;
    scope.split('/').nth(3).map(str::to_string)
}

/// The `Action` of a query-protocol request (form body, or the query string).
fn form_action(body: &[u8], query: Option<&str>) -> Option<String> {
    let body = std::str::from_utf8(body).ok().unwrap_or_default();
    [body, query.unwrap_or_default()]
        .into_iter()
        .flat_map(|s| s.split('&'))
        .find_map(|kv| kv.strip_prefix("Action="))
        .map(str::to_string)
}

/// An error the proxy answers instead of the upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ErrorAnswer {
    status: u16,
    /// The code the SDK reports (for SQS, the query-compatible code).
    code: String,
    message: String,
    /// The fault is the server's (`Receiver`), not the caller's (`Sender`).
    receiver: bool,
    /// The JSON protocol's error shape when it differs from `code` (SQS's
    /// `QueueDoesNotExist` for `AWS.SimpleQueueService.NonExistentQueue`).
    json_shape: Option<&'static str>,
}

impl ErrorAnswer {
    fn sender(status: u16, code: impl Into<String>, message: impl Into<String>) -> ErrorAnswer {
        ErrorAnswer {
            status,
            code: code.into(),
            message: message.into(),
            receiver: false,
            json_shape: None,
        }
    }

    /// Throttling or an internal failure (HTTP 500), with the code AWS uses in `protocol`.
    fn injected(throttle: bool, protocol: Protocol) -> ErrorAnswer {
        let (status, code, message, receiver) = match (throttle, protocol) {
            (
                true,
                Protocol::Json {
                    query_compatible: true,
                    ..
                },
            ) => (400, "RequestThrottled", "Rate exceeded", false),
            (true, Protocol::Json { .. }) => (400, "ThrottlingException", "Rate exceeded", false),
            (true, Protocol::Ec2) => (
                503,
                "RequestLimitExceeded",
                "Request limit exceeded.",
                false,
            ),
            (true, Protocol::Query) => (400, "Throttling", "Rate exceeded", false),
            (false, Protocol::Ec2) => (
                500,
                "InternalError",
                "An internal error has occurred.",
                true,
            ),
            (false, _) => (500, "InternalFailure", "Internal failure", true),
        };
        ErrorAnswer {
            receiver,
            ..ErrorAnswer::sender(status, code, message)
        }
    }
}

/// `error` in the shape of `protocol`: awsJson (`__type`; for SQS also the query-compatible
/// `x-amzn-query-error` header the SDK takes the code from), EC2's `<Response><Errors>` XML, or
/// the query protocol's `<ErrorResponse>`.
fn error_response(protocol: Protocol, seq: u64, error: &ErrorAnswer) -> Response<Full<Bytes>> {
    let request_id = format!("fault-proxy-{seq:08}");
    let fault_type = if error.receiver { "Receiver" } else { "Sender" };
    let (code, message) = (&error.code, xml_escape(&error.message));
    let (content_type, body, query_error) = match protocol {
        Protocol::Json {
            v1_0,
            query_compatible,
        } => {
            let content_type = if v1_0 {
                "application/x-amz-json-1.0"
            } else {
                "application/x-amz-json-1.1"
            };
            let shape = error.json_shape.unwrap_or(code);
            let namespace = if query_compatible {
                "com.amazonaws.sqs#"
            } else {
                ""
            };
            let body = serde_json::json!({
                "__type": format!("{namespace}{shape}"),
                "message": error.message,
            })
            .to_string();
            (
                content_type,
                body,
                query_compatible.then(|| format!("{code};{fault_type}")),
            )
        }
        Protocol::Ec2 => (
            "text/xml;charset=UTF-8",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>"
            ),
            None,
        ),
        Protocol::Query => (
            "text/xml",
            format!(
                "<ErrorResponse><Error><Type>{fault_type}</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
            ),
            None,
        ),
    };
    let mut resp = Response::builder()
        .status(error.status)
        .header("content-type", content_type)
        .header("x-amzn-requestid", &request_id);
    if let Some(q) = query_error {
        resp = resp.header("x-amzn-query-error", q);
    }
    resp.body(Full::new(Bytes::from(body)))
        .expect("a static response is valid")
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

// ---- eventual consistency -----------------------------------------------------------------

/// What kind of resource a create made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    Role,
    InstanceProfile,
    Queue,
    Cluster,
    Vpc,
    Subnet,
    InternetGateway,
    SecurityGroup,
    RouteTable,
}

impl ResourceKind {
    /// The create operation and the service it belongs to.
    fn created_by(service: &str, operation: &str) -> Option<ResourceKind> {
        Some(match (service, operation) {
            ("iam", "CreateRole") => ResourceKind::Role,
            ("iam", "CreateInstanceProfile") => ResourceKind::InstanceProfile,
            ("sqs", "CreateQueue") => ResourceKind::Queue,
            ("ecs", "CreateCluster") => ResourceKind::Cluster,
            ("ec2", "CreateVpc") => ResourceKind::Vpc,
            ("ec2", "CreateSubnet") => ResourceKind::Subnet,
            ("ec2", "CreateInternetGateway") => ResourceKind::InternetGateway,
            ("ec2", "CreateSecurityGroup") => ResourceKind::SecurityGroup,
            ("ec2", "CreateRouteTable") => ResourceKind::RouteTable,
            _ => return None,
        })
    }

    /// The EC2 kinds: their ids are unique, so any parameter naming one is a use.
    fn ec2_error(self, id: &str, param: &str) -> Option<ErrorAnswer> {
        let (code, message) = match self {
            // CreateRoute/ReplaceRoute name the gateway as a gateway of any kind.
            ResourceKind::InternetGateway if param == "GatewayId" => (
                "InvalidGatewayID.NotFound",
                format!("The gateway ID '{id}' does not exist"),
            ),
            ResourceKind::InternetGateway => (
                "InvalidInternetGatewayID.NotFound",
                format!("The internetGateway ID '{id}' does not exist"),
            ),
            ResourceKind::Vpc => (
                "InvalidVpcID.NotFound",
                format!("The vpc ID '{id}' does not exist"),
            ),
            ResourceKind::Subnet => (
                "InvalidSubnetID.NotFound",
                format!("The subnet ID '{id}' does not exist"),
            ),
            ResourceKind::SecurityGroup => (
                "InvalidGroup.NotFound",
                format!("The security group '{id}' does not exist"),
            ),
            ResourceKind::RouteTable => (
                "InvalidRouteTableID.NotFound",
                format!("The routeTable ID '{id}' does not exist"),
            ),
            _ => return None,
        };
        Some(ErrorAnswer::sender(400, code, message))
    }
}

/// A resource the proxy saw created, as [`Proxy::creations`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Creation {
    pub kind: ResourceKind,
    /// The name or id the create gave it.
    pub id: String,
    /// When the proxy received the create's answer.
    pub at: Instant,
}

/// A learned resource and every name a request may use for it.
#[derive(Clone, Debug)]
struct Learned {
    creation: Creation,
    /// Name, ARN, queue URL or id.
    aliases: Vec<String>,
    /// The last change that also has to propagate before a launch can use it (a role added to
    /// an instance profile).
    changed: Instant,
}

/// How a launch template names its instance profile.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ProfileRef {
    Arn(String),
    Name(String),
}

impl ProfileRef {
    /// The profile's name (the last segment of an ARN, which may carry a path).
    fn name(&self) -> &str {
        match self {
            ProfileRef::Arn(arn) => arn.rsplit('/').next().unwrap_or(arn),
            ProfileRef::Name(name) => name,
        }
    }
}

/// What the proxy knows of the resources created through it.
#[derive(Default)]
struct Visibility {
    learned: Vec<Learned>,
    /// Launch template id and name -> the instance profile its latest version names.
    templates: std::collections::HashMap<String, Option<ProfileRef>>,
}

/// What the eventual-consistency model does with a request.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Answered with this error.
    Fail(ErrorAnswer),
    /// `DescribeClusters` is forwarded and these clusters (names or ARNs, as asked) are moved
    /// from `clusters` to `failures`.
    MissingClusters(Vec<String>),
}

/// A request's parameters as (name, value) pairs: the form fields of the query protocols
/// (`LaunchTemplate.LaunchTemplateId`, `SubnetId.1`), or every string of a JSON body under the
/// key that holds it (array items under the array's key).
fn parameters(body: &[u8], protocol: Protocol) -> Vec<(String, String)> {
    let mut out = Vec::new();
    match protocol {
        Protocol::Json { .. } => {
            fn walk(v: &serde_json::Value, key: &str, out: &mut Vec<(String, String)>) {
                match v {
                    serde_json::Value::Object(m) => {
                        for (k, v) in m {
                            walk(v, k, out);
                        }
                    }
                    serde_json::Value::Array(items) => {
                        for v in items {
                            walk(v, key, out);
                        }
                    }
                    serde_json::Value::String(s) => out.push((key.to_string(), s.clone())),
                    _ => {}
                }
            }
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
                walk(&v, "", &mut out);
            }
        }
        Protocol::Ec2 | Protocol::Query => {
            let body = std::str::from_utf8(body).unwrap_or_default();
            for pair in body.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                out.push((percent_decode(k), percent_decode(v)));
            }
        }
    }
    out
}

/// `application/x-www-form-urlencoded` decoding.
fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let digit = |at: usize| bytes.get(at).copied().and_then(hex);
                match (digit(i + 1), digit(i + 2)) {
                    (Some(h), Some(l)) => {
                        out.push(h << 4 | l);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The member name of a parameter: its last segment that is neither an index nor `member`
/// (`SubnetId.1` -> `SubnetId`, `LaunchTemplate.LaunchTemplateId` -> `LaunchTemplateId`).
fn member(key: &str) -> &str {
    key.rsplit('.')
        .find(|s| !s.is_empty() && s != &"member" && !s.bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or(key)
}

fn first<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The text of the first `<tag>` element of an XML answer.
fn xml_text(body: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = body.find(&open)? + open.len();
    let end = start + body[start..].find(&format!("</{tag}>"))?;
    Some(
        body[start..end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

impl Visibility {
    /// The learned resource of `kind` named `alias`, when it is within `window` of its create.
    fn fresh(&self, kind: ResourceKind, alias: &str, window: Duration) -> Option<&Learned> {
        self.learned.iter().rev().find(|l| {
            l.creation.kind == kind
                && l.creation.at.elapsed() < window
                && l.aliases.iter().any(|a| a == alias)
        })
    }

    /// Whether a launch may not use instance profile `name` yet: created or given a role
    /// within `window`.
    fn profile_propagating(&self, name: &str, window: Duration) -> bool {
        self.learned.iter().any(|l| {
            l.creation.kind == ResourceKind::InstanceProfile
                && l.changed.elapsed() < window
                && l.aliases.iter().any(|a| a == name)
        })
    }

    fn check(
        &self,
        service: &str,
        operation: &str,
        params: &[(String, String)],
        window: Duration,
    ) -> Option<Verdict> {
        let fail = |e: ErrorAnswer| Some(Verdict::Fail(e));
        match service {
            "iam" => {
                for (k, v) in params {
                    match member(k) {
                        "RoleName"
                            if operation != "CreateRole"
                                && self.fresh(ResourceKind::Role, v, window).is_some() =>
                        {
                            return fail(ErrorAnswer::sender(
                                404,
                                "NoSuchEntity",
                                format!("The role with name {v} cannot be found."),
                            ));
                        }
                        "InstanceProfileName"
                            if operation != "CreateInstanceProfile"
                                && self
                                    .fresh(ResourceKind::InstanceProfile, v, window)
                                    .is_some() =>
                        {
                            return fail(ErrorAnswer::sender(
                                404,
                                "NoSuchEntity",
                                format!("Instance Profile {v} cannot be found."),
                            ));
                        }
                        _ => {}
                    }
                }
                None
            }
            "sqs" if operation != "CreateQueue" => params
                .iter()
                .filter(|(k, _)| matches!(member(k), "QueueUrl" | "QueueName"))
                .find(|(_, v)| self.fresh(ResourceKind::Queue, v, window).is_some())
                .and_then(|_| {
                    fail(ErrorAnswer {
                        json_shape: Some("QueueDoesNotExist"),
                        ..ErrorAnswer::sender(
                            400,
                            "AWS.SimpleQueueService.NonExistentQueue",
                            "The specified queue does not exist.",
                        )
                    })
                }),
            "ecs" if operation == "DescribeClusters" => {
                let missing: Vec<String> = params
                    .iter()
                    .filter(|(k, v)| {
                        k == "clusters" && self.fresh(ResourceKind::Cluster, v, window).is_some()
                    })
                    .map(|(_, v)| v.clone())
                    .collect();
                (!missing.is_empty()).then_some(Verdict::MissingClusters(missing))
            }
            "ecs" if operation != "CreateCluster" => params
                .iter()
                .find(|(k, v)| {
                    k == "cluster" && self.fresh(ResourceKind::Cluster, v, window).is_some()
                })
                .and_then(|_| {
                    fail(ErrorAnswer::sender(
                        400,
                        "ClusterNotFoundException",
                        "Cluster not found.",
                    ))
                }),
            // Launch template data is not validated by EC2; filters and tags name no resource
            // that must exist.
            "ec2" if !matches!(
                operation,
                "CreateLaunchTemplate" | "CreateLaunchTemplateVersion"
            ) =>
            {
                for (k, v) in params {
                    if k.starts_with("Filter.") || k.starts_with("TagSpecification.") {
                        continue;
                    }
                    for kind in [
                        ResourceKind::Vpc,
                        ResourceKind::Subnet,
                        ResourceKind::InternetGateway,
                        ResourceKind::SecurityGroup,
                        ResourceKind::RouteTable,
                    ] {
                        if self.fresh(kind, v, window).is_some() {
                            return kind.ec2_error(v, member(k)).map(Verdict::Fail);
                        }
                    }
                }
                None
            }
            "autoscaling"
                if matches!(
                    operation,
                    "CreateAutoScalingGroup" | "UpdateAutoScalingGroup"
                ) =>
            {
                params
                    .iter()
                    .filter(|(k, _)| matches!(member(k), "LaunchTemplateId" | "LaunchTemplateName"))
                    .filter_map(|(_, v)| self.templates.get(v).cloned().flatten())
                    .find(|profile| self.profile_propagating(profile.name(), window))
                    .and_then(|profile| {
                        let (value, param, what) = match &profile {
                            ProfileRef::Arn(arn) => (arn.as_str(), "arn", "ARN"),
                            ProfileRef::Name(name) => (name.as_str(), "name", "name"),
                        };
                        fail(ErrorAnswer::sender(
                            400,
                            "ValidationError",
                            format!(
                                "You must use a valid fully-formed launch template. Value ({value}) for parameter iamInstanceProfile.{param} is invalid. Invalid IAM Instance Profile {what}"
                            ),
                        ))
                    })
            }
            _ => None,
        }
    }

    /// Learns what a successful request created or changed, from the request and its answer.
    fn learn(
        &mut self,
        service: &str,
        operation: &str,
        params: &[(String, String)],
        answer: &[u8],
        window: Duration,
    ) {
        let text = std::str::from_utf8(answer).unwrap_or_default();
        let json = || serde_json::from_slice::<serde_json::Value>(answer).ok();
        match (service, operation) {
            ("iam", "AddRoleToInstanceProfile") => {
                if let Some(name) = first(params, "InstanceProfileName") {
                    let now = Instant::now();
                    for l in self.learned.iter_mut().filter(|l| {
                        l.creation.kind == ResourceKind::InstanceProfile
                            && l.aliases.iter().any(|a| a == name)
                    }) {
                        l.changed = now;
                    }
                }
                return;
            }
            ("ec2", "CreateLaunchTemplate" | "CreateLaunchTemplateVersion") => {
                let profile = first(params, "LaunchTemplateData.IamInstanceProfile.Arn")
                    .map(|a| ProfileRef::Arn(a.to_string()))
                    .or_else(|| {
                        first(params, "LaunchTemplateData.IamInstanceProfile.Name")
                            .map(|n| ProfileRef::Name(n.to_string()))
                    });
                for key in [
                    xml_text(text, "launchTemplateId"),
                    xml_text(text, "launchTemplateName"),
                ]
                .into_iter()
                .flatten()
                {
                    self.templates.insert(key, profile.clone());
                }
                return;
            }
            _ => {}
        }
        let Some(kind) = ResourceKind::created_by(service, operation) else {
            return;
        };
        let aliases: Vec<String> = match kind {
            ResourceKind::Role => first(params, "RoleName")
                .map(str::to_string)
                .into_iter()
                .collect(),
            ResourceKind::InstanceProfile => first(params, "InstanceProfileName")
                .map(str::to_string)
                .into_iter()
                .collect(),
            ResourceKind::Queue => {
                let url = json()
                    .and_then(|v| v.get("QueueUrl")?.as_str().map(str::to_string))
                    .or_else(|| xml_text(text, "QueueUrl"));
                first(params, "QueueName")
                    .map(str::to_string)
                    .into_iter()
                    .chain(url)
                    .collect()
            }
            ResourceKind::Cluster => {
                let arn = json().and_then(|v| {
                    v.get("cluster")?
                        .get("clusterArn")?
                        .as_str()
                        .map(str::to_string)
                });
                // ECS names a cluster created without a name `default`.
                std::iter::once(
                    first(params, "clusterName")
                        .unwrap_or("default")
                        .to_string(),
                )
                .chain(arn)
                .collect()
            }
            ResourceKind::Vpc => xml_text(text, "vpcId").into_iter().collect(),
            ResourceKind::Subnet => xml_text(text, "subnetId").into_iter().collect(),
            ResourceKind::InternetGateway => {
                xml_text(text, "internetGatewayId").into_iter().collect()
            }
            ResourceKind::SecurityGroup => xml_text(text, "groupId").into_iter().collect(),
            ResourceKind::RouteTable => xml_text(text, "routeTableId").into_iter().collect(),
        };
        let Some(id) = aliases.first().cloned() else {
            return;
        };
        // A repeat of a create that is still propagating (an idempotent CreateQueue or
        // CreateCluster) does not restart the window.
        if aliases
            .iter()
            .any(|a| self.fresh(kind, a, window).is_some())
        {
            return;
        }
        let now = Instant::now();
        self.learned.push(Learned {
            creation: Creation { kind, id, at: now },
            aliases,
            changed: now,
        });
    }
}

/// `DescribeClusters`' answer with the clusters in `missing` (by name or ARN) moved to
/// `failures` as `MISSING`; the answer unchanged when it is not what ECS sends.
fn hide_clusters(answer: &Bytes, missing: &[String]) -> Bytes {
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(answer) else {
        return answer.clone();
    };
    let Some(clusters) = v.get_mut("clusters").and_then(|c| c.as_array_mut()) else {
        return answer.clone();
    };
    let mut failures = Vec::new();
    clusters.retain(|c| {
        let field = |f: &str| c.get(f).and_then(|x| x.as_str()).unwrap_or_default();
        let hidden = missing
            .iter()
            .any(|m| m == field("clusterName") || m == field("clusterArn"));
        if hidden {
            failures.push(serde_json::json!({"arn": field("clusterArn"), "reason": "MISSING"}));
        }
        !hidden
    });
    if let Some(list) = v
        .as_object_mut()
        .map(|o| o.entry("failures").or_insert_with(|| serde_json::json!([])))
        .and_then(|f| f.as_array_mut())
    {
        list.extend(failures);
    }
    Bytes::from(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_picks_the_same_faults() {
        let f = Faults::mix(0.2, 42);
        let a: Vec<_> = (0..1000).map(|i| f.pick(i, "X")).collect();
        let b: Vec<_> = (0..1000).map(|i| f.pick(i, "X")).collect();
        assert_eq!(a, b);
        let other: Vec<_> = (0..1000)
            .map(|i| f.clone().with_seed(43).pick(i, "X"))
            .collect();
        assert_ne!(a, other);
        let failed = a.iter().filter(|x| x.is_some()).count();
        assert!((150..250).contains(&failed), "{failed} of 1000 at 20 %");
    }

    #[test]
    fn operation_filter_and_shares() {
        let f = Faults::none().throttling(1.0).only(&["RunTask"]);
        assert_eq!(f.pick(0, "RunTask"), Some(Fault::Throttle));
        assert_eq!(f.pick(0, "ListTasks"), None);
        assert!((0..100).all(|i| Faults::none().pick(i, "X").is_none()));
    }

    #[test]
    fn parameters_of_each_protocol() {
        let form = parameters(
            b"Action=CreateRoute&RouteTableId=rtb-1&GatewayId=igw-2&Filter.1.Value.1=a%2Fb+c&Name=%ZZ",
            Protocol::Ec2,
        );
        assert_eq!(form[1], ("RouteTableId".into(), "rtb-1".into()));
        assert_eq!(form[3], ("Filter.1.Value.1".into(), "a/b c".into()));
        assert_eq!(form[4].1, "%ZZ", "an invalid escape is kept");
        let json = parameters(
            br#"{"cluster":"c","clusters":["a","b"],"overrides":{"n":1,"x":{"cluster":"d"}}}"#,
            Protocol::Json {
                v1_0: false,
                query_compatible: false,
            },
        );
        let values = |k: &str| -> Vec<&str> {
            json.iter()
                .filter(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
                .collect()
        };
        assert_eq!(values("clusters"), ["a", "b"]);
        assert_eq!(values("cluster"), ["c", "d"]);
        assert_eq!(member("SubnetId.1"), "SubnetId");
        assert_eq!(
            member("AutoScalingGroupNames.member.1"),
            "AutoScalingGroupNames"
        );
        assert_eq!(
            member("LaunchTemplate.LaunchTemplateId"),
            "LaunchTemplateId"
        );
        assert_eq!(
            xml_text("<a><vpcId>vpc-1</vpcId><vpcId>vpc-2</vpcId></a>", "vpcId").as_deref(),
            Some("vpc-1")
        );
        assert_eq!(
            xml_text("<Arn>arn:x&amp;y</Arn>", "Arn").as_deref(),
            Some("arn:x&y")
        );
        assert_eq!(
            ProfileRef::Arn("arn:aws:iam::1:instance-profile/path/p".into()).name(),
            "p"
        );
    }

    #[test]
    fn request_names() {
        assert_eq!(
            signing_name(
                "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/autoscaling/aws4_request, SignedHeaders=host, Signature=abc"
            )
            .as_deref(),
            Some("autoscaling")
        );
        assert_eq!(
            form_action(b"Action=DescribeVpcs&Version=2016-11-15", None).as_deref(),
            Some("DescribeVpcs")
        );
    }
}
