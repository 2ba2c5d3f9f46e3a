//! One reconcile of one worker: validate -> credentials -> provision -> run cycle -> status.
//!
//! The finalizer wraps [`apply`] and [`cleanup`], two idempotent functions. Decisions come
//! from `api::validate` and `plan`; AWS is touched only through `aws`; this file wires them,
//! turns errors into conditions and Events, and writes the status (server-side apply).

use super::{Context, MANAGER, Wake, credentials};
use crate::api::conditions::{self, event, reason};
use crate::api::validate::ValidatedSpec;
use crate::api::{
    DeletionPolicy, EcsSelfTerminatingWorker, EcsSelfTerminatingWorkerStatus, FINALIZER, Phase,
    TRIGGER_ANNOTATION,
};
use crate::aws::provision::{Deletion, ProvisionError, Provisioner};
use crate::aws::{AwsClients, AwsError, ErrorKind};
use crate::plan::cycle;
use crate::plan::desired::Names;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// A run's first pass after its scale-up checks every resource unless that was done at most
/// this long ago.
const RECHECK_BEFORE_RUN: Duration = Duration::from_secs(60);

/// Why a reconcile failed (retried with backoff by the error policy).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("object has no namespace")]
    NoNamespace,
    /// Deletion cannot go on until the user fixes something (credentials missing). Retried
    /// with the error backoff; the finalizer stays on until cleanup succeeds.
    #[error("deletion blocked: {0}")]
    DeletionBlocked(String),
    /// Deletion waits for something AWS does on its own (resources settling, instances
    /// terminating). An expected wait, not a failure: the error policy looks again after
    /// `retry_in` without backoff. An error only because an `Ok` from cleanup would remove
    /// the finalizer.
    #[error("deletion waiting: {why}")]
    DeletionWaiting { why: String, retry_in: Duration },
}

impl Error {
    /// When this is an expected wait rather than a failure: how long until the next look.
    pub fn expected_wait(&self) -> Option<Duration> {
        match self {
            Error::DeletionWaiting { retry_in, .. } => Some(*retry_in),
            Error::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::CleanupFailed(inner) => inner.expected_wait(),
                _ => None,
            },
            _ => None,
        }
    }

    /// Stable label for the errors metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Aws(e) => match e.kind {
                ErrorKind::Throttling => "aws_throttling",
                ErrorKind::Transient => "aws_unavailable",
                ErrorKind::AccessDenied => "aws_access_denied",
                ErrorKind::InvalidParameter => "aws_invalid_parameter",
                ErrorKind::NotFound => "aws_not_found",
                ErrorKind::Propagating => "aws_propagating",
                ErrorKind::Other => "aws_error",
            },
            Error::Kube(_) => "kube",
            Error::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(inner)
                | kube::runtime::finalizer::Error::CleanupFailed(inner) => inner.metric_label(),
                _ => "finalizer",
            },
            Error::NoNamespace => "no_namespace",
            Error::DeletionBlocked(_) => "deletion_blocked",
            Error::DeletionWaiting { .. } => "deletion_waiting",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Entry point of the controller for one object.
pub async fn reconcile(obj: Arc<EcsSelfTerminatingWorker>, ctx: Arc<Context>) -> Result<Action> {
    let started = std::time::Instant::now();
    ctx.metrics.reconciles.inc();
    let ns = obj.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<EcsSelfTerminatingWorker> = Api::namespaced(ctx.client.clone(), &ns);
    // Every log line of this reconcile carries the object's namespace and name.
    let span = tracing::info_span!("reconcile", namespace = %ns, name = %obj.name_any());
    let result = finalizer(&api, FINALIZER, obj.clone(), |event| async {
        match event {
            Finalizer::Apply(w) => apply(w, ctx.clone()).await,
            Finalizer::Cleanup(w) => {
                let done = cleanup(w, ctx.clone()).await;
                if done.is_ok() {
                    ctx.metrics.forget_worker(&ns, &obj.name_any());
                }
                done
            }
        }
    })
    .instrument(span)
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.memory(&ObjectRef::from(obj.as_ref()), |m| m.failures = 0);
    }
    result
}

/// What one apply pass works on.
struct Pass<'a> {
    ctx: &'a Context,
    worker: &'a EcsSelfTerminatingWorker,
    api: Api<EcsSelfTerminatingWorker>,
    status: EcsSelfTerminatingWorkerStatus,
    now: Time,
}

impl<'a> Pass<'a> {
    fn new(ctx: &'a Context, worker: &'a EcsSelfTerminatingWorker, namespace: &str) -> Pass<'a> {
        Pass {
            ctx,
            worker,
            api: Api::namespaced(ctx.client.clone(), namespace),
            status: worker.status.clone().unwrap_or_default(),
            now: Time(ctx.now()),
        }
    }

    fn generation(&self) -> Option<i64> {
        self.worker.metadata.generation
    }

    fn condition(&mut self, type_: &str, ok: bool, reason: &str, message: impl Into<String>) {
        let generation = self.generation();
        conditions::set(
            &mut self.status.conditions,
            type_,
            ok,
            reason,
            message,
            generation,
            self.now.clone(),
        );
    }

    /// Publishes an Event; failures to record are logged, never fatal.
    async fn event(&self, warning: bool, reason: &str, note: String) {
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        if let Err(e) = self
            .ctx
            .recorder
            .publish(&ev, &self.worker.object_ref(&()))
            .await
        {
            tracing::warn!(error = %e, reason, "could not record Event");
        }
    }

    /// Records a problem as `Degraded`/`Ready=False` with a Warning Event, once per change.
    async fn problem(&mut self, reason: &str, message: String, phase: Phase) {
        let already = self
            .worker
            .condition(conditions::DEGRADED)
            .is_some_and(|c| {
                c.status == "True"
                    && c.reason == reason
                    && c.message == message
                    && c.observed_generation == self.generation()
            });
        self.condition(conditions::DEGRADED, true, reason, message.clone());
        self.condition(conditions::READY, false, reason, message.clone());
        self.status.phase = Some(phase);
        if !already {
            self.event(true, reason, message).await;
        }
    }

    /// Writes the status when it changed (server-side apply, one field manager); returns the
    /// object's resource version afterwards, or `None` when the written object shows a change
    /// this pass did not see (its next watch event is then not an echo).
    async fn save(&mut self) -> Result<Option<String>> {
        self.status.observed_generation = self.generation();
        let generation = self.generation();
        conditions::summarize(&mut self.status.conditions, generation, self.now.clone());
        self.ctx.metrics.observe_status(
            &self.worker.namespace().unwrap_or_default(),
            &self.worker.name_any(),
            &self.status,
        );
        if self.worker.status.as_ref() == Some(&self.status) {
            return Ok(self.worker.resource_version());
        }
        let patch = serde_json::json!({
            "apiVersion": EcsSelfTerminatingWorker::api_version(&()),
            "kind": EcsSelfTerminatingWorker::kind(&()),
            "status": self.status,
        });
        let written = self
            .api
            .patch_status(
                &self.worker.name_any(),
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await?;
        // The written object is this pass's echo only if nothing the pass reads changed
        // meanwhile: a run-now annotation or spec change that landed between this pass's read
        // and its write is in `written` too, and must wake the next pass.
        let unchanged = written.metadata.generation == self.worker.metadata.generation
            && written.metadata.deletion_timestamp == self.worker.metadata.deletion_timestamp
            && written.annotations().get(TRIGGER_ANNOTATION)
                == self.worker.annotations().get(TRIGGER_ANNOTATION);
        Ok(written.resource_version().filter(|_| unchanged))
    }
}

fn aws_reason(e: &AwsError) -> &'static str {
    match e.kind {
        ErrorKind::AccessDenied => reason::ACCESS_DENIED,
        ErrorKind::InvalidParameter => reason::INVALID_PARAMETER,
        ErrorKind::Throttling | ErrorKind::Transient => reason::AWS_UNAVAILABLE,
        ErrorKind::Propagating => reason::PROPAGATING,
        ErrorKind::NotFound | ErrorKind::Other => reason::AWS_ERROR,
    }
}

fn aws_message(e: &AwsError) -> String {
    match e.kind {
        // The role refusal already names the role and what to grant.
        ErrorKind::AccessDenied if e.service == "sts" => e.to_string(),
        ErrorKind::AccessDenied => format!(
            "{e}; grant {}:{} to the operator's AWS identity (see deploy/aws/)",
            e.service, e.operation
        ),
        ErrorKind::InvalidParameter => format!("{e}; check the spec fields this call uses"),
        _ => e.to_string(),
    }
}

/// Makes AWS match the spec and advances the run cycle: a pipeline of steps, each of which
/// either hands the next one what it needs or ends the pass with the requeue it asks for.
async fn apply(worker: Arc<EcsSelfTerminatingWorker>, ctx: Arc<Context>) -> Result<Action> {
    /// The value of a step, or the end of the pass.
    macro_rules! step {
        ($flow:expr) => {
            match $flow {
                ControlFlow::Continue(value) => value,
                ControlFlow::Break(action) => return Ok(action),
            }
        };
    }
    let began = std::time::Instant::now();
    let ns = worker.namespace().ok_or(Error::NoNamespace)?;
    let oref = ObjectRef::from(worker.as_ref());
    // Step 0: the echo of this controller's own status write: nothing is new before the
    // requeue the last pass asked for.
    let wake = ctx.wake(&oref, worker.resource_version().as_deref());
    if let Wake::Early(wait) = wake {
        return Ok(Action::requeue(wait));
    }
    let mut pass = Pass::new(&ctx, &worker, &ns);
    let spec = step!(check_spec(&mut pass).await?);
    let aws = step!(connect(&mut pass).await?);
    step!(provision(&mut pass, &aws).await?);
    let decision = step!(advance_cycle(&mut pass, &aws, &spec, wake).await?);
    // Step 5: Ready, the status written, the next pass when the decision asks for it.
    pass.condition(
        conditions::READY,
        true,
        reason::PROVISIONED,
        "provisioned; the run cycle follows the schedule",
    );
    let written = pass.save().await?;
    // The decision's delay counts from the start of the pass; the requeue's from its end.
    let requeue = decision.requeue_after.saturating_sub(began.elapsed());
    ctx.settled(&oref, written, requeue);
    Ok(Action::requeue(requeue))
}

/// Step 1 of [`apply`]: what only the controller can check. Invalid: terminal, zero AWS calls.
async fn check_spec<'a>(pass: &mut Pass<'a>) -> Result<ControlFlow<Action, ValidatedSpec<'a>>> {
    let worker = pass.worker;
    match crate::api::validate::validate(&worker.spec) {
        Ok(spec) => {
            pass.status.schedule = Some(spec.schedule().to_string());
            pass.status.instance_types = Some(spec.instance_types().join(","));
            Ok(ControlFlow::Continue(spec))
        }
        Err(e) => {
            pass.problem(reason::INVALID_SPEC, e.to_string(), Phase::Failed)
                .await;
            pass.save().await?;
            Ok(ControlFlow::Break(Action::await_change()))
        }
    }
}

/// Why the worker's AWS identity cannot be used.
enum NoClients {
    Credentials(credentials::CredentialsError),
    Aws(AwsError),
}

/// The AWS clients of the worker's identity: its Secret's keys, its role, or the operator's
/// own. Used by [`connect`] and [`cleanup`].
async fn worker_clients(
    ctx: &Context,
    worker: &EcsSelfTerminatingWorker,
) -> std::result::Result<AwsClients, NoClients> {
    let (ns, spec) = (worker.namespace().unwrap_or_default(), &worker.spec);
    let credentials = spec.credentials.as_ref();
    let identity = credentials::load(&ctx.client, &ns, &worker.name_any(), credentials)
        .await
        .map_err(NoClients::Credentials)?;
    let clients = identity.clients(&ctx.aws, &spec.region).await;
    clients.map_err(NoClients::Aws)
}

/// Step 2: the AWS clients of the worker's identity.
async fn connect(pass: &mut Pass<'_>) -> Result<ControlFlow<Action, AwsClients>> {
    match worker_clients(pass.ctx, pass.worker).await {
        Ok(aws) => Ok(ControlFlow::Continue(aws)),
        Err(NoClients::Credentials(e)) => {
            pass.problem(e.reason(), e.to_string(), Phase::Failed).await;
            pass.save().await?;
            // Secrets are not watched: look again soon.
            Ok(ControlFlow::Break(Action::requeue(Duration::from_secs(30))))
        }
        // A role the operator cannot assume: AccessDenied naming the role, no call made.
        Err(NoClients::Aws(e)) => {
            pass.status.phase = Some(Phase::Failed);
            fail(pass, e).await.map(ControlFlow::Break)
        }
    }
}

/// Step 3: provisioning, when the spec changed or the drift check is due; then the queue's
/// address for producers (`spec.queue.export`).
async fn provision(pass: &mut Pass<'_>, aws: &AwsClients) -> Result<ControlFlow<Action>> {
    let (ctx, worker) = (pass.ctx, pass.worker);
    let ns = worker.namespace().unwrap_or_default();
    let name = worker.name_any();
    let oref = ObjectRef::from(worker);
    let generation = worker.metadata.generation.unwrap_or(0);
    let provisioned = conditions::is_true(&pass.status.conditions, conditions::PROVISIONED);
    if provisioned && !ctx.ensure_due(&oref, generation) {
        return Ok(ControlFlow::Continue(()));
    }
    if !provisioned {
        pass.status.phase = Some(Phase::Provisioning);
    }
    let names = Names::new(&ns, &name);
    let owner = ctx.owner(&ns, &name);
    let provisioner = Provisioner::new(aws, &names, &worker.spec, &owner);
    ctx.provisioning(&oref);
    let (stalled, reason, retry) = match provisioner.ensure_all(&mut pass.status.resources).await {
        Ok(report) => {
            provisioned_ok(pass, &oref, generation, provisioned, report).await?;
            return Ok(ControlFlow::Continue(()));
        }
        Err(ProvisionError::Aws(e)) => return fail(pass, e).await.map(ControlFlow::Break),
        Err(e @ ProvisionError::NoNetwork(_)) => (e, reason::NO_NETWORK, None),
        // Someone may remove or retag the resource: look again now and then.
        Err(e @ ProvisionError::NameConflict { .. }) => (e, reason::NAME_CONFLICT, Some(300)),
        // The queue may be created later: look again now and then.
        Err(e @ ProvisionError::QueueNotFound { .. }) => (e, reason::QUEUE_NOT_FOUND, Some(300)),
    };
    let msg = stalled.to_string();
    pass.condition(conditions::PROVISIONED, false, reason, msg.clone());
    pass.problem(reason, msg, Phase::Failed).await;
    pass.save().await?;
    Ok(ControlFlow::Break(match retry {
        Some(seconds) => Action::requeue(Duration::from_secs(seconds)),
        None => Action::await_change(),
    }))
}

/// A provisioning pass that succeeded: its Event (provisioned, repaired or updated), the
/// Provisioned condition, and the queue's address for producers (`spec.queue.export`).
async fn provisioned_ok(
    pass: &mut Pass<'_>,
    oref: &ObjectRef<EcsSelfTerminatingWorker>,
    generation: i64,
    provisioned: bool,
    report: crate::aws::provision::Report,
) -> Result<()> {
    let (ctx, worker) = (pass.ctx, pass.worker);
    ctx.ensured(oref, generation);
    if !provisioned {
        pass.event(
            false,
            event::PROVISIONED,
            "every AWS resource exists and is tagged".into(),
        )
        .await;
    } else if !report.created.is_empty() {
        pass.event(
            true,
            event::REPAIRED,
            format!(
                "re-created resources deleted outside the operator: {}",
                report.created.join(", ")
            ),
        )
        .await;
    } else if !report.updated.is_empty() {
        pass.event(
            false,
            event::PROVISIONED,
            format!("updated to match the spec: {}", report.updated.join(", ")),
        )
        .await;
    }
    pass.condition(
        conditions::PROVISIONED,
        true,
        reason::PROVISIONED,
        "every AWS resource exists and matches the spec",
    );
    let ns = worker.namespace().unwrap_or_default();
    match super::export::sync(&ctx.client, worker, &ns, &pass.status.resources).await? {
        super::export::Outcome::Conflict(msg) => {
            pass.event(true, super::export::EXPORT_CONFLICT, msg).await;
        }
        outcome => tracing::debug!(?outcome, "queue ConfigMap"),
    }
    Ok(())
}

/// Step 4: the run cycle. Observe, decide, execute; the decision's Events, metrics, status
/// fields and Degraded condition recorded.
async fn advance_cycle(
    pass: &mut Pass<'_>,
    aws: &AwsClients,
    spec: &ValidatedSpec<'_>,
    wake: Wake,
) -> Result<ControlFlow<Action, cycle::Decision>> {
    let (ctx, worker) = (pass.ctx, pass.worker);
    let ns = worker.namespace().unwrap_or_default();
    let name = worker.name_any();
    let oref = ObjectRef::from(worker);
    let names = Names::new(&ns, &name);
    let scheduled = wake == Wake::Scheduled;
    let observed =
        match crate::aws::cycle::observe(aws, &names, spec, &pass.status, scheduled).await {
            Ok(o) => o,
            Err(e) => {
                // Something owned vanished mid-cycle: check everything on the next pass.
                if e.is(ErrorKind::NotFound) {
                    ctx.forget_ensured(&oref);
                }
                return fail(pass, e).await.map(ControlFlow::Break);
            }
        };
    let trigger = worker.annotations().get(TRIGGER_ANNOTATION).cloned();
    let decision = cycle::decide(&cycle::Input {
        spec,
        status: &pass.status,
        observed: &observed,
        trigger: trigger.as_deref(),
        now: pass.now.0,
    });
    // A run starts on resources last checked a while ago (the drift check is hourly): the
    // next pass, while the instances boot, checks them all, so the scale-up is not delayed
    // and a launch template or role deleted out of band is back before an instance needs it.
    if decision.current_run.is_some()
        && pass.status.current_run.is_none()
        && !ctx.ensured_within(&oref, RECHECK_BEFORE_RUN)
    {
        ctx.forget_ensured(&oref);
    }
    // Status may run ahead of AWS (an action that failed is re-issued by the next decision),
    // so the decision is recorded even when executing it fails.
    let executed = crate::aws::cycle::execute(aws, &names, &decision.actions).await;
    for ev in &decision.events {
        pass.event(ev.warning, ev.reason, ev.message.clone()).await;
    }
    record_run_metrics(ctx, &ns, &name, &pass.status, &decision);
    let period = crate::metrics::schedule_period(spec.schedule(), pass.now.0);
    ctx.metrics
        .observe_cycle(&ns, &name, &observed.queue, period);
    pass.status.queue = Some(observed.queue);
    decision.write_to(&mut pass.status);
    record_degraded(pass, &decision);
    match executed {
        Ok(()) => Ok(ControlFlow::Continue(decision)),
        Err(e) => fail(pass, e).await.map(ControlFlow::Break),
    }
}

/// The Degraded condition after a decision: the decision's, or "no problem seen" once the
/// provisioning and spec problems that set it are resolved (reaching the cycle means they are).
fn record_degraded(pass: &mut Pass<'_>, decision: &cycle::Decision) {
    if let Some(update) = &decision.degraded {
        pass.condition(
            conditions::DEGRADED,
            update.status,
            update.reason,
            update.message.clone(),
        );
        return;
    }
    let degraded = pass
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == conditions::DEGRADED);
    let stale = degraded
        .is_some_and(|c| c.status == "True" && !reason::RUN_CYCLE.contains(&c.reason.as_str()));
    if stale || degraded.is_none() {
        pass.condition(
            conditions::DEGRADED,
            false,
            reason::AS_EXPECTED,
            "no problem seen",
        );
    }
}

/// Records an AWS failure as a condition and an Event; retryable ones go to the backoff.
async fn fail(pass: &mut Pass<'_>, e: AwsError) -> Result<Action> {
    if e.is(ErrorKind::Propagating) {
        // AWS's eventual consistency right after a create: nobody needs to act.
        pass.condition(conditions::READY, false, reason::PROPAGATING, e.to_string());
        pass.save().await?;
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    let r = aws_reason(&e);
    pass.problem(
        r,
        aws_message(&e),
        pass.status.phase.unwrap_or(Phase::Provisioning),
    )
    .await;
    pass.save().await?;
    if e.is_retryable() {
        Err(e.into())
    } else {
        // A user must act (permissions, a refused value): look again later, not in a loop.
        Ok(Action::requeue(Duration::from_secs(300)))
    }
}

fn record_run_metrics(
    ctx: &Context,
    namespace: &str,
    name: &str,
    before: &EcsSelfTerminatingWorkerStatus,
    decision: &cycle::Decision,
) {
    let Some(run) = &decision.last_run else {
        return;
    };
    if before.last_run.as_ref().map(|r| &r.id) == Some(&run.id) {
        return;
    }
    let seconds = (run.stopped_at.0.as_second() - run.scale_up_at.0.as_second()).max(0) as f64;
    ctx.metrics
        .record_run(namespace, name, run.outcome, seconds, run.instances);
}

/// How long after a provisioning pass deletion waits: about the time IAM and EC2 changes take
/// to propagate.
/// <https://docs.aws.amazon.com/IAM/latest/UserGuide/troubleshoot_general.html#troubleshoot_general_eventual-consistency>
const DELETE_SETTLE: Duration = Duration::from_secs(15);
/// How often deletion looks again while AWS terminates instances or deletes a group.
const DELETION_POLL: Duration = Duration::from_secs(10);

/// The finalizer: removes everything the worker owns, then lets the object go.
async fn cleanup(worker: Arc<EcsSelfTerminatingWorker>, ctx: Arc<Context>) -> Result<Action> {
    let ns = worker.namespace().ok_or(Error::NoNamespace)?;
    let name = worker.name_any();
    let mut pass = Pass::new(&ctx, &worker, &ns);
    let spec = &worker.spec;
    // A spec that never validated never created anything.
    if crate::api::validate::validate(spec).is_err() {
        return Ok(Action::await_change());
    }
    let aws = match worker_clients(&ctx, &worker).await {
        Ok(aws) => aws,
        Err(e) => {
            let (r, why) = match &e {
                NoClients::Credentials(e) => (e.reason(), e.to_string()),
                NoClients::Aws(e) => (aws_reason(e), aws_message(e)),
            };
            let msg = format!("cannot delete AWS resources: {why}");
            pass.problem(r, msg.clone(), Phase::Deleting).await;
            pass.save().await?;
            return Err(Error::DeletionBlocked(msg));
        }
    };
    let names = Names::new(&ns, &name);
    let owner = ctx.owner(&ns, &name);
    let provisioner = Provisioner::new(&aws, &names, spec, &owner);
    // Resources created moments ago may not be visible yet to the calls that delete them by
    // name (IAM, EC2 and SQS are eventually consistent): a NotFound then would count as
    // deleted and leave them behind. Deletion starts once they have had time to settle.
    let oref = ObjectRef::from(worker.as_ref());
    if let Some(since) = ctx.since_provisioning(&oref)
        && since < DELETE_SETTLE
    {
        let why = format!(
            "waiting {}s for AWS to make the resources created moments ago visible before deleting them",
            (DELETE_SETTLE - since).as_secs() + 1
        );
        pass.status.phase = Some(Phase::Deleting);
        pass.condition(conditions::READY, false, reason::DELETING, why.clone());
        pass.save().await?;
        return Err(Error::DeletionWaiting {
            why,
            retry_in: DELETE_SETTLE - since + Duration::from_secs(1),
        });
    }
    crate::aws::cycle::stop_all_tasks(&aws, &names).await?;
    match provisioner.delete_all().await {
        Ok(Deletion::Waiting(why)) => {
            pass.status.phase = Some(Phase::Deleting);
            pass.condition(conditions::READY, false, reason::DELETING, why.clone());
            pass.save().await?;
            Err(Error::DeletionWaiting {
                why,
                retry_in: DELETION_POLL,
            })
        }
        Ok(Deletion::Done { retained }) => {
            for queue in retained {
                pass.event(true, event::QUEUE_RETAINED, format!("queue {queue} still holds messages and was kept (deletionPolicy {:?}); delete it yourself or set deletionPolicy: DeleteWithMessages", spec.deletion_policy)).await;
            }
            let note = if spec.deletion_policy == DeletionPolicy::Retain {
                "deletionPolicy Retain: capacity is at zero; every other AWS resource was kept"
            } else {
                "every owned AWS resource was removed"
            };
            pass.event(false, event::DELETED, note.into()).await;
            Ok(Action::await_change())
        }
        Err(e) => {
            let r = aws_reason(&e);
            pass.problem(r, format!("deleting: {}", aws_message(&e)), Phase::Deleting)
                .await;
            pass.save().await?;
            Err(e.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Duration, Error};
    use kube::runtime::finalizer::Error as FinalizerError;

    #[test]
    fn only_a_deletion_wait_is_an_expected_wait_even_through_the_finalizer() {
        let waiting = || Error::DeletionWaiting {
            why: "instances terminating".into(),
            retry_in: Duration::from_secs(10),
        };
        assert_eq!(waiting().expected_wait(), Some(Duration::from_secs(10)));
        let wrapped = Error::Finalizer(Box::new(FinalizerError::CleanupFailed(waiting())));
        assert_eq!(wrapped.expected_wait(), Some(Duration::from_secs(10)));
        let blocked = Error::Finalizer(Box::new(FinalizerError::CleanupFailed(
            Error::DeletionBlocked("no credentials".into()),
        )));
        assert_eq!(blocked.expected_wait(), None);
        assert_eq!(blocked.metric_label(), "deletion_blocked");
    }
}
