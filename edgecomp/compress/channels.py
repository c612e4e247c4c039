"""Dependency-aware channel groups, channel masks, and physical channel removal (torch-pruning).

Shared by ``prune.filter`` and ``prune.epruning``. A *channel group* is a set of output channels that
must be removed together (a conv's filters plus the batch-norm channels after it, every conv whose
outputs are added to it in a residual sum, the depthwise conv that follows it, the input channels of
every consumer, the right slice of a concatenation). torch-pruning's ``DependencyGraph`` finds them.

Masking a channel means zeroing it at every *producer* of the group (each conv, linear or batch-norm
layer whose output channels belong to the group). A masked channel is then zero wherever it is consumed,
so removing it physically gives exactly the same outputs; :func:`remove_channels` checks that on a probe
input and raises a ConfigError if torch-pruning mis-tracked a construct, rather than returning a wrong
network. Groups the graph cannot follow are skipped (with the reason) or end in a ConfigError.
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Self

import torch
from torch import nn

from edgecomp.errors import ConfigError

logger = logging.getLogger(__name__)
_PRODUCER_TYPES = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm)
_ROOT_TYPES = (nn.modules.conv._ConvNd, nn.Linear)
_HINT = "protect the layers involved with protect=['name*'], or use prune.magnitude, which needs no graph"


@dataclass
class ChannelGroup:
    """Output channels that must be pruned together, rooted at one conv/linear layer.

    ``name`` is the group's first conv/linear layer in module order (how users refer to it), ``root``
    the layer torch-pruning roots the group at; channel numbers are the root's (they coincide with the
    named layer's except across concatenations).
    ``producers`` maps each producer module name to, per channel of that module, the root channel it
    belongs to (-1 where the module channel is not in this group).
    """

    name: str
    root: str
    size: int
    producers: dict[str, list[int]] = field(default_factory=dict)
    members: list[str] = field(default_factory=list)


def dependency_graph(model: nn.Module, example: torch.Tensor):
    """torch-pruning's DependencyGraph of ``model`` traced on ``example``; ConfigError if it cannot trace."""
    import torch_pruning as tp

    try:
        with torch.enable_grad():
            return tp.DependencyGraph().build_dependency(model, example_inputs=example, verbose=False)
    except Exception as exc:  # torch-pruning raises anything from AssertionError to ZeroDivisionError
        raise ConfigError(
            f"torch-pruning cannot trace this model's channel dependencies: {type(exc).__name__}: {exc}",
            _HINT,
        ) from exc


def output_layers(dg) -> list[nn.Module]:
    """Conv/linear layers whose outputs reach the network output without another conv/linear in between.

    Their output channels are the model's outputs (e.g. the classifier's logits) and are never pruned.
    """
    found = []
    for module, node in dg.module2node.items():
        if not isinstance(module, _ROOT_TYPES):
            continue
        stack, seen = [node], set()
        while stack:
            cur = stack.pop()
            if id(cur) in seen:
                continue
            seen.add(id(cur))
            if not cur.outputs:
                found.append(module)
                break
            stack.extend(o for o in cur.outputs if not isinstance(o.module, _ROOT_TYPES))
    return found


def matches(name: str, patterns: Sequence[str]) -> bool:
    """Whether a module name matches any fnmatch pattern (``features.0``, ``classifier*``)."""
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def channel_groups(model: nn.Module, example: torch.Tensor, protect: Sequence[str] = ()) -> tuple[object, list[ChannelGroup], list[str]]:
    """Prunable channel groups of ``model``: (graph, groups, names of protected output layers).

    Groups touching an output layer or a module matching ``protect`` are left out. ConfigError if
    torch-pruning cannot analyse the model at all.
    """
    dg = dependency_graph(model, example)
    modules = dict(model.named_modules())
    names = {m: n for n, m in model.named_modules()}
    order = {n: i for i, n in enumerate(names.values())}
    outputs = output_layers(dg)
    ignored = list(outputs) + [m for m, n in names.items() if n and matches(n, protect)]
    groups: list[ChannelGroup] = []
    try:
        all_groups = list(dg.get_all_groups(ignored_layers=ignored, root_module_types=_ROOT_TYPES))
    except Exception as exc:
        raise ConfigError(
            f"torch-pruning cannot group this model's channels: {type(exc).__name__}: {exc}", _HINT
        ) from exc
    for group in all_groups:
        root = group[0].dep.target.module
        size = len(group[0].idxs)
        cg = ChannelGroup(name=names[root], root=names[root], size=size)
        for item in group:
            module = item.dep.target.module
            if not isinstance(module, nn.Module) or module not in names:
                continue
            cg.members.append(names[module])
            if isinstance(module, _PRODUCER_TYPES) and dg.is_out_channel_pruning_fn(item.dep.handler):
                width = _out_channels(module)
                pos = cg.producers.setdefault(names[module], [-1] * width)
                for idx, root_idx in zip(item.idxs, item.root_idxs, strict=True):
                    pos[idx] = root_idx
        named = [n for n in cg.producers if isinstance(modules[n], _ROOT_TYPES)]
        cg.name = min(named, key=order.__getitem__) if named else cg.root
        groups.append(cg)
    groups.sort(key=lambda g: order[g.name])
    return dg, groups, [names[m] for m in outputs]


def _out_channels(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return module.num_features
    return module.out_channels


class ChannelMasker:
    """Forward hooks that multiply every producer's output channels by a 0/1 mask per group.

    ``set(masks)`` takes one float tensor per group (length ``group.size``); ``None`` disables masking.
    Use as a context manager, or call ``remove()`` to take the hooks off.
    """

    def __init__(self, model: nn.Module, groups: Sequence[ChannelGroup]) -> None:
        self.groups = list(groups)
        self._active: list[torch.Tensor] | None = None
        self._handles = []
        modules = dict(model.named_modules())
        self._index: dict[str, list[tuple[int, torch.Tensor]]] = {}
        for gi, g in enumerate(self.groups):
            for name, pos in g.producers.items():
                self._index.setdefault(name, []).append((gi, torch.tensor(pos, dtype=torch.long)))
        for name in self._index:
            self._handles.append(modules[name].register_forward_hook(self._hook(name, modules[name])))

    def _hook(self, name: str, module: nn.Module):
        channel_dim = -1 if isinstance(module, nn.Linear) else 1

        def hook(_mod, _inp, out):
            if self._active is None:
                return out
            scale = torch.ones(out.shape[channel_dim], dtype=out.dtype)
            for gi, pos in self._index[name]:
                sel = pos >= 0
                scale[sel] = self._active[gi][pos[sel]].to(out.dtype)
            shape = [1] * out.dim()
            shape[channel_dim] = -1
            return out * scale.view(shape)

        return hook

    def set(self, masks: Sequence[torch.Tensor] | None) -> None:
        """Activate ``masks`` (one 0/1 tensor per group) for following forward passes, or None for none."""
        self._active = None if masks is None else [torch.as_tensor(m, dtype=torch.float32) for m in masks]

    def remove(self) -> None:
        """Take the hooks off the model."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def split_state(state: Sequence[float] | torch.Tensor, groups: Sequence[ChannelGroup]) -> list[torch.Tensor]:
    """Cut a flat unit vector (all groups' channels, in group order) into one mask per group."""
    flat = torch.as_tensor(state, dtype=torch.float32).flatten()
    total = sum(g.size for g in groups)
    if flat.numel() != total:
        raise ValueError(f"state has {flat.numel()} units, the groups have {total}")
    return list(torch.split(flat, [g.size for g in groups]))


@contextlib.contextmanager
def masked(model: nn.Module, groups: Sequence[ChannelGroup], masks: Sequence[torch.Tensor]) -> Iterator[nn.Module]:
    """Context in which ``model`` runs with ``masks`` applied (hooks removed afterwards)."""
    masker = ChannelMasker(model, groups)
    masker.set(masks)
    try:
        yield model
    finally:
        masker.remove()


def _zero_channel(model: nn.Module, group: ChannelGroup, root_idx: int) -> None:
    """Make channel ``root_idx`` of ``group`` output exactly zero at every producer (weights and biases)."""
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, pos in group.producers.items():
            module = modules[name]
            for ch, r in enumerate(pos):
                if r != root_idx:
                    continue
                if isinstance(module, nn.modules.conv._ConvNd) and module.transposed:
                    module.weight[:, ch] = 0
                elif module.weight is not None:
                    module.weight[ch] = 0
                if getattr(module, "bias", None) is not None:
                    module.bias[ch] = 0


@dataclass
class RemovalResult:
    """What ``remove_channels`` did: the pruned model, channels kept/removed per group, groups skipped
    (with why), and the largest output difference from the masked original seen in the checks."""

    model: nn.Module
    kept: dict[str, int]
    removed: dict[str, int]
    skipped: dict[str, str]
    max_abs_err: float


def _group_masks(groups: Sequence[ChannelGroup], remove: dict[str, list[int]]) -> list[torch.Tensor]:
    masks = []
    for g in groups:
        m = torch.ones(g.size)
        m[remove.get(g.name, [])] = 0
        masks.append(m)
    return masks


def _prune_group(model: nn.Module, example: torch.Tensor, group: ChannelGroup, idxs: list[int]) -> None:
    """Remove root channels ``idxs`` of ``group`` from ``model`` in place (all of them: one stays, zeroed)."""
    if len(idxs) >= group.size:
        _zero_channel(model, group, idxs[0])
        idxs = idxs[1:]
    if not idxs:
        return
    dg = dependency_graph(model, example)
    module = dict(model.named_modules())[group.root]
    tp_group = dg.get_pruning_group(module, dg.get_pruner_of_module(module).prune_out_channels, idxs)
    if not dg.check_pruning_group(tp_group):
        raise ValueError("removal would leave a coupled layer without channels")
    tp_group.prune(record_history=False)


def remove_channels(model: nn.Module, example: torch.Tensor, groups: Sequence[ChannelGroup],
                    remove: dict[str, Sequence[int]], probe: torch.Tensor | None = None,
                    check: bool = True) -> RemovalResult:
    """Physically remove channels ``remove[group name]`` (root channel indices); the result holds the model.

    Groups are removed one at a time on a copy. With ``check`` (the default), after each group the copy's
    outputs on ``probe`` (default: the example) are compared in eval mode with the masked network; a group
    torch-pruning cannot follow, or whose removal changes the function (e.g. through a channel shuffle),
    is rolled back and reported in ``skipped``. A group whose channels would all go keeps one, zeroed.
    ``model`` itself may be modified; use the returned ``model``.
    """
    by_name = {g.name: g for g in groups}
    unknown = [n for n in remove if n not in by_name]
    if unknown:
        raise ConfigError(f"no prunable channel group rooted at {unknown}", f"groups: {sorted(by_name)}")
    probe = example if probe is None else probe
    was_training = model.training
    current = model.eval()
    skipped: dict[str, str] = {}
    done: dict[str, list[int]] = {}
    worst = 0.0
    for g in groups:
        idxs = sorted({int(i) for i in remove.get(g.name, [])})
        if not idxs:
            continue
        trial = copy.deepcopy(current).eval() if check else current
        reference = None
        if check:  # the original (never modified when checking) with this and the earlier removals masked
            with torch.no_grad(), masked(model, groups, _group_masks(groups, {**done, g.name: idxs})):
                reference = model(probe).detach().clone()
        try:
            _prune_group(trial, example, g, idxs)
        except ConfigError as exc:
            skipped[g.name] = exc.message
        except Exception as exc:  # noqa: BLE001 - any failure inside torch-pruning means: leave this group whole
            skipped[g.name] = f"torch-pruning cannot follow it ({type(exc).__name__}: {exc})"
        if g.name not in skipped and check:
            try:
                with torch.no_grad():
                    err = float((trial(probe) - reference).abs().max())
            except Exception as exc:  # noqa: BLE001 - a broken trial is rolled back below
                err, why = float("inf"), f"the model no longer runs ({type(exc).__name__}: {exc})"
            else:
                why = f"its removal changed the network's outputs by {err:.2e} (a dependency torch-pruning mis-tracks)"
            if err > 1e-4 * max(1.0, float(reference.abs().max())):
                skipped[g.name] = why
            else:
                worst = max(worst, err)
        if g.name in skipped:
            if not check:
                raise ConfigError(f"removing channels of {g.name} failed: {skipped[g.name]}", _HINT)
            logger.debug("  channel group %s left whole: %s", g.name, skipped[g.name])
            continue
        current, done[g.name] = trial, idxs
    if check and done:  # whole-network check against the original with every removed channel masked
        with torch.no_grad(), masked(model, groups, _group_masks(groups, done)):
            reference = model(probe)
        with torch.no_grad():
            err = float((current(probe) - reference).abs().max())
        if err > 1e-4 * max(1.0, float(reference.abs().max())):
            raise ConfigError(f"channel removal changed the network's function (max abs err {err:.2e})", _HINT)
        worst = max(worst, err)
    current.train(was_training)
    if skipped:  # one line, not one per group (a rewritten ResNet has dozens); the stage notes list each
        first = next(iter(skipped))
        logger.warning("  %d of %d channel groups left whole (first: %s: %s)%s", len(skipped),
                       sum(1 for g in groups if remove.get(g.name)), first, skipped[first],
                       "; the stage's notes in report.json name each" if len(skipped) > 1 else "")
    modules = dict(current.named_modules())
    kept = {g.name: _out_channels(modules[g.root]) for g in groups}
    removed = {g.name: g.size - kept[g.name] for g in groups}
    return RemovalResult(model=current, kept=kept, removed=removed, skipped=skipped, max_abs_err=worst)
