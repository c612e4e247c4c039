"""Safe writes of whole folders: refuse to replace what edgecomp did not write, lock, stage, swap.

``replace_folder(dest, marker=...)`` is how edgecomp writes a bundle and the ARM64 userland:

- before any work, ``check_destination`` refuses a destination that is a file, a symbolic link, the
  current folder or one above it, the home folder, or a non-empty folder without edgecomp's ``marker``
  file (that is someone's folder; ``force`` overrides only this last rule);
- a lock file beside the destination lets one writer at a time in: a second one fails at once;
- the new folder is staged beside the destination (``.NAME.XXXXXXXX``) with normal permissions, and
  on success the old folder is renamed aside under a fresh unique name, the new one renamed into place,
  and only then is the old one removed. On any error, Ctrl-C or SIGTERM (see ``exit_on_sigterm``) the
  staging folder is removed and the destination is left as it was;
- an OSError while writing (disk full, no permission, read-only) becomes an ``OutputError`` naming the
  path and the fix.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import shutil
import signal
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgecomp.errors import ConfigError


class OutputError(ConfigError):
    """An output folder cannot be written safely, or writing it failed."""


_HINTS = {
    errno.ENOSPC: "free some space on that disk, or write elsewhere ({option})",
    errno.EDQUOT: "free some space within your disk quota, or write elsewhere ({option})",
    errno.EACCES: "make the folder writable for you, or write elsewhere ({option})",
    errno.EPERM: "make the folder writable for you, or write elsewhere ({option})",
    errno.EROFS: "that file system is read-only: write elsewhere ({option})",
}


def write_error(exc: OSError, where: Path, option: str = "--out") -> OutputError:
    """An OutputError for an OSError met while writing into or beside ``where``."""
    path = exc.filename or where
    reason = exc.strerror or str(exc)
    hint = _HINTS.get(exc.errno, "check that folder and its disk, or write elsewhere ({option})")
    return OutputError(f"cannot write {path}: {reason}", hint.format(option=option))


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all: a uniquely named temporary file beside it (the parent
    folder is created) is renamed into place, so concurrent readers and writers, even on other machines sharing
    the folder, see a complete file or none. Raises OSError; the temporary file never stays behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _listing(folder: Path) -> list[str] | None:
    """Names in ``folder``, or None if it vanished meanwhile (another writer swapped it)."""
    try:
        return os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return None


def check_destination(dest: Path, marker: str, force: bool = False, option: str = "--out") -> None:
    """Raise OutputError if writing a new folder at ``dest`` could lose what is there; see the module doc."""
    dest = Path(dest)
    absolute = Path(os.path.abspath(dest))
    real = dest.resolve()
    cwd = Path.cwd().resolve()
    if real == cwd or real in cwd.parents:
        raise OutputError(f"{option} {dest} is the current folder or a folder above it, which would be replaced "
                          "whole", f"pass a folder of its own, e.g. {option} build/{cwd.name}")
    if real == Path.home().resolve() or real == Path(real.anchor):
        raise OutputError(f"{option} {dest} is your home folder or the file system root", f"pass a folder of its own "
                          f"to {option}")
    try:  # one lstat: another writer may swap the folder between two separate checks
        mode = os.lstat(absolute).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and stat.S_ISLNK(mode):
        raise OutputError(f"{option} {dest} is a symbolic link", f"pass the folder it points to, or another {option}")
    if mode is not None and not stat.S_ISDIR(mode):
        raise OutputError(f"{option} {dest} is a file, not a folder", f"remove it or pass another {option}")
    names = _listing(dest) if mode is not None else None
    if names and marker not in names and not force:
        raise OutputError(f"{option} {dest} is a folder that edgecomp did not write (no {marker}, "
                          f"{len(names)} item(s) in it); it would be replaced whole",
                          f"pass another {option}, or add --force to replace that folder and delete its files")


@contextmanager
def _lock(dest: Path) -> Iterator[None]:
    """Hold an exclusive lock for writing ``dest``; raise OutputError at once if another process holds it."""
    path = dest.with_name(f".edgecomp-{dest.name}.lock")
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputError(f"another build is writing {dest}",
                              "wait for it to finish, or write elsewhere (--out)") from None
        try:
            same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:  # else its last holder removed it between our open and our lock: take a fresh one
            break
        os.close(fd)
    try:
        yield
    finally:
        try:
            os.unlink(path)  # while still locked, so a waiting opener sees a different file and retries
        finally:
            os.close(fd)


def _new_folder(parent: Path, name: str, mode: int | None) -> Path:
    """Create an empty folder ``parent/.name.XXXXXXXX``, unique, with ``mode`` (default: 0o777 & ~umask)."""
    while True:
        path = parent / f".{name}.{secrets.token_hex(4)}"
        try:
            path.mkdir(0o777)
        except FileExistsError:
            continue
        if mode is not None:
            path.chmod(mode)
        return path


def _swap(new: Path, dest: Path) -> None:
    """Put ``new`` at ``dest``; an existing ``dest`` is moved aside under a unique name and removed last."""
    if not dest.exists():
        new.rename(dest)
        return
    aside = _new_folder(dest.parent, dest.name, None)
    dest.rename(aside)  # an empty folder is replaced atomically by rename(2)
    try:
        new.rename(dest)
    except BaseException:
        aside.rename(dest)
        raise
    shutil.rmtree(aside, ignore_errors=True)


@contextmanager
def replace_folder(dest: str | Path, marker: str, force: bool = False, option: str = "--out") -> Iterator[Path]:
    """Yield an empty staging folder that replaces ``dest`` on success and is removed on any error.

    ``marker`` is the file every folder this writes contains (edgecomp.json for a bundle): an existing
    non-empty folder without it is refused unless ``force``. See the module doc for all the rules.
    """
    dest = Path(dest)
    check_destination(dest, marker, force, option)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with _lock(dest):
            check_destination(dest, marker, force, option)  # again, now that no other writer can change it
            mode = dest.stat().st_mode & 0o7777 if dest.is_dir() else None
            stage = _new_folder(dest.parent, dest.name, mode if mode is not None else 0o777 & ~_umask())
            try:
                yield stage
                _swap(stage, dest)
            finally:
                shutil.rmtree(stage, ignore_errors=True)
    except OSError as exc:
        raise write_error(exc, dest.parent, option) from exc


def contained(root: Path, relative: str, what: str = "file") -> Path:
    """``root/relative`` with symbolic links resolved; raise ConfigError if it lies outside ``root``."""
    base = Path(root).resolve()
    path = (base / relative).resolve()
    if path != base and base not in path.parents:
        raise ConfigError(f"{what} '{relative}' of {root} lies outside that folder (through '..' or a symbolic "
                          "link)", "rebuild the bundle; never link files into it from elsewhere")
    return path


def _raise_exit(signum: int, frame) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def exit_on_sigterm() -> Iterator[None]:
    """While inside, SIGTERM raises SystemExit(143), so open staging folders and locks are cleaned up."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_exit)
    except ValueError:  # not the main thread: signals cannot be handled here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
