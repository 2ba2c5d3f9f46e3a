"""Static check of IAM policy documents, where evaluating requests cannot judge them.

Run with the project venv (parliament is pinned in hack/moto-requirements.txt):
    python policy_check.py < policies.json
stdin: a JSON list of {"name", "kind": "identity" | "trust", "document": {...}}.
stdout: a JSON list of findings {"policy", "issue", "error", "detail", "location"}.

parliament (Duo Labs) checks each statement against the Service Authorization Reference it ships
(the data AWS publishes per action: resource types with their ARN formats, condition keys):
unknown services and actions, a condition key that does not apply to an action
(UNKNOWN_CONDITION_FOR_ACTION), unknown operators, operator/key type mismatches, malformed
ARNs, a resource that matches none of an action's resource types (RESOURCE_MISMATCH).
https://github.com/duo-labs/parliament

On top of it:
- RESOURCE_MISMATCH is judged per policy, not per statement: AWS checks each resource of a call
  on its own, so a policy may allow an action's resource types in separate statements (with
  different conditions); a required type is missing only when no Allow statement of the policy
  with that action names it.
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html
- TAG_KEY_NOT_FOR_ACTION: parliament treats every `aws:` key as global, but aws:RequestTag/*,
  aws:TagKeys and aws:ResourceTag/* are only in the request context of the actions (or their
  resource types) the reference lists them for; elsewhere such a condition never holds (or, for
  a negated operator, always holds).
  https://docs.aws.amazon.com/IAM/latest/UserGuide/access_tags.html
- MULTIVALUED_KEY_WITHOUT_SET_OPERATOR: aws:TagKeys is multivalued and needs ForAllValues: or
  ForAnyValue:.
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-single-vs-multi-valued-context-keys.html
- Trust policies (kind "trust", resource-based, no Resource element): the statement must allow
  sts:AssumeRole (or the other sts:AssumeRole* / sts:TagSession / sts:SetSourceIdentity
  actions) to principals of a known shape, and its actions and condition keys are checked as
  above.
- `--check-map`: every action moto_iam.py evaluates exists in the reference (a misspelt action
  in the emulator would never match a policy).

RESOURCE_STAR and the other parliament findings of lesser concern are reported as warnings.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import parliament
from parliament import analyze_policy_string, expand_action, is_arn_match

ERRORS = {
    "EXCEPTION",
    "MALFORMED_JSON",
    "MALFORMED",
    "DUPLICATE_SID",
    "UNKNOWN_PRINCIPAL",
    "UNKNOWN_FEDERATION_SOURCE",
    "MISMATCHED_TYPE_OPERATION_TO_NULL",
    "MISMATCHED_TYPE",
    "UNKNOWN_ACTION",
    "UNKNOWN_PREFIX",
    "UNKNOWN_CONDITION_FOR_ACTION",
    "INVALID_SID",
    "INVALID_ARN",
    "NO_VERSION",
    "INVALID_VERSION",
    "OLD_VERSION",
    "RESOURCE_MISMATCH",
    "UNKNOWN_OPERATOR",
    "TAG_KEY_NOT_FOR_ACTION",
    "MULTIVALUED_KEY_WITHOUT_SET_OPERATOR",
    "TRUST_POLICY",
}

TRUST_ACTIONS = {
    "sts:assumerole",
    "sts:assumerolewithwebidentity",
    "sts:assumerolewithsaml",
    "sts:tagsession",
    "sts:setsourceidentity",
}


def _as_list(v: Any) -> list[Any]:
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


def _privilege(action: str) -> dict | None:
    prefix, _, name = action.partition(":")
    for service in parliament.iam_definition:
        if service["prefix"] == prefix.lower():
            for p in service["privileges"]:
                if p["privilege"].lower() == name.lower():
                    return p
    return None


def _resource_formats(action: str) -> dict[str, str]:
    """resource type (without the trailing '*') -> ARN format, for one action."""
    prefix = action.split(":")[0].lower()
    service = next((s for s in parliament.iam_definition if s["prefix"] == prefix), None)
    if service is None:
        return {}
    formats = {r["resource"]: r["arn"] for r in service["resources"]}
    out = {}
    for rt in (_privilege(action) or {}).get("resource_types", []):
        name = rt["resource_type"].rstrip("*")
        if name in formats:
            out[name] = formats[name]
    return out


def _condition_keys(action: str, with_resource_types: bool) -> set[str]:
    """Condition keys the reference lists for an action (lower case): those of the action's own
    rows and, with `with_resource_types`, those of the resource types it acts on."""
    keys: set[str] = set()
    prefix = action.split(":")[0].lower()
    service = next((s for s in parliament.iam_definition if s["prefix"] == prefix), None)
    resources = {r["resource"]: r for r in (service or {}).get("resources", [])}
    for rt in (_privilege(action) or {}).get("resource_types", []):
        keys.update(k.lower() for k in rt.get("condition_keys", []))
        res = resources.get(rt["resource_type"].rstrip("*"))
        if res and with_resource_types:
            keys.update(k.lower() for k in res.get("condition_keys", []))
    return keys


def _expand(actions: list[str]) -> list[str]:
    out = []
    for a in actions:
        try:
            for e in expand_action(a, raise_exceptions=True):
                out.append(f"{e['service']}:{e['action']}")
        except Exception:  # noqa: BLE001 - parliament reports unknown actions itself
            pass
    return out


def _finding(policy: str, issue: str, detail: Any, location: Any = None) -> dict:
    return {
        "policy": policy,
        "issue": issue,
        "error": issue in ERRORS,
        "detail": detail,
        "location": location,
    }


def _tag_key_findings(name: str, doc: dict) -> list[dict]:
    out = []
    for i, st in enumerate(_as_list(doc.get("Statement"))):
        actions = _expand(_as_list(st.get("Action")))
        for op, block in (st.get("Condition") or {}).items():
            for key in block:
                k = key.lower()
                is_tag = (
                    k.startswith("aws:requesttag/")
                    or k.startswith("aws:resourcetag/")
                    or k == "aws:tagkeys"
                )
                if not is_tag:
                    continue
                if k == "aws:tagkeys" and not op.startswith(("ForAllValues:", "ForAnyValue:")):
                    out.append(
                        _finding(
                            name,
                            "MULTIVALUED_KEY_WITHOUT_SET_OPERATOR",
                            f"statement {st.get('Sid') or i}: {op} on aws:TagKeys",
                        )
                    )
                generic = (
                    "aws:resourcetag/${tagkey}"
                    if k.startswith("aws:resourcetag/")
                    else "aws:requesttag/${tagkey}"
                    if k.startswith("aws:requesttag/")
                    else "aws:tagkeys"
                )
                # A resource type's table lists the request-tag keys of every action creating
                # one; only the action's own rows say whether this action carries them.
                resource_key = generic.startswith("aws:resourcetag/")
                for action in actions:
                    if generic not in _condition_keys(action, with_resource_types=resource_key):
                        out.append(
                            _finding(
                                name,
                                "TAG_KEY_NOT_FOR_ACTION",
                                f"statement {st.get('Sid') or i}: {key} is never in the "
                                f"request context of {action}",
                            )
                        )
    return out


def _covered(doc: dict, action: str, arn_format: str, resource_type: str) -> bool:
    """Whether some Allow statement of the policy allows `action` on a resource of this type."""
    for st in _as_list(doc.get("Statement")):
        if st.get("Effect") != "Allow":
            continue
        if action.lower() not in {a.lower() for a in _expand(_as_list(st.get("Action")))}:
            continue
        for resource in _as_list(st.get("Resource")):
            try:
                if is_arn_match(resource_type, arn_format, resource):
                    return True
            except Exception:  # noqa: BLE001 - malformed ARNs are reported by parliament
                continue
    return False


def check(name: str, kind: str, doc: dict) -> list[dict]:
    out: list[dict] = []
    analyzed = doc
    if kind == "trust":
        analyzed = json.loads(json.dumps(doc))
        for i, st in enumerate(_as_list(analyzed.get("Statement"))):
            principal = st.pop("Principal", None)
            if "Resource" in st or "NotResource" in st:
                out.append(_finding(name, "TRUST_POLICY", f"statement {i}: a trust policy names no Resource"))
            if not isinstance(principal, dict) or not principal:
                out.append(_finding(name, "TRUST_POLICY", f"statement {i}: no Principal"))
            else:
                for k, values in principal.items():
                    if k not in ("AWS", "Service", "Federated", "CanonicalUser"):
                        out.append(_finding(name, "TRUST_POLICY", f"statement {i}: principal kind {k}"))
                    if k == "Service":
                        for v in _as_list(values):
                            if not str(v).endswith(".amazonaws.com"):
                                out.append(
                                    _finding(name, "TRUST_POLICY", f"statement {i}: service principal {v}")
                                )
            for a in _as_list(st.get("Action")):
                if a.lower() not in TRUST_ACTIONS:
                    out.append(_finding(name, "TRUST_POLICY", f"statement {i}: action {a} in a trust policy"))
            st["Resource"] = "arn:aws:iam::*:role/*"
    policy = analyze_policy_string(json.dumps(analyzed), filepath=name)
    for f in policy.findings:
        if f.issue == "RESOURCE_MISMATCH":
            missing = [
                m
                for m in f.detail
                if not _covered(
                    analyzed,
                    m["action"],
                    m["required_format"],
                    next(
                        (
                            rt
                            for rt, fmt in _resource_formats(m["action"]).items()
                            if fmt.replace("${Partition}", "*") == m["required_format"]
                            or fmt == m["required_format"]
                        ),
                        "",
                    ),
                )
            ]
            if missing:
                out.append(_finding(name, f.issue, missing, f.location))
            continue
        out.append(_finding(name, f.issue, f.detail, f.location))
    out += _tag_key_findings(name, analyzed)
    return out


def check_map() -> list[dict]:
    """Every action moto_iam.py evaluates exists in the reference."""
    import os

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import moto_iam

    batch = {"SendMessageBatch", "DeleteMessageBatch", "ChangeMessageVisibilityBatch"}
    out = []
    for service, op in moto_iam.RESOLVERS:
        if op in batch:
            continue
        if _privilege(f"{service}:{op}") is None:
            out.append(
                _finding(
                    "moto_iam.py RESOLVERS",
                    "UNKNOWN_ACTION",
                    f"{service}:{op} is not an action of the Service Authorization Reference",
                )
            )
    return out


def main() -> None:
    findings: list[dict] = []
    if "--check-map" in sys.argv:
        findings += check_map()
    else:
        for entry in json.load(sys.stdin):
            findings += check(entry["name"], entry.get("kind", "identity"), entry["document"])
    json.dump(findings, sys.stdout, default=str)


if __name__ == "__main__":
    main()
