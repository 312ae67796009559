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

- attention (Part C): ``[beta, norm, include_self, form, ...]``, ``norm``
  one of :data:`ATTN_SOFTMAX` / :data:`ATTN_MEAN`, ``include_self`` 0.0 or
  1.0, and ``form`` (at :data:`ATTN_IDENTITY`) saying what follows:

  - :data:`ATTN_FORM_IDENTITY` (1.0): nothing, Q = K = V = I, one head;
  - :data:`ATTN_FORM_ONE` (0.0): ``Q, K, V``, row-major (d, d) blocks, one
    head with no output map;
  - :data:`ATTN_FORM_HEADS` (2.0): ``H`` (at :data:`ATTN_HEADS`), then per
    head h the blocks ``Q_h, K_h, V_h, W_h`` (row-major (d, d) each, head
    after head, from :data:`ATTN_HEAD_BLOCKS`), W_h the head's output map.

  A single head with W = I is always stored in one of the first two forms,
  so its vector (and every backend's arithmetic) is the one-head system's.
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
ATTN_IDENTITY = 3  # the form: ATTN_FORM_IDENTITY, ATTN_FORM_ONE or ATTN_FORM_HEADS
ATTN_QKV = 4  # ATTN_FORM_ONE: first entry of Q; K and V follow, d * d entries each
ATTN_HEADS = 4  # ATTN_FORM_HEADS: the number of heads H
ATTN_HEAD_BLOCKS = 5  # ATTN_FORM_HEADS: first entry of Q_1; then K_1, V_1, W_1, Q_2, ... (d * d entries each)
ATTN_SOFTMAX = 0.0
ATTN_MEAN = 1.0
ATTN_FORM_IDENTITY = 1.0
ATTN_FORM_ONE = 0.0
ATTN_FORM_HEADS = 2.0


def pack_tanh(r, L):
    return np.array([MODEL_TANH, r, L], dtype=np.float64)


def pack_dyson(eps):
    return np.array([MODEL_DYSON, eps], dtype=np.float64)


def pack_attention(beta, norm, include_self, Q=None, K=None, V=None, W=None):
    """The attention vector.

    Q, K, V all None (and W None) means the identity form (no matrices
    stored); (d, d) matrices and W None the one-head form; W given means the
    heads form, with Q, K, V, W all of shape (H, d, d) (nothing is checked
    here: :func:`particles.systems.attention` validates and chooses the form).
    """
    flag = 1.0 if include_self else 0.0
    if W is not None:
        W = np.asarray(W, dtype=np.float64)
        H = W.shape[0]
        blocks = np.stack([np.asarray(m, dtype=np.float64) for m in (Q, K, V)] + [W], axis=1)  # (H, 4, d, d)
        return np.concatenate([np.array([beta, norm, flag, ATTN_FORM_HEADS, float(H)]), blocks.ravel()])
    identity = Q is None and K is None and V is None
    head = np.array([beta, norm, flag, ATTN_FORM_IDENTITY if identity else ATTN_FORM_ONE], dtype=np.float64)
    if identity:
        return head
    return np.concatenate([head, np.asarray(Q).ravel(), np.asarray(K).ravel(), np.asarray(V).ravel()])


def attention_heads(params):
    """The number of heads H stored in an attention vector."""
    return int(params[ATTN_HEADS]) if params[ATTN_IDENTITY] == ATTN_FORM_HEADS else 1


def attention_work_width(params, d):
    """Per-particle scratch of the compiled attention forces: (Q_h x, K_h x, W_h V_h x) per head, and for
    more than one head (or an output map) a d-vector in which each head's output is formed before it is added."""
    if params[ATTN_IDENTITY] != ATTN_FORM_HEADS:
        return 3 * d
    return 3 * d * attention_heads(params) + d


class AttentionParams(NamedTuple):
    """The fields of an attention vector (values as stored: float64 scalars, flags 0.0/1.0).

    ``identity`` is the form field (1.0 only for the identity form). In the
    heads form Q, K, V, W are (H, d, d); otherwise Q, K, V are (d, d) or None
    and W is None (one head, no output map).
    """

    beta: float
    norm: float
    include_self: float
    identity: float
    Q: np.ndarray | None
    K: np.ndarray | None
    V: np.ndarray | None
    heads: int = 1
    W: np.ndarray | None = None


def unpack_attention(params, d):
    """The fields of an attention vector in dimension ``d`` (Q, K, V None for the identity)."""
    beta, norm, include_self, identity = params[ATTN_BETA], params[ATTN_NORM], params[ATTN_SELF], params[ATTN_IDENTITY]
    if identity == ATTN_FORM_IDENTITY:
        return AttentionParams(beta, norm, include_self, identity, None, None, None)
    if identity == ATTN_FORM_HEADS:
        H = attention_heads(params)
        blocks = params[ATTN_HEAD_BLOCKS:].reshape(H, 4, d, d)
        return AttentionParams(beta, norm, include_self, identity, blocks[:, 0], blocks[:, 1], blocks[:, 2], H,
                               blocks[:, 3])
    Q, K, V = params[ATTN_QKV:].reshape(3, d, d)
    return AttentionParams(beta, norm, include_self, identity, Q, K, V)
