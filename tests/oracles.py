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


# --- RBM-1 batches, both remainder conventions, and the batch forces on them ------------------------------------
def cut_batches(perm, p, remainder):
    """The batches of a permutation, written out from the definitions of THEORY A2 (index arrays).

    ``"spread"``: n // p batches, the first n mod (n // p) of them one longer;
    ``"pad"``: consecutive slices of p, the last one holding what is left.
    """
    perm = np.asarray(perm)
    n = perm.size
    if remainder == "pad":
        return [perm[a:a + p] for a in range(0, n, p)]
    nb = n // p
    sizes = [n // nb + (1 if b < n % nb else 0) for b in range(nb)]
    edges = np.concatenate([[0], np.cumsum(sizes)])
    return [perm[edges[b]:edges[b + 1]] for b in range(nb)]


def member_batches(batches, n):
    """For each token i its batch C(i) (i included); a batch of one real token is widened to all n (lone rule)."""
    out = [None] * n
    for members in batches:
        widened = np.arange(n) if len(members) == 1 else np.asarray(members)
        for i in members:
            out[int(i)] = widened
    return out


def kernel_batch_force(system, x, batches_of):
    """b(x_i) + c_N/(|C(i)|-1) sum_{j in C(i), j != i} K(x_i, x_j) for a kernel system (no projection)."""
    n = x.shape[0]
    K = system.kernel_np(x[:, None, :], x[None, :, :], system.params)
    K[np.arange(n), np.arange(n)] = 0.0
    c = system.coupling_for(n)
    inter = np.array([K[i, batches_of[i]].sum(axis=0) * (c / (len(batches_of[i]) - 1)) for i in range(n)])
    return inter + system.drift_np(x, system.params)


def attention_batch_force(x, batches_of, beta, kind, Q, K, V, coupling):
    """SA: sum_{j in C(i)} softmax_j(beta <Q x_i, K x_j>) V x_j (self included); USA (T20):
    c_N/(|C(i)|-1) sum_{j in C(i), j != i} exp(beta <Q x_i, K x_j>) V x_j + (1 - c_N) exp(beta <Q x_i, K x_i>) V x_i.
    No projection."""
    q, k, v = x @ Q.T, x @ K.T, x @ V.T
    out = np.empty_like(x)
    for i, members in enumerate(batches_of):
        s = beta * (k[members] @ q[i])
        if kind == "SA":
            w = np.exp(s - s.max())
            out[i] = (w / w.sum()) @ v[members]
        else:
            others = members[members != i]
            e = np.exp(beta * (k[others] @ q[i]))
            out[i] = (coupling / (len(members) - 1)) * (e @ v[others]) \
                + (1.0 - coupling) * np.exp(beta * (q[i] @ k[i])) * v[i]
    return out


def tangent(x, f):
    """The projection of f (N, d) on the tangent spaces of the sphere at x."""
    return f - np.sum(x * f, axis=1, keepdims=True) * x
