"""Every built-in target and profile YAML validates; errors name the file, the key and the closest name."""

import pytest

from edgecomp.errors import ConfigError
from edgecomp.plan.targets import available, load_profile, load_target, packaged_dir


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
