"""Work-arounds for known defects of the libraries the bus is built on, applied on import.

FastStream 0.7.8's batch pull loop catches ``nats.errors.TimeoutError`` around ``fetch``, but
nats-py 2.16 raises a plain ``asyncio.TimeoutError`` when a partial fetch runs out of time.
That escapes the loop, FastStream's supervisor restarts the task and the consumer can stall
for good. Catching the builtin ``TimeoutError`` (which both are) restores the intended loop.
"""

from __future__ import annotations

import builtins
import importlib


def _pull_loop_catches_every_timeout() -> None:
    module = importlib.import_module("faststream.nats.subscriber.usecases.stream_pull_subscriber")
    if getattr(module, "TimeoutError", builtins.TimeoutError) is not builtins.TimeoutError:
        module.TimeoutError = builtins.TimeoutError  # type: ignore[attr-defined]


_pull_loop_catches_every_timeout()
