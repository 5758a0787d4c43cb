"""Controller settings: environment variables first, then a `[loris]` section, then defaults.

The `[loris]` section lives in the os-ken `--config-file` (loris_app registers it); the
environment wins so that a test or a systemd unit can override one value without a file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

DEFAULT_DB = "/var/lib/loris/loris.db"
DEFAULT_API_LISTEN = "0.0.0.0:8780"
DEFAULT_OPENFLOW_PORT = 6653


@dataclass(frozen=True)
class Settings:
    db: str = DEFAULT_DB                 # LORIS_DB
    api_listen: str = DEFAULT_API_LISTEN  # LORIS_API_LISTEN, "host:port"
    openflow_port: int = DEFAULT_OPENFLOW_PORT   # told to agents at registration
    wire_timeout: float = 30.0           # LORIS_WIRE_TIMEOUT: agent must report the port by then
    flow_timeout: float = 10.0           # LORIS_FLOW_TIMEOUT: one OpenFlow round trip
    lease_timeout: float = 30.0          # LORIS_LEASE_TIMEOUT: a DHCP port must get its lease
    dhcp_lease_time: int = 3600          # LORIS_DHCP_LEASE_TIME, seconds, sent in OFFER/ACK
    dhcp_rate: float = 5.0               # LORIS_DHCP_RATE: DHCP packets/s per port (burst 10)
    max_body: int = 64 * 1024            # LORIS_MAX_BODY: bytes of a REST request body
    long_poll_max: float = 60.0          # cap of ?wait= on the desired-state long poll
    credentials: str = ""                # LORIS_CREDENTIALS: token files; "" = <db dir>/credentials
    api_cert: str = ""                   # LORIS_API_CERT: serve REST over TLS with this cert...
    api_key: str = ""                    # LORIS_API_KEY: ...and this key
    openflow_tls: bool = False           # switches connect with ssl: (os-ken's --ctl-* options)

    @property
    def api_host(self) -> str:
        return split_listen(self.api_listen)[0]

    @property
    def api_port(self) -> int:
        return split_listen(self.api_listen)[1]


_ENV = {
    "db": "LORIS_DB",
    "api_listen": "LORIS_API_LISTEN",
    "wire_timeout": "LORIS_WIRE_TIMEOUT",
    "flow_timeout": "LORIS_FLOW_TIMEOUT",
    "lease_timeout": "LORIS_LEASE_TIMEOUT",
    "dhcp_lease_time": "LORIS_DHCP_LEASE_TIME",
    "dhcp_rate": "LORIS_DHCP_RATE",
    "max_body": "LORIS_MAX_BODY",
    "credentials": "LORIS_CREDENTIALS",
    "api_cert": "LORIS_API_CERT",
    "api_key": "LORIS_API_KEY",
}


def split_listen(text: str) -> tuple[str, int]:
    """'0.0.0.0:8780' -> ('0.0.0.0', 8780); a bare ':8780' listens on every address."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"listen address {text!r} must be HOST:PORT, e.g. 0.0.0.0:8780")
    return (host.strip("[]") or "0.0.0.0"), int(port)


def load(env: Mapping[str, str] | None = None, section: Mapping[str, object] | None = None,
         **overrides: object) -> Settings:
    """Build Settings from `env` (default os.environ), a `[loris]` section dict and overrides."""
    env = os.environ if env is None else env
    section = section or {}
    values: dict[str, object] = {}
    for f in fields(Settings):
        raw = overrides.get(f.name)
        if raw is None and f.name in _ENV and env.get(_ENV[f.name]):
            raw = env[_ENV[f.name]]
        if raw is None and section.get(f.name) is not None:
            raw = section[f.name]
        if raw is None:
            continue
        kind = type(f.default)
        try:
            values[f.name] = kind(raw)
        except (TypeError, ValueError):
            raise ValueError(f"setting {f.name}={raw!r} must be a {kind.__name__}") from None
    settings = Settings(**values)
    split_listen(settings.api_listen)     # fail at start-up, not at the first request
    if bool(settings.api_cert) != bool(settings.api_key):
        raise ValueError("REST over TLS needs both api_cert and api_key (LORIS_API_CERT, "
                         "LORIS_API_KEY)")
    return settings
