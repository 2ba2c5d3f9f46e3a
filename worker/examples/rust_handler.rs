//! A worker whose handler is Rust code instead of a command: the same environment contract,
//! logs, signals and exit codes as the `ecs-worker` binary, with an async closure per message.
//!
//! Build it into your image instead of `ecs-worker` (leave `WORKER_HANDLER` unset):
//! `cargo build --release -p ecs-worker --example rust_handler`.

use ecs_worker::{Message, from_fn};

#[derive(serde::Deserialize)]
struct Job {
    url: String,
    #[serde(default)]
    retries_allowed: bool,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    ecs_worker::app::main_with(|_config| {
        Ok(from_fn(|message: Message| async move {
            // An error fails the message: it is retried, then dead-lettered.
            let job: Job = serde_json::from_str(&message.body)?;
            tracing::info!(
                id = %message.id,
                receive = message.receive_count,
                url = %job.url,
                retries_allowed = job.retries_allowed,
                "processing"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            Ok::<(), anyhow::Error>(())
        }))
    })
    .await
}
