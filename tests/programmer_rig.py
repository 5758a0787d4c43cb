"""The controller's programming path for real (SQLite store, `Switches`, `Programmer`) over
fake bridges (tests/fakeswitch.py), with the app's switch event handlers wired as
loris_app.py and the service wire them. No socket, no os-ken event loop, no agent.

Import as `from programmer_rig import Rig` (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import ipaddress
import itertools
import queue
import threading
from collections.abc import Callable, Iterable
from typing import Any

from fakeswitch import FakeDatapath, FakeSwitch, Key, expected

from controller import topology
from controller.programmer import Programmer
from controller.store import Store
from controller.switches import Switches
from flows import BRIDGES, flatten, host_flows


class Idle(Exception):
    """A step-driven worker found its queue empty: control goes back to the test."""


class StepQueue(queue.Queue):
    """A worker queue whose blocking get returns to the test instead of waiting."""

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        try:
            return super().get(block=False)
        except queue.Empty:
            if block:
                raise Idle from None
            raise


class Rig:
    """The real store (SQLite in memory), `Switches` and `Programmer` over fake bridges,
    with the app's switch event handlers as loris_app.py and the service wire them.

    threaded=False: each worker runs only inside `run()`, and the bridges answer inline:
    one thread, deterministic. threaded=True: worker threads as the controller has, and a
    hub thread that delivers every switch event (replies, errors, connects, disconnects)
    as os-ken's would."""

    def __init__(self, timeout: float = 0.5, threaded: bool = False) -> None:
        self.store = Store(":memory:")
        self.switches = Switches(timeout)
        self.threaded = threaded
        self.bridges: dict[int, FakeSwitch] = {}
        self.owner: dict[int, tuple[str, str]] = {}
        self._workers: list[tuple[Callable, str, StepQueue]] = []
        self._port_numbers = itertools.count(1)       # at most 250 ports a rig
        if threaded:
            self._hub: queue.Queue = queue.Queue()
            threading.Thread(target=self._hub_loop, daemon=True).start()
            self.programmer = Programmer(self.store, self.switches, _thread, queue.Queue,
                                         queue.Empty)
        else:
            self.programmer = Programmer(self.store, self.switches, self._record, StepQueue,
                                         queue.Empty)

    # ---- the hub: os-ken's event loop and the app's handlers -------------------------------
    def _record(self, fn: Callable, host_id: str, q: StepQueue) -> None:
        self._workers.append((fn, host_id, q))

    def _hub_loop(self) -> None:
        while True:
            fn, args = self._hub.get()
            try:
                fn(*args)
            finally:
                self._hub.task_done()

    def on_hub(self, fn: Callable, *args: Any) -> None:
        if self.threaded:
            self._hub.put((fn, args))
        else:
            fn(*args)

    def _deliver(self, kind: str, msg: Any) -> None:
        self.on_hub(self.switches.reply if kind == "reply" else self.switches.error, msg)

    def _connected(self, dp: FakeDatapath) -> None:
        self.switches.connected(dp)
        host_id, _bridge = self.owner[dp.id]
        self.programmer.submit(host_id, None)        # as controller/switch_events.py does

    def _disconnected(self, dp: FakeDatapath) -> None:
        if self.switches.disconnected(dp):
            self.programmer.forget(dp.id)

    # ---- bridges ------------------------------------------------------------------------------
    def connect(self, dpid: int, keep_flows: bool = True) -> None:
        old = self.bridges[dpid].drop()
        if old is not None:
            self.on_hub(self._disconnected, old)
        self.on_hub(self._connected, self.bridges[dpid].connect(keep_flows))

    def disconnect(self, dpid: int) -> None:
        old = self.bridges[dpid].drop()
        if old is not None:
            self.on_hub(self._disconnected, old)

    def run(self) -> None:
        """Step-driven: run the workers until every queue is empty."""
        assert not self.threaded
        busy = True
        while busy:
            busy = False
            for fn, host_id, q in list(self._workers):
                if not q.empty():
                    busy = True
                    try:
                        fn(host_id, q)
                    except Idle:
                        pass

    def settle(self, hosts: Iterable[str], timeout: float = 30.0) -> None:
        """Threaded: wait until the hub is quiet and a job for every host went through."""
        assert self.threaded
        while True:
            self._hub.join()
            for future in [self.programmer.submit(h, []) for h in hosts]:
                future.wait(timeout)
            if self._hub.unfinished_tasks == 0:
                return

    # ---- the store ----------------------------------------------------------------------------
    def add_hosts(self, count: int) -> list[str]:
        """`count` hosts with tunnels to each other, their bridges connected."""
        hosts = [f"h{n}" for n in range(1, count + 1)]
        with self.store.tx() as tx:
            for n, h in enumerate(hosts, start=1):
                tx.insert_host(h, f"198.18.0.{10 + n}", "vxlan", 0x100 + n, 0x200 + n)
                tx.set_patch(h, 1, 1)
            for h in hosts:
                tx.set_tunnels(h, {p: 2 + j for j, p in enumerate(x for x in hosts if x != h)})
            for h in hosts:
                row = tx.host(h)
                for bridge in BRIDGES:
                    self.owner[row.dpid(bridge)] = (h, bridge)
                    self.bridges[row.dpid(bridge)] = FakeSwitch(row.dpid(bridge), self._deliver)
        for dpid in list(self.bridges):
            self.connect(dpid, keep_flows=False)
        return hosts

    def add_port(self, host_id: str, pod_id: int, ofport: int, dhcp: bool = False) -> int:
        with self.store.tx() as tx:
            if tx.pod(pod_id) is None:
                tx.insert_pod(pod_id, None, f"198.18.{pod_id}.0/24")
            tx.ensure_local_vlan(host_id, pod_id)
            n = next(self._port_numbers)
            port = tx.insert_port(host_id, f"c{n}", pod_id, f"02:00:00:00:00:{n:02x}",
                                  ipaddress.IPv4Interface(f"198.18.{pod_id}.{n + 1}/24"), dhcp)
            tx.update_port(port.id, state="active", ofport=ofport)
        return port.id

    def remove_port(self, port_id: int) -> None:
        with self.store.tx() as tx:
            port = tx.port(port_id)
            tx.delete_port(port_id)
            tx.release_unused_vlans(port.host_id)

    def move_port(self, port_id: int, ofport: int) -> None:
        with self.store.tx() as tx:
            tx.update_port(port_id, ofport=ofport)

    def desired(self, dpid: int | None = None) -> Any:
        """The flows `dpid` should hold (every bridge's by dpid when None), from the whole
        store, as a fake table holds them."""
        with self.store.tx() as tx:
            topo, _ = topology.build(tx)
        out: dict[int, set[tuple[Key, int, bytes]]] = {}
        for d, (host_id, bridge) in self.owner.items():
            if d == dpid or (dpid is None and host_id in topo.hosts):
                out[d] = expected(flatten(host_flows(topo, host_id)).get(bridge, ()))
        return out if dpid is None else out[dpid]


def _thread(fn: Callable, *args: Any) -> None:
    threading.Thread(target=fn, args=args, daemon=True).start()
