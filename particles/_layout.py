"""The parameter vector of each system family, defined once.

A :class:`particles.systems.System` hands its parameters to the compiled
loops as one flat float64 array (a Numba loop takes arrays, not objects).
The position of every field is named here, and every packer and unpacker
uses the names: ``systems`` packs with the ``pack_*`` functions, the
reference backend unpacks with :func:`unpack_attention`, and the compiled
sources (``_kernels``, the ``cpu`` and ``cuda`` loops, the ensemble kernel)
index with the integer constants, which Numba freezes as compile-time
constants (the same code as a literal index).

Layouts:

- built-in kernel systems: ``[MODEL, ...]``, the model code first so that
  one compiled loop serves every built-in model;

  - confined tanh (A1.1): ``[MODEL_TANH, r, L]``;
  - Dyson (A1.2): ``[MODEL_DYSON, eps]``;

- attention (Part C): ``[beta, norm, include_self, identity, Q, K, V]``,
  ``norm`` one of :data:`ATTN_SOFTMAX` / :data:`ATTN_MEAN`, the two flags
  0.0 or 1.0, and Q, K, V row-major (d, d) blocks, present only when
  ``identity`` is 0.0;
- user-defined systems: the user's own vector, passed as is.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

# --- built-in kernel family ----------------------------------------------------------------------------------
MODEL = 0  # the model code, one of MODEL_TANH / MODEL_DYSON
MODEL_TANH = 0.0
MODEL_DYSON = 1.0
TANH_R = 1  # confinement strength r of b(x) = -r x
TANH_L = 2  # interaction strength L of K(x, y) = -L tanh(x - y)
DYSON_EPS = 1  # regularisation eps of K(x, y) = z / (z^2 + eps^2)

# --- attention family ------------------------------------------------------------------------------------------
ATTN_BETA = 0
ATTN_NORM = 1  # ATTN_SOFTMAX (SA, T19) or ATTN_MEAN (USA, T20)
ATTN_SELF = 2  # 1.0: the sums include j = i
ATTN_IDENTITY = 3  # 1.0: Q = K = V = I, no matrices stored
ATTN_QKV = 4  # first entry of Q; K and V follow, d * d entries each
ATTN_SOFTMAX = 0.0
ATTN_MEAN = 1.0


def pack_tanh(r, L):
    return np.array([MODEL_TANH, r, L], dtype=np.float64)


def pack_dyson(eps):
    return np.array([MODEL_DYSON, eps], dtype=np.float64)


def pack_attention(beta, norm, include_self, Q=None, K=None, V=None):
    """The attention vector; Q, K, V all None means the identity (no matrices stored)."""
    identity = Q is None and K is None and V is None
    head = np.array([beta, norm, 1.0 if include_self else 0.0, 1.0 if identity else 0.0], dtype=np.float64)
    if identity:
        return head
    return np.concatenate([head, np.asarray(Q).ravel(), np.asarray(K).ravel(), np.asarray(V).ravel()])


class AttentionParams(NamedTuple):
    """The fields of an attention vector (values as stored: float64 scalars, flags 0.0/1.0)."""

    beta: float
    norm: float
    include_self: float
    identity: float
    Q: np.ndarray | None
    K: np.ndarray | None
    V: np.ndarray | None


def unpack_attention(params, d):
    """The fields of an attention vector in dimension ``d`` (Q, K, V None for the identity)."""
    beta, norm, include_self, identity = params[ATTN_BETA], params[ATTN_NORM], params[ATTN_SELF], params[ATTN_IDENTITY]
    if identity:
        return AttentionParams(beta, norm, include_self, identity, None, None, None)
    Q, K, V = params[ATTN_QKV:].reshape(3, d, d)
    return AttentionParams(beta, norm, include_self, identity, Q, K, V)
