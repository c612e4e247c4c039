"""Loading user models safely, and measuring them (parameters, MACs).

A model may come from: nothing (the built-in default), a built-in name, a TorchScript file, a
``torch.export`` program (``.pt2``), or a factory ``package.module:factory`` / ``path/to/file.py:factory``
returning an ``nn.Module``, optionally with a ``--weights`` state_dict loaded with
``torch.load(weights_only=True)``.

Which of these are code: a factory IS code, which the user chose to run: edgecomp imports it like any
other Python module and does not sandbox it. TorchScript and ``.pt2`` files are data, which edgecomp vets
before loading (:mod:`edgecomp.model_vetting`: no pickles, no ops that touch files, no zip bombs), then
loads and runs once in a capped child process (:mod:`edgecomp.model_sandbox`), and only then loads here.
Pickled modules and checkpoints are never unpickled. Every model's weights must be finite.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from edgecomp.data import Dataset
from edgecomp.errors import ModelLoadError
from edgecomp.model_files import load_model_file, model_file_kind
from edgecomp.model_sandbox import trial_load
from edgecomp.model_vetting import check_finite
from edgecomp.spec import ModelSpec, OutputSpec
from edgecomp.user_code import call_user, import_attribute

logger = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A model ready for the spine: the module (eval mode), its I/O spec, and data if known."""

    module: nn.Module
    spec: ModelSpec
    data: Dataset | None
    source: str


def _name_from(path_or_ref: str) -> str:
    stem = Path(path_or_ref.split(":")[0]).stem if ":" in path_or_ref else Path(path_or_ref).stem
    name = path_or_ref.split(":")[-1] if ":" in path_or_ref else stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "model"


def _spec(name: str, shape: list[int] | None, source: str) -> ModelSpec:
    if not shape:
        raise ModelLoadError(
            f"cannot tell the input shape of {source}",
            "pass --input-shape N,C,H,W (for example --input-shape 1,3,224,224)",
        )
    layout = "NCHW" if len(shape) == 4 else "NC" if len(shape) == 2 else "NCHW"
    return ModelSpec(name=name, input_shape=list(shape), layout=layout, labels=None)


def _load_factory(ref: str, weights: str | None) -> nn.Module:
    factory = import_attribute(ref, "model factory", ModelLoadError)
    if not callable(factory):
        raise ModelLoadError(f"'{ref}' is not a callable", "name a function or class")
    model = call_user(factory, ref, "model factory", ModelLoadError)
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"{ref} returned {type(model).__name__}, not a torch.nn.Module", "return an nn.Module")
    if weights:
        wpath = Path(weights)
        if not wpath.is_file():
            raise ModelLoadError(f"weights file not found: {wpath}", "check the --weights path")
        try:
            state = torch.load(wpath, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ModelLoadError(
                f"cannot load weights from {wpath} safely: {exc}",
                "save a plain state_dict with torch.save(model.state_dict(), path)",
            ) from exc
        if not isinstance(state, dict):
            raise ModelLoadError(f"{wpath} does not hold a state_dict", "save model.state_dict()")
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ModelLoadError(f"weights in {wpath} do not fit the model: {exc}", "check the factory") from exc
    return model


def _load_file(path: Path, input_shape: list[int] | None) -> tuple[nn.Module, list[int] | None]:
    """Vet, trial-load in a capped child process, then load a TorchScript or ``.pt2`` file here."""
    kind = model_file_kind(path)
    if kind == "torchscript" and not input_shape:
        _spec(_name_from(str(path)), None, str(path))
    trial = trial_load(path, input_shape)
    if "forward_error" in trial:
        raise ModelLoadError(
            f"the model fails on an input of shape {input_shape or trial['shape']}: {trial['forward_error']}",
            "check --input-shape against what the model expects",
        )
    return load_model_file(path)


def load_model(
    ref: str | None,
    input_shape: list[int] | None = None,
    weights: str | None = None,
) -> LoadedModel:
    """Load a model reference (see module docstring); ModelLoadError names the cause and the fix."""
    if ref is None:
        from edgecomp.zoo import load_zoo_model

        module, spec, data = load_zoo_model()
        if input_shape:
            logger.warning("--input-shape is ignored for the built-in model (%s)", spec.input_shape)
        return LoadedModel(module, with_outputs(module, spec), data, f"built-in:{spec.name}")
    from edgecomp.zoo import ZOO

    if ref in ZOO:
        from edgecomp.zoo import load_zoo_model

        module, spec, data = load_zoo_model(ref)
        check_finite(module, ref)
        return LoadedModel(module, with_outputs(module, spec), data, f"built-in:{ref}")
    if ":" in ref and not Path(ref).exists():
        module = _load_factory(ref, weights)
        shape = input_shape or getattr(module, "input_shape", None)
    else:
        if weights:
            raise ModelLoadError("--weights applies only to a factory model", "pass package.module:factory")
        module, shape = _load_file(Path(ref), input_shape)
        shape = input_shape or shape
    spec = _spec(_name_from(ref), list(shape) if shape else None, ref)
    module.eval()
    check_finite(module, ref)
    try:
        with torch.no_grad():
            outputs = module(torch.zeros(spec.input_shape))
    except Exception as exc:
        raise ModelLoadError(
            f"the model fails on an input of shape {spec.input_shape}: {exc}",
            "check --input-shape against what the model expects",
        ) from exc
    return LoadedModel(module, with_outputs(module, spec, outputs), None, ref)


def output_tensors(outputs: object) -> list[torch.Tensor]:
    """A model's outputs as a flat list of tensors in order (a tuple, list or dict of tensors, or one tensor)."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if isinstance(outputs, dict):
        outputs = list(outputs.values())
    if isinstance(outputs, (tuple, list)):
        return [t for o in outputs for t in output_tensors(o)]
    raise ModelLoadError(f"the model returned a {type(outputs).__name__}, not tensors",
                         "return a tensor, or a tuple of tensors for a model with several outputs")


def with_outputs(module: nn.Module, spec: ModelSpec, outputs: object = None) -> ModelSpec:
    """``spec`` with ``outputs`` filled in: name, shape and kind of every output, from one run of the model.

    Names: the module's ``output_names`` attribute if it has one, else a dict's keys, else ``spec.output_name``
    for a single output and ``output_0``, ``output_1``, ... for several. Kinds: the module's ``output_kinds``
    attribute, else 'logits' for a first output of shape (batch, classes) of a classifier and 'values' otherwise.
    """
    if outputs is None:
        with torch.no_grad():
            outputs = module.eval()(torch.zeros(spec.input_shape))
    tensors = output_tensors(outputs)
    names = getattr(module, "output_names", None)
    if names is None and isinstance(outputs, dict) and len(outputs) == len(tensors):
        names = [str(k) for k in outputs]
    if names is None:
        names = [spec.output_name] if len(tensors) == 1 else [f"output_{j}" for j in range(len(tensors))]
    kinds = getattr(module, "output_kinds", None)
    if kinds is None:
        first_logits = spec.task == "classification" and tensors[0].ndim == 2 and tensors[0].shape[1] > 1
        kinds = ["logits" if j == 0 and first_logits else "values" for j in range(len(tensors))]
    names, kinds = [str(n) for n in names], [str(k) for k in kinds]
    if len(names) != len(tensors) or len(kinds) != len(tensors) or len(set(names)) != len(names):
        raise ModelLoadError(f"the model returns {len(tensors)} outputs but declares output_names {names} and "
                             f"output_kinds {kinds}", "give one distinct name and one kind per output, in order")
    if any(k not in ("logits", "values") for k in kinds):
        raise ModelLoadError(f"output_kinds {kinds} of the model: each must be 'logits' or 'values'",
                             "mark class scores 'logits' and anything else 'values'")
    specs = [OutputSpec(name=n, shape=list(t.shape), kind=k) for n, t, k in zip(names, tensors, kinds, strict=True)]
    update = {"outputs": specs}
    if len(specs) == 1:
        update["output_name"] = specs[0].name
    return spec.model_copy(update=update)


def float_network(model: nn.Module) -> nn.Module:
    """The float network behind ``model``: a quantized model (``compress.pt2e.QuantizedModel``) holds its
    int8 graph as buffers next to the float network it came from; any other model is its own."""
    float_model = getattr(model, "float_model", None)
    return float_model if isinstance(float_model, nn.Module) else model


def count_params(model: nn.Module) -> int:
    """Number of parameters (every element of every parameter tensor), of the float network for a
    quantized model (counted once, see :func:`float_network`)."""
    return sum(p.numel() for p in float_network(model).parameters())


def count_macs(model: nn.Module, input_shape: list[int]) -> int:
    """Multiply-accumulates of one forward pass (conv, matmul), counted with torch's FLOP formulas."""
    counter = _MacCounter()
    with torch.no_grad(), counter:
        model.eval()(torch.zeros(input_shape))
    return counter.flops // 2


class _MacCounter(TorchDispatchMode):
    """Sums ``torch.utils.flop_counter``'s formulas over the ATen ops of a forward pass.

    What ``FlopCounterMode`` counts, without its module tracking and without torch._dynamo: torch wraps a
    dispatch mode's ``__torch_dispatch__`` in ``torch._disable_dynamo``, whose first call imports dynamo
    (seconds, for a count that takes milliseconds); nothing here is compiled, so the mode opts out.
    """

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        formula = flop_registry.get(func._overloadpacket)
        if formula is None and func is not torch.ops.prim.device.default:
            with self:  # count what a composite op decomposes into, as FlopCounterMode does
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:
                return out
        out = func(*args, **kwargs)
        if formula is not None:
            self.flops += int(formula(*args, **kwargs, out_val=out))
        return out
