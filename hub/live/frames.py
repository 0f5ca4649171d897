"""Websocket framing for the fan-out: the top floor owns the protocol, so the event log
(ground floor) keeps only a message's JSON bytes and :meth:`Message.framed
<eventlog.message.Message.framed>` caches the frame this module makes."""

from __future__ import annotations


def ws_text_frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented server-to-client text frame (RFC 6455 section 5.2):
    servers do not mask, and no extension is negotiated on the frames sent this way."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 1 << 16:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload
