//! The drain loop against moto SQS, through the library API: exactly-once handling of a large
//! batch, retries of crashed, hung and failing handlers, the dead-letter queue, the visibility
//! heartbeat, shutdown, `auto` prefetch (full receives for quick handlers, nothing held ahead of
//! long ones) and deletes that never hold up a handler.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Env, TempDir, lines};
use ecs_worker::config::Prefetch;
use ecs_worker::{CommandHandler, End, Exit, Message, Worker, from_fn};
use testbed::proxy::{Faults, Proxy};
use tokio_util::sync::CancellationToken;

type Seen = Arc<Mutex<BTreeMap<String, u32>>>;

fn record(seen: &Seen, id: &str) {
    *seen.lock().unwrap().entry(id.to_owned()).or_default() += 1;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_messages_are_each_handled_exactly_once() {
    // moto's SQS spends time proportional to the queue length on every message it sends or
    // receives, so a 1,000-message backlog alone costs it about a minute of CPU. The producer
    // therefore sends while the worker drains, keeping about 100 messages queued (a backlog is
    // covered by the kill -9 test); the worker must not stop while more arrive.
    let env = Env::start().await;
    let q = env.queue("thousand", 30, None).await;
    let seen: Seen = Arc::default();
    let bodies: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let mut config = env.config(&q.url);
    config.concurrency = 8;
    config.prefetch = 2.into();
    config.empty_receives = 3;
    let handler = {
        let seen = seen.clone();
        let bodies = bodies.clone();
        from_fn(move |m: Message| {
            record(&seen, &m.id);
            bodies.lock().unwrap().insert(m.id.clone(), m.body.clone());
            let first = m.receive_count == 1;
            async move {
                if first {
                    Ok(())
                } else {
                    Err(std::io::Error::other("received a second time"))
                }
            }
        })
    };
    let worker = Worker::new(config, &env.clients(), handler);
    let counters = worker.counters();
    let run = tokio::spawn(worker.run(CancellationToken::new()));
    let mut sent = BTreeMap::new();
    for batch in 0..20 {
        while sent.len() as u64 > counters.snapshot().received + 50 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let bodies = (batch * 50..(batch + 1) * 50).map(|i| format!("{{\"n\": {i}}}"));
        sent.extend(env.send(&q.url, bodies).await);
    }
    assert_eq!(sent.len(), 1000);
    let report = run.await.expect("worker runs");

    assert_eq!(report.exit(), Exit::Success, "{report:?}");
    assert_eq!(report.end, Some(End::Drained));
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1000);
        assert!(
            seen.values().all(|&n| n == 1),
            "a message was handled twice"
        );
    }
    assert_eq!(*bodies.lock().unwrap(), sent, "every body arrived intact");
    assert_eq!(report.counters.deleted, 1000);
    assert_eq!(report.counters.failed, 0);
    assert_eq!(env.depth(&q.url).await, (0, 0));
}

#[tokio::test]
async fn a_handler_killed_mid_message_gets_the_message_again() {
    let env = Env::start().await;
    let q = env.queue("killed", 30, None).await;
    let sent = env.send(&q.url, (0..5).map(|i| format!("job {i}"))).await;
    let dir = TempDir::new("killed");
    // First attempt: leave a mark, then die by SIGKILL mid-message. Second: finish.
    let command = format!(
        "if [ -e '{dir}/'\"$WORKER_MESSAGE_ID\" ]; then echo \"$WORKER_MESSAGE_ID $WORKER_RECEIVE_COUNT\" >> '{dir}/done'; \
         else touch '{dir}/'\"$WORKER_MESSAGE_ID\"; kill -9 $$; fi",
        dir = dir.root().display()
    );
    let report = Worker::new(
        env.config(&q.url),
        &env.clients(),
        CommandHandler::new(command),
    )
    .run(CancellationToken::new())
    .await;

    assert_eq!(report.end, Some(End::Drained));
    assert_eq!(report.exit(), Exit::MessagesFailed);
    assert_eq!(report.counters.failed, 5);
    assert_eq!(report.counters.deleted, 5);
    let done: BTreeMap<String, String> = lines(&dir.path("done"))
        .into_iter()
        .filter_map(|l| l.split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned())))
        .collect();
    assert!(
        done.keys().eq(sent.keys()),
        "every message finished: {done:?}"
    );
    assert!(
        done.values().all(|count| count == "2"),
        "second receive: {done:?}"
    );
    assert_eq!(env.depth(&q.url).await, (0, 0));
}

#[tokio::test]
async fn a_hung_handler_is_stopped_by_the_timeout_and_retried() {
    let env = Env::start().await;
    let q = env.queue("hung", 30, None).await;
    let sent = env.send(&q.url, ["stuck once".to_owned()]).await;
    let dir = TempDir::new("hung");
    let command = format!(
        "if [ \"$WORKER_RECEIVE_COUNT\" = 1 ]; then sleep 600; else echo \"$WORKER_MESSAGE_ID\" >> '{}'; fi",
        dir.path("done").display()
    );
    let mut config = env.config(&q.url);
    config.handler_timeout = Some(Duration::from_secs(1));
    let started = Instant::now();
    let report = Worker::new(config, &env.clients(), CommandHandler::new(command))
        .run(CancellationToken::new())
        .await;

    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(report.counters.timed_out, 1);
    assert_eq!(report.counters.deleted, 1);
    assert_eq!(report.exit(), Exit::MessagesFailed);
    assert_eq!(
        lines(&dir.path("done")),
        sent.keys().cloned().collect::<Vec<_>>()
    );
    assert_eq!(env.depth(&q.url).await, (0, 0));
}

#[tokio::test]
async fn a_message_that_always_fails_ends_in_the_dead_letter_queue() {
    let env = Env::start().await;
    let q = env.queue("poison", 30, Some(3)).await;
    let dlq = q.dlq_url.clone().expect("dead-letter queue");
    let sent = env.send(&q.url, ["poison".to_owned()]).await;
    let attempts: Seen = Arc::default();
    let handler = {
        let attempts = attempts.clone();
        from_fn(move |m: Message| {
            record(&attempts, &m.id);
            async move { Err(anyhow::anyhow!("cannot handle {}", m.body)) }
        })
    };
    let report = Worker::new(env.config(&q.url), &env.clients(), handler)
        .run(CancellationToken::new())
        .await;

    assert_eq!(report.end, Some(End::Drained));
    assert_eq!(report.exit(), Exit::MessagesFailed);
    let attempts = attempts.lock().unwrap().clone();
    let id = sent.keys().next().expect("one message");
    assert_eq!(attempts.get(id), Some(&3), "handled maxReceiveCount times");
    assert_eq!(report.counters.deleted, 0);
    assert_eq!(env.depth(&q.url).await, (0, 0));
    let in_dlq = env.peek(&dlq, 30).await;
    assert_eq!(in_dlq.len(), 1);
    assert_eq!(in_dlq[0].message_id(), Some(id.as_str()));
    assert_eq!(in_dlq[0].body(), Some("poison"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_longer_than_the_visibility_timeout_keeps_its_message() {
    let env = Env::start().await;
    let q = env.queue("long", 2, None).await;
    let sent = env.send(&q.url, ["long job".to_owned()]).await;
    let seen: Seen = Arc::default();
    let handler = {
        let seen = seen.clone();
        Arc::new(from_fn(move |m: Message| {
            record(&seen, &m.id);
            async {
                tokio::time::sleep(Duration::from_secs(7)).await;
                Ok::<(), std::io::Error>(())
            }
        }))
    };
    let mut config = env.config(&q.url);
    config.visibility_timeout = Duration::from_secs(2);
    config.concurrency = 2;
    // Two workers compete for the queue; without the heartbeat the second (or the first's free
    // slot) would receive the message again after 2 s.
    let a = Worker::new(config.clone(), &env.clients(), handler.clone());
    let b = Worker::new(config, &env.clients(), handler.clone());
    let runs = tokio::spawn(async move {
        tokio::join!(
            a.run(CancellationToken::new()),
            b.run(CancellationToken::new())
        )
    });

    // Meanwhile nobody else can see the message either.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            env.peek(&q.url, 0).await.is_empty(),
            "message became visible"
        );
    }
    let (ra, rb) = runs.await.expect("workers run");

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen.values().copied().collect::<Vec<_>>(),
        [1],
        "handled once"
    );
    assert!(sent.keys().eq(seen.keys()));
    assert_eq!(ra.exit(), Exit::Success);
    assert_eq!(rb.exit(), Exit::Success);
    assert_eq!(ra.counters.deleted + rb.counters.deleted, 1);
    assert!(
        ra.counters.extended + rb.counters.extended >= 2,
        "{ra:?} {rb:?}"
    );
    assert_eq!(env.depth(&q.url).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_running_handlers_and_releases_the_rest() {
    let env = Env::start().await;
    let q = env.queue("shutdown", 60, None).await;
    env.send(&q.url, (0..6).map(|i| format!("job {i}"))).await;
    let started: Seen = Arc::default();
    let handler = {
        let started = started.clone();
        from_fn(move |m: Message| {
            record(&started, &m.id);
            async {
                tokio::time::sleep(Duration::from_secs(2)).await;
                Ok::<(), std::io::Error>(())
            }
        })
    };
    let mut config = env.config(&q.url);
    config.concurrency = 2;
    config.prefetch = 4.into();
    let shutdown = CancellationToken::new();
    let worker = Worker::new(config, &env.clients(), handler);
    let counters = worker.counters();
    let run = tokio::spawn(worker.run(shutdown.clone()));
    wait_until(|| started.lock().unwrap().len() == 2 && counters.snapshot().received == 6).await;
    shutdown.cancel();
    let report = run.await.expect("worker runs");

    assert_eq!(report.end, Some(End::Interrupted));
    assert_eq!(report.exit(), Exit::Interrupted);
    assert_eq!(started.lock().unwrap().len(), 2, "nothing new started");
    assert_eq!(report.counters.deleted, 2, "running handlers finished");
    assert_eq!(report.counters.released, 4, "prefetched messages released");
    // Released at once, not after the 60 s visibility timeout.
    assert_eq!(env.depth(&q.url).await, (4, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_grace_over_stops_the_handler_and_releases_its_message() {
    let env = Env::start().await;
    let q = env.queue("grace", 60, None).await;
    let sent = env.send(&q.url, ["slow".to_owned()]).await;
    let dir = TempDir::new("grace");
    let command = format!(
        "touch '{0}/started'; sleep 30; touch '{0}/finished'",
        dir.root().display()
    );
    let mut config = env.config(&q.url);
    config.shutdown_grace = Duration::from_secs(1);
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(
        Worker::new(config, &env.clients(), CommandHandler::new(command)).run(shutdown.clone()),
    );
    let started_file = dir.path("started");
    wait_until(|| started_file.exists()).await;
    let asked = Instant::now();
    shutdown.cancel();
    let report = run.await.expect("worker runs");

    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "grace period respected"
    );
    assert_eq!(report.exit(), Exit::Interrupted);
    assert_eq!(report.counters.released, 1);
    assert_eq!(report.counters.deleted, 0);
    assert_eq!(env.depth(&q.url).await, (1, 0));
    let again = env.peek(&q.url, 30).await;
    assert_eq!(
        again
            .iter()
            .filter_map(|m| m.message_id())
            .collect::<BTreeSet<_>>(),
        sent.keys().map(String::as_str).collect()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!dir.path("finished").exists(), "the handler was stopped");
}

#[tokio::test]
async fn a_missing_queue_is_a_worker_error() {
    let env = Env::start().await;
    let url = format!("{}/123456789012/absent", env.moto.endpoint());
    let report = Worker::new(
        env.config(&url),
        &env.clients(),
        from_fn(|_m: Message| async { Ok::<(), std::io::Error>(()) }),
    )
    .run(CancellationToken::new())
    .await;
    assert_eq!(report.exit(), Exit::Error);
    assert_eq!(report.end, None);
    assert!(
        report
            .error
            .as_deref()
            .unwrap_or("")
            .contains("NonExistentQueue"),
        "{report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_prefetch_receives_full_batches_for_quick_handlers() {
    let env = Env::start().await;
    let q = env.queue("quick", 30, None).await;
    env.send(&q.url, (0..100).map(|i| format!("job {i}"))).await;
    let config = env.config(&q.url);
    assert_eq!(config.prefetch, Prefetch::Auto, "the default");
    assert_eq!(config.concurrency, 1);
    let report = Worker::new(
        config,
        &env.clients(),
        from_fn(|_m: Message| async { Ok::<(), std::io::Error>(()) }),
    )
    .run(CancellationToken::new())
    .await;

    assert_eq!(report.exit(), Exit::Success, "{report:?}");
    assert_eq!(report.counters.deleted, 100);
    // One receive of 1 to time a first run, then receives of 10: a receive per message (the
    // original's pattern, and this worker's with a prefetch of 0) would be 100.
    let with_messages = report.counters.receives - report.counters.empty_receives;
    assert!(with_messages <= 15, "{with_messages} receives: {report:?}");
    assert_eq!(env.depth(&q.url).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_prefetch_leaves_long_messages_to_other_workers() {
    let env = Env::start().await;
    let q = env.queue("slow", 30, None).await;
    env.send(&q.url, (0..3).map(|i| format!("job {i}"))).await;
    let started: Seen = Arc::default();
    let handler = {
        let started = started.clone();
        from_fn(move |m: Message| {
            record(&started, &m.id);
            async {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                Ok::<(), std::io::Error>(())
            }
        })
    };
    let worker = Worker::new(env.config(&q.url), &env.clients(), handler);
    let run = tokio::spawn(worker.run(CancellationToken::new()));

    // While a handler runs for longer than the prefetch window, the worker holds only the
    // message it is handling: the others stay visible for any other worker.
    for n in 1..=2u64 {
        wait_until(|| started.lock().unwrap().len() as u64 == n).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            env.depth(&q.url).await,
            (3 - n, 1),
            "while handler {n} runs"
        );
    }
    let report = run.await.expect("worker runs");
    assert_eq!(report.exit(), Exit::Success, "{report:?}");
    assert_eq!(report.counters.deleted, 3);
    assert_eq!(report.counters.released, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_do_not_wait_for_delete_round_trips() {
    let env = Env::start().await;
    let q = env.queue("pipelined", 30, None).await;
    env.send(&q.url, (0..30).map(|i| format!("job {i}"))).await;
    // Every delete takes 400 ms more to reach SQS; receives are not delayed.
    let proxy = Proxy::start(
        env.moto.endpoint(),
        Faults::none()
            .delayed(1.0, Duration::from_millis(400))
            .only(&["DeleteMessageBatch"]),
    )
    .expect("proxy");
    let starts: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let handler = {
        let starts = starts.clone();
        from_fn(move |_m: Message| {
            starts.lock().unwrap().push(Instant::now());
            async { Ok::<(), std::io::Error>(()) }
        })
    };
    let report = Worker::new(
        env.config(&q.url),
        &ecs_worker::aws::Clients::new(&proxy.sdk_config()),
        handler,
    )
    .run(CancellationToken::new())
    .await;

    assert_eq!(report.exit(), Exit::Success, "{report:?}");
    assert_eq!(report.counters.deleted, 30);
    let starts = starts.lock().unwrap().clone();
    assert_eq!(starts.len(), 30);
    // Waiting for each delete would take 29 x 400 ms before the last handler starts.
    let span = *starts.last().unwrap() - starts[0];
    assert!(
        span < Duration::from_secs(3),
        "handlers started over {span:?}"
    );
    let deletes = proxy
        .requests()
        .iter()
        .filter(|r| r.operation == "DeleteMessageBatch")
        .count();
    assert!(deletes <= 10, "{deletes} delete calls for 30 messages");
    assert_eq!(env.depth(&q.url).await, (0, 0));
}

async fn wait_until(mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(Instant::now() < deadline, "condition not reached in 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
