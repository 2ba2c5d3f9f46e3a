#!/usr/bin/env python3
"""An ecs-worker handler in Python: write a function, the worker does the queue.

Run by the worker once per message, as WORKER_HANDLER="python3 /app/handler.py":
- the message body arrives on stdin (here JSON-decoded before `handle` sees it);
- WORKER_MESSAGE_ID, WORKER_RECEIVE_COUNT and WORKER_MESSAGE_ATTRIBUTES (a JSON object) are in
  the environment;
- returning normally means done (the worker deletes the message); raising, or exiting non-zero,
  means failed (the message comes back later and, after the queue's maxReceiveCount, goes to the
  dead-letter queue).

Everything printed goes to the task's log.
"""

import json
import os
import sys


def handle(job, message_id, receive_count, attributes):
    """Replace with your own work. `job` is the decoded message body."""
    print(f"message {message_id} (receive {receive_count}): {job!r}", flush=True)
    if isinstance(job, dict) and job.get("fail"):
        raise ValueError("asked to fail")


def main():
    body = sys.stdin.read()
    try:
        job = json.loads(body)
    except json.JSONDecodeError as e:
        # A body that is not JSON will never succeed: fail it so it reaches the dead-letter queue.
        print(f"message body is not JSON: {e}", file=sys.stderr)
        return 2
    handle(
        job,
        message_id=os.environ.get("WORKER_MESSAGE_ID", ""),
        receive_count=int(os.environ.get("WORKER_RECEIVE_COUNT", "1")),
        attributes=json.loads(os.environ.get("WORKER_MESSAGE_ATTRIBUTES", "{}")),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
