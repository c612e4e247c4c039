"""The JSON Schema of ``edgecomp.json``, generated from :class:`edgecomp.bundle.Manifest`.

The committed copy, ``schemas/edgecomp.schema.json``, is the contract that apps (``android_demo/``)
code against; ``edgecomp schema --out schemas/edgecomp.schema.json`` regenerates it and
``tests/test_contract.py`` fails when it is stale. Pydantic leaves ``default_factory`` defaults out of a
schema; they are added here, so that every optional field states the value a reader must assume.
"""

from __future__ import annotations

import json
import typing
from typing import Any

from pydantic import BaseModel

from edgecomp.bundle import MANIFEST_SCHEMA_VERSION, Manifest

SCHEMA_ID = f"urn:edgecomp:schema:manifest:v{MANIFEST_SCHEMA_VERSION}"
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _models(root: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """``root`` and every pydantic model reachable through its field annotations, by class name."""
    found: dict[str, type[BaseModel]] = {}

    def visit(tp: Any) -> None:
        if isinstance(tp, type) and issubclass(tp, BaseModel) and tp.__name__ not in found:
            found[tp.__name__] = tp
            for f in tp.model_fields.values():
                visit(f.annotation)
        for arg in typing.get_args(tp):
            visit(arg)

    visit(root)
    return found


def manifest_schema() -> dict[str, Any]:
    """The manifest's JSON Schema (draft 2020-12) with ``$id``, ``version`` and factory defaults filled in."""
    schema = Manifest.model_json_schema()
    for name, model in _models(Manifest).items():
        props = (schema if name == "Manifest" else schema["$defs"][name])["properties"]
        for field_name, info in model.model_fields.items():
            if info.default_factory is not None and "default" not in props[field_name]:
                props[field_name]["default"] = info.default_factory()
    return {"$schema": DIALECT, "$id": SCHEMA_ID, "version": MANIFEST_SCHEMA_VERSION, **schema}


def schema_text() -> str:
    """The schema as the committed file holds it: 2-space indented JSON with a final newline."""
    return json.dumps(manifest_schema(), indent=2) + "\n"
