"""Studies: a parameter grid x replicates, a measurement, and a verdict rule.

A :class:`Study` is a named, versioned object. Its *cells* are the pairs
(parameters, replicate index); each cell is measured independently by
:meth:`Study.measure` from a seed derived from the cell itself (never from
the worker that runs it), so a study gives the same results on one core,
on two processes or on a Dask cluster, and an interrupted run can resume
cell by cell. :meth:`Study.verdicts` turns the stored results into
:class:`Verdict` objects: prediction, measurement, interval, pass/fail.

Concrete studies live in :mod:`validation.studies` and register themselves
with :func:`register`; this module never imports them (the program's edge
does, through :mod:`validation.catalog`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

__all__ = ["Study", "Cell", "Record", "Verdict", "register", "REGISTRY", "get_study", "cell_seed", "canonical",
           "flatten_result", "declared_fields", "field_pattern", "group_records", "info_verdict"]

MODES = ("quick", "full")


def canonical(params: dict) -> str:
    """Canonical JSON of a parameter dict (sorted keys, no spaces): the cell's identity."""
    return json.dumps(params, sort_keys=True, separators=(",", ":"), allow_nan=False)


def cell_seed(study: str, version: int, params: dict, replicate: int, base_seed: int = 0) -> int:
    """The seed of one cell: a SeedSequence keyed by the cell, never by the worker.

    The entropy is a SHA-256 digest of (study, version, base_seed, canonical
    parameters); the replicate index is the spawn key. Returns an integer in
    [0, 2**63).
    """
    digest = hashlib.sha256(f"{study}\x00{version}\x00{base_seed}\x00{canonical(params)}".encode()).digest()
    entropy = int.from_bytes(digest[:16], "little")
    ss = np.random.SeedSequence(entropy, spawn_key=(int(replicate),))
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


@dataclass(frozen=True)
class Cell:
    """One unit of work: parameters (JSON-serialisable dict) and a replicate index."""

    params: dict
    replicate: int

    @property
    def key(self) -> str:
        return canonical(self.params)


@dataclass(frozen=True)
class Record:
    """A finished cell as stored: parameters, replicate, seed and the measured result."""

    params: dict
    replicate: int
    seed: int
    result: dict


@dataclass(frozen=True)
class Verdict:
    """What a study concludes about one claim.

    Attributes
    ----------
    study : str
    claim : str
        Human-readable statement checked, e.g. "RBM-1 strong order in tau is 1/2".
    label : str
        THEORY.md equation label(s), e.g. "T4".
    predicted : float or str
        The prediction (read from a method's declaration or from
        :mod:`attention_theory.bounds`).
    measured : float
    interval : (float, float) or None
        Confidence interval of the measurement.
    tolerance : float or None
        Documented tolerance of the verdict rule.
    passed : bool or None
        None for an informational line that has no verdict.
    rule : str
        The verdict rule in words.
    details : dict
        Anything else worth reporting (JSON-serialisable).
    """

    study: str
    claim: str
    label: str
    predicted: Any
    measured: float
    interval: tuple[float, float] | None
    tolerance: float | None
    passed: bool | None
    rule: str = ""
    details: dict = field(default_factory=dict)


class Study:
    """Base class of a study. Subclasses set the class attributes and implement three methods.

    Attributes
    ----------
    name : str
        Unique identifier (used on the command line and in the store).
    version : int
        Bump when the measurement changes: stored results of another version
        are never mixed in.
    title : str
    labels : tuple of str
        THEORY.md labels the study checks.
    result_fields : dict of str to (str, str)
        What :meth:`measure` returns, as the store keeps it: field -> (shape, meaning). Nested dicts are
        named by dotted paths (``"euler.curve.energy"``, as :func:`flatten_result` and the ``export``
        command name the columns); a path segment in braces stands for keys that vary with the parameters
        (``"sq_errors.{p}"``: one entry per batch size). Shapes are written with parameter names
        (``"(R, len(taus))"``; ``"()"`` is a scalar). The docs' study catalog renders this table, and the
        test suite checks that the quick-mode cells return exactly these fields.
    """

    name: ClassVar[str] = ""
    version: ClassVar[int] = 1
    title: ClassVar[str] = ""
    labels: ClassVar[tuple[str, ...]] = ()
    result_fields: ClassVar[dict[str, tuple[str, str]]] = {}

    #: Sizes as data: ``{"quick": grid, "full": grid}``, a grid being one parameter dict or a list of them.
    #: The default :meth:`grid` returns copies of it; a study whose grid is computed overrides :meth:`grid`.
    GRID: ClassVar[dict] = {}
    #: ``{"quick": R, "full": R}``: replicates per parameter dict read by the default :meth:`replicates`
    #: (1 when absent).
    REPLICATES: ClassVar[dict] = {}

    def grid(self, mode: str) -> list[dict]:
        """Parameter dicts (JSON-serialisable) for ``mode`` in {"quick", "full"}; by default from :attr:`GRID`."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
        if mode not in self.GRID:
            raise NotImplementedError(f"{type(self).__name__} defines neither GRID[{mode!r}] nor grid()")
        g = self.GRID[mode]
        return [dict(g)] if isinstance(g, dict) else [dict(p) for p in g]

    def replicates(self, mode: str) -> int:
        """Number of replicates (independent seeds) per parameter dict; by default from :attr:`REPLICATES`."""
        return int(self.REPLICATES.get(mode, 1))

    def group(self, records: list[Record], mode: str) -> list[tuple[dict, list[Record]]]:
        """The records of each parameter dict of ``grid(mode)``, in grid order (see :func:`group_records`)."""
        return group_records(records, self.grid(mode))

    def info(self, claim: str, label: str, predicted: Any, why: str, details: dict | None = None) -> Verdict:
        """An informational verdict of this study (``passed=None``): the records do not allow the check."""
        return info_verdict(self.name, claim, label, predicted, why, details)

    def measure(self, params: dict, seed: int) -> dict:
        """Run one cell; returns a JSON-serialisable dict of numbers and lists.

        Must be deterministic given (params, seed) and must not depend on
        global state: it may run in another process or on another machine.
        """
        raise NotImplementedError

    def verdicts(self, records: list[Record], mode: str) -> list[Verdict]:
        """Turn the stored records of one run into verdicts."""
        raise NotImplementedError

    def cells(self, mode: str) -> list[Cell]:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
        return [Cell(params=p, replicate=r) for p in self.grid(mode) for r in range(self.replicates(mode))]

    def __repr__(self) -> str:
        return f"<Study {self.name} v{self.version}: {self.title}>"


def group_records(records: list[Record], grid: list[dict]) -> list[tuple[dict, list[Record]]]:
    """Pairs (params, records) for each parameter dict of ``grid`` in grid order, records sorted by replicate;
    records of parameters outside the grid are left out."""
    by_key: dict[str, list[Record]] = {}
    for rec in records:
        by_key.setdefault(canonical(rec.params), []).append(rec)
    return [(params, sorted(by_key.get(canonical(params), []), key=lambda r: r.replicate)) for params in grid]


def info_verdict(study: str, claim: str, label: str, predicted: Any, why: str, details: dict | None = None):
    """An informational :class:`Verdict` (``passed=None``, no measurement): ``rule`` says why not evaluated."""
    return Verdict(study=study, claim=claim, label=label, predicted=predicted, measured=float("nan"),
                   interval=None, tolerance=None, passed=None, rule=f"not evaluated: {why}", details=details or {})


REGISTRY: dict[str, Study] = {}


def register(cls):
    """Class decorator: instantiate and register a study under ``cls.name``."""
    inst = cls()
    if not inst.name:
        raise ValueError(f"{cls.__name__} has no name")
    if inst.name in REGISTRY and type(REGISTRY[inst.name]) is not cls:
        raise ValueError(f"study name {inst.name!r} is registered twice")
    REGISTRY[inst.name] = inst
    return cls


def get_study(name: str) -> Study:
    """Look a registered study up by name.

    The registry does not load its plugins: the built-in studies are registered when
    :mod:`validation.studies` is imported. :func:`validation.catalog.get_study` does that on a miss (the
    command line, the runner, the report and the figures use it).
    """
    if name not in REGISTRY:
        known = ", ".join(sorted(REGISTRY)) or "(none)"
        raise KeyError(f"unknown study {name!r}; known studies: {known} (the built-in studies register when "
                       "validation.studies is imported; validation.catalog.get_study does that)")
    return REGISTRY[name]


# ---------------------------------------------------------------------------------------------------------------
# What a study stores
# ---------------------------------------------------------------------------------------------------------------

def flatten_result(result: dict, sep: str | None = ".") -> dict:
    """A measured result with nested dicts flattened to dotted names; other values (lists too) as they are.

    ``sep=None`` gives the paths as tuples of keys instead (a key may itself contain a dot).

    >>> flatten_result({"sq_errors": {"2": [0.1], "4": [0.2]}, "n": 3})
    {'sq_errors.2': [0.1], 'sq_errors.4': [0.2], 'n': 3}
    """
    out: dict = {}

    def walk(path, value):
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk((*path, str(k)), v)
        else:
            out[path if sep is None else sep.join(path)] = value

    for key, value in result.items():
        walk((str(key),), value)
    return out


def declared_fields(study: Study) -> dict[str, tuple[str, str]] | None:
    """The result fields a study declares (``Study.result_fields``; the built-in studies that keep theirs in
    :data:`validation.studies.fields.RESULT_FIELDS` get them attached when they register); None when nothing
    is declared."""
    own = getattr(study, "result_fields", None)
    return dict(own) if own else None


def field_pattern(key: str | tuple, patterns, sep: str = ".") -> str | None:
    """The declared field (pattern) a flattened result key belongs to: segments equal, or a ``{...}`` segment
    matching any one segment; the pattern with the most literal segments wins; None when none matches.
    ``key`` is a dotted name or a path tuple (``flatten_result(..., sep=None)``: keys with dots in them).

    >>> field_pattern("sq_errors.4", ["sq_errors.{p}", "n"])
    'sq_errors.{p}'
    >>> field_pattern("ode.t", ["{dt}.t", "ode.t"])
    'ode.t'
    """
    parts = key.split(sep) if isinstance(key, str) else list(key)
    best, best_literal = None, -1
    for pattern in patterns:
        pp = pattern.split(sep)
        if len(pp) != len(parts):
            continue
        literal = 0
        for a, b in zip(pp, parts):
            if a.startswith("{") and a.endswith("}"):
                continue
            if a != b:
                break
            literal += 1
        else:
            if literal > best_literal:
                best, best_literal = pattern, literal
    return best
