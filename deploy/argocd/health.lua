-- Argo CD health check of ecsworker.dev/EcsSelfTerminatingWorker.
--
--   Progressing  no status yet, a spec change not yet seen by the operator, or a phase with work
--                under way (Provisioning, ScalingUp, Running, ScalingDown, Deleting), or Ready not
--                yet True for a reason that retries by itself (AwsUnavailable, AwsError)
--   Degraded     Degraded=True for a reason only a person can fix: InvalidSpec, SecretNotFound,
--                SecretInvalid, AccessDenied, InvalidParameter, NoNetwork
--   Suspended    spec.suspend is true (no new run starts)
--   Healthy      Ready=True (idle between runs; a failed or timed-out last run is in the message)
--
-- Argo CD passes the live object as `obj` (Lua 5.1). deploy/argocd/argocd-cm-patch.yaml embeds
-- this file; deploy/argocd/test_health.lua checks it against deploy/argocd/samples/.
local hs = { status = "Progressing", message = "" }

local function condition(status, type_)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

local function describe(c)
  local text = c.reason or ""
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  return text
end

local terminal = {
  InvalidSpec = true,
  SecretNotFound = true,
  SecretInvalid = true,
  AccessDenied = true,
  InvalidParameter = true,
  NoNetwork = true,
}

local busy = {
  Provisioning = "creating the AWS resources",
  ScalingUp = "a run is starting capacity",
  Running = "a run is draining the queue",
  ScalingDown = "a run is returning capacity to zero",
  Deleting = "deleting the AWS resources",
}

local status = obj.status
if status == nil then
  hs.message = "waiting for the operator to reconcile"
  return hs
end

local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.message = "waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local degraded = condition(status, "Degraded")
if degraded ~= nil and degraded.status == "True" and terminal[degraded.reason] then
  hs.status = "Degraded"
  hs.message = describe(degraded)
  return hs
end

if (obj.spec ~= nil and obj.spec.suspend == true) or status.phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = "suspended: no new run starts (spec.suspend)"
  return hs
end

if status.phase ~= nil and busy[status.phase] ~= nil then
  hs.message = status.phase .. ": " .. busy[status.phase]
  if degraded ~= nil and degraded.status == "True" then
    hs.message = hs.message .. "; " .. describe(degraded)
  end
  return hs
end

local ready = condition(status, "Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = "ready"
  if status.phase ~= nil then
    hs.message = hs.message .. ", " .. status.phase
  end
  if status.nextRunTime ~= nil then
    hs.message = hs.message .. "; next run at " .. status.nextRunTime
  end
  if degraded ~= nil and degraded.status == "True" then
    hs.message = hs.message .. "; last run: " .. describe(degraded)
  end
  return hs
end

if ready ~= nil then
  hs.message = describe(ready)
else
  hs.message = "waiting for the Ready condition"
end
return hs
