//! The `ecs-worker` binary: the worker with the command handler from `WORKER_HANDLER`.
//! See `worker/README.md` for the environment contract and exit codes.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    ecs_worker::app::main_with(ecs_worker::app::command_handler).await
}
