"""ECS stopping the tasks of a host that went away (test-only; imported by moto_ext.py).

On AWS, when a container instance is stopped or terminated, ECS itself (not the agent, which
went down with the host) stops the tasks that ran on it, with the stopped reason
"Host EC2 (instance <id>) stopped/terminated."; a container whose exit the agent never
reported has no exit code (`Container.exitCode` is optional: "The exit code returned from
the container").
https://docs.aws.amazon.com/AmazonECS/latest/developerguide/stopped-task-errors.html
https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_Container.html
The Developer Guide pairs no stop code with that reason; the play sets `TerminationNotice`,
the `stopCode` value for a termination (https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_Task.html).
The operator reads neither the stop code nor the reason's wording.

Stock moto 5.2.5 has no way to do this: its containers start with exitCode 0, StopTask keeps
it, and the SubmitTaskStateChange of moto_ext.py only overwrites a code it is given (as the
agent's call does). The test bed plays ECS's part through:

- `POST /moto-api/ecs-ext/host-terminated` `{"instanceId": "i-...", "region": "us-east-1",
  "state": "terminated" | "stopped", "account": optional}`: every task not yet STOPPED whose
  container instance (registered, or orphaned by a forced deregistration) is that EC2
  instance goes to STOPPED with no container exit code, its containers STOPPED, stoppedReason
  "Host EC2 (instance i-...) terminated." (or "stopped."), stopCode TerminationNotice,
  stoppedAt now; resources are released once. Answers `{"stopped": [task ARNs]}`. Tasks
  already STOPPED keep what they have (an exit the agent reported wins).

The call is not an AWS API call and is not authorized: it is ECS's own doing.
"""

from __future__ import annotations

import datetime
import json
import threading
from typing import Any

_LOCK = threading.Lock()


def _json(status: int, body: Any) -> tuple[int, dict[str, str], str]:
    return status, {"Content-Type": "application/json"}, json.dumps(body, default=str)


def _container_instance(backend, cluster_name: str, arn: str | None):
    """The container instance of `arn`, registered in the cluster or orphaned by a forced
    deregistration (moto keeps those under the key "orphaned")."""
    if not arn:
        return None, False
    instance_id = arn.split("/")[-1]
    registered = backend.container_instances.get(cluster_name, {}).get(instance_id)
    if registered is not None:
        return registered, True
    return backend.container_instances.get("orphaned", {}).get(instance_id), False


def stop_tasks_of_host(backend, ec2_instance_id: str, state: str) -> list[str]:
    """Stops, as ECS does, every task still running on `ec2_instance_id`; returns their ARNs."""
    reason = f"Host EC2 (instance {ec2_instance_id}) {state}."
    now = datetime.datetime.now(datetime.timezone.utc)
    stopped = []
    for cluster_name, tasks in backend.tasks.items():
        cluster = backend.clusters.get(cluster_name)
        for task in tasks.values():
            if task.last_status == "STOPPED":
                continue
            instance, registered = _container_instance(
                backend, cluster_name, task.container_instance_arn
            )
            if instance is None or instance.ec2_instance_id != ec2_instance_id:
                continue
            if registered and task.resource_requirements:
                backend.update_container_instance_resources(
                    instance, task.resource_requirements, removing=True
                )
            if cluster is not None:
                backend.update_cluster_resources(cluster, -1, task_state="RUNNING")
            for container in task.containers:
                container.exitCode = None
                container.last_status = "STOPPED"
            task.last_status = "STOPPED"
            task.desired_status = "STOPPED"
            task.stopped_reason = reason
            task.stop_code = "TerminationNotice"
            task.stopping_at = now
            task.stopped_at = now
            task.execution_stopped_at = now
            stopped.append(task.task_arn)
    return stopped


def host_terminated_response(request: Any, full_url: str, headers: Any):
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ecs.models import ecs_backends

    if request.method != "POST":
        return _json(400, {"error": "POST a JSON body"})
    body = json.loads(request.data or b"{}")
    instance_id = body.get("instanceId")
    region = body.get("region")
    state = body.get("state") or "terminated"
    if not instance_id or not region or state not in ("terminated", "stopped"):
        return _json(
            400,
            {"error": 'need "instanceId", "region" and "state" terminated|stopped'},
        )
    backend = ecs_backends[body.get("account") or DEFAULT_ACCOUNT_ID][region]
    with _LOCK:
        stopped = stop_tasks_of_host(backend, instance_id, state)
    return _json(200, {"stopped": stopped})


def _register_endpoints() -> None:
    from moto.moto_api._internal import urls

    urls.url_paths.update(
        {"{0}/moto-api/ecs-ext/host-terminated": host_terminated_response}
    )


_register_endpoints()
