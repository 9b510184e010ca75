"""MQTT adapters: the topic contract, the session (market data, reports and commands in;
orders and status out) and the wire payloads."""
