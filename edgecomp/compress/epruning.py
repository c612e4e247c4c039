"""``prune.epruning``: energy-based pruning with binary differential evolution (Salehinejad & Valaee).

Units are the filters of conv layers and the neurons of linear layers (with their biases); the
classifier's outputs are never units. A population of ``population`` binary state vectors of length D
(one bit per unit, Bernoulli(``init_p``)) evolves once per training batch:

- energy of a state on a batch: with logits e and F = -e, ``E = F(y_c) - min_{c' != c} F(y_c')`` for the
  true class c, averaged over the batch (:func:`energy`); lower is better;
- mutation: ``v_d = 1 - s_i1,d`` where ``s_i2,d != s_i3,d`` and ``r_d < F``, else ``s_i1,d``
  (i1, i2, i3 mutually different, and different from i) (:func:`mutate`);
- crossover: ``u_d = v_d`` where ``r'_d <= Cr``, else the parent's bit (:func:`crossover`);
- selection: the child replaces its parent if its energy is <= the parent's (:func:`select`).

The lowest-energy state masks the network for that batch's forward/backward pass, so the weights train
through the masked network. When the population has converged (``delta_s = E_best - mean(E) = 0``) or
the best state has not changed for ``stagnation_epochs`` epochs, the best state is fixed, its zero units
are removed physically (:mod:`edgecomp.compress.channels`) and the smaller network is fine-tuned.
Recipe example::

    prune.epruning(population=8, max_epochs=30, stagnation_epochs=5)
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as TF
from pydantic import Field
from torch import nn

from edgecomp.compress.base import BuildContext, Stage, StageResult
from edgecomp.compress.channels import ChannelMasker, channel_groups, remove_channels, split_state
from edgecomp.compress.prune_common import RecoveryConfig, eval_accuracy, example_input, probe_input, recover
from edgecomp.errors import ConfigError
from edgecomp.metrics import evaluate
from edgecomp.model import count_params

logger = logging.getLogger(__name__)


# --- the method's operators, as small pure functions -------------------------------------------------

def energy(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Energy loss of a batch: F(y_c) - min_{c' != c} F(y_c') with F = -logits, per sample, then reduced."""
    free = -logits
    true = free.gather(1, labels.view(-1, 1)).squeeze(1)
    others = free.masked_fill(TF.one_hot(labels, logits.shape[1]).bool(), float("inf"))
    per_sample = true - others.min(1).values
    if reduction == "none":
        return per_sample
    return per_sample.sum() if reduction == "sum" else per_sample.mean()


def mutate(s1: np.ndarray, s2: np.ndarray, s3: np.ndarray, r: np.ndarray, factor: float) -> np.ndarray:
    """Binary DE mutation: flip s1's bit where s2 and s3 differ and r < F; keep it elsewhere."""
    flip = (s2 != s3) & (r < factor)
    return np.where(flip, 1 - s1, s1).astype(np.uint8)


def crossover(parent: np.ndarray, mutant: np.ndarray, r: np.ndarray, rate: float) -> np.ndarray:
    """Binary DE crossover: the mutant's bit where r <= Cr, else the parent's."""
    return np.where(r <= rate, mutant, parent).astype(np.uint8)


def select(parents: np.ndarray, parent_energy: np.ndarray, children: np.ndarray,
           child_energy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Selection: each child replaces its parent when its energy is lower or equal."""
    take = child_energy <= parent_energy
    return np.where(take[:, None], children, parents), np.where(take, child_energy, parent_energy)


def donors(size: int, rng: np.random.Generator) -> np.ndarray:
    """For each member i, three indices i1, i2, i3, mutually different and different from i (size >= 4)."""
    if size < 4:
        raise ValueError("binary DE needs a population of at least 4")
    out = np.empty((size, 3), dtype=np.int64)
    for i in range(size):
        others = np.delete(np.arange(size), i)
        out[i] = rng.choice(others, 3, replace=False)
    return out


def limit_active(state: np.ndarray, max_active: int, rng: np.random.Generator) -> np.ndarray:
    """Switch off randomly chosen active units until at most ``max_active`` remain (optional target)."""
    state = state.copy()
    on = np.flatnonzero(state)
    if len(on) > max_active:
        state[rng.choice(on, len(on) - max_active, replace=False)] = 0
    return state


def evolve(pop: np.ndarray, factor: float, rate: float, rng: np.random.Generator,
           max_active: int | None = None) -> np.ndarray:
    """One generation of children (mutation, then crossover with each parent) for population ``pop``."""
    idx = donors(len(pop), rng)
    mutants = mutate(pop[idx[:, 0]], pop[idx[:, 1]], pop[idx[:, 2]], rng.random(pop.shape), factor)
    children = crossover(pop, mutants, rng.random(pop.shape), rate)
    if max_active is not None:
        children = np.stack([limit_active(c, max_active, rng) for c in children])
    return children


def state_convergence(energies: np.ndarray) -> float:
    """Early state convergence: delta_s = E_best - mean(E) (0 when every state has the same energy)."""
    return float(np.min(energies) - np.mean(energies))


# --- the stage ---------------------------------------------------------------------------------------

class EPruningConfig(RecoveryConfig):
    """Settings of prune.epruning."""

    population: int = Field(8, ge=4, description="Number S of candidate states (binary vectors) in the population.")
    init_p: float = Field(0.5, gt=0.0, le=1.0, description="Bernoulli probability of an active unit at start.")
    mutation: float = Field(0.5, ge=0.0, le=1.0, description="Mutation factor F of binary DE.")
    crossover: float = Field(0.5, ge=0.0, le=1.0, description="Crossover rate Cr of binary DE.")
    max_epochs: int = Field(30, ge=1, description="Most epochs of state search with weight training.")
    stagnation_epochs: int = Field(5, ge=1, description="Fix the best state when it has not changed this many epochs.")
    max_active: float | None = Field(
        None, gt=0.0, le=1.0, description="Optional target: at most this fraction of units active in any state.")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate while searching.")
    batch_size: int = Field(64, ge=2, description="Mini-batch size (one DE generation per batch).")
    search_time_s: float | None = Field(None, gt=0, description="Stop the search after this many seconds.")
    protect: list[str] = Field(default_factory=list, description="Layer names (fnmatch patterns) never pruned.")


@contextlib.contextmanager
def _frozen_bn_stats(model: nn.Module) -> Iterator[None]:
    """Train-mode forward passes that do not move batch-norm running statistics (momentum 0)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, mom in zip(bns, saved, strict=True):
            m.momentum = mom


class EPruning(Stage):
    """Energy-based pruning: binary DE over unit masks during training, then physical removal and fine-tuning."""

    name = "prune.epruning"
    Config = EPruningConfig

    def apply(self, model: nn.Module, cfg: EPruningConfig, ctx: BuildContext) -> StageResult:
        """Search a unit mask by binary DE while training through it; remove the pruned units; fine-tune."""
        if ctx.data is None:
            raise ConfigError("prune.epruning needs labelled training data: the energy is computed from labels",
                              "pass --data FILE.npz, or use prune.filter / prune.magnitude")
        model = copy.deepcopy(model)
        example = example_input(ctx)
        _, groups, outputs = channel_groups(model, example, cfg.protect)
        if not groups:
            raise ConfigError("prune.epruning found no prunable units in this model", "check the protect patterns")
        rng = np.random.default_rng(ctx.seed)
        torch.manual_seed(ctx.seed)
        dim = sum(g.size for g in groups)
        max_active = None if cfg.max_active is None else max(1, int(cfg.max_active * dim))
        pop = (rng.random((cfg.population, dim)) < cfg.init_p).astype(np.uint8)
        if max_active is not None:
            pop = np.stack([limit_active(s, max_active, rng) for s in pop])
        params_before = count_params(model)
        metrics: dict = {"accuracy_before": eval_accuracy(ctx.teacher, ctx) if ctx.teacher is not None else None,
                         "units_total": dim, "protected_output_layers": outputs}
        notes: list[str] = []
        curves, stopped = self._search(model, groups, pop, cfg, ctx, rng, max_active)
        pop, best = curves.pop("population"), curves.pop("best")
        metrics["search_accuracy_masked"] = curves["epochs"][-1]["val_accuracy"] if curves["epochs"] else None
        remove = {g.name: np.flatnonzero(m.numpy() == 0).tolist()
                  for g, m in zip(groups, split_state(best, groups), strict=True)}
        result = remove_channels(model, example, groups, remove, probe=probe_input(ctx))
        model = result.model
        for name, why in result.skipped.items():
            notes.append(f"units of {name} were kept: {why}")
        params_after = count_params(model)
        kept_units = int(best.sum())
        metrics.update({
            "stopped": stopped,
            "epochs_searched": len(curves["epochs"]),
            "units_kept": kept_units,
            "unit_pruning_rate": 1 - kept_units / dim,
            "params_before": params_before,
            "params_after": params_after,
            "pruning_rate": 1 - params_after / params_before,
            "channels_kept": {g.name: f"{result.kept[g.name]}/{g.size}" for g in groups},
            "curves": curves["epochs"],
            "energy_curve": [e["energy"] for e in curves["epochs"]],
            "loss_curve": [e["loss"] for e in curves["epochs"]],
            "removal_check_max_abs_err": result.max_abs_err,
        })
        logger.info("  EPruning: kept %d of %d units, %.1f%% of parameters removed (%s)", kept_units, dim,
                    100 * metrics["pruning_rate"], stopped)
        recover(model, cfg, ctx, metrics, notes)
        return StageResult(model=model.eval(), metrics=metrics, notes=notes)

    def _search(self, model: nn.Module, groups, pop: np.ndarray, cfg: EPruningConfig, ctx: BuildContext,
                rng: np.random.Generator, max_active: int | None) -> tuple[dict, str]:
        data = ctx.data
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
        gen = torch.Generator().manual_seed(ctx.seed)
        masker = ChannelMasker(model, groups)

        def energies(states: np.ndarray, xb: torch.Tensor, yb: torch.Tensor) -> np.ndarray:
            out = np.empty(len(states))
            with torch.no_grad(), _frozen_bn_stats(model):
                for i, s in enumerate(states):
                    masker.set(split_state(s, groups))
                    out[i] = float(energy(model(xb), yb))
            return out

        epochs, best, prev_best, stagnant, stopped = [], pop[0], None, 0, "max-epochs"
        start, deadline = time.monotonic(), ctx.finetune_policy.deadline  # the planner's --search-time
        try:
            for epoch in range(1, cfg.max_epochs + 1):
                model.train()
                sums = {"energy": 0.0, "mean_energy": 0.0, "loss": 0.0}
                batches = 0
                for xb, yb in data.batches("train", cfg.batch_size, shuffle=True, generator=gen):
                    if len(xb) < 2:
                        continue
                    parent_e = energies(pop, xb, yb)
                    children = evolve(pop, cfg.mutation, cfg.crossover, rng, max_active)
                    pop, pop_e = select(pop, parent_e, children, energies(children, xb, yb))
                    best = pop[int(np.argmin(pop_e))].copy()
                    masker.set(split_state(best, groups))
                    loss = TF.cross_entropy(model(xb), yb)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    sums["energy"] += float(pop_e.min())
                    sums["mean_energy"] += float(pop_e.mean())
                    sums["loss"] += float(loss.detach())
                    batches += 1
                    if deadline is not None and time.monotonic() > deadline:
                        break
                delta_s = state_convergence(pop_e)
                model.eval()
                val = evaluate(model, data, "val")  # with the masks its hooks apply
                record = {k: v / batches for k, v in sums.items()}
                record.update({"epoch": epoch, "delta_s": delta_s, "active_units": int(best.sum()),
                               "val_accuracy": val, "seconds": time.monotonic() - start})
                epochs.append(record)
                logger.info("  epoch %d: energy %.3f (mean %.3f), loss %.4f, delta_s %.4f, %d/%d units, val %.2f%%",
                            epoch, record["energy"], record["mean_energy"], record["loss"], delta_s,
                            record["active_units"], len(best), val)
                stagnant = stagnant + 1 if prev_best is not None and np.array_equal(best, prev_best) else 0
                prev_best = best.copy()
                if delta_s == 0.0:
                    stopped = "converged (delta_s = 0)"
                    break
                if stagnant >= cfg.stagnation_epochs:
                    stopped = f"best state unchanged for {stagnant} epochs"
                    break
                if deadline is not None and time.monotonic() > deadline:
                    stopped = "search-deadline"
                    break
                if cfg.search_time_s is not None and time.monotonic() - start > cfg.search_time_s:
                    stopped = "time-budget"
                    break
        finally:
            masker.remove()
        return {"epochs": epochs, "population": pop, "best": best}, stopped

