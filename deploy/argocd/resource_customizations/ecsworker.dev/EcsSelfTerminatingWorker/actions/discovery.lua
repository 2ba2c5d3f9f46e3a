-- Argo CD resource actions of ecsworker.dev/EcsSelfTerminatingWorker.
--
--   run-now  sets the ecsworker.dev/run-now annotation to the current time: the operator handles
--            each new value once (status.lastTrigger) and starts a run when the queue holds at
--            least spec.minMessages, as on a due tick; otherwise it says why not in a Triggered
--            Event. Disabled while the worker is being deleted.
--
-- Argo CD passes the live object as `obj`; only base and table are used (no string or math).
local actions = {}
local deleting = obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil
actions["run-now"] = {
  ["disabled"] = deleting,
  ["displayName"] = "Run now",
}
return actions
