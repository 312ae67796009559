"""NumPy oracles shared by the test modules: plain, dense formulas, independent of the compiled code.

Batch softmax attention is the one the engine computes in three compiled
places (the ``cpu`` loops' attention forces, the ``cuda`` kernels and the
random batch attention estimator, all through ``particles.device.softmax_step``);
each is tested against :func:`batch_softmax_attention`.
"""

from __future__ import annotations

import numpy as np


def softmax_rows(s):
    """Row-wise softmax of a score matrix, max-subtracted (rows of -inf entries weigh 0)."""
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def batch_softmax_attention(q, k, v, batches, include_self=True):
    """out_i = sum_{j in C(i)} softmax_j(q_i . k_j) v_j over the batch C(i) of token i.

    ``batches``: a list of index arrays partitioning ``range(N)`` (e.g.
    ``particles.partition(...).batches()``); ``include_self=False`` drops
    j = i from token i's softmax.
    """
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    out = np.full((q.shape[0], v.shape[1]), np.nan)
    for members in batches:
        members = np.asarray(members)
        s = q[members] @ k[members].T
        if not include_self:
            s[np.arange(members.size), np.arange(members.size)] = -np.inf
        out[members] = softmax_rows(s) @ v[members]
    return out


def lambda_i(system, x):
    """Lambda_i of T3 for a kernel system: the finite-population variance over j != i of K(x_i, x_j) (dense)."""
    n = x.shape[0]
    K = system.kernel_np(x[:, None, :], x[None, :, :], system.params)
    K[np.arange(n), np.arange(n)] = 0.0
    kbar = K.sum(axis=1) / (n - 1)
    dev = K - kbar[:, None, :]
    dev[np.arange(n), np.arange(n)] = 0.0
    return np.sum(dev**2, axis=(1, 2)) / (n - 2)
