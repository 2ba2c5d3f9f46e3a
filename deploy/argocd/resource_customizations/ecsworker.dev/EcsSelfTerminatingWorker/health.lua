-- Argo CD health check of ecsworker.dev/EcsSelfTerminatingWorker.
--
-- A worker is a long-lived object whose run cycle (scale up, run the worker task, scale to zero)
-- goes on for as long as it exists: a run is normal operation, not a rollout, so it never holds
-- `argocd app wait --health` or a later sync wave.
--
--   Progressing  no status yet; a spec change the operator has not observed yet; the first
--                provisioning (before the worker was ever Ready), including its transient AWS
--                errors; deleting
--   Degraded     Stalled=True: a terminal reason only a person can fix (InvalidSpec,
--                SecretNotFound, SecretInvalid, AccessDenied, InvalidParameter, NoNetwork,
--                NameConflict); or FAILED_RUNS_DEGRADED runs in a row did not succeed
--                (status.consecutiveFailedRuns)
--   Healthy      every run-cycle phase once provisioned: Idle, ScalingUp, Running, ScalingDown and
--                Suspended, with the phase in the message; a last run that failed (fewer than
--                FAILED_RUNS_DEGRADED in a row) or a transient AWS error being retried is added
--                to the message
--
-- Messages carry nothing that changes on every tick (queue depth, next run time): Argo CD skips
-- those updates (ignore_resource_updates.yaml) and would show a stale value.
--
-- Argo CD passes the live object as `obj`. Only the libraries Argo CD opens for health scripts
-- are used (base and table: no string or math). hack/argocd-cm.sh embeds this file in
-- deploy/argocd/argocd-cm-patch.yaml; hack/lua-test.sh runs health_test.yaml against it.

-- Runs in a row whose outcome was not Succeeded (status.consecutiveFailedRuns, reset by a
-- successful run) from which the worker is Degraded. One failed run is often the data, not
-- the worker; three in a row mean every run fails. Change it here, then run `make argocd`.
local FAILED_RUNS_DEGRADED = 3

-- Reasons a person must act on. Stalled=True carries them; the list also covers a status
-- written by an operator that predates the Stalled condition (Degraded=True with one of them).
local TERMINAL = {
  InvalidSpec = true,
  SecretNotFound = true,
  SecretInvalid = true,
  AccessDenied = true,
  InvalidParameter = true,
  NoNetwork = true,
  NameConflict = true,
}

local RUN_PHASES = {
  Idle = "waiting for the next tick",
  ScalingUp = "a run is starting capacity",
  Running = "a run is draining the queue",
  ScalingDown = "a run is returning capacity to zero",
  Suspended = "spec.suspend is true; no new run starts",
}

local function condition(status, type_)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

local function is_true(c)
  return c ~= nil and c.status == "True"
end

local function describe(c)
  local text = c.reason or ""
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  return text
end

local hs = { status = "Progressing", message = "" }
local status = obj.status
if status == nil then
  hs.message = "Waiting for the operator to reconcile the worker"
  return hs
end

local generation = obj.metadata and obj.metadata.generation
local observed = status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  if observed ~= nil then
    hs.message = hs.message .. " (status describes generation " .. tostring(observed) .. ")"
  end
  return hs
end

local ready = condition(status, "Ready")
local degraded = condition(status, "Degraded")
local stalled = condition(status, "Stalled")

if is_true(stalled) then
  hs.status = "Degraded"
  hs.message = describe(stalled)
  return hs
end
if stalled == nil and is_true(degraded) and TERMINAL[degraded.reason] then
  hs.status = "Degraded"
  hs.message = describe(degraded)
  return hs
end

if (obj.metadata and obj.metadata.deletionTimestamp ~= nil) or status.phase == "Deleting" then
  hs.message = "Deleting: removing the worker's AWS resources"
  if ready ~= nil and ready.reason == "Deleting" and ready.message ~= nil and ready.message ~= "" then
    hs.message = "Deleting: " .. ready.message
  elseif ready ~= nil and ready.status ~= "True" and ready.reason ~= nil then
    hs.message = "Deleting: " .. describe(ready)
  end
  return hs
end

local failed_runs = tonumber(status.consecutiveFailedRuns) or 0
local last_run = status.lastRun
if failed_runs >= FAILED_RUNS_DEGRADED then
  hs.status = "Degraded"
  hs.message = tostring(failed_runs) .. " runs in a row did not succeed"
  if last_run ~= nil then
    hs.message = hs.message .. "; last run " .. tostring(last_run.id) .. ": " .. tostring(last_run.outcome)
  end
  if is_true(degraded) then
    hs.message = hs.message .. "; " .. describe(degraded)
  end
  return hs
end

-- Before the first Ready: nothing was ever provisioned (Provisioned has never been True and no
-- run finished), so every reason, transient ones included, means "not there yet".
local provisioned = is_true(condition(status, "Provisioned")) or is_true(ready) or last_run ~= nil
local reconciling = condition(status, "Reconciling")
if status.phase == "Provisioning" or not provisioned
  or (is_true(reconciling) and reconciling.reason == "Provisioning") then
  hs.message = "Provisioning: creating the worker's AWS resources"
  if ready ~= nil and ready.status ~= "True" and ready.reason ~= nil and ready.reason ~= "Provisioning" then
    hs.message = "Provisioning: " .. describe(ready)
  end
  return hs
end

local phase_text = RUN_PHASES[status.phase]
if phase_text ~= nil then
  hs.status = "Healthy"
  hs.message = status.phase .. ": " .. phase_text
  if last_run ~= nil and last_run.outcome ~= nil and last_run.outcome ~= "Succeeded" then
    hs.message = hs.message .. "; last run " .. tostring(last_run.id) .. " " .. last_run.outcome
    if failed_runs > 0 then
      hs.message = hs.message .. " (" .. tostring(failed_runs) .. " in a row; Degraded at "
        .. tostring(FAILED_RUNS_DEGRADED) .. ")"
    end
  end
  if ready ~= nil and ready.status ~= "True" then
    -- A transient AWS error after the worker was provisioned: retried with backoff.
    hs.message = hs.message .. "; retrying: " .. describe(ready)
  end
  return hs
end

-- Failed without a terminal reason, or a phase this script does not know.
if status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = "Failed"
  local cause = ready
  if is_true(degraded) then
    cause = degraded
  end
  if cause ~= nil and cause.reason ~= nil then
    hs.message = "Failed: " .. describe(cause)
  end
  return hs
end
hs.message = "Waiting for the operator to report a run-cycle phase"
return hs
