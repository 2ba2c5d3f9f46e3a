//! `http` mode: each message is POSTed, with the headers of Elastic Beanstalk's worker daemon
//! (sqsd), to a long-lived HTTP server in the same container; a 2xx answer means done. No message
//! is sent before the server passes the readiness probe. The request and the probe are in
//! `worker/README.md` ("A long-lived handler").

use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use tokio::process::Child;
use tokio_util::sync::CancellationToken;

use super::process::{self, Launch, Shared, Supervisor};
use super::{BoxError, Handler, Message, Supervised};
use crate::config::Config;

/// Header with the SQS message id.
pub const MSGID_HEADER: &str = "x-aws-sqsd-msgid";
/// Header with the queue name.
pub const QUEUE_HEADER: &str = "x-aws-sqsd-queue";
/// Header with the receive count (1 the first time).
pub const RECEIVE_COUNT_HEADER: &str = "x-aws-sqsd-receive-count";
/// Header with the time SQS first handed the message out.
pub const FIRST_RECEIVED_HEADER: &str = "x-aws-sqsd-first-received-at";
/// Prefix of the headers carrying message attributes.
pub const ATTRIBUTE_HEADER_PREFIX: &str = "x-aws-sqsd-attr-";
/// Header with the time the worker gives up on the request (only with a handler timeout).
pub const DEADLINE_HEADER: &str = "x-ecs-worker-deadline";

/// Pause between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// Longest one readiness probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// POSTs each message to an HTTP server, up to `WORKER_CONCURRENCY` requests in flight.
#[derive(Clone)]
pub struct HttpHandler {
    client: reqwest::Client,
    url: reqwest::Url,
    queue_name: HeaderValue,
    timeout: Option<Duration>,
    process: Option<Shared<()>>,
}

impl HttpHandler {
    /// Waits until the handler at `config.handler_url` is ready, starting and supervising
    /// `config.handler_command` first if given. A restart that never becomes ready cancels
    /// `fatal`. The error names the URL and the timeout.
    pub async fn start(config: &Config, fatal: CancellationToken) -> Result<Self, String> {
        let url = reqwest::Url::parse(&config.handler_url)
            .map_err(|e| format!("invalid handler URL {}: {e}", config.handler_url))?;
        let client = reqwest::Client::builder()
            // The handler is local: a proxy from the environment must not be used for it.
            .no_proxy()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(config.concurrency)
            .user_agent(concat!("ecs-worker/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let probe = Probe {
            client: client.clone(),
            url: match &config.handler_ready_path {
                Some(path) => url
                    .join(path)
                    .map_err(|e| format!("invalid ready path {path}: {e}"))?,
                None => url.clone(),
            },
            needs_2xx: config.handler_ready_path.is_some(),
            timeout: config.handler_ready_timeout,
        };
        let process = match &config.handler_command {
            Some(command_line) => {
                let launcher = Launcher {
                    command_line: command_line.clone(),
                    probe,
                };
                Some(std::sync::Arc::new(
                    Supervisor::start(launcher, fatal).await?,
                ))
            }
            None => {
                probe.wait(None).await?;
                None
            }
        };
        let queue_name = config
            .queue_url
            .rsplit('/')
            .next()
            .and_then(|n| HeaderValue::from_str(n).ok())
            .unwrap_or_else(|| HeaderValue::from_static(""));
        Ok(HttpHandler {
            client,
            url,
            queue_name,
            timeout: config.handler_timeout,
            process,
        })
    }

    fn headers(&self, message: &Message) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Ok(v) = HeaderValue::from_str(&message.id) {
            h.insert(MSGID_HEADER, v);
        }
        h.insert(QUEUE_HEADER, self.queue_name.clone());
        h.insert(
            RECEIVE_COUNT_HEADER,
            HeaderValue::from(message.receive_count),
        );
        if let Some(at) = message.first_received_at
            && let Ok(v) = HeaderValue::from_str(&iso8601(at))
        {
            h.insert(FIRST_RECEIVED_HEADER, v);
        }
        if let Some(limit) = self.timeout
            && let Ok(v) = HeaderValue::from_str(&iso8601(SystemTime::now() + limit))
        {
            h.insert(DEADLINE_HEADER, v);
        }
        for (name, value) in &message.attributes {
            let name = HeaderName::from_bytes(
                format!("{ATTRIBUTE_HEADER_PREFIX}{}", name.to_ascii_lowercase()).as_bytes(),
            );
            match (name, HeaderValue::from_str(value)) {
                (Ok(name), Ok(value)) => {
                    h.insert(name, value);
                }
                // SQS allows characters in values that HTTP headers cannot carry.
                _ => tracing::debug!(
                    message_id = %message.id,
                    "a message attribute cannot be sent as a header; left out"
                ),
            }
        }
        h
    }
}

/// Formats a time as sqsd does: UTC, ISO 8601.
pub(crate) fn iso8601(t: SystemTime) -> String {
    aws_smithy_types::DateTime::from(t)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_default()
}

/// The handler process the worker started, if any (an `http` handler may run on its own).
impl Supervised for HttpHandler {
    fn failure(&self) -> Option<String> {
        self.process.as_ref().and_then(|p| p.failure())
    }

    async fn shutdown(&self) {
        if let Some(p) = &self.process {
            p.shutdown().await;
        }
    }
}

impl Handler for HttpHandler {
    fn handle(
        &self,
        message: Message,
    ) -> impl std::future::Future<Output = Result<(), BoxError>> + Send {
        let this = self.clone();
        async move {
            let generation = match &this.process {
                Some(p) => Some(p.current().await?),
                None => None,
            };
            let request = this
                .client
                .post(this.url.clone())
                .headers(this.headers(&message))
                .body(message.body)
                .send();
            let exited = generation.map(|g| g.exited);
            let response = tokio::select! {
                r = request => r,
                _ = async {
                    match &exited {
                        Some(t) => t.cancelled().await,
                        None => std::future::pending().await,
                    }
                } => return Err("the handler process ended while handling the message".into()),
            };
            let response = response
                .map_err(|e| format!("request to the handler failed: {}", error_chain(&e)))?;
            let status = response.status();
            if status.is_success() {
                Ok(())
            } else {
                let text = response.text().await.unwrap_or_default();
                let text: String = text.chars().take(200).collect();
                Err(format!("handler answered {status}: {}", text.trim()).into())
            }
        }
    }
}

/// The readiness probe.
#[derive(Clone)]
struct Probe {
    client: reqwest::Client,
    url: reqwest::Url,
    /// With a ready path the answer must be 2xx; without, any HTTP answer will do.
    needs_2xx: bool,
    timeout: Duration,
}

impl Probe {
    /// Probes until ready, the timeout, or (when given) the process exits.
    async fn wait(&self, child: Option<&mut Child>) -> Result<(), String> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut last = String::from("no answer yet");
        let exited = async {
            match child {
                Some(c) => process::describe(c.wait().await),
                None => std::future::pending().await,
            }
        };
        tokio::pin!(exited);
        loop {
            let probe = self
                .client
                .get(self.url.clone())
                .timeout(PROBE_TIMEOUT)
                .send();
            let answer = tokio::select! {
                answer = probe => answer,
                how = &mut exited => return Err(format!(
                    "the handler process {how} before it answered the readiness probe at {}",
                    self.url
                )),
                _ = tokio::time::sleep_until(deadline) => return Err(format!(
                    "the handler did not answer the readiness probe GET {} {}within {} s \
                     (WORKER_HANDLER_READY_TIMEOUT_SECONDS); last attempt: {last}",
                    self.url,
                    if self.needs_2xx { "with a 2xx " } else { "" },
                    self.timeout.as_secs()
                )),
            };
            match answer {
                Ok(r) if !self.needs_2xx || r.status().is_success() => {
                    tracing::info!(
                        url = %self.url,
                        waited_ms = started.elapsed().as_millis() as u64,
                        "handler is ready"
                    );
                    return Ok(());
                }
                Ok(r) => last = format!("answered {}", r.status()),
                Err(e) => last = error_chain(&e),
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }
}

/// An error and its sources, in words.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Starts the HTTP handler's process and waits for its readiness.
struct Launcher {
    command_line: String,
    probe: Probe,
}

impl Launch for Launcher {
    type Live = ();

    async fn launch(&self) -> Result<(Child, ()), String> {
        let mut child = process::spawn(&self.command_line, false)
            .map_err(|e| format!("could not start `/bin/sh -c {}`: {e}", self.command_line))?;
        tracing::info!(command = %self.command_line, "handler process started");
        match self.probe.wait(Some(&mut child)).await {
            Ok(()) => Ok((child, ())),
            Err(e) => {
                process::stop(&mut child, Duration::ZERO).await;
                Err(format!("`{}`: {e}", self.command_line))
            }
        }
    }
}
