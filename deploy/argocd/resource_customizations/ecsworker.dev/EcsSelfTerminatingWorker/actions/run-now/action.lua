-- Argo CD resource action `run-now` of ecsworker.dev/EcsSelfTerminatingWorker: sets the
-- ecsworker.dev/run-now annotation to the current UTC time (RFC 3339, to the second). Any new
-- value triggers one check of the queue (status.lastTrigger acknowledges it), the same as
--   kubectl annotate ecsworker NAME ecsworker.dev/run-now=$(date +%s) --overwrite
-- The annotation is not part of the manifests in Git, so it is no drift for Argo CD.
local os = require("os")
if obj.metadata.deletionTimestamp ~= nil then
  error("the worker is being deleted; no run starts", 0)
end
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["ecsworker.dev/run-now"] = os.date("!%Y-%m-%dT%H:%M:%SZ")
return obj
