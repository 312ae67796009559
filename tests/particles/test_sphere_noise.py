r"""Brownian motion on the sphere (issue 16, item 1): the projected Euler-Maruyama / normalisation scheme.

The step is x <- (x + h F(x) + sigma P_x dW) / ``|x + h F(x) + sigma P_x dW|``
(:func:`particles.solve`). Pure noise: the attention system with V = 0 has a
drift that is exactly 0 (every term carries the factor V x_j = 0), so the N
particles are independent Brownian motions on S^(d-1) and every one of them
is a sample.

Oracles, written here in plain NumPy/SciPy:

- the heat kernel of (sigma^2 / 2) Laplace-Beltrami on S^(d-1):
  E<x(t), x(0)> = exp(-(d - 1) sigma^2 t / 2) (the degree-one spherical
  harmonics have eigenvalue -(d - 1));
- the scheme's own expectation: one step from x gives
  <x', x> = (1 + sigma^2 h ``|P_x xi|``^2)^(-1/2) with ``|P_x xi|``^2 ~ chi^2_(d-1), and by
  rotation invariance E[x' | x] = rho(h) x, so after n whole steps
  E<x_n, x_0> = rho(h)^n with rho(h) = E[(1 + sigma^2 h chi^2_(d-1))^(-1/2)]
  (for full and RBM-1, where every particle takes exactly n steps; RBM-r
  advances random subsets, so it is held to the heat kernel only).
  Expanding rho = 1 - (d-1) sigma^2 h / 2 + 3 (d^2-1) sigma^4 h^2 / 8 + ...
  against exp(-(d-1) sigma^2 h / 2) gives the weak error
  T h sigma^4 (d-1)(d+2)/4 e^(-(d-1) sigma^2 T / 2) + O(h^2): weak order 1.

z-tests are two-sided at alpha = 1e-3 (``|z|`` < 3.29); seeds are fixed, so the
tests are deterministic. Monte Carlo runs use the ``cpu`` backend (fast);
``reference`` is checked at fewer samples and bit for bit against ``cpu``;
``cuda`` runs under the simulator at tiny sizes against ``cpu``.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from scipy import integrate, stats

import particles
from particles import systems

Z_CRIT = 3.29  # two-sided alpha = 1e-3
SIGMA = 1.0
T = 0.5
METHODS = {"full": {}, "rbm1": {"batch_size": 2}, "rbmr": {"batch_size": 2}}
HAVE_NUMBA_CUDA = importlib.util.find_spec("numba_cuda") is not None


def _pure_noise(d, sigma=SIGMA):
    return systems.attention(0.0, kind="USA", V=np.zeros((d, d)), sigma=sigma)


def _uniform(shape, seed):
    z = np.random.default_rng(seed).standard_normal(shape)
    return z / np.linalg.norm(z, axis=-1, keepdims=True)


def _final(system, x0, h, method, *, noise_dt, backend="cpu", seed=11):
    tr = particles.solve(system, x0, t_end=T, dt=h, noise_dt=noise_dt, seed=seed, method=method, backend=backend,
                         save_every=10 ** 6, **METHODS[method])
    return np.asarray(tr.final)


def _heat(d, t=T, sigma=SIGMA):
    return np.exp(-(d - 1) * sigma ** 2 * t / 2)


def _rho(d, h, sigma=SIGMA):
    k = d - 1
    # over the chi variable r = ``|P_x xi|`` (its density is smooth at 0 for k = 1, unlike chi^2's)
    val, _ = integrate.quad(lambda r: (1 + sigma ** 2 * h * r * r) ** -0.5 * stats.chi.pdf(r, k), 0, np.inf,
                            epsabs=1e-14, epsrel=1e-13)
    return val


def _z(samples, target):
    return (samples.mean() - target) / (samples.std(ddof=1) / np.sqrt(samples.size))


def test_oracle_expansion():
    # the discrete oracle against its own two-term expansion: rho(h) - 1 + (d-1) s^2 h / 2 ~ 3 (d^2-1) s^4 h^2 / 8
    for d in (2, 3):
        h = 1e-3
        assert (_rho(d, h) - 1 + (d - 1) * h / 2) / (3 * (d * d - 1) * h * h / 8) == pytest.approx(1, abs=1e-2)


# ------------------------------------------------------------------ heat kernel (weak, Monte Carlo, cpu)

@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("method", list(METHODS))
def test_heat_kernel_decay(method, d):
    system = _pure_noise(d)
    x0 = _uniform((4000, 8, d), seed=d)
    h = 0.05
    a = np.sum(_final(system, x0, h, method, noise_dt=h / 2) * x0, axis=-1).ravel()
    b = np.sum(_final(system, x0, h / 2, method, noise_dt=h / 2) * x0, axis=-1).ravel()
    # Richardson on common random numbers removes the O(h) bias; what is left, O(h^2), is far below the error bar
    rich = 2 * b - a
    assert abs(_z(rich, _heat(d))) < Z_CRIT
    # negative control: without the normalisation's drift the prediction would be exp(0) = 1
    assert abs(_z(rich, 1.0)) > 10 * Z_CRIT
    # ... or the Ito drift of R^d's dimension d instead of the sphere's d - 1
    assert abs(_z(rich, _heat(d + 1))) > Z_CRIT
    if method != "rbmr":
        # the scheme's exact expectation after n whole steps (see the module docstring)
        assert abs(_z(a, _rho(d, h) ** round(T / h))) < Z_CRIT
        assert abs(_z(b, _rho(d, h / 2) ** round(T / (h / 2)))) < Z_CRIT


@pytest.mark.parametrize("d", [2, 3])
def test_heat_kernel_reference_backend(d):
    system = _pure_noise(d)
    x0 = _uniform((1, 3000, d), seed=5 + d)
    h = 0.05
    for method in ("full", "rbm1"):
        xf = _final(system, x0, h, method, noise_dt=h, backend="reference")
        c = np.sum(xf * x0, axis=-1).ravel()
        assert abs(_z(c, _rho(d, h) ** round(T / h))) < Z_CRIT
        assert abs(_z(c, 1.0)) > 10 * Z_CRIT
        np.testing.assert_array_equal(xf, _final(system, x0, h, method, noise_dt=h, backend="cpu"))


# ------------------------------------------------------------------ weak order 1 (common random numbers)

WEAK_HS = [0.05, 0.025, 0.0125, 0.00625]


def _diff_slope(means):
    # the Monte Carlo error of each mean is mostly common to all h (one Brownian path per particle, noise_dt
    # shared); the successive differences cancel it and keep the bias's C h / 2 (+ O(h^2))
    diffs = -np.diff(np.asarray(means))
    assert np.all(diffs > 0)  # the bias T h s^4 (d-1)(d+2)/4 e^(...) is positive
    return np.polyfit(np.log(WEAK_HS[:-1]), np.log(diffs), 1)[0]


def _weak_slope(method, d, R):
    system = _pure_noise(d)
    x0 = _uniform((R, 8, d), seed=20 + d)
    means = [np.sum(_final(system, x0, h, method, noise_dt=WEAK_HS[-1]) * x0, axis=-1).mean() for h in WEAK_HS]
    return _diff_slope(means)


def _oracle_slope(d):
    # the same fit on the scheme's exact expectations rho(h)^n: about 0.87 here, the O(h^2) term of the bias
    # still pulling the slope below its limit 1 at sigma^2 h = 0.05
    return _diff_slope([_rho(d, h) ** round(T / h) for h in WEAK_HS])


# Tolerances: weak order 1 means slope 1 up to the O(h^2) term (the oracle's own slope is 0.87 on this grid) and
# the Monte Carlo error of the differences: |slope - 1| < 0.25; full and RBM-1 must also match the oracle's
# slope to 0.1 (RBM-r has no closed form: its particles take random numbers of steps).
WEAK_TOL = 0.25
WEAK_ORACLE_TOL = 0.1


def test_weak_order_one_fast():
    slope = _weak_slope("full", 3, R=2000)
    assert abs(slope - 1) < WEAK_TOL
    assert abs(slope - _oracle_slope(3)) < WEAK_ORACLE_TOL
    # negative control: an order-2 (or order-1/2) claim is rejected by the same fit
    assert abs(slope - 2) > WEAK_TOL and abs(slope - 0.5) > WEAK_TOL


@pytest.mark.slow
@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("method", list(METHODS))
def test_weak_order_one(method, d):
    slope = _weak_slope(method, d, R=8000)
    assert abs(slope - 1) < WEAK_TOL
    if method != "rbmr":
        assert abs(slope - _oracle_slope(d)) < WEAK_ORACLE_TOL


# ------------------------------------------------------------------ strong order 1/2 (one Brownian path)

# The noise sigma P_x dW is multiplicative and does not commute: already on the circle the fields
# b_1 = -sin(theta) d/dtheta and b_2 = cos(theta) d/dtheta have [b_1, b_2] = d/dtheta != 0, so the Levy areas
# that the scheme ignores give a strong error of order h^(1/2) (d = 2 and d = 3 alike), not h.
STRONG_TOL = 0.15


@pytest.mark.parametrize("d", [2, 3])
def test_strong_order_half(d):
    system = _pure_noise(d)
    x0 = _uniform((500, 4, d), seed=40 + d)
    h_ref = 0.5 ** 9
    ref = _final(system, x0, h_ref, "full", noise_dt=h_ref)
    hs = [0.5 ** k for k in (3, 4, 5, 6)]
    errs = [np.sqrt(np.mean(np.sum((_final(system, x0, h, "full", noise_dt=h_ref) - ref) ** 2, axis=-1)))
            for h in hs]
    slope = np.polyfit(np.log(hs), np.log(errs), 1)[0]
    assert abs(slope - 0.5) < STRONG_TOL
    assert abs(slope - 1.0) > STRONG_TOL  # negative control: strong order 1 is rejected


# ------------------------------------------------------------------ on the sphere, every backend

def _backends():
    out = ["reference", "cpu"]
    if HAVE_NUMBA_CUDA:
        out.append("cuda")
    return out


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("d", [2, 3])
def test_stays_on_sphere_with_noise(backend, method, d, monkeypatch):
    if backend == "cuda":
        from particles.backends import cpu, cuda

        if not cuda.simulator_enabled():
            pytest.skip("the cuda comparison here runs under the simulator")
        monkeypatch.setattr(cuda, "BLOCK_SIZE", 4)
        monkeypatch.setattr(cpu, "ENSEMBLE_MAX_N", 0)  # the general loops, which the cuda kernels mirror
    # a real drift (SA, beta = 1) and strong noise: the end-of-step normalisation keeps ``|x|`` = 1
    system = systems.attention(1.0, kind="SA", sigma=1.5)
    x0 = _uniform((2, 6, d), seed=d)
    kw = dict(t_end=0.2, dt=0.02, noise_dt=0.01, seed=4, method=method, save_every=1, **METHODS[method])
    tr = particles.solve(system, x0, backend=backend, **kw)
    states = np.asarray(tr.x)
    assert np.max(np.abs(np.linalg.norm(states, axis=-1) - 1)) < 1e-12
    assert np.max(np.abs(states[-1] - x0)) > 0.1  # the noise moved them
    if backend != "cpu":
        np.testing.assert_allclose(states, np.asarray(particles.solve(system, x0, backend="cpu", **kw).x),
                                   rtol=1e-12, atol=1e-13)
