"""Vetting model files before they are loaded: a model file is data, and must not be able to run code.

TorchScript (``torch.jit.load``) and ``torch.export`` (``.pt2``) files are zip archives that hold a graph,
tensors and, possibly, pickles. ``torch.export.load`` unpickles parts of an archive with
``weights_only=False`` or plain ``pickle.loads`` (weights or constants whose config says ``use_pickle``,
custom and opaque objects, legacy weight files, sample inputs it cannot read safely) and parses symbolic
shape expressions with ``sympy.sympify`` (``eval``). A TorchScript file compiles its serialized code, and a
class's ``__setstate__`` runs during ``torch.jit.load``. A graph may call ops that read or write files
(``aten::from_file``, ``aten::save``).

So, before anything in an archive is unpickled, compiled or run, this module checks it statically:

* the archive's unpacked size is bounded (no zip bomb);
* ``.pt2``: only the members ``torch.export.save`` writes for plain tensors are present, every weight and
  constant is stored raw (never pickled), sample inputs load with ``torch.load(weights_only=True)``,
  every symbolic expression is plain arithmetic, and every graph node calls an allowed op;
* TorchScript: every op its code names (``torch.<op>``, ``ops.<ns>.<op>``, methods, ``__setstate__``
  included) is allowed.

After loading, :func:`check_torchscript_graphs` checks the inlined graph of every TorchScript method, and
:func:`check_finite` that no weight is NaN or infinite.

The op allow-list (:func:`op_refusal`) is the namespaces ``aten``, ``prim``, ``prims``, ``quantized`` and
``quantized_decomposed``, less every op that touches files or the console: those with a ``str`` argument
named like a file or path in their schema (``torch._C._jit_get_all_schemas()``) and those whose name has
the word ``save``, ``load``, ``file`` or ``print``.
"""

from __future__ import annotations

import ast
import functools
import io
import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from torch import nn

from edgecomp.errors import ModelLoadError

ALLOWED_NAMESPACES = frozenset({"aten", "prim", "prims", "quantized", "quantized_decomposed"})
# Python-level targets torch.export emits for symbolic-size arithmetic.
_PYTHON_TARGETS = re.compile(
    r"_operator\.(getitem|add|sub|mul|floordiv|truediv|mod|neg|pow|eq|ne|lt|le|gt|ge|and_|or_|not_)"
    r"|math\.(ceil|floor|sqrt|trunc)|torch\._?sym_[a-z_]+"
)
_IO_WORD = re.compile(r"(^|_)(save|load|file|print)(_|$)")
_PATH_ARG = re.compile(r"file|path|dir", re.IGNORECASE)
# Symbolic-shape expressions (sympy's srepr) may only use these, size symbols (s0, u1, ...) and numbers.
_SYMPY_ARITHMETIC = ("Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Max", "Min", "Abs",
                     "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "StrictLessThan", "StrictGreaterThan", "LessThan",
                     "GreaterThan", "Equality", "Unequality", "And", "Or", "Not", "floor", "ceiling",
                     "oo", "zoo", "nan", "true", "false", "True", "False")
_SYM_NAMES_OK = re.compile(r"[a-z]\d+")
_SYM_NODES = (ast.Expression, ast.keyword, ast.Load, ast.Tuple, ast.BinOp, ast.UnaryOp, ast.Compare, ast.BoolOp,
              ast.operator, ast.unaryop, ast.cmpop, ast.boolop)
UNPACKED_RATIO_LIMIT = 16
UNPACKED_SLACK = 16 << 20
_PICKLE_HINT = ("re-export it from plain tensors with torch.export.save(torch.export.export(model, args)), "
                "or pass the model as package.module:factory (or file.py:factory) with --weights")
_OP_HINT = ("export a graph without that op, or pass the model as package.module:factory "
            "(or file.py:factory) with --weights")


@functools.cache
def denied_ops() -> frozenset[str]:
    """Ops (``ns::name``) that touch files or the console, derived from torch's registered schemas."""
    denied = {"prim::PythonOp"}
    for schema in torch._C._jit_get_all_schemas():
        name = schema.name.split("::")[-1]
        if _IO_WORD.search(name.lower()):
            denied.add(schema.name)
        for arg in schema.arguments:
            if "str" in str(arg.type) and _PATH_ARG.search(arg.name):
                denied.add(schema.name)
    return frozenset(denied)


@functools.cache
def _denied_names() -> frozenset[str]:
    return frozenset(op.split("::")[-1] for op in denied_ops())


def op_refusal(op: str) -> str | None:
    """Why ``op`` (``ns::name``) may not run in a model file, or None if it may."""
    namespace, _, name = op.partition("::")
    if op in denied_ops() or _IO_WORD.search(name.lower()):
        return "it reads or writes files or the console"
    if namespace not in ALLOWED_NAMESPACES:
        return f"its namespace '{namespace}' is not one of {', '.join(sorted(ALLOWED_NAMESPACES))}"
    return None


def _refuse_op(path: Path, op: str, why: str) -> ModelLoadError:
    return ModelLoadError(f"{path} calls the op {op}, which edgecomp does not run from a model file: {why}",
                          _OP_HINT)


def check_unpacked_size(path: Path, zf: zipfile.ZipFile) -> int:
    """The archive's unpacked size; refuses an archive that unpacks to far more than its own size."""
    unpacked = sum(info.file_size for info in zf.infolist())
    packed = path.stat().st_size
    if unpacked > UNPACKED_RATIO_LIMIT * packed + UNPACKED_SLACK:
        raise ModelLoadError(
            f"{path} ({packed} bytes) unpacks to {unpacked} bytes, more than {UNPACKED_RATIO_LIMIT} times "
            "its size (torch saves tensors uncompressed, so this is a zip bomb or a damaged file)",
            "re-save the model with torch.jit.save or torch.export.save",
        )
    return unpacked


# --- torch.export (.pt2) ---------------------------------------------------------------------------

def _pt2_member_kind(rel: str) -> str | None:
    """Which expected kind of .pt2 member ``rel`` (the path below the archive root) is, or None."""
    patterns = {
        "meta": r"archive_format|archive_version|version|byteorder|\.data/version|\.data/serialization_id",
        "model": r"models/(\w+)\.json",
        "weights_config": r"data/weights/(\w+)_weights_config\.json",
        "weight": r"data/weights/weight_\d+",
        "constants_config": r"data/constants/(\w+)_constants_config\.json",
        "constant": r"data/constants/tensor_\d+",
        "sample_inputs": r"data/sample_inputs/(\w+)\.pt",
        "extra": r"extra/[^/]+",
    }
    for kind, pattern in patterns.items():
        if re.fullmatch(pattern, rel):
            return kind
    return None


def _walk(obj: Any) -> Iterator[tuple[Any, Any]]:
    """Every (key, value) pair of every dict nested in ``obj``."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield key, value
            yield from _walk(value)
    elif isinstance(obj, list):
        for item in obj:
            yield from _walk(item)


def pt2_graph_targets(program_json: Any) -> set[str]:
    """Every node target of a serialized ExportedProgram's graphs (nested graphs included)."""
    targets = set()
    for key, value in _walk(program_json):
        if key == "nodes" and isinstance(value, list):
            targets.update(str(node.get("target")) for node in value if isinstance(node, dict))
    return targets


def _pt2_target_refusal(target: str) -> tuple[str, str] | None:
    if _PYTHON_TARGETS.fullmatch(target):
        return None
    match = re.fullmatch(r"torch\.ops\.(\w+)\.(\w+)(\.\w+)?", target)
    if match is None:
        return target, "it is not a torch op"
    op = f"{match.group(1)}::{match.group(2)}"
    why = op_refusal(op)
    return (op, why) if why else None


@functools.cache
def _sympy_names() -> frozenset[str]:
    """Names a symbolic-size expression may call: sympy's arithmetic and torch's own sympy functions."""
    import sympy
    import torch.utils._sympy.functions as torch_sympy

    torch_functions = {name for name, value in vars(torch_sympy).items()
                       if isinstance(value, type) and issubclass(value, sympy.Basic)}
    return frozenset(torch_functions | set(_SYMPY_ARITHMETIC))


def _expr_is_arithmetic(text: str) -> bool:
    """Whether ``text`` (what torch passes to ``sympy.sympify``, i.e. ``eval``) is only sympy arithmetic:
    calls of known sympy classes on numbers and size symbols, no attributes, no other strings."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        return False
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if not (isinstance(node.func, ast.Name) and node.func.id in _sympy_names()):
                return False
            if any(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in node.args) and not (
                    node.func.id == "Symbol" and len(node.args) == 1
                    and _SYM_NAMES_OK.fullmatch(str(node.args[0].value))):
                return False
        elif isinstance(node, ast.Name):
            if node.id not in _sympy_names() and not _SYM_NAMES_OK.fullmatch(node.id):
                return False
        elif isinstance(node, ast.Constant):
            if not isinstance(node.value, (int, float, bool, str)):
                return False
        elif not isinstance(node, _SYM_NODES):
            return False
    return True


def _check_sym_exprs(path: Path, program_json: Any) -> None:
    for key, value in _walk(program_json):
        if key == "expr_str" and not _expr_is_arithmetic(str(value)):
            raise ModelLoadError(f"{path} holds a symbolic shape expression that is not plain arithmetic: "
                                 f"{str(value)[:80]!r}", _PICKLE_HINT)


def _check_payload_config(path: Path, zf: zipfile.ZipFile, member: str, what: str) -> None:
    try:
        config = json.loads(zf.read(member))["config"]
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise ModelLoadError(f"{path}: {member} is not a valid {what} config ({exc!r})",
                             "re-save it with torch.export.save") from exc
    if not isinstance(config, dict) or not all(isinstance(meta, dict) for meta in config.values()):
        raise ModelLoadError(f"{path}: {member} is not a valid {what} config", "re-save it with torch.export.save")
    for fqn, meta in config.items():
        path_name = str(meta.get("path_name", ""))
        if meta.get("use_pickle") is not False or meta.get("tensor_meta") is None:
            raise ModelLoadError(f"{path} stores the {what} '{fqn}' as a pickle ({path_name}), which edgecomp "
                                 "will not unpickle: unpickling can run any code", _PICKLE_HINT)
        if not re.fullmatch(r"(weight|tensor)_\d+", path_name):
            raise ModelLoadError(f"{path} stores the {what} '{fqn}' as an object ({path_name}), not a tensor; "
                                 "edgecomp will not unpickle it", _PICKLE_HINT)


def vet_pt2(path: Path) -> None:
    """Refuse a ``.pt2`` archive that ``torch.export.load`` would unpickle, eval or run unsafely."""
    with zipfile.ZipFile(path) as zf:
        check_unpacked_size(path, zf)
        names = [n for n in zf.namelist() if not n.endswith("/")]
        roots = {PurePosixPath(n).parts[0] for n in names}
        if len(roots) != 1:
            raise ModelLoadError(f"{path} is not a torch.export archive (several top folders)",
                                 "save it with torch.export.save")
        root = roots.pop()
        kinds = {}
        for name in names:
            rel = name[len(root) + 1:]
            kind = _pt2_member_kind(rel)
            if kind is None:
                raise ModelLoadError(f"{path} holds {rel}, which is not a plain tensor or graph (a pickle, a "
                                     "custom object or compiled code); edgecomp will not load it", _PICKLE_HINT)
            kinds[rel] = kind
        models = [m.group(1) for rel in kinds if (m := re.fullmatch(r"models/(\w+)\.json", rel))]
        if models != ["model"]:
            raise ModelLoadError(f"{path} holds the programs {models}, not one program named 'model'",
                                 "save one program with torch.export.save")
        for rel, kind in kinds.items():
            if kind in ("weights_config", "constants_config"):
                _check_payload_config(path, zf, f"{root}/{rel}", kind.split("_")[0])
        for rel in ("data/weights/model_weights_config.json", "data/constants/model_constants_config.json"):
            if rel not in kinds:
                raise ModelLoadError(f"{path} lacks {rel}", "re-save it with torch.export.save (torch 2.13)")
        try:
            program_json = json.loads(zf.read(f"{root}/models/model.json"))
        except (ValueError, RecursionError) as exc:
            raise ModelLoadError(f"{path}: its graph is not valid JSON ({exc.__class__.__name__})",
                                 "re-save it with torch.export.save") from exc
        _check_sym_exprs(path, program_json)
        for target in sorted(pt2_graph_targets(program_json)):
            refusal = _pt2_target_refusal(target)
            if refusal:
                raise _refuse_op(path, *refusal)
        sample = f"{root}/data/sample_inputs/model.pt"
        if sample in zf.namelist():
            try:
                torch.load(io.BytesIO(zf.read(sample)), map_location="cpu", weights_only=True)
            except Exception as exc:
                raise ModelLoadError(f"{path}: its sample inputs are not plain tensors ({exc.__class__.__name__}); "
                                     "edgecomp will not unpickle them", _PICKLE_HINT) from exc


# --- TorchScript ------------------------------------------------------------------------------------

def _dotted(node: ast.AST) -> list[str] | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id, *reversed(parts)]
    return None


def torchscript_ops(source: str) -> set[str]:
    """The ops (``ns::name``) and method names (``.name``) that serialized TorchScript code names."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):
            chain = _dotted(node)
            if chain and chain[:2] == ["torch", "ops"]:
                if len(chain) >= 4:
                    found.add(f"{chain[2]}::{chain[3]}")
            elif chain and chain[0] == "torch":
                found.add(f"aten::{chain[1]}")
            elif chain and chain[0] == "ops":
                if len(chain) >= 3:
                    found.add(f"{chain[1]}::{chain[2]}")
            else:
                found.add(f".{node.attr}")
        elif isinstance(node, ast.Call) and _dotted(node.func) == ["getattr"] and len(node.args) > 1:
            name = node.args[1]
            found.add(f".{name.value}" if isinstance(name, ast.Constant) else ".<computed>")
    return found


def vet_torchscript(path: Path) -> None:
    """Refuse a TorchScript archive whose code (``__setstate__`` included) names an op that is not allowed."""
    with zipfile.ZipFile(path) as zf:
        check_unpacked_size(path, zf)
        for name in zf.namelist():
            if "/code/" not in name or not name.endswith(".py"):
                continue
            try:
                ops = torchscript_ops(zf.read(name).decode("utf-8"))
            except (SyntaxError, UnicodeDecodeError, ValueError, RecursionError) as exc:
                raise ModelLoadError(f"{path}: its code {name} cannot be read ({exc.__class__.__name__})",
                                     "re-save it with torch.jit.save") from exc
            for op in sorted(ops):
                if op.startswith("."):
                    if op[1:] in _denied_names() or op == ".<computed>":
                        raise _refuse_op(path, op[1:], "it reads or writes files or the console")
                elif why := op_refusal(op):
                    raise _refuse_op(path, op, why)


def _graph_kinds(block: Any) -> Iterator[str]:
    for node in block.nodes():
        yield node.kind()
        for sub in node.blocks():
            yield from _graph_kinds(sub)


def check_torchscript_graphs(path: Path, module: torch.jit.ScriptModule) -> None:
    """After ``torch.jit.load``: every op in the inlined graph of every method of every submodule is allowed."""
    for sub in module.modules():
        for method_name in sub._c._method_names():
            graph = sub._c._get_method(method_name).inlined_graph
            for kind in set(_graph_kinds(graph)):
                if why := op_refusal(kind):
                    raise _refuse_op(path, kind, why)


# --- every model ------------------------------------------------------------------------------------

def check_finite(model: nn.Module, source: str) -> None:
    """Refuse a model with a NaN or infinite parameter or buffer, naming the first and the count."""
    bad = [(name, int((~torch.isfinite(t)).sum())) for name, t in
           [*model.named_parameters(), *model.named_buffers()]
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        name, count = bad[0]
        raise ModelLoadError(
            f"the weights of {source} are not all finite: '{name}' has {count} NaN or infinite values"
            + (f" ({len(bad) - 1} more tensors too)" if len(bad) > 1 else ""),
            "fix the training run or checkpoint that produced them (for example a diverged loss)",
        )
