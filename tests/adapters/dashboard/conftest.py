"""The integration fixtures (a real mosquitto per test) for the dashboard's daemon tests."""

from tests.integration.conftest import broker, daemon_env

__all__ = ["broker", "daemon_env"]
