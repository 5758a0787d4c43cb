"""The offline table simulator itself, on hand-written flows, and its command line."""

import json

import pytest

from flows.flow import (
    IN_PORT,
    MULTICAST,
    Kind,
    goto,
    make_flow,
    move,
    output,
    pop_vlan,
    push_vlan,
    resubmit,
    set_field,
    to_controller,
    write_metadata,
)
from flows.trace import AmbiguousFlows, Bridge, TraceError, main


def flow(table, priority, match, actions):
    return make_flow(table, priority, match, actions, Kind.BASE, 0)


PKT = {"eth_src": "02:00:00:00:00:01", "eth_dst": "02:00:00:00:00:02", "eth_type": 0x0800,
       "ipv4_src": "198.18.130.1", "ipv4_dst": "198.18.130.2"}


def test_highest_priority_wins_and_a_miss_drops():
    br = Bridge([flow(0, 10, {"in_port": 1}, [output(2)]),
                 flow(0, 20, {"in_port": 1, "eth_dst": "02:00:00:00:00:02"}, [output(3)])])
    assert br.trace(1, PKT).ports == [3]
    assert br.trace(1, dict(PKT, eth_dst="02:00:00:00:00:09")).ports == [2]
    assert br.trace(5, PKT).ports == [] and br.trace(5, PKT).flows == []


def test_masks_on_macs_and_fields_the_packet_lacks():
    br = Bridge([flow(0, 10, {"eth_dst": MULTICAST}, [output(7)]),
                 flow(0, 20, {"eth_type": 0x0806, "arp_op": 1}, [output(8)])])
    assert br.trace(1, dict(PKT, eth_dst="01:00:5E:00:00:01")).ports == [7]
    assert br.trace(1, PKT).ports == []                # unicast, and no arp_op to match


def test_goto_write_metadata_and_metadata_match():
    br = Bridge([flow(0, 1, {}, [write_metadata(0x5, 0xFF), goto(3)]),
                 flow(3, 1, {"metadata": 0x5}, [output(4)]),
                 flow(3, 2, {"metadata": 0x6}, [output(5)])])
    assert br.trace(1, PKT).ports == [4]
    assert [f.table for f in br.trace(1, PKT).flows] == [0, 3]


def test_output_to_the_ingress_port_is_skipped_unless_it_is_in_port():
    br = Bridge([flow(0, 1, {}, [output(1), output(2), output(IN_PORT)])])
    assert br.trace(1, PKT).ports == [2, 1]


def test_vlan_push_set_pop_and_controller():
    br = Bridge([flow(0, 1, {"in_port": 1}, [push_vlan(), set_field("vlan_vid", 0x1000 | 42),
                                             output(2), pop_vlan(), output(3),
                                             to_controller()])])
    result = br.trace(1, PKT)
    assert [(p, pkt["vlan_vid"]) for p, pkt in result.outputs] == [(2, 0x1000 | 42), (3, 0)]
    [(cookie, pkt)] = result.controller
    assert cookie == br.tables[0][0].cookie and pkt["vlan_vid"] == 0


def test_moves_and_set_fields_rewrite_a_copy_per_output():
    br = Bridge([flow(0, 1, {}, [output(2), move("eth_src", "eth_dst", 48),
                                 set_field("eth_src", "02:00:00:00:00:aa"), output(3)])])
    (p2, first), (p3, second) = br.trace(1, PKT).outputs
    assert first["eth_dst"] == "02:00:00:00:00:02"
    assert (second["eth_src"], second["eth_dst"]) == ("02:00:00:00:00:aa", "02:00:00:00:00:01")


def test_resubmit_runs_another_table_and_comes_back():
    br = Bridge([flow(0, 1, {}, [resubmit(5), output(3)]),
                 flow(5, 1, {}, [set_field("eth_dst", "02:00:00:00:00:05"), output(4)])])
    result = br.trace(1, PKT)
    assert result.ports == [4, 3]
    assert result.outputs[1][1]["eth_dst"] == PKT["eth_dst"]    # resubmit worked on a copy


@pytest.mark.parametrize("flows, message", [
    ([flow(0, 1, {"in_port": 1}, [output(2)]), flow(0, 1, {"eth_type": 0x800}, [output(3)])],
     "both"),
    ([flow(0, 1, {}, [pop_vlan()])], "untagged"),
    ([flow(0, 1, {}, [set_field("vlan_vid", 0x1001)])], "untagged"),
    ([flow(0, 1, {}, [push_vlan(), push_vlan()])], "second VLAN"),
    ([flow(0, 1, {}, [move("arp_sha", "arp_tha", 48)])], "lacks"),
    ([flow(0, 1, {}, [goto(2)]), flow(2, 1, {}, [resubmit(2)])], "loop"),
])
def test_it_refuses_to_guess(flows, message):
    with pytest.raises(TraceError, match=message):
        Bridge(flows).trace(1, PKT)


def test_ambiguity_is_its_own_error():
    br = Bridge([flow(0, 1, {"in_port": 1}, []), flow(0, 1, {"eth_type": 0x800}, [])])
    with pytest.raises(AmbiguousFlows):
        br.trace(1, PKT)


def test_command_line_traces_a_packet_across_hosts(tmp_path, capsys):
    topo = {
        "hosts": [
            {"id": "h1", "tunnel_ip": "198.18.0.11", "int_patch_ofport": 1,
             "tun_patch_ofport": 1, "tunnel_ofports": {"h2": 2}, "local_vlans": {"7": 100}},
            {"id": "h2", "tunnel_ip": "198.18.0.12", "int_patch_ofport": 1,
             "tun_patch_ofport": 1, "tunnel_ofports": {"h1": 2}, "local_vlans": {"7": 200}},
        ],
        "pods": [{"id": 7, "tunnel_key": 8, "subnet": "198.18.135.0/24",
                  "dhcp_server": ["198.18.135.1", "0a:4c:00:00:00:08"]}],
        "ports": [
            {"id": 1, "pod_id": 7, "host_id": "h1", "ofport": 10, "mac": "02:00:00:00:00:01",
             "ip": "198.18.135.11/24", "dhcp": False},
            {"id": 2, "pod_id": 7, "host_id": "h2", "ofport": 10, "mac": "02:00:00:00:00:02",
             "ip": "198.18.135.12/24", "dhcp": False},
        ],
    }
    packet = {"host": "h1", "in_port": 10,
              "packet": {"eth_src": "02:00:00:00:00:01", "eth_dst": "02:00:00:00:00:02",
                         "eth_type": 2048, "ipv4_src": "198.18.135.11",
                         "ipv4_dst": "198.18.135.12"}}
    (tmp_path / "topo.json").write_text(json.dumps(topo))
    (tmp_path / "pkt.json").write_text(json.dumps(packet))
    assert main([str(tmp_path / "topo.json"), str(tmp_path / "pkt.json")]) == 0
    out = capsys.readouterr().out
    hops = [line for line in out.splitlines() if "/br-" in line and " in_port=" in line]
    assert hops == ["h1/br-int in_port=10", "h1/br-tun in_port=1", "h2/br-tun in_port=2",
                    "h2/br-int in_port=1"]
    assert "delivered: h2 ofport 10 (port 2)" in out and "tunnel: h1 -> h2 key 0x8" in out
    assert main([]) == 2
