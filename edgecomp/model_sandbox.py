"""A first load of a model file in a child process, so that a memory or time bomb cannot take a build down.

:func:`trial_load` runs :func:`edgecomp.model_files.load_model_file` and one forward pass on zeros in
``python -I`` (no user site, no ``PYTHON*`` variables), in a fresh empty working folder, for at most
:data:`TIMEOUT_S` seconds, and with an address space capped, once Python and torch are imported, at what
they take plus :data:`MEMORY_BASE` plus :data:`MEMORY_PER_BYTE` times the file's unpacked size (the
baseline is measured, not assumed, because a CUDA build of torch maps far more than a CPU build). Only when the child succeeds does the
parent load the file itself. The child vets the file exactly as the parent does, so it never runs
anything that the parent would refuse.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from edgecomp.errors import ModelLoadError

GIB = 1 << 30
MEMORY_BASE = 3 * GIB // 2
MEMORY_PER_BYTE = 4
TIMEOUT_S = 300
_RESULT = "EDGECOMP-TRIAL-LOAD:"
_CHILD = "import sys; sys.path.insert(0, {root!r}); from edgecomp.model_sandbox import child_main; child_main()"
_MEMORY_WORDS = ("can't allocate memory", "out of memory", "not enough memory", "cannot allocate memory",
                 "std::bad_alloc")


def memory_allowance(path: Path) -> int:
    """Bytes of address space the trial load of ``path`` may use beyond what Python and torch take."""
    with zipfile.ZipFile(path) as zf:
        unpacked = sum(info.file_size for info in zf.infolist())
    return MEMORY_BASE + MEMORY_PER_BYTE * unpacked


def child_main() -> None:
    """Entry point of the child: load argv[1] (a JSON request), run a forward, print the result as JSON."""
    import torch
    import torch._export.serde.serialize  # imported before the cap, like torch itself

    from edgecomp.errors import EdgecompError
    from edgecomp.model_files import load_model_file

    request = json.loads(sys.argv[1])
    _cap_address_space(int(request["allowance"]))
    result: dict[str, object]
    try:
        torch.set_num_threads(1)
        module, file_shape = load_model_file(Path(request["path"]))
        shape = request["input_shape"] or file_shape
        result = {"shape": shape}
        if shape:
            module.eval()
            try:
                with torch.no_grad():
                    module(torch.zeros(shape))
            except Exception as exc:  # noqa: BLE001 - reported to the parent, which names the cause
                result["forward_error"] = str(exc)
                if isinstance(exc, MemoryError) or any(w in str(exc).lower() for w in _MEMORY_WORDS):
                    result = {"memory": True}
    except EdgecompError as exc:
        result = {"error": exc.message, "hint": exc.hint}
    except MemoryError:
        result = {"memory": True}
    except Exception as exc:  # noqa: BLE001 - any other failure becomes a clear error in the parent
        memory = any(w in str(exc).lower() for w in _MEMORY_WORDS)
        result = {"memory": True} if memory else {"error": f"cannot load {request['path']}: {exc}",
                                                   "hint": "re-save it with torch.jit.save or torch.export.save"}
    sys.stdout.write(_RESULT + json.dumps(result) + "\n")
    sys.stdout.flush()


def _cap_address_space(allowance: int) -> None:
    """Limit this process's address space to its current size plus ``allowance`` bytes (Linux)."""
    try:
        import resource

        with open("/proc/self/status") as status:
            size_kib = next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
    except (ImportError, OSError, StopIteration):
        return  # not Linux: the trial load still runs apart, in its own process, with the time limit
    cap = size_kib * 1024 + allowance
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def trial_load(path: Path, input_shape: list[int] | None) -> dict[str, object]:
    """Load ``path`` and run it once in a capped child process; the child's findings (``shape``, and
    ``forward_error`` if the forward pass failed), or a ModelLoadError for a refused, bomb or broken file."""
    import edgecomp

    allowance = memory_allowance(path)
    root = str(Path(edgecomp.__file__).resolve().parent.parent)
    request = json.dumps({"path": str(path.resolve()), "input_shape": input_shape, "allowance": allowance})
    env = {"PATH": os.environ.get("PATH", ""), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "MALLOC_ARENA_MAX": "2", "HOME": os.environ.get("HOME", "/")}
    with tempfile.TemporaryDirectory(prefix="edgecomp-load-") as workdir:
        try:
            done = subprocess.run([sys.executable, "-I", "-c", _CHILD.format(root=root), request],
                                  check=False, cwd=workdir, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise ModelLoadError(f"loading {path} and running it once took more than {TIMEOUT_S} s",
                                 "check that the model is a plain network; re-export it") from exc
    lines = [line for line in done.stdout.splitlines() if line.startswith(_RESULT)]
    result = json.loads(lines[-1][len(_RESULT):]) if lines else {"memory": True} if done.returncode < 0 else None
    if result is None or (done.returncode != 0 and not result.get("memory")):
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise ModelLoadError(f"loading {path} failed in the trial process (exit {done.returncode}): "
                             + " / ".join(tail), "re-save it with torch.jit.save or torch.export.save")
    if result.get("memory"):
        raise ModelLoadError(
            f"the model in {path} needed more than {allowance / GIB:.1f} GiB while loading and running once "
            f"(edgecomp allows {MEMORY_BASE / GIB:.1f} GiB plus {MEMORY_PER_BYTE} times the file's unpacked size, "
            "beyond what Python and torch take)",
            "check that the file holds an ordinary network; a graph that allocates huge tensors is refused",
        )
    if "error" in result:
        raise ModelLoadError(str(result["error"]), str(result.get("hint", "")))
    return result
