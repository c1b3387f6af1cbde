"""Readiness probes: can this process reach its database and its broker right now?"""

from __future__ import annotations

from kombu.connection import Connection
from sqlalchemy import Engine, text

PROBE_TIMEOUT_SECONDS = 3.0


def ping_database(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def ping_broker(url: str, timeout: float = PROBE_TIMEOUT_SECONDS) -> None:
    """Open a broker connection and make one round trip (Redis PING, or a query on the SQL transport)."""
    # Socket timeouts are Redis options; the SQL transport would hand them to create_engine, which refuses them.
    options = {"socket_timeout": timeout, "socket_connect_timeout": timeout} if url.startswith("redis") else {}
    with Connection(url, connect_timeout=timeout, transport_options=options) as connection:
        connection.ensure_connection(max_retries=1, timeout=timeout)
        channel = connection.default_channel
        client = getattr(channel, "client", None)
        if client is not None and hasattr(client, "ping"):
            client.ping()  # redis
        session = getattr(channel, "session", None)
        if session is not None:
            session.execute(text("SELECT 1"))  # kombu's SQLAlchemy transport (the embedded broker)
