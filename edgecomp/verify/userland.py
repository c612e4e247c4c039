"""An ARM64 Linux userland under qemu-user emulation: set it up from Debian and PyPI, and run Python in it.

The userland is a folder (``default_root()``: the user cache ``edgecomp/arm64``, or ``$EDGECOMP_ARM64_ROOT``)::

    sysroot/     arm64 Debian packages of Python and the C/C++ libraries it needs, unpacked with ``dpkg -x``
    site/        aarch64 manylinux wheels of numpy, ai-edge-litert and onnxruntime, unzipped
    userland.json  marker: versions and how long the setup took; written last

Everything comes from Debian's archive (``apt-get download`` with a private apt state in the folder, so
the host's dpkg configuration is left alone and no root is needed for it) and from PyPI (``pip download
--only-binary=:all: --platform manylinux..._aarch64``). Only ``qemu-user-static`` is installed on the host,
with ``apt-get`` (root). Emulated Python runs as ``qemu-aarch64-static -cpu cortex-a76 -L sysroot
sysroot/usr/bin/python3.X``: no binfmt, no chroot.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from edgecomp.errors import DeviceError, EdgecompError, did_you_mean
from edgecomp.fsutil import check_destination, contained, replace_folder

logger = logging.getLogger(__name__)

LAYOUT_VERSION = 1
MARKER = "userland.json"
SETUP_COMMAND = "edgecomp verify --setup-arm64"
QEMU_PACKAGE = "qemu-user-static"
QEMU_NAMES = ("qemu-aarch64-static", "qemu-aarch64")
WHEELS = ("numpy", "ai-edge-litert", "onnxruntime")
# Packages pulled in only by mime-support/mailcap and the like; Python does not need them to run.
_SKIP_DEBS = {"perl", "perl-base", "perl-modules-5.36", "libperl5.36", "dpkg", "tar", "install-info",
              "mailcap", "mime-support", "media-types", "readline-common", "debconf", "tzdata"}
# /proc/cpuinfo is the host's (x86) under qemu-user, which crashes onnxruntime's cpuinfo on arm64; the
# sysroot gets an ARM one (qemu -L serves files from the sysroot first). (implementer, variant, part)
CPU_MIDR = {"cortex-a76": ("0x41", "0x4", "0xd0b"), "cortex-a72": ("0x41", "0x0", "0xd08"),
            "cortex-a53": ("0x41", "0x0", "0xd03"), "neoverse-n1": ("0x41", "0x3", "0xd0c"),
            "max": ("0x41", "0x4", "0xd0b")}
DEFAULT_CPU = "cortex-a76"


class EmulationError(DeviceError):
    """The ARM64 userland is missing or broken, or qemu-user cannot run on this machine."""


@dataclass(frozen=True)
class Userland:
    """A ready ARM64 userland: where its parts are and what versions it holds."""

    root: Path
    qemu: Path
    python: Path
    info: dict

    @property
    def sysroot(self) -> Path:
        """The unpacked Debian packages (qemu's ``-L`` prefix)."""
        return self.root / "sysroot"

    @property
    def site(self) -> Path:
        """The unzipped aarch64 wheels."""
        return self.root / "site"

    def command(self, *args: str, cpu: str = DEFAULT_CPU) -> list[str]:
        """The command line that runs the emulated Python with ``args`` (isolated from the host's paths)."""
        return [str(self.qemu), "-cpu", cpu, "-L", str(self.sysroot), str(self.python), "-I", *args]

    def run(self, *args: str, cpu: str = DEFAULT_CPU, timeout: float = 900) -> subprocess.CompletedProcess:
        """Run the emulated Python; raise EmulationError if it fails or crashes."""
        check_cpu(cpu)
        write_cpuinfo(self.sysroot, cpu)
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(self.root)}
        try:
            proc = subprocess.run(self.command(*args, cpu=cpu), check=False, capture_output=True, text=True,
                                  timeout=timeout, env=env)
        except subprocess.TimeoutExpired as exc:
            raise EmulationError(f"emulated ARM64 Python ran past {timeout:.0f} s",
                                 "use fewer samples, or raise --timeout") from exc
        except OSError as exc:
            raise EmulationError(f"cannot start {self.qemu}: {exc}", _qemu_hint()) from exc
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
            raise EmulationError(f"emulated ARM64 Python failed (exit {proc.returncode}):\n{tail}",
                                 f"rebuild the userland with `{SETUP_COMMAND} --force`")
        return proc


def default_root() -> Path:
    """The userland folder: ``$EDGECOMP_ARM64_ROOT`` or the user cache's ``edgecomp/arm64``."""
    env = os.environ.get("EDGECOMP_ARM64_ROOT")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("edgecomp")) / "arm64"


def find_qemu() -> Path | None:
    """The qemu-user binary for aarch64 on PATH, or None."""
    for name in QEMU_NAMES:
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


def _qemu_hint() -> str:
    return f"install it as root: `apt-get install -y {QEMU_PACKAGE}`, then run `{SETUP_COMMAND}`"


def check_cpu(cpu: str) -> str:
    """Validate a qemu CPU spec (a model from ``CPU_MIDR``, optionally with ``,feature=off`` items); return the model."""
    model = cpu.split(",")[0]
    if model not in CPU_MIDR:
        raise EmulationError(f"unknown emulated CPU '{model}'." + did_you_mean(model, CPU_MIDR),
                             f"choose one of {', '.join(sorted(CPU_MIDR))} (qemu feature switches such as "
                             "'max,sme=off' may follow)")
    if not re.fullmatch(r"[a-z0-9-]+(,[a-z0-9-]+=(on|off))*", cpu):
        raise EmulationError(f"'{cpu}' is not a qemu CPU spec", "write it as MODEL or MODEL,feature=off,...")
    return model


def write_cpuinfo(sysroot: Path, cpu: str) -> None:
    """Write an ARM ``/proc/cpuinfo`` into the sysroot (one entry per host CPU) for the emulated ``cpu``."""
    model = check_cpu(cpu)
    implementer, variant, part = CPU_MIDR[model]
    features = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"
    if model in ("cortex-a72", "cortex-a53"):
        features = "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"
    entry = ("processor\t: {i}\nBogoMIPS\t: 50.00\nFeatures\t: " + features + "\nCPU implementer\t: "
             + implementer + "\nCPU architecture: 8\nCPU variant\t: " + variant + "\nCPU part\t: " + part
             + "\nCPU revision\t: 1\n\n")
    text = "".join(entry.format(i=i) for i in range(os.cpu_count() or 1))
    path = sysroot / "proc" / "cpuinfo"
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def load_userland(root: Path | None = None) -> Userland:
    """The userland at ``root`` (default: ``default_root()``), checked; raise EmulationError if unusable."""
    root = Path(root) if root else default_root()
    marker = root / MARKER
    if not marker.is_file():
        raise EmulationError(f"no ARM64 userland at {root}",
                             f"set it up with `{SETUP_COMMAND}` (a few minutes; installs {QEMU_PACKAGE} "
                             "with apt-get when run as root)")
    try:
        info = json.loads(marker.read_text())
    except ValueError as exc:
        raise EmulationError(f"{marker} is unreadable: {exc}", f"run `{SETUP_COMMAND} --force`") from exc
    if info.get("layout") != LAYOUT_VERSION:
        raise EmulationError(f"the ARM64 userland at {root} has an older layout",
                             f"run `{SETUP_COMMAND} --force`")
    qemu = find_qemu()
    if qemu is None:
        raise EmulationError("qemu-user for aarch64 is not installed, so ARM64 code cannot be emulated",
                             _qemu_hint())
    python = root / "sysroot" / "usr" / "bin" / f"python{info['python']}"
    if not python.is_file():
        raise EmulationError(f"{python} is missing: the userland is incomplete", f"run `{SETUP_COMMAND} --force`")
    return Userland(root=root, qemu=qemu, python=python, info=info)


def _run(cmd: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    logger.debug("$ %s", " ".join(cmd))
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
        raise EmulationError(f"{what} failed (exit {proc.returncode}):\n{tail}",
                             "check the network access to Debian's archive and PyPI, then run the setup again")
    return proc


def ensure_qemu() -> Path:
    """Find qemu-user for aarch64, installing Debian's qemu-user-static with apt-get when run as root."""
    qemu = find_qemu()
    if qemu is not None:
        return qemu
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise EmulationError("qemu-user for aarch64 is not installed and this process cannot install it "
                             "(needs root and apt-get)", _qemu_hint())
    logger.info("installing %s with apt-get", QEMU_PACKAGE)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        _run(["apt-get", "install", "-y", "-q", QEMU_PACKAGE], f"apt-get install {QEMU_PACKAGE}", env=env)
    except EmulationError:  # the host's package lists may be missing or stale on a fresh machine
        _run(["apt-get", "update", "-q"], "apt-get update", env=env)
        _run(["apt-get", "install", "-y", "-q", QEMU_PACKAGE], f"apt-get install {QEMU_PACKAGE}", env=env)
    qemu = find_qemu()
    if qemu is None:
        raise EmulationError(f"{QEMU_PACKAGE} installed but no qemu-aarch64 binary found", _qemu_hint())
    return qemu


class _Apt:
    """apt-get/apt-cache for arm64 with a private state folder (the host's dpkg setup stays untouched)."""

    def __init__(self, state: Path) -> None:
        for sub in ("lists/partial", "cache/archives/partial"):
            (state / sub).mkdir(parents=True, exist_ok=True)
        self.opts = ["-o", "APT::Architecture=arm64", "-o", "APT::Architectures::=arm64",
                     "-o", f"Dir::State::Lists={state / 'lists'}", "-o", f"Dir::Cache={state / 'cache'}",
                     "-o", "Dir::State::status=/dev/null", "-o", "Debug::NoLocking=1"]
        if os.geteuid() == 0:  # apt would drop to _apt, which cannot write into this folder
            self.opts += ["-o", "APT::Sandbox::User=root"]

    def update(self) -> None:
        _run(["apt-get", "-q", *self.opts, "update"], "apt-get update (arm64)")

    def python_version(self) -> str:
        """The X.Y of Debian's default python3 for arm64 (e.g. '3.11')."""
        out = _run(["apt-cache", *self.opts, "depends", "python3-minimal"], "apt-cache depends").stdout
        match = re.search(r"python(3\.\d+)-minimal", out)
        if not match:
            raise EmulationError("cannot find Debian's python3.X-minimal for arm64", "is this a Debian-based host?")
        return match.group(1)

    def closure(self, packages: list[str]) -> list[str]:
        """Packages plus their recursive Depends/Pre-Depends, minus those Python does not need."""
        out = _run(["apt-cache", *self.opts, "depends", "--recurse", "--no-recommends", "--no-suggests",
                    "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", *packages],
                   "apt-cache depends --recurse").stdout
        names = {line.strip() for line in out.splitlines() if line and not line[0].isspace()}
        return sorted(n for n in names if not n.startswith("<") and n not in _SKIP_DEBS)

    def download(self, packages: list[str], dest: Path) -> list[Path]:
        dest.mkdir(parents=True, exist_ok=True)
        _run(["apt-get", "-q", *self.opts, "download", *packages], "apt-get download (arm64)", cwd=dest)
        return sorted(dest.glob("*.deb"))


def _host_version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _pip_download(names: list[str], dest: Path, python: str) -> None:
    """Download aarch64 manylinux wheels (and their dependencies) for CPython ``python``."""
    platforms = ["manylinux2014_aarch64"] + [f"manylinux_2_{v}_aarch64" for v in range(17, 37)]
    cmd = [sys.executable, "-I", "-m", "pip", "download", "-q", "--disable-pip-version-check", "--only-binary=:all:",
           "--python-version", python, "--implementation", "cp", "--abi", f"cp{python.replace('.', '')}",
           "-d", str(dest.resolve())]
    for p in platforms:
        cmd += ["--platform", p]
    with tempfile.TemporaryDirectory(prefix="edgecomp-pip-") as cwd:  # -I and an empty cwd: no module from ours
        _run(cmd + names, "pip download (aarch64 wheels)", cwd=cwd)


def setup_userland(root: Path | None = None, force: bool = False) -> dict:
    """Build the ARM64 userland at ``root`` unless one is there; return its marker record.

    Repeatable: an existing userland with the current layout is kept (``force`` rebuilds it). A non-empty
    ``root`` without the marker ``userland.json`` is someone else's folder and is refused before any download
    unless ``force``. The new userland is assembled in a staging folder and moved into place only when it runs
    Python (:func:`edgecomp.fsutil.replace_folder`), so a failed setup leaves nothing half-made behind.
    """
    root = Path(root) if root else default_root()
    check_destination(root, MARKER, force, "--root")  # before any download: never replace someone's folder
    start = time.perf_counter()
    qemu = ensure_qemu()
    if (root / MARKER).is_file() and not force:
        try:
            land = load_userland(root)
            logger.debug("ARM64 userland already set up at %s", root)
            return {**land.info, "skipped": True}
        except EmulationError as exc:
            logger.info("rebuilding the ARM64 userland: %s", exc.message)
    with replace_folder(root, MARKER, force, "--root") as stage:
        info = _assemble(stage, qemu)
        info["setup_seconds"] = round(time.perf_counter() - start, 1)
        (stage / MARKER).write_text(json.dumps(info, indent=2) + "\n")
    logger.info("ARM64 userland ready at %s in %.0f s", root, info["setup_seconds"])
    return {**info, "skipped": False}


def unpack_wheel(wheel: Path, dest: Path) -> None:
    """Unzip ``wheel`` into ``dest``; a member that would land outside ``dest`` is an error."""
    with zipfile.ZipFile(wheel) as zf:
        for member in zf.namelist():
            try:
                contained(dest, member, "member")
            except EdgecompError as exc:
                raise EmulationError(f"{wheel.name}: {exc.message}",
                                     "the download is corrupt or malicious: delete it and run the setup again") from exc
        zf.extractall(dest)  # which also strips any leading '/' and '..' from member names


def _assemble(stage: Path, qemu: Path) -> dict:
    """Download and unpack everything into ``stage``; return the version record."""
    missing = [tool for tool in ("apt-get", "apt-cache", "dpkg-deb") if shutil.which(tool) is None]
    if missing:
        raise EmulationError(f"{', '.join(missing)} not found: the ARM64 userland is built from Debian packages",
                             "run the setup on a Debian-based host (Debian 12 or later)")
    apt = _Apt(stage / "apt")
    logger.info("reading Debian's arm64 package lists")
    apt.update()
    py = apt.python_version()
    debs = apt.closure([f"python{py}-minimal", f"libpython{py}-stdlib", "libstdc++6"])
    logger.info("downloading %d arm64 Debian packages (python%s and its libraries)", len(debs), py)
    sysroot = stage / "sysroot"
    sysroot.mkdir()
    deb_files = apt.download(debs, stage / "debs")
    for deb in deb_files:
        _run(["dpkg-deb", "-x", str(deb), str(sysroot)], f"dpkg-deb -x {deb.name}")
    pins = {name: _host_version(name) for name in WHEELS}
    wanted = [f"{n}=={v}" if v else n for n, v in pins.items()]
    logger.info("downloading aarch64 wheels from PyPI: %s", " ".join(wanted))
    try:
        _pip_download(wanted, stage / "wheels", py)
    except EmulationError as exc:
        logger.warning("no aarch64 wheels for the host's exact versions (%s); taking the newest instead",
                       exc.message.splitlines()[0])
        _pip_download(list(WHEELS), stage / "wheels", py)
    site = stage / "site"
    wheel_files = sorted((stage / "wheels").glob("*.whl"))
    for whl in wheel_files:
        unpack_wheel(whl, site)
    land = Userland(root=stage, qemu=qemu, python=sysroot / "usr" / "bin" / f"python{py}", info={})
    probe = ("import sys, json, platform; sys.path.insert(0, sys.argv[1]); import numpy, onnxruntime; "
             "import ai_edge_litert.interpreter; from importlib.metadata import version as v; "
             "print(json.dumps({'machine': platform.machine(), 'numpy': v('numpy'), "
             "'ai-edge-litert': v('ai-edge-litert'), 'onnxruntime': v('onnxruntime')}))")
    found = json.loads(land.run("-c", probe, str(site), timeout=600).stdout.strip().splitlines()[-1])
    if found["machine"] != "aarch64":
        raise EmulationError(f"the emulated Python reports machine '{found['machine']}', not aarch64",
                             "check that qemu-aarch64 is not replaced by a wrapper")
    for sub in ("debs", "wheels", "apt"):
        shutil.rmtree(stage / sub, ignore_errors=True)
    qemu_version = _run([str(qemu), "--version"], "qemu --version").stdout.splitlines()[0]
    return {"layout": LAYOUT_VERSION, "python": py, "qemu": qemu_version, "debs": len(deb_files),
            "wheels": [w.name for w in wheel_files], **{k: found[k] for k in WHEELS},
            "host_pins": pins, "bytes": sum(p.stat().st_size for p in stage.rglob("*") if p.is_file())}
