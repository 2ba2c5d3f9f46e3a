//! A fault-injecting HTTP proxy in front of moto, and the record of every AWS call through it.
//!
//! [`Proxy::start`] listens on a free loopback port and forwards each request to an upstream
//! (a moto server). A configurable share of the signed AWS requests ([`Faults`]) is answered by
//! the proxy itself instead:
//! - [`Fault::Throttle`]: the throttling error in the shape of the request's protocol, which the
//!   AWS SDK's retry classifier reads as throttling — awsJson (`X-Amz-Target`; ECS, SSM,
//!   CloudWatch Logs, and SQS, whose JSON protocol is query-compatible and takes its error code
//!   from the `x-amzn-query-error` header), EC2's `<Response><Errors>` XML with
//!   `RequestLimitExceeded`, and the query XML `<ErrorResponse>` of Auto Scaling and IAM;
//! - [`Fault::ServerError`]: HTTP 500 `InternalFailure` (EC2: `InternalError`) in the same shapes;
//! - [`Fault::Reset`]: the connection is reset (RST) without an answer; the request never
//!   reaches the upstream;
//! - [`Fault::Delay`]: the request is forwarded after [`Faults::delay`].
//!
//! Which request gets which fault is a pure function of the seed and the request's sequence
//! number, so the same seed and the same request sequence give the same faults: a failing run is
//! replayed with its seed ([`seed_from_env`]; the proxy prints its seed when it starts).
//! [`Proxy::set_faults`] changes them while running. Unsigned requests (moto's own
//! `/moto-api/`) are forwarded untouched.
//!
//! Every request is recorded ([`Proxy::requests`]): arrival time, AWS service (the SigV4
//! signing name: `sqs`, `ecs`, `ec2`, `autoscaling`, `iam`, `ssm`, `logs`), operation (from
//! `X-Amz-Target` or the `Action=` form field), the fault injected and the status answered —
//! what tests and benchmarks need to count calls per tick and measure reaction latency.

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
    /// Only these operations get faults (all when empty), e.g. `["RunTask"]`.
    pub operations: Vec<String>,
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
}

impl Counts {
    /// Requests that failed because of the proxy (delays do not count).
    pub fn failed(&self) -> u64 {
        self.throttled + self.server_errors + self.resets
    }
}

struct Shared {
    upstream: String,
    faults: Mutex<Faults>,
    log: Mutex<Vec<Request>>,
    arrived: tokio::sync::watch::Sender<u64>,
    client: Client<HttpConnector, Full<Bytes>>,
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
                None => {}
            }
        }
        c
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
    let (seq, fault) = {
        let mut log = shared.log.lock().unwrap_or_else(|e| e.into_inner());
        let seq = log.len() as u64;
        let fault = match &service {
            Some(_) => shared
                .faults
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pick(seq, &operation),
            None => None,
        };
        log.push(Request {
            seq,
            at,
            service: service.clone().unwrap_or_else(|| "moto".into()),
            operation,
            fault,
            status: None,
            elapsed: None,
        });
        shared.arrived.send_replace(seq + 1);
        (seq, fault)
    };
    let answer = |status: u16| {
        let mut log = shared.log.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = log.get_mut(seq as usize) {
            r.status = Some(status);
            r.elapsed = Some(at.elapsed());
        }
    };
    match fault {
        Some(Fault::Reset) => {
            reset.store(true, Ordering::SeqCst);
            return Err(Dropped::Reset);
        }
        Some(f @ (Fault::Throttle | Fault::ServerError)) => {
            let resp = error_response(f == Fault::Throttle, protocol, seq);
            answer(resp.status().as_u16());
            return Ok(resp);
        }
        Some(Fault::Delay) => {
            let delay = shared
                .faults
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .delay;
            tokio::time::sleep(delay).await;
        }
        None => {}
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
    let body = body.collect().await.map_err(Dropped::broken)?.to_bytes();
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

/// The error AWS answers in `protocol`: throttling, or an internal failure (HTTP 500).
fn error_response(throttle: bool, protocol: Protocol, seq: u64) -> Response<Full<Bytes>> {
    let request_id = format!("fault-proxy-{seq:08}");
    let (status, content_type, body, query_error) = match protocol {
        Protocol::Json {
            v1_0,
            query_compatible,
        } => {
            let content_type = if v1_0 {
                "application/x-amz-json-1.0"
            } else {
                "application/x-amz-json-1.1"
            };
            let (status, code, fault_type, message) = match (throttle, query_compatible) {
                (true, true) => (400, "RequestThrottled", "Sender", "Rate exceeded"),
                (true, false) => (400, "ThrottlingException", "Sender", "Rate exceeded"),
                (false, _) => (500, "InternalFailure", "Receiver", "Internal failure"),
            };
            let namespace = if query_compatible {
                "com.amazonaws.sqs#"
            } else {
                ""
            };
            let body = serde_json::json!({
                "__type": format!("{namespace}{code}"),
                "message": message,
            })
            .to_string();
            (
                status,
                content_type,
                body,
                query_compatible.then(|| format!("{code};{fault_type}")),
            )
        }
        Protocol::Ec2 => {
            let (status, code, message) = if throttle {
                (503, "RequestLimitExceeded", "Request limit exceeded.")
            } else {
                (500, "InternalError", "An internal error has occurred.")
            };
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>"
            );
            (status, "text/xml;charset=UTF-8", body, None)
        }
        Protocol::Query => {
            let (status, fault_type, code, message) = if throttle {
                (400, "Sender", "Throttling", "Rate exceeded")
            } else {
                (500, "Receiver", "InternalFailure", "Internal failure")
            };
            let body = format!(
                "<ErrorResponse><Error><Type>{fault_type}</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
            );
            (status, "text/xml", body, None)
        }
    };
    let mut resp = Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("x-amzn-requestid", &request_id);
    if let Some(q) = query_error {
        resp = resp.header("x-amzn-query-error", q);
    }
    resp.body(Full::new(Bytes::from(body)))
        .expect("a static response is valid")
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
