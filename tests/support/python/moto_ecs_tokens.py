"""ECS RunTask clientToken honoured as AWS does (test-only; imported by moto_ext.py).

https://docs.aws.amazon.com/AmazonECS/latest/APIReference/ECS_Idempotency.html:
- Tokens are scoped to the cluster: the same token in another cluster is another request.
- A retry with the same token and the same parameters "returns the result of the original
  request" and starts nothing. Here that result is the first call's tasks (as they are now,
  like a DescribeTasks of them) and its failures.
- The same token with any other parameter changed (the Region and Availability Zone aside)
  fails with ConflictException, whose resourceIds are the task ARNs the token already started
  (https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_ConflictException.html).
- AWS keeps a token for up to 24 hours; this server keeps it for its own life (a test is
  shorter) or until `/moto-api/reset`, which recreates the ECS backend that holds the tokens.
Only successful calls are remembered, as only a completed request has a result to return.
A RunTask without a token is never deduplicated (the AWS SDKs fill one in; tests may not).
"""

from __future__ import annotations

import json
import threading

from moto.core.exceptions import ServiceException
from moto.core.responses import ActionResult
from moto.ecs.responses import EC2ContainerServiceResponse

_run_task = EC2ContainerServiceResponse.run_task
_lock = threading.Lock()


class ConflictException(ServiceException):
    code = "ConflictException"
    # moto looks an exception's error shape up by the service its module is named after.
    __module__ = "moto.ecs.exceptions"

    def __init__(self, message: str, resource_ids: list[str]):
        super().__init__(message)
        self.resourceIds = resource_ids


def _tokens(backend) -> dict:
    # Kept on the backend so that a reset, which rebuilds backends, forgets them.
    if not hasattr(backend, "_run_task_client_tokens"):
        backend._run_task_client_tokens = {}
    return backend._run_task_client_tokens


def _fingerprint(params: dict) -> str:
    """Every parameter but the token itself, canonical."""
    rest = {k: v for k, v in params.items() if k != "clientToken"}
    return json.dumps(rest, sort_keys=True, default=str)


def run_task_with_client_token(self):
    token = self._get_param("clientToken")
    if not token:
        return _run_task(self)
    backend = self.ecs_backend
    cluster = backend._get_cluster(self._get_param("cluster", "default"))
    key = (cluster.name, token)
    fingerprint = _fingerprint(self.params)
    with _lock:
        seen = _tokens(backend).get(key)
        if seen is not None:
            first_fingerprint, tasks, failures = seen
            arns = [t.task_arn for t in tasks]
            if first_fingerprint != fingerprint:
                raise ConflictException(
                    "The specified client token is already in use with a different RunTask "
                    "request. Run RunTask with a unique clientToken, or with the clientToken "
                    "and the original set of parameters.",
                    arns,
                )
            return ActionResult({"tasks": tasks, "failures": failures})
        result = _run_task(self)
        if isinstance(result, ActionResult):
            body = result.result or {}
            _tokens(backend)[key] = (
                fingerprint,
                list(body.get("tasks", [])),
                list(body.get("failures", [])),
            )
        return result


EC2ContainerServiceResponse.run_task = run_task_with_client_token
