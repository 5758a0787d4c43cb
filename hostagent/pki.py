"""A small PKI for Loris over TLS (`loris pki init`), and OVS's side of it.

One CA signs a certificate for the controller (REST API and OpenFlow server; its IPs and
names in subjectAltName, so clients verify the address they dial) and one per host (the
host's Open vSwitch presents it to the controller; CN = the host id, which the controller
checks against the datapath ids the switch claims). EC P-256 keys, made with the
`cryptography` library (hostagent/certs.py). Layout of DIR:

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
from pathlib import Path

from flows import contract

TYPE_CHECKING = False   # the CLI imports this module for its defaults: keep that cheap
if TYPE_CHECKING:
    from hostagent.ovs import Ovs

DAYS = 825
_DNS = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}"
                  r"[A-Za-z0-9])?)*")  # matched whole (fullmatch): no trailing newline

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class PkiError(RuntimeError):
    pass


def _san(ips: list[str], dns: list[str]) -> tuple[list[IpAddress], list[str]]:
    addresses = []
    for ip in ips:
        try:
            addresses.append(ipaddress.ip_address(ip))
        except ValueError:
            raise PkiError(f"{ip!r} is not an IP address (give the controller's address with "
                           "--controller-ip)") from None
    for name in dns:
        if not _DNS.fullmatch(name):
            raise PkiError(f"{name!r} is not a DNS name")
    return addresses, list(dns)


def init(directory: str | os.PathLike, controller_ips: list[str], controller_names: list[str],
         hosts: list[str], days: int = DAYS) -> list[Path]:
    """Create the CA, the controller's certificate and one per host in `directory` (which
    must not hold a CA yet). Returns the files made."""
    from hostagent import certs  # cryptography: only `loris pki` pays for its import

    d = Path(directory)
    ips, names = _san(controller_ips, controller_names)
    if not ips and not names:
        raise PkiError("the controller certificate needs its address: give --controller-ip "
                       "(and/or --controller-name)")
    _check_hosts(hosts)
    if (d / "ca.pem").exists() or (d / "ca.key").exists():
        raise PkiError(f"{d} already holds a CA; add hosts with `loris pki host {d} ID`, or "
                       "use an empty directory")
    d.mkdir(parents=True, exist_ok=True)
    ca_key = certs.new_key()
    ca_cert = certs.ca_certificate(ca_key, days)
    certs.write_key(d / "ca.key", ca_key)
    certs.write_certificate(d / "ca.pem", ca_cert)
    key = certs.new_key()
    certs.write_key(d / "controller.key", key)
    certs.write_certificate(d / "controller.pem", certs.signed_certificate(
        key.public_key(), "loris-controller", ips, names, ca_cert, ca_key, days))
    made = [d / "ca.pem", d / "ca.key", d / "controller.pem", d / "controller.key"]
    return made + add_hosts(d, hosts, days)


def add_hosts(directory: str | os.PathLike, hosts: list[str], days: int = DAYS) -> list[Path]:
    """A switch certificate (CN = host id) for each host, signed by the CA in `directory`."""
    from hostagent import certs

    d = Path(directory)
    _check_hosts(hosts)
    if not (d / "ca.key").exists():
        raise PkiError(f"no CA in {d}: run `loris pki init {d} --controller-ip IP` first")
    try:
        ca_cert, ca_key = certs.load_ca(d / "ca.pem", d / "ca.key")
    except (OSError, ValueError) as e:
        raise PkiError(f"cannot use the CA in {d}: {e}") from None
    (d / "hosts").mkdir(exist_ok=True)
    made = []
    for host in hosts:
        key_path, cert_path = d / "hosts" / f"{host}.key", d / "hosts" / f"{host}.pem"
        key = certs.new_key()
        certs.write_key(key_path, key)
        certs.write_certificate(cert_path, certs.signed_certificate(
            key.public_key(), host, [], [], ca_cert, ca_key, days))
        made += [cert_path, key_path]
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


_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def certificate_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of the DER of the (first) certificate in a PEM file: what the agent
    declares at registration and the controller compares its switch's certificate with."""
    import ssl  # here, not at the top: the CLI imports this module for its defaults

    try:
        found = _PEM_CERT.search(Path(path).read_text())
        der = ssl.PEM_cert_to_DER_cert(found.group(0)) if found else None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise PkiError(f"cannot read the certificate {path} (--switch-cert): {e}") from None
    if der is None:
        raise PkiError(f"{path} holds no PEM certificate (--switch-cert)")
    import hashlib  # here: its OpenSSL bindings cost the CLI's start-up ~6 ms

    return hashlib.sha256(der).hexdigest()
