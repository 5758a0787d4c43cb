"""The agent's warning about the underlay on the userspace datapath (a pure decision)."""

from __future__ import annotations

import pytest

from hostagent.ovs import Interface
from hostagent.underlay import on_ovs_bridge, userspace_tunnel_warning


def _iface(name: str, type_: str, bridge: str | None) -> Interface:
    return Interface(name=name, type=type_, ofport=1, ofport_request=None, external_ids={},
                     options={}, error=None, bridge=bridge)


OVSDB = {i.name: i for i in [
    _iface("br-phy", "internal", "br-phy"),      # the bridge's own interface
    _iface("eth0", "", "br-phy"),                # the NIC, a port of br-phy
    _iface("vlan7", "internal", "br-phy"),       # another internal port of br-phy
    _iface("br-int", "internal", "br-int"),
    _iface("lp3", "", "br-int"),
    _iface("stray", "internal", None),           # an internal interface on no bridge
]}


def test_the_kernel_datapath_needs_nothing():
    assert userspace_tunnel_warning("system", "198.18.0.1", "eth0", {}) is None


@pytest.mark.parametrize("holder", ["br-phy", "vlan7"])
def test_the_tunnel_ip_on_an_ovs_bridge_is_right(holder):
    assert on_ovs_bridge(holder, OVSDB)
    assert userspace_tunnel_warning("netdev", "198.18.0.1", holder, OVSDB) is None


def test_the_tunnel_ip_on_the_nic_names_the_ip_the_nic_and_the_fix():
    warning = userspace_tunnel_warning("netdev", "198.18.0.1", "eth1", OVSDB)
    assert warning is not None
    assert "userspace datapath" in warning and "198.18.0.1 is on eth1" in warning
    assert "br-phy" in warning and "eth1 as a port" in warning
    assert "net.ipv4.conf.eth1.arp_ignore=8" in warning and "docs/operations.md" in warning


@pytest.mark.parametrize("holder, why", [
    ("eth0", "an OVS port that is not a bridge's own interface"),   # NIC in the bridge
    ("lp3", "Loris' own bridge br-int"),
    ("br-int", "Loris' own bridge br-int"),
    ("stray", "an OVS port that is not a bridge's own interface"),
    (None, "is held by no interface of this host"),
])
def test_anything_but_a_bridge_of_the_operator_is_wrong(holder, why):
    assert not on_ovs_bridge(holder, OVSDB)
    warning = userspace_tunnel_warning("netdev", "198.18.0.1", holder, OVSDB)
    assert warning is not None and why in warning
