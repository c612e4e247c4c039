"""Recipe text is data, never code: any string parses into steps or raises ConfigError, nothing else."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgecomp.compress.recipe import MAX_NESTING, MAX_STEP_CHARS, parse_recipe
from edgecomp.errors import ConfigError

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("text, match", [
    ("prune.filter(**{'ratio':0.5})", r"\*\*arguments are not allowed"),
    ("prune.filter(ratio={[1]:2})", r"unhashable type: 'list'"),
    ("prune.filter(ratio=" + "-" * 3000 + "1)", rf"characters long \(at most {MAX_STEP_CHARS}\)"),
    ("-" * 900 + "1", r"a step is a method name"),
    ("prune.filter(ratio=" + "[" * 50 + "]" * 50 + ")", rf"more than {MAX_NESTING} deep"),
    ("prune.filter(ratio=0.5, ratio=0.7)", r"setting 'ratio' is given twice"),
    ("prune.filter(0.5)", r"positional arguments are not allowed"),
    ("prune.filter(ratio=f'{1}')", r"the value of 'ratio' is not a literal"),
    ("prune.filter(ratio=__import__('os').getpid())", r"the value of 'ratio' is not a literal"),
    ("\x00", r"cannot parse recipe step"),
    ("lambda: 1", r"a step is a method name"),
])
def test_malformed_steps_are_config_errors(text, match):
    with pytest.raises(ConfigError, match=match) as err:
        parse_recipe(text)
    assert "prune.filter(ratio=0.5)" in err.value.hint or "takes" in err.value.hint
    assert len(err.value.message) < 400  # long steps are shortened in the message


def test_code_in_a_recipe_is_refused_not_run(tmp_path):
    marker = tmp_path / "ran"
    for text in (f"__import__('os').system('touch {marker}')", f"quantize.int8(calibration=open('{marker}', 'w'))",
                 f"exec('open({str(marker)!r}, \"w\")')", f"prune.filter(ratio=0.5) -> eval('open({str(marker)!r})')"):
        with pytest.raises(ConfigError):
            parse_recipe(text)
    assert not marker.exists()


def test_valid_recipes_still_parse():
    steps = parse_recipe("prune.filter(ratio=0.5, layer_ratios={'conv1': 0.25}) -> quantize.int8(calibration='mse')")
    assert [s.name for s in steps] == ["prune.filter", "quantize.int8"]
    assert steps[0].config.layer_ratios == {"conv1": 0.25}


def _parse_or_config_error(text: str) -> None:
    try:
        steps = parse_recipe(text)
    except ConfigError as exc:
        assert exc.message and exc.hint
    else:
        assert isinstance(steps, list)


@PROPERTY
@given(st.text(max_size=300))
def test_any_text_parses_or_is_a_config_error(text):
    _parse_or_config_error(text)


TOKENS = ["prune.filter", "quantize.int8", "cluster", "distill", "lowrank", "deep-compression", "(", ")", "[", "]",
          "{", "}", ",", "->", "=", "**", "*", ":", "-", "+", "ratio", "bits", "epochs", "calibration", "0.5", "1e999",
          "-1", "3", "'mse'", "\"x\"", "None", "True", "[1]", "{1: 2}", "(1,)", "__import__('os')", ".system",
          "lambda", "x", " ", "\n", "\x00", "1j", "b''", "...", "not", "if", "else", "'" , "f'{1}'"]


@PROPERTY
@given(st.lists(st.sampled_from(TOKENS), max_size=40).map("".join))
def test_recipe_like_token_soup_parses_or_is_a_config_error(text):
    _parse_or_config_error(text)


@PROPERTY
@given(st.sampled_from(["prune.filter", "quantize.int8", "cluster"]),
       st.dictionaries(st.sampled_from(["ratio", "bits", "epochs", "calibration", "scope", "protect", "nope"]),
                       st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                                        st.text(max_size=3), inner, max_size=3), max_leaves=8),
                       max_size=4))
def test_any_literal_settings_validate_or_are_a_config_error(name, settings_):
    text = f"{name}(" + ", ".join(f"{k}={v!r}" for k, v in settings_.items()) + ")"
    _parse_or_config_error(text)
