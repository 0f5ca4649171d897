"""An MQTT subscriber for live feeds (paho-mqtt 2.x, its own network thread).

The subscriber hands each message's topic and payload to a callback *inside*
paho's ``on_message``: for QoS 1 paho sends the PUBACK only after the callback
returns, so a callback that makes the events durable before it returns means the
broker redelivers anything the hub did not keep.  (QoS 2 is acknowledged by paho
on receipt, before the callback: QoS 1 is the feeds' default for that reason.)  The session
is persistent (``clean_session=False`` under a stable client id), so the broker
also queues QoS ≥ 1 messages published while the hub is down.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from catalog.errors import ConnectorError

log = logging.getLogger(__name__)

OnPayload = Callable[[str, bytes], None]


class MqttSubscriber:
    """Subscribes to topic filters on one broker and passes every message on."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        topics: list[str],
        qos: int,
        client_id: str,
        on_payload: OnPayload,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.host, self.port, self.topics, self.qos = host, port, topics, qos
        self.on_payload = on_payload
        self.connected = threading.Event()
        self._refused: str | None = None
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, _ud: Any, _flags: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            self._refused = str(rc)
            log.warning("mqtt %s:%d refused the connection: %s", self.host, self.port, rc)
            return
        # Subscribing on every connect restores the subscriptions after a reconnect.
        client.subscribe([(t, self.qos) for t in self.topics])
        self.connected.set()

    def _on_disconnect(self, _c: mqtt.Client, _ud: Any, _flags: Any, rc: Any, _p: Any) -> None:
        self.connected.clear()
        if rc.is_failure:
            log.warning("mqtt %s:%d disconnected (%s); reconnecting", self.host, self.port, rc)

    def _on_message(self, _c: mqtt.Client, _ud: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self.on_payload(msg.topic, bytes(msg.payload))
        except Exception:
            # Raising here would stop paho's loop; the callback reports its own problems.
            log.exception("mqtt message on %s could not be handled", msg.topic)

    def start(self, timeout_s: float = 10.0) -> None:
        """Connect and subscribe; a broker that cannot be reached is a ConnectorError."""
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except OSError as e:
            raise ConnectorError(
                f"mqtt broker {self.host}:{self.port}: {e.strerror or e}",
                connector="mqtt",
                host=self.host,
                port=self.port,
            ) from None
        self.client.loop_start()
        if not self.connected.wait(timeout_s):
            self.stop()
            why = self._refused or f"no CONNACK within {timeout_s:g} s"
            raise ConnectorError(
                f"mqtt broker {self.host}:{self.port}: {why}",
                connector="mqtt",
                host=self.host,
                port=self.port,
            )

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
