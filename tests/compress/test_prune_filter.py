"""prune.filter on tiny models, and recipe validation of the pruning stages."""

from __future__ import annotations

import pytest
import torch

from edgecomp.compress.prune_common import NO_DATA_NOTE
from edgecomp.compress.prune_filter import FilterPrune, choose_channels
from edgecomp.compress.recipe import parse_recipe
from edgecomp.errors import ConfigError
from edgecomp.model import count_params
from tests.compress.test_channels import Residual
from tests.prune_helpers import TwoConvNet, tiny_ctx


@pytest.mark.parametrize("recipe, words", [
    ("prune.filter(ratio=1.0)", "ratio"),
    ("prune.filter(ratio=-0.1)", "ratio"),
    ("prune.filter(criterion='l3')", "criterion"),
    ("prune.filter(layer_ratios={'c1': 1.5})", "ratios must be in [0, 1)"),
    ("prune.magnitude(sparsity=1.0)", "sparsity"),
    ("prune.epruning(population=3)", "population"),
    ("prune.fliter(ratio=0.5)", "Did you mean 'prune.filter'"),
    ("prune.filter(ratoi=0.5)", "Did you mean 'ratio'"),
])
def test_bad_pruning_recipes_are_config_errors(recipe, words):
    with pytest.raises(ConfigError) as err:
        parse_recipe(recipe)
    assert words in str(err.value)


def test_good_recipe_parses():
    steps = parse_recipe("prune.filter(ratio=0.5, criterion='taylor', scope='global') -> prune.epruning")
    assert [s.name for s in steps] == ["prune.filter", "prune.epruning"]
    assert steps[0].config.ratio == 0.5


@pytest.mark.parametrize("criterion", ["l1", "taylor"])
def test_filter_pruning_halves_channels_and_keeps_classifier(criterion):
    torch.manual_seed(0)
    model = TwoConvNet().eval()
    cfg = FilterPrune.Config(ratio=0.5, criterion=criterion, finetune_epochs=1)
    result = FilterPrune().apply(model, cfg, tiny_ctx(model))
    pruned = result.model
    assert pruned.c1.out_channels == 4 and pruned.c2.in_channels == 4 and pruned.c2.out_channels == 4
    assert pruned.head.out_features == 3 and model.c1.out_channels == 8
    assert result.metrics["channels_kept"] == {"c1": "4/8", "c2": "4/8"}
    assert "accuracy_after_finetune" in result.metrics
    assert count_params(pruned) < 0.5 * count_params(model)


def test_filter_l1_removes_the_smallest_filters_and_protect_and_overrides_apply():
    model = TwoConvNet().eval()
    with torch.no_grad():
        for i in range(8):
            model.c1.weight[i].fill_(0.01 * (i + 1) * (-1) ** i)  # |filter i| grows with i
    cfg = FilterPrune.Config(ratio=0.5, protect=["c2"], layer_ratios={"c1": 0.25}, finetune_epochs=0)
    result = FilterPrune().apply(model, cfg, tiny_ctx(model))
    assert result.model.c1.out_channels == 6 and result.model.c2.out_channels == 8
    kept = result.model.c1.weight[:, 0, 0, 0].abs()
    torch.testing.assert_close(kept, torch.tensor([0.03, 0.04, 0.05, 0.06, 0.07, 0.08]))


def test_global_scope_and_rounding():
    from edgecomp.compress.channels import ChannelGroup

    groups = [ChannelGroup("a", "a", 4), ChannelGroup("b", "b", 8)]
    scores = {"a": torch.tensor([1.0, 1.0, 1.0, 1.0]), "b": torch.arange(8.0) / 4}
    cfg = FilterPrune.Config(ratio=0.25, scope="global")
    assert choose_channels(groups, scores, cfg) == {"b": [0, 1, 2]}  # b's scores 0, .25, .5 are the lowest
    cfg = FilterPrune.Config(ratio=0.5, round_to=4)
    assert {k: len(v) for k, v in choose_channels(groups, scores, cfg).items()} == {"a": 0, "b": 4}


def test_filter_on_residual_and_without_data_notes_skip():
    model = Residual().eval()
    result = FilterPrune().apply(model, FilterPrune.Config(ratio=0.5), tiny_ctx(model, with_data=False))
    assert result.model.stem[0].out_channels == 4 and result.model.conv.out_channels == 4
    assert NO_DATA_NOTE in result.notes
    with pytest.raises(ConfigError, match="Taylor criterion needs training data"):
        FilterPrune().apply(model, FilterPrune.Config(criterion="taylor"), tiny_ctx(model, with_data=False))


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_l1_scores_are_torch_prunings_first_layer_magnitude(scope):
    import torch_pruning as tp

    from edgecomp.compress.channels import channel_groups
    from edgecomp.compress.prune_filter import root_l1

    torch.manual_seed(0)
    model = Residual().eval()
    dg, groups, _ = channel_groups(model, torch.randn(1, 1, 8, 8))
    imp = tp.importance.GroupMagnitudeImportance(p=1, group_reduction="first",
                                                 normalizer="mean" if scope == "global" else None,
                                                 target_types=[torch.nn.modules.conv._ConvNd, torch.nn.Linear])
    modules = dict(model.named_modules())
    assert groups
    for g in groups:
        root = modules[g.root]
        theirs = imp(dg.get_pruning_group(root, dg.get_pruner_of_module(root).prune_out_channels,
                                          list(range(g.size))))
        torch.testing.assert_close(root_l1(root, g.size, normalize=scope == "global"), theirs.float())


def test_filter_pruning_after_a_separable_rewrite_of_a_resnet():
    """torch-pruning's group importance raised IndexError on the depthwise convs of a separable ResNet. Now
    it is scored; the groups whose removal torch-pruning gets wrong (depthwise convs with a channel
    multiplier) are left whole and named, the rest are pruned."""
    from benchmarks.real_data_models import ResNet18Style
    from edgecomp.compress.pipeline import apply_recipe
    from edgecomp.spec import ModelSpec

    torch.manual_seed(0)
    model = ResNet18Style(num_classes=10, width=8).eval()
    ctx = tiny_ctx(model, with_data=False)
    ctx.spec = ModelSpec(name="resnet", input_shape=[1, 3, 32, 32])
    separable, _, _ = apply_recipe(model, parse_recipe("separable"), ctx)
    pruned, records, _ = apply_recipe(model, parse_recipe("separable -> prune.filter"), ctx)
    assert count_params(pruned) < count_params(separable)
    assert records[-1].metrics["channels_removed"] > 0
    assert any("left whole" in note for note in records[-1].notes)
    assert pruned(torch.randn(2, 3, 32, 32)).shape == (2, 10)
