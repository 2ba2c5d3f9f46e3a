"""Auto Scaling launches as AWS makes them: scaling activities, mixed instances policies with
Spot, and capacity that cannot be had (test-only; imported by moto_ext.py).

Stock moto 5.2.5 answers DescribeScalingActivities with an empty list, launches every instance
of a mixed instances policy On-Demand from the launch template's type, drops the policy on an
UpdateAutoScalingGroup that leaves it out, and ignores CapacityRebalance on update. AWS:

- records one scaling activity per launch: `Successful` with the instance, or `Failed` with
  a status message saying why, and lists them newest first
  (https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_DescribeScalingActivities.html);
- launches the On-Demand share (`OnDemandBaseCapacity`, then
  `OnDemandPercentageAboveBaseCapacity` of the rest, rounded up) from the overrides in
  order (`prioritized`), the rest as Spot Instances from the pools the Spot allocation
  strategy picks; it tries other types when one has no capacity
  (https://docs.aws.amazon.com/autoscaling/ec2/userguide/allocation-strategies.html);
- leaves every property an update does not name unchanged, so an update may name only the
  policy's `InstancesDistribution`
  (https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_UpdateAutoScalingGroup.html).

Capacity that cannot be had is the test bed's to say, through
`POST /moto-api/asg-ext/capacity` `{"group": "name", "unavailable": [{"instanceType":
"g5.xlarge", "market": "spot" | "on-demand", "code": "InsufficientInstanceCapacity" |
"VcpuLimitExceeded" | "MaxSpotInstanceCountExceeded"}]}`: replaces what that Auto Scaling
group's launches cannot have (`[]` makes everything available again), so tests sharing one
server do not see each other's shortages. A launch that finds no type available records a `Failed` activity with the status
message AWS documents for that cause
(https://docs.aws.amazon.com/autoscaling/ec2/userguide/ts-as-capacity.html) and launches
nothing; AWS retries later, this model on the next change of the group's capacity. Spot
instances are marked `InstanceLifecycle: spot` in EC2, as AWS marks them. Not AWS API calls,
not authorized: the endpoint plays EC2's capacity.
"""

from __future__ import annotations

import copy
import datetime
import json
import math
import threading
import uuid
from typing import Any

from moto.autoscaling.models import FakeAutoScalingGroup
from moto.autoscaling.responses import AutoScalingResponse
from moto.core.responses import ActionResult

_LOCK = threading.Lock()
# group name -> (instance type, market) -> EC2 error code
_UNAVAILABLE: dict[str, dict[tuple[str, str], str]] = {}
# group ARN -> activities, oldest first
_ACTIVITIES: dict[str, list[dict[str, Any]]] = {}
# instance id -> "spot" | "on-demand"
_MARKET: dict[str, str] = {}

_MESSAGES = {
    ("on-demand", "InsufficientInstanceCapacity"): (
        "We currently do not have sufficient {type} capacity in the Availability Zone you "
        "requested ({zone}). Our system will be working on provisioning additional capacity. "
        "You can currently get {type} capacity by not specifying an Availability Zone in your "
        "request or choosing other zones. Launching EC2 instance failed."
    ),
    ("on-demand", "VcpuLimitExceeded"): (
        "You have requested more vCPU capacity than your current vCPU limit of 0 allows for "
        "the instance bucket that the specified instance type belongs to. Please visit "
        "http://aws.amazon.com/contact-us/ec2-request to request an adjustment to this limit. "
        "Launching EC2 instance failed."
    ),
    ("spot", "InsufficientInstanceCapacity"): (
        "Could not launch Spot Instances. InsufficientInstanceCapacity - There is no Spot "
        "capacity available that matches your request. Launching EC2 instance failed."
    ),
    ("spot", "MaxSpotInstanceCountExceeded"): (
        "Could not launch Spot Instances. MaxSpotInstanceCountExceeded - Max spot instance "
        "count exceeded. Launching EC2 instance failed."
    ),
}


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _record(group: FakeAutoScalingGroup, ok: bool, description: str, message: str | None):
    now = _now()
    activity = {
        "ActivityId": str(uuid.uuid4()),
        "AutoScalingGroupName": group.name,
        "AutoScalingGroupARN": group.arn,
        "Description": description,
        "Cause": (
            f"At {now:%Y-%m-%dT%H:%M:%SZ} an instance was started in response to a difference "
            "between desired and actual capacity."
        ),
        "StartTime": now,
        "EndTime": now,
        "StatusCode": "Successful" if ok else "Failed",
        "Progress": 100,
    }
    if message:
        activity["StatusMessage"] = message
    _ACTIVITIES.setdefault(group.arn, []).append(activity)


def _types(group: FakeAutoScalingGroup) -> list[str]:
    policy = group.mixed_instances_policy or {}
    overrides = (policy.get("LaunchTemplate") or {}).get("Overrides") or []
    types = [o["InstanceType"] for o in overrides if o.get("InstanceType")]
    return types or [group.instance_type]


def _on_demand_wanted(group: FakeAutoScalingGroup) -> int:
    policy = group.mixed_instances_policy
    target = group.desired_capacity or 0
    if not policy:
        return target
    dist = policy.get("InstancesDistribution") or {}
    base = int(dist.get("OnDemandBaseCapacity", 0))
    pct = int(dist.get("OnDemandPercentageAboveBaseCapacity", 100))
    if target <= base:
        return target
    return base + math.ceil((target - base) * pct / 100)


def _launch(group: FakeAutoScalingGroup, instance_type: str, market: str, tags: dict[str, str]):
    subnet_id = group.vpc_zone_identifier.split(",")[0] if group.vpc_zone_identifier else None
    launch_template = None
    if group.ec2_launch_template:
        launch_template = {"LaunchTemplateId": group.ec2_launch_template.id}
    reservation = group.autoscaling_backend.ec2_backend.run_instances(
        group.image_id,
        1,
        group.user_data,
        group.security_groups,
        instance_type=instance_type,
        tags={"instance": tags},
        placement=group.availability_zones[0] if group.availability_zones else None,
        launch_config=group.launch_config,
        launch_template=launch_template,
        is_instance_type_default=False,
        subnet_id=subnet_id,
    )
    from moto.autoscaling.models import InstanceState

    for instance in reservation.instances:
        instance.autoscaling_group = group  # type: ignore[attr-defined]
        if market == "spot":
            instance.lifecycle = "spot"
        _MARKET[instance.id] = market
        group.instance_states.append(
            InstanceState(
                instance, protected_from_scale_in=group.new_instances_protected_from_scale_in
            )
        )
        _record(group, True, f"Launching a new EC2 instance: {instance.id}", None)


_original_replace = FakeAutoScalingGroup.replace_autoscaling_group_instances


def _replace(self: FakeAutoScalingGroup, count_needed: int, propagated_tags: dict[str, str]):
    from moto.autoscaling.models import ASG_NAME_TAG

    propagated_tags[ASG_NAME_TAG] = self.name
    propagated_tags.update(self.instance_tags)
    with _LOCK:
        on_demand_up = sum(
            1 for s in self.instance_states if _MARKET.get(s.instance.id, "on-demand") == "on-demand"
        )
        on_demand_wanted = _on_demand_wanted(self)
        zone = self.availability_zones[0] if self.availability_zones else "unknown"
        for _ in range(count_needed):
            market = "on-demand" if on_demand_up < on_demand_wanted else "spot"
            chosen = None
            failure = None
            for instance_type in _types(self):
                code = _UNAVAILABLE.get(self.name, {}).get((instance_type, market))
                if code is None:
                    chosen = instance_type
                    break
                failure = failure or _MESSAGES.get((market, code), f"{code}. Launching EC2 instance failed.").format(
                    type=instance_type, zone=zone
                )
            if chosen is None:
                _record(
                    self,
                    False,
                    "Launching a new EC2 instance.  Status Reason: " + (failure or ""),
                    failure,
                )
                continue
            _launch(self, chosen, market, dict(propagated_tags))
            if market == "on-demand":
                on_demand_up += 1


FakeAutoScalingGroup.replace_autoscaling_group_instances = _replace  # type: ignore[method-assign]


def _merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(old)
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


_original_update = FakeAutoScalingGroup.update


def _update(self: FakeAutoScalingGroup, *args: Any, **kwargs: Any) -> None:
    policy = kwargs.get("mixed_instances_policy")
    names_template = bool(kwargs.get("launch_template")) or bool(kwargs.get("launch_config_name"))
    if not names_template and self.mixed_instances_policy:
        # An update that leaves the policy out keeps it; one that names part of it changes
        # that part.
        merged = _merge(self.mixed_instances_policy, policy or {})
        # moto stores the template's id and name; a request names one of them.
        spec = (merged.get("LaunchTemplate") or {}).get("LaunchTemplateSpecification") or {}
        if spec.get("LaunchTemplateId"):
            spec.pop("LaunchTemplateName", None)
        kwargs["mixed_instances_policy"] = merged
    _original_update(self, *args, **kwargs)


FakeAutoScalingGroup.update = _update  # type: ignore[method-assign]

_original_update_response = AutoScalingResponse.update_auto_scaling_group


def _update_response(self: AutoScalingResponse):
    result = _original_update_response(self)
    rebalance = self._get_param("CapacityRebalance")
    if rebalance is not None:
        group = self.autoscaling_backend.autoscaling_groups.get(
            self._get_param("AutoScalingGroupName")
        )
        if group is not None:
            group.capacity_rebalance = str(rebalance).lower() == "true"
    return result


AutoScalingResponse.update_auto_scaling_group = _update_response  # type: ignore[method-assign]


def _describe_scaling_activities(self: AutoScalingResponse) -> ActionResult:
    name = self._get_param("AutoScalingGroupName")
    max_records = self._get_int_param("MaxRecords", 100)
    with _LOCK:
        found = []
        for group in self.autoscaling_backend.autoscaling_groups.values():
            if name and group.name != name:
                continue
            found.extend(_ACTIVITIES.get(group.arn, []))
    found.sort(key=lambda a: a["StartTime"], reverse=True)
    return ActionResult({"Activities": found[:max_records]})


AutoScalingResponse.describe_scaling_activities = _describe_scaling_activities  # type: ignore[method-assign]


def _json(status: int, body: Any) -> tuple[int, dict[str, str], str]:
    return status, {"Content-Type": "application/json"}, json.dumps(body, default=str)


def capacity_response(request: Any, full_url: str, headers: Any):
    if request.method != "POST":
        return _json(400, {"error": "POST a JSON body"})
    body = json.loads(request.data or b"{}")
    group = body.get("group")
    entries = body.get("unavailable")
    if not group or not isinstance(entries, list):
        return _json(
            400, {"error": 'need "group" and "unavailable": [{instanceType, market, code}]'}
        )
    parsed = {}
    for e in entries:
        market = e.get("market")
        code = e.get("code") or "InsufficientInstanceCapacity"
        if not e.get("instanceType") or (market, code) not in _MESSAGES:
            known = sorted(f"{m}/{c}" for m, c in _MESSAGES)
            return _json(400, {"error": f"unknown entry {e}: known market/code {known}"})
        parsed[(e["instanceType"], market)] = code
    with _LOCK:
        _UNAVAILABLE[group] = parsed
    return _json(200, {"unavailable": len(parsed)})


def _register_endpoints() -> None:
    from moto.moto_api._internal import urls

    urls.url_paths.update({"{0}/moto-api/asg-ext/capacity": capacity_response})


_register_endpoints()
