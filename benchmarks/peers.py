"""int8 against its peers: the same trained models quantized by edgecomp and by the tools users would use.

Models (trained here on scikit-learn's digits upscaled to 3x32x32, 900 train / 200 val / 697 test):
MobileNetV2-style and ResNet-18-style (``benchmarks/real_data_models.py``) and a MobileNetV3-style network
with hard-swish and squeeze-excite (below). Quantizers, each through its own API:

- edgecomp ``quantize.int8`` (default: cross-layer equalisation + bias correction; plain, without them;
  ``max_drop`` reverting layers; ``adaround``) -> .tflite
  (and the default -> ONNX QDQ for the onnxruntime rows);
- litert-torch's own PT2E flow (``PT2EQuantizer`` + ``get_symmetric_quantization_config(is_per_channel=True)``);
- ai-edge-quantizer's static int8 recipe (``static_wi8_ai8``) on the fp32 .tflite;
- onnxruntime ``quantize_static`` (QDQ, per-channel, MinMax) on the fp32 ONNX;
- NNCF ``nncf.quantize`` (PTQ) -> ONNX, when NNCF imports (``--nncf-path`` for a side install).
- Sony MCT: no row. model-compression-toolkit 2.6.1 fails at import here: its edge-mdt-cl dependency needs
  torchvision, and torchvision from the package index does not import beside the CPU torch 2.13.0 wheel.

The hard rows: MobileNetV2-style with per-tensor weights (depthwise-heavy, the case equalisation was made
for), MobileNetV3-style, and the hard model: MobileNetV2-style with ReLU whose depthwise layers carry the
100x per-channel range spread of a real MobileNetV2 (``spread_depthwise_ranges``: a function-preserving
rescale, since a few minutes of training on digits does not grow it), before/after each edgecomp tool. Host p50: one thread, same runtime per block
(LiteRT for .tflite, onnxruntime for .onnx). Test split of 697 images: one image is 0.143 pt; the binomial
standard error of a ~98 % accuracy is about 0.5 pt, so drops under ~0.3 pt are within the split's noise
(paired: both models see the same images, the drop's noise is smaller; the ``flips`` column counts
images whose correctness changed). The verdict is edgecomp's int8 parity rule for an edgecomp row's .tflite
against that row's own int8 PyTorch reference (peers have none: "-"). Host timings come from a shared 2-core machine: noisy.

Run: ``python benchmarks/peers.py [--epochs 8] [--nncf-path DIR]`` (about 15-25 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata as md
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_data_models import MobileNetV2Style, ResNet18Style

from edgecomp.compress.base import BuildContext, ExportOptions, get_stage
from edgecomp.compress.recipe import parse_recipe
from edgecomp.data import Dataset
from edgecomp.export.runtime import make_runner, run_artifact
from edgecomp.spec import ModelSpec
from edgecomp.targets import load_profile, load_target

SHAPE = [1, 3, 32, 32]
CACHE = Path(tempfile.gettempdir()) / "edgecomp-peers"


class _SE(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, max(8, c // 4), 1), nn.Conv2d(max(8, c // 4), c, 1)
        self.gate = nn.Hardsigmoid()  # a module, as torchvision's SqueezeExcitation has it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))
        return x * self.gate(self.fc2(s))


class _V3Block(nn.Module):
    def __init__(self, cin: int, hidden: int, cout: int, stride: int, se: bool, hs: bool) -> None:
        super().__init__()
        act = nn.Hardswish if hs else nn.ReLU
        self.expand = nn.Sequential(nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), act())
        self.dw = nn.Sequential(nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
                                nn.BatchNorm2d(hidden), act())
        self.se = _SE(hidden) if se else nn.Identity()
        self.project = nn.Sequential(nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + y if self.residual else y


class MobileNetV3Style(nn.Module):
    """MobileNetV3-Small's pattern (hard-swish, squeeze-excite with hard-sigmoid) scaled for 32x32 digits."""

    TABLE = ((16, 16, 1, True, False), (16, 48, 24, 2, False, False), (24, 72, 24, 1, False, False),
             (24, 96, 40, 2, True, True), (40, 120, 40, 1, True, True), (40, 144, 48, 1, True, True))

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish())
        blocks = [_V3Block(16, 16, 16, 1, True, False)]
        blocks += [_V3Block(cin, h, cout, s, se, hs) for cin, h, cout, s, se, hs in self.TABLE[1:]]
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Conv2d(48, 192, 1, bias=False), nn.BatchNorm2d(192), nn.Hardswish())
        self.classifier = nn.Sequential(nn.Linear(192, 128), nn.Hardswish(), nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(self.blocks(self.stem(x))).mean((2, 3)))


def mobilenetv2_relu() -> nn.Module:
    """MobileNetV2-style with ReLU instead of ReLU6, as Nagel et al. (2019) run it for cross-layer equalisation."""
    model = MobileNetV2Style(width=0.5)
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.ReLU6):
                setattr(module, name, nn.ReLU())
    return model


def spread_depthwise_ranges(model: nn.Module, spread: float = 100.0, seed: int = 0) -> int:
    """Give every depthwise layer the per-channel weight-range spread BN folding gives a real MobileNetV2.

    Nagel et al. (2019), Fig. 2: after batch-norm folding, the first depthwise layer of an ImageNet-trained
    MobileNetV2 has output channels whose weight ranges differ by a factor of about 100, which per-tensor
    int8 weights cannot hold. A network trained on digits for a few minutes does not develop this, so it is
    put in by a function-preserving rescale: channel c of each depthwise conv's batch norm is scaled by s_c
    (log-uniform over ``spread``) and the next pointwise conv's input channel c by 1/s_c; through a ReLU
    (relu(s x) = s relu(x), s > 0) the float network computes exactly what it computed before. Returns the
    number of rescaled layers.
    """
    gen = torch.Generator().manual_seed(seed)
    count = 0
    with torch.no_grad():
        for block in model.modules():
            layers = list(block.children()) if isinstance(block, nn.Sequential) else []
            for i in range(len(layers) - 3):
                dw, bn, act, pw = layers[i:i + 4]
                if (isinstance(dw, nn.Conv2d) and dw.groups > 1 and isinstance(bn, nn.BatchNorm2d)
                        and isinstance(act, nn.ReLU) and isinstance(pw, nn.Conv2d) and pw.groups == 1):
                    s = spread ** (torch.rand(bn.num_features, generator=gen) - 0.5)
                    bn.weight.mul_(s)
                    bn.bias.mul_(s)
                    pw.weight.div_(s.view(1, -1, 1, 1))
                    count += 1
    return count


MODELS = {"mobilenetv2": lambda: MobileNetV2Style(width=0.5), "mobilenetv3": MobileNetV3Style,
          "resnet18": lambda: ResNet18Style(width=12), "mobilenetv2-relu": mobilenetv2_relu}


SPLIT = (900, 200)  # train, val; the remaining 697 images are the test split (one image = 0.143 pt)


def digits32(seed: int = 0) -> Dataset:
    """scikit-learn's digits, upscaled to 32x32 (bilinear), grey -> RGB, normalised; 900/200/697."""
    from edgecomp.data.digits import _digits_arrays

    images, target = _digits_arrays()
    x = torch.as_tensor(images, dtype=torch.float32)[:, None] / 16.0
    x = nn.functional.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    x = ((x - 0.25) / 0.35).numpy().astype(np.float32)
    y = np.asarray(target, np.int64)
    idx = np.random.default_rng(seed).permutation(len(x))
    x, y = x[idx], y[idx]
    a, b = SPLIT[0], SPLIT[0] + SPLIT[1]
    return Dataset.from_arrays("digits32", x[:a], y[:a], x[a:b], y[a:b], x[b:], y[b:])


def train(name: str, data: Dataset, epochs: int) -> nn.Module:
    """Train (or load from the cache) one model; Adam, cosine schedule, light shift augmentation."""
    path = CACHE / f"{name}-{epochs}-train{SPLIT[0]}.pt"
    model = MODELS[name]()
    if path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    x, y = (torch.as_tensor(a) for a in data.arrays("train"))
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * ((len(x) + 63) // 64))
    for _ in range(epochs):
        model.train()
        for i in torch.randperm(len(x), generator=gen).split(64):
            dx, dy = torch.randint(-2, 3, (2,), generator=gen).tolist()
            xb = torch.roll(x[i], shifts=(dx, dy), dims=(2, 3))
            loss = nn.functional.cross_entropy(model(xb), y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model.eval()


def _ctx(data: Dataset) -> BuildContext:
    target = load_target("android-arm64")
    spec = ModelSpec(name="m", input_shape=SHAPE, layout="NCHW")
    return BuildContext(spec=spec, target=target, profile=load_profile(target.hardware), data=data)


def edgecomp_int8(model: nn.Module, data: Dataset, settings: str):
    """quantize.int8 with ``settings`` (QAT off: this compares post-training quantizers); (model, export, metrics)."""
    (step,) = parse_recipe(f"quantize.int8({settings})")
    cfg = step.config.model_copy(update={"qat": "never"})
    result = get_stage("quantize.int8")().apply(model, cfg, _ctx(data))
    return result


def export_tflite_file(model: nn.Module, options: ExportOptions, path: Path) -> Path:
    """edgecomp's TFLite exporter (fp32 or int8)."""
    from edgecomp.export.tflite import export_tflite

    export_tflite(model, ModelSpec(name="m", input_shape=SHAPE), options, path)
    return path


def litert_pt2e(model: nn.Module, calib: np.ndarray, path: Path) -> Path:
    """litert-torch's documented PT2E int8 flow: its quantizer, prepare/convert, convert with QuantConfig."""
    import litert_torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    graph = torch.export.export(copy.deepcopy(model).eval(), (torch.zeros(SHAPE),)).module()
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for xi in calib:
            prepared(torch.as_tensor(xi[None]))
    converted = convert_pt2e(prepared, fold_quantize=False)
    litert_torch.convert(converted, (torch.zeros(SHAPE),),
                         quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(str(path))
    return path


def aeq_static(fp32: Path, calib: np.ndarray, path: Path) -> Path:
    """ai-edge-quantizer's static int8 recipe (int8 weights per channel, int8 activations), calibrated."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import quantizer, recipe

    q = quantizer.Quantizer(str(fp32), recipe.static_wi8_ai8())
    interp = Interpreter(model_path=str(fp32))
    key = next(iter(interp.get_signature_list()))
    (in_name,) = interp.get_signature_runner(key).get_input_details().keys()
    calibration = q.calibrate({key: [{in_name: xi[None]} for xi in calib]}, num_threads=2)
    path.write_bytes(bytes(q.quantize(calibration).quantized_model))
    return path


def ort_static(fp32_onnx: Path, calib: np.ndarray, path: Path) -> Path:
    """onnxruntime quantize_static: QDQ, per-channel int8 weights, MinMax-calibrated int8 activations."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name = onnx.load(str(fp32_onnx)).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{name: xi[None]} for xi in calib])

        def get_next(self):
            return next(self.items, None)

    pre = path.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32_onnx), str(pre))
    quantize_static(str(pre), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return path


def nncf_onnx(model: nn.Module, calib: np.ndarray, path: Path) -> Path:
    """NNCF's PTQ (``nncf.quantize``) on the torch model, exported to ONNX (fake-quant -> QDQ)."""
    import nncf

    dataset = nncf.Dataset([torch.as_tensor(xi[None]) for xi in calib])
    quantized = nncf.quantize(copy.deepcopy(model).eval(), dataset, subset_size=len(calib))
    quantized = nncf.strip(quantized, example_input=torch.zeros(SHAPE))  # NNCF's ops -> torch fake-quant
    torch.onnx.export(quantized, (torch.zeros(SHAPE),), str(path), dynamo=False, opset_version=17)
    return path


def fp32_onnx(model: nn.Module, path: Path) -> Path:
    """edgecomp's fp32 ONNX export."""
    from edgecomp.export.onnx import export_onnx

    export_onnx(model, ModelSpec(name="m", input_shape=SHAPE), ExportOptions(dtype="fp32"), path)
    return path


def islands(path: Path) -> int:
    """Float compute between integer ops: .tflite DEQUANTIZE->float->QUANTIZE (unintended), or for ONNX the
    float compute nodes left after onnxruntime's QDQ fusion (not QLinear*/Quantize/Dequantize/shape ops)."""
    if path.suffix == ".tflite":
        from edgecomp.export.tflite_inspect import inspect_tflite

        return inspect_tflite(path).qdq_between_integer_ops
    import onnx
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(path.with_suffix(".opt.onnx"))
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    nodes = onnx.load(opts.optimized_model_filepath).graph.node
    shape_ops = {"Reshape", "Flatten", "Transpose", "Shape", "Gather", "Unsqueeze", "Squeeze", "Concat",
                 "QuantizeLinear", "DequantizeLinear", "Identity", "Constant"}
    compute = [n for n in nodes if not n.op_type.startswith("QLinear") and n.op_type not in shape_ops
               and n.op_type not in ("QGemm", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger")]
    return len(compute)


def p50_ms(path: Path, x: np.ndarray, runs: int = 200) -> float:
    """Median latency of one image, one thread, on the file's runtime."""
    runner = make_runner(path.suffix.lstrip("."), path, 1)
    sample = x[:1]
    for _ in range(10):
        runner(sample)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        runner(sample)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def measure(path: Path, data: Dataset, float_logits: np.ndarray, params: int) -> dict:
    """bytes, bytes/param, islands, p50, test accuracy and agreement with the float model."""
    x, y = data.arrays("test")
    out = run_artifact(path.suffix.lstrip("."), path, x, SHAPE, threads=1)
    cos = (out * float_logits).sum(1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(float_logits, axis=1))
    return {"bytes": path.stat().st_size, "bpp": path.stat().st_size / params, "islands": islands(path),
            "p50": p50_ms(path, x), "acc": 100.0 * float((out.argmax(1) == y).mean()),
            "correct": out.argmax(1) == y, "cos": float(cos.mean()),
            "top1_agree": 100.0 * float((out.argmax(1) == float_logits.argmax(1)).mean()), "logits": out}


def _cpu() -> str:
    """CPU model, core count and the ISA features that decide int8 speed (AVX2, AVX-512, VNNI)."""
    import os

    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine()
    model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?")
    flags = set(next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), []))
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni") if f in flags]
    return f"{model}, {os.cpu_count()} cores, {'/'.join(isa) or 'no AVX2'}{'' if 'vnni' in str(isa) else ' (no VNNI)'}"


def _version(pkg: str) -> str:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return "n/a"


def run_model(name: str, data: Dataset, epochs: int, folder: Path, use_nncf: bool,
              adaround: bool = True) -> list[dict]:
    """Every row of one model."""
    from edgecomp.compress import quant_report as qr
    from edgecomp.export.parity_int8 import judge_int8

    model = train(name, data, epochs)
    if name == "mobilenetv2-relu":  # the hard model: trained, then given a real MobileNetV2's depthwise ranges
        print(f"{name}: {spread_depthwise_ranges(model)} depthwise layers given a 100x per-channel range spread "
              "(function-preserving)")
    params = sum(p.numel() for p in model.parameters())
    x_test, _ = data.arrays("test")
    with torch.no_grad():
        float_logits = model(torch.as_tensor(x_test)).numpy()
    calib = data.calibration(256, seed=0)
    rows: list[dict] = []
    reference = {}

    def add(tool: str, make, runtime: str, note: str = "", ref: np.ndarray | None = None) -> None:
        path = folder / f"{name}-{len(rows)}.{'tflite' if runtime == 'LiteRT' else 'onnx'}"
        t0 = time.perf_counter()
        try:
            make(path)
            row = measure(path, data, float_logits, params)
        except Exception as exc:  # a peer that fails is a row that says why
            logging.getLogger(__name__).debug("row failed", exc_info=True)
            rows.append({"model": name, "tool": tool, "runtime": runtime, "error": f"{type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:90]}"})
            return
        row.update(model=name, tool=tool, runtime=runtime, note=note, seconds=time.perf_counter() - t0)
        if ref is not None:  # edgecomp's parity rule, against this row's own int8 PyTorch reference
            row["verdict"] = judge_int8(float_logits, ref, row["logits"]).status
        rows.append(row)

    fp32_tfl = folder / f"{name}-fp32.tflite"
    add("fp32", lambda p: export_tflite_file(model, ExportOptions(dtype="fp32"), p), "LiteRT")
    fp32_tfl.write_bytes((folder / f"{name}-0.tflite").read_bytes())
    plain = "equalize=False, bias_correction=False"
    variants = [("edgecomp int8 (default: CLE+BC)", ""), ("edgecomp int8 plain (no CLE, no BC)", plain),
                ("edgecomp int8 max_drop=0.3", "max_drop=0.3"), ("edgecomp int8 +AdaRound", "adaround=True")]
    if name == "mobilenetv2-relu":
        variants += [("edgecomp int8 CLE only", "bias_correction=False"),
                     ("edgecomp int8 BC only", "equalize=False"),
                     ("edgecomp int8 plain max_drop=0.3", f"{plain}, max_drop=0.3")]
    if name in ("mobilenetv2", "mobilenetv2-relu"):
        variants += [("edgecomp per-tensor plain", f"weights='per-tensor', {plain}"),
                     ("edgecomp per-tensor (CLE+BC)", "weights='per-tensor'"),
                     ("edgecomp per-tensor max_drop=0.3", "weights='per-tensor', max_drop=0.3"),
                     ("edgecomp per-tensor +AdaRound", "weights='per-tensor', adaround=True")]
    if not adaround:  # AdaRound costs minutes per model on a loaded 2-core machine
        variants = [(tool, settings) for tool, settings in variants if "adaround" not in settings]
    default_result = None
    for tool, settings in variants:
        try:
            result = edgecomp_int8(model, data, settings)
        except Exception as exc:  # noqa: BLE001 - e.g. max_drop infeasible: the row says why
            rows.append({"model": name, "tool": tool, "runtime": "LiteRT", "error": f"{type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:90]}"})
            continue
        if default_result is None:
            default_result = result
            errors = qr.layer_errors(result.model, calib[:64])
            reference["report"] = qr.format_table(errors, 5)
        reverted = result.metrics.get("reverted_layers") or []
        note = "; ".join(f"float {r['layer']} +{r['weight_bytes_added']}B" + (
            "" if r.get("predicted_ms_added") is None else f" {r['predicted_ms_added']:+.3f}ms pred. cortex-a76")
            for r in reverted)
        with torch.no_grad():
            own_ref = result.model(torch.as_tensor(x_test)).numpy()
        add(tool, lambda p, r=result: export_tflite_file(r.model, r.export, p), "LiteRT", note, own_ref)
        if settings == plain:  # the layer-wise report of plain int8: where it loses
            errors = qr.layer_errors(result.model, calib[:64])
            reference["report_hard"] = qr.format_table(errors, 5)
    add("litert-torch PT2E", lambda p: litert_pt2e(model, calib, p), "LiteRT")
    add("ai-edge-quantizer static_wi8_ai8", lambda p: aeq_static(fp32_tfl, calib, p), "LiteRT")
    fp32_onnx_path = folder / f"{name}-fp32.onnx"
    add("fp32", lambda p: fp32_onnx(model, p), "onnxruntime")
    fp32_onnx_path.write_bytes(next(folder.glob(f"{name}-{len(rows) - 1}.onnx")).read_bytes())
    if default_result is not None:
        from edgecomp.export.onnx import export_onnx

        add("edgecomp int8 (default: CLE+BC)", lambda p: export_onnx(default_result.model, ModelSpec(name="m",
            input_shape=SHAPE), default_result.export, p), "onnxruntime")
    add("onnxruntime quantize_static QDQ/ch", lambda p: ort_static(fp32_onnx_path, calib, p), "onnxruntime")
    if use_nncf:
        add("NNCF quantize (PTQ)", lambda p: nncf_onnx(model, calib, p), "onnxruntime")
    for row in rows:
        row["params"] = params
    rows.append({"model": name, "report": reference.get("report"), "report_hard": reference.get("report_hard")})
    return rows


def print_table(rows: list[dict]) -> None:
    """One table: bytes, bytes/param, islands, p50, metric, drop vs fp32 (same runtime), flips, parity."""
    head = (f"{'model':12} {'runtime':11} {'tool':42} {'bytes':>9} {'B/param':>7} {'isl':>3} {'p50 ms':>7} "
            f"{'top1 %':>6} {'drop':>6} {'flips':>5} {'cos fp32':>8} {'agree%':>6} {'vs fp32 p50':>11} verdict")
    print(head)
    print("-" * len(head))
    base: dict[tuple[str, str], dict] = {}
    for r in rows:
        if "report" in r:
            continue
        if "error" in r:
            print(f"{r['model']:12} {r['runtime']:11} {r['tool']:42} FAILED: {r['error']}")
            continue
        key = (r["model"], r["runtime"])
        if r["tool"] == "fp32":
            base[key] = r
        b = base.get(key, r)
        flips = int((r["correct"] != b["correct"]).sum())
        print(f"{r['model']:12} {r['runtime']:11} {r['tool']:42} {r['bytes']:9d} {r['bpp']:7.3f} {r['islands']:3d} "
              f"{r['p50']:7.3f} {r['acc']:6.2f} {b['acc'] - r['acc']:6.2f} {flips:5d} {r['cos']:8.5f} "
              f"{r['top1_agree']:6.1f} {r['p50'] / b['p50']:10.2f}x {r.get('verdict', '-')}"
              + (f"  [{r['note']}]" if r.get("note") else ""))


def main() -> None:
    """Train, quantize with every tool, print the table and the layer-wise reports."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--models", default="mobilenetv2,mobilenetv3,resnet18,mobilenetv2-relu")
    parser.add_argument("--nncf-path", help="folder with a side install of nncf (pip install --target DIR)")
    parser.add_argument("--no-adaround", action="store_true", help="leave out the AdaRound rows (slow)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # one torch thread for training and quantization: on a shared, loaded 2-core machine two OpenMP threads
    # spin against each other (measured: 50x slower on small layers); host timings use one thread anyway
    torch.set_num_threads(1)
    use_nncf = False
    if args.nncf_path:
        sys.path.append(args.nncf_path)
    try:
        import nncf  # noqa: F401

        use_nncf = True
    except Exception as exc:  # noqa: BLE001 - any import failure means no NNCF row
        print(f"NNCF: not importable ({type(exc).__name__}: {exc}); no NNCF rows")
    print(f"host: {_cpu()}, torch {torch.__version__}; versions: "
          + ", ".join(f"{p} {_version(p)}" for p in ("litert-torch", "ai-edge-litert", "ai-edge-quantizer",
                                                    "onnxruntime", "torchao", "nncf")))
    data = digits32()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            t0 = time.perf_counter()
            rows += run_model(name, data, args.epochs, Path(tmp), use_nncf, not args.no_adaround)
            print(f"[{name} done in {time.perf_counter() - t0:.0f} s]", flush=True)
            print_table([r for r in rows if r.get("model") == name])
    print("\nALL MODELS")
    print_table(rows)
    for r in rows:
        if "report" in r:
            print(f"\nlayer-wise int8 error, {r['model']} (edgecomp default), top 5 by dB lost:\n{r['report']}")
            if r.get("report_hard"):
                print(f"\nlayer-wise int8 error, {r['model']} plain int8 (no CLE, no BC), top 5:\n"
                      f"{r['report_hard']}")


if __name__ == "__main__":
    main()
