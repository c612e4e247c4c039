"""The published-figures file (benchmarks/published_latency.yaml) is well-formed, and every shipped profile
is either validated against measurements or says it is an uncalibrated prior."""

import pytest
import yaml

from edgecomp.profile.predict import is_calibrated
from edgecomp.targets import load_profile, packaged_dir
from tests.conftest import REPO

DATA = yaml.safe_load((REPO / "benchmarks" / "published_latency.yaml").read_text())


def test_every_figure_names_its_source_and_a_shipped_profile():
    sources, devices = DATA["sources"], DATA["devices"]
    assert all(src["url"].startswith("https://") and src["title"] for src in sources.values())
    for fig in DATA["measurements"]:
        assert fig["source"] in sources and fig["device"] in devices and fig["ms"] > 0
        dev = devices[fig["device"]]
        prof = load_profile(dev["profile"])
        cores = dev.get("cores", {}).get("count", prof.cores.count + (prof.prime_cores.count if prof.prime_cores else 0))
        assert 1 <= fig["threads"] <= cores
        assert fig["dtype"] in ("fp32", "int8")


@pytest.mark.parametrize("name", sorted(p.stem for p in packaged_dir("profiles").glob("*.yaml")))
def test_a_shipped_profile_is_validated_or_says_uncalibrated_prior(name):
    profile = load_profile(str(packaged_dir("profiles") / f"{name}.yaml"))
    if "uncalibrated prior" not in profile.description:
        assert is_calibrated(profile), f"{name} neither validated nor labelled an uncalibrated prior"
        published = profile.calibration.get("published")
        if published:
            assert published["figures"] and "confidence" in published
