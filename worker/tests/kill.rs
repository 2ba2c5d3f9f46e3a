//! The `ecs-worker` binary killed with SIGKILL at random (seeded) moments and restarted until
//! the queue is drained. After every kill, with no worker running, the queue's contents are
//! compared with the handler's own records: a message may be missing from the queue only if a
//! handler run for it completed successfully. At the end every message was handled.
//!
//! Rerun a failure with the seed it printed: `KILL_SEED=<seed> cargo test --workspace --test kill`.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Env, TempDir, binary_command, lines};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const MESSAGES: usize = 500;
/// Most kills; a worker that drains the queue before its kill ends the test sooner.
const KILLS: u32 = 25;
/// Visibility timeout of the queue and the worker: a killed worker's messages return this fast.
const VISIBILITY_SECONDS: u32 = 2;

/// The handler: records its start, works a little, fails the first run of every message whose
/// id ends in 0-3 (a failure must never lead to a delete either), and records its successful
/// completion as its last step. `mkdir` makes "first run" atomic across concurrent runs.
fn handler(dir: &Path) -> String {
    format!(
        r#"d='{}'; id="$WORKER_MESSAGE_ID"; echo "$id" >> "$d/started"; sleep 0.05
if [ "${{id%[0-3]}}" != "$id" ] && mkdir "$d/failed-$id" 2>/dev/null; then echo "$id" >> "$d/failed"; exit 1; fi
echo "$id" >> "$d/completed""#,
        dir.display()
    )
}

/// Up to this many messages left, the check after a kill compares message ids; above it, moto
/// is too slow at handing out a long queue (its receive time grows with the queue's length),
/// and the check compares counts.
const IDS_CHECK_MAX: u64 = 150;

/// What a check after a kill found.
struct Check {
    left: u64,
    by_id: bool,
    violations: Vec<String>,
}

/// Messages gone from the queue without a completed handler run. Call only while no worker runs.
async fn deleted_without_completion(
    env: &Env,
    url: &str,
    sent: &BTreeSet<String>,
    completed_path: &Path,
) -> Check {
    // The killed worker's messages become visible again within the visibility timeout.
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.depth(url).await.1 > 0 {
        assert!(
            Instant::now() < deadline,
            "messages of a killed worker stayed in flight"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // moto computes the two counters one after the other, so a message that turns visible
    // in between is in neither; now that every message is visible, a second read counts all.
    let (left, in_flight) = env.depth(url).await;
    assert_eq!(
        in_flight, 0,
        "a message went back in flight with no worker running"
    );
    // The queue first, the records second: a completion always precedes its delete, so any
    // message absent from this snapshot has its record by the time the file is read.
    let present = if left <= IDS_CHECK_MAX {
        Some(env.visible_ids(url).await)
    } else {
        None
    };
    let completed: BTreeSet<String> = lines(completed_path).into_iter().collect();
    let violations = match &present {
        Some(present) => sent
            .iter()
            .filter(|id| !present.contains(*id) && !completed.contains(*id))
            .cloned()
            .collect(),
        None => {
            let deleted = sent.len() - left as usize;
            let done = completed.intersection(sent).count();
            if deleted > done {
                // Name them: slow with a long queue, but only on the way to a failure.
                let present = env.visible_ids(url).await;
                let completed: BTreeSet<String> = lines(completed_path).into_iter().collect();
                let mut found: Vec<String> = sent
                    .iter()
                    .filter(|id| !present.contains(*id) && !completed.contains(*id))
                    .cloned()
                    .collect();
                found.insert(
                    0,
                    format!("{deleted} messages deleted, only {done} handler runs completed"),
                );
                found
            } else {
                Vec::new()
            }
        }
    };
    Check {
        left,
        by_id: present.is_some(),
        violations,
    }
}

/// What the handler records and the workers' logs say about one message.
fn history(dir: &Path, id: &str) -> String {
    let mut out = format!("message {id}:\n");
    for record in ["started", "failed", "completed"] {
        let n = lines(&dir.join(record)).iter().filter(|l| *l == id).count();
        out.push_str(&format!("  {record}: {n}\n"));
    }
    let mut logs: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    for log in logs {
        for line in lines(&log).iter().filter(|l| l.contains(id)) {
            out.push_str(&format!("  {}: {line}\n", log.display()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_until_drained_deletes_only_messages_whose_handler_completed() {
    let seed = std::env::var("KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    println!("kill moments seeded with KILL_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let began = Instant::now();

    let env = Env::start().await;
    let q = env.queue("kill9", VISIBILITY_SECONDS, None).await;
    let sent: BTreeSet<String> = env
        .send(&q.url, (0..MESSAGES).map(|i| format!("job {i}")))
        .await
        .into_keys()
        .collect();
    assert_eq!(sent.len(), MESSAGES);
    let dir = TempDir::new("kill");
    let completed = dir.path("completed");
    let vars = [
        ("WORKER_QUEUE_URL", q.url.clone()),
        ("WORKER_HANDLER", handler(dir.root())),
        ("WORKER_WAIT_SECONDS", "1".to_owned()),
        ("WORKER_RETRY_BACKOFF", "0".to_owned()),
        ("WORKER_TERMINATION", "none".to_owned()),
        ("WORKER_CONCURRENCY", "4".to_owned()),
        ("WORKER_PREFETCH", "4".to_owned()),
        ("WORKER_VISIBILITY_TIMEOUT", VISIBILITY_SECONDS.to_string()),
    ];

    let mut kills = 0;
    let mut left_after_kill = Vec::new();
    let mut checks_by_id = 0;
    let status = loop {
        let log =
            std::fs::File::create(dir.path(&format!("worker-{kills}.log"))).expect("log file");
        let mut child = binary_command(&env, &vars)
            .env(
                "RUST_LOG",
                "debug,aws=warn,aws_smithy_runtime=warn,hyper=warn",
            )
            .stderr(log)
            .spawn()
            .expect("start the worker");
        // Once the queue is empty, the next worker is left to see that and finish.
        if kills == KILLS || left_after_kill.last() == Some(&0) {
            break tokio::time::timeout(Duration::from_secs(120), child.wait())
                .await
                .expect("the last worker drains the queue")
                .expect("wait");
        }
        let after = Duration::from_millis(rng.random_range(200..3000));
        tokio::select! {
            status = child.wait() => break status.expect("wait"),
            _ = tokio::time::sleep(after) => {
                child.start_kill().expect("SIGKILL");
                child.wait().await.expect("reap");
                kills += 1;
                let check = deleted_without_completion(&env, &q.url, &sent, &completed).await;
                println!(
                    "kill {kills} {} ms into the run: {} messages left, checked by {}",
                    after.as_millis(),
                    check.left,
                    if check.by_id { "id" } else { "count" }
                );
                assert!(
                    check.violations.is_empty(),
                    "after kill {kills}: messages deleted without a completed handler run: {:?}\n{}",
                    check.violations,
                    check.violations.iter().skip(1).take(3).map(|id| history(dir.root(), id)).collect::<Vec<_>>().join("\n")
                );
                checks_by_id += usize::from(check.by_id);
                left_after_kill.push(check.left);
            }
        }
    };
    let elapsed = began.elapsed();

    // The last worker ran to the end: drained, with exit 3 when it met a first-run failure.
    assert!(
        matches!(status.code(), Some(0 | 3)),
        "last worker: {status:?}"
    );
    assert_eq!(env.depth(&q.url).await, (0, 0), "queue drained");
    assert!(kills >= 1, "the worker was never killed mid-run");
    assert!(
        left_after_kill.first().is_some_and(|&left| left > 0),
        "the first kill came after the queue was drained: {left_after_kill:?}"
    );
    let started = lines(&dir.path("started"));
    let completions = lines(&completed);
    let unique: BTreeSet<&str> = completions.iter().map(String::as_str).collect();
    let unhandled: Vec<&String> = sent
        .iter()
        .filter(|id| !unique.contains(id.as_str()))
        .collect();
    assert!(
        unhandled.is_empty(),
        "every message is gone from the queue, but these never completed: {unhandled:?}"
    );
    assert_eq!(unique.len(), MESSAGES);
    let failed = lines(&dir.path("failed"));
    let should_fail = sent
        .iter()
        .filter(|id| id.ends_with(['0', '1', '2', '3']))
        .count();
    assert!(should_fail > 0, "no message id ends in 0-3");
    assert_eq!(
        failed.iter().collect::<BTreeSet<_>>().len(),
        should_fail,
        "every message meant to fail once failed once"
    );

    println!(
        "{MESSAGES} messages, {kills} kills ({checks_by_id} checked by id), \
         {} handler runs started, {} completed, {} duplicate completions, {} first-run failures, \
         last worker exit {:?}, {:.1} s",
        started.len(),
        completions.len(),
        completions.len() - unique.len(),
        failed.len(),
        status.code(),
        elapsed.as_secs_f64()
    );
}
