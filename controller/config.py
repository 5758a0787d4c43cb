"""Controller settings, declared once: environment variables first, then a `[loris]` section,
then defaults.

Each field of `Settings` is one setting; its declaration (`setting(...)`) gives the default
and the help text, and from its name come the environment variable (`LORIS_<NAME>`) and the
key of the `[loris]` section of the os-ken `--config-file` (loris_app registers
`config_file_options()`). The environment wins so that a test or a systemd unit can override
one value without a file. Fields declared `derived` are not read from either: the app sets
them from os-ken's own options.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import Field, dataclass, field, fields
from typing import Any

from flows import contract

DEFAULT_DB = "/var/lib/loris/loris.db"
DEFAULT_API_LISTEN = "0.0.0.0:8780"
DEFAULT_OPENFLOW_PORT = 6653
ENV_PREFIX = "LORIS_"
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def setting(default: Any, help: str, derived: bool = False) -> Any:  # noqa: A002 (oslo's name)
    """One setting: `derived` ones come from os-ken's options, not from env or file."""
    return field(default=default, metadata={"help": help, "derived": derived})


@dataclass(frozen=True)
class Settings:
    db: str = setting(DEFAULT_DB, "SQLite file: the controller's whole state")
    api_listen: str = setting(DEFAULT_API_LISTEN, "REST listen address HOST:PORT")
    openflow_port: int = setting(DEFAULT_OPENFLOW_PORT, "OpenFlow port told to agents at "
                                 "registration (os-ken's --ofp-*-listen-port)", derived=True)
    wire_timeout: float = setting(30.0, "seconds an agent has to wire a port")
    flow_timeout: float = setting(10.0, "seconds per OpenFlow round trip")
    lease_timeout: float = setting(30.0, "seconds a DHCP port has to report its lease")
    dhcp_lease_time: int = setting(3600, "DHCP lease time in seconds, sent in OFFER/ACK")
    dhcp_rate: float = setting(5.0, "DHCP packets per second per port (burst 10)")
    max_body: int = setting(64 * 1024, "largest REST request body in bytes")
    long_poll_max: float = setting(60.0, "cap of ?wait= on the desired-state long poll",
                                   derived=True)
    credentials: str = setting("", "directory of the token files; empty: <db dir>/credentials")
    api_cert: str = setting("", "serve REST over TLS with this certificate (PEM)...")
    api_key: str = setting("", "...and this key (PEM)")
    openflow_tls: bool = setting(False, "switches connect with ssl: (os-ken's --ctl-* "
                                 "options)", derived=True)
    # ---- operator safety: agent liveness, credentials, the audit trail (docs/security.md)
    agent_poll_interval: float = setting(1.0, "seconds the controller holds an agent's long "
                                         "poll; the agent polls again at once, so this is "
                                         "how often a live agent is heard from")
    agent_away_polls: int = setting(4, "poll intervals without a word from an agent after "
                                    "which it is away: a connect to its host fails at once")
    derived_agent_tokens: bool = setting(True, "accept agent tokens derived from agent.key "
                                         "for hosts never issued their own (upgrades)")
    audit_max_events: int = setting(100_000, "events the audit trail keeps at most")
    audit_max_days: float = setting(90.0, "days the audit trail keeps an event at most")
    metrics_listen: str = setting("", "also serve GET /metrics WITHOUT credentials on this "
                                  "HOST:PORT (plain HTTP; empty: only on the REST API, with "
                                  "the metrics or operator token)")
    # ---- the store's backend (issue #13; docs/ha.md): SQLite (default) or etcd
    store: str = setting("sqlite", "where the state lives: sqlite (the file `db`, one "
                         "controller) or etcd (the cluster at etcd_endpoints)")
    etcd_endpoints: str = setting("", "etcd client URLs, comma-separated, e.g. "
                                  "https://10.0.0.1:2379,https://10.0.0.2:2379")
    etcd_prefix: str = setting("/loris/v1/", "key prefix of this deployment's state in etcd")
    etcd_timeout: float = setting(5.0, "seconds an etcd request may take, failover included")
    etcd_election_wait: float = setting(3.0, "seconds the store goes on trying while etcd "
                                        "has no leader (an election) before a 503")
    etcd_ca_cert: str = setting("", "CA certificate (PEM) that etcd's server certificates "
                                "are checked against (https endpoints)")
    etcd_cert: str = setting("", "client certificate (PEM) presented to etcd (no CN with "
                             "etcd 3.4 and authentication: docs/ha.md)...")
    etcd_key: str = setting("", "...and its key (PEM)")
    etcd_user: str = setting("", "etcd user name (etcd authentication enabled)...")
    etcd_password_file: str = setting("", "...and the file holding its password")
    # ---- several controllers: the registry and OpenFlow mastership in etcd (docs/ha.md);
    # on when etcd_endpoints (above) is set: the controller then masters only the hosts it
    # holds the etcd key of
    controller_id: str = setting("", "this controller's name in the registry (default: "
                                 "hostname-RESTPORT)")
    advertise_api: str = setting("", "REST URL agents and the CLI reach this controller at "
                                 "(default: http://<this host's address>:<REST port>)")
    advertise_openflow: str = setting("", "OpenFlow target the agents' bridges connect to "
                                      "(default: tcp:<REST URL's host>:<OpenFlow port>)")
    ha_lease_ttl: int = setting(5, "seconds of the etcd lease that holds the registry entry "
                                "and the masterships (a dead controller's hosts move after "
                                "about this long)")
    ha_interval: float = setting(0.5, "seconds between two looks at the registry and the "
                                 "master keys")

    @property
    def etcd_endpoint_list(self) -> list[str]:
        return [e.strip() for e in self.etcd_endpoints.split(",") if e.strip()]

    @property
    def api_host(self) -> str:
        return split_listen(self.api_listen)[0]

    @property
    def api_port(self) -> int:
        return split_listen(self.api_listen)[1]

    @property
    def agent_away_after(self) -> float:
        """Seconds without a word from an agent after which it is away."""
        return self.agent_poll_interval * self.agent_away_polls


def configurable() -> list[Field]:
    """The settings read from the environment and the `[loris]` section."""
    return [f for f in fields(Settings) if not f.metadata["derived"]]


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _kind(f: Field) -> type:
    return type(f.default)


def coerce(name: str, kind: type, raw: object) -> Any:
    """`raw` (text from the environment, or a value os-ken parsed) as a `kind`; "false",
    "0", "no" and "off" are False for a bool, not True as bool("false") would be."""
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        word = str(raw).strip().lower()
        if word in TRUE_WORDS | FALSE_WORDS:
            return word in TRUE_WORDS
        raise ValueError(f"setting {name}={raw!r} must be true or false (also 1/0, yes/no, "
                         "on/off)")
    if kind in (int, float) and isinstance(raw, bool):
        raise ValueError(f"setting {name}={raw!r} must be a {kind.__name__}")
    try:
        return kind(raw)
    except (TypeError, ValueError):
        raise ValueError(f"setting {name}={raw!r} must be a {kind.__name__}") from None


def config_file_options() -> list[Any]:
    """The `[loris]` section's options for os-ken's (oslo) config parser, one per setting.
    No default here: an unset option is None and the next source decides."""
    from os_ken import cfg

    opt_types = {str: cfg.StrOpt, int: cfg.IntOpt, float: cfg.FloatOpt, bool: cfg.BoolOpt}
    return [opt_types[_kind(f)](f.name, help=f"{f.metadata['help']} (env {env_name(f.name)})")
            for f in configurable()]


def split_listen(text: str) -> tuple[str, int]:
    """'0.0.0.0:8780' -> ('0.0.0.0', 8780); a bare ':8780' listens on every address."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"listen address {text!r} must be HOST:PORT, e.g. 0.0.0.0:8780")
    return (host.strip("[]") or "0.0.0.0"), int(port)


def load(env: Mapping[str, str] | None = None, section: Mapping[str, object] | None = None,
         **overrides: object) -> Settings:
    """Build Settings from `env` (default os.environ), a `[loris]` section dict and overrides
    (any field, derived ones included). An empty environment variable counts as unset."""
    env = os.environ if env is None else env
    section = section or {}
    unknown = set(overrides) - {f.name for f in fields(Settings)}
    if unknown:
        raise TypeError(f"unknown settings: {sorted(unknown)}")
    configurable_names = {f.name for f in configurable()}
    values: dict[str, object] = {}
    for f in fields(Settings):
        raw = overrides.get(f.name)
        if raw is None and f.name in configurable_names:
            raw = env.get(env_name(f.name)) or None
            if raw is None:
                raw = section.get(f.name)
        if raw is not None:
            values[f.name] = coerce(f.name, _kind(f), raw)
    settings = Settings(**values)
    split_listen(settings.api_listen)     # fail at start-up, not at the first request
    if settings.agent_poll_interval <= 0 or settings.agent_away_polls < 2:
        raise ValueError(f"{env_name('agent_poll_interval')} must be above 0 and "
                         f"{env_name('agent_away_polls')} at least 2 (one late poll is no "
                         "absence)")
    if settings.agent_away_after <= contract.AGENT_RETRY_MAX_S:
        raise ValueError(f"{env_name('agent_poll_interval')} × {env_name('agent_away_polls')} "
                         f"must exceed {contract.AGENT_RETRY_MAX_S:g} s, the longest an agent "
                         "waits between tries after an outage (it would be judged away)")
    if settings.audit_max_events < 1 or settings.audit_max_days <= 0:
        raise ValueError(f"{env_name('audit_max_events')} and {env_name('audit_max_days')} "
                         "must be above 0")
    if settings.metrics_listen:
        split_listen(settings.metrics_listen)
    if settings.store not in ("sqlite", "etcd"):
        raise ValueError(f"{env_name('store')}={settings.store!r}: use sqlite or etcd")
    if settings.store == "etcd" and not settings.etcd_endpoint_list:
        raise ValueError(f"{env_name('store')}=etcd needs the cluster's client URLs in "
                         f"{env_name('etcd_endpoints')} (comma-separated)")
    if bool(settings.etcd_cert) != bool(settings.etcd_key):
        raise ValueError(f"an etcd client certificate needs both etcd_cert and etcd_key "
                         f"({env_name('etcd_cert')}, {env_name('etcd_key')})")
    if bool(settings.etcd_user) != bool(settings.etcd_password_file):
        raise ValueError(f"etcd authentication needs both etcd_user and etcd_password_file "
                         f"({env_name('etcd_user')}, {env_name('etcd_password_file')})")
    if settings.etcd_endpoints and (settings.ha_lease_ttl < 2 or settings.ha_interval <= 0):
        raise ValueError(f"{env_name('ha_lease_ttl')} must be at least 2 (etcd's minimum) "
                         f"and {env_name('ha_interval')} above 0")
    if bool(settings.api_cert) != bool(settings.api_key):
        raise ValueError(f"REST over TLS needs both api_cert and api_key ({env_name('api_cert')}"
                         f", {env_name('api_key')})")
    return settings
