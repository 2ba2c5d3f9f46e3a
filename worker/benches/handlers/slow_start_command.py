#!/usr/bin/env python3
"""Command-mode handler for the start-up benchmark: like the examples' HTTP and stdio handlers it
loads a "model" (a sleep of MODEL_LOAD_SECONDS, default 2) when it starts, but command mode
starts it once per message, so every message pays the load. Reads the body, succeeds."""

import os
import sys
import time

time.sleep(float(os.environ.get("MODEL_LOAD_SECONDS", "2")))
sys.stdin.read()
