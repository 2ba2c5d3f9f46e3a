"""ECS RunTask's `distinctInstance` placement constraint, as AWS applies it (test-only;
imported by moto_ext.py before moto_ecs_tokens.py, whose client-token check wraps this).

Stock moto 5.2.5 ignores placement constraints and fills one container instance with tasks
before it moves to the next, so "each task on a different container instance" cannot be
tested. Here, with `{"type": "distinctInstance"}` on an EC2 RunTask, each task goes to a
different ACTIVE container instance that runs no task of the same task group (PENDING or
RUNNING); tasks that find no such instance are not started and come back as failures, one
per task, as RunTask reports tasks it could not place.
https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task-placement-constraints.html
https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_RunTask.html
"""

from __future__ import annotations

from moto.core.responses import ActionResult
from moto.ecs.responses import EC2ContainerServiceResponse

_run_task = EC2ContainerServiceResponse.run_task


def _distinct(params: dict) -> bool:
    constraints = params.get("placementConstraints") or []
    return any(c.get("type") == "distinctInstance" for c in constraints)


def run_task_on_distinct_instances(self):
    params = self.params
    if not _distinct(params) or params.get("launchType", "EC2") != "EC2":
        return _run_task(self)
    backend = self.ecs_backend
    cluster = backend._get_cluster(self._get_param("cluster", "default"))
    definition = backend.describe_task_definition(self._get_param("taskDefinition"))
    group = self._get_param("group") or f"family:{definition.family}"
    count = self._get_int_param("count", 1)
    instances = backend.container_instances.get(cluster.name, {})
    busy = {
        t.container_instance_arn
        for t in backend.tasks.get(cluster.name, {}).values()
        if t.group == group and t.last_status in ("PENDING", "RUNNING")
        and t.desired_status != "STOPPED"
    }
    free = [
        arn
        for arn, ci in instances.items()
        if ci.status == "ACTIVE" and ci.container_instance_arn not in busy
    ]
    tasks = []
    for arn in free[:count]:
        # moto's backend places on every instance it is given: give it one at a time.
        backend.container_instances[cluster.name] = {arn: instances[arn]}
        try:
            placed = backend.run_task(
                cluster.name,
                self._get_param("taskDefinition"),
                1,
                self._get_param("overrides"),
                self._get_param("startedBy"),
                self._get_param("tags"),
                "EC2",
                self._get_param("networkConfiguration"),
                self._get_param("group"),
            )
        finally:
            backend.container_instances[cluster.name] = instances
        tasks.extend(placed)
    failures = [
        {"arn": cluster.arn, "reason": "RESOURCE:DISTINCT_INSTANCE"}
        for _ in range(count - len(tasks))
    ]
    return ActionResult({"tasks": tasks, "failures": failures})


EC2ContainerServiceResponse.run_task = run_task_on_distinct_instances
