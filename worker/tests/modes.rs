//! The long-lived handler modes through the `ecs-worker` binary against moto: the Python
//! examples (model loaded once, JSON logs), an HTTP handler crashing mid-message, a stdio handler
//! writing garbage, a handler that never becomes ready, and SIGTERM with 8 messages in flight in
//! each mode.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{Env, TempDir, binary_command, lines};

const HTTP_EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/http_handler.py");
const STDIO_EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/stdio_handler.py");

fn base_vars(queue_url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("WORKER_QUEUE_URL", queue_url.to_owned()),
        ("WORKER_WAIT_SECONDS", "1".into()),
        ("WORKER_RETRY_BACKOFF", "0".into()),
        ("WORKER_TERMINATION", "none".into()),
    ]
}

/// A local port nothing listens on (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn http_vars(queue_url: &str, port: u16, handler: String) -> Vec<(&'static str, String)> {
    let mut vars = base_vars(queue_url);
    vars.extend([
        ("WORKER_HANDLER_MODE", "http".to_owned()),
        ("WORKER_HANDLER_URL", format!("http://127.0.0.1:{port}/")),
        ("WORKER_HANDLER_READY_PATH", "/healthz".to_owned()),
        ("WORKER_HANDLER_READY_TIMEOUT_SECONDS", "30".to_owned()),
        ("WORKER_HANDLER", handler),
    ]);
    vars
}

fn write_script(dir: &TempDir, name: &str, text: &str) -> String {
    let path = dir.path(name);
    std::fs::write(&path, text).expect("write the handler script");
    format!("python3 '{}'", path.display())
}

/// Runs the worker to the end; returns its exit code and stderr.
async fn run(env: &Env, vars: &[(&str, String)]) -> (Option<i32>, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        binary_command(env, vars)
            .stdout(std::process::Stdio::null())
            .output(),
    )
    .await
    .expect("the worker finishes")
    .expect("run the worker");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Checks the example's run: the failing message dead-lettered, the others deleted, the model
/// loaded once, and with JSON logs a line per message and a JSON summary.
async fn example_run(mode: &str, example: &str) {
    let env = Env::start().await;
    let q = env.queue(&format!("{mode}-example"), 30, Some(1)).await;
    let mut bodies: Vec<String> = (0..8).map(|i| format!("{{\"n\": {i}}}")).collect();
    bodies.push(r#"{"fail": true}"#.to_owned());
    let sent = env.send(&q.url, bodies).await;
    let port = free_port();
    let mut vars = http_vars(&q.url, port, format!("python3 '{example}'"));
    vars.retain(|(k, _)| *k != "WORKER_HANDLER_MODE");
    vars.extend([
        ("WORKER_HANDLER_MODE", mode.to_owned()),
        ("WORKER_CONCURRENCY", "2".to_owned()),
        ("WORKER_LOG_FORMAT", "json".to_owned()),
        ("MODEL_LOAD_SECONDS", "0.5".to_owned()),
        ("RUST_LOG", "info".to_owned()),
    ]);

    let (code, stderr) = run(&env, &vars).await;

    assert_eq!(code, Some(3), "one message failed; stderr:\n{stderr}");
    assert_eq!(env.depth(&q.url).await, (0, 0));
    let dead = env.peek(q.dlq_url.as_deref().expect("dlq"), 30).await;
    let dead: Vec<&str> = dead.iter().filter_map(|m| m.body()).collect();
    assert_eq!(dead, [r#"{"fail": true}"#]);
    assert_eq!(
        stderr.matches("model loaded").count(),
        1,
        "the model loads once for all messages; stderr:\n{stderr}"
    );

    let json: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let per_message: Vec<&serde_json::Value> =
        json.iter().filter(|v| v["message"] == "message").collect();
    let handled: BTreeSet<&str> = per_message
        .iter()
        .map(|v| v["message_id"].as_str().expect("message_id"))
        .collect();
    assert_eq!(handled, sent.keys().map(String::as_str).collect());
    for line in &per_message {
        assert_eq!(line["receive_count"], 1, "{line}");
        assert!(line["duration_ms"].as_f64().is_some(), "{line}");
        let outcome = line["outcome"].as_str().expect("outcome");
        assert!(outcome == "succeeded" || outcome == "failed", "{line}");
    }
    assert_eq!(
        per_message
            .iter()
            .filter(|v| v["outcome"] == "failed")
            .count(),
        1
    );
    let summary = json.last().expect("a final JSON line");
    assert_eq!(summary["message"], "worker finished");
    assert_eq!(summary["exit_code"], 3);
    assert_eq!(summary["summary"]["counters"]["succeeded"], 8, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_example_loads_its_model_once_and_logs_json() {
    example_run("http", HTTP_EXAMPLE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stdio_example_loads_its_model_once_and_logs_json() {
    example_run("stdio", STDIO_EXAMPLE).await;
}

/// An HTTP handler the worker started dies in the middle of a message: that message (and any
/// other in flight) fails, the handler is started again and passes its readiness probe, the
/// message is handled on its next receive, and every message ends up handled and deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_handler_crash_mid_message_is_retried_after_a_restart() {
    let env = Env::start().await;
    let q = env.queue("http-crash", 30, None).await;
    let mut bodies: Vec<String> = (0..10).map(|i| format!("job {i}")).collect();
    bodies.push("crash".to_owned());
    let sent = env.send(&q.url, bodies).await;
    let dir = TempDir::new("http-crash");
    let script = write_script(
        &dir,
        "server.py",
        &format!(
            r#"
import os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
DIR = {dir:?}
with open(DIR + "/starts", "a") as f:
    f.write("start\n")
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        if body == "crash" and self.headers["X-Aws-Sqsd-Receive-Count"] == "1":
            with open(DIR + "/crashed", "a") as f:
                f.write(self.headers["X-Aws-Sqsd-Msgid"] + "\n")
            os._exit(1)
        with open(DIR + "/handled", "a") as f:
            f.write(self.headers["X-Aws-Sqsd-Msgid"] + "\n")
        self.send_response(204); self.end_headers()
    def log_message(self, *a): pass
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#,
            dir = dir.root().display().to_string()
        ),
    );
    let port = free_port();
    let mut vars = http_vars(&q.url, port, script);
    vars.extend([
        ("PORT", port.to_string()),
        ("WORKER_CONCURRENCY", "2".to_owned()),
    ]);

    let (code, stderr) = run(&env, &vars).await;

    assert_eq!(code, Some(3), "the crashed run counts as failed; {stderr}");
    assert_eq!(lines(&dir.path("crashed")).len(), 1, "{stderr}");
    assert_eq!(
        lines(&dir.path("starts")).len(),
        2,
        "started once, restarted once"
    );
    let handled: BTreeSet<String> = lines(&dir.path("handled")).into_iter().collect();
    assert_eq!(
        handled,
        sent.keys().cloned().collect(),
        "every message handled, the crashed one included"
    );
    assert_eq!(
        env.depth(&q.url).await,
        (0, 0),
        "nothing left, nothing lost"
    );
    assert!(
        stderr.contains("handler process ended"),
        "the crash is logged: {stderr}"
    );
}

/// A stdio handler writes something that is not an answer: a clear error, the message in flight
/// is retried (not deleted), and the handler is restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_garbage_is_a_clear_error_and_the_message_is_retried() {
    let env = Env::start().await;
    let q = env.queue("stdio-garbage", 30, None).await;
    let sent = env
        .send(
            &q.url,
            ["a".to_owned(), "garbage".to_owned(), "b".to_owned()],
        )
        .await;
    let dir = TempDir::new("stdio-garbage");
    let script = write_script(
        &dir,
        "handler.py",
        &format!(
            r#"
import json, sys
DIR = {dir:?}
with open(DIR + "/starts", "a") as f:
    f.write("start\n")
while True:
    line = sys.stdin.readline()
    if not line:
        break
    m = json.loads(line)
    if m["body"] == "garbage" and m["receiveCount"] == 1:
        print("Traceback (most recent call last): something went wrong", flush=True)
        continue
    with open(DIR + "/handled", "a") as f:
        f.write(m["id"] + "\n")
    print(json.dumps({{"id": m["id"], "ok": True}}), flush=True)
"#,
            dir = dir.root().display().to_string()
        ),
    );
    let mut vars = base_vars(&q.url);
    vars.extend([
        ("WORKER_HANDLER_MODE", "stdio".to_owned()),
        ("WORKER_HANDLER", script),
    ]);

    let (code, stderr) = run(&env, &vars).await;

    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("not an answer") && stderr.contains("Traceback"),
        "the error says what the handler wrote: {stderr}"
    );
    let handled: BTreeSet<String> = lines(&dir.path("handled")).into_iter().collect();
    assert_eq!(handled, sent.keys().cloned().collect());
    assert_eq!(lines(&dir.path("starts")).len(), 2, "restarted once");
    assert_eq!(env.depth(&q.url).await, (0, 0));
}

/// An HTTP handler that never answers its readiness probe: the worker gives up after the ready
/// timeout with an error naming the URL and the timeout, exits 1, stops the handler process,
/// receives nothing — and still removes its instance, so the group scales to zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_never_becomes_ready_exits_1_and_its_capacity_is_removed() {
    let env = Env::start().await;
    let q = env.queue("never-ready", 30, None).await;
    env.send(&q.url, ["waiting".to_owned()]).await;
    let instances = env.group("never-ready", 1).await;
    let dir = TempDir::new("never-ready");
    let pid_file = dir.path("pid");
    let port = free_port();
    let mut vars = http_vars(
        &q.url,
        port,
        format!("echo $$ > '{}'; exec sleep 600", pid_file.display()),
    );
    vars.retain(|(k, _)| {
        *k != "WORKER_TERMINATION" && *k != "WORKER_HANDLER_READY_TIMEOUT_SECONDS"
    });
    vars.extend([
        ("WORKER_HANDLER_READY_TIMEOUT_SECONDS", "2".to_owned()),
        ("WORKER_TERMINATION", "instance".to_owned()),
        ("WORKER_AUTOSCALING_GROUP", "never-ready".to_owned()),
        ("WORKER_INSTANCE_ID", instances[0].clone()),
    ]);

    let started = Instant::now();
    let (code, stderr) = run(&env, &vars).await;

    assert_eq!(code, Some(1), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(30));
    let url = format!("http://127.0.0.1:{port}/healthz");
    assert!(
        stderr.contains(&url) && stderr.contains("within 2 s"),
        "the error names the URL and the timeout: {stderr}"
    );
    assert_eq!(
        env.group_state("never-ready").await,
        (0, vec![]),
        "the instance left the group all the same"
    );
    assert_eq!(
        env.depth(&q.url).await,
        (1, 0),
        "the message waits for the next run"
    );
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("the handler started")
        .trim()
        .parse()
        .expect("pid");
    let pid = rustix::process::Pid::from_raw(pid).expect("pid");
    assert!(
        rustix::process::test_kill_process(pid).is_err(),
        "the handler process was stopped"
    );
}

/// SIGTERM while 8 handlers hold a message each and none will finish within the grace period:
/// the worker exits 4 and all 8 messages are visible again at once, not after their visibility
/// timeout (60 s here).
async fn sigterm_releases_8_in_flight(mode: &str) {
    let env = Env::start().await;
    let q = env.queue(&format!("term-{mode}"), 60, None).await;
    env.send(&q.url, (0..8).map(|i| format!("job {i}"))).await;
    let dir = TempDir::new(&format!("term-{mode}"));
    let started = dir.path("started");
    let mut vars = base_vars(&q.url);
    vars.extend([
        ("WORKER_CONCURRENCY", "8".to_owned()),
        ("WORKER_VISIBILITY_TIMEOUT", "60".to_owned()),
        ("WORKER_SHUTDOWN_GRACE", "1".to_owned()),
    ]);
    match mode {
        "command" => vars.push((
            "WORKER_HANDLER",
            format!("echo x >> '{}'; sleep 600", started.display()),
        )),
        "http" => {
            let port = free_port();
            let script = write_script(
                &dir,
                "server.py",
                &format!(
                    r#"
import os, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def do_POST(self):
        with open({started:?}, "a") as f:
            f.write("x\n")
        time.sleep(600)
    def log_message(self, *a): pass
ThreadingHTTPServer(("127.0.0.1", {port}), H).serve_forever()
"#,
                    started = started.display().to_string()
                ),
            );
            vars.extend(http_vars(&q.url, port, script).into_iter().skip(4));
        }
        "stdio" => {
            let script = write_script(
                &dir,
                "handler.py",
                &format!(
                    r#"
import sys
while sys.stdin.readline():
    with open({started:?}, "a") as f:
        f.write("x\n")
"#,
                    started = started.display().to_string()
                ),
            );
            vars.extend([
                ("WORKER_HANDLER_MODE", "stdio".to_owned()),
                ("WORKER_HANDLER", script),
            ]);
        }
        _ => unreachable!(),
    }
    let mut child = binary_command(&env, &vars)
        .spawn()
        .expect("start the worker");
    let deadline = Instant::now() + Duration::from_secs(60);
    while lines(&started).len() < 8 {
        assert!(
            Instant::now() < deadline,
            "only {} of 8 handlers started",
            lines(&started).len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(env.depth(&q.url).await, (0, 8), "8 in flight");
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(rustix::process::Pid::from_raw)
        .expect("worker pid");
    let signalled = Instant::now();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("send SIGTERM");
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the worker stops")
        .expect("wait");
    let stopped_in = signalled.elapsed();

    assert_eq!(status.code(), Some(4));
    assert_eq!(
        env.depth(&q.url).await,
        (8, 0),
        "all 8 visible again right after the worker exited"
    );
    let mut again = BTreeSet::new();
    for _ in 0..4 {
        for m in env.peek(&q.url, 60).await {
            again.insert(m.message_id().expect("id").to_owned());
        }
    }
    assert_eq!(again.len(), 8, "a receive right after gets all 8 back");
    println!(
        "{mode}: stopped {} ms after SIGTERM",
        stopped_in.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_8_in_flight_in_command_mode() {
    sigterm_releases_8_in_flight("command").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_8_in_flight_in_http_mode() {
    sigterm_releases_8_in_flight("http").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_8_in_flight_in_stdio_mode() {
    sigterm_releases_8_in_flight("stdio").await;
}
