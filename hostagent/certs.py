"""X.509 material for `loris pki`, made with the `cryptography` library: EC P-256 keys, a
self-signed CA, certificates it signs, and their PEM files.

The certificates are what `openssl req -x509` / `openssl x509 -req` made before (OpenSSL 3.0
defaults): version 3, SHA-256 ECDSA signatures, subject O=Loris/CN=..., a subject key
identifier and the CA's authority key identifier, random serials. Keys are unencrypted
PKCS#8 PEM ("BEGIN PRIVATE KEY"), mode 0600 from the moment they exist; certificates are
mode 0644.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey


def new_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str | None) -> x509.Name:
    """O=Loris/CN=common_name; O=Loris alone when `common_name` is None (an etcd 3.4
    member's certificate: its gateway presents it to its own server, which refuses a
    certificate with a CN once authentication is on)."""
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Loris")]
    if common_name is not None:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
             days: int) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    return (x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=days)))  # fmt: skip


def ca_certificate(key: PrivateKey, days: int) -> x509.Certificate:
    """The self-signed CA, subject O=Loris/CN=Loris CA: CA:TRUE, keyCertSign and cRLSign,
    both critical."""
    subject = _name("Loris CA")
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (_builder(subject, subject, key.public_key(), days)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .sign(key, hashes.SHA256()))  # fmt: skip


def signed_certificate(public_key: ec.EllipticCurvePublicKey, common_name: str | None,
                       ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address],
                       dns_names: list[str], ca_cert: x509.Certificate, ca_key: PrivateKey,
                       days: int) -> x509.Certificate:
    """A certificate for a TLS server and client (the controller, a host's switch): CA:FALSE,
    digitalSignature, serverAuth and clientAuth; `ips` and `dns_names` in subjectAltName."""
    builder = (_builder(_name(common_name), ca_cert.subject, public_key, days)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(_key_usage(cert_sign=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                     ExtendedKeyUsageOID.CLIENT_AUTH]),
                              critical=False))  # fmt: skip
    alt: list[x509.GeneralName] = [x509.IPAddress(ip) for ip in ips]
    alt += [x509.DNSName(name) for name in dns_names]
    if alt:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (builder
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                ca_ski), critical=False)
            .sign(ca_key, hashes.SHA256()))  # fmt: skip


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=not cert_sign, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=cert_sign, crl_sign=cert_sign, encipher_only=False,
                         decipher_only=False)  # fmt: skip


def write_key(path: Path, key: PrivateKey) -> None:
    """The key as PKCS#8 PEM, never readable by others (created 0600, an old file's mode
    reset to 0600 before it is written)."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def write_certificate(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.chmod(0o644)


def load_ca(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, PrivateKey]:
    """The CA certificate and key; ValueError if they are not an EC CA key pair."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_path} is not an EC private key")
    if key.public_key().public_numbers() != cert.public_key().public_numbers():
        raise ValueError(f"{key_path} is not the key of {cert_path}")
    return cert, key
