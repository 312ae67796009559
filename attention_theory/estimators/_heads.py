"""Multi-head self-attention from token embeddings: per-head projections, exact or random batch attention, W_O."""

from __future__ import annotations

import numpy as np

from attention_theory._validate import as_matrix, check_choice
from attention_theory.estimators._batch import random_batch_attention
from attention_theory.estimators._softmax import MAX_SCORES, softmax_attention

#: The attention run inside each head by :func:`multi_head_attention`.
HEAD_METHODS = ("exact", "rba")


def _projections(x, wq, wk, wv, wo):
    """Validated x (N, d_model), wq, wk (H, d_model, d_k), wv (H, d_model, d_v), wo as (H, d_v, d_out)."""
    x = as_matrix("x", x)
    d_model = x.shape[1]
    w = {}
    for name, a in (("wq", wq), ("wk", wk), ("wv", wv)):
        w[name] = as_matrix(name, a, ndim=3)
        if w[name].shape[1] != d_model:
            raise ValueError(
                f"{name} must have shape (H, d_model, .) with d_model = {d_model} (the columns of x), "
                f"got shape {w[name].shape}"
            )
        if w[name].shape[2] < 1:
            raise ValueError(f"{name} must have at least one output column per head, got shape {w[name].shape}")
    heads = w["wq"].shape[0]
    if w["wk"].shape != w["wq"].shape:
        raise ValueError(f"wk must have the shape of wq, (H, d_model, d_k) = {w['wq'].shape}, got {w['wk'].shape}")
    if w["wv"].shape[0] != heads:
        raise ValueError(f"wv must have H = {heads} heads (axis 0, as wq), got shape {w['wv'].shape}")
    d_v = w["wv"].shape[2]
    wo_arr = np.asarray(wo) if not isinstance(wo, np.random.Generator) else wo
    if getattr(wo_arr, "ndim", None) == 2:
        wo_arr = as_matrix("wo", wo_arr)
        if wo_arr.shape[0] != heads * d_v:
            raise ValueError(
                f"wo must have shape (H * d_v, d_out) = ({heads * d_v}, .) (the concatenated heads) or "
                f"(H, d_v, d_out) = ({heads}, {d_v}, .), got shape {wo_arr.shape}"
            )
        wo_arr = wo_arr.reshape(heads, d_v, wo_arr.shape[1])
    else:
        wo_arr = as_matrix("wo", wo_arr, ndim=3)
        if wo_arr.shape[:2] != (heads, d_v):
            raise ValueError(
                f"wo must have shape (H, d_v, d_out) = ({heads}, {d_v}, .) or (H * d_v, d_out) = "
                f"({heads * d_v}, .), got shape {wo_arr.shape}"
            )
    if wo_arr.shape[2] < 1:
        raise ValueError(f"wo must have at least one output column, got shape {wo_arr.shape}")
    return x, w["wq"], w["wk"], w["wv"], wo_arr


def multi_head_attention(x, wq, wk, wv, wo, *, method="exact", batch_size=None, rng=None, include_self=True,
                         remainder="spread", head_partitions="shared", max_scores=MAX_SCORES, backend="cpu"):
    r"""Multi-head self-attention of N tokens: H heads, each with its own projections, then the output map.

    .. math:: \mathrm{MHA}(X) = [A_1, \dots, A_H]\, W_O = \sum_h A_h W_{O,h}, \qquad
              A_h = \mathrm{Attn}(X W_{Q,h}, X W_{K,h}, X W_{V,h}),

    the standard convention (Vaswani et al. 2017): the heads' outputs
    :math:`A_h` (N, d_v) are concatenated along the feature axis, head 0
    first, and multiplied by :math:`W_O` (H d_v, d_out), whose row block h is
    :math:`W_{O,h}`. As everywhere in :mod:`attention_theory`, the 1/sqrt(d_k)
    temperature is not applied: fold it into ``wq`` (or ``wk``). No biases.

    ``method="exact"`` runs :func:`softmax_attention` in each head (A_h =
    exact attention, T7); ``method="rba"`` runs :func:`random_batch_attention`
    with the heads' q, k, v stacked as (H, N, .) (one seed, ``head_partitions``
    choosing whether the heads share the partition).

    Parameters
    ----------
    x : array_like, shape (N, d_model)
        Token embeddings.
    wq, wk : array_like, shape (H, d_model, d_k)
        Query and key projections, head h being ``wq[h]``, ``wk[h]``.
    wv : array_like, shape (H, d_model, d_v)
        Value projections.
    wo : array_like, shape (H * d_v, d_out) or (H, d_v, d_out)
        The output map of the concatenated heads; the 3-D form is the same
        matrix split into its H row blocks (``wo.reshape(H, d_v, d_out)``).
    method : {"exact", "rba"}
    batch_size, rng : int, int or numpy.random.Generator
        For ``method="rba"`` (required there, refused with ``"exact"``), as in
        :func:`random_batch_attention`.
    include_self, remainder, head_partitions : optional
        For ``method="rba"``, as in :func:`random_batch_attention` (defaults
        True, ``"spread"``, ``"shared"``).
    max_scores : int
        For ``method="exact"``, as in :func:`softmax_attention`.
    backend : {"cpu", "cuda"}
        Where the attention of the heads runs; the projections are NumPy
        products on the host.

    Returns
    -------
    ndarray of float64, shape (N, d_out)

    Notes
    -----
    Time O(H N d_model (2 d_k + d_v) + H N d_v d_out) for the projections plus
    the heads' attention: O(H N^2 (d_k + d_v)) exact, O(H N p (d_k + d_v)) RBA.
    """
    method = check_choice("method", method, HEAD_METHODS)
    x, wq, wk, wv, wo = _projections(x, wq, wk, wv, wo)
    q, k, v = np.matmul(x, wq), np.matmul(x, wk), np.matmul(x, wv)  # (H, N, .)
    if method == "exact":
        for name, value in (("batch_size", batch_size), ("rng", rng)):
            if value is not None:
                raise ValueError(f"{name} is an argument of method='rba'; method='exact' takes none, got {value!r}")
        heads = softmax_attention(q, k, v, max_scores=max_scores, backend=backend)
    else:
        if batch_size is None or rng is None:
            raise ValueError("method='rba' needs batch_size and rng (see random_batch_attention)")
        heads = random_batch_attention(q, k, v, batch_size=batch_size, rng=rng, include_self=include_self,
                                       backend=backend, remainder=remainder, head_partitions=head_partitions)
    n, h, d_v = x.shape[0], wq.shape[0], wv.shape[2]
    concat = np.ascontiguousarray(heads.transpose(1, 0, 2)).reshape(n, h * d_v)
    return concat @ wo.reshape(h * d_v, wo.shape[2])
