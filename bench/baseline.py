"""The baseline wiring: what the original Loris (a bash script, no controller) did for a
connect, on the lab's plain OVS bridges (`lab.plain_mesh`, NORMAL action over tunnels).

One shell process runs, on the container's host, one command per step as the original did:
find the container's namespace (`docker inspect`), create a veth, move one end into the
container, name it, address it, set the MTU and TX offload as Loris's agent does, add the
other end to the bridge, and add the port's anti-spoofing flows with `ovs-ofctl`.
"""

from __future__ import annotations

import shlex
from typing import Any

from lab import Lab

BRIDGE = "br-v1"


def veth_script(container: Any, host_port: str, ip_cidr: str, mac: str, mtu: int,
                ifname: str = "eth1") -> str:
    """The script's steps up to the bridge: find the container's namespace, make the veth,
    move, name, address and configure its inner end, bring up the host end. The OVN
    baseline (bench/ovn.py) runs the same steps."""
    q = shlex.quote
    if container.kind == "docker":
        find = (f"pid=$(docker inspect --format '{{{{.State.Pid}}}}' {q(container.name)})\n"
                'ns=/proc/$pid/ns/net\n')
        move = 'ip link set tmp-$$ netns "$pid"\n'
    else:
        find = f"ns=/run/netns/{q(container.netns_ref)}\n"
        move = f"ip link set tmp-$$ netns {q(container.netns_ref)}\n"
    inside = 'nsenter --net="$ns"'
    return (
        "set -e\n" + find +
        f"ip link add {host_port} type veth peer name tmp-$$\n" + move +
        f"{inside} ip link set tmp-$$ name {ifname}\n"
        f"{inside} ip link set {ifname} address {mac} mtu {mtu} up\n"
        f"{inside} ip addr add {ip_cidr} dev {ifname}\n"
        f"{inside} ethtool -K {ifname} tx off >/dev/null\n"
        f"ip link set {host_port} mtu {mtu} up\n")


def connect_script(container: Any, host_port: str, ip_cidr: str, mac: str, mtu: int,
                   ifname: str = "eth1", bridge: str = BRIDGE) -> str:
    ip = ip_cidr.split("/")[0]
    return (
        veth_script(container, host_port, ip_cidr, mac, mtu, ifname) +
        f"ovs-vsctl add-port {bridge} {host_port}\n"
        f"ovs-ofctl add-flow {bridge} 'priority=100,in_port={host_port},dl_src={mac},ip,"
        f"nw_src={ip} actions=NORMAL'\n"
        f"ovs-ofctl add-flow {bridge} 'priority=100,in_port={host_port},dl_src={mac},arp,"
        f"arp_spa={ip},arp_sha={mac} actions=NORMAL'\n"
        f"ovs-ofctl add-flow {bridge} 'priority=90,in_port={host_port} actions=drop'\n")


def run_connect(lab: Lab, container: Any, host_port: str, ip_cidr: str, mac: str,
                ifname: str = "eth1", bridge: str = BRIDGE) -> None:
    script = connect_script(container, host_port, ip_cidr, mac, lab.inner_mtu, ifname, bridge)
    lab.run(container.host, ["bash", "-c", script], env=lab.ovs(container.host).env,
            timeout=60)


def disconnect(lab: Lab, container: Any, host_port: str, bridge: str = BRIDGE) -> None:
    """Undo run_connect (not measured)."""
    ovs = lab.ovs(container.host)
    ofport = ovs.vsctl("--if-exists", "get", "Interface", host_port, "ofport").strip()
    if ofport and ofport.lstrip("-").isdigit() and int(ofport) > 0:
        ovs.ofctl("del-flows", bridge, f"in_port={ofport}", check=False)
    ovs.vsctl("--if-exists", "del-port", bridge, host_port)
    lab.run(container.host, ["ip", "link", "del", host_port], check=False)
