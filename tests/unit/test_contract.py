"""The shared contract (flows/contract.py): its patterns, and that the REST API, the OpenAPI
document and the flow model agree on every identifier and address.

Property tests: whatever the REST API accepts as a host id, MAC or IP, the flow model
accepts too (so an accepted host always gets flows, an accepted port never breaks its pod's
programming), and whatever it refuses gets a 400/422 that names the field.
"""

from __future__ import annotations

import hashlib
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from inproc import H1, ApiClient, build_parts, snapshot

from controller import openapi, schema, topology, validate
from controller.errors import ApiError
from flows import HostSpec, PortSpec, TopologyError, contract
from flows.contract import CONTAINER_REF, HOST_ID, IPV4, IPV4_CIDR, MAC, POD_NAME

PATTERNS = [HOST_ID, CONTAINER_REF, POD_NAME, MAC, contract.DPID_TEXT, IPV4, IPV4_CIDR]
# Empty, surrounding whitespace, control characters, non-ASCII letters and digits: no rule
# ever takes them.
WEIRD = ["", " ", "\n", "\x00", "h1\n", "h1\x00", " h1", "h1 ", "h\t1", "h١", "٣", "ｈ1",
         "h1\r", "02:00:00:00:00:01\n", "198.18.0.1\n", "198.18.0.1/24\n", "198.18.0.1/٢٤",
         "198.18.0.٣"]
TRICKY = WEIRD + ["a" * 64, "a" * 200, "netns:" + "a" * 129]
FEW = settings(max_examples=150, deadline=None,
               suppress_health_check=[HealthCheck.function_scoped_fixture])


def near(rule: contract.Pattern) -> st.SearchStrategy[str]:
    """Values of the rule, values close to it (one character changed or added), any text."""
    valid = st.from_regex(rule.regex, fullmatch=True)
    mutated = st.tuples(valid, st.integers(0, 200), st.characters()).map(
        lambda t: t[0][:t[1] % (len(t[0]) + 1)] + t[2] + t[0][t[1] % (len(t[0]) + 1) + 1:])
    appended = st.tuples(valid, st.sampled_from(["\n", "\x00", " ", "\r\n", "٣", "é"])).map(
        lambda t: t[0] + t[1])
    return st.one_of(valid, mutated, appended, st.text(max_size=80), st.sampled_from(TRICKY))


# ---- the patterns themselves ---------------------------------------------------------------

@pytest.mark.parametrize("rule", PATTERNS, ids=lambda r: r.what)
@pytest.mark.parametrize("value", WEIRD)
def test_whitespace_control_and_non_ascii_never_match(rule, value):
    assert not rule.matches(value)


@pytest.mark.parametrize("rule, longest", [(HOST_ID, 63), (CONTAINER_REF, 128 + 6),
                                           (POD_NAME, 63)], ids=lambda r: getattr(r, "what", r))
def test_over_long_values_never_match(rule, longest):
    prefix = "netns:" if rule is CONTAINER_REF else ""
    assert rule.matches(prefix + "a" * (longest - len(prefix)))
    assert not rule.matches(prefix + "a" * (longest - len(prefix) + 1))


def test_explicit_cases():
    assert HOST_ID.matches("h1") and HOST_ID.matches("node-7.example_x") and \
        HOST_ID.matches("a" * 63)
    for bad in ("h1\n", "-h", "a" * 64, "a b", "h\x00", "h١", None, 7):
        assert not HOST_ID.matches(bad), bad
    assert CONTAINER_REF.matches("netns:lrs1-c1") and CONTAINER_REF.matches("web1")
    assert not CONTAINER_REF.matches("netns:") and not CONTAINER_REF.matches("web1\n")
    assert MAC.matches("02:42:0A:07:00:05") and not MAC.matches("02:42:0a:07:00")
    assert IPV4.matches("198.18.0.11") and not IPV4.matches("198.018.0.11")
    assert IPV4_CIDR.matches("198.18.135.5/24") and not IPV4_CIDR.matches("198.18.135.5/33")


@pytest.mark.parametrize("rule", PATTERNS, ids=lambda r: r.what)
@FEW
@given(data=st.data())
def test_the_document_pattern_is_the_same_rule(rule, data):
    """What the OpenAPI document says (an ECMA pattern, as the server's schema checker reads
    it) and what the contract matches agree on every string."""
    value = data.draw(near(rule))
    assert (schema._regex(rule.json).search(value) is not None) == rule.matches(value)


def test_the_document_uses_the_contract():
    doc = openapi.document()["components"]["schemas"]
    assert doc["HostId"]["pattern"] == HOST_ID.json
    assert doc["Mac"]["pattern"] == MAC.json
    assert doc["PortCreate"]["properties"]["container"]["pattern"] == CONTAINER_REF.json
    assert doc["PodName"]["pattern"] == POD_NAME.json
    assert doc["PodId"]["maximum"] == contract.MAX_POD_ID
    assert doc["PortId"]["maximum"] == contract.MAX_PORT_ID


def test_derived_values():
    h48 = int(hashlib.sha256(b"h1").hexdigest()[:12], 16)
    assert contract.dpids("h1") == {"br-int": 1 << 48 | h48, "br-tun": 2 << 48 | h48}
    assert contract.tunnel_key(7) == 8 and contract.pod_of_tunnel_key(8) == 7
    assert contract.tunnel_key(contract.MAX_POD_ID) == 2**24 - 1
    assert contract.dhcp_server(7, "198.18.135.0/24") == ("198.18.135.1", "0a:4c:00:00:00:08")
    assert contract.dhcp_server(7, None) is None
    assert contract.container_mtu(1500, "vxlan") == 1450
    assert contract.port_id_of_host_port("lp0") is None
    assert contract.port_id_of_host_port("lp42\n") is None


# ---- the REST API and the flow model agree --------------------------------------------------

@pytest.fixture
def api(tmp_path):
    parts = build_parts(tmp_path)
    yield ApiClient(parts)
    parts.store.close()


def test_a_host_id_with_a_newline_is_refused_and_registers_nothing(api):
    before = snapshot(api.parts)
    msg = api.error("POST", "/v1/hosts", {**H1, "id": "h1\n"}, status=422)
    assert "host id" in msg or "'id'" in msg
    assert snapshot(api.parts) == before
    api.error("GET", "/v1/hosts/h1%0A", status=422)
    api.error("GET", "/v1/ports?host=h1%0A", status=422)


def test_a_mac_with_a_newline_is_refused(api):
    api.ok("POST", "/v1/hosts", H1)
    before = snapshot(api.parts)
    msg = api.error("POST", "/v1/ports", {"host": "h1", "container": "c", "pod": 7,
                                          "ip": "198.18.135.9/24",
                                          "mac": "02:00:00:00:00:09\n"}, status=422)
    assert "six colon-separated" in msg
    assert snapshot(api.parts) == before


def test_an_agent_report_with_an_empty_lease_is_refused(api):
    api.ok("POST", "/v1/hosts", H1)
    api.error("PUT", "/v1/hosts/h1/actual", {"version": 1, "ports": {"1": {"lease": ""}}},
              status=422, code=schema.FORMAT)


@FEW
@given(host_id=near(HOST_ID))
def test_every_host_id_the_api_accepts_gets_flows(api, host_id):
    n = next(_hosts)
    dpids = contract.dpids(f"property-{n}")
    body = {"id": host_id, "tunnel_ip": f"198.18.{n // 250}.{n % 250 + 1}",
            "tunnel_type": "vxlan",
            "dpids": {b: f"0x{contract.dpid_hex(d)}" for b, d in dpids.items()}}
    status, reply = api.call("POST", "/v1/hosts", body)
    if status in (200, 201):
        assert HOST_ID.matches(host_id)
        with api.parts.store.tx() as tx:
            topo, _ = topology.build(tx)
        assert host_id in topo.hosts, "an accepted host must be in the flow model"
    else:
        assert not HOST_ID.matches(host_id)
        assert status in (400, 422), reply
        assert "id" in reply["error"]["message"], reply


_hosts = itertools.count(1)


@FEW
@given(mac=near(MAC), ip=st.one_of(near(IPV4_CIDR), st.just("dhcp")),
       container=near(CONTAINER_REF))
def test_every_port_the_api_accepts_fits_the_flow_model(mac, ip, container):
    body = {"host": "h1", "container": container, "ip": ip, "mac": mac, "pod": 7}
    try:
        req = validate.port_create(body)
    except ApiError as e:
        assert e.status in (400, 422)
        assert any(field in e.message for field in ("'mac'", "'ip'", "'container'")), e.message
        assert not (MAC.matches(mac) and CONTAINER_REF.matches(container)
                    and (IPV4_CIDR.matches(ip) or ip == "dhcp")) or e.code != schema.FORMAT
        return
    assert MAC.matches(mac) and CONTAINER_REF.matches(container)
    address = "198.18.135.9" if req.ip is None else str(req.ip)
    try:
        PortSpec(1, req.pod, "h1", 5, req.mac, address)
    except TopologyError as e:
        pytest.fail(f"the API accepted {body} but the flow model refuses it: {e}")


@FEW
@given(tunnel_ip=near(IPV4))
def test_every_tunnel_ip_the_api_accepts_fits_the_flow_model(tunnel_ip):
    body = {**H1, "tunnel_ip": tunnel_ip}
    try:
        reg = validate.host_registration(body)
    except ApiError as e:
        assert e.status in (400, 422) and "tunnel_ip" in e.message, e.message
        return
    HostSpec(reg.id, reg.tunnel_ip)
