"""The agent's in-memory replica of the OVS database (hostagent/ovsdb.py) holds what
`ovs-vsctl` reads (hostagent/ovs.py), bridge membership included, through ports added,
moved and removed, and through a restart of the database server with ports removed while
the replica was away: against a real ovsdb-server of its own (no ovs-vswitchd: nothing is
numbered, which neither side needs here)."""

from __future__ import annotations

import subprocess
import threading
import time

import pytest

from hostagent.ovs import Ovs
from hostagent.ovsdb import OvsdbReplica

pytestmark = [pytest.mark.integration]


class Server:
    """An ovsdb-server of the test's own, which can be restarted on the same database."""

    def __init__(self, tmp_path) -> None:
        self.db, self.sock, self.ctl = (tmp_path / "conf.db", tmp_path / "db.sock",
                                        tmp_path / "ctl")
        subprocess.run(["ovsdb-tool", "create", str(self.db),
                        "/usr/share/openvswitch/vswitch.ovsschema"], check=True)
        self.process: subprocess.Popen | None = None
        self.ovs = Ovs(db=f"unix:{self.sock}")

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["ovsdb-server", str(self.db), f"--remote=punix:{self.sock}",
             f"--unixctl={self.ctl}", "--no-chdir"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self.sock.exists():
            assert time.monotonic() < deadline, "ovsdb-server did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        deadline = time.monotonic() + 10
        while self.sock.exists():          # removed by ovsdb-server on its way out
            assert time.monotonic() < deadline, "ovsdb-server left its socket"
            time.sleep(0.02)


@pytest.fixture
def server(tmp_path):
    server = Server(tmp_path)
    server.start()
    try:
        server.ovs.vsctl([["init"]], wait=False)
        yield server
    finally:
        server.stop()


@pytest.fixture
def ovsdb(server):
    return server.ovs


def _same(replica: OvsdbReplica, ovs: Ovs) -> bool:
    want = ovs.snapshot()
    got = replica.snapshot()
    return (got.interfaces == want.interfaces
            and set(got.bridges) == set(want.bridges))


def test_the_replica_follows_ports_added_moved_and_removed(ovsdb):
    stop = threading.Event()
    replica = OvsdbReplica(ovsdb.db_target)
    replica.start(stop)
    try:
        ovsdb.vsctl([["add-br", "br-int"], ["add-br", "br-tun"]], wait=False)
        ovsdb.vsctl([c for i in range(1, 201) for c in (
            ["add-port", "br-int", f"lp{i}"],
            ["set", "Interface", f"lp{i}", f"external_ids:loris-port-id={i}"])], wait=False)
        assert replica.wait_until(lambda s: len(s.on_bridge("br-int")) == 201, 10)
        assert _same(replica, ovsdb)
        # a port moved to another bridge, others removed, one added
        ovsdb.vsctl([["del-port", "br-int", "lp7"], ["add-port", "br-tun", "lp7"],
                     ["del-port", "br-int", "lp8"], ["del-port", "br-int", "lp9"],
                     ["add-port", "br-int", "lp500"]], wait=False)
        assert replica.wait_until(lambda s: "lp500" in s.interfaces, 10)
        assert _same(replica, ovsdb)
        snap = replica.snapshot()
        assert snap.interfaces["lp7"].bridge == "br-tun"
        assert "lp8" not in snap.interfaces and snap.interfaces["lp500"].bridge == "br-int"
        assert len(snap.on_bridge("br-int")) == 199
        # through the replica's own transactions
        replica.del_ports("br-int", ["lp10", "lp11"])
        assert replica.wait_until(lambda s: "lp10" not in s.interfaces, 10)
        assert _same(replica, ovsdb)
    finally:
        stop.set()


def test_the_replica_forgets_ports_removed_while_it_was_away(server):
    """A restarted server has no history to send the changes since the replica's last copy:
    the replica takes the whole database again, and the ports removed meanwhile are never
    reported as deleted."""
    ovsdb, stop = server.ovs, threading.Event()
    replica = OvsdbReplica(ovsdb.db_target)
    replica.start(stop)
    try:
        ovsdb.vsctl([["add-br", "br-int"]] + [["add-port", "br-int", f"lp{i}"]
                                              for i in range(1, 21)], wait=False)
        assert replica.wait_until(lambda s: len(s.on_bridge("br-int")) == 21, 10)
        with replica._cond:       # the replica's thread cannot look while this happens
            server.stop()
            server.start()
            ovsdb.vsctl([["del-port", "br-int", f"lp{i}"] for i in range(1, 11)]
                        + [["add-port", "br-int", "lp99"]], wait=False)
        assert replica.wait_until(lambda s: "lp99" in s.interfaces, 30)
        assert _same(replica, ovsdb)
        assert "lp1" not in replica.snapshot().interfaces
        assert len(replica.snapshot().on_bridge("br-int")) == 12
    finally:
        stop.set()
