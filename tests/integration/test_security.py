"""Loris fully over TLS, with authentication and least privilege (docs/security.md).

One lab of three hosts for the module: the controller serves REST and OpenFlow over TLS
only (certificates from `loris pki init`), h1 and h2 run agents with their own agent
tokens and switch certificates; h3 has no agent and plays the attacker's switch. Plain
network-namespace containers (the agent wires them like Docker ones).
"""

from __future__ import annotations

import os
import ssl
import stat
import time

import pytest
from helpers import cli_connect, ping, pings, wait_for, wait_synced

from flows import contract
from lab import Lab
from lab.core import venv_bin
from lab.naming import API_PORT, CONTROL_IP, OPENFLOW_PORT
from lab.procs import socket_in_netns

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def lab(make_cluster):
    return make_cluster(hosts=3, docker=False, tls=True, agents=["h1", "h2"])


def test_connect_and_ping_across_hosts_over_tls(lab):
    for h in ("h1", "h2"):
        for bridge in ("br-int", "br-tun"):
            assert lab.ovs(h).vsctl("get-controller", bridge).strip() == \
                f"ssl:{CONTROL_IP}:{OPENFLOW_PORT}"
    status, hosts = lab.api("GET", "/v1/hosts")
    assert status == 200 and all(h["openflow"]["tls"] for h in hosts)
    a = lab.add_container("h1", "a", kind="netns")
    b = lab.add_container("h2", "b", kind="netns")
    assert lab.loris_env("h1")["LORIS_CONTROLLER"].startswith("https://")
    for c, ip in ((a, "198.18.135.5/24"), (b, "198.18.135.6/24")):
        cli_connect(lab, c.short, ip, 7)
    r = ping(lab, a, "198.18.135.6", count=3, interval=0.2, wait=2)
    assert r.returncode == 0, r.stdout + r.stderr


def test_plain_http_and_untrusted_server_are_refused(lab):
    # a plain-HTTP client gets no HTTP answer from the TLS port
    sock = socket_in_netns(lab.netns_path("ctl"))
    sock.settimeout(5)
    sock.connect((CONTROL_IP, API_PORT))
    sock.sendall(b"GET /v1/health HTTP/1.0\r\n\r\n")
    try:
        reply = sock.recv(4096)
    except (ConnectionResetError, TimeoutError):
        reply = b""
    finally:
        sock.close()
    assert not reply.startswith(b"HTTP/"), reply
    # a client that trusts another CA refuses the controller (and so does the CLI)
    lab.run("ctl", [venv_bin() / "loris", "pki", "init", lab.dir / "pki-other",
                    "--controller-ip", CONTROL_IP, "--host", "h3"])
    other = ssl.create_default_context(cafile=str(lab.dir / "pki-other" / "ca.pem"))
    sock = socket_in_netns(lab.netns_path("ctl"))
    sock.settimeout(5)
    sock.connect((CONTROL_IP, API_PORT))
    with pytest.raises(ssl.SSLCertVerificationError):
        other.wrap_socket(sock, server_hostname=CONTROL_IP)
    sock.close()
    env = {**lab.loris_env("h1"), "LORIS_CA_CERT": str(lab.dir / "pki-other" / "ca.pem")}
    r = lab.run("h1", [venv_bin() / "loris", "status"], env=env, check=False)
    assert r.returncode == 1 and "TLS with controller" in r.stderr and "--ca-cert" in r.stderr
    # and the REST API itself still wants a token, over TLS too
    status, body = lab.api("GET", "/v1/hosts", token=False)
    assert status == 401 and body["error"]["code"] == "unauthorized"
    assert lab.api("GET", "/v1/health", token=False)[0] == 200


H3_DPID = contract.dpids("h3")["br-int"]


def _rogue_switch(lab: Lab, cert_dir, host: str, target: str, expect_session: bool) -> None:
    """On h3 (no agent): a bridge claiming h3's br-int datapath id connects to `target`
    with the switch certificate of `host` from `cert_dir`. Whether the controller took it
    as a datapath shows in its log ("datapath 0x... connected from")."""
    log = lab.processes["controller"]
    mark = f"datapath {H3_DPID:#018x} connected from"
    before = log.log_text().count(mark)
    ovs = lab.ovs("h3")
    ovs.vsctl("--if-exists", "del-br", "br-rogue")
    ovs.vsctl("del-ssl")
    ovs.vsctl("set-ssl", cert_dir / "hosts" / f"{host}.key", cert_dir / "hosts" / f"{host}.pem",
              cert_dir / "ca.pem")
    ovs.vsctl("add-br", "br-rogue", "--", "set", "bridge", "br-rogue",
              f"datapath_type={lab.datapath_type}", "fail_mode=secure", "protocols=OpenFlow13",
              f"other-config:datapath-id={contract.dpid_hex(H3_DPID)}")
    ovs.vsctl("set-controller", "br-rogue", target)
    if expect_session:
        wait_for(lambda: log.log_text().count(mark) > before, 10,
                 f"the controller accepting {host}'s switch over {target}")
    else:
        time.sleep(4)       # OVS retries within 1-2 s: several attempts
        assert log.log_text().count(mark) == before, f"{host}'s switch got a session"


def test_switches_with_untrusted_or_foreign_certificates_are_refused(lab):
    pki, log = lab.pki_dir, lab.processes["controller"]
    target = f"ssl:{CONTROL_IP}:{OPENFLOW_PORT}"
    other = lab.dir / "pki-other"
    if not other.exists():
        lab.run("ctl", [venv_bin() / "loris", "pki", "init", other, "--controller-ip",
                        CONTROL_IP, "--host", "h3"])
    # positive control: h3's own certificate for h3's datapath id is accepted
    _rogue_switch(lab, pki, "h3", target, expect_session=True)
    # a certificate of another CA: the TLS handshake fails
    _rogue_switch(lab, other, "h3", target, expect_session=False)
    # plain TCP to the OpenFlow port: no session
    _rogue_switch(lab, pki, "h3", f"tcp:{CONTROL_IP}:{OPENFLOW_PORT}", expect_session=False)
    # a valid certificate of h1 claiming h3's datapath id: the controller hangs up
    before = log.log_text().count("certificate (CN h1)")
    _rogue_switch(lab, pki, "h1", target, expect_session=False)
    assert log.log_text().count("certificate (CN h1)") > before
    status, hosts = lab.api("GET", "/v1/hosts")
    assert sorted(h["id"] for h in hosts) == ["h1", "h2"]
    lab.ovs("h3").vsctl("del-br", "br-rogue")
    wait_synced(lab, hosts=["h1", "h2"])           # the real hosts never noticed


def test_an_agent_acts_only_for_its_own_host(lab):
    token_h1 = lab.agent_token_file("h1").read_text().strip()
    status, ports = lab.api("GET", "/v1/ports")
    port_b = next(p for p in ports if p["host"] == "h2")
    status, desired = lab.api("GET", "/v1/hosts/h1/desired", token=token_h1)
    assert status == 200 and desired["host"]["id"] == "h1"
    # reporting a port of host B (through B's report) is refused...
    status, body = lab.api("PUT", "/v1/hosts/h2/actual", {
        "version": desired["version"], "ports": {str(port_b["id"]): {
            "error": {"code": "container_not_found", "message": "gone"}}}}, token=token_h1)
    assert status == 403 and "agent of host h1" in body["error"]["message"], body
    # ...and so is registering as B, deleting B's port, or operator actions
    _, h2 = lab.api("GET", "/v1/hosts/h2")
    status, body = lab.api("POST", "/v1/hosts", {
        "id": "h2", "tunnel_ip": "198.18.0.11", "tunnel_type": "vxlan", "dpids": h2["dpids"]},
        token=token_h1)
    assert status == 403, body
    assert lab.api("DELETE", f"/v1/ports/{port_b['id']}", token=token_h1)[0] == 403
    assert lab.api("POST", "/v1/pods", {"id": 9}, token=token_h1)[0] == 403
    assert lab.api("POST", "/v1/hosts/h1/token", token=token_h1)[0] == 403
    # nothing changed: B's port is intact and still reachable
    status, after = lab.api("GET", f"/v1/ports/{port_b['id']}")
    assert status == 200 and after["error"] is None and after["state"] == "active"
    _, h2_after = lab.api("GET", "/v1/hosts/h2")
    assert h2_after["tunnel_ip"] == h2["tunnel_ip"]
    assert pings(lab, "a", "198.18.135.6", wait=2)


def test_credentials_are_private_and_loris_token_issues_agent_tokens(lab):
    creds = lab.credentials_dir
    assert stat.S_IMODE(creds.stat().st_mode) == 0o700
    for f in creds.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    r = lab.loris("h1", "token", "h7")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("agent:h7:")
    env = {**lab.loris_env("h1"), "LORIS_TOKEN_FILE": str(lab.agent_token_file("h1"))}
    r = lab.run("h1", [venv_bin() / "loris", "ports"], env=env, check=False)
    assert r.returncode == 1 and "operator token" in r.stderr        # an agent's token: 403
    env = {k: v for k, v in lab.loris_env("h1").items() if k != "LORIS_TOKEN_FILE"}
    r = lab.run("h1", [venv_bin() / "loris", "ports"], env=env, check=False)
    assert r.returncode == 1 and "needs credentials" in r.stderr     # none at all: 401


def _listening(lab: Lab, target: str) -> list[str]:
    out = lab.run(target, ["ss", "-H", "-l", "-t", "-u", "-n", "-p"]).stdout
    return [line for line in out.splitlines() if line.strip()]


def test_hosts_listen_on_nothing_and_the_controller_on_two_ports(lab):
    for h in ("h1", "h2"):
        assert _listening(lab, h) == [], f"{h} listens: {_listening(lab, h)}"
    ctl = _listening(lab, "ctl")
    pid = lab.processes["controller"].pid
    ports = sorted(int(line.split()[4].rsplit(":", 1)[1]) for line in ctl)
    assert ports == sorted([API_PORT, OPENFLOW_PORT]), ctl
    assert all(f"pid={pid}," in line for line in ctl), ctl
    assert os.path.exists(lab.pki_dir / "ca.key")
