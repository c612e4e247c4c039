"""The host profile is the host: CPU facts parsed from /proc/cpuinfo texts (tests/profile/cpuinfo/: this
machine's, recorded; the others written in the kernel's format with the flags those CPUs report), and a
host template made that machine, with the efficiencies of its ISA family."""

from pathlib import Path

import pytest

from edgecomp.profile.host_cpu import describe_host, host_profile, parse_cpuinfo, resolve_profile
from edgecomp.profile.predict import LayerCost, is_calibrated, predict_from_layers
from edgecomp.targets import load_profile

CPUINFO = Path(__file__).parent / "cpuinfo"


def _conv() -> LayerCost:
    return LayerCost("conv", macs=64 * 64 * 64 * 576, weight_bytes=4 * 64 * 576, act_bytes=4 * 2 * 64 * 64 * 64,
                     out_channels=64, reduction=576, taps=9)


def _text(name: str) -> str:
    return (CPUINFO / name).read_text()


@pytest.mark.parametrize(("name", "arch", "family", "cores", "clock", "peaks", "isa"), [
    ("amd_epyc_avx2.txt", "x86_64", "x86-avx2", 2, 1.996, (32, 64), "x86-64 AVX2, AMD EPYC"),
    ("xeon_avx512_vnni.txt", "x86_64", "x86-avx512-vnni", 4, 2.5, (64, 256),
     "x86-64 AVX-512 VNNI, Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz"),
    ("neoverse_n1_dotprod.txt", "arm64", "arm64-dotprod", 4, None, (16, 64), "arm64 NEON dotprod, Neoverse N1"),
    ("neoverse_v1_i8mm.txt", "arm64", "arm64-i8mm", 4, None, (16, 128),
     "arm64 NEON dotprod i8mm SVE, Neoverse V1"),
    ("cortex_a72_neon.txt", "arm64", "arm64-neon", 4, None, (16, 32), "arm64 NEON, Cortex-A72"),
])
def test_cpuinfo_parsing(name, arch, family, cores, clock, peaks, isa):
    info = parse_cpuinfo(_text(name))
    assert (info.arch, info.family, info.cores) == (arch, family, cores)
    assert info.clock_ghz == (pytest.approx(clock, abs=1e-3) if clock else None)
    assert info.peaks() == peaks
    assert describe_host(_text(name)) == isa


def test_describe_host_without_a_model_line():
    assert describe_host("processor\t: 0\nFeatures\t: fp asimd asimddp\n") == "arm64 NEON dotprod"


def _with_family(name: str, family: str, **values) -> object:
    prof = load_profile(name)
    entry = {"fitted_on": "a test machine", "efficiency": dict(prof.efficiency, conv=0.123), **values}
    return prof.model_copy(update={"calibration": {"families": {family: entry}}})


def test_host_template_takes_the_machine_and_its_family_efficiencies():
    template = _with_family("host-x86", "x86-avx512-vnni", overhead_us=7.0)
    xeon = host_profile(template, _text("xeon_avx512_vnni.txt"))
    assert (xeon.cores.count, xeon.cores.clock_ghz, xeon.cores.int8_ops_per_cycle) == (4, 2.5, 256)
    assert xeon.efficiency["conv"] == 0.123 and xeon.overhead_us == 7.0
    assert "fitted for x86-avx512-vnni" in xeon.description and is_calibrated(xeon)
    assert xeon.gemm_tile == {"fp32": 16, "int8": 16} and xeon.gemm_rows == 7

    epyc = host_profile(template, _text("amd_epyc_avx2.txt"))  # another family: the prior, and it says so
    assert (epyc.cores.count, epyc.cores.fp32_flops_per_cycle, epyc.cores.int8_ops_per_cycle) == (2, 32, 64)
    assert epyc.efficiency["conv"] == load_profile("host-x86").efficiency["conv"]
    assert "uncalibrated prior" in epyc.description and not is_calibrated(epyc)
    assert epyc.gemm_tile == {"fp32": 16, "fp32_narrow": 8, "int8": 8} and epyc.gemm_rows == 4
    pred = predict_from_layers([_conv()], epyc, 1)
    assert pred.calibration == "uncalibrated prior" and any("uncalibrated prior" in w for w in pred.warnings)
    # the same layer is predicted slower on the AVX2 machine's peaks than on the AVX-512 one's
    assert pred.ms > predict_from_layers([_conv()], host_profile(load_profile("host-x86"),
                                                                 _text("xeon_avx512_vnni.txt")), 1).ms


@pytest.mark.parametrize(("name", "int8_ops"), [("neoverse_n1_dotprod.txt", 64), ("neoverse_v1_i8mm.txt", 128),
                                                ("cortex_a72_neon.txt", 32)])
def test_arm64_template_on_arm_machines(name, int8_ops):
    prof = host_profile(load_profile("host-arm64"), _text(name))
    assert prof.cores.int8_ops_per_cycle == int8_ops and prof.cores.count == 4
    assert prof.cores.clock_ghz == load_profile("host-arm64").cores.clock_ghz  # no clock in arm64 cpuinfo
    assert "uncalibrated prior" in prof.description
    # a template of another architecture than the machine's is left as it is
    assert host_profile(load_profile("host-x86"), _text(name)) == load_profile("host-x86")


def test_resolve_profile_makes_host_profiles_this_machine():
    here = resolve_profile("host")
    assert here.name in ("host-x86", "host-arm64")
    assert here.description.startswith("This machine:")
    assert resolve_profile("cortex-a76") == load_profile("cortex-a76")


def test_host_latency_records_the_machine():
    from edgecomp.profile.host import measure_host
    from tests.conftest import REPO

    lat = measure_host("tflite", REPO / "tests" / "data" / "tiny_cnn_fp32.tflite", threads=1, runs=3, warmup=1)
    assert lat.source == "measured:host"
    assert lat.machine == describe_host()
