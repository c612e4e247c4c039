"""Every bad --data / --metric / --input-shape input through ``edgecomp build``: exit code, message, what was written.

Each case is generated in a temporary folder and built in this process with ``edgecomp.cli.main`` (so imports are
paid once); the table lists the exit code, the console's error lines and whether anything was left at ``--out``.

    .venv/bin/python tools/bad_inputs.py
"""

from __future__ import annotations

import contextlib
import io
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

USER_PY = '''
import torch
from torch import nn
from torch.utils.data import TensorDataset


class Net(nn.Module):
    input_shape = [1, 3, 16, 16]

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(4, 3))

    def forward(self, x):
        return self.body(x)


def net():
    torch.manual_seed(0)
    return Net()


def _set(n=30, shape=(3, 16, 16)):
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, *shape, generator=g), torch.randint(0, 3, (n,), generator=g))


def raises():
    raise RuntimeError("the bucket is not mounted")


def wrong_type():
    return [1, 2, 3]


def wrong_shape():
    return _set(shape=(3, 8, 8))


def good():
    return {"train": _set(), "val": _set(), "test": _set()}


def metric_raises(batches):
    raise ZeroDivisionError("no boxes in this batch")


def metric_nan(batches):
    return float("nan")
'''


def _png(path: Path, size: int, seed: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)


def _folder(root: Path, classes: int, per_class: int = 6, sizes=(16,), corrupt: int = 0) -> Path:
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            _png(root / f"class{c}" / f"{i}.png", sizes[i % len(sizes)], 100 * c + i)
        for i in range(corrupt):
            (root / f"class{c}" / f"broken{i}.png").write_bytes(b"not a png at all")
    return root


def cases(tmp: Path) -> list[tuple[str, list[str]]]:
    """(what, extra build arguments) for every bad input."""
    user = tmp / "user.py"
    user.write_text(textwrap.dedent(USER_PY))
    model = f"{user}:net"
    empty = tmp / "empty"
    (empty / "a").mkdir(parents=True)
    (empty / "b").mkdir(parents=True)
    nhwc = tmp / "nhwc.npz"
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 16, 16, 3)).astype(np.float32), rng.integers(0, 3, 20)
    np.savez(nhwc, x_train=x, y_train=y, x_val=x, y_val=y, x_test=x, y_test=y)
    return [
        ("image folder with no images", [model, "--data", str(empty)]),
        ("image folder with a single class", [model, "--data", str(_folder(tmp / "one", 1))]),
        ("image folder, most files corrupt", [model, "--data", str(_folder(tmp / "corrupt", 3, 2, corrupt=4))]),
        ("image folder, a few files corrupt (skipped, counted)",
         [model, "--data", str(_folder(tmp / "somecorrupt", 3, 10, corrupt=1))]),
        ("images of mixed sizes (resized, stated)",
         [model, "--data", str(_folder(tmp / "mixed", 3, 6, sizes=(16, 20, 24)))]),
        ("labels beyond the model's outputs (5 classes, 3 outputs)", [model, "--data", str(_folder(tmp / "five", 5))]),
        ("NHWC arrays for an NCHW model", [model, "--data", str(nhwc)]),
        ("dataset factory that raises", [model, "--data", f"{user}:raises"]),
        ("dataset factory of the wrong type", [model, "--data", f"{user}:wrong_type"]),
        ("dataset factory yielding the wrong shape", [model, "--data", f"{user}:wrong_shape"]),
        ("metric that raises", [model, "--data", f"{user}:good", "--metric", f"{user}:metric_raises"]),
        ("metric that returns NaN", [model, "--data", f"{user}:good", "--metric", f"{user}:metric_nan"]),
        ("malformed --input-shape 1,3,x,8", [model, "--input-shape", "1,3,x,8"]),
    ]


def run(args: list[str], out: Path) -> tuple[int, str]:
    """Build with ``args``; (exit code, console text)."""
    from edgecomp.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        try:
            code = main(["build", *args, "--target", "android-arm64", "--recipe", "", "--formats", "onnx",
                         "--runs", "2", "--out", str(out)])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
    return code, buf.getvalue()


def main() -> None:
    """Run every case and print what the user sees."""
    with tempfile.TemporaryDirectory(prefix="edgecomp-bad-inputs-") as tmp:
        for i, (what, args) in enumerate(cases(Path(tmp))):
            out = Path(tmp) / f"out{i}"
            code, text = run(args, out)
            lines = [line for line in text.splitlines()
                     if any(k in line.lower() for k in ("error", "hint", "skipped", "resized", "size", "corrupt",
                                                        "unreadable", "fix", "not "))]
            print(f"\n## {what}\nexit {code}; --out {'written' if out.exists() else 'not written'}")
            for line in (lines or text.strip().splitlines()[-3:])[:6]:
                print(f"  {line.strip()[:300]}")


if __name__ == "__main__":
    main()
