"""Error types shared by every stage; the CLI turns them into one line and an exit code.

UserError: bad input (a file, a key, an option). Exit code 2, one line, no traceback.
ParityFailure: an artifact answers differently from its reference beyond tolerance. Exit code 1.
NonFiniteOutput: a compared output holds NaN/Inf, a failed check (exit 1), never "0 error".
"""


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
