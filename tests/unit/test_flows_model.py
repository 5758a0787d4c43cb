"""Validation of the desired state: bad input is refused with a message naming object and fix."""

import pytest

from flows import HostSpec, PodSpec, PortSpec, Topology, TopologyError


def host(hid="h1", **kw):
    args = {"tunnel_ip": "198.18.0.11", "int_patch_ofport": 1, "tun_patch_ofport": 1,
            "tunnel_ofports": {}, "local_vlans": {7: 10}}
    args.update(kw)
    return HostSpec(hid, **args)


def port(pid=1, **kw):
    args = {"pod_id": 7, "host_id": "h1", "ofport": 10 + pid, "mac": f"02:00:00:00:00:{pid:02x}",
            "ip": f"198.18.135.{10 + pid}"}
    args.update(kw)
    return PortSpec(pid, **args)


POD = PodSpec(7, 8, "198.18.135.0/24", ("198.18.135.1", "0a:4c:00:00:00:08"))


def test_normalises_ip_with_prefix_and_upper_case_mac():
    p = port(ip="198.18.135.5/24", mac="02:AB:00:00:00:01")
    assert (p.ip, p.mac) == ("198.18.135.5", "02:ab:00:00:00:01")
    assert PodSpec(7, 8, "198.18.135.9/24").subnet == "198.18.135.0/24"


def test_specs_are_hashable_values():
    assert host() == host() and hash(host()) == hash(host())
    assert host() != host(local_vlans={7: 11})
    assert len({port(), port()}) == 1


@pytest.mark.parametrize("build, words", [
    (lambda: port(mac="01:00:5e:00:00:01"), ["port 1", "multicast"]),
    (lambda: port(mac="nope"), ["port 1", "not a MAC"]),
    (lambda: port(ip="198.18.135.300"), ["port 1", "not an IPv4"]),
    (lambda: port(ip="0.0.0.0"), ["port 1", "0.0.0.0"]),
    (lambda: port(ofport=0), ["port 1", "ofport"]),
    (lambda: port(pid=0), ["port id"]),
    (lambda: port(pod_id=16_777_215), ["pod_id"]),
    (lambda: port(dhcp="yes"), ["port 1", "dhcp"]),
    (lambda: PodSpec(7, 7), ["pod 7", "pod id + 1"]),
    (lambda: PodSpec(7, 8, "198.18.135.0/33"), ["pod 7", "subnet"]),
    (lambda: PodSpec(7, 8, "198.18.135.0/24", ("198.18.136.1", "0a:4c:00:00:00:08")),
     ["pod 7", "outside"]),
    (lambda: PodSpec(7, 8, None, ("198.18.136.1",)), ["pod 7", "(ip, mac)"]),
    (lambda: host("-bad"), ["host", "id must match"]),
    (lambda: host(tunnel_ip="x"), ["host h1", "tunnel_ip"]),
    (lambda: host(local_vlans={7: 4095}), ["host h1", "local_vlans[7]"]),
    (lambda: host(local_vlans={7: 10, 8: 10}), ["host h1", "one VLAN per pod"]),
    (lambda: host(tunnel_ofports={"h2": 3, "h3": 3}), ["host h1", "own lt- port"]),
    (lambda: host(tunnel_ofports={"h2": 1}), ["host h1", "patch port"]),
    (lambda: host(tunnel_ofports={"h1": 3}), ["host h1", "itself"]),
])
def test_bad_specs_are_refused(build, words):
    with pytest.raises(TopologyError) as err:
        build()
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize("hosts, pods, ports, words", [
    ([host()], [POD], [port(1), port(2, mac="02:00:00:00:00:01")],
     ["port 2", "MAC 02:00:00:00:00:01", "port 1"]),
    ([host()], [POD], [port(1), port(2, ip="198.18.135.11")], ["port 2", "IP 198.18.135.11"]),
    ([host()], [POD], [port(1), port(2, ofport=11)], ["port 2", "ofport 11", "port 1"]),
    ([host()], [POD], [port(1, ofport=1)], ["port 1", "patch port"]),
    ([host()], [POD], [port(1, ip="198.18.135.1")], ["port 1", "DHCP server"]),
    ([host()], [POD], [port(1, host_id="h9")], ["port 1", "unknown host 'h9'"]),
    ([host()], [POD], [port(1, pod_id=9)], ["port 1", "unknown pod 9"]),
    ([host(local_vlans={})], [POD], [port(1)], ["port 1", "no local VLAN for pod 7"]),
    ([host(), host()], [POD], [], ["host h1", "twice"]),
    ([host()], [POD, POD], [], ["pod 7", "twice"]),
    ([host()], [POD], [port(1), port(1)], ["port 1", "twice"]),
    ([host(tunnel_ofports={"h2": 2})], [POD], [], ["host h1", "unknown host 'h2'"]),
])
def test_inconsistent_topologies_are_refused(hosts, pods, ports, words):
    with pytest.raises(TopologyError) as err:
        Topology(hosts, pods, ports)
    for word in words:
        assert word in str(err.value)


def test_same_mac_and_ip_in_different_pods_are_fine():
    hs = [host(local_vlans={7: 10, 8: 11})]
    t = Topology(hs, [POD, PodSpec(8, 9)], [port(1), port(2, pod_id=8, mac="02:00:00:00:00:01",
                                                        ip="198.18.135.11")])
    assert [p.id for p in t.members(7)] == [1] and [p.id for p in t.members(8)] == [2]


def test_indices():
    hs = [host("h1", tunnel_ofports={"h2": 2}), host("h2", tunnel_ofports={"h1": 2})]
    ports = [port(3, host_id="h2"), port(1), port(2)]
    t = Topology(hs, [POD], ports)
    assert [p.id for p in t.members(7)] == [1, 2, 3]
    assert [p.id for p in t.local_ports("h1", 7)] == [1, 2]
    assert t.pod_hosts(7) == {"h1", "h2"} and t.pod_hosts(8) == frozenset()
    assert t.host_pods("h2") == {7} and t.host_pods("h3") == frozenset()
