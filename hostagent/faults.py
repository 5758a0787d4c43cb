"""Fault injection for the crash tests (docs/operations.md, "Failures").

With LORIS_AGENT_PAUSE_AT=<step>[:<seconds>] in its environment, the agent sleeps that long
(default 60 s) when wiring a port reaches `step`, so that a test can kill it right there.
Steps, in the order wiring passes them:

- `container_named`: the veth exists, its container end has its name, MAC and MTU, but not
  yet its address, link state or offload setting;
- `veth_created`: the veth is complete on both ends, not on OVS yet;
- `ovs_attached`: on br-int with its ofport, not reported to the controller yet.
"""

from __future__ import annotations

import logging
import os
import time

PAUSE_ENV = "LORIS_AGENT_PAUSE_AT"

log = logging.getLogger(__name__)


def pause_point(step: str) -> None:
    want, _, seconds = os.environ.get(PAUSE_ENV, "").partition(":")
    if want == step:
        log.warning("pausing %s s at step %s (%s)", seconds or 60, step, PAUSE_ENV)
        time.sleep(float(seconds or 60))
