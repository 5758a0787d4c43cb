"""OpenFlow roles (controller/roles.py) with the real Switches and Programmer over a fake
bridge that arbitrates roles as OVS does: nothing is written before the switch confirmed us
MASTER, a stale generation is refused, SLAVE takes the switch's id, a demoted or fenced
controller stops writing, and without mastership everything stays as it was."""

from __future__ import annotations

import pytest
from os_ken.ofproto import ofproto_v1_3 as ofp
from programmer_rig import Rig

from controller import config
from controller.agents import AgentBoard
from controller.context import Context
from controller.errors import ApiError
from controller.mastership import Role
from controller.observe import Observe
from controller.programmer import NOT_MASTER, OK
from controller.roles import Roles, role_status
from controller.switches import OpenFlowError


class Fence:
    def __init__(self) -> None:
        self.down = False

    def __call__(self) -> bool:
        return self.down


def rig_with_roles(enforced: bool = True) -> tuple[Rig, Roles, Fence, str, int]:
    rig = Rig()
    fence = Fence()
    roles = Roles(rig.switches, enforced=enforced, fenced=fence)
    rig.switches.write_gate = roles.may_write
    (host,) = rig.add_hosts(1)
    for dpid in rig.bridges:
        roles.connected(rig.switches.datapath(dpid))
    rig.run()
    dpid = next(d for d, (_h, b) in rig.owner.items() if b == "br-int")
    return rig, roles, fence, host, dpid


def result(rig: Rig, host: str) -> dict:
    future = rig.programmer.submit(host, None)
    rig.run()
    return future.wait(0)


def test_nothing_is_written_before_the_switch_confirms_us_master():
    rig, roles, _fence, host, dpid = rig_with_roles()
    rig.add_port(host, 7, ofport=5)
    assert result(rig, host) == {"br-int": NOT_MASTER, "br-tun": NOT_MASTER}
    assert rig.bridges[dpid].loris_flows() == set()
    assert rig.switches.packet_out(dpid, 5, b"x") is False
    dp = rig.switches.datapath(dpid)
    assert roles.assign(dp, Role.MASTER, 40) == 40
    assert roles.role_name(dpid) == "master" and roles.may_write(dp)
    rig.programmer.submit(host, None, sync=["br-int"])
    rig.run()
    assert rig.bridges[dpid].loris_flows() == rig.desired(dpid)


def test_a_stale_generation_is_refused_and_leaves_us_unwritable():
    rig, roles, _fence, _host, dpid = rig_with_roles()
    rig.bridges[dpid].another_master(50)
    dp = rig.switches.datapath(dpid)
    with pytest.raises(OpenFlowError, match="OFPRRFC_STALE"):
        roles.assign(dp, Role.MASTER, 49)
    assert not roles.may_write(dp)
    assert roles.assign(dp, Role.MASTER, 50) == 50          # an equal id is accepted


def test_slave_takes_the_switch_generation_or_the_newer_master_key():
    rig, roles, _fence, _host, dpid = rig_with_roles()
    switch = rig.bridges[dpid]
    switch.another_master(30)
    dp = rig.switches.datapath(dpid)
    assert roles.assign(dp, Role.SLAVE) == 30
    assert roles.assign(dp, Role.SLAVE, known=35) == 35
    assert switch.generation == 35 and dp.role == ofp.OFPCR_ROLE_SLAVE
    assert roles.role_name(dpid) == "slave" and not roles.may_write(dp)


def test_a_demoted_master_is_refused_by_the_switch_and_stops_at_once():
    rig, roles, _fence, host, dpid = rig_with_roles()
    dp = rig.switches.datapath(dpid)
    roles.assign(dp, Role.MASTER, 10)
    rig.bridges[dpid].another_master(11)
    rig.add_port(host, 7, ofport=5)
    assert "IS_SLAVE" in result(rig, host)["br-int"]          # the switch refused the bundle
    assert roles.demoted(dp, 11)                              # as the app's error handler does
    assert result(rig, host)["br-int"] == NOT_MASTER and roles.role(dpid)[2] == 11


def test_a_fenced_controller_writes_nothing_even_as_master():
    rig, roles, fence, host, dpid = rig_with_roles()
    dp = rig.switches.datapath(dpid)
    roles.assign(dp, Role.MASTER, 10)
    fence.down = True
    assert not roles.may_write(dp)
    assert result(rig, host)["br-int"] == NOT_MASTER
    with pytest.raises(OpenFlowError, match="not its OpenFlow master"):
        rig.switches.delete_all_loris_flows(dp)


def test_a_reconnect_starts_unwritable_again():
    rig, roles, _fence, _host, dpid = rig_with_roles()
    roles.assign(rig.switches.datapath(dpid), Role.MASTER, 10)
    rig.connect(dpid)
    new = rig.switches.datapath(dpid)
    roles.connected(new)
    assert not roles.may_write(new) and roles.role_name(dpid) == "equal"


def test_without_mastership_every_connection_is_written_as_before():
    rig, roles, _fence, host, dpid = rig_with_roles(enforced=False)
    rig.add_port(host, 7, ofport=5)
    assert result(rig, host) == {"br-int": OK, "br-tun": OK}
    assert rig.bridges[dpid].loris_flows() == rig.desired(dpid)
    assert roles.role_name(dpid) == "equal"


def test_role_status_message_is_decoded():
    class Msg:
        experimenter, exp_type = 0x4F4E4600, 1911
        data = (3).to_bytes(4, "big") + b"\x01\0\0\0" + (77).to_bytes(8, "big")

    assert role_status(Msg()) == (3, 77)
    Msg.exp_type = 1
    assert role_status(Msg()) is None


def test_resync_of_a_host_mastered_elsewhere_names_the_fix():
    rig = Rig(threaded=True)
    roles = Roles(rig.switches, enforced=True)
    rig.switches.write_gate = roles.may_write
    hosts = rig.add_hosts(1)
    rig.settle(hosts)
    ctx = Context(rig.store, config.load(env={}, db=":memory:", flow_timeout=2.0), AgentBoard(),
                  rig.programmer, rig.switches)
    with pytest.raises(ApiError) as e:
        Observe(ctx).resync("h1")
    assert e.value.status == 409 and e.value.code == "not_master"
    assert "loris controllers" in e.value.message
