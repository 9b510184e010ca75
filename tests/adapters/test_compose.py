"""The deployment files hold together: docker-compose.yml, the broker's config and ACL, and
the daemon's config it mounts (checked as TOML structure, not through the config loader)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(doc, dict)
    return doc


def _mounts(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Mount target -> (source, mode) of a service's short-syntax volumes."""
    out = {}
    for entry in service.get("volumes", []):
        source, target, *mode = str(entry).split(":")
        out[target] = (source, mode[0] if mode else "rw")
    return out


def _live_config() -> dict[str, Any]:
    tradeloop = _compose()["services"]["tradeloop"]
    source, mode = _mounts(tradeloop)["/config/live.toml"]
    assert mode == "ro"
    return tomllib.loads((ROOT / source).read_text())


def test_compose_services_broker_and_daemon() -> None:
    services = _compose()["services"]
    assert set(services) == {"mosquitto", "tradeloop"}
    assert services["mosquitto"]["image"] == "eclipse-mosquitto:2"
    daemon = services["tradeloop"]
    assert daemon["command"] == ["run", "--config", "/config/live.toml"]
    assert "mosquitto" in daemon["depends_on"]
    assert daemon["restart"] == "unless-stopped"
    assert services["mosquitto"]["restart"] == "unless-stopped"


def test_compose_broker_mounts_config_acl_and_password_file() -> None:
    broker = _compose()["services"]["mosquitto"]
    mounts = _mounts(broker)
    conf_source, conf_mode = mounts["/mosquitto/config/mosquitto.conf"]
    assert (conf_source, conf_mode) == ("./docs/mosquitto.conf", "ro")
    conf = (ROOT / conf_source).read_text()
    settings = dict(
        line.split(None, 1) for line in conf.splitlines() if line.strip() and line[0] != "#"
    )
    assert settings["allow_anonymous"] == "false"
    # the files the broker reads are mounted where its config looks for them
    acl_source, _ = mounts[settings["acl_file"]]
    assert (ROOT / acl_source).is_file()
    passwd_source, passwd_mode = mounts[settings["password_file"]]
    assert passwd_source.startswith("./deploy/") and passwd_mode == "ro"
    assert "mosquitto_passwd" in (ROOT / "docker-compose.yml").read_text()


def test_compose_acl_lets_only_the_operator_send_commands() -> None:
    acl = (ROOT / "docs" / "mosquitto.acl").read_text()
    users: dict[str, list[str]] = {}
    current = None
    for line in acl.splitlines():
        if line.startswith("user "):
            current = line.split()[1]
            users[current] = []
        elif line.startswith("topic ") and current is not None:
            users[current].append(line)
    assert set(users) >= {"node1", "node1-reconcile", "operator", "oms", "feed"}
    # patterns apply to every user: none may grant commands
    patterns = [line for line in acl.splitlines() if line.startswith("pattern ")]
    assert not [p for p in patterns if "command" in p and re.match(r"pattern (write|readwrite)", p)]
    writers = {
        u
        for u, rules in users.items()
        for r in rules
        if re.fullmatch(r"topic (write|readwrite) (#|tradeloop/\+/command)", r)
    }
    assert writers == {"operator"}


def test_compose_daemon_journal_on_a_named_volume_at_the_configured_dir() -> None:
    doc = _compose()
    mounts = _mounts(doc["services"]["tradeloop"])
    journal_dir = _live_config()["journal"]["dir"]
    source, mode = mounts[journal_dir.rstrip("/")]
    assert mode == "rw" and source in doc["volumes"]


def test_compose_daemon_secrets_come_from_the_variables_the_config_names() -> None:
    env = _compose()["services"]["tradeloop"]["environment"]
    cfg = _live_config()
    for name in (
        cfg["mqtt"]["username_env"],
        cfg["mqtt"]["password_env"],
        cfg["live"]["command_key_env"],
    ):
        assert name in env
        assert str(env[name]).startswith("${"), f"{name} is a literal in the compose file"


@pytest.mark.parametrize(
    ("section", "keys"),
    [
        (
            "mqtt",
            {
                "host",
                "port",
                "topic_prefix",
                "username_env",
                "password_env",
                "format",
                "market_data_qos",
                "tls",
            },
        ),
        (
            "live",
            {
                "node",
                "account",
                "order_timeout",
                "heartbeat",
                "cancel_on_stop",
                "command_key_env",
                "metrics_port",
            },
        ),
        ("journal", {"dir", "fsync"}),
        ("strategy", {"name"}),
        ("risk", set()),
    ],
)
def test_compose_live_config_section_has_its_keys(section: str, keys: set[str]) -> None:
    cfg = _live_config()
    assert isinstance(cfg[section], dict)
    assert keys <= set(cfg[section])


def test_compose_live_config_is_a_live_session_on_the_compose_broker() -> None:
    cfg = _live_config()
    assert cfg["mode"] in {"shadow", "paper", "live"}
    assert cfg["instruments"] and all({"symbol", "venue"} <= set(i) for i in cfg["instruments"])
    assert cfg["features"]
    assert cfg["mqtt"]["host"] in _compose()["services"]
    assert cfg["mqtt"]["format"] in {"json", "msgpack"}
    assert cfg["mqtt"]["market_data_qos"] in {0, 1}
    assert cfg["live"]["order_timeout"] == "5s" and cfg["live"]["heartbeat"] == "1s"


def _broker_settings() -> dict[str, str]:
    conf = (ROOT / "docs" / "mosquitto.conf").read_text()
    return dict(
        line.split(None, 1) for line in conf.splitlines() if line.strip() and line[0] != "#"
    )


def test_compose_broker_is_tls_only_with_client_ids_bound_to_users() -> None:
    settings = _broker_settings()
    conf = (ROOT / "docs" / "mosquitto.conf").read_text()
    assert [line for line in conf.splitlines() if line.startswith("listener")] == ["listener 8883"]
    assert settings["use_username_as_clientid"] == "true"
    mounts = _mounts(_compose()["services"]["mosquitto"])
    for key in ("cafile", "certfile", "keyfile"):
        source, mode = mounts[settings[key]]
        assert source.startswith("./deploy/certs/") and mode == "ro"
    assert _compose()["services"]["mosquitto"]["ports"] == ["8883:8883"]


def test_compose_daemon_tls_bound_ids_metrics_on_loopback_not_root() -> None:
    services = _compose()["services"]
    cfg = _live_config()
    assert cfg["mqtt"]["tls"] is True and cfg["mqtt"]["port"] == 8883
    assert cfg["mqtt"]["bind_client_id"] is True
    source, mode = _mounts(services["tradeloop"])[cfg["mqtt"]["ca_file"]]
    assert source == "./deploy/certs/ca.crt" and mode == "ro"
    # metrics: the container's compose-network name, published on the host's loopback only
    assert cfg["live"]["metrics_host"] == services["tradeloop"]["hostname"]
    assert services["tradeloop"]["ports"] == [f"127.0.0.1:{cfg['live']['metrics_port']}:9108"]
    for service in services.values():
        uid = str(service["user"]).split(":")[0]
        assert uid.isdigit() and int(uid) != 0
