"""Tiny deterministic studies for the tests of the store, the runner and the command line.

Importing this module registers them (worker processes and ``python -m
validation --import tests._toy_studies`` rely on that); the tests use the
:func:`installed` context manager so that they leave the registry as they
found it for the other test modules.
"""

from __future__ import annotations

import contextlib
import math
import os
import time

import numpy as np

from validation.study import REGISTRY, Study, Verdict, register


@register
class ToySum(Study):
    """x ~ N(a, 1) per cell; verdict: the mean of x - a is 0 within 4 standard errors (plus an info line)."""

    name = "toy_sum"
    version = 1
    title = "Toy: Gaussian mean"
    labels = ("X1",)

    def grid(self, mode):
        return [{"a": float(a)} for a in ((1, 2, 3) if mode == "quick" else (1, 2, 3, 4))]

    def replicates(self, mode):
        return 4 if mode == "quick" else 6

    def measure(self, params, seed):
        rng = np.random.default_rng(seed)
        return {"x": float(rng.normal(params["a"], 1.0)), "u": rng.random(3)}  # ndarray: the store converts it

    def verdicts(self, records, mode):
        d = np.array([r.result["x"] - r.params["a"] for r in records])
        mean, se = float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d)))
        return [
            Verdict(self.name, "mean of x - a is zero", "X1", 0.0, mean, (mean - 4 * se, mean + 4 * se), 4.0,
                    passed=abs(mean) <= 4 * se, rule="|mean| <= 4 standard errors"),
            Verdict(self.name, "number of cells", "-", "n/a", float(len(d)), None, None, passed=None),
        ]


@register
class ToyMany(Study):
    """Many short cells (a few ms each): for interrupting and resuming runs."""

    name = "toy_many"
    version = 1
    title = "Toy: many short cells"
    labels = ("X2",)

    def grid(self, mode):
        return [{"k": k, "sleep": 0.01} for k in range(60 if mode == "quick" else 120)]

    def replicates(self, mode):
        return 4

    def measure(self, params, seed):
        time.sleep(params["sleep"])
        rng = np.random.default_rng(seed)
        return {"u": float(rng.random()), "k": params["k"], "seed_low": seed % 1000}

    def verdicts(self, records, mode):
        u = np.array([r.result["u"] for r in records])
        mean = float(u.mean())
        half = 4 * math.sqrt(1 / 12 / len(u))
        return [Verdict(self.name, "uniform draws have mean 1/2", "X2", 0.5, mean, (mean - half, mean + half), 0.0,
                        passed=abs(mean - 0.5) <= half)]


@register
class ToyFail(Study):
    """The cells with a = 2 raise; the others succeed."""

    name = "toy_fail"
    version = 1
    title = "Toy: some cells raise"
    labels = ("X3",)

    def grid(self, mode):
        return [{"a": a} for a in (1, 2, 3)]

    def replicates(self, mode):
        return 2

    def measure(self, params, seed):
        if params["a"] == 2:
            raise ValueError(f"boom at a={params['a']}")
        return {"y": float(np.random.default_rng(seed).random())}

    def verdicts(self, records, mode):
        return [Verdict(self.name, "always passes", "X3", 0, 0.0, None, None, passed=True)]


@register
class ToyVerdictFails(Study):
    """Every cell succeeds; the verdict is FAIL."""

    name = "toy_verdict_fails"
    version = 1
    title = "Toy: a failing verdict"
    labels = ("X4",)

    def grid(self, mode):
        return [{"a": 1}]

    def measure(self, params, seed):
        return {"y": 1.0}

    def verdicts(self, records, mode):
        return [Verdict(self.name, "y is 2", "X4", 2.0, 1.0, (0.9, 1.1), 0.05, passed=False, rule="|y - 2| <= tol")]


@register
class ToyVerdictRaises(Study):
    """Every cell succeeds; verdicts() raises."""

    name = "toy_verdict_raises"
    version = 1
    title = "Toy: verdicts raise"
    labels = ("X5",)

    def grid(self, mode):
        return [{"a": 1}]

    def measure(self, params, seed):
        return {"y": 1.0}

    def verdicts(self, records, mode):
        raise ZeroDivisionError("no verdict for you")


@register
class ToyEnv(Study):
    """Reports the worker's Numba settings (not deterministic: for checking the worker set-up only)."""

    name = "toy_env"
    version = 1
    title = "Toy: worker environment"
    labels = ("X6",)

    def grid(self, mode):
        return [{"i": i} for i in range(4)]

    def measure(self, params, seed):
        import numba

        time.sleep(0.05)  # long enough for both workers to take cells
        return {"env_threads": os.environ.get("NUMBA_NUM_THREADS"), "numba_threads": numba.get_num_threads(),
                "cache_dir": numba.config.CACHE_DIR, "pid": os.getpid()}

    def verdicts(self, records, mode):
        return []


@register
class ToySlow(Study):
    """Cells that take a while on a worker (for killing a worker mid-run); the results do not depend on it.

    Two environment variables of the *worker* change how a cell runs, never what it returns:
    ``PA_TOY_SLEEP`` (seconds a cell sleeps, default 0, so a reference run in the test process is instant)
    and ``PA_TOY_MARKERS`` (a directory: a cell writes ``PID-SEED.started`` when it starts and
    ``PID-SEED.done`` when it ends, so a test can see which worker is inside which cell).
    """

    name = "toy_slow"
    version = 1
    title = "Toy: slow cells"
    labels = ("X7",)

    def grid(self, mode):
        return [{"k": k} for k in range(8 if mode == "quick" else 16)]

    def replicates(self, mode):
        return 2

    def measure(self, params, seed):
        markers = os.environ.get("PA_TOY_MARKERS")
        stem = os.path.join(markers, f"{os.getpid()}-{seed}") if markers else None
        if stem:
            with open(stem + ".started", "w"):
                pass
        time.sleep(float(os.environ.get("PA_TOY_SLEEP", "0")))
        rng = np.random.default_rng(seed)
        result = {"u": float(rng.random()), "k": params["k"], "z": rng.standard_normal(2)}
        if stem:
            with open(stem + ".done", "w"):
                pass
        return result

    def verdicts(self, records, mode):
        u = np.array([r.result["u"] for r in records])
        return [Verdict(self.name, "uniform draws lie in [0, 1)", "X7", "[0, 1)", float(u.max()), None, None,
                        passed=bool(np.all((u >= 0) & (u < 1))))]


TOYS = (ToySum, ToyMany, ToyFail, ToyVerdictFails, ToyVerdictRaises, ToyEnv, ToySlow)


@contextlib.contextmanager
def installed():
    """Register the toy studies for the duration of a test and remove them afterwards."""
    added = []
    for cls in TOYS:
        if cls.name not in REGISTRY:
            REGISTRY[cls.name] = cls()
            added.append(cls.name)
    try:
        yield {cls.name: REGISTRY[cls.name] for cls in TOYS}
    finally:
        for name in added:
            REGISTRY.pop(name, None)


def uninstall():
    """Remove the toy studies from the registry (they register on import)."""
    for cls in TOYS:
        REGISTRY.pop(cls.name, None)
