"""Weight sharing, Deep Compression and binary weights, measured in one run; prints one table.

    .venv/bin/python benchmarks/compression.py [--mobilenet] [--runs 30]

For each model: an fp32 build (the reference), ``cluster(bits=4)``, the ``deep-compression`` preset
(magnitude pruning -> cluster -> Huffman) and ``binarize``; one row per file each build wrote (see
benchmarks/_compression_rows.py). Accuracy is on the digits test split (360 images) where a runtime
runs the file here; CoreML cannot run on Linux (parity not-run). ``--mobilenet`` adds a MobileNetV2
(random weights, no data: size rows only, no fine-tuning).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._compression_rows import BenchModel, format_table, rows


def main() -> None:
    """Run the builds and print the table and the deep-compression summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mobilenet", action="store_true", help="also MobileNetV2 (random weights; size rows)")
    parser.add_argument("--runs", type=int, default=30, help="timed runs per artifact")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    models = [BenchModel("digits_cnn", "digits_cnn")]
    if args.mobilenet:
        models.append(BenchModel("mobilenetv2", "benchmarks/mobilenetv2.py:MobileNetV2", [1, 3, 224, 224],
                                 ("fp32", "cluster 4-bit")))
    table = rows(*models, runs=args.runs)
    print(format_table(table))
    for model in {r["model"] for r in table}:
        fp32 = next(r for r in table if r["model"] == model and r["method"] == "fp32" and "tflite" in r["artifact"])
        for r in table:
            if r["model"] == model and r["artifact"].startswith("model.ecz") and fp32["accuracy"] is not None:
                print(f"{model} {r['method']}: model.ecz {r['bytes']} B = {r['ratio_to_fp32']:.1f}x smaller than the "
                      f"fp32 .tflite ({fp32['bytes']} B); accuracy {r['accuracy']:.2f}% vs {fp32['accuracy']:.2f}% "
                      f"(drop {fp32['accuracy'] - r['accuracy']:.2f} pt)")


if __name__ == "__main__":
    main()
