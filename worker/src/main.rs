//! The `ecs-worker` binary: the worker with the handler mode from `WORKER_HANDLER_MODE` (a
//! command per message by default, or a long-lived HTTP or stdio handler).
//! See `worker/README.md` for the environment contract and exit codes.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    ecs_worker::app::main().await
}
