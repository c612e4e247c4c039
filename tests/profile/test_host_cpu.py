"""Every host timing names the CPU and vector ISA it ran on (recorded /proc/cpuinfo texts)."""

import pytest

from edgecomp.profile.host_cpu import describe_host

AVX2 = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma\n"
AVX512_VNNI = "model name\t: Intel(R) Xeon(R) Platinum\nflags\t\t: sse2 avx2 avx512f avx512bw avx512_vnni\n"
NEOVERSE = ("processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd aes pmull sha1 sha2 crc32 atomics "
            "asimdrdm lrcpc dcpop asimddp sve i8mm\nCPU implementer\t: 0x41\n")
CORTEX_A53 = "processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU part\t: 0xd03\n"


@pytest.mark.parametrize(("cpuinfo", "expected"), [
    (AVX2, "x86-64 AVX2, AMD EPYC"),
    (AVX512_VNNI, "x86-64 AVX-512 VNNI, Intel(R) Xeon(R) Platinum"),
    (NEOVERSE, "arm64 NEON dotprod i8mm SVE"),
    (CORTEX_A53, "arm64 NEON"),
])
def test_describe_host_names_the_isa(cpuinfo, expected):
    assert describe_host(cpuinfo) == expected


def test_host_latency_records_the_machine(tmp_path):
    from edgecomp.profile.host import measure_host
    from tests.conftest import REPO

    lat = measure_host("tflite", REPO / "tests" / "data" / "tiny_cnn_fp32.tflite", threads=1, runs=3, warmup=1)
    assert lat.source == "measured:host"
    assert lat.machine == describe_host()
