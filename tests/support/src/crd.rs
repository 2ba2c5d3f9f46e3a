//! Installing a CustomResourceDefinition on a test control plane.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use std::time::Duration;

/// Applies `crd` (server-side, field manager `tests`) and waits until the API server serves
/// it (`Established`), at most 30 s.
pub async fn install(client: &Client, crd: &CustomResourceDefinition) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.metadata.name.clone().unwrap_or_default();
    crds.patch(
        &name,
        &PatchParams::apply("tests").force(),
        &Patch::Apply(crd),
    )
    .await?;
    let established = kube::runtime::wait::await_condition(
        crds,
        &name,
        kube::runtime::wait::conditions::is_crd_established(),
    );
    tokio::time::timeout(Duration::from_secs(30), established).await??;
    Ok(())
}
