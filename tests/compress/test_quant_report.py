"""The layer-wise int8 error report: values against a hand computation, and the .tflite side agrees."""

import numpy as np
import torch
from torch import nn

from edgecomp.compress import quant_report as qr
from edgecomp.compress.base import ExportOptions, Int8Export
from edgecomp.compress.pt2e import QuantSettings
from edgecomp.compress.quantize import ptq
from edgecomp.export.tflite import export_tflite
from edgecomp.spec import ModelSpec
from tests.tiny_models import make


def _fq(x: torch.Tensor, scale, zero, lo: int, hi: int) -> torch.Tensor:
    return (torch.clamp(torch.round(x / scale) + zero, lo, hi) - zero) * scale


def test_sqnr_cosine_and_max_error_match_a_hand_computation():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5)).eval()
    x = np.random.default_rng(0).standard_normal((40, 6)).astype(np.float32)
    q = ptq(model, QuantSettings(), x, [1, 6])
    graph = q.unfolded[0]
    (point,) = qr.activation_points(graph)  # the linear's output
    inp = next(n for n in graph.graph.nodes if n.op == "call_function" and "quantize_per_tensor" in str(n.target))
    w_scale = next(b for name, b in graph.named_buffers() if name.startswith("_scale"))
    with torch.no_grad():
        xt = torch.as_tensor(x)
        float_out = model(xt)
        xq = _fq(xt, float(inp.args[1]), int(inp.args[2]), -128, 127)
        wq = _fq(model[0].weight, w_scale.reshape(-1, 1), 0, -127, 127)
        out_q = _fq(xq @ wq.T + model[0].bias, float(point.args[1]), int(point.args[2]), -128, 127)
    noise = ((float_out - out_q).double() ** 2).sum().item()
    want = 10 * np.log10((float_out.double() ** 2).sum().item() / noise)
    cos = torch.nn.functional.cosine_similarity(float_out, out_q, dim=1).mean().item()
    (err,) = qr.layer_errors(q, x)
    assert err.name == "0" and err.op == "linear"
    assert abs(err.sqnr_db - want) < 1e-3, (err.sqnr_db, want)
    assert abs(err.cosine - cos) < 1e-5
    assert abs(err.max_abs_error - (float_out - out_q).abs().max().item()) < 1e-5
    assert 20 < err.sqnr_db < 60  # int8 of a linear layer: about 6 dB per bit, minus range losses


def test_tflite_activations_agree_with_the_pytorch_simulation(tmp_path):
    model = make("residual")
    x = np.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(np.float32)
    q = ptq(model, QuantSettings(), x, [1, 3, 8, 8])
    errors = qr.layer_errors(q, x)
    path = tmp_path / "m.tflite"
    export_tflite(q, ModelSpec(name="r", input_shape=[1, 3, 8, 8]), ExportOptions(dtype="int8", int8=Int8Export()), path)
    qr.tflite_layer_errors(path, q, errors, x)
    measured = [e for e in errors if e.tflite_sqnr_db is not None]
    assert {e.name for e in measured} >= {"stem", "block.0", "block.3", "head.2"}
    for e in measured:  # the same int8 computation: within a dB or two of the fake-quant graph
        assert abs(e.tflite_sqnr_db - e.sqnr_db) < 2.0, e
    summary = qr.summary(errors)
    assert len(summary["layers"]) == len(errors) and len(summary["most_sensitive"]) == 5
    assert "SQNR dB" in qr.format_table(errors)


def test_a_converter_error_shows_in_the_tflite_column(tmp_path):
    """A .tflite whose conv bias is scaled wrong (last month's bug) reads far below the PyTorch SQNR there."""
    from edgecomp.export import tflite_inspect as ti

    model = make("plain")
    x = np.random.default_rng(1).standard_normal((16, 3, 8, 8)).astype(np.float32)
    q = ptq(model, QuantSettings(), x, [1, 3, 8, 8])
    errors = qr.layer_errors(q, x)
    path = tmp_path / "m.tflite"
    export_tflite(q, ModelSpec(name="p", input_shape=[1, 3, 8, 8]), ExportOptions(dtype="int8", int8=Int8Export()), path)
    flat = ti.load_model(path.read_bytes())
    sg = flat.subgraphs[0]
    conv = next(op for op in sg.operators if ti.op_name(flat, op) == "CONV_2D")
    bias = sg.tensors[int(conv.inputs[2])]
    buf = flat.buffers[bias.buffer]
    values = np.frombuffer(bytes(buf.data), np.int32) * 3  # bias 3x too large
    buf.data = np.frombuffer(values.astype(np.int32).tobytes(), np.uint8)
    _write(flat, path)
    qr.tflite_layer_errors(path, q, errors, x)
    first = next(e for e in errors if e.tflite_sqnr_db is not None)
    assert first.sqnr_db > 25 and first.tflite_sqnr_db < first.sqnr_db - 10, first


def _write(model_t, path) -> None:
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model_t.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))
