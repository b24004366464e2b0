"""Error types shared by every stage; the CLI turns them into one line and an exit code.

UserError: bad input (a file, a key, an option). Exit code 2, one line, no traceback.
ParityFailure: an artifact answers differently from its reference beyond tolerance. Exit code 1.
NonFiniteOutput: a compared output holds NaN/Inf, a failed check (exit 1), never "0 error".
"""

import contextlib
import os

# translate.py reads this note to name the file an untranslated library exception was about.
ABOUT_NOTE = "inception-deploy: while working on "


class InceptionDeployError(Exception):
    exit_code = 1


class UserError(InceptionDeployError):
    """The user's input is wrong; the message names the file or key and the fix."""

    exit_code = 2


class MissingDependency(UserError):
    """An optional dependency (TensorRT, a GPU) is not available here."""


class ParityFailure(InceptionDeployError):
    """An artifact's outputs differ from the reference beyond the tolerance."""

    exit_code = 1


class NonFiniteOutput(ParityFailure):
    """An output being compared holds NaN or Inf: the check fails, whatever the tolerance."""


@contextlib.contextmanager
def about(path: "str | os.PathLike"):
    """Mark a stage's work on one file: our errors raised inside gain the file as their first
    words (when they do not name it already); library exceptions gain a note that the CLI's
    translation table (translate.py) uses to name the file."""
    try:
        yield
    except InceptionDeployError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise type(exc)(f"{path}: {exc}") from None
    except Exception as exc:
        exc.add_note(f"{ABOUT_NOTE}{path}")
        raise
