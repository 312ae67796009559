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

import inspect
import math
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from particles import _kernels, _layout
from particles._attention_args import attention_matrices
from particles._validate import check_choice, check_finite_scalar, check_int

__all__ = ["System", "confined_tanh", "dyson", "attention", "custom", "CompileCostWarning"]


class CompileCostWarning(UserWarning):
    """The engine's loops compiled with a user's functions cannot be cached on disk: every process compiles them."""


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
        Flat parameter vector handed to the compiled scalar functions; its
        layout per family is defined in ``particles._layout``.
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
        params=_frozen(_layout.pack_tanh(r, L)),
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
        params=_frozen(_layout.pack_dyson(eps)),
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


ATTN_SOFTMAX = _layout.ATTN_SOFTMAX
ATTN_MEAN = _layout.ATTN_MEAN


def attention(
    beta: float,
    kind: str = "SA",
    Q: Any = None,
    K: Any = None,
    V: Any = None,
    sphere: bool = True,
    sigma: float = 0.0,
    *,
    include_self: bool = True,
    heads: int | None = None,
    W: Any = None,
) -> System:
    """Self-attention dynamics as an interacting particle system (Part C).

    SA (T19): dx_i/dt = P_{x_i}( sum_j softmax_j(beta <Q x_i, K x_j>) V x_j ),
    USA (T20): dx_i/dt = P_{x_i}( (1/n) sum_j exp(beta <Q x_i, K x_j>) V x_j ),
    with P_x y = y - <x, y> x. The sums include j = i unless
    ``include_self=False``.

    USA is an IPS of form T1: K(x, y) = exp(beta <Qx, Ky>) V y with
    c_N = (N-1)/N, plus the self term exp(beta <Qx, Kx>) V x / N, which the
    random-batch integrators keep exact (THEORY B5). SA is a softmax: the
    random-batch integrators replace it by the softmax over the batch
    (random batch attention, T18), which is biased.

    Without self (``include_self=False``) every sum runs over j != i, under
    ``method="full"`` and under RBM-1 / RBM-r alike: SA is the softmax over
    the other members of the batch (over the other N - 1 tokens when full);
    USA is (1/n) sum_{j != i}, the same K and the same weight (n-1)/n of the
    IPS (a batch C weighs its members j != i with c_N/(``|C|``-1)) and no self
    term, so USA stays an IPS of form T1 without a drift and RBM stays
    unbiased for it.

    Several heads (``heads``, or Q, K, V, W given as (H, d, d) stacks): head h
    has its own Q_h, K_h, V_h and output map W_h, and the force is

        P_{x_i}( sum_h W_h A_h(x_i) ),

    A_h the head-h attention above (SA or USA, with or without self, the same
    for every head). This is multi-head attention with d-dimensional heads:
    concatenating the heads' outputs and applying an output matrix
    W_O = [W_1 ... W_H] of shape (d, H d) is sum_h W_h out_h. Under RBM all
    heads use the particles' one partition. The default W_h = I / H makes
    the force the mean of the heads, so that H copies of one head are that
    head's system (same time scale, same step sizes); pass ``W=np.eye(d)``
    for the plain sum. One head with W = I is exactly the one-head system
    (the same parameter vector, the same bits on every backend).

    Parameters
    ----------
    beta : float
        Inverse temperature; must be finite.
    kind : {"SA", "USA"}
    Q, K, V : array_like of shape (d, d) or (H, d, d), or None
        Query, key and value matrices, one per head for a stack; a (d, d)
        matrix is shared by every head, None means the identity.
    sphere : bool
        True (default): projected dynamics on the unit sphere (layer norm).
        False: the unprojected dynamics in R^d.
    sigma : float
        Noise level, >= 0 (default 0: deterministic). In R^d
        (``sphere=False``) additive noise sigma dB. On the sphere, Brownian
        motion on S^(d-1) with generator (sigma^2 / 2) Laplace-Beltrami: the
        increment sigma dW is projected on the tangent space and the step's
        normalisation supplies the Ito drift -(d - 1) sigma^2 x / 2 (weak
        order 1, strong order 1/2; see :func:`particles.solve`, Notes).
        In the noisy-transformer papers' terms (Mun and Rosenzweig) the
        uniform state of USA is unstable for sigma^2 < 1 / K#, i.e.
        kappa = 2 / sigma^2 > 2 K# (:mod:`attention_theory.bounds.noisy`).
    include_self : bool, keyword-only
        True (default): the sums include j = i. False: they exclude it (see above).
    heads : int >= 1 or None, keyword-only
        The number of heads H. None (default): the leading size of the
        (H, d, d) stacks among Q, K, V, W, or 1 if there are none. With
        H > 1 at least one matrix must be given (it fixes d).
    W : array_like of shape (d, d) or (H, d, d), or None, keyword-only
        The heads' output maps; a (d, d) matrix is shared by every head.
        None (default): I / H for every head.

    Raises
    ------
    TypeError
        ``sphere`` or ``include_self`` is not a bool, ``heads`` not an
        integer, a matrix not numeric.
    ValueError
        A matrix of the wrong shape, sizes that disagree (d, or H between
        stacks and ``heads``), ``heads < 1``, non-finite values.
    """
    beta = check_finite_scalar("beta", beta)
    kind = check_choice("kind", kind, ("SA", "USA"))
    sigma = check_finite_scalar("sigma", sigma, low=0.0)
    if not isinstance(sphere, (bool, np.bool_)):
        raise TypeError(f"sphere must be a bool, got {type(sphere).__name__}")
    if not isinstance(include_self, (bool, np.bool_)):
        raise TypeError(f"include_self must be a bool, got {type(include_self).__name__}")
    include_self = bool(include_self)
    H, d, mats = attention_matrices(heads, Q=Q, K=K, V=V, W=W)
    if d is not None:
        eye = np.eye(d)
        mats["W"] = eye / H if mats["W"] is None else mats["W"]
        # one head with W = I: the one-head layout, whose vector and arithmetic are today's
        one_head = H == 1 and np.array_equal(mats["W"].reshape(d, d), eye)
    else:
        one_head = True
    qkv = {k: mats[k] for k in ("Q", "K", "V")}
    identity = one_head and all(a is None for a in qkv.values())
    norm = ATTN_SOFTMAX if kind == "SA" else ATTN_MEAN
    if identity:
        params = _layout.pack_attention(beta, norm, include_self)
    elif one_head:
        Qm, Km, Vm = ((eye if a is None else a.reshape(d, d)) for a in qkv.values())
        params = _layout.pack_attention(beta, norm, include_self, Qm, Km, Vm)
    else:
        Qm, Km, Vm, Wm = (np.broadcast_to(eye if mats[k] is None else mats[k], (H, d, d)) for k in "QKVW")
        params = _layout.pack_attention(beta, norm, include_self, Qm, Km, Vm, Wm)
    info = {"beta": beta, "kind": kind, "identity_QKV": identity, "sphere": bool(sphere), "sigma": sigma}
    # only what differs from the one-head system with self, so that its metadata stays as it was
    if not include_self:
        info["include_self"] = False
    if not one_head:
        info["heads"] = H
    return System(
        name=f"attention_{kind}",
        family="attention",
        params=_frozen(params),
        sigma=sigma,
        normalization="N-1" if kind == "SA" else "N",
        sphere=bool(sphere),
        dim=d,
        info=info,
    )


def _python_version(fn):
    """The pure-Python function behind a Numba dispatcher (or fn itself)."""
    return getattr(fn, "py_func", fn)


# --- checks of a user's scalar functions -----------------------------------------------------------------------------
# A user's kernel and drift are compiled into loops that cannot check anything per call, so their contract is checked
# once in pure Python: the signature, then one call on sample inputs in which every input array reports misuse.
_CONTRACT = {"kernel": ("kernel(x, y, params, out)", "K(x, y)"), "drift": ("drift(x, params, out)", "b(x)")}
_UNWRITTEN = np.uint64(0x7FF8DEADBEEF0001)  # bits of a NaN no arithmetic produces: marks components never written
_PROBE_DIMS = (2, 1, 3)  # without dim=: one of these must pass (the first failure is the one reported)
_probed: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # system -> dimensions at which the probe passed


class _Misuse(Exception):
    """Raised by a probe input: ``what`` says what the function did; ``dimensional``: past component d - 1."""

    def __init__(self, what, dimensional=False):
        super().__init__(what)
        self.what = what
        self.dimensional = dimensional


class _ProbeArray(np.ndarray):
    """A probe input: an index past the end raises :class:`_Misuse` (NumPy's IndexError would not say which
    array), and so does a write into a read-only input (x, y, params, their views; copies are writable).
    Negative indices keep NumPy's meaning, which is also Numba's."""

    probe_name = ""

    def __array_finalize__(self, obj):
        self.probe_name = getattr(obj, "probe_name", "")

    def _check(self, key):
        k = key[0] if isinstance(key, tuple) and key else key
        n = self.shape[0] if self.ndim else 0
        if isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_)) and not -n <= k < n:
            name = self.probe_name
            if name == "params":
                raise _Misuse(f"reads params[{int(k)}], but params has {n} entr{'y' if n == 1 else 'ies'}")
            raise _Misuse(f"indexes {name}[{int(k)}], but {name} has d = {n} component{'' if n == 1 else 's'}",
                          dimensional=True)

    def __getitem__(self, key):
        self._check(key)
        return super().__getitem__(key)

    def __setitem__(self, key, value):
        if not self.flags.writeable:
            raise _Misuse(f"writes into its input {self.probe_name} (the inputs are read-only: the engine passes "
                          "the particles' states and the system's parameters themselves)")
        self._check(key)
        super().__setitem__(key, value)


def _probe_input(values, name, writable=False):
    a = np.array(values, dtype=np.float64).view(_ProbeArray)
    a.probe_name = name
    a.flags.writeable = writable
    return a


def _sample_points(d, sphere):
    """Two sample states, distinct in every component (a kernel like Dyson's is singular at x = y)."""
    c = np.arange(d)
    x, y = 0.3 + 0.25 * c, -0.45 + 0.1 * c
    if sphere:
        x, y = x / np.linalg.norm(x), y / np.linalg.norm(y)
    return x, y


@dataclass
class _Probe:
    problem: str | None = None  # what is wrong, or None
    dimensional: bool = False  # the only problem is an index past component d - 1
    nonfinite: str | None = None  # the components of out that came out inf/nan
    cause: BaseException | None = None
    inputs: str = ""


def _plain(value):
    """A returned value as a user reads it: 0.5, not np.float64(0.5)."""
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape}"
    return repr(value.item() if isinstance(value, np.generic) else value)


def _fn_name(fn):
    return getattr(fn, "__qualname__", type(fn).__name__)


def _probe(role, fn, d, params, sphere):
    """One pure-Python call of ``fn`` in dimension ``d`` on sample inputs; what went wrong, if anything."""
    x, y = _sample_points(d, sphere)
    bits = np.full(d, _UNWRITTEN, dtype=np.uint64)
    out = bits.view(np.float64).view(_ProbeArray)
    out.probe_name = "out"
    args = [_probe_input(x, "x")] + ([_probe_input(y, "y")] if role == "kernel" else [])
    inputs = (f"x = {np.round(x, 3).tolist()}" + (f", y = {np.round(y, 3).tolist()}" if role == "kernel" else "")
              + f", params = {params.tolist()}")
    res = _Probe(inputs=f"d = {d}, {inputs}")
    try:
        with np.errstate(all="ignore"):
            ret = fn(*args, _probe_input(params, "params"), out)
    except _Misuse as e:
        res.problem, res.dimensional = e.what, e.dimensional
        return res
    except Exception as e:  # the user's own code raised: report it, with its traceback as the cause
        if isinstance(e, ArithmeticError) or (isinstance(e, ValueError) and "math domain" in str(e)):
            # Python's math raises where compiled code (numpy error model) gives inf or nan: as non-finite
            res.nonfinite = f"{type(e).__name__}: {e} (inf or nan in compiled code)"
        elif isinstance(e, ValueError) and "read-only" in str(e):
            res.problem = "writes into one of its inputs (x, y and params are read-only; write into out)"
        else:
            res.problem, res.cause = f"raised {type(e).__name__}: {e}", e
        return res
    unwritten = np.flatnonzero(bits == _UNWRITTEN)
    value = _CONTRACT[role][1]
    if unwritten.size and ret is not None:
        res.problem = (f"returns a value ({_plain(ret)}) instead of writing {value} into out (it must write "
                       f"out[0], ..., out[d-1] and return nothing)")
    elif unwritten.size == d:
        res.problem = f"never writes into out (it must write {value} into out[0], ..., out[d-1])"
    elif unwritten.size:
        missing = ", ".join(f"out[{c}]" for c in unwritten)
        res.problem = (f"does not write {missing} (every component out[0], ..., out[d-1] of {value} must be "
                       "written; pass dim= if it is written for one dimension)")
    else:
        bad = np.flatnonzero(~np.isfinite(np.asarray(out, dtype=np.float64)))
        if bad.size:
            res.nonfinite = ", ".join(f"out[{c}] = {float(out[c])}" for c in bad)
    return res


def _refuse(system_name, role, fn, res):
    sig = _CONTRACT[role][0]
    msg = (f"custom system {system_name!r}: the {role} {_fn_name(fn)!r} {res.problem}; a {role} is {sig} "
           f"(probed in pure Python at {res.inputs})")
    raise ValueError(msg) from res.cause


def _warn_nonfinite(system_name, role, fn, res):
    warnings.warn(f"custom system {system_name!r}: the {role} {_fn_name(fn)!r} gives {res.nonfinite} at the sample "
                  f"inputs ({res.inputs}); the trajectory will not stay finite if the particles get there",
                  RuntimeWarning, stacklevel=4)


def _check_signature(system_name, role, fn):
    sig_text = _CONTRACT[role][0]
    nargs = 4 if role == "kernel" else 3
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin or C function: Numba cannot compile it either
        raise TypeError(f"custom system {system_name!r}: the {role} {_fn_name(fn)!r} has no Python signature "
                        f"to read; a {role} must be a Python function {sig_text} in the subset Numba compiles"
                        ) from None
    try:
        sig.bind(*range(nargs))
    except TypeError:
        raise TypeError(f"custom system {system_name!r}: the {role} {_fn_name(fn)!r} has the signature "
                        f"{_fn_name(fn)}{sig}; a {role} takes {nargs} positional arguments, {sig_text}") from None


def _check_user_functions(system, dims):
    """Probe a user system's kernel and drift at each dimension in ``dims`` (see :func:`custom`)."""
    fns = (("kernel", system.kernel), ("drift", system.drift))
    passed = []
    failures = []
    for d in dims:
        results = [(role, fn, _probe(role, fn, d, system.params, system.sphere)) for role, fn in fns]
        bad = [r for r in results if r[2].problem is not None]
        if not bad:
            passed.append(d)
            if len(passed) == 1:
                for role, fn, res in results:
                    if res.nonfinite:
                        _warn_nonfinite(system.name, role, fn, res)
        failures.extend(bad)
    if passed:
        _probed.setdefault(system, set()).update(passed)
        return
    definite = [f for f in failures if not f[2].dimensional]
    if definite or len(dims) == 1:
        _refuse(system.name, *(definite or failures)[0])
    # every failure was an index past component d - 1: written for a dimension not probed; checked when it is known


def check_user_functions(system, d):
    """Probe a user-defined system's functions in the state's dimension ``d`` (once per system and ``d``).

    Called by :func:`particles.solve` and :func:`particles.drift` before any
    compilation or work; a no-op for the built-in systems.
    """
    if system.builtin or d in _probed.get(system, ()):
        return
    _check_user_functions(system, (d,))


def custom(
    kernel: Callable,
    drift: Callable | None = None,
    *,
    sigma: float = 0.0,
    params: Any = (),
    name: str = "custom",
    sphere: bool = False,
    normalization: str = "N-1",
    dim: int | None = None,
) -> System:
    """A user-defined system from Numba-compilable scalar functions.

    The engine compiles the functions into its own loops, so there is no
    Python call per pair on the ``cpu`` backend; the ``reference`` backend
    calls the pure-Python versions.

    The functions are checked here, in pure Python, before anything is
    compiled: the signature, then one call of each on sample inputs (two
    points distinct in every component, on the unit sphere if ``sphere``).
    A ``ValueError`` naming the function and what it did is raised if it

    - returns a value instead of writing into ``out``, never writes into
      ``out``, or leaves a component of ``out`` unwritten;
    - reads ``params`` past its end (``params[-1]`` is the last entry, as in
      NumPy and Numba);
    - writes into one of its inputs, or raises.

    A non-finite value at the sample inputs only warns (``RuntimeWarning``):
    a kernel may be singular or undefined away from the states it will see.
    Without ``dim`` the call is made in d = 2, 1 and 3 and one of them must
    pass (a kernel written for d = 1 or d = 3 is accepted); a function that
    indexes past component d - 1 in all three is taken to be written for a
    larger dimension. :func:`particles.solve` and :func:`particles.drift`
    then repeat the check in the state's dimension, once, before doing any
    work. Whether Numba can compile the functions is checked by the
    ``cpu`` and ``cuda`` backends before they compile their loops (a
    ``TypeError`` naming the function and Numba's reason); the ``reference``
    backend never compiles them, which makes it the place to debug them.

    Parameters
    ----------
    kernel : callable ``kernel(x, y, params, out)``
        Writes K(x, y) (length d) into ``out`` (T1). May be a plain function
        or a ``numba.njit`` dispatcher. ``x``, ``y`` and ``params`` are
        read-only.
    drift : callable ``drift(x, params, out)`` or None
        Writes b(x) into ``out``; None means b = 0.
    sigma : float
        Additive noise amplitude.
    params : sequence of float
        Passed as a float64 array to both functions.
    normalization : {"N-1", "N"}
        Interaction weight 1/(N-1) (T1) or 1/N.
    dim : int, optional
        The dimension d the functions are written for: they are checked in
        that dimension only, and states of another dimension are refused.

    Raises
    ------
    TypeError
        ``kernel`` or ``drift`` is not a callable with the signature above.
    ValueError
        A function broke its contract at the sample inputs (see above).

    Examples
    --------
    >>> import math
    >>> def kern(x, y, p, out):
    ...     for c in range(x.shape[0]):
    ...         out[c] = -p[0] * math.sin(x[c] - y[c])
    >>> system = custom(kern, sigma=0.5, params=[1.0])
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
    if dim is not None:
        dim = check_int("dim", dim, low=1)
    name = str(name)
    kernel, drift = _python_version(kernel), _python_version(drift if drift is not None else _kernels.zero_drift)
    _check_signature(name, "kernel", kernel)
    _check_signature(name, "drift", drift)
    system = System(
        name=name,
        family="kernel",
        params=_frozen(p),
        sigma=sigma,
        normalization=normalization,
        sphere=bool(sphere),
        dim=dim,
        kernel=kernel,
        drift=drift,
        builtin=False,
        info={"sigma": sigma, "params": p.tolist()},
    )
    _check_user_functions(system, _PROBE_DIMS if dim is None else (dim,))
    return system
