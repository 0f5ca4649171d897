"""Channel names are made and read back in one module (catalog.domain.channels)."""

from __future__ import annotations

import pytest

from catalog.domain import channels


def test_made_names_parse_back() -> None:
    made = {
        channels.dataset_channel("hotline"): ("dataset", "hotline"),
        channels.feed_channel("air"): ("feed", "air"),
        channels.orders_channel("unit7"): ("orders", "unit7"),
        channels.block_channel("520102"): ("block", "520102"),
        channels.ALERTS: ("alerts", ""),
        channels.PRESENCE: ("presence", ""),
    }
    for text, (kind, name) in made.items():
        parsed = channels.parse(text)
        assert (parsed.kind, parsed.name) == (kind, name)


@pytest.mark.parametrize("text", ["alerts:x", "presence:", "dataset:", "dataset", "weather:1", ""])
def test_malformed_names_are_not_well_formed(text: str) -> None:
    assert channels.parse(text).kind is None
