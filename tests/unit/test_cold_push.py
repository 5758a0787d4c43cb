"""The cold push (#12): a host's bridges that connect to a controller that never programmed
them get every flow computed once, even when the second bridge connects while the first is
being programmed; the computation runs with the garbage collector paused, and leaves it as
it found it."""

from __future__ import annotations

import gc
import logging
import re

from programmer_rig import Rig

from controller.desired import collector_paused
from flows import BRIDGES


def test_a_bridge_that_connects_while_the_other_is_programmed_gets_its_flows_at_once(caplog):
    rig = Rig()
    rig.add_hosts(2)
    for n in range(6):
        rig.add_port("h1" if n % 2 else "h2", 7, 10 + n)
    rig.run()
    dpid = {bridge: d for d, (host, bridge) in rig.owner.items() if host == "h1"}
    for bridge in BRIDGES:            # as after a restart: nothing known of the bridges
        rig.disconnect(dpid[bridge])
        rig.programmer.disown(dpid[bridge])
    rig.run()

    rig.bridges[dpid["br-tun"]].flow_stats_requests = 0
    # br-int connects; br-tun connects while br-int is being programmed (its first message)
    switch = rig.bridges[dpid["br-int"]]
    armed = [True]
    receive = switch.receive

    def receive_and_connect_the_other(conn, buf: bytes) -> bool:
        if armed:
            armed.clear()
            rig.connect(dpid["br-tun"], keep_flows=False)
        return receive(conn, buf)

    switch.receive = receive_and_connect_the_other
    with caplog.at_level(logging.INFO, logger="loris.programmer"):
        rig.connect(dpid["br-int"], keep_flows=False)
        rig.run()
    assert not armed
    tun = [(int(m.group(1)), int(m.group(2))) for m in re.finditer(
        r"reconciled br-tun of h1 \S+: (\d+) added, \d+ stale deleted, (\d+) kept", caplog.text)]
    want = rig.desired(dpid["br-tun"])
    # programmed by br-int's job (everything added); its own connect's job trusts what that
    # job made on this very connection and dumps nothing again (20,000 flows: seconds)
    assert tun == [(len(want), 0)]
    assert rig.bridges[dpid["br-tun"]].flow_stats_requests == 1
    for bridge in BRIDGES:
        assert rig.bridges[dpid[bridge]].loris_flows() == rig.desired(dpid[bridge])


def test_the_collector_is_paused_for_the_block_and_left_as_it_was():
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
