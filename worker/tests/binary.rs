//! The `ecs-worker` binary as the task definition runs it: configured by environment, the command
//! handler, self-termination, SIGTERM, and kill -9 at random points.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{Env, TempDir, binary_command, lines};
use rand::Rng;

fn base_vars(queue_url: &str, handler: String) -> Vec<(&'static str, String)> {
    vec![
        ("WORKER_QUEUE_URL", queue_url.to_owned()),
        ("WORKER_HANDLER", handler),
        ("WORKER_WAIT_SECONDS", "1".into()),
        ("WORKER_RETRY_BACKOFF", "0".into()),
    ]
}

#[tokio::test]
async fn a_drained_worker_exits_0_and_removes_only_its_own_instance() {
    let env = Env::start().await;
    let q = env.queue("work", 30, None).await;
    let sent = env
        .send(&q.url, (0..3).map(|i| format!("{{\"job\": {i}}}")))
        .await;
    let instances = env.group("workers", 2).await;
    let dir = TempDir::new("own-instance");
    let handler = format!("cat >> '{0}'; echo >> '{0}'", dir.path("bodies").display());
    let mut vars = base_vars(&q.url, handler);
    vars.push(("WORKER_AUTOSCALING_GROUP", "workers".into()));
    vars.push(("WORKER_INSTANCE_ID", instances[0].clone()));

    let status = binary_command(&env, &vars)
        .status()
        .await
        .expect("run the worker");

    assert_eq!(status.code(), Some(0));
    let bodies: BTreeSet<String> = lines(&dir.path("bodies")).into_iter().collect();
    assert_eq!(bodies, sent.values().cloned().collect());
    assert_eq!(env.depth(&q.url).await, (0, 0));
    let (desired, left) = env.group_state("workers").await;
    assert_eq!(desired, 1, "desired capacity decremented");
    assert_eq!(
        left,
        vec![instances[1].clone()],
        "only its own instance left the group"
    );
}

#[tokio::test]
async fn an_empty_queue_is_drained_at_once_and_the_instance_leaves_the_group() {
    let env = Env::start().await;
    let q = env.queue("empty", 30, None).await;
    let instances = env.group("solo", 1).await;
    let mut vars = base_vars(&q.url, "true".into());
    vars.push(("WORKER_INSTANCE_ID", instances[0].clone()));

    let started = Instant::now();
    let status = binary_command(&env, &vars)
        .status()
        .await
        .expect("run the worker");

    assert_eq!(status.code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(env.group_state("solo").await, (0, vec![]));
}

/// The worker never asks the EC2 instance metadata service, even with the SDK allowed to: its
/// instance comes from `WORKER_INSTANCE_ID` or its ECS task, so the launch template can keep
/// IMDS out of reach of containers (hop limit 1).
#[tokio::test]
async fn the_instance_metadata_service_is_never_asked() {
    let env = Env::start().await;
    let q = env.queue("no-imds", 30, None).await;
    env.group("no-imds", 1).await;
    // A stand-in IMDS that counts the connections it gets.
    let imds = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let imds_url = format!("http://{}", imds.local_addr().expect("address"));
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = connections.clone();
    let server = tokio::spawn(async move {
        while let Ok((stream, _)) = imds.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(stream);
        }
    });
    let mut vars = base_vars(&q.url, "true".into());
    vars.push(("WORKER_AUTOSCALING_GROUP", "no-imds".into()));
    vars.push(("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds_url));
    let mut cmd = binary_command(&env, &vars);
    cmd.env_remove("AWS_EC2_METADATA_DISABLED");

    let out = cmd.output().await.expect("run the worker");
    server.abort();

    assert_eq!(out.status.code(), Some(5), "no way to find the instance");
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the worker connected to the instance metadata service"
    );
    assert_eq!(env.group_state("no-imds").await.0, 1, "capacity left alone");
}

#[tokio::test]
async fn a_failed_message_gives_exit_code_3() {
    let env = Env::start().await;
    let q = env.queue("fails", 30, Some(2)).await;
    env.send(&q.url, ["bad".to_owned()]).await;
    let mut vars = base_vars(&q.url, "exit 9".into());
    vars.push(("WORKER_TERMINATION", "none".into()));

    let status = binary_command(&env, &vars)
        .status()
        .await
        .expect("run the worker");

    assert_eq!(status.code(), Some(3));
    assert_eq!(env.depth(&q.url).await, (0, 0));
    assert_eq!(env.depth(q.dlq_url.as_deref().expect("dlq")).await, (1, 0));
}

#[tokio::test]
async fn configuration_errors_give_exit_code_1() {
    let env = Env::start().await;
    let q = env.queue("config", 30, None).await;
    for vars in [
        vec![("WORKER_QUEUE_URL", q.url.clone())],   // no handler
        vec![("WORKER_HANDLER", "true".to_owned())], // no queue
        base_vars(&q.url, "true".into())
            .into_iter()
            .chain([("WORKER_CONCURRENCY", "lots".to_owned())])
            .collect(),
    ] {
        let status = binary_command(&env, &vars)
            .status()
            .await
            .expect("run the worker");
        assert_eq!(status.code(), Some(1), "{vars:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_running_handler_finish_and_exits_4() {
    let env = Env::start().await;
    let q = env.queue("term", 60, None).await;
    env.send(&q.url, ["a".to_owned(), "b".to_owned()]).await;
    let dir = TempDir::new("sigterm");
    let handler = format!(
        "touch '{0}/started'; sleep 2; echo \"$WORKER_MESSAGE_ID\" >> '{0}/done'",
        dir.root().display()
    );
    let mut vars = base_vars(&q.url, handler);
    vars.push(("WORKER_TERMINATION", "none".into()));
    vars.push(("WORKER_PREFETCH", "1".into()));
    let mut child = binary_command(&env, &vars)
        .spawn()
        .expect("start the worker");

    let deadline = Instant::now() + Duration::from_secs(30);
    while !dir.path("started").exists() {
        assert!(Instant::now() < deadline, "the handler never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(rustix::process::Pid::from_raw)
        .expect("worker pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("send SIGTERM");
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the worker stops within the grace period")
        .expect("wait");

    assert_eq!(status.code(), Some(4));
    assert_eq!(
        lines(&dir.path("done")).len(),
        1,
        "the running handler finished"
    );
    // The finished message was deleted; the prefetched one is visible again at once.
    assert_eq!(env.depth(&q.url).await, (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_points_loses_no_message() {
    let env = Env::start().await;
    let q = env.queue("crashy", 2, None).await;
    let sent = env.send(&q.url, (0..200).map(|i| format!("job {i}"))).await;
    let dir = TempDir::new("kill9");
    let handled = dir.path("handled");
    let handler = format!(
        "sleep 0.05; echo \"$WORKER_MESSAGE_ID\" >> '{}'",
        handled.display()
    );
    let mut vars = base_vars(&q.url, handler);
    vars.extend([
        ("WORKER_TERMINATION", "none".to_owned()),
        ("WORKER_CONCURRENCY", "4".to_owned()),
        ("WORKER_PREFETCH", "4".to_owned()),
        ("WORKER_VISIBILITY_TIMEOUT", "2".to_owned()),
    ]);

    let mut rng = rand::rng();
    let mut kills = 0;
    let status = loop {
        let mut child = binary_command(&env, &vars)
            .spawn()
            .expect("start the worker");
        if kills == 6 {
            break tokio::time::timeout(Duration::from_secs(120), child.wait())
                .await
                .expect("the last worker drains the queue")
                .expect("wait");
        }
        let after = Duration::from_millis(rng.random_range(300..1500));
        tokio::select! {
            status = child.wait() => break status.expect("wait"),
            _ = tokio::time::sleep(after) => {
                child.start_kill().expect("SIGKILL");
                child.wait().await.expect("reap");
                kills += 1;
            }
        }
    };

    assert_eq!(status.code(), Some(0));
    assert!(kills >= 1, "the worker was never killed mid-run");
    let handled = lines(&handled);
    let unique: BTreeSet<&str> = handled.iter().map(String::as_str).collect();
    let missing: Vec<&String> = sent
        .keys()
        .filter(|id| !unique.contains(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "messages deleted unhandled: {missing:?}"
    );
    assert_eq!(unique.len(), sent.len());
    assert_eq!(env.depth(&q.url).await, (0, 0));
    println!(
        "{kills} kills; {} handler runs for {} messages",
        handled.len(),
        sent.len()
    );
}

#[tokio::test]
async fn the_python_example_handler_succeeds_and_fails_as_documented() {
    let env = Env::start().await;
    let q = env.queue("python", 30, Some(1)).await;
    let sent = env
        .send(
            &q.url,
            [r#"{"n": 1}"#.to_owned(), r#"{"fail": true}"#.to_owned()],
        )
        .await;
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/handler.py");
    let mut vars = base_vars(&q.url, format!("python3 '{example}'"));
    vars.push(("WORKER_TERMINATION", "none".into()));

    let status = binary_command(&env, &vars)
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .expect("run the worker");

    assert_eq!(status.code(), Some(3), "one message failed");
    assert_eq!(env.depth(&q.url).await, (0, 0));
    let dead = env
        .peek(q.dlq_url.as_deref().expect("dead-letter queue"), 30)
        .await;
    let dead_ids: Vec<&str> = dead.iter().filter_map(|m| m.message_id()).collect();
    let failing: Vec<&str> = sent
        .iter()
        .filter(|(_, body)| body.contains("fail"))
        .map(|(id, _)| id.as_str())
        .collect();
    assert_eq!(
        dead_ids, failing,
        "only the failing message was dead-lettered"
    );
}

/// Configured by the environment alone: a bad value stops the worker with exit code 1 and an
/// error naming the variable, a blank one counts as unset, and the command line (whatever the
/// task definition's command adds) is not read.
#[tokio::test]
async fn the_environment_is_read_and_the_command_line_is_not() {
    let run = |vars: &[(&str, &str)]| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_ecs-worker"))
            .args(["--help", "--concurrency=two"])
            .env_clear()
            .env("RUST_LOG", "error")
            .envs(vars.iter().copied())
            .output()
    };
    let out = run(&[
        ("WORKER_QUEUE_URL", "http://q"),
        ("WORKER_CONCURRENCY", "two"),
    ])
    .await
    .expect("run the worker");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(r#"WORKER_CONCURRENCY="two" is invalid: an integer from 1 to 1000"#),
        "{stderr}"
    );

    // The blank concurrency gets its default; what stops this one is the handler stdio needs.
    let out = run(&[
        ("WORKER_QUEUE_URL", "http://q"),
        ("WORKER_CONCURRENCY", " "),
        ("WORKER_HANDLER_MODE", "stdio"),
    ])
    .await
    .expect("run the worker");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("WORKER_HANDLER is required"), "{stderr}");
}
