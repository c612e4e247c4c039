"""Streaming an image folder vs holding the same images as arrays: peak RSS and images/s, measured side by side.

Run: ``EDGECOMP_CACHE_DIR=/tmp/ec_cache .venv/bin/python benchmarks/data_streaming.py [--images 20000]
[--array-images 4000] [--cache DIR]``

The folder: ``--images`` generated 224x224 JPEGs in 10 class folders (written once into ``--cache``, reused
after). Each variant runs in its own subprocess and does what a build does with data: int8 post-training
calibration on 256 training images (``Dataset.calibration`` + ``compress.quantize.ptq``) and one fine-tune epoch
(``edgecomp.finetune.finetune``, epochs=1: the validation split is scored before and after the epoch and once at
the end, as a build's fine-tune does), on a small MobileNet-style network (depthwise-separable blocks,
10 classes).

- folder: ``load_image_folder`` (lazy decoding, DataLoader worker processes);
- arrays: the same files decoded up front into N x 3 x 224 x 224 float32 arrays (``Dataset.from_arrays``).
  At 20,000 images that is 12 GB, more than a shared machine should take, so it runs on ``--array-images``
  files and the table states its footprint extrapolated linearly to the folder's image count.

Peak RSS is ``getrusage(RUSAGE_SELF).ru_maxrss`` of the variant's process (about 1.1 GB of it is torch and
the int8 calibration's torch.export, whatever the data); the DataLoader workers' largest peak
(``RUSAGE_CHILDREN``) is shown beside it; forked workers share the parent's pages, so their RSS counts those
pages again. Images/s counts every image read (calibration, training and
validation passes) over the phase's wall time.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CLASSES = 10
SIZE = 224


def generate(root: Path, n: int, seed: int = 0) -> None:
    """``n`` 224x224 JPEGs in class folders (smooth random fields tinted by class), skipped if already there."""
    from PIL import Image

    done = root / ".complete"
    if done.is_file() and done.read_text() == str(n):
        return
    rng = np.random.default_rng(seed)
    for i in range(n):
        c = i % CLASSES
        folder = root / f"class_{c:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (14, 14, 3), dtype=np.uint8)
        small[..., c % 3] = np.clip(small[..., c % 3].astype(int) + 40 + 10 * c, 0, 255).astype(np.uint8)
        Image.fromarray(small).resize((SIZE, SIZE), Image.Resampling.BILINEAR).save(folder / f"{i:06d}.jpg",
                                                                                    quality=85)
        if i % 2000 == 0:
            print(f"  generated {i:,}/{n:,}", flush=True)
    done.write_text(str(n))


def small_mobilenet():
    """A MobileNet-style network: a stride-2 stem, five depthwise-separable stride-2 blocks, 10 classes."""
    from torch import nn

    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cin, 3, 2, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU6(),
                             nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU6())

    return nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(),
                         block(16, 32), block(32, 64), block(64, 128), block(128, 128), block(128, 256),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, CLASSES))


def arrays_dataset(root: Path, n: int, spec):
    """The first ``n`` files of the folder (by class, round robin) decoded into arrays, split as the folder is."""
    from edgecomp.data.base import Dataset
    from edgecomp.data.image_folder import decode, load_image_folder

    folder = load_image_folder(root, None, seed=0, workers=0, spec=spec)
    parts = []
    for split in ("train", "val", "test"):
        ds = folder.split(split)
        k = round(n * len(ds) / sum(folder.size(s) for s in ("train", "val", "test")))
        x = np.empty((k, 3, SIZE, SIZE), np.float32)  # filled in place: one copy of the data, no more
        for i in range(k):
            x[i] = decode(ds.paths[i], ds.preprocess)
        parts += [x, np.asarray(ds.targets[:k], np.int64)]
    return Dataset.from_arrays(f"{root.name}-arrays", *parts, labels=folder.labels, preprocess=folder.preprocess)


def run_variant(kind: str, root: Path, n_arrays: int, epoch: bool = True) -> dict:
    """Calibrate and fine-tune one epoch on ``kind`` data in this process; measured figures as a dict."""
    import torch

    from edgecomp.compress.pt2e import QuantSettings
    from edgecomp.compress.quantize import ptq
    from edgecomp.data.image_folder import load_image_folder
    from edgecomp.finetune import FinetuneConfig, finetune
    from edgecomp.metrics import load_metric
    from edgecomp.spec import ModelSpec

    torch.manual_seed(0)
    torch.set_num_threads(2)
    spec = ModelSpec(name="small-mobilenet", input_shape=[1, 3, SIZE, SIZE])
    t0 = time.monotonic()
    data = load_image_folder(root, None, seed=0, spec=spec) if kind == "folder" else arrays_dataset(root, n_arrays,
                                                                                                     spec)
    data.metric = load_metric(None)
    load_s = time.monotonic() - t0
    rss_after_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    model = small_mobilenet()
    t0 = time.monotonic()
    calib = data.calibration(256, seed=0)
    calib_read_s = time.monotonic() - t0
    ptq(model.eval(), QuantSettings(), calib, spec.input_shape, 0, False)
    calib_s = time.monotonic() - t0
    del calib
    t0 = time.monotonic()
    if epoch:
        finetune(model, data, FinetuneConfig(epochs=1, batch_size=64, patience=1))
    epoch_s = time.monotonic() - t0
    epoch_images = (data.size("train") + 3 * data.size("val")) if epoch else 0
    return {
        "kind": kind, "images": sum(data.size(s) for s in ("train", "val", "test")), "load_s": load_s,
        "calib_s": calib_s, "calib_ips": 256 / calib_s, "calib_read_ips": 256 / calib_read_s, "epoch_s": epoch_s,
        "epoch_images": epoch_images, "epoch_ips": epoch_images / epoch_s if epoch else 0.0, "rss_after_load_mb": rss_after_load,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "worker_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "workers": data.workers,
    }


def measure(kind: str, root: Path, n_arrays: int, epoch: bool = True) -> dict:
    """Run one variant in a fresh subprocess (so peak RSS is its own) and return its figures."""
    proc = subprocess.run([sys.executable, __file__, "--variant", kind, "--cache", str(root.parent),
                           "--images", root.name.split("-")[-1], "--array-images", str(n_arrays),
                           *([] if epoch else ["--no-epoch"])],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} variant failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(folder: dict, arrays: dict) -> str:
    """The side-by-side table, with the arrays' footprint extrapolated to the folder's image count."""
    per_image_mb = 3 * SIZE * SIZE * 4 / 2**20
    extrapolated = arrays["peak_rss_mb"] + (folder["images"] - arrays["images"]) * per_image_mb
    rows = [("", "folder (streamed)", "arrays (in memory)", "ratio arrays/folder"),
            ("images", f"{folder['images']:,}", f"{arrays['images']:,}", ""),
            ("DataLoader workers", str(folder["workers"]), "0 (sliced)", ""),
            ("load s", f"{folder['load_s']:.1f}", f"{arrays['load_s']:.1f}", ""),
            ("calibration: reading 256 inputs, img/s", f"{folder.get('calib_read_ips', 0):.0f}",
             f"{arrays.get('calib_read_ips', 0):.0f}", ""),
            ("calibration img/s (256, with PTQ)", f"{folder['calib_ips']:.0f}", f"{arrays['calib_ips']:.0f}",
             f"{arrays['calib_ips'] / folder['calib_ips']:.2f}"),
            ("fine-tune epoch img/s", f"{folder['epoch_ips']:.0f}", f"{arrays['epoch_ips']:.0f}",
             f"{arrays['epoch_ips'] / folder['epoch_ips']:.2f}" if folder["epoch_ips"] else "-"),
            ("fine-tune epoch s", f"{folder['epoch_s']:.0f} ({folder['epoch_images']:,} img)",
             f"{arrays['epoch_s']:.0f} ({arrays['epoch_images']:,} img)", ""),
            ("RSS MB after loading the data", f"{folder['rss_after_load_mb']:.0f}",
             f"{arrays['rss_after_load_mb']:.0f}", f"{arrays['rss_after_load_mb'] / folder['rss_after_load_mb']:.1f}"),
            ("peak RSS MB (main)", f"{folder['peak_rss_mb']:.0f}", f"{arrays['peak_rss_mb']:.0f}",
             f"{arrays['peak_rss_mb'] / folder['peak_rss_mb']:.1f}"),
            ("peak RSS MB (largest worker)", f"{folder['worker_peak_rss_mb']:.0f}", "-", ""),
            (f"peak RSS MB at {folder['images']:,} images", f"{folder['peak_rss_mb']:.0f}",
             f"~{extrapolated:,.0f} (extrapolated)", f"{extrapolated / folder['peak_rss_mb']:.0f}")]
    if folder["images"] < 20000:
        at_20k = arrays["peak_rss_mb"] + (20000 - arrays["images"]) * per_image_mb
        rows.append(("arrays' peak RSS MB at 20,000 images", "", f"~{at_20k:,.0f} (extrapolated)", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


def main() -> None:
    """Generate the folder once, measure both variants in subprocesses, print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=20000, help="images in the generated folder (default 20000)")
    p.add_argument("--array-images", type=int, default=4000, help="images held as arrays (default 4000)")
    p.add_argument("--cache", default=str(Path(os.environ.get("TMPDIR", "/tmp")) / "edgecomp-streaming-bench"),
                   help="where the generated folder is kept between runs")
    p.add_argument("--variant", choices=["folder", "arrays"], help=argparse.SUPPRESS)
    p.add_argument("--no-epoch", action="store_true", help="calibration only (a quick look at a large folder)")
    p.add_argument("--table", metavar="JSON", help="print the table of a previous run's last line and exit")
    args = p.parse_args()
    if args.table:
        print(table(**json.loads(Path(args.table).read_text().strip().splitlines()[-1])))
        return
    root = Path(args.cache) / f"jpeg224-{args.images}"
    logging.basicConfig(level=logging.WARNING)
    if args.variant:
        print(json.dumps(run_variant(args.variant, root, args.array_images, not args.no_epoch)))
        return
    print(f"generating {args.images:,} 224x224 JPEGs in {root} (once)", flush=True)
    generate(root, args.images)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.processor() or platform.platform()}")
    folder = measure("folder", root, args.array_images, not args.no_epoch)
    arrays = measure("arrays", root, args.array_images, not args.no_epoch)
    print(table(folder, arrays))
    print(json.dumps({"folder": folder, "arrays": arrays}))


if __name__ == "__main__":
    main()
