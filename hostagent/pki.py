"""A small PKI for Loris over TLS (`loris pki init`), and OVS's side of it.

One CA signs a certificate for the controller (REST API and OpenFlow server; its IPs and
names in subjectAltName, so clients verify the address they dial) and one per host (the
host's Open vSwitch presents it to the controller; CN = the host id, which the controller
checks against the datapath ids the switch claims). EC P-256 keys, made with the `openssl`
binary. Layout of DIR:

    ca.pem ca.key                  the CA (keep ca.key offline once the hosts have theirs)
    controller.pem controller.key  for osken-manager --ctl-cert/--ctl-privkey and
                                   LORIS_API_CERT/LORIS_API_KEY
    hosts/<id>.pem hosts/<id>.key  for loris-hostagent --switch-cert/--switch-key

Keys are mode 0600. See docs/security.md.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import subprocess
import tempfile
from pathlib import Path

from flows import contract
from hostagent.ovs import Ovs

DAYS = 825
_DNS = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}"
                  r"[A-Za-z0-9])?)*$")


class PkiError(RuntimeError):
    pass


def _openssl(*args: str) -> None:
    try:
        proc = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise PkiError("the openssl command is missing: apt-get install openssl") from None
    if proc.returncode != 0:
        raise PkiError(f"openssl {args[0]} failed: {proc.stderr.strip()[-400:]}")


def _new_key_and_csr(key: Path, subject: str, csr: Path) -> None:
    old = os.umask(0o077)                 # the key is never readable by others, not even once
    try:
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", subject)
    finally:
        os.umask(old)
    key.chmod(0o600)


def _sign(directory: Path, csr: Path, out: Path, san: list[str], days: int) -> None:
    ext = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature",
           "extendedKeyUsage=serverAuth,clientAuth"]
    if san:
        ext.append("subjectAltName=" + ",".join(san))
    with tempfile.NamedTemporaryFile("w", suffix=".cnf") as f:
        f.write("\n".join(ext) + "\n")
        f.flush()
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(directory / "ca.pem"),
                 "-CAkey", str(directory / "ca.key"), "-set_serial",
                 "0x" + secrets.token_hex(16), "-days", str(days), "-sha256",
                 "-extfile", f.name, "-out", str(out))
    csr.unlink(missing_ok=True)


def _san(ips: list[str], dns: list[str]) -> list[str]:
    out = []
    for ip in ips:
        try:
            out.append(f"IP:{ipaddress.ip_address(ip)}")
        except ValueError:
            raise PkiError(f"{ip!r} is not an IP address (give the controller's address with "
                           "--controller-ip)") from None
    for name in dns:
        if not _DNS.match(name):
            raise PkiError(f"{name!r} is not a DNS name")
        out.append(f"DNS:{name}")
    return out


def init(directory: str | os.PathLike, controller_ips: list[str], controller_names: list[str],
         hosts: list[str], days: int = DAYS) -> list[Path]:
    """Create the CA, the controller's certificate and one per host in `directory` (which
    must not hold a CA yet). Returns the files made."""
    d = Path(directory)
    san = _san(controller_ips, controller_names)
    if not san:
        raise PkiError("the controller certificate needs its address: give --controller-ip "
                       "(and/or --controller-name)")
    _check_hosts(hosts)
    if (d / "ca.pem").exists() or (d / "ca.key").exists():
        raise PkiError(f"{d} already holds a CA; add hosts with `loris pki host {d} ID`, or "
                       "use an empty directory")
    d.mkdir(parents=True, exist_ok=True)
    old = os.umask(0o077)
    try:
        _openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt",
                 "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(d / "ca.key"),
                 "-out", str(d / "ca.pem"), "-days", str(days), "-sha256",
                 "-subj", "/O=Loris/CN=Loris CA",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    finally:
        os.umask(old)
    (d / "ca.pem").chmod(0o644)
    _new_key_and_csr(d / "controller.key", "/O=Loris/CN=loris-controller", d / "controller.csr")
    _sign(d, d / "controller.csr", d / "controller.pem", san, days)
    made = [d / "ca.pem", d / "ca.key", d / "controller.pem", d / "controller.key"]
    return made + add_hosts(d, hosts, days)


def add_hosts(directory: str | os.PathLike, hosts: list[str], days: int = DAYS) -> list[Path]:
    """A switch certificate (CN = host id) for each host, signed by the CA in `directory`."""
    d = Path(directory)
    _check_hosts(hosts)
    if not (d / "ca.key").exists():
        raise PkiError(f"no CA in {d}: run `loris pki init {d} --controller-ip IP` first")
    (d / "hosts").mkdir(exist_ok=True)
    made = []
    for host in hosts:
        key, cert = d / "hosts" / f"{host}.key", d / "hosts" / f"{host}.pem"
        _new_key_and_csr(key, f"/O=Loris/CN={host}", d / "hosts" / f"{host}.csr")
        _sign(d, d / "hosts" / f"{host}.csr", cert, [], days)
        made += [cert, key]
    return made


def _check_hosts(hosts: list[str]) -> None:
    for host in hosts:
        if not contract.HOST_ID.matches(host):
            raise PkiError(f"invalid host id {host!r}: use 1-63 letters, digits, '_', '.', '-'")


def configure_ovs(ovs: Ovs, key: str, cert: str, ca_cert: str) -> None:
    """Give the host's Open vSwitch its key, certificate and the CA (for ssl: controller
    targets); left alone when already so, since a change makes OVS reconnect."""
    paths = [str(Path(p).resolve()) for p in (key, cert, ca_cert)]
    for p in paths:
        if not os.access(p, os.R_OK):
            raise PkiError(f"cannot read {p} (OpenFlow over TLS: --switch-key, --switch-cert, "
                           "--ca-cert)")
    current = ovs.vsctl([["get-ssl"]], wait=False)
    want = dict(zip(("Private key", "Certificate", "CA Certificate"), paths, strict=True))
    have = dict(line.split(": ", 1) for line in current.splitlines() if ": " in line)
    if any(have.get(k) != v for k, v in want.items()):
        ovs.vsctl([["del-ssl"], ["set-ssl", *paths]])
