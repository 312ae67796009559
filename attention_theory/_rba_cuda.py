"""CUDA kernels of random batch attention (T18) and of exact softmax attention (T7).

Imported lazily by :mod:`attention_theory.estimators` for ``backend="cuda"``.
The host side is the engine's public GPU API, :mod:`particles.gpu`: its
checks (numba-cuda installed, a GPU or the simulator), its counted
transfers, its launcher, its device permutation and its compilation; the
kernels below are plain Python compiled in the engine's device namespace
(``cuda``, ``batch_span``, ``softmax_step``, and ``DV``, the value dimension,
a compile-time constant for the per-thread accumulator).

- :func:`k_rba`: one thread per head and query position of the RBM-1
  permutation, built on the device (the same integers as
  :func:`particles.partition`, one row per replica); the thread's batch is a
  slice of the permutation, cut by the ``remainder`` convention (``"spread"``:
  the engine's ``batch_span``; ``"pad"``: slices of p, the last one short),
  and a lone token's slice (a batch of one, under ``"pad"`` only) is the whole
  permutation: exact attention for it. Two passes over the
  batch, as in :func:`attention_theory._rba.one_batch`: the maximum score,
  then the exponentials and the weighted values (the engine's
  ``particles.device.softmax_step`` from that maximum), with the same sums
  in the same order, so the result agrees with the CPU kernel to rounding.
- :func:`k_softmax`: one thread per query, two passes over all keys (the
  maximum score, then exp(score - max) and the weighted values); no score
  matrix is stored. The CPU version uses BLAS products, so the two agree to
  rounding (summation order), not bit for bit.
"""
# ruff: noqa: F821  (cuda, batch_span, softmax_step and DV are bound by the compiler)

from __future__ import annotations

import math
import threading

import numpy as np

from particles import gpu

_lock = threading.RLock()
_compiled: dict = {}


def k_rba(q, k, v, idx, p, pad, shared, include_self, normalize, out):
    tid = cuda.grid(1)
    nh = q.shape[0]
    n = q.shape[1]
    if tid < nh * n:
        h = tid // n
        pos = tid - h * n
        row = 0 if shared else h
        if pad:
            start = (pos // p) * p
            stop = min(start + p, n)
        else:
            start, stop = batch_span(pos, n, n // p)
        if stop - start == 1:  # a lone token (only under pad): no batch-mates, so its batch is all n tokens
            start = 0
            stop = n
        i = idx[row, pos]
        d = q.shape[2]
        dv = v.shape[2]
        m = -np.inf
        for jj in range(start, stop):
            if include_self or jj != pos:
                j = idx[row, jj]
                s = 0.0
                for t in range(d):
                    s += q[h, i, t] * k[h, j, t]
                if s > m:
                    m = s
        acc = cuda.local.array(DV, np.float64)
        for t in range(dv):
            acc[t] = 0.0
        den = 0.0
        for jj in range(start, stop):
            if not include_self and jj == pos:
                continue
            j = idx[row, jj]
            s = 0.0
            for t in range(d):
                s += q[h, i, t] * k[h, j, t]
            m, den = softmax_step(s, m, den, acc, v[h, j], dv)
        if normalize:
            scale = 1.0 / den
        else:
            scale = math.exp(m) / (stop - start - 1)
        for t in range(dv):
            out[h, i, t] = acc[t] * scale


def k_softmax(q, k, v, out):
    i = cuda.grid(1)
    n = q.shape[0]
    if i < n:
        M = k.shape[0]
        d = q.shape[1]
        dv = v.shape[1]
        m = -np.inf
        for j in range(M):
            s = 0.0
            for t in range(d):
                s += q[i, t] * k[j, t]
            if s > m:
                m = s
        acc = cuda.local.array(DV, np.float64)
        for t in range(dv):
            acc[t] = 0.0
        den = 0.0
        for j in range(M):
            s = 0.0
            for t in range(d):
                s += q[i, t] * k[j, t]
            m, den = softmax_step(s, m, den, acc, v[j], dv)
        for t in range(dv):
            out[i, t] = acc[t] / den


def _kernels(dv):
    with _lock:
        if dv not in _compiled:
            _compiled[dv] = gpu.kernels([k_rba, k_softmax], "attention_estimators", DV=int(dv))
        return _compiled[dv]


def random_batch_attention(q, k, v, seed, p, include_self, normalize, *, remainder="spread", replicas=1):
    """RBA (or the unnormalised batch sum) of every head of q, k, v (H, N, .) -> (H, N, dv).

    The batches are those of ``particles.partition(N, p, seed=seed, replica=r, remainder=remainder)``, with
    r = h for head h when ``replicas == H`` and r = 0 for all heads when ``replicas == 1``.
    """
    gpu.require()
    nh, n, dv = q.shape[0], q.shape[1], v.shape[2]
    kern = _kernels(dv)
    dq, dk, dvv = gpu.to_device(q), gpu.to_device(k), gpu.to_device(v)
    idx = gpu.permutation(seed, 0, n, replicas=replicas)
    dout = gpu.empty((nh, n, dv))
    gpu.launch(kern.k_rba, nh * n, dq, dk, dvv, idx, p, remainder == "pad", replicas == 1, include_self, normalize,
               dout)
    return gpu.to_host(dout, np.empty((nh, n, dv)))


def softmax_attention(q, k, v):
    """Exact softmax attention, one thread per query."""
    gpu.require()
    n, dv = q.shape[0], v.shape[1]
    kern = _kernels(dv)
    dq, dk, dvv = gpu.to_device(q), gpu.to_device(k), gpu.to_device(v)
    dout = gpu.empty((n, dv))
    gpu.launch(kern.k_softmax, n, dq, dk, dvv, dout)
    return gpu.to_host(dout, np.empty((n, dv)))
