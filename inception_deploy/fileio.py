"""Atomic artifact writing and hashing, shared by every stage.

Every artifact is written to a temporary file beside its final path and renamed into place
only when complete, so a failure never leaves a partial artifact behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it onto `final` when the block succeeds.

    The parent folder is created only here, at write time, so input errors found earlier
    leave no folder behind either.
    """
    final = Path(final)
    created_parent = not final.parent.exists()
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{final.name}.", suffix=suffix or final.suffix or ".tmp", dir=final.parent
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
