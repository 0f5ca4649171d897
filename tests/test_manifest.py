from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from catalog.datasets.manifest import load_manifest, parse_manifest
from catalog.errors import ManifestError
from tests.conftest import manifest_dict


def write(tmp_path: Path, data: object, name: str = "m.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return p


def problems(path: Path) -> dict[str, dict[str, str]]:
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert info.value.file == str(path)
    assert str(path) in info.value.message
    return {p["field"]: p for p in info.value.problems}


def test_valid_manifest_maps_types_to_arrow(tmp_path: Path) -> None:
    m = load_manifest(write(tmp_path, manifest_dict()))
    schema = m.arrow_schema
    assert schema.field("amount").type == pa.decimal128(12, 2)
    assert schema.field("updated_at").type == pa.timestamp("us", tz="UTC")
    assert not schema.field("ticket_id").nullable  # primary key
    assert m.personal_columns == {"caller_phone": "phone"}


def test_errors_name_file_field_and_allowed_values(tmp_path: Path) -> None:
    data = manifest_dict(sharing={"type": "open"}, classification="secret", colour="red")
    data["columns"][4]["type"] = "money"
    found = problems(write(tmp_path, data))
    assert "'unconditional', 'conditional' or 'none'" in found["sharing.type"]["allowed"]
    assert "'general', 'important' or 'core'" in found["classification"]["allowed"]
    assert found["colour"]["message"] == "unknown field"
    money = found["columns[4:amount].type"]["message"]
    assert "money" in money and "decimal(P,S)" in money


def test_references_to_unknown_columns_are_reported(tmp_path: Path) -> None:
    data = manifest_dict(primary_key=["nope"])
    found = problems(write(tmp_path, data))
    assert "nope" in next(iter(found.values()))["message"]


def test_sharing_none_needs_legal_basis(tmp_path: Path) -> None:
    found = problems(write(tmp_path, manifest_dict(sharing={"type": "none"})))
    assert "legal_basis" in found["sharing"]["message"]
    ok = manifest_dict(sharing={"type": "none", "legal_basis": "《数据安全法》第二十一条"})
    assert parse_manifest(ok).sharing.type == "none"


def test_merge_needs_primary_key(tmp_path: Path) -> None:
    data = manifest_dict(primary_key=[])
    data["source"]["mode"] = "merge"
    found = problems(write(tmp_path, data))
    assert "primary_key" in next(iter(found.values()))["message"]


def test_broken_yaml_names_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("id: x\ncolumns: [\n", encoding="utf-8")
    found = problems(p)
    assert any(k.startswith("line ") for k in found)


def test_missing_file(tmp_path: Path) -> None:
    found = problems(tmp_path / "absent.yaml")
    assert "(file)" in found
