"""Device functions: scalar building blocks written once, compiled by every backend that needs them.

The functions here are plain Python in the subset Numba compiles. The ``cpu``
backend compiles them with ``numba.njit`` into its loops, the ``cuda``
backend with ``numba.cuda.jit(device=True)`` into its kernels, and
:mod:`attention_theory`'s random batch attention kernels (CPU and CUDA) do
the same; each compiled copy runs the same arithmetic in the same order, so
the copies agree bit for bit wherever the compiler does not contract or
re-associate (``fastmath`` is off everywhere; a GPU contracts multiply-adds).

Batch softmax, max-subtracted
-----------------------------
:func:`softmax_step` folds one score ``s_j`` and its value row ``v_j`` into
the running state ``(mx, den, acc)`` of

.. math::

    \\mathrm{softmax}_j(s)\\cdot v = \\frac{\\sum_j e^{s_j - m} v_j}{\\sum_j e^{s_j - m}},

with ``mx`` the largest score so far, ``den`` the sum of ``exp(s_j - mx)`` and
``acc`` the sum of ``exp(s_j - mx) v_j``; the result is ``acc / den``. Two
ways to use it, both with ``den = 0`` and ``acc = 0`` at the start:

- *online* (one pass over the partners): start from ``mx = -inf``; when a
  score exceeds the running maximum the sums are rescaled by
  ``exp(mx_old - s)`` (the particle engine's attention forces);
- *two-pass*: find the maximum ``m`` first and start from ``mx = m``; the
  rescaling branch is then never taken, and each step is
  ``e = exp(s - m); den += e; acc += e v`` (random batch attention in
  :mod:`attention_theory`, whose results are defined by that order).

The two give results equal to rounding, not bit for bit; each caller keeps
the form that defines its stored results. A NaN score never takes the
rescaling branch (every comparison with NaN is false) and makes the
result NaN, in both forms.

Softmax sums that do not use it, on purpose: the reference backend's and
``attention_theory``'s dense NumPy forms (matrix products: they are the
oracles and the exact estimators), and the ``cpu`` backend's fused ensemble
kernel (``backends/_ensemble.py``: blocked sums in another order, its own
vectorised ``exp``, one shift for all tokens), whose results would change.
"""

from __future__ import annotations

import math

__all__ = ["softmax_step"]


def softmax_step(s, mx, den, acc, v, n):
    """Fold score ``s`` with value row ``v`` (``n`` components) into ``(mx, den, acc)``.

    Returns the new ``(mx, den)``; ``acc`` (length >= n) is updated in place.
    See the module docstring for the two ways to start the state.
    """
    if s > mx:
        scale = math.exp(mx - s)
        for c in range(n):
            acc[c] = acc[c] * scale + v[c]
        return s, den * scale + 1.0
    e = math.exp(s - mx)
    for c in range(n):
        acc[c] += e * v[c]
    return mx, den + e
