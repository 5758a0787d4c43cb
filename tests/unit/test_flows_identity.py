"""The flows of a large topology are exactly what they were before the cold-push work
(#12): the same flows, the same cookies, the same FLOW_MOD bytes. The digest below was
taken from the code of main 22b70ae (every flow built by `make_flow` from its canonical
text); a deliberate change of the pipeline changes it, and must update it with a reason.

Also: every flow `host_flows` makes equals what the generic `make_flow` makes of its own
table, priority, match and actions (the fast per-shape construction is a shortcut, never a
second definition of a cookie)."""

from __future__ import annotations

import hashlib
import ipaddress

import pytest

from flows import HostSpec, PodSpec, PortSpec, Topology, TopologyError, flatten, host_flows
from flows.flow import Hole, Kind, Shape, make_flow, ofctl_text, output, set_field
from flows.ofwire import flowmod

HOSTS = [f"h{n}" for n in range(1, 6)]
# sha256 over every host's flows (sorted ovs-ofctl lines and their OFPFC_ADD bytes), from
# main 22b70ae before the change
GOLDEN = "a639878f9ed2abad6d7af27d08dc7d4d004b3430a3f774b36837753f4d5da7dc"


def big_topology() -> Topology:
    """Five hosts; six pods (two with a subnet and DHCP server), 3,000 ports spread over the
    hosts, every tenth a DHCP port, one host without patch ports, one with a missing
    tunnel."""
    hosts = []
    for n, h in enumerate(HOSTS, start=1):
        tunnels = {p: 10 + j for j, p in enumerate(x for x in HOSTS if x != h)}
        if h == "h4":
            tunnels.pop("h5")
        patch = (None, None) if h == "h5" else (1, 2)
        hosts.append(HostSpec(h, f"198.18.0.{10 + n}", *patch, tunnels,
                              {pod: 100 + pod + n for pod in range(6)}))
    pods = [PodSpec.for_pod(pod, f"10.{pod}.0.0/16" if pod in (2, 5) else None)
            for pod in range(6)]
    ports = []
    for k in range(1, 3001):
        pod, host = k % 6, HOSTS[(k * 7) % 5]
        mac = f"02:{pod:02x}:00:00:{k >> 8:02x}:{k & 255:02x}"
        ports.append(PortSpec(k, pod, host, 100 + k, mac,
                              f"10.{pod}.{k >> 8}.{(k & 255) or 250}/16", dhcp=k % 10 == 0))
    return Topology(hosts, pods, ports)


def all_flows(topo: Topology):
    return [f for h in HOSTS for flows in flatten(host_flows(topo, h)).values() for f in flows]


def digest(flows) -> str:
    lines = sorted(f"{ofctl_text(f)} {flowmod(f).hex()}" for f in flows)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def test_every_flow_of_a_large_topology_is_what_it_was():
    flows = all_flows(big_topology())
    assert len(flows) > 20_000
    assert digest(flows) == GOLDEN


def test_every_flow_is_what_make_flow_makes_of_it():
    for f in all_flows(big_topology()):
        again = make_flow(f.table, f.priority, dict(f.match), f.actions, f.kind, f.object_id)
        assert again == f and again.cookie == f.cookie and hash(again) == hash(f)


def test_a_port_address_is_checked_and_written_as_ipaddress_does():
    """The model's one-regex check of a canonical dotted quad accepts and writes exactly
    what `ipaddress` does; anything else still goes through `ipaddress`."""
    valid = ["1.2.3.4", "1.2.3.4/24", "255.255.255.255/32", "0.0.0.1/0", "10.0.0.9/9",
             "199.249.10.100", "1.2.3.4/032", "100.200.250.255/8"]
    invalid = ["01.2.3.4", "1.2.3.4/33", "256.1.1.1", "1.2.3", "1.2.3.4 ", "1.2.3.4/",
               "\uff11.2.3.4", "1.2.3.4.5", "1.2.3.-4", "a.b.c.d", "1.2.3.4/24/1", ""]
    for text in valid:
        port = PortSpec(1, 0, "h1", 1, "02:00:00:00:00:01", text)
        assert port.ip == str(ipaddress.IPv4Address(text.partition("/")[0]))
    for text in invalid:
        with pytest.raises(TopologyError, match="is not an IPv4 address"):
            PortSpec(1, 0, "h1", 1, "02:00:00:00:00:01", text)


def test_a_shape_makes_what_make_flow_makes_and_refuses_holes_it_cannot_fill():
    ip, mac = Hole(0), Hole(1)
    shape = Shape(10, 100, {"metadata": 8, "arp_tpa": ip},
                  [set_field("eth_src", mac), set_field("arp_spa", ip), output(3)], Kind.MEMBER)
    made = shape(42, "10.0.0.5", "02:00:00:00:00:05")
    assert made == make_flow(10, 100, {"arp_tpa": "10.0.0.5", "metadata": 8},
                             [set_field("eth_src", "02:00:00:00:00:05"),
                              set_field("arp_spa", "10.0.0.5"), output(3)], Kind.MEMBER, 42)
    for match, actions in [({"metadata": ip}, []),                       # written in hex
                           ({"vlan_vid": ip}, []),
                           ({"eth_dst": (ip, "ff:ff:ff:00:00:00")}, []),  # inside a mask
                           ({}, [output(ip)]),
                           ({}, [set_field("tunnel_id", ip)])]:
        with pytest.raises(ValueError, match="Shape"):
            Shape(0, 1, match, actions, Kind.POD)
    with pytest.raises(ValueError, match="24 bits"):
        shape(1 << 24, "10.0.0.5", "02:00:00:00:00:05")
