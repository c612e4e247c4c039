"""The bundle contract between edgecomp and the Android demo app (android_demo/).

Checks, all mechanically, without an Android SDK:
- the committed schema (schemas/edgecomp.schema.json) is the one generated from edgecomp.bundle.Manifest;
- every manifest field the Kotlin parser reads (extracted by regex from the get*/opt* calls in
  android_demo/.../Manifest.kt, each parse<Definition> function reading one schema definition) exists in
  that definition with the JSON type the call expects; a get* read is required and non-null in the schema;
  an opt* read falls back to the schema's default; arrays hold the item type the Kotlin helper reads;
  nested objects are parsed by the function of the referenced definition; the Kotlin enums accept every
  value the schema's enums allow; the app's schema version and file format are the schema's;
- the app's sample manifests (src/test/resources/manifests) validate, and its invalid samples do not;
- a real bundle built by `edgecomp build` validates, and has the shape of the app's digits sample;
- the benchmark result BenchmarkActivity writes holds every field edgecomp's parser reads.
"""

from __future__ import annotations

import ast
import json
import math
import operator
import re
from dataclasses import dataclass

import jsonschema
import pytest

from edgecomp.schema import SCHEMA_ID, manifest_schema, schema_text
from tests.conftest import REPO, SCHEMA_FILE, manifest_errors

APP = REPO / "android_demo" / "app" / "src"
KOTLIN = APP / "main" / "java" / "dev" / "edgecomp" / "demo"
PARSER = KOTLIN / "Manifest.kt"
SAMPLES = APP / "test" / "resources" / "manifests"

_FUN = re.compile(r"^(?:private )?fun (?:\w+\.)?(\w+)\(", re.MULTILINE)
_READ = re.compile(r'\b\w+\.(get|opt)(String|Int|Long|Double|Boolean|JSONArray|JSONObject)\("(\w+)"(?:,\s*([^)]*?))?\)')
_ACCEPTS = {"String": {"string"}, "Int": {"integer"}, "Long": {"integer"}, "Double": {"number", "integer"},
            "Boolean": {"boolean"}, "JSONArray": {"array"}, "JSONObject": {"object"}}
_ITEMS = {"ints": {"integer"}, "floats": {"number", "integer"}, "strings": {"string"}, "objects": {"object"}}


@dataclass
class Read:
    """One manifest read in the Kotlin parser."""

    definition: str         # schema definition (the parse<Definition> function it is in)
    field: str
    kind: str               # get (required) or opt (optional)
    jtype: str              # String, Int, Long, Double, Boolean, JSONArray, JSONObject
    fallback: str | None    # opt's second argument or the elvis (?:) fallback, Kotlin source
    items: str | None       # ints/floats/strings/objects helper applied to an array
    nested: str | None      # definition parsed from this object / from each array item
    enum: str | None        # Kotlin enum the string is mapped to


def kotlin_enums(source: str) -> dict[str, set[str]]:
    """Kotlin `enum class X(val json: String ...)` -> the json spellings of its constants."""
    enums = {}
    for m in re.finditer(r"enum class (\w+)\(val json: String[^)]*\)\s*\{(.*?)\}", source, re.DOTALL):
        enums[m[1]] = set(re.findall(r'\w+\("([^"]+)"', m[2]))
    return enums


def extract_reads(source: str, definitions: set[str]) -> tuple[list[Read], list[str]]:
    """The manifest reads of the Kotlin parser, and problems with where they are."""
    enum_of = dict(re.findall(r"fun (\w+)Of\(value: String\): (\w+)", source))
    starts = [(m.start(), m[1]) for m in _FUN.finditer(source)]
    reads, problems = [], []
    for m in _READ.finditer(source):
        fun = max((s for s in starts if s[0] < m.start()), default=(0, "<top level>"))[1]
        definition = fun[len("parse"):] if fun.startswith("parse") else None
        if definition not in definitions:
            problems.append(f"{fun} reads '{m[3]}' outside a parse<Definition> function")
            continue
        line_end = source.find("\n", m.end())
        rest, prefix = source[m.end():line_end], source[: m.start()]
        helper = re.match(r"\??\.(ints|floats|strings|objects)\(\)", rest)
        nested = (re.match(r"\??\.objects\(\)\??\.map\(::parse(\w+)\)", rest)
                  or re.match(r"\??\.let\(::parse(\w+)\)", rest) or re.search(r"parse(\w+)\(\s*$", prefix))
        wrapper = re.search(r"(\w+)Of\(\s*$", prefix)
        elvis = re.match(r"[^\n]*?\?:\s*(listOf\([^)]*\)|[^\s,)]+)", rest)
        reads.append(Read(definition, m[3], m[1], m[2], m[4] or (elvis[1] if elvis else None),
                          helper[1] if helper else None, nested[1] if nested else None,
                          enum_of.get(wrapper[1]) if wrapper else None))
    return reads, problems


_OPS = {ast.Div: operator.truediv, ast.Mult: operator.mul, ast.Add: operator.add, ast.Sub: operator.sub}


def kotlin_value(text: str):
    """The value of a Kotlin literal: string, number (1f, 1.0 / 255.0) or listOf(...)."""
    text = text.strip()
    if text.startswith("listOf(") and text.endswith(")"):
        inner = text[len("listOf("):-1].strip()
        return [kotlin_value(x) for x in inner.split(",")] if inner else []
    node = ast.parse(re.sub(r"(\d)[fFL]\b", r"\1", text), mode="eval").body

    def ev(n):
        if isinstance(n, ast.Constant):
            return n.value
        if isinstance(n, ast.BinOp) and type(n.op) in _OPS:
            return _OPS[type(n.op)](ev(n.left), ev(n.right))
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
            return -ev(n.operand)
        raise ValueError(f"not a literal: {text}")

    return ev(node)


def _same(a, b) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9)
    return a == b


def _branches(prop: dict) -> tuple[list[dict], bool]:
    """A property's non-null alternatives and whether null is allowed."""
    options = prop.get("anyOf", [prop])
    return [o for o in options if o.get("type") != "null"], any(o.get("type") == "null" for o in options)


def _kind(option: dict) -> tuple[str, str | None]:
    ref = option.get("$ref")
    return ("object", ref.rsplit("/", 1)[-1]) if ref else (option.get("type", "?"), None)


def check_reads(reads: list[Read], schema: dict, enums: dict[str, set[str]]) -> list[str]:
    """Every disagreement between the Kotlin reads and the schema."""
    errors = []
    for r in reads:
        where = f"{r.definition}.{r.field}"
        node = schema if r.definition == "Manifest" else schema["$defs"][r.definition]
        prop = node["properties"].get(r.field)
        if prop is None:
            errors.append(f"the app reads {where}, which the schema does not have")
            continue
        options, nullable = _branches(prop)
        (jtype, ref), *more = [_kind(o) for o in options]
        if more or jtype not in _ACCEPTS[r.jtype]:
            errors.append(f"{where}: the app reads it with {r.kind}{r.jtype}, the schema says {prop}")
            continue
        required = r.field in node.get("required", [])
        if r.kind == "get" and (not required or nullable):
            errors.append(f"{where}: the app requires it (get{r.jtype}), the schema lets it be absent or null")
        if r.kind == "opt" and "default" in prop:
            default = prop["default"]
            if default is None:
                if r.fallback is not None:
                    errors.append(f"{where}: the schema's default is null, the app falls back to {r.fallback}")
            elif r.fallback is None or not _same(kotlin_value(r.fallback), default):
                errors.append(f"{where}: the app falls back to {r.fallback}, the schema's default is {default!r}")
        if jtype == "array":
            item_type, item_ref = _kind(options[0].get("items", {}))
            if r.items is None or item_type not in _ITEMS[r.items]:
                errors.append(f"{where}: the app reads items with {r.items}(), the schema's items are {item_type}")
            elif r.items == "objects" and r.nested != item_ref:
                errors.append(f"{where}: items are parsed as {r.nested}, the schema's items are {item_ref}")
        if jtype == "object" and r.nested != ref:
            errors.append(f"{where}: the app parses it as {r.nested}, the schema's definition is {ref}")
        if r.enum is not None:
            allowed = set(options[0].get("enum", [])) | ({options[0]["const"]} if "const" in options[0] else set())
            if not allowed:
                errors.append(f"{where}: the app maps it to enum {r.enum}, the schema has no enum")
            elif missing := allowed - enums.get(r.enum, set()):
                errors.append(f"{where}: the schema allows {sorted(missing)}, which enum {r.enum} does not accept")
    return errors


def _contract_errors(source: str) -> list[str]:
    schema = json.loads(SCHEMA_FILE.read_text())
    reads, problems = extract_reads(source, set(schema["$defs"]) | {"Manifest"})
    return problems + check_reads(reads, schema, kotlin_enums(source))


# ------------------------------------------------------------------------------------------------ schema
def test_committed_schema_is_generated_from_the_manifest_model():
    assert SCHEMA_FILE.read_text() == schema_text(), "regenerate: edgecomp schema --out schemas/edgecomp.schema.json"
    schema = manifest_schema()
    assert schema["$id"] == SCHEMA_ID and schema["version"] == schema["properties"]["schema_version"]["const"] == 1
    jsonschema.Draft202012Validator.check_schema(schema)


def test_schema_command_detects_a_stale_copy(tmp_path, capsys):
    from edgecomp.cli import main

    copy = tmp_path / "edgecomp.schema.json"
    assert main(["schema", "--out", str(copy)]) == 0
    assert main(["schema", "--check", str(copy)]) == 0
    copy.write_text(copy.read_text().replace('"Tensor name inside the file."', '"old text"'))
    assert main(["schema", "--check", str(copy)]) == 2
    assert "stale" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- Kotlin reads
def test_every_field_the_app_reads_is_in_the_schema_with_the_expected_type():
    source = PARSER.read_text()
    schema = json.loads(SCHEMA_FILE.read_text())
    reads, _ = extract_reads(source, set(schema["$defs"]) | {"Manifest"})
    # the extraction itself must see the parser: every definition, and the optional, nested and enum reads
    assert {r.definition for r in reads} == set(schema["$defs"]) | {"Manifest"}
    fields = {(r.definition, r.field): r for r in reads}
    assert fields["TensorInfo", "quantization"].nested == "Quantization"
    assert fields["ModelSpec", "layout"].enum == "Layout" and fields["TensorInfo", "dtype"].enum == "DType"
    assert fields["Normalization", "mean"].fallback == "listOf(0f)"
    assert fields["Manifest", "files"].nested == "FileEntry"
    assert _contract_errors(source) == []


@pytest.mark.parametrize("edit, complaint", [
    (('getString("sha256")', 'getString("sha_256")'), "FileEntry.sha_256, which the schema does not have"),
    (('optJSONObject("normalization")', 'getJSONObject("normalization")'), "absent or null"),
    (('optString("layout", "NCHW")', 'optString("layout", "NHWC")'), "the schema's default is 'NCHW'"),
    (('?.floats() ?: listOf(1f)', '?.floats() ?: listOf(2f)'), "Normalization.std: the app falls back"),
    (('getInt("zero_point")', 'getString("zero_point")'), "Quantization.zero_point: the app reads it with getString"),
    (('getJSONArray("input_shape").ints()', 'getJSONArray("input_shape").strings()'), "items with strings()"),
    (('UINT8("uint8", 1),', ''), "which enum DType does not accept"),
    (('.let(::parseQuantization)', '.let(::parseNormalization)'), "parses it as Normalization"),
])
def test_the_contract_check_catches_a_disagreement(edit, complaint):
    source = PARSER.read_text()
    assert edit[0] in source
    errors = _contract_errors(source.replace(edit[0], edit[1], 1))
    assert any(complaint in e for e in errors), errors


def test_manifest_reads_live_only_in_the_parser():
    for path in KOTLIN.glob("*.kt"):
        if path != PARSER:
            assert not _READ.search(path.read_text()), f"{path.name} reads JSON fields outside Manifest.kt"


def test_app_constants_match_the_schema():
    source = PARSER.read_text()
    schema = json.loads(SCHEMA_FILE.read_text())
    version = int(re.search(r"const val SUPPORTED_SCHEMA_VERSION = (\d+)", source)[1])
    assert version == schema["properties"]["schema_version"]["const"] == schema["version"]
    fmt = re.search(r'const val TFLITE_FORMAT = "(\w+)"', source)[1]
    from edgecomp.export.base import format_names

    assert re.fullmatch(schema["$defs"]["FileEntry"]["properties"]["format"]["pattern"], fmt) and fmt in format_names()


# ----------------------------------------------------------------------------------------- sample files
@pytest.mark.parametrize("path", sorted((SAMPLES / "valid").glob("*.json")), ids=lambda p: p.name)
def test_app_sample_manifests_validate(path):
    assert manifest_errors(path) == []


@pytest.mark.parametrize("path", sorted((SAMPLES / "invalid").glob("*.json")), ids=lambda p: p.name)
def test_app_invalid_samples_are_invalid(path):
    assert manifest_errors(path) != []


def _shape(value):
    """The structure of a JSON value: keys and types, not values (lists by their first item)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return type(value).__name__


def test_a_real_bundle_validates_and_matches_the_apps_digits_sample(digits_bundle):
    manifest = json.loads((digits_bundle / "edgecomp.json").read_text())
    assert manifest_errors(digits_bundle / "edgecomp.json") == []
    sample = json.loads((SAMPLES / "valid" / "digits_cnn_fp32.json").read_text())
    tflite = next(f for f in sample["files"] if f["format"] == "tflite")
    assert _shape(manifest["model"]) == _shape(sample["model"])
    assert _shape(manifest["files"][0]) == _shape(tflite)
    assert manifest["model"] == sample["model"], "the app's digits sample is stale: copy a fresh edgecomp.json"


def test_the_apps_sample_images_preprocessed_as_the_app_does_are_classified_right(digits_bundle):
    """Preprocessor.kt's convention (8-bit pixels span [0, 1/scale]) fed to the real bundle's .tflite."""
    import numpy as np
    from PIL import Image

    from edgecomp.bundle import read_manifest
    from edgecomp.export.runtime import TFLiteRunner

    manifest = read_manifest(digits_bundle)
    norm, entry = manifest.model.normalization, manifest.files[0]
    runner = TFLiteRunner(digits_bundle / entry.path, threads=1)
    right = 0
    for label in range(10):
        pixels = np.asarray(Image.open(REPO / f"android_demo/app/src/main/assets/samples/digit_{label}.png"),
                            dtype=np.float32)
        raw = pixels / (255.0 * norm.scale)
        x = ((raw * norm.scale - norm.mean[0]) / norm.std[0]).reshape(entry.inputs[0].shape)
        right += int(np.argmax(runner(x.astype(np.float32))) == label)
    assert right >= 9


# ------------------------------------------------------------------------------------- benchmark result
def test_benchmark_result_holds_every_field_edgecomp_reads():
    from edgecomp.android.via_app import RESULT_FIELDS, RESULT_VERSION

    source = (KOTLIN / "BenchmarkReport.kt").read_text()
    written = set(re.findall(r'\.put\("(\w+)"', source))
    assert set(RESULT_FIELDS) <= written
    assert int(re.search(r"const val RESULT_VERSION = (\d+)", source)[1]) == RESULT_VERSION
