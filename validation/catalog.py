"""The study catalog as the program's edge sees it: the registry with the built-in studies loaded.

:mod:`validation.study` is the framework (``Study``, ``register``, ``REGISTRY``) and does not import the
studies that plug into it; :mod:`validation.store` never looks studies up by name. The command line, the
runner (including its worker side), the report and the figures resolve names here, which loads
:mod:`validation.studies` only when a name is not registered yet: a study registered by the user (``--import
my_studies``) costs no import of the built-in families (seconds of scipy, numba and friends).
"""

from __future__ import annotations

from validation.study import REGISTRY, Study

__all__ = ["get_study", "all_studies", "load_builtin_studies"]


def load_builtin_studies() -> None:
    """Register the built-in studies (importing :mod:`validation.studies`; idempotent)."""
    import validation.studies  # noqa: F401  (registration happens at import)


def get_study(name: str) -> Study:
    """The registered study called ``name``, loading the built-in studies first when it is not registered.

    Raises
    ------
    KeyError
        No study of that name, with the known names in the message.
    """
    if name not in REGISTRY:
        load_builtin_studies()
    if name not in REGISTRY:
        known = ", ".join(sorted(REGISTRY)) or "(none)"
        raise KeyError(f"unknown study {name!r}; known studies: {known}")
    return REGISTRY[name]


def all_studies() -> list[Study]:
    """Every registered study, the built-in ones included, sorted by name."""
    load_builtin_studies()
    return [REGISTRY[name] for name in sorted(REGISTRY)]
