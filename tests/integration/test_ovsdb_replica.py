"""The agent's in-memory replica of the OVS database (hostagent/ovsdb.py) holds what
`ovs-vsctl` reads (hostagent/ovs.py), bridge membership included, through ports added,
moved and removed: against a real ovsdb-server of its own (no ovs-vswitchd: nothing is
numbered, which neither side needs here)."""

from __future__ import annotations

import subprocess
import threading
import time

import pytest

from hostagent.ovs import Ovs
from hostagent.ovsdb import OvsdbReplica

pytestmark = [pytest.mark.integration]


@pytest.fixture
def ovsdb(tmp_path):
    db, sock = tmp_path / "conf.db", tmp_path / "db.sock"
    subprocess.run(["ovsdb-tool", "create", str(db),
                    "/usr/share/openvswitch/vswitch.ovsschema"], check=True)
    server = subprocess.Popen(["ovsdb-server", str(db), f"--remote=punix:{sock}",
                               f"--unixctl={tmp_path / 'ctl'}", "--no-chdir"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert time.monotonic() < deadline, "ovsdb-server did not start"
            time.sleep(0.02)
        ovs = Ovs(db=f"unix:{sock}")
        ovs.vsctl([["init"]], wait=False)
        yield ovs
    finally:
        server.terminate()
        server.wait(10)


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
