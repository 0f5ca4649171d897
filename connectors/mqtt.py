"""An MQTT subscriber for live feeds (paho-mqtt 2.x), acknowledging only what was kept.

Messages are acknowledged by hand (``manual_ack``): paho's network thread queues
each message, a worker thread hands whatever has queued up (at most ``max_batch``)
to the callback in one call, and only after the callback returns are the
messages acknowledged (PUBACK for QoS 1, PUBCOMP for QoS 2).  A callback that
makes the events durable before it returns therefore means the broker
redelivers anything the hub did not keep, and one durable write serves many
messages.  The session is persistent (``clean_session=False`` under a stable
client id), so the broker also queues QoS ≥ 1 messages published while the hub
is down.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from catalog.errors import ConnectorError

log = logging.getLogger(__name__)

OnBatch = Callable[[list[tuple[str, bytes]]], None]
_STOP = object()


class MqttSubscriber:
    """Subscribes to topic filters on one broker and passes messages on in batches."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        topics: list[str],
        qos: int,
        client_id: str,
        on_batch: OnBatch,
        username: str | None = None,
        password: str | None = None,
        max_batch: int = 1000,
        attempts: int = 3,
    ) -> None:
        self.host, self.port, self.topics, self.qos = host, port, topics, qos
        self.on_batch = on_batch
        self.max_batch = max_batch
        self.attempts = attempts
        self.connected = threading.Event()
        self._refused: str | None = None
        self._queue: queue.Queue[Any] = queue.Queue()
        self._worker = threading.Thread(target=self._work, name=f"mqtt-{client_id}", daemon=True)
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    def _on_connect(self, client: mqtt.Client, _ud: Any, _flags: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            self._refused = str(rc)
            log.warning("mqtt %s:%d refused the connection: %s", self.host, self.port, rc)
            return
        # Subscribing on every connect restores the subscriptions after a reconnect; we are
        # "connected" only once the broker has acknowledged them (see _on_subscribe).
        client.subscribe([(t, self.qos) for t in self.topics])

    def _on_subscribe(self, _c: mqtt.Client, _ud: Any, _mid: int, _codes: Any, _p: Any) -> None:
        self.connected.set()

    def _on_disconnect(self, _c: mqtt.Client, _ud: Any, _flags: Any, rc: Any, _p: Any) -> None:
        self.connected.clear()
        if rc.is_failure:
            log.warning("mqtt %s:%d disconnected (%s); reconnecting", self.host, self.port, rc)

    def _on_message(self, _c: mqtt.Client, _ud: Any, msg: mqtt.MQTTMessage) -> None:
        self._queue.put((msg.topic, bytes(msg.payload), msg.mid, msg.qos))

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    self._queue.put(_STOP)
                    break
                batch.append(item)
            self._hand_over(batch)
            for _topic, _payload, mid, qos in batch:
                if qos > 0:
                    self.client.ack(mid, qos)

    def _hand_over(self, batch: list[tuple[str, bytes, int, int]]) -> None:
        items = [(topic, payload) for topic, payload, _mid, _qos in batch]
        for attempt in range(1, self.attempts + 1):
            try:
                self.on_batch(items)
                return
            except Exception:
                if attempt == self.attempts:
                    # Holding the acks would stall the broker's in-flight window for good.
                    log.exception(
                        "mqtt: %d message(s) could not be kept after %d attempts; dropped",
                        len(items),
                        attempt,
                    )
                    return
                log.exception("mqtt: keeping %d message(s) failed; retrying", len(items))
                time.sleep(0.5 * attempt)

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
        self._worker.start()
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
        """Disconnect; messages already queued are handed over and acknowledged first."""
        self._queue.put(_STOP)
        if self._worker.is_alive():
            self._worker.join(30)
        self.client.disconnect()
        self.client.loop_stop()
