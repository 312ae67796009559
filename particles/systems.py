"""Interacting particle systems: the *model*, kept apart from the method.

A :class:`System` is frozen data. It describes the first-order system

.. math::

    dX^i = b(X^i)\\,dt + \\frac{c_N}{N-1} \\sum_{j \\ne i} K(X^i, X^j)\\,dt
           + \\sigma_N\\, dB^i                                              (T1)

(kernel family), or the self-attention dynamics of THEORY Part C
(attention family, T19/T20). Nothing is compiled when a system is built;
backends compile the scalar functions on first use.

Built-in constructors: :func:`confined_tanh` (A1.1), :func:`dyson` (A1.2),
:func:`attention` (Part C) and :func:`custom` for a user's own drift and
kernel.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from particles import _kernels
from particles._validate import check_choice, check_finite_scalar

__all__ = ["System", "confined_tanh", "dyson", "attention", "custom"]


@dataclass(frozen=True, eq=False)
class System:
    """A frozen description of an interacting particle system.

    Attributes
    ----------
    name : str
        Human-readable name, stored in trajectory metadata.
    family : {"kernel", "attention"}
        ``"kernel"``: pairwise kernel K with mean normalisation (T1).
        ``"attention"``: self-attention (T19 softmax, T20 unnormalised).
    params : ndarray of float64
        Flat parameter vector handed to the compiled scalar functions.
    sigma : float
        Noise amplitude; the effective amplitude for N particles is
        ``sigma * N ** (-sigma_n_power)``.
    sigma_n_power : float
    normalization : {"N-1", "N"}
        ``"N-1"``: interaction weight 1/(N-1) (c_N = 1 in T1);
        ``"N"``: weight 1/N on the sum over j != i (c_N = (N-1)/N).
    sphere : bool
        States live on the unit sphere: forces are projected on the tangent
        space and each step ends with a normalisation.
    dim : int or None
        Dimension the system requires (Dyson: 1), or None for any.
    """

    name: str
    family: str
    params: np.ndarray
    sigma: float = 0.0
    sigma_n_power: float = 0.0
    normalization: str = "N-1"
    sphere: bool = False
    dim: int | None = None
    kernel: Callable | None = None
    drift: Callable | None = None
    builtin: bool = True
    kernel_np: Callable | None = None
    drift_np: Callable | None = None
    info: dict = field(default_factory=dict)

    def sigma_for(self, n: int) -> float:
        """Effective noise amplitude for ``n`` particles."""
        return float(self.sigma) * float(n) ** (-float(self.sigma_n_power))

    def coupling_for(self, n: int) -> float:
        """c_N: the factor in front of the (1/(N-1)) sum of T1."""
        return 1.0 if self.normalization == "N-1" else (n - 1) / n

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.info.items())
        return f"System({self.name}: {shown})"


def _frozen(a):
    a = np.array(a, dtype=np.float64)
    a.setflags(write=False)
    return a


def confined_tanh(r: float = 1.0, L: float = 0.3, sigma: float = 1.0) -> System:
    """Confined tanh system (THEORY A1.1): the reference test bed of RBM.

    V(x) = r|x|^2/2, so b(x) = -r x; K(x, y) = -L tanh(x - y) componentwise;
    additive noise sigma dB. With r > 2L it satisfies every assumption of the
    strong-error theorem (T4). The dimension comes from the initial state.

    Parameters
    ----------
    r : float
        Confinement strength, > 0.
    L : float
        Interaction strength (Lipschitz constant of K), >= 0.
    sigma : float
        Noise amplitude, >= 0.
    """
    r = check_finite_scalar("r", r, low=0.0, low_inclusive=False)
    L = check_finite_scalar("L", L, low=0.0)
    sigma = check_finite_scalar("sigma", sigma, low=0.0)
    return System(
        name="confined_tanh",
        family="kernel",
        params=_frozen([_kernels.MODEL_TANH, r, L]),
        sigma=sigma,
        kernel=_kernels.builtin_kernel,
        drift=_kernels.builtin_drift,
        kernel_np=_kernels.tanh_kernel_np,
        drift_np=_kernels.tanh_drift_np,
        info={"r": r, "L": L, "sigma": sigma, "theorem_assumptions_hold": r > 2 * L},
    )


def dyson(beta: float = 2.0, eps: float = 0.0) -> System:
    """Dyson Brownian motion (THEORY A1.2), one-dimensional.

    .. math::

        d\\lambda_i = -\\lambda_i dt + \\frac1N \\sum_{j\\ne i}
        \\frac{dt}{\\lambda_i - \\lambda_j} + \\sqrt{\\frac{2}{\\beta N}}\\, dB_i

    (beta = 2 gives the THEORY normalisation sqrt(1/N)). For large t and N
    the empirical measure approaches the semicircle on [-sqrt 2, sqrt 2].

    Near-collision policy: the kernel is singular. With ``eps = 0`` (the
    default) it is used as is; a collision produces a non-finite state, which
    :func:`particles.solve` reports with a warning naming the first bad time
    (use a smaller step). With ``eps > 0`` the kernel is regularised to
    z / (z^2 + eps^2), bounded by 1/(2 eps), which keeps every step finite at
    the price of an O(eps^2 N^2) bias for spacings of order 1/N.
    """
    beta = check_finite_scalar("beta", beta, low=0.0, low_inclusive=False)
    eps = check_finite_scalar("eps", eps, low=0.0)
    return System(
        name="dyson",
        family="kernel",
        params=_frozen([_kernels.MODEL_DYSON, eps]),
        sigma=math.sqrt(2.0 / beta),
        sigma_n_power=0.5,
        normalization="N",
        dim=1,
        kernel=_kernels.builtin_kernel,
        drift=_kernels.builtin_drift,
        kernel_np=_kernels.dyson_kernel_np,
        drift_np=_kernels.dyson_drift_np,
        info={"beta": beta, "eps": eps},
    )


ATTN_SOFTMAX = 0.0
ATTN_MEAN = 1.0


def _check_matrix(name, m, d):
    if m is None:
        return None
    a = np.asarray(m)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric matrix, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"{name} must be a square (d, d) matrix, got shape {a.shape}")
    if d is not None and a.shape[0] != d:
        raise ValueError(f"{name} has shape {a.shape}, but the other matrices are ({d}, {d}); Q, K, V must match")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must contain only finite values")
    return a


def attention(
    beta: float,
    kind: str = "SA",
    Q: Any = None,
    K: Any = None,
    V: Any = None,
    sphere: bool = True,
    sigma: float = 0.0,
) -> System:
    """Self-attention dynamics as an interacting particle system (Part C).

    SA (T19): dx_i/dt = P_{x_i}( sum_j softmax_j(beta <Q x_i, K x_j>) V x_j ),
    USA (T20): dx_i/dt = P_{x_i}( (1/n) sum_j exp(beta <Q x_i, K x_j>) V x_j ),
    with P_x y = y - <x, y> x. The sums include j = i.

    USA is an IPS of form T1: K(x, y) = exp(beta <Qx, Ky>) V y with
    c_N = (N-1)/N, plus the self term exp(beta <Qx, Kx>) V x / N, which the
    random-batch integrators keep exact (THEORY B5). SA is a softmax: the
    random-batch integrators replace it by the softmax over the batch
    (random batch attention, T18), which is biased.

    Parameters
    ----------
    beta : float
        Inverse temperature; must be finite.
    kind : {"SA", "USA"}
    Q, K, V : (d, d) array_like or None
        Query, key and value matrices; None means the identity.
    sphere : bool
        True (default): projected dynamics on the unit sphere (layer norm).
        False: the unprojected dynamics in R^d.
    sigma : float
        Optional additive noise (projected on the tangent space on the sphere).
    """
    beta = check_finite_scalar("beta", beta)
    kind = check_choice("kind", kind, ("SA", "USA"))
    sigma = check_finite_scalar("sigma", sigma, low=0.0)
    if not isinstance(sphere, (bool, np.bool_)):
        raise TypeError(f"sphere must be a bool, got {type(sphere).__name__}")
    d = None
    mats = {}
    for name, m in (("Q", Q), ("K", K), ("V", V)):
        a = _check_matrix(name, m, d)
        if a is not None:
            d = a.shape[0]
        mats[name] = a
    identity = all(a is None for a in mats.values())
    if not identity:
        eye = np.eye(d)
        mats = {k: (eye if a is None else a) for k, a in mats.items()}
        flat = np.concatenate([mats["Q"].ravel(), mats["K"].ravel(), mats["V"].ravel()])
    else:
        flat = np.zeros(0)
    norm = ATTN_SOFTMAX if kind == "SA" else ATTN_MEAN
    params = np.concatenate([[beta, norm, 1.0, 1.0 if identity else 0.0], flat])
    return System(
        name=f"attention_{kind}",
        family="attention",
        params=_frozen(params),
        sigma=sigma,
        normalization="N-1" if kind == "SA" else "N",
        sphere=bool(sphere),
        dim=d,
        info={"beta": beta, "kind": kind, "identity_QKV": identity, "sphere": bool(sphere), "sigma": sigma},
    )


def _python_version(fn):
    """The pure-Python function behind a Numba dispatcher (or fn itself)."""
    return getattr(fn, "py_func", fn)


def custom(
    kernel: Callable,
    drift: Callable | None = None,
    *,
    sigma: float = 0.0,
    params: Any = (),
    name: str = "custom",
    sphere: bool = False,
    normalization: str = "N-1",
) -> System:
    """A user-defined system from Numba-compilable scalar functions.

    The engine compiles the functions into its own loops, so there is no
    Python call per pair on the ``cpu`` backend; the ``reference`` backend
    calls the pure-Python versions.

    Parameters
    ----------
    kernel : callable ``kernel(x, y, params, out)``
        Writes K(x, y) (length d) into ``out``. May be a plain function or a
        ``numba.njit`` dispatcher.
    drift : callable ``drift(x, params, out)`` or None
        Writes b(x) into ``out``; None means b = 0.
    sigma : float
        Additive noise amplitude.
    params : sequence of float
        Passed as a float64 array to both functions.
    normalization : {"N-1", "N"}
        Interaction weight 1/(N-1) (T1) or 1/N.

    Examples
    --------
    >>> import math
    >>> def kern(x, y, p, out):
    ...     for c in range(x.shape[0]):
    ...         out[c] = -p[0] * math.sin(x[c] - y[c])
    >>> sys = custom(kern, sigma=0.5, params=[1.0])
    """
    if not callable(kernel):
        raise TypeError(f"kernel must be a callable kernel(x, y, params, out), got {type(kernel).__name__}")
    if drift is not None and not callable(drift):
        raise TypeError(f"drift must be a callable drift(x, params, out) or None, got {type(drift).__name__}")
    sigma = check_finite_scalar("sigma", sigma, low=0.0)
    normalization = check_choice("normalization", normalization, ("N-1", "N"))
    p = np.asarray(params)
    if p.dtype.kind not in "biuf" or p.ndim > 1:
        raise TypeError("params must be a flat sequence of real numbers")
    p = p.astype(np.float64).ravel()
    if not np.all(np.isfinite(p)):
        raise ValueError("params must be finite")
    drift = drift if drift is not None else _kernels.zero_drift
    return System(
        name=str(name),
        family="kernel",
        params=_frozen(p),
        sigma=sigma,
        normalization=normalization,
        sphere=bool(sphere),
        kernel=_python_version(kernel),
        drift=_python_version(drift),
        builtin=False,
        info={"sigma": sigma, "params": p.tolist()},
    )
