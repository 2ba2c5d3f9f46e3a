"""moto server with the test-only additions this project's tests need.

Pinned to the moto version in hack/moto-requirements.txt (5.2.5). Started as
`python moto_ext.py -H 127.0.0.1 -p PORT`; every argument goes to moto's own server.

Additions:
1. ECS SubmitTaskStateChange / SubmitContainerStateChange (stock moto answers 500): lets a test
   play the ECS agent and end a task with a container exit code, the way a real agent reports it.
2. CreateLaunchTemplateVersion stores UserData as moto's create_launch_template does, so Auto
   Scaling launches from later template versions work (stock moto fails them with a 500).
3. ECS task state transitions are frozen (manual progression): stock moto advances a task one
   step towards STOPPED on every DescribeTasks, so an operator's own polling would end tasks.
4. DeleteLaunchTemplate of a name that does not exist answers
   InvalidLaunchTemplateName.NotFoundException, as AWS does (stock moto answers
   MissingParameter), so a deletion interrupted after that call can finish when repeated.
5. RemoveRoleFromInstanceProfile of a role the profile does not hold answers NoSuchEntity, as
   AWS does (stock moto fails with HTTP 500), for the same reason.
6. Every request is checked against the botocore service model and AWS's documented limits;
   one AWS would refuse is refused the same way and recorded (moto_models.py; the records at
   GET /moto-api/strict/violations).
7. ECS RunTask honours clientToken as AWS does: a retry with the same parameters returns the
   first result, with other parameters ConflictException (moto_ecs_tokens.py).
8. IAM authorization as AWS evaluates it, once authentication is turned on (moto_iam.py): the
   resource ARNs and condition keys of every call the project makes, recorded denials at
   GET /moto-api/iam-ext/denials, and roles assumed the way ECS and EC2 assume them. AWS managed
   policies are loaded (MOTO_IAM_LOAD_MANAGED_POLICIES) so roles can attach them.
9. ECS RunTask's distinctInstance placement constraint: each task on its own container instance
   without a task of the same group, the rest reported as failures (moto_ecs_placement.py).
10. ECS stopping the tasks of a host that went away, as AWS does when a container instance is
    terminated before its agent reports: STOPPED, no container exit code, "Host EC2 (instance
    i-...) terminated." (POST /moto-api/ecs-ext/host-terminated; moto_ecs_host_stop.py).
11. ECS StopTask of a task whose container the agent play runs only asks for the stop
    (desiredStatus STOPPED, stopCode UserInitiated, lastStatus unchanged) until the agent
    reports the container's exit, as AWS does (POST /moto-api/ecs-ext/agent-tasks;
    moto_ecs_agent_stop.py).
12. SQS ReceiveMessage checks each message's retention period without computing every queue
    attribute, so a receive no longer costs moto time proportional to the queue length per
    message handed out (moto_sqs_retention.py; same result).
13. Auto Scaling launches as AWS makes them: scaling activities (DescribeScalingActivities),
    mixed instances policies launching Spot and On-Demand from the overrides, partial policy
    updates, CapacityRebalance on update, and capacity the test bed makes unavailable per
    instance type and market (POST /moto-api/asg-ext/capacity; moto_asg_capacity.py).
"""

import datetime
import os

os.environ.setdefault("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")

from moto.ec2.exceptions import InvalidLaunchTemplateNameNotFoundError
from moto.ec2.models.launch_templates import LaunchTemplate, LaunchTemplateBackend
from moto.iam.exceptions import NotFoundException
from moto.iam.models import IAMBackend
from moto.ec2.utils import parse_user_data
from moto.ecs.responses import EC2ContainerServiceResponse
from moto.core.responses import ActionResult
from moto.moto_api import state_manager
from moto.server import main

import moto_ecs_placement  # noqa: F401  (distinctInstance; before the token check wraps it)
import moto_ecs_tokens  # noqa: F401  (patches ECS RunTask on import)
import moto_ecs_host_stop  # noqa: F401  (adds the host-terminated endpoint)
import moto_ecs_agent_stop  # noqa: F401  (StopTask through the agent; agent-tasks endpoint)
import moto_asg_capacity  # noqa: F401  (launches, activities, Spot; capacity endpoint)
import moto_models  # noqa: F401  (patches request handling on import)
import moto_iam  # noqa: F401  (patches IAM authorization on import)
import moto_sqs_retention  # noqa: F401  (receives without a queue-length cost per message)

_create_version = LaunchTemplate.create_version


def _create_version_with_user_data(self, data, description):
    if isinstance(data.get("UserData"), str):
        data = dict(data)
        data["UserData"] = parse_user_data(data["UserData"])
    return _create_version(self, data, description)


LaunchTemplate.create_version = _create_version_with_user_data

_delete_launch_template = LaunchTemplateBackend.delete_launch_template


def _delete_launch_template_or_not_found(self, name, tid):
    if name and tid is None and name not in self.launch_template_name_to_ids:
        raise InvalidLaunchTemplateNameNotFoundError()
    return _delete_launch_template(self, name, tid)


LaunchTemplateBackend.delete_launch_template = _delete_launch_template_or_not_found

_remove_role_from_instance_profile = IAMBackend.remove_role_from_instance_profile


def _remove_role_or_not_found(self, profile_name, role_name):
    profile = self.get_instance_profile(profile_name)
    if not any(r.name == role_name for r in profile.roles):
        raise NotFoundException(
            f"Role {role_name} is not in instance profile {profile_name}"
        )
    return _remove_role_from_instance_profile(self, profile_name, role_name)


IAMBackend.remove_role_from_instance_profile = _remove_role_or_not_found


def _find_task(backend, cluster_str, task_str):
    cluster = backend._get_cluster(cluster_str)
    task_id = (task_str or "").split("/")[-1]
    for arn, task in backend.tasks.get(cluster.name, {}).items():
        if arn.endswith(task_id):
            return cluster, task
    raise ValueError(f"task {task_str} not found in cluster {cluster.name}")


def _stop(backend, cluster, task, reason):
    """Moves a task to STOPPED and releases its resources exactly once."""
    if task.last_status == "STOPPED":
        return
    if task.container_instance_arn:
        instances = backend.container_instances.get(cluster.name, {})
        instance = instances.get(task.container_instance_arn.split("/")[-1])
        if instance is not None:
            backend.update_container_instance_resources(
                instance, task.resource_requirements, removing=True
            )
        backend.update_cluster_resources(cluster, -1, task_state="RUNNING")
    now = datetime.datetime.now(datetime.timezone.utc)
    task.last_status = "STOPPED"
    if (
        task.desired_status == "STOPPED"
        and getattr(task, "stop_code", None) == moto_ecs_agent_stop.USER_INITIATED
    ):
        # A stop StopTask asked for: the task keeps its stop code and reason.
        task.stopped_at = now
        task.execution_stopped_at = now
        return
    task.desired_status = "STOPPED"
    task.stopped_reason = reason or "Essential container in task exited"
    task.stop_code = "EssentialContainerExited"
    task.stopping_at = now
    task.stopped_at = now
    task.execution_stopped_at = now


def _apply_containers(task, containers):
    for reported in containers or []:
        name = reported.get("containerName")
        for container in task.containers:
            if name is None or container.name == name:
                if reported.get("exitCode") is not None:
                    container.exitCode = int(reported["exitCode"])
                if reported.get("status"):
                    container.last_status = reported["status"]
                if reported.get("reason"):
                    container.reason = reported["reason"]


def submit_task_state_change(self):
    cluster, task = _find_task(
        self.ecs_backend, self._get_param("cluster", "default"), self._get_param("task")
    )
    _apply_containers(task, self._get_param("containers"))
    status = self._get_param("status")
    if status == "STOPPED":
        _stop(self.ecs_backend, cluster, task, self._get_param("reason"))
    elif status:
        task.last_status = status
    return ActionResult({"acknowledgment": "ACK"})


def submit_container_state_change(self):
    cluster, task = _find_task(
        self.ecs_backend, self._get_param("cluster", "default"), self._get_param("task")
    )
    _apply_containers(
        task,
        [
            {
                "containerName": self._get_param("containerName"),
                "exitCode": self._get_param("exitCode"),
                "status": self._get_param("status"),
                "reason": self._get_param("reason"),
            }
        ],
    )
    return ActionResult({"acknowledgment": "ACK"})


EC2ContainerServiceResponse.submit_task_state_change = submit_task_state_change
EC2ContainerServiceResponse.submit_container_state_change = submit_container_state_change

state_manager.set_transition(
    model_name="ecs::task", transition={"progression": "manual", "times": 1_000_000}
)

if __name__ == "__main__":
    main()
