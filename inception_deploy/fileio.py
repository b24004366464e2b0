"""Atomic artifact writing and hashing, shared by every stage.

Every artifact is written to a temporary file beside its final path and renamed into place
only when complete, so a failure never leaves a partial artifact behind. A process killed
outright (kill -9) cannot clean up, so temporary files and scratch folders carry the
writer's process id (`.NAME.idtmp-PID-XXXX`, `$TMPDIR/inception-deploy-STAGE-PID-XXXX`) and
the next run removes those whose process is gone; a live concurrent writer's are kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

_TEMP_TAG = "idtmp"
_STALE_FILE = re.compile(rf"^\..+\.{_TEMP_TAG}-(\d+)-[^.]+(\..*)?$")
_STALE_SCRATCH = re.compile(r"^inception-deploy-[a-z]+-(\d+)-.+$")
_STALE_DIR = re.compile(rf"^\..+\.{_TEMP_TAG}(?:old)?-(\d+)-[^.]+$")


def _process_gone(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


def remove_stale_temporaries(folder: str | os.PathLike, scratch: bool = False) -> list[Path]:
    """Remove temporary files (or, with scratch, scratch folders) of our own naming in `folder`
    whose writing process no longer exists. Returns what was removed."""
    pattern = _STALE_SCRATCH if scratch else _STALE_FILE
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None or not _process_gone(int(match.group(1))):
            continue
        path = Path(entry.path)
        with contextlib.suppress(OSError):
            if scratch and entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
            elif not scratch and entry.is_file(follow_symlinks=False):
                path.unlink()
            removed.append(path)
    return removed


@contextlib.contextmanager
def scratch_dir(stage: str) -> Iterator[Path]:
    """A temporary folder under $TMPDIR, removed afterwards; stale ones of killed runs go first."""
    base = Path(tempfile.gettempdir())
    remove_stale_temporaries(base, scratch=True)
    path = Path(tempfile.mkdtemp(prefix=f"inception-deploy-{stage}-{os.getpid()}-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it onto `final` when the block succeeds.

    The parent folder is created only here, at write time, so input errors found earlier
    leave no folder behind either.
    """
    final = Path(final)
    created_parent = not final.parent.exists()
    final.parent.mkdir(parents=True, exist_ok=True)
    if not created_parent:
        remove_stale_temporaries(final.parent)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{final.name}.{_TEMP_TAG}-{os.getpid()}-", suffix=suffix or final.suffix or ".tmp", dir=final.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; artifacts get the usual mode
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        if created_parent:
            with contextlib.suppress(OSError):
                final.parent.rmdir()  # only succeeds when we left it empty
        raise


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside `final`; it replaces `final` (a folder, possibly there
    already) when the block succeeds, else it is removed. The swap is two renames, so `final`
    is at all times either the old folder or the new one, never a half-written one."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    for entry in os.scandir(final.parent):  # folders of writers killed outright
        match = _STALE_DIR.match(entry.name)
        if match and entry.is_dir(follow_symlinks=False) and _process_gone(int(match.group(1))):
            shutil.rmtree(entry.path, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.{_TEMP_TAG}-{os.getpid()}-", dir=final.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; a server running as another user must read it
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.{_TEMP_TAG}old-{os.getpid()}-", dir=final.parent))
            os.replace(final, old / final.name)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_writable(final: str | os.PathLike, folder: bool = False) -> None:
    """Raise a one-line UserError now if `final` (a file, or with folder=True a folder) could
    not be written later: a folder or file in the way, a read-only folder. Stages call this
    before their work, so a bad -o costs nothing and leaves nothing."""
    from .errors import UserError

    final = Path(final)
    if final.exists():
        if folder and not final.is_dir():
            raise UserError(f"{final}: is a file, not a folder; give an output folder (-o)")
        if not folder and final.is_dir():
            raise UserError(f"{final}: is a folder; give an output file path")
    probe = final if folder else final.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"{final}: cannot be written: {probe} is a file, not a folder; choose another output path")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{final}: cannot be written: {probe} is read-only for this user; choose another output path")


def write_text_atomic(final: str | os.PathLike, text: str) -> Path:
    with atomic_path(final) as tmp:
        tmp.write_text(text)
    return Path(final)


def write_json_atomic(final: str | os.PathLike, obj) -> Path:
    return write_text_atomic(final, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_json(obj) -> str:
    """Hash of a JSON-able object, independent of key order."""
    return sha256_bytes(json.dumps(obj, sort_keys=True, default=str).encode())


def read_json_file(path: str | os.PathLike, missing: str, invalid: str):
    """Parse a JSON artifact; a missing or unparsable file is a one-line UserError:
    `missing` as given, `invalid` prefixed with the path and followed by where parsing failed."""
    from .errors import UserError

    path = Path(path)
    if not path.is_file():
        raise UserError(missing)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: {invalid} ({exc.msg} at line {exc.lineno})") from None
