"""Controller settings: one declaration (config.Settings) for defaults, environment names and
the `[loris]` config-file options; typed coercion."""

from __future__ import annotations

from dataclasses import fields

import pytest

from controller import config


def test_settings_come_from_env_then_loris_section_then_defaults():
    assert config.load(env={}).api_listen == "0.0.0.0:8780"
    assert config.load(env={}).db == "/var/lib/loris/loris.db"
    s = config.load(env={"LORIS_API_LISTEN": "127.0.0.1:9000", "LORIS_WIRE_TIMEOUT": "5"},
                    section={"api_listen": "0.0.0.0:1", "db": "/tmp/x.db", "wire_timeout": None})
    assert (s.api_host, s.api_port, s.db, s.wire_timeout) == ("127.0.0.1", 9000, "/tmp/x.db", 5.0)
    with pytest.raises(ValueError):
        config.load(env={"LORIS_API_LISTEN": "nowhere"})
    with pytest.raises(ValueError):
        config.load(env={"LORIS_FLOW_TIMEOUT": "soon"})


def test_every_configurable_setting_has_its_env_name_and_file_option():
    names = [f.name for f in config.configurable()]
    assert names == ["db", "api_listen", "wire_timeout", "flow_timeout", "lease_timeout",
                     "dhcp_lease_time", "dhcp_rate", "max_body", "credentials", "api_cert",
                     "api_key",
                     # operator safety (docs/security.md)
                     "agent_poll_interval", "agent_away_polls", "derived_agent_tokens",
                     "audit_max_events", "audit_max_days",
                     "metrics_listen",
                     # the store's backend (docs/ha.md)
                     "store", "etcd_endpoints", "etcd_prefix", "etcd_timeout", "etcd_election_wait",
                     "etcd_ca_cert",
                     "etcd_cert", "etcd_key", "etcd_user", "etcd_password_file",
                     # several controllers (docs/ha.md)
                     "controller_id", "advertise_api", "advertise_openflow",
                     "ha_lease_ttl", "ha_interval"]
    options = {o.dest: o for o in config.config_file_options()}
    assert list(options) == names
    for f in config.configurable():
        env = config.env_name(f.name)
        assert env == "LORIS_" + f.name.upper() and env in options[f.name].help
    assert type(options["wire_timeout"]).__name__ == "FloatOpt"
    assert type(options["max_body"]).__name__ == "IntOpt"
    assert type(options["db"]).__name__ == "StrOpt"


def test_env_beats_section_beats_default_for_each_kind():
    examples = {"db": "/tmp/e.db", "api_listen": "127.0.0.1:1", "credentials": "/tmp/creds",
                int: 7, float: 2.5}
    for f in config.configurable():
        example = examples.get(f.name, examples.get(type(f.default)))
        if example is None:          # api_cert and api_key: only as a pair (below)
            continue
        from_env = config.load(env={config.env_name(f.name): str(example)},
                               section={f.name: None})
        from_file = config.load(env={}, section={f.name: example})
        assert getattr(from_env, f.name) == example == getattr(from_file, f.name)
        assert getattr(config.load(env={}), f.name) == f.default


def test_derived_settings_are_not_read_from_env_or_file():
    derived = {f.name for f in fields(config.Settings)} - {f.name for f in config.configurable()}
    assert derived == {"openflow_port", "openflow_tls", "long_poll_max"}
    s = config.load(env={"LORIS_OPENFLOW_PORT": "1", "LORIS_OPENFLOW_TLS": "true"},
                    section={"openflow_port": 1})
    assert (s.openflow_port, s.openflow_tls) == (6653, False)
    s = config.load(env={}, openflow_port=6633, openflow_tls=True)
    assert (s.openflow_port, s.openflow_tls) == (6633, True)


@pytest.mark.parametrize("text,value", [
    ("false", False), ("0", False), ("no", False), ("off", False), ("False", False),
    ("true", True), ("1", True), ("yes", True), ("ON", True), (" true ", True),
    (True, True), (False, False),
])
def test_bools_are_coerced_from_words_not_truthiness(text, value):
    assert config.coerce("openflow_tls", bool, text) is value


@pytest.mark.parametrize("kind,raw", [(bool, "maybe"), (bool, ""), (int, "5.5"), (int, True),
                                      (float, "soon"), (float, False)])
def test_bad_values_name_the_setting(kind, raw):
    with pytest.raises(ValueError, match="setting x="):
        config.coerce("x", kind, raw)


def test_numbers_and_strings_are_coerced():
    assert config.coerce("x", int, "42") == 42
    assert config.coerce("x", float, "1") == 1.0 and config.coerce("x", float, 2) == 2.0
    assert config.coerce("x", str, "a") == "a"


def test_tls_needs_cert_and_key_and_unknown_overrides_are_refused():
    with pytest.raises(ValueError, match="LORIS_API_CERT, LORIS_API_KEY"):
        config.load(env={"LORIS_API_KEY": "/k.pem"})
    with pytest.raises(TypeError, match="colour"):
        config.load(env={}, colour="red")


def test_store_settings_name_what_is_missing():
    assert config.load(env={}).store == "sqlite"
    s = config.load(env={"LORIS_STORE": "etcd",
                         "LORIS_ETCD_ENDPOINTS": "http://10.0.0.1:2379, http://10.0.0.2:2379"})
    assert s.etcd_endpoint_list == ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
    with pytest.raises(ValueError, match="sqlite or etcd"):
        config.load(env={"LORIS_STORE": "zookeeper"})
    with pytest.raises(ValueError, match="LORIS_ETCD_ENDPOINTS"):
        config.load(env={"LORIS_STORE": "etcd"})
    with pytest.raises(ValueError, match="LORIS_ETCD_KEY"):
        config.load(env={"LORIS_ETCD_CERT": "/x.pem"})
    with pytest.raises(ValueError, match="LORIS_ETCD_PASSWORD_FILE"):
        config.load(env={"LORIS_ETCD_USER": "loris"})
