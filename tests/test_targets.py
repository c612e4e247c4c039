"""Every built-in target and profile YAML validates; errors name the file, the key and the closest name."""

import pytest

from edgecomp.errors import ConfigError
from edgecomp.targets import available, load_profile, load_target, packaged_dir


@pytest.mark.parametrize("path", sorted(packaged_dir("targets").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_target_validates_and_its_hardware_exists(path):
    target = load_target(str(path))
    assert target.name == path.stem
    load_profile(target.hardware)


@pytest.mark.parametrize("path", sorted(packaged_dir("profiles").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_profile_validates(path):
    assert load_profile(str(path)).name == path.stem


def test_required_targets_exist():
    assert {"android-arm64", "ios-arm64", "linux-arm64", "host"} <= set(available("targets"))


def test_unknown_profile_suggests_closest():
    with pytest.raises(ConfigError, match="Did you mean 'cortex-a76'"):
        load_profile("cortex-a76x")  # a67 is now as close to a75/a78 as to a76


def test_wrong_type_and_unknown_key(tmp_path):
    bad = tmp_path / "t.yaml"
    bad.write_text("schema_version: 2\nname: t\n")
    with pytest.raises(ConfigError) as info:
        load_target(str(bad))
    assert "t.yaml" in info.value.message and "'schema_version'" in info.value.message


def test_not_yaml(tmp_path):
    bad = tmp_path / "t.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_target(str(bad))


def _target_yaml(tmp_path, methods: str):
    path = tmp_path / "typo.yaml"
    path.write_text("schema_version: 1\nname: typo\ndescription: a target with methods\nruntime: litert\n"
                    f"formats: [tflite]\ndtypes: [fp32]\nhardware: cortex-a76\nmethods: {methods}\n")
    return path


def test_unknown_method_is_an_error_naming_the_closest_stage(tmp_path):
    path = _target_yaml(tmp_path, "[prune.filtr, quantize.int8]")
    with pytest.raises(ConfigError) as info:
        load_target(str(path))
    assert "typo.yaml" in info.value.message and "'prune.filtr'" in info.value.message
    assert "Did you mean 'prune.filter'?" in info.value.message
    assert "prune.filter" in info.value.hint


def test_known_methods_load(tmp_path):
    assert load_target(str(_target_yaml(tmp_path, "[prune.filter, quantize.int8]"))).methods == [
        "prune.filter", "quantize.int8"]


def test_one_budget_check_names_each_missed_budget():
    from edgecomp.targets import Budgets

    b = Budgets(size_mb=1.0, latency_ms=2.0, accuracy_drop_pct=0.5)
    assert b.missed(1e6, 2.0, 0.5) == []  # at the limit is within it
    assert b.missed(1_500_000, 3.0, 0.75) == [
        "size 1.5000 MB > 1.0 MB", "latency 3.0000 ms > 2.0 ms", "accuracy drop 0.75 pt > 0.5 pt"]
    assert b.missed(2e6, 3.0, size_what="tflite file", latency_source="predicted:cortex-a76") == [
        "tflite file 2.0000 MB > 1.0 MB", "latency 3.0000 ms > 2.0 ms (predicted:cortex-a76)"]
    assert Budgets().missed(1e12, 1e9, 100.0) == [] and b.missed() == []
