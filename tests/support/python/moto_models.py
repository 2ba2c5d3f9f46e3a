"""Every request moto serves, checked as AWS checks it (test-only; imported by moto_ext.py).

A request to one of the services the project uses (ECS, Auto Scaling, EC2, SQS, IAM, STS, SSM,
CloudWatch Logs) is parsed into the operation's input structure with moto's own protocol
parsers (query, ec2, json) and checked against:

1. The service model botocore ships (the data the AWS SDKs are generated from), walked member
   by member: required members, string and blob length (``min``/``max``, counted in UTF-16
   code units as AWS's Java services count), numeric ranges, list and map sizes, enums and
   patterns. botocore's own ParamValidator checks required members, types and minimums only;
   the walk below checks every constraint the model states. Patterns are the model's Java
   regular expressions, matched against the whole value (Java ``matches``); ``\\w``, ``\\d``
   and ``\\s`` keep their Java (ASCII) meaning, ``\\p{L}`` and friends their Unicode one.
2. ``LIMITS``: the documented rules the models do not state (RunTask count, ECS names, tag
   rules per service, SQS attribute ranges, IAM policy sizes, ...), one row per rule with the
   AWS page that states it; a few rows read the current state (a group's size bounds, a
   role's other inline policies) because AWS judges them against it.

A request that breaks a rule is answered as AWS answers it: HTTP 400, the service's
validation error code (``VALIDATION_CODE``), and a message in AWS's form naming the member and
the constraint ("1 validation error detected: Value '11' at 'count' failed to satisfy
constraint: Member must have value less than or equal to 10"). It is also recorded, with the
rule's source, so a test can assert at its end that nothing it sent would be refused by AWS:

- ``GET /moto-api/strict/violations``: every recorded violation, oldest first (JSON list).
- ``POST /moto-api/strict/violations/clear``: forgets them (``/moto-api/reset`` does not).
- ``GET /moto-api/strict/rules``: the LIMITS table (service, operations, member, rule, source).
- ``GET|POST /moto-api/strict/config``: ``{"enabled": bool}``; on unless the server starts
  with ``MOTO_STRICT_MODELS=0``. Off, requests reach moto unchecked and nothing is recorded.

Not covered: other services; request members the parser cannot place in the model (unknown
members are ignored, as AWS's JSON services ignore them); tag counts are per request, not the
resource's total after a TagResource-style call (the project sets tags only at creation).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable

try:  # ships with moto[server] (through cfn-lint); knows \p{L} as Java does
    import regex as _re
except ImportError:  # pragma: no cover - then \p{..} patterns are skipped
    _re = None

from moto.core.exceptions import ServiceException
from moto.core.parse import PROTOCOL_PARSERS
from moto.core.request import determine_request_protocol
from moto.core.responses import ActionResult, BaseResponse
from moto.core.utils import get_service_model
from moto.moto_api._internal import urls as moto_api_urls

SERVICES = ("ecs", "autoscaling", "ec2", "sqs", "iam", "sts", "ssm", "logs")

# The code each service answers a request that fails validation with (all HTTP 400).
# Query services (Auto Scaling, IAM, STS) share the common ValidationError:
#   https://docs.aws.amazon.com/autoscaling/ec2/APIReference/CommonErrors.html
#   https://docs.aws.amazon.com/IAM/latest/APIReference/CommonErrors.html
#   https://docs.aws.amazon.com/STS/latest/APIReference/CommonErrors.html
# EC2: https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html
# ECS: https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_RunTask.html#API_RunTask_Errors
# SQS: https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/CommonErrors.html
# SSM: https://docs.aws.amazon.com/systems-manager/latest/APIReference/CommonErrors.html
# Logs:
#   https://docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/API_CreateLogGroup.html
VALIDATION_CODE = {
    "ecs": "InvalidParameterException",
    "autoscaling": "ValidationError",
    "ec2": "InvalidParameterValue",
    "sqs": "InvalidParameterValue",
    "iam": "ValidationError",
    "sts": "ValidationError",
    "ssm": "ValidationException",
    "logs": "InvalidParameterException",
}
# EC2 names a missing required parameter with its own code.
MISSING_CODE = {"ec2": "MissingParameter"}

_lock = threading.Lock()
_violations: list[dict[str, Any]] = []
_config = {"enabled": os.environ.get("MOTO_STRICT_MODELS", "1") != "0"}


@dataclass
class Violation:
    member: str  # AWS-style member path: tags.2.member.value
    value: Any
    constraint: str  # "Member must have length less than or equal to 256"
    source: str  # "model ecs:TagValue" or the AWS doc URL of a LIMITS row
    missing: bool = False


# --- Java patterns as Python patterns ----------------------------------------------------

_SURROGATE_PAIR_RANGE = "\\uD800\\uDC00-\\uDBFF\\uDFFF"
_pattern_cache: dict[str, Any] = {}


def _java_to_python(pattern: str) -> str:
    """Java regex to Python `regex`: \\w, \\d, \\s are ASCII in Java; a UTF-16 surrogate pair
    range (U+10000..U+10FFFF spelt as two code units) becomes a code point range."""
    pattern = pattern.replace(_SURROGATE_PAIR_RANGE, "\\U00010000-\\U0010FFFF")
    out = []
    in_class = False
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            ascii_class = {"w": "a-zA-Z0-9_", "d": "0-9", "s": " \\t\\n\\x0B\\f\\r"}.get(nxt)
            if ascii_class is not None:
                out.append(ascii_class if in_class else f"[{ascii_class}]")
            else:
                out.append(pattern[i : i + 2])
            i += 2
            continue
        if c == "[" and not in_class:
            in_class = True
        elif c == "]" and in_class:
            in_class = False
        out.append(c)
        i += 1
    return "".join(out)


def _compiled(pattern: str):
    if pattern not in _pattern_cache:
        compiled = None
        translated = _java_to_python(pattern)
        try:
            compiled = (_re or re).compile(translated)
        except Exception:  # a pattern this engine cannot read is not enforced
            compiled = None
        _pattern_cache[pattern] = compiled
    return _pattern_cache[pattern]


# --- walking the model ---------------------------------------------------------------------


def _aws_name(name: str) -> str:
    return name[:1].lower() + name[1:]


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _length(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-16-le")) // 2
    return len(value)


def _check_shape(shape, value, path: str, out: list[Violation]) -> None:
    source = f"model {shape.name}"
    meta = shape.metadata
    kind = shape.type_name
    if value is None:
        return
    if kind == "structure":
        if not isinstance(value, dict):
            out.append(Violation(path, value, "Member must be a structure", source))
            return
        if shape.is_document_type:
            return
        for name in shape.required_members:
            if value.get(name) is None:
                out.append(
                    Violation(
                        _join(path, _aws_name(name)),
                        None,
                        "Member must not be null",
                        source,
                        missing=True,
                    )
                )
        for name, member in shape.members.items():
            if name in value:
                _check_shape(member, value[name], _join(path, _aws_name(name)), out)
        return
    if kind == "list":
        if not isinstance(value, list):
            out.append(Violation(path, value, "Member must be a list", source))
            return
        _check_size(meta, len(value), value, path, source, out)
        for i, item in enumerate(value):
            _check_shape(shape.member, item, f"{path}.{i + 1}.member", out)
        return
    if kind == "map":
        if not isinstance(value, dict):
            out.append(Violation(path, value, "Member must be a map", source))
            return
        _check_size(meta, len(value), value, path, source, out)
        for key, item in value.items():
            keys: list[Violation] = []
            _check_shape(shape.key, key, path, keys)
            for v in keys:
                v.constraint = f"Map keys must satisfy constraint: [{v.constraint}]"
            out.extend(keys)
            _check_shape(shape.value, item, f"{path}.{key}", out)
        return
    if kind in ("string", "blob"):
        if kind == "string" and not isinstance(value, str):
            out.append(Violation(path, value, "Member must be a string", source))
            return
        _check_size(meta, _length(value), value, path, source, out)
        enum = getattr(shape, "enum", None) or []
        if kind == "string" and enum and value not in enum:
            out.append(
                Violation(
                    path,
                    value,
                    f"Member must satisfy enum value set: [{', '.join(enum)}]",
                    source,
                )
            )
        pattern = meta.get("pattern")
        if kind == "string" and pattern is not None:
            compiled = _compiled(pattern)
            if compiled is not None and compiled.fullmatch(value) is None:
                out.append(
                    Violation(
                        path,
                        value,
                        f"Member must satisfy regular expression pattern: {pattern}",
                        source,
                    )
                )
        return
    if kind in ("integer", "long", "float", "double"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            out.append(Violation(path, value, "Member must be a number", source))
            return
        if "min" in meta and value < meta["min"]:
            out.append(
                Violation(
                    path,
                    value,
                    f"Member must have value greater than or equal to {meta['min']}",
                    source,
                )
            )
        if "max" in meta and value > meta["max"]:
            out.append(
                Violation(
                    path,
                    value,
                    f"Member must have value less than or equal to {meta['max']}",
                    source,
                )
            )


def _check_size(meta, size, value, path, source, out) -> None:
    if "min" in meta and size < meta["min"]:
        out.append(
            Violation(
                path,
                value,
                f"Member must have length greater than or equal to {meta['min']}",
                source,
            )
        )
    if "max" in meta and size > meta["max"]:
        out.append(
            Violation(
                path,
                value,
                f"Member must have length less than or equal to {meta['max']}",
                source,
            )
        )


# --- the documented limits the models do not state -----------------------------------------


def _select(params: Any, selector: str) -> Iterable[tuple[str, Any]]:
    """Values at `selector` (`a.b`, `a[]` each list item, `a{k}` each map key, `a{v}` each map
    value, `a.=Key` the map entry Key) with their AWS-style member paths."""
    found: list[tuple[str, Any]] = [("", params)]
    for step in selector.split("."):
        literal = step.startswith("=")
        name, suffix = step.removeprefix("="), ""
        for s in ("[]", "{k}", "{v}"):
            if name.endswith(s):
                name, suffix = name[: -len(s)], s
        nxt = []
        for path, node in found:
            if not isinstance(node, dict) or node.get(name) is None:
                continue
            value = node[name]
            here = _join(path, name if literal else _aws_name(name))
            if suffix == "[]" and isinstance(value, list):
                nxt.extend((f"{here}.{i + 1}.member", v) for i, v in enumerate(value))
            elif suffix == "{k}" and isinstance(value, dict):
                nxt.extend((here, k) for k in value)
            elif suffix == "{v}" and isinstance(value, dict):
                nxt.extend((f"{here}.{k}", v) for k, v in value.items())
            elif suffix == "":
                nxt.append((here, value))
        found = nxt
    return found


Check = Callable[[Any], "str | None"]


def _described(check, rule: str):
    """A check with the rule it enforces, in words (listed at /moto-api/strict/rules)."""
    check.rule = rule
    return check



def between(lo: int, hi: int) -> Check:
    def check(v):
        try:
            number = int(v)
        except (TypeError, ValueError):
            return f"Member must be an integer between {lo} and {hi}"
        if number < lo:
            return f"Member must have value greater than or equal to {lo}"
        if number > hi:
            return f"Member must have value less than or equal to {hi}"
        return None

    return _described(check, f"integer from {lo} to {hi}")


def one_of(values: Iterable[int]) -> Check:
    allowed = sorted(values)

    def check(v):
        if v not in allowed:
            return f"Member must satisfy enum value set: [{', '.join(map(str, allowed))}]"
        return None

    return _described(check, f"one of {', '.join(map(str, allowed))}")


def length(lo: int, hi: int) -> Check:
    def check(v):
        n = _length(v) if isinstance(v, (str, list, dict)) else 0
        if n < lo:
            return f"Member must have length greater than or equal to {lo}"
        if n > hi:
            return f"Member must have length less than or equal to {hi}"
        return None

    return _described(check, f"length from {lo} to {hi}")


def matches(pattern: str, description: str) -> Check:
    def check(v):
        compiled = _compiled(pattern)
        if isinstance(v, str) and compiled is not None and compiled.fullmatch(v) is None:
            return f"Member must satisfy regular expression pattern: {pattern} ({description})"
        return None

    return _described(check, f"matches {pattern} ({description})")


def _no_aws_prefix(v) -> str | None:
    if isinstance(v, str) and v.lower().startswith("aws:"):
        return "Member must not begin with the reserved prefix aws:"
    return None


no_aws_prefix = _described(_no_aws_prefix, "does not begin with aws: (any case)")


def json_size(limit: int) -> Check:
    def check(v):
        n = len(json.dumps(v, separators=(",", ":"), ensure_ascii=False))
        if n > limit:
            return (
                f"Member must have length less than or equal to {limit} "
                f"(as JSON: {n} characters)"
            )
        return None

    return _described(check, f"at most {limit} characters as compact JSON")


def policy_size(limit: int) -> Check:
    """IAM counts a policy's characters without white space."""

    def check(v):
        n = len(re.sub(r"\s", "", v)) if isinstance(v, str) else 0
        if n > limit:
            return (
                f"Member must have length less than or equal to {limit} "
                f"(without white space: {n} characters)"
            )
        return None

    return _described(check, f"at most {limit} characters without white space")


def json_attribute(field: str, check: Check) -> Check:
    """A member holding a JSON document (SQS's RedrivePolicy) checked at one field."""

    def run(v):
        # An empty value removes the attribute (how a redrive policy is taken off a queue;
        # Terraform's aws_sqs_queue_redrive_policy deletes it so).
        if v == "":
            return None
        try:
            doc = json.loads(v) if isinstance(v, str) else v
        except ValueError:
            return "Member must be a JSON document"
        if not isinstance(doc, dict) or field not in doc:
            return None
        problem = check(doc[field])
        return f"{field}: {problem}" if problem else None

    return _described(run, f"JSON whose {field} is {check.rule}")


def fifo_name_matches_attribute(_response, params: dict) -> Iterable[tuple[str, Any, str]]:
    """A queue with FifoQueue=true is named *.fifo, and only such a queue."""
    name = params.get("QueueName") or ""
    fifo = str((params.get("Attributes") or {}).get("FifoQueue", "false")).lower() == "true"
    if fifo and not name.endswith(".fifo"):
        yield "queueName", name, "A FIFO queue name must end with the .fifo suffix"
    if name.endswith(".fifo") and not fifo:
        yield "queueName", name, "A queue name ending in .fifo needs the FifoQueue attribute"


@dataclass
class Limit:
    service: str
    operations: tuple[str, ...]
    selector: str
    check: Check
    doc: str


@dataclass
class StateLimit:
    """A rule judged against the current state (or across members): `check(response, params)`
    yields (member path, value, constraint)."""

    service: str
    operations: tuple[str, ...]
    check: Callable[[Any, dict], Iterable[tuple[str, Any, str]]]
    doc: str


def tag_rules(
    service: str,
    operations: tuple[str, ...],
    tags: str,
    key: str,
    value: str,
    doc: str,
    max_tags: int = 50,
    values_reserved: bool = False,
) -> list[Limit]:
    """The tag rules (per resource at most `max_tags` tags, keys 1-128 and values 0-256
    characters, the aws: prefix reserved) for tags at `tags`: a list of {key, value}
    structures when `key`/`value` name members, a map when they are "{k}"/"{v}"."""
    if key == "{k}":
        count, keys, values = tags, f"{tags}{{k}}", f"{tags}{{v}}"
    else:
        count, keys, values = tags, f"{tags}[].{key}", f"{tags}[].{value}"
    rows = [
        Limit(service, operations, count, length(0, max_tags), doc),
        Limit(service, operations, keys, length(1, 128), doc),
        Limit(service, operations, keys, no_aws_prefix, doc),
        Limit(service, operations, values, length(0, 256), doc),
    ]
    if values_reserved:
        rows.append(Limit(service, operations, values, no_aws_prefix, doc))
    return rows


def _asg(response, name):
    from moto.autoscaling.models import autoscaling_backends

    backend = autoscaling_backends[response.current_account][response.region]
    return backend.autoscaling_groups.get(name)


def asg_size_bounds(response, params) -> Iterable[tuple[str, Any, str]]:
    """MinSize <= DesiredCapacity <= MaxSize, with the group's current bounds for the sizes an
    update leaves out."""
    group = _asg(response, params.get("AutoScalingGroupName"))
    lo = params.get("MinSize", group.min_size if group else None)
    hi = params.get("MaxSize", group.max_size if group else None)
    desired = params.get("DesiredCapacity")
    if lo is not None and hi is not None and lo > hi:
        yield "minSize", lo, f"Member must be less than or equal to the group's MaxSize ({hi})"
    if desired is not None:
        if hi is not None and desired > hi:
            yield (
                "desiredCapacity",
                desired,
                f"Member must be less than or equal to the group's MaxSize ({hi})",
            )
        if lo is not None and desired < lo:
            yield (
                "desiredCapacity",
                desired,
                f"Member must be greater than or equal to the group's MinSize ({lo})",
            )


def asg_decrement_keeps_min(response, params) -> Iterable[tuple[str, Any, str]]:
    """Terminating an instance with ShouldDecrementDesiredCapacity keeps DesiredCapacity at or
    above the group's MinSize."""
    if not params.get("ShouldDecrementDesiredCapacity"):
        return
    from moto.autoscaling.models import autoscaling_backends

    backend = autoscaling_backends[response.current_account][response.region]
    instance_id = params.get("InstanceId")
    for group in backend.autoscaling_groups.values():
        if any(s.instance.id == instance_id for s in group.instance_states):
            if group.desired_capacity - 1 < group.min_size:
                yield (
                    "shouldDecrementDesiredCapacity",
                    True,
                    f"Terminating with a decrement would take DesiredCapacity "
                    f"({group.desired_capacity}) below MinSize ({group.min_size})",
                )
            return


def iam_inline_policies_total(response, params) -> Iterable[tuple[str, Any, str]]:
    """A role's inline policies together hold at most 10,240 characters, white space not
    counted."""
    from moto.iam.models import iam_backends

    backend = iam_backends[response.current_account][response.partition]
    role = backend.roles.get(params.get("RoleName"))
    if role is None:
        role = next(
            (r for r in backend.roles.values() if r.name == params.get("RoleName")), None
        )
    policies = dict(role.policies) if role is not None else {}
    policies[params.get("PolicyName")] = params.get("PolicyDocument") or ""
    total = sum(len(re.sub(r"\s", "", str(d))) for d in policies.values())
    if total > 10240:
        yield (
            "policyDocument",
            params.get("PolicyDocument"),
            f"The role's inline policies would hold {total} characters without white "
            f"space; at most 10240 are allowed",
        )


ECS_TAGS = "https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_Tag.html"
EC2_TAGS = "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/Using_Tags.html#tag-restrictions"
ASG_TAGS = "https://docs.aws.amazon.com/autoscaling/ec2/userguide/ec2-auto-scaling-tagging.html"
IAM_TAGS = "https://docs.aws.amazon.com/IAM/latest/UserGuide/id_tags.html#id_tags_rules"
IAM_QUOTAS = "https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_iam-quotas.html"
SQS_QUOTAS = (
    "https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/quotas-queues.html"
)
LOGS_TAGS = (
    "https://docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/API_CreateLogGroup.html"
)
ECS_API = "https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_{}.html"
EC2_API = "https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_{}.html"
ASG_API = "https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_{}.html"
SQS_API = "https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_{}.html"
LOGS_API = "https://docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/API_{}.html"

ECS_NAME = matches(r"[a-zA-Z0-9_-]+", "letters, numbers, underscores and hyphens")
SQS_QUEUE_NAME = matches(
    r"[a-zA-Z0-9_-]{1,75}(\.fifo)?|[a-zA-Z0-9_-]{1,80}",
    "alphanumeric characters, hyphens and underscores, .fifo for a FIFO queue",
)
SQS_BATCH_ID = matches(r"[a-zA-Z0-9_-]+", "alphanumeric characters, hyphens and underscores")
SQS_ATTRIBUTES = ("CreateQueue", "SetQueueAttributes")
LOG_RETENTION_DAYS = (
    *(1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192),
    *(2557, 2922, 3288, 3653),
)
ECS_TAGGED = (
    *("CreateCluster", "RegisterTaskDefinition", "RunTask", "StartTask", "TagResource"),
    *("CreateService", "CreateCapacityProvider"),
)

LIMITS: list[Limit | StateLimit] = [
    # ECS RunTask: "You can specify up to 10 tasks for each call."
    Limit("ecs", ("RunTask",), "count", between(1, 10), ECS_API.format("RunTask")),
    # RunTask's startedBy: "Up to 128 letters (uppercase and lowercase), numbers, hyphens (-),
    # forward slash (/), and underscores (_)"; StartTask's: "Up to 36 ...".
    Limit("ecs", ("RunTask",), "startedBy", length(1, 128), ECS_API.format("RunTask")),
    Limit("ecs", ("StartTask",), "startedBy", length(1, 36), ECS_API.format("StartTask")),
    Limit(
        "ecs",
        ("RunTask", "StartTask"),
        "startedBy",
        matches(r"[a-zA-Z0-9/_-]+", "letters, numbers, hyphens, forward slashes, underscores"),
        ECS_API.format("RunTask"),
    ),
    # "Up to 64 ASCII characters are allowed ... in the range of 33-126 (inclusive)."
    Limit(
        "ecs",
        ("RunTask",),
        "clientToken",
        length(1, 64),
        "https://docs.aws.amazon.com/AmazonECS/latest/APIReference/ECS_Idempotency.html",
    ),
    Limit(
        "ecs",
        ("RunTask",),
        "clientToken",
        matches(r"[\x21-\x7E]+", "ASCII characters 33-126"),
        "https://docs.aws.amazon.com/AmazonECS/latest/APIReference/ECS_Idempotency.html",
    ),
    # "A total of 8192 characters are allowed for overrides. This limit includes the JSON
    # formatting characters of the override structure."
    Limit("ecs", ("RunTask", "StartTask"), "overrides", json_size(8192), ECS_API.format("RunTask")),
    # Cluster name, task family, container name: "Up to 255 letters (uppercase and lowercase),
    # numbers, underscores, and hyphens are allowed."
    Limit(
        "ecs", ("CreateCluster",), "clusterName", length(1, 255), ECS_API.format("CreateCluster")
    ),
    Limit("ecs", ("CreateCluster",), "clusterName", ECS_NAME, ECS_API.format("CreateCluster")),
    Limit(
        "ecs",
        ("RegisterTaskDefinition",),
        "family",
        length(1, 255),
        ECS_API.format("RegisterTaskDefinition"),
    ),
    Limit(
        "ecs",
        ("RegisterTaskDefinition",),
        "family",
        ECS_NAME,
        ECS_API.format("RegisterTaskDefinition"),
    ),
    Limit(
        "ecs",
        ("RegisterTaskDefinition",),
        "containerDefinitions[].name",
        length(1, 255),
        "https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_ContainerDefinition.html",
    ),
    Limit(
        "ecs",
        ("RegisterTaskDefinition",),
        "containerDefinitions[].name",
        ECS_NAME,
        "https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_ContainerDefinition.html",
    ),
    # "Task definition size: 64 KiB" (the request's JSON, the container definitions in it).
    Limit(
        "ecs",
        ("RegisterTaskDefinition",),
        "containerDefinitions",
        json_size(65536),
        "https://docs.aws.amazon.com/AmazonECS/latest/developerguide/service-quotas.html",
    ),
    # ECS tags (model: 50 tags, 128/256 characters); the aws: prefix, keys and values.
    *tag_rules("ecs", ECS_TAGGED, "tags", "key", "value", ECS_TAGS, values_reserved=True),
    # EC2: "Maximum number of tags per resource: 50", keys 128, values 256, aws: reserved.
    *tag_rules("ec2", ("CreateTags",), "Tags", "Key", "Value", EC2_TAGS),
    *tag_rules("ec2", ("*",), "TagSpecifications[].Tags", "Key", "Value", EC2_TAGS),
    *tag_rules(
        "ec2",
        ("CreateLaunchTemplate", "CreateLaunchTemplateVersion"),
        "LaunchTemplateData.TagSpecifications[].Tags",
        "Key",
        "Value",
        EC2_TAGS,
    ),
    # Launch template name: 3-128 characters of [a-zA-Z0-9\(\)\.\-/_] (the EC2 model states no
    # constraint; the API reference and the Auto Scaling model do).
    Limit(
        "ec2",
        ("CreateLaunchTemplate", "CreateLaunchTemplateVersion", "DeleteLaunchTemplate"),
        "LaunchTemplateName",
        length(3, 128),
        EC2_API.format("CreateLaunchTemplate"),
    ),
    Limit(
        "ec2",
        ("CreateLaunchTemplate", "CreateLaunchTemplateVersion", "DeleteLaunchTemplate"),
        "LaunchTemplateName",
        matches(r"[a-zA-Z0-9\(\)\.\-/_]+", "letters, numbers and ( ) . - / _"),
        EC2_API.format("CreateLaunchTemplate"),
    ),
    Limit(
        "ec2",
        ("CreateLaunchTemplate", "CreateLaunchTemplateVersion"),
        "VersionDescription",
        length(0, 255),
        EC2_API.format("CreateLaunchTemplate"),
    ),
    # "Possible values: Integers from 1 to 64"
    Limit(
        "ec2",
        ("CreateLaunchTemplate", "CreateLaunchTemplateVersion"),
        "LaunchTemplateData.MetadataOptions.HttpPutResponseHopLimit",
        between(1, 64),
        EC2_API.format("LaunchTemplateInstanceMetadataOptionsRequest"),
    ),
    # "User data is limited to 16 KB" (base64 text of at most 16 KiB raw).
    Limit(
        "ec2",
        ("CreateLaunchTemplate", "CreateLaunchTemplateVersion"),
        "LaunchTemplateData.UserData",
        length(0, 4 * ((16384 + 2) // 3)),
        "https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_RequestLaunchTemplateData.html",
    ),
    # Security group name and description: up to 255 characters; a name can't start with sg-.
    Limit(
        "ec2",
        ("CreateSecurityGroup",),
        "GroupName",
        length(1, 255),
        EC2_API.format("CreateSecurityGroup"),
    ),
    Limit(
        "ec2",
        ("CreateSecurityGroup",),
        "GroupName",
        matches(r"(?!sg-).*", "can't start with sg-"),
        EC2_API.format("CreateSecurityGroup"),
    ),
    Limit(
        "ec2",
        ("CreateSecurityGroup",),
        "Description",
        length(0, 255),
        EC2_API.format("CreateSecurityGroup"),
    ),
    Limit(
        "ec2",
        ("CreateSecurityGroup",),
        "Description",
        matches(
            r"[a-zA-Z0-9 ._\-:/()#,@\[\]+=&;{}!$*]*",
            "a-z, A-Z, 0-9, spaces, ._-:/()#,@[]+=&;{}!$*",
        ),
        EC2_API.format("CreateSecurityGroup"),
    ),
    # VPC and subnet IPv4 blocks: "between a /16 netmask and /28 netmask".
    Limit(
        "ec2",
        ("CreateVpc", "CreateSubnet"),
        "CidrBlock",
        matches(r"\d{1,3}(\.\d{1,3}){3}/(1[6-9]|2[0-8])", "a /16 to /28 IPv4 block"),
        "https://docs.aws.amazon.com/vpc/latest/userguide/vpc-cidr-blocks.html",
    ),
    # Auto Scaling tags: 50 per group, keys 128 (model), values 256 (model), aws: reserved.
    *tag_rules(
        "autoscaling",
        ("CreateAutoScalingGroup", "CreateOrUpdateTags"),
        "Tags",
        "Key",
        "Value",
        ASG_TAGS,
    ),
    # "The maximum number of tags that you can add or remove using a single call is 25."
    Limit("autoscaling", ("CreateOrUpdateTags", "DeleteTags"), "Tags", length(0, 25), ASG_TAGS),
    # "This number must be greater than or equal to the minimum size of the group and less than
    # or equal to the maximum size of the group."
    StateLimit(
        "autoscaling",
        ("CreateAutoScalingGroup", "UpdateAutoScalingGroup", "SetDesiredCapacity"),
        asg_size_bounds,
        ASG_API.format("SetDesiredCapacity"),
    ),
    StateLimit(
        "autoscaling",
        ("TerminateInstanceInAutoScalingGroup",),
        asg_decrement_keeps_min,
        ASG_API.format("TerminateInstanceInAutoScalingGroup"),
    ),
    # IAM: role names <= 64 and instance profile names <= 128 characters, paths /.../ (all in
    # the model as well); tags 50, 128, 256 (model) and the aws: prefix.
    Limit("iam", ("CreateRole",), "RoleName", length(1, 64), IAM_QUOTAS),
    Limit("iam", ("CreateInstanceProfile",), "InstanceProfileName", length(1, 128), IAM_QUOTAS),
    Limit(
        "iam",
        ("CreateRole", "CreateInstanceProfile"),
        "Path",
        matches(r"/|/[\x21-\x7E]*/", "begins and ends with a forward slash"),
        IAM_QUOTAS,
    ),
    *tag_rules(
        "iam",
        ("CreateRole", "TagRole", "CreateInstanceProfile", "TagInstanceProfile"),
        "Tags",
        "Key",
        "Value",
        IAM_TAGS,
    ),
    # "Role trust policy length: 2,048 characters" and "IAM doesn't count white space".
    Limit("iam", ("CreateRole",), "AssumeRolePolicyDocument", policy_size(2048), IAM_QUOTAS),
    Limit(
        "iam",
        ("UpdateAssumeRolePolicy",),
        "PolicyDocument",
        policy_size(2048),
        IAM_QUOTAS,
    ),
    # "Role policy size cannot exceed 10,240 characters" (all inline policies of the role).
    StateLimit("iam", ("PutRolePolicy",), iam_inline_policies_total, IAM_QUOTAS),
    # SQS queue name: up to 80 alphanumeric characters, hyphens and underscores; .fifo.
    Limit(
        "sqs",
        ("CreateQueue", "GetQueueUrl"),
        "QueueName",
        SQS_QUEUE_NAME,
        SQS_API.format("CreateQueue"),
    ),
    StateLimit(
        "sqs",
        ("CreateQueue",),
        fifo_name_matches_attribute,
        SQS_API.format("CreateQueue"),
    ),
    # Queue attributes' valid values.
    Limit(
        "sqs",
        SQS_ATTRIBUTES,
        "Attributes.=DelaySeconds",
        between(0, 900),
        SQS_API.format("SetQueueAttributes"),
    ),
    Limit(
        "sqs",
        SQS_ATTRIBUTES,
        "Attributes.=MaximumMessageSize",
        between(1024, 1048576),
        SQS_API.format("SetQueueAttributes"),
    ),
    Limit(
        "sqs",
        SQS_ATTRIBUTES,
        "Attributes.=MessageRetentionPeriod",
        between(60, 1209600),
        SQS_API.format("SetQueueAttributes"),
    ),
    Limit(
        "sqs",
        SQS_ATTRIBUTES,
        "Attributes.=ReceiveMessageWaitTimeSeconds",
        between(0, 20),
        SQS_API.format("SetQueueAttributes"),
    ),
    Limit(
        "sqs",
        SQS_ATTRIBUTES,
        "Attributes.=VisibilityTimeout",
        between(0, 43200),
        SQS_API.format("SetQueueAttributes"),
    ),
    # "maxReceiveCount ... between 1 and 1,000"
    Limit(
        "sqs",
        SQS_ATTRIBUTES,
        "Attributes.=RedrivePolicy",
        json_attribute("maxReceiveCount", between(1, 1000)),
        "https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/"
        "sqs-configure-dead-letter-queue.html",
    ),
    # ReceiveMessage: "Valid values: 1 to 10", long polling at most 20 s, visibility 12 h.
    *[
        Limit("sqs", ("ReceiveMessage",), member, check, SQS_API.format("ReceiveMessage"))
        for member, check in (
            ("MaxNumberOfMessages", between(1, 10)),
            ("WaitTimeSeconds", between(0, 20)),
            ("VisibilityTimeout", between(0, 43200)),
        )
    ],
    Limit(
        "sqs",
        ("ChangeMessageVisibility",),
        "VisibilityTimeout",
        between(0, 43200),
        SQS_API.format("ChangeMessageVisibility"),
    ),
    Limit(
        "sqs",
        ("ChangeMessageVisibilityBatch",),
        "Entries[].VisibilityTimeout",
        between(0, 43200),
        SQS_API.format("ChangeMessageVisibilityBatch"),
    ),
    Limit("sqs", ("SendMessage",), "DelaySeconds", between(0, 900), SQS_API.format("SendMessage")),
    # Batches: at most 10 entries, ids of up to 80 alphanumeric characters, hyphens and
    # underscores.
    *[
        row
        for op in ("SendMessageBatch", "DeleteMessageBatch", "ChangeMessageVisibilityBatch")
        for row in (
            Limit("sqs", (op,), "Entries", length(1, 10), SQS_API.format(op)),
            Limit("sqs", (op,), "Entries[].Id", length(1, 80), SQS_API.format(op)),
            Limit("sqs", (op,), "Entries[].Id", SQS_BATCH_ID, SQS_API.format(op)),
        )
    ],
    # SQS tags: 50 per queue, keys 128, values 256, "must not include the reserved prefix aws:"
    # (keys and values).
    *tag_rules("sqs", ("CreateQueue",), "tags", "{k}", "{v}", SQS_QUOTAS, values_reserved=True),
    *tag_rules("sqs", ("TagQueue",), "Tags", "{k}", "{v}", SQS_QUOTAS, values_reserved=True),
    # CloudWatch Logs: retention "Possible values are: 1, 3, 5, ... 3653".
    Limit(
        "logs",
        ("PutRetentionPolicy",),
        "retentionInDays",
        one_of(LOG_RETENTION_DAYS),
        LOGS_API.format("PutRetentionPolicy"),
    ),
    # Log group name: 1-512 characters of a-z, A-Z, 0-9, '_', '-', '/', '.', '#' (model too).
    Limit(
        "logs",
        ("CreateLogGroup",),
        "logGroupName",
        length(1, 512),
        LOGS_API.format("CreateLogGroup"),
    ),
    Limit(
        "logs",
        ("CreateLogGroup",),
        "logGroupName",
        matches(r"[\.\-_/#A-Za-z0-9]+", "a-z, A-Z, 0-9, _ - / . #"),
        LOGS_API.format("CreateLogGroup"),
    ),
    *tag_rules("logs", ("CreateLogGroup",), "tags", "{k}", "{v}", LOGS_TAGS),
    *tag_rules(
        "logs", ("TagResource", "TagLogGroup"), "tags", "{k}", "{v}", LOGS_API.format("TagResource")
    ),
]


def _limit_violations(response, service: str, operation: str, params: dict) -> list[Violation]:
    out = []
    for row in LIMITS:
        if row.service != service or (
            operation not in row.operations and "*" not in row.operations
        ):
            continue
        if isinstance(row, StateLimit):
            for member, value, constraint in row.check(response, params):
                out.append(Violation(member, value, constraint, row.doc))
            continue
        for member, value in _select(params, row.selector):
            constraint = row.check(value)
            if constraint:
                out.append(Violation(member, value, constraint, row.doc))
    return out


# --- the request hook -----------------------------------------------------------------------


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if len(text) > 200:
        return f"{text[:200]}... ({len(text)} characters)"
    return text


def _parse(response) -> tuple[str, dict]:
    request = response.normalized_request
    service_model = get_service_model(response.boto3_service_name)
    operation_model = service_model.operation_model(response._get_action())
    protocol = determine_request_protocol(service_model, request.content_type)
    parser = PROTOCOL_PARSERS[protocol](operation_model)
    params = parser.parse(
        {
            "method": request.method,
            "values": request.values,
            "headers": request.headers,
            "body": request.data,
            "url_path": request.path,
            "url_params": response.uri_match,
        }
    )
    return operation_model.name, params


def check_request(response) -> tuple[str, list[Violation]]:
    """The operation's name and every rule the request breaks."""
    service = response.service_name
    try:
        operation, params = _parse(response)
    except Exception as e:  # a member the service cannot read is refused too
        return response._get_action() or "?", [
            Violation("", None, f"The request could not be read as the model's input: {e}", "model")
        ]
    service_model = get_service_model(response.boto3_service_name)
    input_shape = service_model.operation_model(operation).input_shape
    found: list[Violation] = []
    if input_shape is not None:
        _check_shape(input_shape, params, "", found)
    for v in found:
        v.source = (
            f"botocore {service_model.service_name} {service_model.api_version} "
            f"service model, shape {v.source.removeprefix('model ')}"
        )
    by_model = {v.member for v in found}
    found.extend(
        v
        for v in _limit_violations(response, service, operation, params)
        if v.member not in by_model
    )
    return operation, found


def _record(response, operation: str, found: list[Violation], code: str) -> None:
    headers = response.headers
    now = datetime.datetime.now(datetime.timezone.utc).isoformat()
    with _lock:
        for v in found:
            _violations.append(
                {
                    "service": response.service_name,
                    "operation": operation,
                    "member": v.member,
                    "value": None if v.missing else _shown(v.value),
                    "constraint": v.constraint,
                    "source": v.source,
                    "code": code,
                    "accessKeyId": response.get_access_key(),
                    "userAgent": (headers.get("User-Agent") or "")[:300],
                    "time": now,
                }
            )


class RequestRefused(ServiceException):
    """A request AWS would refuse. moto looks an exception's error shape up by the service its
    module is named after; this module is no moto service, so it is not named after one."""

    __module__ = "strict_models"


_call_action = BaseResponse.call_action


def call_action_checked(self):
    if not _config["enabled"] or self.service_name not in SERVICES:
        return _call_action(self)
    try:
        operation, found = check_request(self)
    except Exception as e:  # a fault of this checker: let the request through, but loudly
        _record(
            self,
            self._get_action() or "?",
            [Violation("", None, f"moto_models could not check this request: {e!r}", "checker")],
            "none (passed to moto)",
        )
        return _call_action(self)
    if not found:
        return _call_action(self)
    code = VALIDATION_CODE[self.service_name]
    if all(v.missing for v in found) and self.service_name in MISSING_CODE:
        code = MISSING_CODE[self.service_name]
    parts = []
    for v in found:
        shown = "null" if v.missing else f"'{_shown(v.value)}'"
        parts.append(f"Value {shown} at '{v.member}' failed to satisfy constraint: {v.constraint}")
    noun = "error" if len(found) == 1 else "errors"
    message = f"{len(found)} validation {noun} detected: " + "; ".join(parts)
    _record(self, operation, found, code)
    status, headers, body = self.serialized(ActionResult(RequestRefused(code, message)))
    return status, headers, body


BaseResponse.call_action = call_action_checked


# --- moto-api endpoints ---------------------------------------------------------------------


def _violations_response(request, full_url, headers):
    with _lock:
        body = json.dumps(_violations)
    return 200, {"Content-Type": "application/json"}, body


def _clear_response(request, full_url, headers):
    if request.method != "POST":
        return 400, {}, json.dumps({"Error": "POST to clear the recorded violations"})
    with _lock:
        _violations.clear()
    return 200, {"Content-Type": "application/json"}, json.dumps({"status": "ok"})


def rules() -> list[dict[str, Any]]:
    """The documented limits enforced beyond the models, one entry per LIMITS row."""
    out = []
    for row in LIMITS:
        if isinstance(row, StateLimit):
            member, rule = "", " ".join((row.check.__doc__ or row.check.__name__).split())
        else:
            member, rule = row.selector, row.check.rule
        out.append(
            {
                "service": row.service,
                "operations": list(row.operations),
                "member": member,
                "rule": rule,
                "source": row.doc,
            }
        )
    return out


def _rules_response(request, full_url, headers):
    return 200, {"Content-Type": "application/json"}, json.dumps(rules())


def _config_response(request, full_url, headers):
    if request.method == "POST":
        body = json.loads(request.data or b"{}")
        if "enabled" in body:
            _config["enabled"] = bool(body["enabled"])
    return 200, {"Content-Type": "application/json"}, json.dumps(_config)


moto_api_urls.url_paths.update(
    {
        "{0}/moto-api/strict/violations$": _violations_response,
        "{0}/moto-api/strict/violations/clear": _clear_response,
        "{0}/moto-api/strict/config": _config_response,
        "{0}/moto-api/strict/rules": _rules_response,
    }
)
