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
import validation.studies  # noqa: E402, F401  (the suite is the program's edge: it registers the built-in studies)

from ._study_helpers import one_numba_thread, quick_records, quick_store  # noqa: E402, F401


@pytest.fixture(scope="session", autouse=True)
def _one_numba_thread_by_default():
    """One Numba thread in the test process unless a test raises it: on a shared 2-core machine parallel
    regions of many short steps mostly wait for each other (the same test measured 12 s and 169 s). Results do
    not depend on the thread count (counter-based streams); ``tests/particles/test_rng.py`` checks that across thread
    counts in fresh processes, which this setting does not reach."""
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(before)


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

