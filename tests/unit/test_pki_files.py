"""`loris pki` files, read back with `cryptography`: names, PEM formats, EC P-256 keys,
subjects, subjectAltNames, CA constraints, key usages and file modes."""

from __future__ import annotations

import ipaddress
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hostagent import pki


def _cert(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _subject(cert: x509.Certificate) -> list[str]:
    return [a.rfc4514_string() for a in cert.subject]


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_makes_the_ca_controller_and_host_files(tmp_path):
    d = tmp_path / "pki"
    made = pki.init(d, ["198.19.0.1", "fd00::1"], ["ctl.example"], ["h1", "h2"], days=30)
    assert [p.relative_to(d).as_posix() for p in made] == [
        "ca.pem", "ca.key", "controller.pem", "controller.key",
        "hosts/h1.pem", "hosts/h1.key", "hosts/h2.pem", "hosts/h2.key"]
    for p in made:
        text = p.read_text()
        if p.suffix == ".key":
            assert text.startswith("-----BEGIN PRIVATE KEY-----\n") and _mode(p) == 0o600
            key = serialization.load_pem_private_key(p.read_bytes(), password=None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            assert isinstance(key.curve, ec.SECP256R1)
        else:
            assert text.startswith("-----BEGIN CERTIFICATE-----\n") and _mode(p) == 0o644

    ca = _cert(d / "ca.pem")
    assert _subject(ca) == ["O=Loris", "CN=Loris CA"]
    assert ca.issuer == ca.subject and ca.version == x509.Version.v3
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    assert not ku.value.digital_signature
    assert (ca.not_valid_after_utc - ca.not_valid_before_utc).days == 30

    ctl = _cert(d / "controller.pem")
    assert _subject(ctl) == ["O=Loris", "CN=loris-controller"]
    assert ctl.issuer == ca.subject
    san = ctl.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("198.19.0.1"),
                                                       ipaddress.ip_address("fd00::1")]
    assert san.get_values_for_type(x509.DNSName) == ["ctl.example"]
    for cert, cn in ((ctl, "loris-controller"), (_cert(d / "hosts" / "h2.pem"), "h2")):
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == cn
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
        assert bc.critical and not bc.value.ca
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
        assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        assert aki.key_identifier == ski.digest
        cert.verify_directly_issued_by(ca)
    with pytest.raises(x509.ExtensionNotFound):
        _cert(d / "hosts" / "h1.pem").extensions.get_extension_for_class(
            x509.SubjectAlternativeName)


def test_add_hosts_renews_a_host_and_keeps_its_key_private(tmp_path):
    d = tmp_path / "pki"
    pki.init(d, ["198.19.0.1"], [], ["h1"])
    old = (d / "hosts" / "h1.pem").read_bytes()
    (d / "hosts" / "h1.key").chmod(0o644)
    assert pki.add_hosts(d, ["h1"]) == [d / "hosts" / "h1.pem", d / "hosts" / "h1.key"]
    assert (d / "hosts" / "h1.pem").read_bytes() != old
    assert _mode(d / "hosts" / "h1.key") == 0o600


def test_pki_refuses_bad_input(tmp_path):
    with pytest.raises(pki.PkiError, match="not a DNS name"):
        pki.init(tmp_path / "a", ["198.19.0.1"], ["ctl.example\n"], [])
    with pytest.raises(pki.PkiError, match="invalid host id"):
        pki.init(tmp_path / "a", ["198.19.0.1"], [], ["h1\n"])
    assert not (tmp_path / "a").exists()
    d = tmp_path / "b"
    pki.init(d, ["198.19.0.1"], [], [])
    (d / "ca.key").write_bytes(b"garbage")
    with pytest.raises(pki.PkiError, match="cannot use the CA in"):
        pki.add_hosts(d, ["h1"])
