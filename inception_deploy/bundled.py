"""The data the package ships: bundled recipes and committed calibration caches (stage: configuration).

The repository keeps them in its top-level `recipes/` and `calibration/` folders; a built
wheel maps those folders into the package (`inception_deploy/recipes`,
`inception_deploy/calibration`, pyproject's `package-dir`), where `importlib.resources`
finds them. A source checkout (the README's editable install, or PYTHONPATH set to a clone)
has no such folders inside the package: there they are read beside it, so a clone always
reads its own files rather than those of whichever checkout was installed.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

FOLDERS = ("recipes", "calibration")


def bundled_dir(folder: str) -> Path:
    """The folder of bundled `folder` data ('recipes' or 'calibration')."""
    if folder not in FOLDERS:
        raise ValueError(f"no bundled folder {folder!r}; known: {', '.join(FOLDERS)}")
    package = resources.files(__package__)
    checkout = Path(str(package)).resolve().parent
    # pyproject.toml beside the package: a source checkout, whose top-level folder is the truth.
    if (checkout / "pyproject.toml").is_file() and (checkout / folder).is_dir():
        return checkout / folder
    # pip installs wheels unpacked, so the package's resources are plain files on disk.
    return Path(str(package / folder))
