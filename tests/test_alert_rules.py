"""Alert rules: file checks, and evaluation resumed from the stored cursor after a restart."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from catalog.datasets.manifest import Manifest
from hub.assembly.context import Hub
from hub.live.alert_rules import AlertRulesError, load_rules
from hub.live.alerts import AlertEngine
from hub.live.dispatch import EVENT_TYPES


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "rules.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_bad_rules_name_the_file_and_field(tmp_path: Path) -> None:
    with pytest.raises(AlertRulesError) as e:
        load_rules(write(tmp_path, "rules:\n  - {id: x, kind: threshold, channel: 'feed:a'}\n"))
    assert str(tmp_path / "rules.yaml") in e.value.message
    assert "rules.0: Value error, a threshold rule needs field, op, value" in e.value.message
    with pytest.raises(AlertRulesError, match=r"rules\.0\.channel"):
        load_rules(
            write(tmp_path, "rules:\n  - {id: x, kind: staleness, channel: nope, max_age_s: 1}\n")
        )
    dup = "rules:\n" + "  - {id: x, kind: staleness, channel: 'feed:a', max_age_s: 1}\n" * 2
    with pytest.raises(AlertRulesError, match=r"rules\.1\.id: duplicate id 'x'"):
        load_rules(write(tmp_path, dup))
    with pytest.raises(AlertRulesError, match=r"\(yaml\)"):
        load_rules(write(tmp_path, "rules: [\n"))
    with pytest.raises(AlertRulesError, match=r"\(file\)"):
        load_rules(tmp_path / "missing.yaml")


def test_events_published_while_down_are_evaluated_after_restart(
    hub: Hub, tmp_path: Path, make_feed: Callable[..., Manifest]
) -> None:
    # Rules see a feed's events as its manifest declares them (platform view): register it.
    hub.store.register_dataset(make_feed("tt", {"kk": "int64", "vv": "int64"}))
    rules = load_rules(
        write(
            tmp_path,
            "rules:\n  - {id: hot, kind: threshold, channel: 'feed:tt', field: vv, op: '>',"
            " value: 10, key: [kk]}\n",
        )
    )

    async def run(publish: list[dict[str, int]]) -> None:
        await hub.bus.start()
        engine = AlertEngine(hub, rules)
        await engine.start()
        for d in publish:
            await hub.bus.publish_async("feed:tt", "feed.event", d)
        for _ in range(100):
            await asyncio.sleep(0.02)
            if engine._evaluated.get("feed:tt", 0) >= hub.log.head("feed:tt"):
                break
        await engine.stop()  # saves how far it got
        await hub.bus.stop()

    asyncio.run(run([{"kk": 1, "vv": 5}, {"kk": 1, "vv": 50}]))
    assert [a.key for a in hub.ops.list_alerts()] == ["kk=1"]
    # while the engine is down, two more events land in the log
    hub.log.append("feed:tt", "feed.event", {"kk": 2, "vv": 99})
    hub.log.append("feed:tt", "feed.event", {"kk": 1, "vv": 77})
    asyncio.run(run([]))
    alerts = {a.key: a for a in hub.ops.list_alerts()}
    assert set(alerts) == {"kk=1", "kk=2"} and alerts["kk=1"].count == 2
    assert hub.ops.rule_cursor("feed:tt", hub.log.epoch) == 4


def test_asyncapi_lists_every_event_and_op() -> None:
    doc = yaml.safe_load((Path(__file__).parent.parent / "docs" / "asyncapi.yaml").read_text())
    msgs = doc["components"]["messages"]
    events = set(msgs["message"]["payload"]["properties"]["event"]["enum"])
    assert set(EVENT_TYPES.values()) <= events
    from hub.api.ws import ORDER_OPS

    assert set(ORDER_OPS) == set(msgs["orderOp"]["payload"]["properties"]["op"]["enum"])
