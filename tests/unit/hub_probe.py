"""Run by test_concurrency.py in a child process: the controller's concurrency rules under
eventlet's hub, which the test process itself must not monkey-patch. Prints one JSON line.

    python hub_probe.py green-check patched|thread-unpatched|real-event
    python hub_probe.py slow-commit DIR
"""

from __future__ import annotations

import json
import sys


def green_check(mode: str) -> dict:
    import eventlet

    eventlet.monkey_patch(thread=mode != "thread-unpatched")   # osken-manager --enable-debugger
    if mode == "real-event":        # a primitive taken from the real threading module
        import threading

        threading.Event = eventlet.patcher.original("threading").Event
    from controller import concurrency

    return {"problem": concurrency.green_threads_problem("eventlet")}


def slow_commit(directory: str) -> dict:
    """A POST whose COMMIT takes a second (slept in the real thread that runs it) and a
    health request sent while it commits: in which order do they finish?"""
    import eventlet

    eventlet.monkey_patch()
    import urllib.request

    from os_ken.lib import hub

    from controller import concurrency, config, wiring
    from controller.api import make_server
    from controller.store import Store

    real_sleep = eventlet.patcher.original("time").sleep
    order: list[str] = []
    armed = [False]

    def slow_commits(fn, *args):
        def slow():
            if not (armed[0] and args == ("COMMIT",)):
                return fn(*args)
            order.append("commit starts")
            real_sleep(1.0)
            result = fn(*args)
            order.append("commit ends")
            return result
        return concurrency.run_blocking(slow)

    db = f"{directory}/loris.db"
    store = Store(db, run_blocking=slow_commits)
    parts = wiring.build(config.load(env={}, db=db), hub.spawn, hub.Queue, hub.QueueEmpty,
                         store=store)
    server = make_server(parts.api, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.server.getsockname()[1]}"
    hub.spawn(server.serve_forever)
    armed[0] = True

    def create_pod() -> None:
        req = urllib.request.Request(f"{base}/v1/pods", data=b'{"id": 5}', method="POST",
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=30).read()
        order.append("pod created")

    writer = eventlet.spawn(create_pod)
    while "commit starts" not in order:
        eventlet.sleep(0.01)
    health = json.loads(urllib.request.urlopen(f"{base}/v1/health", timeout=30).read())
    order.append(f"health {health['status']}")
    writer.wait()
    return {"order": order}


if __name__ == "__main__":
    what, arg = sys.argv[1], sys.argv[2]
    result = green_check(arg) if what == "green-check" else slow_commit(arg)
    print(json.dumps(result))
