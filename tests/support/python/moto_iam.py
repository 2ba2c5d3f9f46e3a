"""IAM authorization in the moto server, evaluated the way AWS evaluates identity-based policies.

Imported by moto_ext.py. Pinned to moto 5.2.5 (hack/moto-requirements.txt): it replaces
`BaseResponse._authenticate_and_authorize_normal_action`, the hook moto calls before every
action once authentication is on (`INITIAL_NO_AUTH_ACTION_COUNT`, or `POST /moto-api/reset-auth`
with a number). With authentication off (moto's default) nothing here runs.

Why: stock moto works out a request's resource only for SQS, IAM and STS and evaluates every
other call against `*`, and it evaluates conditions only as its trust-policy support goes. So a
statement scoped to an ECS, Auto Scaling, EC2, Logs or SSM ARN never allows anything, and no
service condition key (`aws:RequestTag`, `ecs:cluster`, `iam:PassedToService`, ...) is ever set.

What is evaluated
-----------------
Authentication stays moto's: the access key must be an IAM user's or an STS session's (moto
STS), and the SigV4 signature must verify (checked on the body as the client sent it: stock moto
re-encodes a form body before checking, which refuses valid signatures of the Rust SDK). Then,
for every call in `RESOLVERS` (the list is in that table, per service: every call of the
operator (src/aws), the worker (worker/src) and the test bed's ECS agent
(tests/support/src/agent.rs), plus the ones tests make), the call becomes one or more
authorization checks, each an (action, resource ARN, request context). Each check must
be allowed; the first that is not fails the whole call with the service's own error
(`UnauthorizedOperation` for EC2, `AccessDeniedException` for JSON services, `AccessDenied`
otherwise) naming principal, action, resource and why, and is recorded (see Endpoints).

- Resources: the ARN(s) the Service Authorization Reference gives for the action (the
  `iam_definition.json` parliament ships is the same data), built from the request and moto's
  state: e.g. ecs:RunTask on the task definition revision it resolves to, ecs:DescribeTasks on
  each task, autoscaling:SetDesiredCapacity on the group ARN (with the group's own id once it
  exists, a fresh one for CreateAutoScalingGroup), ec2:CreateSubnet on the new subnet and on its
  VPC, sqs:* on the queue, logs:* on `log-group:NAME`, ssm:GetParameter on the parameter (public
  `/aws/...` parameters have no account in their ARN). Actions without resource-level
  permissions (Describe*/List* that the reference lists with no resource type) check `*`.
- Checks AWS adds on its own (the reference's "dependent actions", each cited at its resolver):
  iam:PassRole on the task definition's task and execution roles for ecs:RunTask; on the launch
  template's instance profile role for autoscaling:Create/UpdateAutoScalingGroup; on the role for
  iam:AddRoleToInstanceProfile. ec2:RunInstances on every resource a launch from the group's
  launch template uses (launch template, image, subnets, security groups, instance/*, volume/*,
  network-interface/*) for autoscaling:Create/UpdateAutoScalingGroup with a launch template.
  iam:CreateServiceLinkedRole for the Auto Scaling service-linked role when it does not exist
  (never, in moto: it is never created, so every CreateAutoScalingGroup checks it, as in a fresh
  account). Tag-on-create: ec2:CreateTags (ec2:CreateAction) for EC2 creates with tags,
  ecs:TagResource (ecs:CreateAction) for ECS creates with tags, iam:TagRole /
  iam:TagInstanceProfile for IAM creates with tags, sqs:TagQueue for CreateQueue with tags.
  SQS batch calls are authorized as their single-message actions.
- Condition keys supplied: aws:RequestTag/<key> and aws:TagKeys (from the request's tags, for the
  resource type being created), aws:ResourceTag/<key> (and the ec2:/ecs:/autoscaling:/iam:
  ResourceTag aliases; read from moto's state), aws:PrincipalArn, aws:PrincipalAccount,
  aws:RequestedRegion, aws:username (IAM users), ecs:cluster, ecs:CreateAction, ec2:CreateAction,
  ec2:LaunchTemplate, ec2:IsLaunchTemplateResource, ec2:InstanceProfile, ec2:Region,
  iam:PassedToService, iam:AssociatedResourceArn (AddRoleToInstanceProfile), iam:AWSServiceName,
  iam:PolicyARN. A key not supplied is absent from the request context, as AWS treats an absent
  key.
- Policy language: Allow/Deny, Action/NotAction (case-insensitive, `*` and `?`),
  Resource/NotResource (matched per ARN component, `*` and `?`, case-sensitive), Condition with
  StringEquals, StringNotEquals, StringEqualsIgnoreCase, StringNotEqualsIgnoreCase, StringLike,
  StringNotLike, ArnEquals, ArnLike, ArnNotEquals, ArnNotLike, Bool, Null, Numeric*, the
  ForAllValues:/ForAnyValue: prefixes and the IfExists suffix, keys case-insensitive; several
  keys or operators in a block are ANDed, several values ORed (NORed for the negated
  operators); an absent key makes a positive operator false, a negated one true, IfExists and
  ForAllValues true, ForAnyValue false. Explicit Deny wins over any Allow; nothing allows =
  implicit deny.
- Policies of the principal: an IAM user's inline and attached policies and those of its groups;
  an assumed role's inline and attached policies (AWS managed policies included when the server
  runs with MOTO_IAM_LOAD_MANAGED_POLICIES=true, as moto_ext.py sets it).
- Role trust: sts:AssumeRole checks the role's trust policy names the caller (or its account),
  its conditions seeing sts:ExternalId and sts:RoleSessionName; session tags (AssumeRole's
  `Tags`) add an sts:TagSession check on the role, in the caller's policies and the trust
  policy, with aws:RequestTag/<key> and aws:TagKeys, so the tags a session was given are in
  the decisions record (`context` of the sts:TagSession entry);
  `POST /moto-api/iam-ext/assume-role-as-service` plays a service principal (ecs-tasks for a task,
  ec2 for an instance) assuming a role: the trust policy must allow that service, then moto STS
  issues the session.

What is NOT evaluated
---------------------
- Service control policies, resource control policies, permissions boundaries, session
  policies, resource-based policies (SQS queue policies, role trust policies beyond AssumeRole),
  cross-account access, KMS grants.
- Condition keys not listed above (for example ec2:Vpc, ec2:InstanceType, ecs:task-definition,
  autoscaling:MaxSize, aws:SourceIp, aws:SecureTransport, aws:CurrentTime, aws:MultiFactorAuth*),
  policy variables (`${aws:username}` is matched literally) and Date*, IpAddress and Binary
  operators (a statement using an operator this file does not know fails the call loudly).
- Checks AWS makes that the documentation does not state; where it is unclear they are left
  out, e.g. whether CreateLogGroup with tags also checks logs:TagResource, or whether
  CreateAutoScalingGroup with tags checks autoscaling:CreateOrUpdateTags (aws:RequestTag is
  evaluated on CreateAutoScalingGroup itself, as the reference lists it).
- What Auto Scaling then does with its service-linked role (launches) and what the ECS agent
  does with the instance role, beyond the calls the test bed's agent makes.
- EC2 answers a request naming an id that does not exist with NotFound before it authorizes;
  so does this file (the check on a missing EC2 resource is skipped and moto answers NotFound).
- A call missing from `RESOLVERS` is denied with a message naming the missing mapping, so a new
  call cannot pass unchecked (a resolver that fails on a request is a refusal too, not a pass). The one exception is a principal whose policies allow every action
  on every resource without condition and deny nothing (the test bed's admin user): for it the
  answer cannot depend on the resource, so it is allowed and recorded as unmapped.

Endpoints (test-only)
---------------------
- `GET /moto-api/iam-ext/denials`: every refused request since the last reset: principal,
  operation, action, resource, reason (also authentication failures: unknown keys).
- `POST /moto-api/iam-ext/reset`: forgets denials and decisions.
- `GET /moto-api/iam-ext/decisions`: the last 20,000 authorization checks, allowed or not.
- `POST /moto-api/iam-ext/assume-role-as-service` `{"RoleArn"|"RoleName"|"InstanceProfileArn",
  "Service", "RoleSessionName"}`: credentials of the role as the service would get them.
- `POST /moto-api/iam-ext/user` `{"UserName", "PolicyName", "PolicyDocument"}`: an IAM user whose
  only policy is the given one, and a new access key of it.
"""

from __future__ import annotations

import datetime
import io
import json
import re
import threading
import uuid
from typing import Any, Callable
from urllib.parse import urlparse

from moto import settings
from moto.core.authorization import ActionAuthenticatorMixin
from moto.core.exceptions import ServiceException
from moto.core.responses import ActionResult, BaseResponse
from werkzeug.exceptions import HTTPException

# ---- records ---------------------------------------------------------------------------------

_LOCK = threading.Lock()
_DENIALS: list[dict[str, Any]] = []
_DECISIONS: list[dict[str, Any]] = []
_MAX_DECISIONS = 20_000


def _record(entry: dict[str, Any], denied: bool) -> None:
    entry = dict(entry)
    entry["time"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
    with _LOCK:
        _DECISIONS.append(entry)
        if len(_DECISIONS) > _MAX_DECISIONS:
            del _DECISIONS[: len(_DECISIONS) - _MAX_DECISIONS]
        if denied:
            _DENIALS.append(entry)


# ---- policy evaluation -----------------------------------------------------------------------


class PolicyError(Exception):
    """A policy uses something this evaluator does not implement: the call fails loudly."""


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _glob(pattern: str, value: str, ignore_case: bool = False) -> bool:
    """`*` = any run of characters, `?` = one character, everything else literal."""
    regex = "".join(
        ".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern
    )
    flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
    return re.fullmatch(regex, value, flags) is not None


def arn_like(pattern: str, arn: str) -> bool:
    """ArnLike/ArnEquals and Resource matching: each of the six colon-separated components is
    matched on its own; the last (the resource) may itself hold colons.
    https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html#Conditions_ARN
    """
    if pattern == "*":
        return True
    p = pattern.split(":", 5)
    a = arn.split(":", 5)
    if len(p) != 6 or len(a) != 6:
        return False
    return all(_glob(pp, aa) for pp, aa in zip(p, a))


def _action_matches(pattern: str, action: str) -> bool:
    return _glob(pattern, action, ignore_case=True)


_NEGATED = {
    "StringNotEquals",
    "StringNotEqualsIgnoreCase",
    "StringNotLike",
    "ArnNotEquals",
    "ArnNotLike",
    "NumericNotEquals",
}


def _positive(base: str) -> str:
    return {
        "StringNotEquals": "StringEquals",
        "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
        "StringNotLike": "StringLike",
        "ArnNotEquals": "ArnEquals",
        "ArnNotLike": "ArnLike",
        "NumericNotEquals": "NumericEquals",
    }.get(base, base)


def _compare(op: str, actual: str, expected: Any) -> bool:
    expected = str(expected).lower() if isinstance(expected, bool) else str(expected)
    if op == "StringEquals":
        return actual == expected
    if op == "StringEqualsIgnoreCase":
        return actual.lower() == expected.lower()
    if op == "StringLike":
        return _glob(expected, actual)
    if op in ("ArnEquals", "ArnLike"):
        return arn_like(expected, actual)
    if op == "Bool":
        return actual.lower() == expected.lower()
    if op.startswith("Numeric"):
        try:
            a, e = float(actual), float(expected)
        except ValueError:
            return False
        return {
            "NumericEquals": a == e,
            "NumericLessThan": a < e,
            "NumericLessThanEquals": a <= e,
            "NumericGreaterThan": a > e,
            "NumericGreaterThanEquals": a >= e,
        }[op]
    raise PolicyError(f"condition operator {op} is not evaluated by moto_iam.py")


_KNOWN_OPS = {
    "StringEquals",
    "StringEqualsIgnoreCase",
    "StringLike",
    "ArnEquals",
    "ArnLike",
    "Bool",
    "Null",
    "NumericEquals",
    "NumericLessThan",
    "NumericLessThanEquals",
    "NumericGreaterThan",
    "NumericGreaterThanEquals",
} | _NEGATED


def condition_holds(op: str, key: str, expected: Any, ctx: dict[str, list[str]]) -> bool:
    """One key of one condition operator.
    https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html
    https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-single-vs-multi-valued-context-keys.html
    """
    expected = _as_list(expected)
    actual = ctx.get(key.lower())
    base = op
    if_exists = base.endswith("IfExists")
    if if_exists:
        base = base[: -len("IfExists")]
    set_op = None
    for prefix, name in (("ForAllValues:", "all"), ("ForAnyValue:", "any")):
        if base.startswith(prefix):
            set_op, base = name, base[len(prefix) :]
    if base not in _KNOWN_OPS:
        raise PolicyError(f"condition operator {op} is not evaluated by moto_iam.py")
    if base == "Null":
        is_null = actual is None
        return any(is_null == (str(e).lower() == "true") for e in expected)
    negated = base in _NEGATED
    positive = _positive(base)

    def value_matches(v: str) -> bool:
        hit = any(_compare(positive, v, e) for e in expected)
        return not hit if negated else hit

    if actual is None:
        if if_exists or set_op == "all":
            return True
        if set_op == "any":
            return False
        return negated
    if set_op == "all":
        return all(value_matches(v) for v in actual)
    # ForAnyValue, and a single-valued operator (on a multivalued key: any value).
    if negated and set_op is None:
        return all(value_matches(v) for v in actual)
    return any(value_matches(v) for v in actual)


def conditions_hold(conditions: dict[str, Any] | None, ctx: dict[str, list[str]]) -> bool:
    for op, block in (conditions or {}).items():
        for key, expected in block.items():
            if not condition_holds(op, key, expected, ctx):
                return False
    return True


def statement_applies(st: dict[str, Any], action: str, resource: str, ctx: dict) -> bool:
    if "NotAction" in st:
        if any(_action_matches(p, action) for p in _as_list(st["NotAction"])):
            return False
    elif not any(_action_matches(p, action) for p in _as_list(st.get("Action"))):
        return False
    if "NotResource" in st:
        if any(arn_like(p, resource) for p in _as_list(st["NotResource"])):
            return False
    elif not any(arn_like(p, resource) for p in _as_list(st.get("Resource"))):
        return False
    return conditions_hold(st.get("Condition"), ctx)


def statements(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return _as_list(doc.get("Statement"))


def decide(
    docs: list[tuple[str, dict]], action: str, resource: str, ctx: dict
) -> tuple[bool, str]:
    """Explicit Deny wins, then any Allow, else implicit deny.
    https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html
    """
    allowed_by = None
    for name, doc in docs:
        for i, st in enumerate(statements(doc)):
            if not statement_applies(st, action, resource, ctx):
                continue
            label = f"{name}/{st.get('Sid') or i}"
            if st.get("Effect") == "Deny":
                return False, f"explicitly denied by statement {label}"
            if st.get("Effect") == "Allow" and allowed_by is None:
                allowed_by = label
    if allowed_by is None:
        return False, "no identity-based policy allows it"
    return True, f"allowed by statement {allowed_by}"


def is_unrestricted(docs: list[tuple[str, dict]]) -> bool:
    """Every action on every resource allowed without condition, and nothing denied."""
    full = False
    for _, doc in docs:
        for st in statements(doc):
            if st.get("Effect") == "Deny":
                return False
            if (
                st.get("Effect") == "Allow"
                and "*" in _as_list(st.get("Action"))
                and "*" in _as_list(st.get("Resource"))
                and not st.get("Condition")
            ):
                full = True
    return full


# ---- calls to checks -------------------------------------------------------------------------


class Check:
    """One authorization: an action on one resource, with the request's context keys."""

    def __init__(self, action: str, resource: str, ctx: dict[str, Any] | None = None):
        self.action = action
        self.resource = resource
        self.ctx = {k.lower(): _as_list(v) for k, v in (ctx or {}).items() if v is not None}
        # Keys whose values are lists of strings; an empty list counts as present-but-empty.

    def describe(self) -> str:
        return f"{self.action} on {self.resource}"


class Unmapped(Exception):
    pass


class Skip(Exception):
    """The call names something that does not exist; let moto answer NotFound."""


def _norm_tags(tags: Any) -> dict[str, str]:
    """Tags in any of moto's / the APIs' shapes to {key: value}."""
    out: dict[str, str] = {}
    if not tags:
        return out
    if isinstance(tags, dict):
        for k, v in tags.items():
            if isinstance(v, dict):
                out[str(v.get("Key", v.get("key", k)))] = str(v.get("Value", v.get("value", "")))
            else:
                out[str(k)] = "" if v is None else str(v)
        return out
    for t in tags:
        if isinstance(t, dict):
            k = t.get("Key", t.get("key"))
            if k is not None:
                out[str(k)] = str(t.get("Value", t.get("value", "")) or "")
    return out


def _request_tag_ctx(tags: dict[str, str]) -> dict[str, list[str]]:
    ctx: dict[str, list[str]] = {f"aws:RequestTag/{k}": [v] for k, v in tags.items()}
    if tags:
        ctx["aws:TagKeys"] = list(tags)
    return ctx


class Call:
    """One request: its operation, parameters and the moto state it refers to."""

    def __init__(self, response: BaseResponse, service: str, op: str, principal: str):
        self.r = response
        self.service = service
        self.op = op
        self.principal = principal
        self.region = response.region
        self.account = response.current_account
        self.partition = getattr(response, "partition", "aws") or "aws"
        self.params = self._params()

    def _params(self) -> dict[str, Any]:
        params = getattr(self.r, "params", None)
        if self.r.automated_parameter_parsing and isinstance(params, dict):
            return dict(params)
        body = self.r.body
        if isinstance(body, bytes):
            body = body.decode("utf-8", "replace")
        if body and body.lstrip().startswith("{"):
            try:
                return json.loads(body)
            except ValueError:
                pass
        return {k: v[0] if isinstance(v, list) and len(v) == 1 else v for k, v in self.r.querystring.items()}

    def p(self, *names: str, default: Any = None) -> Any:
        for n in names:
            if n in self.params and self.params[n] is not None:
                return self.params[n]
        return default

    def arn(self, service: str, resource: str, region: bool = True, account: bool = True) -> str:
        return (
            f"arn:{self.partition}:{service}:{self.region if region else ''}:"
            f"{self.account if account else ''}:{resource}"
        )

    # -- backends
    def ecs(self):
        from moto.ecs.models import ecs_backends

        return ecs_backends[self.account][self.region]

    def asg(self):
        from moto.autoscaling.models import autoscaling_backends

        return autoscaling_backends[self.account][self.region]

    def ec2(self):
        from moto.ec2.models import ec2_backends

        return ec2_backends[self.account][self.region]

    def iam(self):
        from moto.iam.models import iam_backends

        return iam_backends[self.account][self.partition]

    def sqs(self):
        from moto.sqs.models import sqs_backends

        return sqs_backends[self.account][self.region]

    def logs(self):
        from moto.logs.models import logs_backends

        return logs_backends[self.account][self.region]

    def check(self, action: str, resource: str, ctx: dict | None = None) -> Check:
        return Check(action, resource, ctx)


# -- resource tags, for aws:ResourceTag and the service aliases


def resource_tags(call: Call, arn: str) -> dict[str, str] | None:
    """Tags of the resource an ARN names, from moto's state; None when unknown or absent."""
    parts = arn.split(":", 5)
    if len(parts) != 6 or "*" in parts[5]:
        return None
    service, res = parts[2], parts[5]
    try:
        if service == "ec2":
            rid = res.split("/", 1)[-1]
            backend = call.ec2()
            if rid not in backend.tags and not _ec2_exists(call, rid):
                return None
            return dict(backend.tags.get(rid, {}))
        if service == "ecs":
            kind, _, rest = res.partition("/")
            ecs = call.ecs()
            if kind == "cluster":
                c = ecs.clusters.get(rest)
                return _norm_tags(c.tags) if c else None
            if kind == "task-definition":
                fam, _, rev = rest.rpartition(":")
                td = ecs.task_definitions.get(fam, {}).get(int(rev)) if rev.isdigit() else None
                return _norm_tags(td.tags) if td else None
            if kind == "task":
                cluster, _, tid = rest.partition("/")
                for t_arn, t in ecs.tasks.get(cluster, {}).items():
                    if t_arn.endswith(tid):
                        return _norm_tags(t.tags)
                return None
            if kind == "container-instance":
                cluster, _, cid = rest.partition("/")
                ci = ecs.container_instances.get(cluster, {}).get(cid)
                return _norm_tags(getattr(ci, "tags", None)) if ci else None
            return None
        if service == "autoscaling":
            name = res.split("autoScalingGroupName/", 1)[-1]
            g = call.asg().autoscaling_groups.get(name)
            return _norm_tags(g.tags) if g else None
        if service == "iam":
            kind, _, rest = res.partition("/")
            name = rest.rsplit("/", 1)[-1]
            iam = call.iam()
            if kind == "role":
                role = iam.roles.get(_role_id(iam, name)) if _role_id(iam, name) else None
                return _norm_tags(role.tags) if role else None
            if kind == "instance-profile":
                prof = iam.instance_profiles.get(name)
                return _norm_tags(prof.tags) if prof else None
            return None
        if service == "sqs":
            q = call.sqs().queues.get(res)
            return _norm_tags(q.tags) if q else None
        if service == "logs":
            name = res[len("log-group:") :] if res.startswith("log-group:") else None
            if name is None or name not in call.logs().groups:
                return None
            return _norm_tags(call.logs().list_tags_log_group(name))
    except Exception:  # noqa: BLE001 - tags are best effort; absence is what AWS would see
        return None
    return None


def _role_id(iam, name: str) -> str | None:
    for rid, role in iam.roles.items():
        if role.name == name:
            return rid
    return None


def _role_arn(call: Call, name: str) -> str:
    iam = call.iam()
    rid = _role_id(iam, name)
    if rid:
        return iam.roles[rid].arn
    return call.arn("iam", f"role/{name}", region=False)


def _profile_arn(call: Call, name: str) -> str:
    prof = call.iam().instance_profiles.get(name)
    return prof.arn if prof else call.arn("iam", f"instance-profile/{name}", region=False)


_EC2_KINDS = {
    "vpc-": "vpc",
    "subnet-": "subnet",
    "igw-": "internet-gateway",
    "rtb-": "route-table",
    "sg-": "security-group",
    "lt-": "launch-template",
    "i-": "instance",
    "vol-": "volume",
    "eni-": "network-interface",
    "ami-": "image",
}


def _ec2_exists(call: Call, rid: str) -> bool:
    b = call.ec2()
    try:
        if rid.startswith("vpc-"):
            return rid in b.vpcs
        if rid.startswith("subnet-"):
            return any(rid in zone for zone in b.subnets.values())
        if rid.startswith("igw-"):
            return rid in b.internet_gateways
        if rid.startswith("rtb-"):
            return rid in b.route_tables
        if rid.startswith("sg-"):
            return b.get_security_group_from_id(rid) is not None
        if rid.startswith("lt-"):
            return rid in b.launch_templates
    except Exception:  # noqa: BLE001
        return False
    return True


def ec2_arn(call: Call, rid: str, must_exist: bool = True) -> str:
    """ARN of an EC2 resource by id. A missing one: Skip (EC2 answers NotFound first)."""
    for prefix, kind in _EC2_KINDS.items():
        if rid.startswith(prefix):
            if must_exist and not _ec2_exists(call, rid):
                raise Skip(f"{rid} does not exist")
            if kind == "image":
                return call.arn("ec2", f"image/{rid}", account=False)
            return call.arn("ec2", f"{kind}/{rid}")
    raise Unmapped(f"EC2 id {rid!r} of an unknown kind")


def _ec2_new(call: Call, kind: str) -> str:
    return call.arn("ec2", f"{kind}/*")


def _ec2_tag_specs(call: Call, resource_type: str) -> dict[str, str]:
    specs = call.p("TagSpecifications", "TagSpecification", default=[]) or []
    tags: dict[str, str] = {}
    for spec in _as_list(specs):
        if spec.get("ResourceType") == resource_type:
            tags.update(_norm_tags(spec.get("Tags", spec.get("Tag"))))
    return tags


def _ec2_create(call: Call, kind: str, resource_type: str, extra: list[Check]) -> list[Check]:
    """An EC2 create: the new resource with aws:RequestTag, what it is created in, and
    ec2:CreateTags with ec2:CreateAction when tags are given.
    https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/supported-iam-actions-tagging.html
    """
    action = f"ec2:{call.op}"
    tags = _ec2_tag_specs(call, resource_type)
    new = _ec2_new(call, kind)
    region = {"ec2:Region": call.region}
    checks = [call.check(action, new, {**_request_tag_ctx(tags), **region})]
    checks += extra
    if tags:
        checks.append(
            call.check(
                "ec2:CreateTags",
                new,
                {**_request_tag_ctx(tags), "ec2:CreateAction": call.op, **region},
            )
        )
    return checks


def _ec2_on(call: Call, *ids: str | None) -> list[Check]:
    action = f"ec2:{call.op}"
    return [
        call.check(action, ec2_arn(call, rid), {"ec2:Region": call.region})
        for rid in ids
        if rid
    ]


def _star(action: str) -> Callable[[Call], list[Check]]:
    return lambda call: [call.check(action, "*")]


# -- ECS


def _cluster_arn(call: Call, value: str | None) -> str:
    value = value or "default"
    if value.startswith("arn:"):
        return value
    return call.arn("ecs", f"cluster/{value}")


def _cluster_name(value: str | None) -> str:
    return (value or "default").split("/")[-1]


def _ecs_tag_on_create(call: Call, resource: str, tags: dict[str, str]) -> list[Check]:
    """https://docs.aws.amazon.com/AmazonECS/latest/developerguide/supported-iam-actions-tagging.html"""
    if not tags:
        return []
    return [
        call.check(
            "ecs:TagResource", resource, {**_request_tag_ctx(tags), "ecs:CreateAction": call.op}
        )
    ]


def _ecs_cluster_only(call: Call) -> list[Check]:
    return [call.check(f"ecs:{call.op}", _cluster_arn(call, call.p("cluster")))]


def ecs_create_cluster(call: Call) -> list[Check]:
    arn = _cluster_arn(call, call.p("clusterName"))
    tags = _norm_tags(call.p("tags"))
    return [call.check("ecs:CreateCluster", arn, _request_tag_ctx(tags))] + _ecs_tag_on_create(
        call, arn, tags
    )


def ecs_describe_clusters(call: Call) -> list[Check]:
    return [
        call.check("ecs:DescribeClusters", _cluster_arn(call, c))
        for c in (call.p("clusters") or ["default"])
    ]


def ecs_register_container_instance(call: Call) -> list[Check]:
    arn = _cluster_arn(call, call.p("cluster"))
    tags = _norm_tags(call.p("tags"))
    return [
        call.check("ecs:RegisterContainerInstance", arn, _request_tag_ctx(tags))
    ] + _ecs_tag_on_create(call, arn, tags)


def _ci_arn(call: Call, cluster: str, value: str) -> str:
    if value.startswith("arn:"):
        return value
    return call.arn("ecs", f"container-instance/{cluster}/{value}")


def _task_arn(call: Call, cluster: str, value: str) -> str:
    if value.startswith("arn:"):
        return value
    return call.arn("ecs", f"task/{cluster}/{value}")


def ecs_describe_container_instances(call: Call) -> list[Check]:
    cluster = _cluster_name(call.p("cluster"))
    ctx = {"ecs:cluster": _cluster_arn(call, call.p("cluster"))}
    return [
        call.check("ecs:DescribeContainerInstances", _ci_arn(call, cluster, ci), ctx)
        for ci in call.p("containerInstances", default=[])
    ]


def ecs_list_tasks(call: Call) -> list[Check]:
    """The reference gives ListTasks the container-instance resource (with ecs:cluster); a call
    without a containerInstance filter is checked on `container-instance/CLUSTER/*`."""
    cluster = _cluster_name(call.p("cluster"))
    ci = call.p("containerInstance")
    resource = _ci_arn(call, cluster, ci) if ci else call.arn(
        "ecs", f"container-instance/{cluster}/*"
    )
    return [
        call.check("ecs:ListTasks", resource, {"ecs:cluster": _cluster_arn(call, call.p("cluster"))})
    ]


def ecs_describe_tasks(call: Call) -> list[Check]:
    cluster = _cluster_name(call.p("cluster"))
    ctx = {"ecs:cluster": _cluster_arn(call, call.p("cluster"))}
    return [
        call.check("ecs:DescribeTasks", _task_arn(call, cluster, t), ctx)
        for t in call.p("tasks", default=[])
    ]


def ecs_stop_task(call: Call) -> list[Check]:
    cluster = _cluster_name(call.p("cluster"))
    return [
        call.check(
            "ecs:StopTask",
            _task_arn(call, cluster, call.p("task", default="")),
            {"ecs:cluster": _cluster_arn(call, call.p("cluster"))},
        )
    ]


def _pass_role(call: Call, role_arn: str, service: str, extra: dict | None = None) -> Check:
    """https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_use_passrole.html"""
    return call.check(
        "iam:PassRole", role_arn, {"iam:PassedToService": service, **(extra or {})}
    )


def ecs_register_task_definition(call: Call) -> list[Check]:
    family = call.p("family", default="")
    revisions = call.ecs().task_definitions.get(family, {})
    arn = call.arn("ecs", f"task-definition/{family}:{max(revisions, default=0) + 1}")
    tags = _norm_tags(call.p("tags"))
    return [
        call.check("ecs:RegisterTaskDefinition", arn, _request_tag_ctx(tags))
    ] + _ecs_tag_on_create(call, arn, tags)


def ecs_run_task(call: Call) -> list[Check]:
    """ecs:RunTask on the task definition revision, with ecs:cluster; iam:PassRole for the
    task and execution roles it passes (definition or override), as the reference's dependent
    action and ECS's own documentation say:
    https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonelasticcontainerservice.html
    https://docs.aws.amazon.com/AmazonECS/latest/developerguide/CWE_IAM_role.html
    """
    cluster_arn = _cluster_arn(call, call.p("cluster"))
    td_value = call.p("taskDefinition", default="")
    try:
        td = call.ecs().describe_task_definition(td_value)
    except Exception:  # noqa: BLE001 - ECS answers the missing definition itself
        raise Skip(f"task definition {td_value} does not exist")
    tags = _norm_tags(call.p("tags"))
    checks = [
        call.check(
            "ecs:RunTask",
            td.arn,
            {"ecs:cluster": cluster_arn, **_request_tag_ctx(tags)},
        )
    ]
    overrides = call.p("overrides") or {}
    for role in {
        overrides.get("taskRoleArn") or getattr(td, "task_role_arn", None),
        overrides.get("executionRoleArn") or getattr(td, "execution_role_arn", None),
    }:
        if role:
            checks.append(_pass_role(call, role, "ecs-tasks.amazonaws.com"))
    return checks + _ecs_tag_on_create(call, td.arn, tags)


# -- Auto Scaling


def _group_arn(call: Call, name: str | None) -> str:
    g = call.asg().autoscaling_groups.get(name or "")
    if g is not None:
        return g.arn
    return call.arn("autoscaling", f"autoScalingGroup:*:autoScalingGroupName/{name}")


def asg_on_group(call: Call) -> list[Check]:
    return [
        call.check(
            f"autoscaling:{call.op}", _group_arn(call, call.p("AutoScalingGroupName"))
        )
    ]


def asg_terminate_instance(call: Call) -> list[Check]:
    instance = call.p("InstanceId")
    for g in call.asg().autoscaling_groups.values():
        if any(s.instance.id == instance for s in g.instance_states):
            return [call.check("autoscaling:TerminateInstanceInAutoScalingGroup", g.arn)]
    raise Skip(f"instance {instance} is in no Auto Scaling group")


def asg_tags(call: Call) -> list[Check]:
    checks = []
    by_group: dict[str, dict[str, str]] = {}
    for t in _as_list(call.p("Tags")):
        by_group.setdefault(t.get("ResourceId", ""), {})[t.get("Key")] = t.get("Value", "")
    for group, tags in by_group.items():
        checks.append(
            call.check(f"autoscaling:{call.op}", _group_arn(call, group), _request_tag_ctx(tags))
        )
    return checks


def _launch_checks(call: Call, spec: dict[str, Any] | None, subnets: list[str]) -> list[Check]:
    """What Auto Scaling checks of the caller for a group using a launch template:
    ec2:RunInstances on the resources a launch from it uses, and iam:PassRole for its instance
    profile's role.
    https://docs.aws.amazon.com/autoscaling/ec2/userguide/ec2-auto-scaling-launch-template-permissions.html
    """
    if not spec:
        return []
    ec2 = call.ec2()
    lt_id = spec.get("LaunchTemplateId")
    if not lt_id and spec.get("LaunchTemplateName"):
        lt_id = ec2.launch_template_name_to_ids.get(spec["LaunchTemplateName"])
    template = ec2.launch_templates.get(lt_id or "")
    if template is None:
        raise Skip("launch template does not exist")
    version = str(spec.get("Version") or "$Default")
    if version == "$Latest":
        v = template.latest_version()
    elif version == "$Default":
        v = template.default_version()
    else:
        v = template.get_version(version)
    data = v.data or {}
    lt_arn = call.arn("ec2", f"launch-template/{template.id}")
    base = {
        "ec2:LaunchTemplate": lt_arn,
        "ec2:IsLaunchTemplateResource": "true",
        "ec2:Region": call.region,
    }
    profile = data.get("IamInstanceProfile") or {}
    profile_arn = profile.get("Arn")
    if not profile_arn and profile.get("Name"):
        profile_arn = _profile_arn(call, profile["Name"])
    instance_tags: dict[str, str] = {}
    for spec_ in _as_list(data.get("TagSpecifications")):
        if spec_.get("ResourceType") == "instance":
            instance_tags.update(_norm_tags(spec_.get("Tags")))
    groups = list(_as_list(data.get("SecurityGroupIds")))
    for ni in _as_list(data.get("NetworkInterfaces")):
        groups += _as_list(ni.get("Groups") or ni.get("SecurityGroupIds"))
    checks = [call.check("ec2:RunInstances", lt_arn, base)]
    if data.get("ImageId"):
        checks.append(
            call.check("ec2:RunInstances", ec2_arn(call, data["ImageId"], must_exist=False), base)
        )
    instance_ctx = {**base, **_request_tag_ctx(instance_tags)}
    if profile_arn:
        instance_ctx["ec2:InstanceProfile"] = profile_arn
    checks.append(call.check("ec2:RunInstances", _ec2_new(call, "instance"), instance_ctx))
    checks.append(call.check("ec2:RunInstances", _ec2_new(call, "volume"), base))
    checks.append(call.check("ec2:RunInstances", _ec2_new(call, "network-interface"), base))
    for subnet in subnets:
        checks.append(call.check("ec2:RunInstances", ec2_arn(call, subnet, must_exist=False), base))
    for sg in groups:
        checks.append(call.check("ec2:RunInstances", ec2_arn(call, sg, must_exist=False), base))
    if profile_arn:
        name = profile_arn.rsplit("/", 1)[-1]
        prof = call.iam().instance_profiles.get(name)
        for role in prof.roles if prof else []:
            checks.append(_pass_role(call, role.arn, "ec2.amazonaws.com"))
    return checks


def _subnets(call: Call) -> list[str]:
    return [s.strip() for s in (call.p("VPCZoneIdentifier") or "").split(",") if s.strip()]


def _slr_checks(call: Call, service: str, name: str) -> list[Check]:
    """The service-linked role a first use creates, when it does not exist.
    https://docs.aws.amazon.com/autoscaling/ec2/userguide/autoscaling-service-linked-role.html
    """
    role_arn = call.arn("iam", f"role/aws-service-role/{service}/{name}", region=False)
    iam = call.iam()
    if any(r.arn == role_arn for r in iam.roles.values()):
        return []
    return [
        call.check(
            "iam:CreateServiceLinkedRole", role_arn, {"iam:AWSServiceName": service}
        )
    ]


def asg_create_group(call: Call) -> list[Check]:
    name = call.p("AutoScalingGroupName")
    arn = call.arn(
        "autoscaling", f"autoScalingGroup:{uuid.uuid4()}:autoScalingGroupName/{name}"
    )
    tags = {t.get("Key"): t.get("Value", "") for t in _as_list(call.p("Tags"))}
    spec = call.p("LaunchTemplate") or (
        (call.p("MixedInstancesPolicy") or {})
        .get("LaunchTemplate", {})
        .get("LaunchTemplateSpecification")
    )
    return (
        [call.check("autoscaling:CreateAutoScalingGroup", arn, _request_tag_ctx(tags))]
        + _launch_checks(call, spec, _subnets(call))
        + _slr_checks(call, "autoscaling.amazonaws.com", "AWSServiceRoleForAutoScaling")
    )


def asg_update_group(call: Call) -> list[Check]:
    name = call.p("AutoScalingGroupName")
    spec = call.p("LaunchTemplate") or (
        (call.p("MixedInstancesPolicy") or {})
        .get("LaunchTemplate", {})
        .get("LaunchTemplateSpecification")
    )
    subnets = _subnets(call)
    if spec and not subnets:
        g = call.asg().autoscaling_groups.get(name or "")
        subnets = [s for s in (getattr(g, "vpc_zone_identifier", "") or "").split(",") if s]
    return [
        call.check("autoscaling:UpdateAutoScalingGroup", _group_arn(call, name))
    ] + _launch_checks(call, spec, subnets)


# -- EC2


def ec2_create_vpc(call: Call) -> list[Check]:
    return _ec2_create(call, "vpc", "vpc", [])


def ec2_create_subnet(call: Call) -> list[Check]:
    return _ec2_create(call, "subnet", "subnet", _ec2_on(call, call.p("VpcId")))


def ec2_create_igw(call: Call) -> list[Check]:
    return _ec2_create(call, "internet-gateway", "internet-gateway", [])


def ec2_create_route_table(call: Call) -> list[Check]:
    return _ec2_create(call, "route-table", "route-table", _ec2_on(call, call.p("VpcId")))


def ec2_create_security_group(call: Call) -> list[Check]:
    vpc = call.p("VpcId")
    if not vpc:
        default = call.ec2().get_default_vpc()
        vpc = default.id if default else None
    return _ec2_create(call, "security-group", "security-group", _ec2_on(call, vpc))


def ec2_create_launch_template(call: Call) -> list[Check]:
    """ec2:CreateLaunchTemplate does not check iam:PassRole for the instance profile it names:
    that is checked when instances launch (see _launch_checks)."""
    return _ec2_create(call, "launch-template", "launch-template", [])


def _lt_id(call: Call) -> str:
    lt = call.p("LaunchTemplateId")
    if not lt and call.p("LaunchTemplateName"):
        lt = call.ec2().launch_template_name_to_ids.get(call.p("LaunchTemplateName"))
        if lt is None:
            raise Skip("launch template does not exist")
    return lt or ""


def ec2_on_launch_template(call: Call) -> list[Check]:
    return _ec2_on(call, _lt_id(call))


def ec2_attach_igw(call: Call) -> list[Check]:
    return _ec2_on(call, call.p("InternetGatewayId"), call.p("VpcId"))


def ec2_route(call: Call) -> list[Check]:
    return _ec2_on(call, call.p("RouteTableId"))


def ec2_associate_route_table(call: Call) -> list[Check]:
    return _ec2_on(call, call.p("RouteTableId"), call.p("SubnetId"), call.p("GatewayId"))


def ec2_disassociate_route_table(call: Call) -> list[Check]:
    assoc = call.p("AssociationId")
    for rt in call.ec2().route_tables.values():
        target = rt._associations.get(assoc)
        if target is not None:
            return _ec2_on(call, rt.id, target)
    raise Skip(f"association {assoc} does not exist")


def ec2_delete(param: str) -> Callable[[Call], list[Check]]:
    return lambda call: _ec2_on(call, call.p(param))


def ec2_create_tags(call: Call) -> list[Check]:
    tags = _norm_tags(call.p("Tags", "Tag"))
    return [
        call.check("ec2:CreateTags", ec2_arn(call, rid), {**_request_tag_ctx(tags), "ec2:Region": call.region})
        for rid in _as_list(call.p("Resources", "ResourceId"))
    ]


# -- IAM


def _role_from_param(call: Call) -> str:
    return _role_arn(call, call.p("RoleName", default=""))


def iam_on_role(call: Call) -> list[Check]:
    return [call.check(f"iam:{call.op}", _role_from_param(call))]


def iam_role_policy_attachment(call: Call) -> list[Check]:
    return [
        call.check(
            f"iam:{call.op}", _role_from_param(call), {"iam:PolicyARN": call.p("PolicyArn")}
        )
    ]


def _iam_tag_on_create(call: Call, action: str, arn: str, tags: dict[str, str]) -> list[Check]:
    """Creating with tags also needs the tagging action.
    https://docs.aws.amazon.com/IAM/latest/UserGuide/id_tags_roles.html
    """
    return [call.check(action, arn, _request_tag_ctx(tags))] if tags else []


def iam_create_role(call: Call) -> list[Check]:
    path = call.p("Path") or "/"
    arn = call.arn("iam", f"role{path}{call.p('RoleName')}", region=False)
    tags = _norm_tags(call.p("Tags"))
    return [call.check("iam:CreateRole", arn, _request_tag_ctx(tags))] + _iam_tag_on_create(
        call, "iam:TagRole", arn, tags
    )


def iam_tag_role(call: Call) -> list[Check]:
    tags = _norm_tags(call.p("Tags"))
    return [call.check(f"iam:{call.op}", _role_from_param(call), _request_tag_ctx(tags))]


def _profile_from_param(call: Call) -> str:
    return _profile_arn(call, call.p("InstanceProfileName", default=""))


def iam_on_profile(call: Call) -> list[Check]:
    return [call.check(f"iam:{call.op}", _profile_from_param(call))]


def iam_create_profile(call: Call) -> list[Check]:
    path = call.p("Path") or "/"
    arn = call.arn("iam", f"instance-profile{path}{call.p('InstanceProfileName')}", region=False)
    tags = _norm_tags(call.p("Tags"))
    return [
        call.check("iam:CreateInstanceProfile", arn, _request_tag_ctx(tags))
    ] + _iam_tag_on_create(call, "iam:TagInstanceProfile", arn, tags)


def iam_tag_profile(call: Call) -> list[Check]:
    tags = _norm_tags(call.p("Tags"))
    return [call.check("iam:TagInstanceProfile", _profile_from_param(call), _request_tag_ctx(tags))]


def iam_add_role_to_profile(call: Call) -> list[Check]:
    """The caller also needs iam:PassRole on the role; the role goes to EC2 through the profile.
    https://docs.aws.amazon.com/IAM/latest/APIReference/API_AddRoleToInstanceProfile.html
    """
    return [
        call.check("iam:AddRoleToInstanceProfile", _profile_from_param(call)),
        _pass_role(
            call,
            _role_from_param(call),
            "ec2.amazonaws.com",
            {"iam:AssociatedResourceArn": f"arn:{call.partition}:ec2:*:{call.account}:instance/*"},
        ),
    ]


def iam_create_slr(call: Call) -> list[Check]:
    service = call.p("AWSServiceName", default="")
    return [
        call.check(
            "iam:CreateServiceLinkedRole",
            call.arn("iam", f"role/aws-service-role/{service}/*", region=False),
            {"iam:AWSServiceName": service},
        )
    ]


# -- STS


def sts_assume_role(call: Call) -> list[Check]:
    """sts:AssumeRole on the role, with sts:ExternalId and sts:RoleSessionName in the context;
    session tags need sts:TagSession on the role too, with aws:RequestTag/aws:TagKeys (both
    checked against the caller's policies and the role's trust policy).
    https://docs.aws.amazon.com/IAM/latest/UserGuide/id_session-tags.html#id_session-tags_permissions-required
    https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_iam-condition-keys.html#ck_externalid
    """
    role = call.p("RoleArn", default="")
    ctx: dict[str, list[str]] = {"sts:RoleSessionName": [str(call.p("RoleSessionName", default=""))]}
    external_id = call.p("ExternalId")
    if external_id is not None:
        ctx["sts:ExternalId"] = [str(external_id)]
    checks = [call.check("sts:AssumeRole", role, ctx)]
    tags = _norm_tags(call.p("Tags"))
    if tags:
        checks.append(call.check("sts:TagSession", role, _request_tag_ctx(tags)))
    return checks


# -- SQS (batch calls are authorized as their single-message actions)
# https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-api-permissions-reference.html


def _queue_name(call: Call) -> str:
    url = call.p("QueueUrl")
    if url:
        return url.rstrip("/").split("/")[-1]
    return call.p("QueueName", default="")


def sqs_on_queue(action: str | None = None) -> Callable[[Call], list[Check]]:
    return lambda call: [
        call.check(action or f"sqs:{call.op}", call.arn("sqs", _queue_name(call)))
    ]


def sqs_create_queue(call: Call) -> list[Check]:
    """Tags on create need sqs:TagQueue too.
    https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_CreateQueue.html
    """
    arn = call.arn("sqs", call.p("QueueName", default=""))
    tags = _norm_tags(call.p("tags", "Tags", "Tag"))
    checks = [call.check("sqs:CreateQueue", arn, _request_tag_ctx(tags))]
    if tags:
        checks.append(call.check("sqs:TagQueue", arn, _request_tag_ctx(tags)))
    return checks


def sqs_tag_queue(call: Call) -> list[Check]:
    tags = _norm_tags(call.p("Tags", "tags", "Tag"))
    return [call.check("sqs:TagQueue", call.arn("sqs", _queue_name(call)), _request_tag_ctx(tags))]


# -- CloudWatch Logs


def _log_group_arn(call: Call) -> str:
    return call.arn("logs", f"log-group:{call.p('logGroupName', default='')}")


def logs_on_group(call: Call) -> list[Check]:
    return [call.check(f"logs:{call.op}", _log_group_arn(call))]


def logs_create_group(call: Call) -> list[Check]:
    tags = _norm_tags(call.p("tags"))
    return [call.check("logs:CreateLogGroup", _log_group_arn(call), _request_tag_ctx(tags))]


def logs_tag_resource(call: Call) -> list[Check]:
    tags = _norm_tags(call.p("tags"))
    arn = call.p("resourceArn", default="").removesuffix(":*")
    return [call.check(f"logs:{call.op}", arn, _request_tag_ctx(tags))]


def logs_on_resource_arn(call: Call) -> list[Check]:
    return [call.check(f"logs:{call.op}", call.p("resourceArn", default="").removesuffix(":*"))]


def ecs_on_resource_arn(call: Call) -> list[Check]:
    arn = call.p("resourceArn", default="")
    tags = _norm_tags(call.p("tags"))
    return [call.check(f"ecs:{call.op}", arn, _request_tag_ctx(tags))]


def logs_on_stream(call: Call) -> list[Check]:
    group, stream = call.p("logGroupName", default=""), call.p("logStreamName", default="")
    return [
        call.check(f"logs:{call.op}", call.arn("logs", f"log-group:{group}:log-stream:{stream}"))
    ]


# -- SSM


def ssm_get_parameter(call: Call) -> list[Check]:
    """Public parameters (`/aws/service/...`) belong to no account: their ARN has none.
    https://docs.aws.amazon.com/systems-manager/latest/userguide/parameter-store-public-parameters.html
    """
    name = call.p("Name", default="")
    if name.startswith("arn:"):
        return [call.check("ssm:GetParameter", name)]
    path = name if name.startswith("/") else f"/{name}"
    public = path.startswith("/aws/")
    return [call.check("ssm:GetParameter", call.arn("ssm", f"parameter{path}", account=not public))]


# The map: (signing service, operation) -> checks. Describe/List calls without resource-level
# permissions in the Service Authorization Reference check `*`.
# https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonelasticcontainerservice.html
# https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2autoscaling.html
# https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2.html
# https://docs.aws.amazon.com/service-authorization/latest/reference/list_awsidentityandaccessmanagementiam.html
# https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonsqs.html
# https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazoncloudwatchlogs.html
# https://docs.aws.amazon.com/service-authorization/latest/reference/list_awssystemsmanager.html
RESOLVERS: dict[tuple[str, str], Callable[[Call], list[Check]]] = {
    # ECS
    ("ecs", "CreateCluster"): ecs_create_cluster,
    ("ecs", "DescribeClusters"): ecs_describe_clusters,
    ("ecs", "DeleteCluster"): _ecs_cluster_only,
    ("ecs", "ListContainerInstances"): _ecs_cluster_only,
    ("ecs", "RegisterContainerInstance"): ecs_register_container_instance,
    ("ecs", "DeregisterContainerInstance"): _ecs_cluster_only,
    ("ecs", "SubmitTaskStateChange"): _ecs_cluster_only,
    ("ecs", "SubmitContainerStateChange"): _ecs_cluster_only,
    ("ecs", "UpdateContainerInstancesState"): _ecs_cluster_only,
    ("ecs", "DescribeContainerInstances"): ecs_describe_container_instances,
    ("ecs", "ListTasks"): ecs_list_tasks,
    ("ecs", "DescribeTasks"): ecs_describe_tasks,
    ("ecs", "StopTask"): ecs_stop_task,
    ("ecs", "RunTask"): ecs_run_task,
    ("ecs", "RegisterTaskDefinition"): ecs_register_task_definition,
    ("ecs", "DescribeTaskDefinition"): _star("ecs:DescribeTaskDefinition"),
    ("ecs", "DeregisterTaskDefinition"): _star("ecs:DeregisterTaskDefinition"),
    ("ecs", "ListTaskDefinitions"): _star("ecs:ListTaskDefinitions"),
    ("ecs", "ListClusters"): _star("ecs:ListClusters"),
    ("ecs", "ListTagsForResource"): ecs_on_resource_arn,
    ("ecs", "TagResource"): ecs_on_resource_arn,
    ("ecs", "UntagResource"): ecs_on_resource_arn,
    # Auto Scaling
    ("autoscaling", "DescribeAutoScalingGroups"): _star("autoscaling:DescribeAutoScalingGroups"),
    ("autoscaling", "DescribeAutoScalingInstances"): _star(
        "autoscaling:DescribeAutoScalingInstances"
    ),
    ("autoscaling", "DescribeScalingActivities"): _star("autoscaling:DescribeScalingActivities"),
    ("autoscaling", "DescribeTags"): _star("autoscaling:DescribeTags"),
    ("autoscaling", "CreateAutoScalingGroup"): asg_create_group,
    ("autoscaling", "UpdateAutoScalingGroup"): asg_update_group,
    ("autoscaling", "DeleteAutoScalingGroup"): asg_on_group,
    ("autoscaling", "SetDesiredCapacity"): asg_on_group,
    ("autoscaling", "SuspendProcesses"): asg_on_group,
    ("autoscaling", "ResumeProcesses"): asg_on_group,
    ("autoscaling", "TerminateInstanceInAutoScalingGroup"): asg_terminate_instance,
    ("autoscaling", "CreateOrUpdateTags"): asg_tags,
    ("autoscaling", "DeleteTags"): asg_tags,
    # EC2
    ("ec2", "DescribeVpcs"): _star("ec2:DescribeVpcs"),
    ("ec2", "DescribeSubnets"): _star("ec2:DescribeSubnets"),
    ("ec2", "DescribeSecurityGroups"): _star("ec2:DescribeSecurityGroups"),
    ("ec2", "DescribeLaunchTemplates"): _star("ec2:DescribeLaunchTemplates"),
    ("ec2", "DescribeLaunchTemplateVersions"): _star("ec2:DescribeLaunchTemplateVersions"),
    ("ec2", "DescribeInternetGateways"): _star("ec2:DescribeInternetGateways"),
    ("ec2", "DescribeRouteTables"): _star("ec2:DescribeRouteTables"),
    ("ec2", "DescribeAvailabilityZones"): _star("ec2:DescribeAvailabilityZones"),
    ("ec2", "DescribeInstanceTypeOfferings"): _star("ec2:DescribeInstanceTypeOfferings"),
    ("ec2", "DescribeInstances"): _star("ec2:DescribeInstances"),
    ("ec2", "DescribeTags"): _star("ec2:DescribeTags"),
    ("ec2", "CreateVpc"): ec2_create_vpc,
    ("ec2", "CreateSubnet"): ec2_create_subnet,
    ("ec2", "CreateInternetGateway"): ec2_create_igw,
    ("ec2", "CreateRouteTable"): ec2_create_route_table,
    ("ec2", "CreateSecurityGroup"): ec2_create_security_group,
    ("ec2", "CreateLaunchTemplate"): ec2_create_launch_template,
    ("ec2", "CreateLaunchTemplateVersion"): ec2_on_launch_template,
    ("ec2", "ModifyLaunchTemplate"): ec2_on_launch_template,
    ("ec2", "DeleteLaunchTemplate"): ec2_on_launch_template,
    ("ec2", "AttachInternetGateway"): ec2_attach_igw,
    ("ec2", "DetachInternetGateway"): ec2_attach_igw,
    ("ec2", "CreateRoute"): ec2_route,
    ("ec2", "ReplaceRoute"): ec2_route,
    ("ec2", "DeleteRoute"): ec2_route,
    ("ec2", "AssociateRouteTable"): ec2_associate_route_table,
    ("ec2", "DisassociateRouteTable"): ec2_disassociate_route_table,
    ("ec2", "DeleteSubnet"): ec2_delete("SubnetId"),
    ("ec2", "DeleteRouteTable"): ec2_delete("RouteTableId"),
    ("ec2", "DeleteInternetGateway"): ec2_delete("InternetGatewayId"),
    ("ec2", "DeleteVpc"): ec2_delete("VpcId"),
    ("ec2", "DeleteSecurityGroup"): ec2_delete("GroupId"),
    ("ec2", "CreateTags"): ec2_create_tags,
    # IAM
    ("iam", "GetRole"): iam_on_role,
    ("iam", "DeleteRole"): iam_on_role,
    ("iam", "GetRolePolicy"): iam_on_role,
    ("iam", "PutRolePolicy"): iam_on_role,
    ("iam", "DeleteRolePolicy"): iam_on_role,
    ("iam", "ListRolePolicies"): iam_on_role,
    ("iam", "ListAttachedRolePolicies"): iam_on_role,
    ("iam", "ListRoleTags"): iam_on_role,
    ("iam", "UpdateAssumeRolePolicy"): iam_on_role,
    ("iam", "ListInstanceProfilesForRole"): iam_on_role,
    ("iam", "AttachRolePolicy"): iam_role_policy_attachment,
    ("iam", "DetachRolePolicy"): iam_role_policy_attachment,
    ("iam", "CreateRole"): iam_create_role,
    ("iam", "TagRole"): iam_tag_role,
    ("iam", "UntagRole"): iam_on_role,
    ("iam", "GetInstanceProfile"): iam_on_profile,
    ("iam", "DeleteInstanceProfile"): iam_on_profile,
    ("iam", "RemoveRoleFromInstanceProfile"): iam_on_profile,
    ("iam", "CreateInstanceProfile"): iam_create_profile,
    ("iam", "TagInstanceProfile"): iam_tag_profile,
    ("iam", "ListInstanceProfileTags"): iam_on_profile,
    ("iam", "AddRoleToInstanceProfile"): iam_add_role_to_profile,
    ("iam", "CreateServiceLinkedRole"): iam_create_slr,
    ("iam", "ListRoles"): _star("iam:ListRoles"),
    ("iam", "ListInstanceProfiles"): _star("iam:ListInstanceProfiles"),
    # STS (GetCallerIdentity needs no permission and is answered before this table)
    ("sts", "AssumeRole"): sts_assume_role,
    # SQS
    ("sqs", "CreateQueue"): sqs_create_queue,
    ("sqs", "GetQueueUrl"): sqs_on_queue(),
    ("sqs", "GetQueueAttributes"): sqs_on_queue(),
    ("sqs", "SetQueueAttributes"): sqs_on_queue(),
    ("sqs", "DeleteQueue"): sqs_on_queue(),
    ("sqs", "PurgeQueue"): sqs_on_queue(),
    ("sqs", "TagQueue"): sqs_tag_queue,
    ("sqs", "UntagQueue"): sqs_on_queue(),
    ("sqs", "ListQueueTags"): sqs_on_queue(),
    ("sqs", "ReceiveMessage"): sqs_on_queue(),
    ("sqs", "SendMessage"): sqs_on_queue(),
    ("sqs", "SendMessageBatch"): sqs_on_queue("sqs:SendMessage"),
    ("sqs", "DeleteMessage"): sqs_on_queue(),
    ("sqs", "DeleteMessageBatch"): sqs_on_queue("sqs:DeleteMessage"),
    ("sqs", "ChangeMessageVisibility"): sqs_on_queue(),
    ("sqs", "ChangeMessageVisibilityBatch"): sqs_on_queue("sqs:ChangeMessageVisibility"),
    ("sqs", "ListQueues"): _star("sqs:ListQueues"),
    # CloudWatch Logs
    ("logs", "DescribeLogGroups"): _star("logs:DescribeLogGroups"),
    ("logs", "CreateLogGroup"): logs_create_group,
    ("logs", "DeleteLogGroup"): logs_on_group,
    ("logs", "PutRetentionPolicy"): logs_on_group,
    ("logs", "DeleteRetentionPolicy"): logs_on_group,
    ("logs", "TagLogGroup"): logs_on_group,
    ("logs", "ListTagsLogGroup"): logs_on_group,
    ("logs", "TagResource"): logs_tag_resource,
    ("logs", "UntagResource"): logs_on_resource_arn,
    ("logs", "ListTagsForResource"): logs_on_resource_arn,
    ("logs", "CreateLogStream"): logs_on_stream,
    ("logs", "PutLogEvents"): logs_on_stream,
    # SSM
    ("ssm", "GetParameter"): ssm_get_parameter,
}


# ---- the principal ---------------------------------------------------------------------------


def _policy_docs(call: Call, access_key: Any) -> list[tuple[str, dict]]:
    """The principal's identity-based policies, as (name, document): an IAM user's inline and
    attached policies and its groups'; an assumed role's inline and attached policies."""
    from moto.iam.access_control import IAMPolicy

    iam = call.iam()
    arn = access_key.arn
    out: list[tuple[str, dict]] = []

    def add(owner: Any, label: str) -> None:
        for name, doc in owner.policies.items():
            out.append((f"{label} inline policy {name}", json.loads(doc)))
        for policy in owner.managed_policies.values():
            out.append((f"{label} managed policy {policy.name}", IAMPolicy(policy)._policy_json))

    if ":assumed-role/" in arn:
        role_name = arn.split(":assumed-role/", 1)[1].split("/")[0]
        rid = _role_id(iam, role_name)
        if rid is not None:
            add(iam.roles[rid], f"role {role_name}")
    else:
        user_name = arn.rsplit("/", 1)[-1]
        user = iam.users.get(user_name)
        if user is not None:
            add(user, f"user {user_name}")
            for group in iam.get_groups_for_user(user_name):
                add(group, f"group {group.name}")
    return out


def _principal_ctx(call: Call, access_key: Any) -> dict[str, Any]:
    ctx: dict[str, Any] = {
        "aws:PrincipalAccount": call.account,
        "aws:RequestedRegion": call.region,
    }
    arn = access_key.arn
    if ":assumed-role/" in arn:
        role = arn.split(":assumed-role/", 1)[1].split("/")[0]
        ctx["aws:PrincipalArn"] = _role_arn(call, role)
    else:
        ctx["aws:PrincipalArn"] = arn
        ctx["aws:username"] = arn.rsplit("/", 1)[-1]
    return ctx


def _trust_allows(
    iam: Any,
    account: str,
    partition: str,
    role_arn: str,
    caller: str,
    service: str | None,
    action: str = "sts:AssumeRole",
    request: dict[str, list[str]] | None = None,
) -> bool:
    """The role's trust policy allows `action` (sts:AssumeRole, or sts:TagSession when session
    tags are passed) for the caller (its ARN, its role, its account) or, for a service
    principal, the service; its conditions see the request's keys (sts:ExternalId,
    aws:RequestTag/..., aws:TagKeys).
    https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_principal.html
    """
    role = next((r for r in iam.roles.values() if r.arn == role_arn), None)
    if role is None:
        return False
    doc = json.loads(role.assume_role_policy_document)
    ctx = {"aws:sourceaccount": [account]}
    for k, v in (request or {}).items():
        ctx[k.lower()] = _as_list(v)
    caller_role = caller
    if ":assumed-role/" in caller:
        name = caller.split(":assumed-role/", 1)[1].split("/")[0]
        caller_role = next((r.arn for r in iam.roles.values() if r.name == name), caller)
    allowed = False
    for st in statements(doc):
        if not any(_action_matches(a, action) for a in _as_list(st.get("Action"))):
            continue
        principal = st.get("Principal") or {}
        if service is not None:
            names = _as_list(principal.get("Service")) if isinstance(principal, dict) else []
            hit = service in names
        else:
            names = (
                _as_list(principal.get("AWS")) if isinstance(principal, dict) else [principal]
            )
            hit = any(
                n in ("*", caller, caller_role, account)
                or n == f"arn:{partition}:iam::{account}:root"
                for n in names
            )
        if not hit or not conditions_hold(st.get("Condition"), ctx):
            continue
        if st.get("Effect") == "Deny":
            return False
        allowed = allowed or st.get("Effect") == "Allow"
    return allowed


# ---- errors in each protocol's shape ---------------------------------------------------------


class AccessRefused(ServiceException):
    """AccessDenied in the service's own shape. moto finds an error's shape by the service its
    module is named after; this module is no moto service."""

    __module__ = "strict_iam"


class _Denied(HTTPException):
    """Carries the serialized refusal out of the authorization hook (moto's call_action turns an
    HTTPException into the response)."""

    def __init__(self, response: BaseResponse, service: str, json_protocol: bool, message: str):
        super().__init__()
        if service == "ec2":
            code = "UnauthorizedOperation"
        elif json_protocol:
            code = "AccessDeniedException"
        else:
            code = "AccessDenied"
        try:
            _status, _headers, body = response.serialized(
                ActionResult(AccessRefused(code, message))
            )
        except Exception:  # noqa: BLE001 - an operation unknown to the model: plain JSON
            body = json.dumps({"__type": code, "message": message})
        # What AWS answers: 400 for JSON services' AccessDeniedException, 403 otherwise.
        self.code = 400 if code == "AccessDeniedException" else 403
        self.description = body


# ---- the signed body ------------------------------------------------------------------------

_RAW_BODY = "moto_iam.raw_body"


def _keep_form_bodies() -> None:
    """A form-encoded body (the query protocols: EC2, Auto Scaling, IAM, STS) is consumed by
    werkzeug's form parser before moto checks the signature, and moto then signs a body it
    rebuilds from the parsed form, which differs from what the SDK sent whenever the SDK encodes
    a character differently (the Rust SDK does): a valid signature is refused. The body is kept
    as it arrived, and the signature checked on it."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    original = DomainDispatcherApplication.__call__

    def call(self: Any, environ: dict[str, Any], start_response: Any) -> Any:
        content_type = environ.get("CONTENT_TYPE") or ""
        length = environ.get("CONTENT_LENGTH") or ""
        if content_type.startswith("application/x-www-form-urlencoded") and length.isdigit():
            body = environ["wsgi.input"].read(int(length))
            environ["wsgi.input"] = io.BytesIO(body)
            environ[_RAW_BODY] = body
        return original(self, environ, start_response)

    DomainDispatcherApplication.__call__ = call


_keep_form_bodies()


# ---- the hook --------------------------------------------------------------------------------


def _authorize(self: BaseResponse, resource: str = "*") -> None:
    """Replaces moto's check: authenticate as moto does, then evaluate every check of the call."""
    if ActionAuthenticatorMixin.request_count < settings.INITIAL_NO_AUTH_ACTION_COUNT:
        ActionAuthenticatorMixin.request_count += 1
        return
    if self.headers.get("X-Amz-Target") in ActionAuthenticatorMixin.PUBLIC_OPERATIONS:
        return
    from moto.iam.access_control import IAMRequest

    op = self._get_action()
    path = self.raw_path
    query = urlparse(self.uri).query
    if query:
        path += "?" + query
    raw_body = self.normalized_request.environ.get(_RAW_BODY) or self.raw_body
    try:
        request = IAMRequest(
            account_id=self.current_account,
            method=self.method,
            path=path,
            data=self.data,
            body=raw_body,
            headers=self.headers,
            action=op,
        )
        request.check_signature()
    except Exception as e:
        auth = self.headers.get("Authorization", "")
        key = auth.partition("Credential=")[2].partition("/")[0] or "(unsigned)"
        _record(
            {
                "principal": f"access key {key}",
                "operation": f"{self.service_name}:{op}",
                "action": f"{self.service_name}:{op}",
                "resource": "",
                "reason": f"authentication failed: {type(e).__name__}",
            },
            denied=True,
        )
        raise
    service = request._service
    principal = request._access_key.arn
    json_protocol = bool(self.headers.get("X-Amz-Target")) or "json" in (
        self.headers.get("Content-Type") or ""
    )
    operation = f"{service}:{op}"
    if operation == "sts:GetCallerIdentity":
        # No permission is required (and an explicit Deny does not apply).
        # https://docs.aws.amazon.com/STS/latest/APIReference/API_GetCallerIdentity.html
        return
    call = Call(self, service, op, principal)
    docs = _policy_docs(call, request._access_key)

    def deny(action: str, resource_: str, reason: str, ctx: dict | None = None) -> None:
        _record(
            {
                "principal": principal,
                "operation": operation,
                "action": action,
                "resource": resource_,
                "reason": reason,
                "context": ctx or {},
            },
            denied=True,
        )
        raise _Denied(
            self,
            service,
            json_protocol,
            f"User: {principal} is not authorized to perform: {action} on resource: "
            f"{resource_} ({reason}) [moto_iam]",
        )

    resolver = RESOLVERS.get((service, op))
    if resolver is None:
        if is_unrestricted(docs):
            _record(
                {
                    "principal": principal,
                    "operation": operation,
                    "action": operation,
                    "resource": "*",
                    "reason": "unmapped call, allowed: the principal may do anything",
                },
                denied=False,
            )
            return
        deny(
            operation,
            "?",
            f"no resource mapping for {operation} in tests/support/python/moto_iam.py "
            "RESOLVERS: add one from the Service Authorization Reference",
        )
    try:
        checks = resolver(call)
    except Skip:
        return
    except Unmapped as e:
        deny(operation, "?", f"moto_iam.py cannot map this call: {e}")
    except Exception as e:  # noqa: BLE001 - a mapping bug must show as a refusal, not pass
        deny(operation, "?", f"moto_iam.py failed mapping this call: {type(e).__name__}: {e}")
    base_ctx = _principal_ctx(call, request._access_key)
    for check in checks:
        ctx = {k.lower(): _as_list(v) for k, v in base_ctx.items()}
        tags = resource_tags(call, check.resource)
        for k, v in (tags or {}).items():
            for prefix in ("aws", "ec2", "ecs", "autoscaling", "iam"):
                ctx[f"{prefix}:resourcetag/{k}".lower()] = [v]
        ctx.update(check.ctx)
        try:
            allowed, why = decide(docs, check.action, check.resource, ctx)
        except PolicyError as e:
            allowed, why = False, str(e)
        if allowed and check.action in ("sts:AssumeRole", "sts:TagSession"):
            if not _trust_allows(
                call.iam(),
                call.account,
                call.partition,
                check.resource,
                principal,
                None,
                check.action,
                check.ctx,
            ):
                allowed, why = (
                    False,
                    f"the role's trust policy does not allow {check.action} for this principal"
                    " (with this request's sts:ExternalId / session tags)",
                )
        shown = {k: v for k, v in check.ctx.items()}
        if not allowed:
            deny(check.action, check.resource, why, shown)
        _record(
            {
                "principal": principal,
                "operation": operation,
                "action": check.action,
                "resource": check.resource,
                "reason": why,
                "context": shown,
            },
            denied=False,
        )


BaseResponse._authenticate_and_authorize_normal_action = _authorize


# ---- endpoints -------------------------------------------------------------------------------


def _json(status: int, body: Any) -> tuple[int, dict[str, str], str]:
    return status, {"Content-Type": "application/json"}, json.dumps(body, default=str)


def denials_response(request: Any, full_url: str, headers: Any) -> tuple[int, dict, str]:
    with _LOCK:
        return _json(200, list(_DENIALS))


def decisions_response(request: Any, full_url: str, headers: Any) -> tuple[int, dict, str]:
    with _LOCK:
        return _json(200, list(_DECISIONS))


def reset_response(request: Any, full_url: str, headers: Any) -> tuple[int, dict, str]:
    with _LOCK:
        _DENIALS.clear()
        _DECISIONS.clear()
    return _json(200, {"status": "ok"})


def assume_role_as_service_response(
    request: Any, full_url: str, headers: Any
) -> tuple[int, dict, str]:
    """A service principal (ecs-tasks.amazonaws.com, ec2.amazonaws.com) assumes a role, the
    way ECS gives a task its task role and EC2 an instance its profile's role: the role's trust
    policy must allow the service; the session comes from moto STS, so its keys authenticate.
    https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task-iam-roles.html
    """
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.iam.models import iam_backends
    from moto.sts.models import sts_backends

    if request.method != "POST":
        return _json(400, {"error": "POST a JSON body"})
    body = json.loads(request.data or b"{}")
    account = body.get("Account") or DEFAULT_ACCOUNT_ID
    region = body.get("Region") or "us-east-1"
    service = body.get("Service", "")
    iam = iam_backends[account]["aws"]
    role = None
    for r in iam.roles.values():
        if r.arn == body.get("RoleArn") or r.name == body.get("RoleName"):
            role = r
    if body.get("InstanceProfileArn"):
        # What EC2 does for an instance launched with the profile: its (one) role.
        profile = next(
            (p for p in iam.instance_profiles.values() if p.arn == body["InstanceProfileArn"]),
            None,
        )
        if profile is None or not profile.roles:
            return _json(404, {"error": f"no role in instance profile {body['InstanceProfileArn']}"})
        role = profile.roles[0]
    if role is None:
        return _json(404, {"error": f"no role {body.get('RoleArn') or body.get('RoleName')}"})

    if not _trust_allows(iam, account, "aws", role.arn, service, service):
        _record(
            {
                "principal": service,
                "operation": "sts:AssumeRole",
                "action": "sts:AssumeRole",
                "resource": role.arn,
                "reason": f"the trust policy of {role.name} does not allow {service}",
            },
            denied=True,
        )
        return _json(403, {"error": f"the trust policy of {role.name} does not allow {service}"})
    session = sts_backends[account]["aws"].assume_role(
        region_name=region,
        role_session_name=body.get("RoleSessionName") or service.split(".")[0],
        role_arn=role.arn,
        policy=None,
        duration=int(body.get("DurationSeconds") or 3600),
        external_id=None,
    )
    return _json(
        200,
        {
            "AccessKeyId": session.access_key_id,
            "SecretAccessKey": session.secret_access_key,
            "SessionToken": session.session_token,
            "Expiration": session.expiration.isoformat(),
            "Arn": session.arn,
        },
    )


def user_response(request: Any, full_url: str, headers: Any) -> tuple[int, dict, str]:
    """Creates (or completes) an IAM user whose only policy is the given inline policy, and
    returns a new access key of it: the test bed's principals, made before authentication is
    turned on. Body: {"UserName", "PolicyName", "PolicyDocument"}."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.iam.models import iam_backends

    if request.method != "POST":
        return _json(400, {"error": "POST a JSON body"})
    body = json.loads(request.data or b"{}")
    iam = iam_backends[body.get("Account") or DEFAULT_ACCOUNT_ID]["aws"]
    name = body["UserName"]
    if name not in iam.users:
        iam.create_user(region_name="us-east-1", user_name=name)
    user = iam.users[name]
    user.policies.clear()
    user.managed_policies.clear()
    iam.put_user_policy(name, body.get("PolicyName") or name, body["PolicyDocument"])
    key = iam.create_access_key(name)
    return _json(
        200,
        {
            "UserName": name,
            "Arn": user.arn,
            "AccessKeyId": key.access_key_id,
            "SecretAccessKey": key.secret_access_key,
        },
    )


def _register_endpoints() -> None:
    from moto.moto_api._internal import urls

    urls.url_paths.update(
        {
            "{0}/moto-api/iam-ext/denials": denials_response,
            "{0}/moto-api/iam-ext/decisions": decisions_response,
            "{0}/moto-api/iam-ext/reset": reset_response,
            "{0}/moto-api/iam-ext/assume-role-as-service": assume_role_as_service_response,
            "{0}/moto-api/iam-ext/user": user_response,
        }
    )


_register_endpoints()
