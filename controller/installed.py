"""Up to which store revision each host's switches are programmed, across controllers.

With mastership on (docs/ha.md) only a host's OpenFlow master programs its bridges. A
connect made through another controller gets `not master` from its own programmer for
that host; it must still not return before the master has installed the new port's flows
there. So every master publishes, per host it masters, the store revision its switches
are known to reflect:

    <ha prefix>programmed/<host>   value = revision (decimal), bound to the master's lease

A master records a host after a job that recomputed the host in full (every pod), started
when its store was at revision R, came back `ok` on both bridges: the job read the store
at R or later, so everything committed up to R is on the switches (`track`, from the
mastership loop; the puts go out in the background, several hosts in one transaction).
The key goes with the master's lease; a new master overwrites it after its reconcile.

A connect waits (`wait`) until the key of every host whose master is another controller
says at least the revision at which the connect saw its port wired. The waiting side
polls the keys (one range of the prefix at most every POLL seconds, shared by every
waiting connect; none while nobody waits).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from controller.etcd import EtcdClient, Put, StoreError
from controller.programmer import OK, Future

LOG = logging.getLogger("loris.ha")
POLL = 0.05                 # seconds between two reads of the marks while connects wait


class InstalledMarks:
    def __init__(self, client: EtcdClient, prefix: str, lease: Callable[[], int | None],
                 flow_timeout: float) -> None:
        self.client = client
        self.prefix = prefix + "programmed/"
        self.lease = lease
        self.flow_timeout = flow_timeout
        self._jobs: list[tuple[str, int, Future]] = []
        self._queued = threading.Condition()     # green under the hub, unlike queue
        self._published: dict[str, int] = {}       # master side: what we put, with
        self._published_lease: int | None = None   # this lease (a new one: put again)
        self._marks: dict[str, int] = {}           # waiting side: what we last read
        self._poll_lock = threading.Lock()
        self._polls = 0
        self._polled_at = 0.0

    # ---- the master's side ---------------------------------------------------------------
    def track(self, host: str, revision: int, job: Future) -> None:
        """`job` recomputes `host` in full, from the store at `revision` or later."""
        with self._queued:
            self._jobs.append((host, revision, job))
            self._queued.notify()

    def publish_forever(self) -> None:
        while True:
            self.publish_pending(wait=True)

    def publish_pending(self, wait: bool = False) -> None:
        """Publish what the tracked jobs achieved (all queued at once); with `wait`, wait
        for at least one first."""
        with self._queued:
            if wait:
                self._queued.wait_for(lambda: self._jobs)
            batch, self._jobs = self._jobs, []
        try:
            self._publish(batch)
        except Exception:
            LOG.exception("publishing the programmed revisions")

    def _publish(self, batch: list[tuple[str, int, Future]]) -> None:
        done: dict[str, int] = {}
        for host, revision, job in batch:
            try:
                result = job.wait(3 * self.flow_timeout)
            except Exception:           # the programmer logged it; no mark
                continue
            if result and all(status == OK for status in result.values()):
                done[host] = max(done.get(host, 0), revision)
        lease = self.lease()
        if lease != self._published_lease:
            self._published, self._published_lease = {}, lease
        news = {h: r for h, r in done.items() if r > self._published.get(h, 0)}
        if not news or lease is None:
            return
        try:
            self.client.txn([], [Put(self.prefix + h, str(r), lease)
                                 for h, r in sorted(news.items())])
        except StoreError as e:
            LOG.warning("publishing the programmed revisions of %s: %s", ", ".join(news), e)
            return
        self._published.update(news)

    def forget(self, host: str) -> None:
        """We no longer master `host` (a later mastership starts from nothing)."""
        self._published.pop(host, None)

    # ---- the waiting side ----------------------------------------------------------------
    def wait(self, hosts: Iterable[str], revision: int, timeout: float) -> set[str]:
        """Wait until every host's mark is at least `revision`; the hosts still short of
        it after `timeout` seconds."""
        hosts = set(hosts)
        deadline = time.monotonic() + timeout
        while True:
            polls = self._polls
            missing = {h for h in hosts if self._marks.get(h, 0) < revision}
            if not missing or time.monotonic() >= deadline:
                return missing
            self._refresh(polls)

    def _refresh(self, seen: int) -> None:
        """Read the marks again, unless another waiter did since `seen`; at most one read
        every POLL seconds."""
        with self._poll_lock:
            if self._polls != seen:
                return
            pause = self._polled_at + POLL - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            try:
                kvs = self.client.range(self.prefix, prefix=True).kvs
                self._marks = {kv.key[len(self.prefix):]: _revision(kv) for kv in kvs}
            except StoreError as e:
                LOG.debug("reading the programmed revisions: %s", e)
            self._polled_at = time.monotonic()
            self._polls += 1

    def view(self) -> dict[str, int]:
        return dict(self._marks)


def store_revision(store: Any) -> int | None:
    """The revision of the last write of the store on etcd this controller holds (the
    mod_revision of its meta/commit: writes outside the store, such as the registry's and
    these marks, do not move it); None for SQLite."""
    mirror = getattr(store, "mirror", None)
    return None if mirror is None else mirror.meta_rev


def _revision(kv: Any) -> int:
    try:
        return int(kv.text)
    except ValueError:
        return 0
