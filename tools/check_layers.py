"""Check that edgecomp's layers import downwards only.

Every module of the package belongs to one layer of :data:`LAYERS` (bottom first); a module may import
its own layer and the layers below it, never one above. Module-level and function-level imports both
count (an import inside a function is still a dependency). An exception needs an entry in
:data:`ALLOWED` that says why.

    python tools/check_layers.py            # exit 0, or 1 listing each upward import as file:line
    python tools/check_layers.py --root DIR # check another copy of the package (DIR is the edgecomp folder)
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "edgecomp"

# The one written-down order, bottom first. A module belongs to the layer of its longest listed prefix.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("edgecomp", "edgecomp.errors", "edgecomp.spec", "edgecomp.quiet", "edgecomp.fsutil",
              "edgecomp.timings", "edgecomp.dtypes", "edgecomp.user_code")),
    ("records", ("edgecomp.records",)),
    ("targets", ("edgecomp.targets",)),
    ("data-model", ("edgecomp.data", "edgecomp.metrics", "edgecomp.finetune", "edgecomp.model", "edgecomp.model_files",
                    "edgecomp.model_sandbox", "edgecomp.model_vetting", "edgecomp.zoo", "edgecomp.bundle",
                    "edgecomp.schema", "edgecomp.artifact_cache", "edgecomp.zoo_cache")),
    ("compress", ("edgecomp.compress",)),
    ("export", ("edgecomp.export",)),
    ("profile", ("edgecomp.profile",)),
    ("android", ("edgecomp.android",)),
    ("verify", ("edgecomp.verify",)),
    ("plan", ("edgecomp.plan",)),
    ("report", ("edgecomp.report",)),
    ("build", ("edgecomp.build", "edgecomp.build_options", "edgecomp.build_reuse")),
    ("cli", ("edgecomp.cli", "edgecomp.commands", "edgecomp.__main__")),
]

# (importer, imported) -> why this upward import is allowed. Keep it tiny.
ALLOWED: dict[tuple[str, str], str] = {
    ("edgecomp.targets", "edgecomp.compress.base"):
        "load_target checks a target's methods against the stage registry, lazily (the registry imports torch)",
    ("edgecomp.compress._int8_select", "edgecomp.profile.predict"):
        "quantize.int8(max_drop) states each reverted layer's predicted latency on the build's hardware profile "
        "(issue 18), lazily, through the one roofline predictor",
}


@dataclass(frozen=True)
class Violation:
    """One import of a higher layer."""

    path: Path
    line: int
    importer: str
    imported: str
    importer_layer: str
    imported_layer: str

    def __str__(self) -> str:
        return (f"{self.path}:{self.line}: {self.importer} ({self.importer_layer}) imports "
                f"{self.imported} ({self.imported_layer})")


def layer_of(module: str, layers: list[tuple[str, tuple[str, ...]]] = LAYERS) -> tuple[int, str]:
    """(rank, name) of the layer ``module`` belongs to; a KeyError for a module no layer lists."""
    best: tuple[int, int, str] | None = None
    for rank, (name, prefixes) in enumerate(layers):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), rank, name)
    if best is None or (best[0] == len(PACKAGE) and module != PACKAGE):
        raise KeyError(f"{module} belongs to no layer: add it to LAYERS in {__file__}")
    return best[1], best[2]


def module_name(path: Path, root: Path) -> str:
    """Dotted name of the module at ``path`` inside the package folder ``root``."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(tree: ast.Module, module: str, is_package: bool, known: set[str]) -> list[tuple[int, str]]:
    """(line, module) of every edgecomp module the code imports, at any depth (functions included)."""
    found: dict[tuple[int, str], None] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update({(node.lineno, a.name): None for a in node.names if a.name.split(".")[0] == PACKAGE})
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:  # `from edgecomp.compress import huffman` imports a module
                sub = f"{source}.{alias.name}"
                found[(node.lineno, sub if sub in known else source)] = None
    return list(found)


def check(root: Path, layers: list[tuple[str, tuple[str, ...]]] = LAYERS,
          allowed: dict[tuple[str, str], str] = ALLOWED) -> list[Violation]:
    """Every import of a higher layer in the package folder ``root``, in file and line order."""
    files = sorted(root.rglob("*.py"))
    known = {module_name(f, root) for f in files}
    violations = []
    for path in files:
        module = module_name(path, root)
        rank, name = layer_of(module, layers)
        tree = ast.parse(path.read_text(), filename=str(path))
        for line, imported in imported_modules(tree, module, path.name == "__init__.py", known):
            up_rank, up_name = layer_of(imported, layers)
            if up_rank > rank and (module, imported) not in allowed:
                violations.append(Violation(path, line, module, imported, name, up_name))
    return violations


def main(argv: list[str] | None = None) -> int:
    """Print each upward import and return 1, or return 0 when there is none."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1] / PACKAGE,
                        help="the edgecomp package folder to check")
    args = parser.parse_args(argv)
    try:
        violations = check(args.root)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 1
    for v in violations:
        print(v)
    if violations:
        order = " -> ".join(name for name, _ in LAYERS)
        print(f"{len(violations)} upward import(s); layers, bottom first: {order}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
