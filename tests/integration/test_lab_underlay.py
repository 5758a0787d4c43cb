"""The lab's underlay on the userspace datapath once OVS has forgotten the tunnel neighbours
the lab seeded (in a long-lived lab they age out after 15 idle minutes; here they are
flushed, or aged out with a 1 s aging time): every host stays reachable through its tunnels,
OVS learns each peer again at the MAC of its br-phy, and no NIC inside a br-phy answers ARP
for the tunnel IP. Such an answer (ARP flux) could make a peer learn the NIC's MAC and send
that host's tunnel traffic to its kernel instead of its OVS, where it dies (docs/lab.md,
docs/operations.md "Hosts on the userspace datapath")."""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers import ping_counts, wait_for

from lab import Lab
from lab.containers import Container
from lab.naming import Host

pytestmark = pytest.mark.integration

HOSTS = 4
OVS_DEFAULT_AGING_S = 900
ARP_REPLY = re.compile(r"Reply (\S+) is-at ([0-9a-f:]{17})")
NEIGHBOUR = re.compile(r"^(\d+\.\d+\.\d+\.\d+)\s+([0-9a-f:]{17})\s+br-phy(\s+STALE)?$")


def overlay_ip(host: Host) -> str:
    return f"198.18.101.{host.index}"


@pytest.fixture(scope="module")
def mesh() -> Iterator[tuple[Lab, list[Container]]]:
    """A lab without Docker, the plain mesh, one bare-namespace container per host.

    The only traffic on the tunnels is the test's pings: the containers have no IPv6
    (router solicitations, MLD) and know each other's MACs (no ARP, no neighbour probes
    seconds after a ping). So nothing is learned behind the test's back while it ages
    OVS's entries out with a 1 s aging time."""
    with Lab(hosts=HOSTS, docker=False) as lab:
        if lab.datapath_type != "netdev":
            pytest.skip("kernel datapath: the kernel resolves tunnel neighbours, OVS keeps "
                        "no table of its own")
        lab.plain_mesh()
        containers = []
        for h in lab.hosts:
            c = lab.add_container(h, f"u{h.index}", kind="netns")
            lab.run(c, ["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                        "net.ipv6.conf.default.disable_ipv6=1"])
            lab.attach_plain(c, f"{overlay_ip(h)}/24")
            containers.append(c)
        macs = {c.short: link_mac(lab, c, "eth1") for c in containers}
        for c in containers:
            lab.run(c, ["ip", "-batch", "-"], input="".join(
                f"neigh replace {overlay_ip(p.host)} lladdr {macs[p.short]} dev eth1 "
                "nud permanent\n" for p in containers if p is not c))
        yield lab, containers


def link_mac(lab: Lab, where: Host | Container, dev: str) -> str:
    out = lab.run(where, ["ip", "-o", "link", "show", "dev", dev]).stdout
    return out.split("link/ether ", 1)[1].split()[0]


def tunnel_neighbours(lab: Lab, host: Host) -> dict[str, str]:
    """OVS's live tunnel-neighbour entries of `host` (expired ones are left out)."""
    out = lab.ovs(host).appctl("tnl/neigh/show")
    entries = (NEIGHBOUR.match(line.strip()) for line in out.splitlines())
    return {m.group(1): m.group(2) for m in entries if m and not m.group(3)}


def forget_tunnel_neighbours(lab: Lab, how: str) -> None:
    if how == "flush":
        for h in lab.hosts:
            lab.ovs(h).appctl("tnl/neigh/flush")
    else:
        for h in lab.hosts:
            lab.ovs(h).appctl("tnl/neigh/aging", "1")
        wait_for(lambda: not any(tunnel_neighbours(lab, h) for h in lab.hosts), 10,
                 "the seeded tunnel neighbours to age out")
        for h in lab.hosts:
            lab.ovs(h).appctl("tnl/neigh/aging", str(OVS_DEFAULT_AGING_S))
    for h in lab.hosts:
        assert tunnel_neighbours(lab, h) == {}, lab.ovs(h).appctl("tnl/neigh/show")


def ping(src: Container, dst_ip: str, count: int) -> int:
    """Echo replies `src` got from `dst_ip` out of `count` requests."""
    res = src.exec(["busybox", "ping", "-c", str(count), "-i", "0.2", "-W", "2", dst_ip],
                   check=False, timeout=30)
    return ping_counts(res.stdout)[1]


def ping_all_pairs(containers: list[Container], how: str, strict: bool = True) -> None:
    """Every container reaches every other (one source at a time, its peers in parallel);
    `strict`: then 3 of 3 echoes answered on every pair."""
    def from_source(src: Container) -> None:
        for dst in containers:
            if dst is not src:
                # The first packets to a peer may be lost while OVS ARPs for it.
                wait_for(lambda d=dst: ping(src, overlay_ip(d.host), 1) == 1, 15,
                         f"{src.short} reaching {dst.short} through the tunnel {how}")
                if strict:
                    assert ping(src, overlay_ip(dst.host), 3) == 3, (src.short, dst.short, how)

    with ThreadPoolExecutor(max_workers=len(containers)) as pool:
        list(pool.map(from_source, containers))


@pytest.mark.parametrize("how", ["flush", "age"])
def test_hosts_stay_reachable_after_the_tunnel_neighbours_are_forgotten(
        mesh: tuple[Lab, list[Container]], how: str) -> None:
    lab, containers = mesh
    br_phy = {h.name: link_mac(lab, h, "br-phy") for h in lab.hosts}
    nic = {h.name: link_mac(lab, h, "eth0") for h in lab.hosts}
    assert not set(br_phy.values()) & set(nic.values())
    ping_all_pairs(containers, "before", strict=False)
    # What 15 idle minutes do besides: the datapath flows are long gone (10 idle seconds).
    # Purged here, or a cached flow for a peer's ARP reply would keep OVS from seeing
    # (and learning from) the same reply again for 10 s.
    for h in lab.hosts:
        lab.ovs(h).appctl("revalidator/purge")

    arp = lab.capture("ul", "br0", "arp")
    forget_tunnel_neighbours(lab, how)
    ping_all_pairs(containers, f"after {how}")
    replies = [ARP_REPLY.search(line) for line in arp.stop().lines]
    replies = [m for m in replies if m]

    # OVS learned the peers again through ARP, and only br-phy answered for a tunnel IP.
    assert replies, "no ARP reply on the underlay: OVS did not relearn its neighbours"
    by_ip = {h.tunnel_ip: h.name for h in lab.hosts}
    for m in replies:
        owner = by_ip[m.group(1)]
        assert m.group(2) == br_phy[owner], (
            f"{owner}'s tunnel IP {m.group(1)} was answered from {m.group(2)}; its br-phy is "
            f"{br_phy[owner]}, its NIC {nic[owner]}: the NIC must not answer ARP "
            "(arp_ignore=8)")
    # Every host knows every peer at its br-phy's MAC, never at the NIC's.
    for h in lab.hosts:
        want = {p.tunnel_ip: br_phy[p.name] for p in lab.hosts if p is not h}
        assert tunnel_neighbours(lab, h) == want, lab.ovs(h).appctl("tnl/neigh/show")
