"""Run by test_etcd_client.py inside the lab's control namespace: the etcd client under
eventlet's hub, as the controller runs it (everything monkey-patched, a watch in its own
green thread). Prints one JSON line.

    python etcd_eventlet_probe.py ENDPOINT[,ENDPOINT...] PREFIX
"""

from __future__ import annotations

import json
import sys
import time


def main(endpoints: list[str], prefix: str) -> dict:
    import eventlet

    eventlet.monkey_patch()
    from controller.concurrency import green_threads_problem
    from controller.etcd import EtcdClient

    client = EtcdClient(endpoints, timeout=5)
    start = client.list_prefix(prefix).revision + 1
    watcher = client.watch(prefix, prefix=True, start_revision=start, idle_timeout=5)
    seen: list[str] = []
    done = eventlet.event.Event()
    writers, per_writer = 4, 25

    def watch() -> None:
        for batch in watcher:
            seen.extend(e.kv.value.decode() for e in batch.events)
            if len(seen) >= writers * per_writer and not done.ready():
                done.send()

    gaps: list[float] = []
    ticking = [True]

    def ticker() -> None:                 # a hub blocked by the client would stall this
        last = time.monotonic()
        while ticking[0]:
            eventlet.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    def write(w: int) -> None:
        for i in range(per_writer):
            client.put(f"{prefix}{w}/{i}", f"{w}/{i}")

    pool = [eventlet.spawn(watch), eventlet.spawn(ticker)]
    writes = [eventlet.spawn(write, w) for w in range(writers)]
    for g in writes:
        g.wait()
    with eventlet.Timeout(20, False):
        done.wait()
    # A second watch on a quiet prefix blocks in its read; cancel it from another green
    # thread and see how long the first takes to notice.
    quiet = client.watch(prefix + "quiet/", prefix=True, idle_timeout=30)
    ended = eventlet.event.Event()

    def wait_quiet() -> None:
        for _ in quiet:
            pass
        ended.send(time.monotonic())

    eventlet.spawn(wait_quiet)
    eventlet.sleep(0.5)
    asked = time.monotonic()
    quiet.cancel()
    watcher.cancel()
    stopped = None
    with eventlet.Timeout(10, False):
        stopped = ended.wait()
    ticking[0] = False
    for g in pool:
        g.wait()
    return {"green": green_threads_problem("eventlet") is None, "seen": seen,
            "max_gap": max(gaps) if gaps else None,
            "cancel_seconds": (stopped - asked) if isinstance(stopped, float) else None}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1].split(","), sys.argv[2])))
