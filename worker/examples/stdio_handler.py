#!/usr/bin/env python3
"""A long-lived ecs-worker handler over stdin/stdout (JSON lines), standard library only.

Run with WORKER_HANDLER_MODE=stdio and WORKER_HANDLER="python3 /app/stdio_handler.py": the
worker starts this process once and writes one JSON line per message on its stdin:
    {"id": "...", "body": "...", "receiveCount": 1, "attributes": {...},
     "firstReceivedAt": "...", "deadline": "..."}
and reads one JSON line per message from its stdout:
    {"id": "...", "ok": true}    or    {"id": "...", "ok": false, "error": "why"}

stdout carries answers only: print logs to stderr (the task's log). A line on stdout that is not
an answer makes the worker fail the messages in flight (they are retried) and restart this
process. The expensive part (here a sleep standing in for loading a model) runs once, at start.
Messages are handled one at a time here; with WORKER_CONCURRENCY above 1 the worker may write
several before the first answer, and answers may come back in any order (use threads or
asyncio to handle them in parallel).
"""

import json
import os
import sys
import time


def load_model():
    """Stands in for loading weights, opening a database pool, importing torch, ..."""
    time.sleep(float(os.environ.get("MODEL_LOAD_SECONDS", "2")))
    print("model loaded", file=sys.stderr, flush=True)
    return {"loaded_at": time.time()}


MODEL = load_model()


def handle(job, message_id, receive_count, attributes):
    """Replace with your own work. `job` is the decoded message body."""
    print(f"message {message_id} (receive {receive_count}): {job!r}", file=sys.stderr, flush=True)
    if isinstance(job, dict) and job.get("fail"):
        raise ValueError("asked to fail")


def answer(message_id, error=None):
    reply = {"id": message_id, "ok": error is None}
    if error is not None:
        reply["error"] = error
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()


def main():
    while True:
        line = sys.stdin.readline()
        if not line:
            return  # the worker closed stdin: stop
        message = json.loads(line)
        try:
            job = json.loads(message["body"])
            handle(job, message["id"], message["receiveCount"], message["attributes"])
        except Exception as e:  # noqa: BLE001 - any failure fails the message
            answer(message["id"], f"{type(e).__name__}: {e}")
        else:
            answer(message["id"])


if __name__ == "__main__":
    main()
