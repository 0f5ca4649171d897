"""The catalog database's stores are built once per catalog store, not per call: the
quality store checks its tables when made, and a request must not pay for that."""

from __future__ import annotations

from pathlib import Path

from catalog.datasets.store import CatalogStore


def test_identity_and_quality_stores_are_made_once(tmp_path: Path) -> None:
    store = CatalogStore(f"sqlite:///{tmp_path / 'catalog.db'}")
    try:
        store.create_all()
        assert store.quality is store.quality
        assert store.identity is store.identity
        assert store.quality.audit is store.audit and store.identity.audit is store.audit
        store.identity.upsert_agency("gy_hbj", "贵阳市生态环境局")
        assert [a.id for a in store.identity.list_agencies()] == ["gy_hbj"]
    finally:
        store.dispose()
