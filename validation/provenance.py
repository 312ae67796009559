"""Where a number came from: package versions, git revision, platform, time.

Every file the library writes next to a figure or a demo result carries this
block, so that a plot found in a paper's supplementary material can be traced
back to the code that drew it.
"""

from __future__ import annotations

import datetime
import platform
import subprocess
from pathlib import Path

__all__ = ["git_revision", "package_versions", "provenance"]


def _git(*args):
    root = Path(__file__).resolve().parent.parent
    try:
        res = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout if res.returncode == 0 else None


def git_revision():
    """(revision, dirty) of the checkout holding this package; (None, None) outside a git checkout."""
    rev = _git("rev-parse", "HEAD")
    rev = rev.strip() if rev else None
    if rev is None or len(rev) != 40:
        return None, None
    status = _git("status", "--porcelain")
    return rev, (None if status is None else bool(status.strip()))


def package_versions() -> dict:
    """Versions of this package, Python and the numerical dependencies that shape the results."""
    import numba
    import numpy
    import scipy

    import particles

    versions = {"particle-attention": particles.__version__, "python": platform.python_version(),
                "numpy": numpy.__version__, "scipy": scipy.__version__, "numba": numba.__version__}
    # the installed distribution's version, without importing matplotlib (only validation.figures does)
    try:
        from importlib.metadata import PackageNotFoundError, version

        versions["matplotlib"] = version("matplotlib")
    except PackageNotFoundError:  # pragma: no cover  (a runtime dependency; only a broken install lacks it)
        pass
    return versions


def provenance(**extra) -> dict:
    """Versions, git revision (and whether the checkout had local changes), platform and UTC time, plus ``extra``."""
    rev, dirty = git_revision()
    out = {
        "versions": package_versions(),
        "git_revision": rev,
        "git_dirty": dirty,
        "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
    }
    out.update(extra)
    return out
