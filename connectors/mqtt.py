"""An MQTT subscriber for live feeds (paho-mqtt 2.x), acknowledging only what was kept.

Messages are acknowledged by hand (``manual_ack``): paho's network thread queues
each message, a worker thread hands whatever has queued up (at most ``max_batch``)
to the callback in one call, and only after the callback returns are the
messages acknowledged (PUBACK for QoS 1, PUBCOMP for QoS 2).  A callback that
makes the events durable before it returns therefore means the broker
redelivers anything the hub did not keep, and one durable write serves many
messages.  The session is persistent (``clean_session=False`` under a stable
client id), so the broker also queues QoS ≥ 1 messages published while the hub
is down.  While the hub cannot keep messages (its event log is down) it acknowledges
nothing and retries with backoff; the broker redelivers whatever was not acknowledged
after a reconnect, so a broker or log outage loses nothing (at least once: a message whose
acknowledgement was lost in a broker outage can come twice).
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from catalog.errors import ConnectorError, unavailable

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
        max_backoff_s: float = 5.0,
    ) -> None:
        self.host, self.port, self.topics, self.qos = host, port, topics, qos
        self.on_batch = on_batch
        self.max_batch = max_batch
        self.attempts = attempts
        self.max_backoff_s = max_backoff_s
        self.connected = threading.Event()
        self._stopping = threading.Event()
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
            if not self._hand_over(batch):
                return  # stopping with messages not kept: unacknowledged, the broker keeps them
            for _topic, _payload, mid, qos in batch:
                if qos > 0:
                    self.client.ack(mid, qos)

    def _hand_over(self, batch: list[tuple[str, bytes, int, int]]) -> bool:
        """Hand a batch over until it is kept; True when it may be acknowledged.

        While the hub cannot keep messages because a server it writes to is down (the event
        log), the batch is retried with backoff and jitter (at most ``max_backoff_s`` apart)
        for as long as that lasts, and nothing is acknowledged: the broker holds the rest of
        the session's messages meanwhile (QoS ≥ 1, up to its in-flight window and queue).
        A batch that fails for another reason (a bug, not an outage) is retried
        ``attempts`` times and then dropped with an error in the log, so that one poisoned
        message cannot stall the feed for good.  Returns False only when stopping.
        """
        items = [(topic, payload) for topic, payload, _mid, _qos in batch]
        failures = outage = 0
        while True:
            try:
                self.on_batch(items)
                if outage:
                    log.warning(
                        "mqtt %s:%d: %d message(s) kept after %d attempt(s)",
                        self.host,
                        self.port,
                        len(items),
                        outage + 1,
                    )
                return True
            except Exception as e:
                if unavailable(e) is not None:
                    outage += 1
                    if outage == 1 or outage % 20 == 0:
                        log.warning(
                            "mqtt %s:%d: %d message(s) wait, not acknowledged: %s; retrying",
                            self.host,
                            self.port,
                            len(items),
                            e,
                        )
                    delay = min(self.max_backoff_s, 0.1 * 2 ** min(outage, 10))
                else:
                    failures += 1
                    if failures >= self.attempts:
                        log.exception(
                            "mqtt: %d message(s) could not be kept after %d attempts; dropped",
                            len(items),
                            failures,
                        )
                        return True
                    log.exception("mqtt: keeping %d message(s) failed; retrying", len(items))
                    delay = 0.5 * failures
            if self._stopping.wait(delay * (0.5 + random.random())):
                return False

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
        """Disconnect; messages already queued are handed over and acknowledged first
        (unless they cannot be kept now: they stay unacknowledged, the broker keeps them)."""
        self._stopping.set()
        self._queue.put(_STOP)
        if self._worker.is_alive():
            self._worker.join(30)
        self.client.disconnect()
        self.client.loop_stop()
