//! Leader election on a `coordination.k8s.io/v1` Lease: only the holder reconciles, standbys
//! wait. A leader that loses the Lease stops at once (the process exits and is restarted as a
//! standby), so two replicas never act on the same worker.

use super::Context;
use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Name of the Lease.
pub const LEASE_NAME: &str = "ecs-worker-operator-leader";
/// Seconds a leader's claim is valid without renewal (hand-over time after a crash).
pub const LEASE_SECONDS: u64 = 15;
/// Seconds before expiry at which the leader renews.
pub const GRACE_SECONDS: u64 = 5;

/// Waits for the Lease, then runs the controller while holding it.
pub async fn run_as_leader(
    client: Client,
    namespace: &str,
    identity: &str,
    ctx: Arc<Context>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let manager = LeaseManagerBuilder::new(client, LEASE_NAME)
        .with_namespace(namespace)
        .with_identity(identity)
        .with_duration(LEASE_SECONDS)
        .with_grace(GRACE_SECONDS)
        .with_field_manager(super::MANAGER)
        .build()
        .await?;
    let (mut leading, task) = manager.watch().await;
    tracing::info!(
        identity,
        namespace,
        lease = LEASE_NAME,
        "standing by for leadership"
    );
    loop {
        if *leading.borrow_and_update() {
            break;
        }
        tokio::select! {
            changed = leading.changed() => changed?,
            _ = shutdown.cancelled() => {
                drop(leading);
                let _ = task.await;
                return Ok(());
            }
        }
    }
    tracing::info!(identity, "leading: reconciling");
    // The controller stops on shutdown or when the Lease is lost.
    let stop = shutdown.child_token();
    let controller = tokio::spawn(super::run(ctx, stop.clone()));
    let lost = tokio::select! {
        _ = async { while leading.changed().await.is_ok() { if !*leading.borrow() { return; } } } => true,
        _ = shutdown.cancelled() => false,
    };
    stop.cancel();
    let _ = controller.await;
    drop(leading);
    // Dropping the channel ends the manager's task; release so a standby takes over at once.
    if let Ok(Ok(manager)) = task.await {
        let _ = manager.release().await;
    }
    if lost {
        anyhow::bail!("lost the leader Lease; exiting so a standby can lead");
    }
    Ok(())
}
