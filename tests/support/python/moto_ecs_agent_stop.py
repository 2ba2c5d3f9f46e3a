"""ECS StopTask of a task whose container an agent runs (test-only; imported by moto_ext.py).

On AWS, StopTask asks for a stop: the task's desiredStatus becomes STOPPED, with stopCode
UserInitiated, stoppingAt and the request's reason as stoppedReason, while its lastStatus stays
what it was; the ECS agent on the container instance then issues the equivalent of
`docker stop` (SIGTERM, the container's stopTimeout - 30 s unless set - then SIGKILL) and
reports the container's exit, and only then is the task STOPPED, with that exit code.
https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_StopTask.html
https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_Task.html
https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task-lifecycle-explanation.html

Stock moto 5.2.5 moves the task to STOPPED at once, with the exit code 0 its containers start
with, so the process a test runs for the task would still be running while the task reads as
stopped and succeeded. The test bed's agent play (tests/support/src/agent.rs) says which tasks
it runs a real process for:

- `POST /moto-api/ecs-ext/agent-tasks` `{"taskArn": "arn:...:task/...", "region": "us-east-1",
  "account": optional}`: the agent on the task's container instance runs its container. A
  StopTask of such a task that is not STOPPED yet then only asks for the stop, as above
  (nothing is released; a repeated StopTask keeps the first request's reason and time). The
  agent's SubmitTaskStateChange STOPPED ends it: resources are released once, the containers
  carry the reported exit code, and the task keeps StopTask's stopCode and stoppedReason
  (moto_ext.py). Answers `{"tasks": [ARNs marked so far]}`.

Tasks not marked (no process behind them; a test ends them itself) stop at once as in stock
moto. The call is not an AWS API call and is not authorized: it stands for the agent's own
knowledge of what it runs.
"""

from __future__ import annotations

import datetime
import json
import threading
from typing import Any

from moto.ecs.models import EC2ContainerServiceBackend

_LOCK = threading.Lock()
# Task ARNs whose container the agent play runs.
_AGENT_TASKS: set[str] = set()

# The stop code of a task stopped through StopTask.
USER_INITIATED = "UserInitiated"


def _json(status: int, body: Any) -> tuple[int, dict[str, str], str]:
    return status, {"Content-Type": "application/json"}, json.dumps(body, default=str)


_stop_task = EC2ContainerServiceBackend.stop_task


def _stop_task_through_agent(self, cluster_str: str, task_str: str, reason: str):
    cluster = self._get_cluster(cluster_str)
    task_id = (task_str or "").split("/")[-1]
    for arn, task in self.tasks.get(cluster.name, {}).items():
        if not arn.endswith(task_id):
            continue
        with _LOCK:
            by_agent = task.task_arn in _AGENT_TASKS
        if not by_agent or task.last_status == "STOPPED":
            break
        if task.desired_status != "STOPPED":
            task.desired_status = "STOPPED"
            task.stop_code = USER_INITIATED
            task.stopped_reason = reason or ""
            task.stopping_at = datetime.datetime.now(datetime.timezone.utc)
        return task
    return _stop_task(self, cluster_str, task_str, reason)


EC2ContainerServiceBackend.stop_task = _stop_task_through_agent


def agent_tasks_response(request: Any, full_url: str, headers: Any):
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ecs.models import ecs_backends

    if request.method != "POST":
        return _json(400, {"error": "POST a JSON body"})
    body = json.loads(request.data or b"{}")
    arn = body.get("taskArn")
    region = body.get("region")
    if not arn or not region:
        return _json(400, {"error": 'need "taskArn" and "region"'})
    backend = ecs_backends[body.get("account") or DEFAULT_ACCOUNT_ID][region]
    known = any(
        task.task_arn == arn for tasks in backend.tasks.values() for task in tasks.values()
    )
    if not known:
        return _json(404, {"error": f"no task {arn}"})
    with _LOCK:
        _AGENT_TASKS.add(arn)
        marked = sorted(_AGENT_TASKS)
    return _json(200, {"tasks": marked})


def _register_endpoints() -> None:
    from moto.moto_api._internal import urls

    urls.url_paths.update({"{0}/moto-api/ecs-ext/agent-tasks": agent_tasks_response})


_register_endpoints()
