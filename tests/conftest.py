"""Shared fixtures: one suite, parameterised over every available backend."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# The cuda backend: the simulator must be chosen before numba.cuda is first imported (nothing above imports it).
# By default the cuda tests run under the CUDA simulator; PARTICLES_CUDA_DEVICE=1 (or NUMBA_ENABLE_CUDASIM=0 set
# explicitly) runs them on the GPU. Tests marked `cuda` need a real device and are skipped without one.
if os.environ.get("PARTICLES_CUDA_DEVICE") != "1":
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "0":
    os.environ.setdefault("NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS", "0")  # small test grids are no performance bug

# Hypothesis profiles: JIT-compiled targets have no meaningful deadline.
settings.register_profile("dev", deadline=None, max_examples=25)
settings.register_profile(
    "ci", deadline=None, max_examples=25, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("nightly", deadline=None, max_examples=500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

# fixtures of the study and figure test modules (quick records cached per session, one Numba thread)
from ._study_helpers import one_numba_thread, quick_records, quick_store  # noqa: E402, F401

BACKENDS = ["reference", "cpu"]
# the cuda backend (numba-cuda installed): under the simulator at small sizes, or on a GPU (see above)
if importlib.util.find_spec("numba_cuda") is not None:
    BACKENDS.append("cuda")


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request):
    """Name of a backend; session scope keeps compilation to once per run."""
    return request.param


@pytest.fixture(scope="session")
def rng_state():
    return np.random.default_rng(20261123)


def sphere_points(n, d, seed):
    z = np.random.default_rng(seed).standard_normal((n, d))
    return z / np.linalg.norm(z, axis=1, keepdims=True)
