"""The planner's candidate list, pinned: the same recipes, in the same order, dtype and bytes per parameter.

The lists below are what ``plan/candidates.generate`` produced before the stages described themselves
(issue #15); the planner's screening order, predictions and so the benchmark tables follow from them.
"""

import pytest

from edgecomp.plan.candidates import bytes_per_param, dtype_of, generate, is_structural
from edgecomp.targets import Target, load_target

I8 = "quantize.int8"
I8B = "quantize.int8(max_drop=1.0)"  # int8 keeping its most sensitive layers float within the accuracy budget
PF3, PF5, PF7 = "prune.filter(ratio=0.3)", "prune.filter", "prune.filter(ratio=0.7)"
STRUCTURAL = [["separable"], ["lowrank"], [PF3], [PF5], [PF7], ["separable", PF5]]


def _with_int8(chains: list[list[str]]) -> list[list[str]]:
    return [r for chain in chains for r in (chain, chain + [I8])]


PINNED = {
    "android-arm64": [[], [I8], [I8B], ["cluster"], ["prune.magnitude", "cluster"]] + _with_int8(STRUCTURAL),
    "ios-arm64": [[], [I8], [I8B], ["cluster"]] + _with_int8(STRUCTURAL),
    "linux-arm64": [[], [I8], [I8B]] + _with_int8(STRUCTURAL),
    "host": [[], [I8]] + _with_int8([[PF3], [PF5], [PF7]]),
}


def _target(methods: list[str], dtypes: list[str]) -> Target:
    return Target(schema_version=1, name="t", description="t", runtime="litert", formats=["tflite"],
                  dtypes=dtypes, hardware="cortex-a76", methods=methods)


def _described(target: Target) -> list[list[str]]:
    return [[s.describe() for s in recipe] for recipe in generate(target)]


@pytest.mark.parametrize("name", sorted(PINNED))
def test_shipped_target_candidates_are_pinned(name):
    assert _described(load_target(name)) == PINNED[name]


@pytest.mark.parametrize("name", sorted(PINNED))
def test_dtype_bytes_and_structure_are_pinned(name):
    for recipe in generate(load_target(name)):
        names = [s.name for s in recipe]
        int8 = I8 in names
        assert dtype_of(recipe) == ("int8" if int8 else "fp32")
        assert bytes_per_param(recipe, "tflite") == (1.0 if int8 else 4.0)
        assert bytes_per_param(recipe, "coreml") == (1.0 if int8 else 0.5 if "cluster" in names else 4.0)
        assert [is_structural(s) for s in recipe] == [n not in (I8, "cluster") for n in names]


def test_candidate_configs_are_pinned():
    ratios = [[s.config.ratio for s in r if s.name == "prune.filter"] for r in generate(load_target("android-arm64"))]
    assert [r for r in ratios if r] == [[0.3], [0.3], [0.5], [0.5], [0.7], [0.7], [0.5], [0.5]]
    defaults = [s for r in generate(load_target("android-arm64")) for s in r if s.name != "prune.filter"]
    assert [s.describe() for s in defaults if s.config != type(s.config)()] == [I8B]


def test_the_accuracy_budget_copy_of_int8_needs_data_and_a_budget():
    assert [I8B] not in _described(load_target("host"))  # no accuracy budget
    data_free = [[s.describe() for s in r] for r in generate(load_target("android-arm64"), data_free=True)]
    assert [I8] in data_free and [I8B] not in data_free  # max_drop measures the drop on validation data


@pytest.mark.parametrize(("methods", "dtypes", "expected"), [
    ([], ["fp32"], [[]]),
    (["prune.magnitude"], ["fp32"], [[]]),  # magnitude pruning is only tried before clustering
    (["prune.magnitude", "cluster"], ["fp32"], [[], ["cluster"], ["prune.magnitude", "cluster"]]),
    ([I8, "prune.filter"], ["fp32"], [[], [PF3], [PF5], [PF7]]),  # int8 needs a target that runs int8
    (["separable", I8], ["fp32", "int8"], [[], [I8], ["separable"], ["separable", I8]]),
    (["binarize", "distill", "quantize.fp16", "quantize.dynamic", "prune.epruning"], ["fp32", "fp16", "int8"],
     [[], ["quantize.fp16"]]),  # fp16 joins the search where a target lists it (a data-free option)
])
def test_custom_target_candidates_are_pinned(methods, dtypes, expected):
    assert _described(_target(methods, dtypes)) == expected


def test_screen_predictions_are_pinned():
    """Parameters, predicted bytes (CoreML palettizes clusters) and the budget reasons of every candidate."""
    import torch
    from torch import nn

    from edgecomp.compress.base import BuildContext
    from edgecomp.plan.planner import Candidate, Planner
    from edgecomp.spec import ModelSpec
    from edgecomp.targets import Budgets, load_profile

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(16, 10)).eval()
    target = load_target("ios-arm64")
    ctx = BuildContext(spec=ModelSpec(name="m", input_shape=[1, 1, 8, 8]), target=target,
                       profile=load_profile(target.hardware))
    planner = Planner(model, ctx, Budgets(size_mb=0.005, latency_ms=0.004), "coreml")
    planner._overhead_bytes, planner._steps = 1234, generate(target)
    planner.candidates = [Candidate(recipe=[s.describe() for s in r], dtype=dtype_of(r)) for r in planner._steps]
    for i in range(len(planner.candidates)):
        planner._screen(i)
    got = [(c.params, c.predicted_bytes, c.reason.startswith("size")) for c in planner.candidates]
    # separable's and lowrank's error budgets (max_error=0.5) find no rank of this random conv that saves
    # min_saving of its MACs, so separable keeps it: its candidates are the recipes without it under another
    # name, rejected unpredicted; lowrank factorises only the head
    unchanged = (None, None, False)
    assert got == [(2682, 11962, True), (2682, 3916, False), (2682, 3916, False), (2682, 2575, False),
                   unchanged, unchanged, (2182, 9962, True), (2182, 3416, False), (1582, 7562, True),
                   (1582, 2816, False), (770, 4314, False), (770, 2004, False), (350, 2634, False),
                   (350, 1584, False), unchanged, unchanged]
    assert [c.label for c in planner.candidates if c.params is None] == [
        "separable", "separable -> quantize.int8", "separable -> prune.filter",
        "separable -> prune.filter -> quantize.int8"]
    assert all("separable changes nothing on this model" in c.reason for c in planner.candidates if c.params is None)
    assert planner.candidates[0].reason == "size 0.0120 MB > 0.005 MB; latency 0.0122 ms > 0.004 ms"
    assert all(c.status == "rejected" for c in planner.candidates)


def test_a_new_stage_joins_the_search_by_describing_itself():
    """The planner learns a stage's part of the search from the registry alone (it names no stage)."""
    from edgecomp.compress.base import REGISTRY, Stage, StageConfig

    class Shrink(Stage):
        name = "test.shrink"
        search_rank = 15  # between separable (10) and lowrank (20)

        class Config(StageConfig):
            factor: int = 2

        @classmethod
        def search_space(cls):
            return [[(cls.name, {"factor": 2})], [(cls.name, {"factor": 4})]]

        def apply(self, model, cfg, ctx):
            raise NotImplementedError

    try:
        target = _target(["lowrank", "test.shrink", "separable", I8], ["fp32", "int8"])
        assert _described(target) == [[], [I8]] + _with_int8([["separable"], ["test.shrink"],
                                                              ["test.shrink(factor=4)"], ["lowrank"]])
        assert all(is_structural(s) for r in generate(target) for s in r if s.name == Shrink.name)
    finally:
        REGISTRY.pop(Shrink.name, None)
