"""OpenAPI links: which operation's answer feeds which other operation's parameters.

They document the API's flows (file an access request, then approve it; open an order,
then act on it) and let a stateful fuzzer (tests/test_api_contract.py) chain real calls.
"""

from __future__ import annotations

from typing import Any


def _ref(path: str, method: str) -> str:
    return "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/" + method.lower()


def links(**targets: tuple[str, str, dict[str, str]]) -> dict[str, Any]:
    """``{"links": ...}`` for a response: name=(method, path, {parameter: expression})."""
    return {
        "links": {
            name: {"operationRef": _ref(path, method), "parameters": params}
            for name, (method, path, params) in targets.items()
        }
    }
