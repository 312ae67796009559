"""Metadata of every attention estimator, for the documentation table and for the tests.

``REGISTRY`` maps a name to a frozen :class:`EstimatorInfo`. The tests read the
declarations (an estimator declared unbiased is tested for unbiasedness, one
declared biased must show a detectable bias at small size), and the docs
generate their property table from it (see :func:`property_table`).

"Unbiased" and "consistent" refer to the declared ``target``, as the size
parameter (``size_parameter``) grows; a deterministic, exact estimator is
declared unbiased and consistent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType

from attention_theory import estimators as _e

__all__ = ["EstimatorInfo", "REGISTRY", "property_table", "QKV", "EMBEDDINGS"]

_ATTN = "Attn_n = sum_m softmax_m(q_n.k_m) v_m (T7)"
#: The two calling conventions of :attr:`EstimatorInfo.inputs`.
QKV = "q, k, v"
EMBEDDINGS = "x, wq, wk, wv, wo"
_ZHENG = "Zheng, Wang, Kong, Linear complexity randomized self-attention mechanism, ICML 2022 (arXiv 2204.04667)"


@dataclass(frozen=True)
class EstimatorInfo:
    """Declared properties of one estimator.

    Attributes
    ----------
    name : str
    function : callable
        The public function; call it as ``function(q, k, v, **dict(options), **size_kwargs)``.
    target : str
        What it estimates.
    unbiased, consistent : bool
        Declared properties for ``target``.
    randomized : bool
        Whether the output depends on ``rng``.
    size_parameter : str or None
        The keyword that controls accuracy (None for exact or plug-in estimators).
    time, memory : str
        Orders of cost (N queries, M keys, d, dv dimensions).
    reference : str
    equation : str
        Labels in THEORY.md.
    options : tuple of (str, object)
        Fixed keyword arguments defining this variant.
    notes : str
    inputs : str
        The positional arguments: ``"q, k, v"`` (queries, keys, values; the
        default) or ``"x, wq, wk, wv, wo"`` (token embeddings and per-head
        projections, :func:`~attention_theory.estimators.multi_head_attention`).
    """

    name: str
    function: Callable
    target: str
    unbiased: bool
    consistent: bool
    randomized: bool
    size_parameter: str | None
    time: str
    memory: str
    reference: str
    equation: str
    options: tuple = ()
    notes: str = ""
    inputs: str = QKV




_ENTRIES = (
    EstimatorInfo(
        name="softmax",
        function=_e.softmax_attention,
        target=_ATTN,
        unbiased=True,
        consistent=True,
        randomized=False,
        size_parameter=None,
        time="O(N M (d + dv))",
        memory="O(min(N M, max_scores) + N dv)",
        reference="Vaswani et al., Attention is all you need, NeurIPS 2017 (arXiv 1706.03762)",
        equation="T7",
        notes="exact; queries (and, if needed, keys) processed in chunks",
    ),
    EstimatorInfo(
        name="rfa",
        function=_e.rfa,
        target=_ATTN,
        unbiased=False,
        consistent=True,
        randomized=True,
        size_parameter="num_features",
        time="O(S (N + M)(d + dv))",
        memory="O(S (N + M + dv))",
        reference=(
            "Choromanski et al., Rethinking attention with Performers, ICLR 2021 (arXiv 2009.14794); "
            "Peng et al., Random feature attention, ICLR 2021 (arXiv 2103.02143); " + _ZHENG
        ),
        equation="B1, T8-T11, T14-T16",
        notes="positive features: SNIS with proposal N(0, I); trig features: denominators may be <= 0",
    ),
    EstimatorInfo(
        name="randomized_attention",
        function=_e.randomized_attention,
        target=_ATTN,
        unbiased=True,
        consistent=True,
        randomized=True,
        size_parameter="num_samples",
        time="O(R N M (d + dv))",
        memory="O(min(N M, max_scores) + N R (d + dv))",
        reference=_ZHENG,
        equation="B3, T12-T14",
        notes="exact sampling of the target mixture; quadratic",
    ),
    EstimatorInfo(
        name="lara",
        function=_e.lara,
        target=_ATTN,
        unbiased=False,
        consistent=True,
        randomized=True,
        size_parameter="samples_per_proposal",
        time="O(C J (N + M)(d + dv))",
        memory="O(C J (N + M + dv))",
        reference=_ZHENG,
        equation="B4, T17",
        options=(("mode", "sampled"),),
        notes="self-normalised MIS; unbiased with the exact Z_n (normalization='exact')",
    ),
    EstimatorInfo(
        name="lara_deterministic",
        function=_e.lara,
        target=_ATTN,
        unbiased=False,
        consistent=False,
        randomized=False,
        size_parameter=None,
        time="O(C (N + M)(d + dv))",
        memory="O(C (N + M + dv))",
        reference=_ZHENG,
        equation="B4, T17 at w_c = mu_c",
        options=(("mode", "deterministic"),),
        notes="plug-in evaluation at the proposal means (authors' inference mode), not an IS estimate",
    ),
    EstimatorInfo(
        name="random_batch_attention",
        function=_e.random_batch_attention,
        target=_ATTN + " with N == M",
        unbiased=False,
        consistent=True,
        randomized=True,
        size_parameter="batch_size",
        time="O(N p (d + dv))",
        memory="O(N dv + p (d + dv) per group of batches)",
        reference=(
            "Liu, Ma, Jin, Wang, arXiv 2511.06044; partition of Jin, Li, Liu, J. Comput. Phys. 400 (2020) 108877"
        ),
        equation="T18",
        notes=("batch softmax is a ratio estimator (biased); exact at p = N; remainder 'spread' or 'pad' (a lone "
               "token attends to all N); heads (H, N, d) with shared or independent partitions"),
    ),
    EstimatorInfo(
        name="random_batch_sum",
        function=_e.random_batch_sum,
        target="(1/(N-1)) sum_{j != i} exp(q_i.k_j) v_j (T3), see exact_batch_sum_target",
        unbiased=True,
        consistent=True,
        randomized=True,
        size_parameter="batch_size",
        time="O(N p (d + dv))",
        memory="O(N dv + p d per thread)",
        reference="Jin, Li, Liu, J. Comput. Phys. 400 (2020) 108877 (batch-force lemma)",
        equation="T3",
        notes="not in log space: overflows when scores exceed about 709",
    ),
    EstimatorInfo(
        name="multi_head_attention",
        function=_e.multi_head_attention,
        target="MHA(x) = [Attn_1, ..., Attn_H] W_O, Attn_h over x W_Q,h, x W_K,h, x W_V,h (T7 per head)",
        unbiased=True,
        consistent=True,
        randomized=False,
        size_parameter=None,
        time="O(H N^2 (d_k + d_v) + H N d_model (2 d_k + d_v))",
        memory="O(min(N^2, max_scores) + H N (d_k + d_v))",
        reference="Vaswani et al., Attention is all you need, NeurIPS 2017 (arXiv 1706.03762)",
        equation="T7, Part C",
        options=(("method", "exact"),),
        notes="exact; the heads' outputs concatenated, then the output map W_O",
        inputs=EMBEDDINGS,
    ),
    EstimatorInfo(
        name="multi_head_rba",
        function=_e.multi_head_attention,
        target="MHA(x) as multi_head_attention, with N == M",
        unbiased=False,
        consistent=True,
        randomized=True,
        size_parameter="batch_size",
        time="O(H N p (d_k + d_v) + H N d_model (2 d_k + d_v))",
        memory="O(H N (d_k + d_v) + p d_k per thread)",
        reference="Liu, Ma, Jin, Wang, arXiv 2511.06044",
        equation="T18 per head, Part C",
        options=(("method", "rba"),),
        notes="random batch attention in every head (partition shared by the heads, or independent); exact at p = N",
        inputs=EMBEDDINGS,
    ),
)

#: name -> EstimatorInfo (read-only).
REGISTRY = MappingProxyType({e.name: e for e in _ENTRIES})


def property_table():
    """The registry as rows of strings (header first), for the documentation."""
    head = ("estimator", "target", "unbiased", "consistent", "size parameter", "time", "memory", "equations",
            "reference")
    rows = [head]
    for e in REGISTRY.values():
        rows.append((e.name, e.target, "yes" if e.unbiased else "no", "yes" if e.consistent else "no",
                     e.size_parameter or "-", e.time, e.memory, e.equation, e.reference))
    return rows
