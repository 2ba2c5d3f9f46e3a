#!/usr/bin/env python3
"""A long-lived ecs-worker handler over HTTP, standard library only.

Run with WORKER_HANDLER_MODE=http and WORKER_HANDLER="python3 /app/http_handler.py": the worker
starts this server once, waits until GET /healthz answers 200 (set
WORKER_HANDLER_READY_PATH=/healthz), then POSTs each message to it, the way the Elastic
Beanstalk worker daemon does:
- the body is the message body, exactly as sent;
- X-Aws-Sqsd-Msgid, X-Aws-Sqsd-Receive-Count, X-Aws-Sqsd-Queue, X-Aws-Sqsd-First-Received-At,
  X-Aws-Sqsd-Attr-<name> (one per message attribute, name in lower case) and, with a handler
  timeout, X-Ecs-Worker-Deadline;
- answering 2xx means done (the message is deleted); anything else means failed (retried, then
  dead-lettered).

The expensive part (here a sleep standing in for loading a model) runs once, at start, not per
message. The server listens where WORKER_HANDLER_URL points (default http://127.0.0.1:8080/).
Logs go to stderr, which is the task's log.
"""

import json
import os
import sys
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ATTR_PREFIX = "x-aws-sqsd-attr-"


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


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one connection serves many messages

    def do_GET(self):
        if self.path == "/healthz":
            self.answer(200, "ready")
        else:
            self.answer(404, "not found")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        attributes = {
            name[len(ATTR_PREFIX):]: value
            for name, value in self.headers.items()
            if name.lower().startswith(ATTR_PREFIX)
        }
        try:
            job = json.loads(body)
        except json.JSONDecodeError as e:
            # A body that is not JSON will never succeed: fail it so it reaches the dead-letter
            # queue.
            self.answer(400, f"message body is not JSON: {e}")
            return
        try:
            handle(
                job,
                message_id=self.headers.get("X-Aws-Sqsd-Msgid", ""),
                receive_count=int(self.headers.get("X-Aws-Sqsd-Receive-Count", "1")),
                attributes=attributes,
            )
        except Exception as e:  # noqa: BLE001 - any failure fails the message
            self.answer(500, f"{type(e).__name__}: {e}")
            return
        self.answer(200, "done")

    def answer(self, status, text):
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass  # one line per request would double the worker's own per-message log


def main():
    url = urllib.parse.urlsplit(os.environ.get("WORKER_HANDLER_URL", "http://127.0.0.1:8080/"))
    server = ThreadingHTTPServer((url.hostname or "127.0.0.1", url.port or 80), Handler)
    print(f"listening on {url.hostname}:{url.port}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
