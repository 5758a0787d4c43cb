"""diff(): what one change costs, and that deletes and modifies are what the switch needs."""

from dataclasses import replace

from flows import (
    FlowDiff,
    HostSpec,
    Kind,
    PodSpec,
    PortSpec,
    Topology,
    diff,
    flatten,
    host_flows,
)


def mac(n: int) -> str:
    return f"02:00:00:00:{n >> 8:02x}:{n & 255:02x}"


HOSTS = [
    HostSpec("h1", "198.18.0.11", 1, 1, {"h2": 2, "h3": 3}, {7: 100, 9: 102}),
    HostSpec("h2", "198.18.0.12", 1, 1, {"h1": 2, "h3": 3}, {7: 200}),
    HostSpec("h3", "198.18.0.13", 1, 1, {"h1": 2, "h2": 3}, {9: 300, 7: 301}),
]
PODS = [PodSpec(7, 8, "198.18.135.0/24"), PodSpec(9, 10, "198.18.137.0/24")]
PORTS = [
    PortSpec(1, 7, "h1", 10, mac(1), "198.18.135.11"),
    PortSpec(2, 7, "h2", 10, mac(2), "198.18.135.12"),
    PortSpec(3, 9, "h1", 11, mac(3), "198.18.137.13"),
    PortSpec(4, 9, "h3", 10, mac(4), "198.18.137.14"),
]
NEW = PortSpec(5, 7, "h2", 11, mac(5), "198.18.135.15")


def all_flows(topo):
    return {h: flatten(host_flows(topo, h)) for h in topo.hosts}


def pod_change(old: Topology, new: Topology, pod: int) -> dict[str, dict[str, FlowDiff]]:
    """What the controller does for a change in one pod: recompute that section only."""
    hosts = old.pod_hosts(pod) | new.pod_hosts(pod)
    return {h: diff(host_flows(old, h, [pod])[pod], host_flows(new, h, [pod])[pod])
            for h in sorted(hosts)}


def kinds(flows) -> list[str]:
    return sorted(f"{f.kind.name}:{f.table}" for f in flows)


def test_identical_sets_give_empty_diffs():
    t = Topology(HOSTS, PODS, PORTS)
    d = diff(flatten(host_flows(t, "h1")), flatten(host_flows(t, "h1")))
    assert set(d) == {"br-int", "br-tun"} and not any(d.values())
    assert len(FlowDiff()) == 0


def test_adding_a_port_touches_only_its_pod_hosts_and_a_handful_of_flows():
    old, new = Topology(HOSTS, PODS, PORTS), Topology(HOSTS, PODS, PORTS + [NEW])
    # Network-wide truth: which hosts change at all?
    before, after = all_flows(old), all_flows(new)
    changed = {h for h in HOSTS_IDS if any(diff(before[h], after[h]).values())}
    assert changed == {"h1", "h2"}                        # h3 has no pod 7 member
    # The per-pod computation finds exactly the same changes.
    per_pod = pod_change(old, new, 7)
    for h in ("h1", "h2"):
        assert per_pod[h] == diff(before[h], after[h])
    h1, h2 = per_pod["h1"], per_pod["h2"]
    # h1 learns the new member: its ARP answer and the unicast rule to h2's tunnel.
    assert kinds(h1["br-int"].add) == ["MEMBER:10"] and kinds(h1["br-tun"].add) == ["MEMBER:10"]
    assert not h1["br-int"].modify and not h1["br-tun"].modify
    assert not h1["br-int"].delete and not h1["br-tun"].delete
    # h2 wires the port (6 port flows, the per-port drop included, + its ARP answer) and
    # adds it to both flood lists.
    assert kinds(h2["br-int"].add) == ["MEMBER:10"] + sorted(
        ["PORT:0", "PORT:0", "PORT:0", "PORT:10", "PORT:20", "PORT:30"])
    assert kinds(h2["br-int"].modify) == ["POD:20", "POD:30"]
    assert not h2["br-int"].delete and not h2["br-tun"]
    assert all(f.object_id == NEW.id for f in h2["br-int"].add)
    assert sum(len(d) for per_host in per_pod.values() for d in per_host.values()) == 11


def test_removing_a_port_deletes_exactly_what_adding_it_added():
    old, new = Topology(HOSTS, PODS, PORTS + [NEW]), Topology(HOSTS, PODS, PORTS)
    added = pod_change(new, old, 7)
    removed = pod_change(old, new, 7)
    for h in added:
        for br in added[h]:
            assert set(removed[h][br].delete) == set(added[h][br].add)
            assert not removed[h][br].add


def test_first_member_on_a_new_host_updates_the_flood_lists_elsewhere():
    third = PortSpec(6, 7, "h3", 11, mac(6), "198.18.135.16")
    old, new = Topology(HOSTS, PODS, PORTS), Topology(HOSTS, PODS, PORTS + [third])
    per_pod = pod_change(old, new, 7)
    assert set(per_pod) == {"h1", "h2", "h3"}
    for h in ("h1", "h2"):
        assert kinds(per_pod[h]["br-tun"].modify) == ["POD:10"]      # flood list gains h3
        flood = per_pod[h]["br-tun"].modify[0]
        assert ("output", 3) in flood.actions
    h3 = per_pod["h3"]
    assert not h3["br-int"].modify and not h3["br-int"].delete      # h3 had nothing of pod 7
    assert len(h3["br-int"].add) > 5 and len(h3["br-tun"].add) == 4   # key, flood, 2 members


def test_last_member_leaving_a_host_removes_the_whole_pod_section_there():
    old = Topology(HOSTS, PODS, PORTS)
    new = Topology(HOSTS, PODS, [p for p in PORTS if p.id != 4])
    section = host_flows(old, "h3", [9])[9]
    d = diff(section, host_flows(new, "h3", [9])[9])
    assert {br: set(x.delete) for br, x in d.items()} == {br: set(f) for br, f in section.items()}
    assert not any(x.add or x.modify for x in d.values())


def test_a_changed_ofport_modifies_outputs_and_replaces_in_port_matches():
    moved = replace(PORTS[0], ofport=20)
    old = Topology(HOSTS, PODS, PORTS)
    new = Topology(HOSTS, PODS, [moved] + PORTS[1:])
    d = pod_change(old, new, 7)["h1"]["br-int"]
    assert kinds(d.modify) == ["POD:20", "POD:30", "PORT:20", "PORT:30"]  # same match, new output
    assert kinds(d.add) == kinds(d.delete) == ["PORT:0", "PORT:0", "PORT:0",   # in_port match
                                               "PORT:10"]
    assert all(dict(f.match)["in_port"] == 20 for f in d.add)
    assert all(f.cookie != g.cookie for f in d.modify for g in d.delete)


def test_order_is_safe_without_bundles():
    old, new = Topology(HOSTS, PODS, PORTS), Topology(HOSTS, PODS, PORTS + [NEW])
    add = pod_change(old, new, 7)["h2"]["br-int"].add
    tables = [f.table for f in add]
    assert tables == sorted(tables, reverse=True)        # goto targets exist before the gotos
    delete = pod_change(new, old, 7)["h2"]["br-int"].delete
    assert [f.table for f in delete] == sorted(f.table for f in delete)   # entry points first


def test_one_port_in_a_large_network_is_still_a_handful():
    hosts = [HostSpec(f"h{i}", f"198.18.0.{10 + i}", 1, 1,
                      {f"h{j}": 2 + j for j in range(10) if j != i},
                      {p: p + 1 for p in range(20)}) for i in range(10)]
    pods = [PodSpec(p, p + 1) for p in range(20)]
    # odd pods live on the odd hosts, even pods on the even ones, 100 ports each
    ports = [PortSpec(n + 1, n % 20, f"h{(n // 20) % 5 * 2 + n % 2}", 10 + n, mac(n + 1),
                      f"10.{n % 20}.{n // 256}.{n % 256}") for n in range(2000)]
    new_port = PortSpec(3000, 3, "h5", 5000, mac(3000), "198.18.131.200")
    old, new = Topology(hosts, pods, ports), Topology(hosts, pods, ports + [new_port])
    per_pod = pod_change(old, new, 3)
    assert set(per_pod) == {f"h{i}" for i in range(10) if i % 2 == 1}   # pod 3's hosts only
    for h, per_bridge in per_pod.items():
        assert sum(len(d) for d in per_bridge.values()) <= (9 if h == "h5" else 2)
    assert Kind.MEMBER in {f.kind for f in per_pod["h1"]["br-tun"].add}


HOSTS_IDS = [h.id for h in HOSTS]
