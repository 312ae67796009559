"""T3: the batch-force lemma of the random batch method."""

from __future__ import annotations

import itertools

import numpy as np

from attention_theory.symbolic._core import (
    Derivation,
    _lambdify,
    _part,
    _sympy,
)

# --- T3: batch-force lemma ----------------------------------------------------------------------------------


def _build_t3(n, p):
    sp = _sympy()
    if not 3 <= n <= 7:
        raise ValueError(f"n must satisfy 3 <= n <= 7 (the derivation enumerates n! permutations), got {n}")
    if not 2 <= p <= n:
        raise ValueError(f"p must satisfy 2 <= p <= n = {n}, got {p}")
    K = sp.symbols(f"K_1:{n}", real=True)  # K_ij for the n - 1 particles j != i
    Kbar = sum(K) / (n - 1)
    Lam = sum((Kj - Kbar) ** 2 for Kj in K) / (n - 2)
    subsets = list(itertools.combinations(range(n - 1), p - 1))
    chis = [sum(K[j] for j in s) / (p - 1) - Kbar for s in subsets]
    mean = sp.expand(sum(chis) / len(subsets))
    second = sp.expand(sum(c**2 for c in chis) / len(subsets))
    factor = sp.Rational(1, p - 1) - sp.Rational(1, n - 1)
    stated = factor * Lam
    residual = mean + sp.expand(second - stated)

    # The RBM-1 partition: all n! permutations cut into n // p batches ("spread": sizes differing by at most one).
    from particles.batching import batch_bounds

    bounds = batch_bounds(n, p)
    counts: dict = {}
    i = n - 1  # the particle whose batch-mates we follow; the others are 0..n-2, carrying K_1..K_{n-1}
    for perm in itertools.permutations(range(n)):
        pos = perm.index(i)
        bidx = int(np.searchsorted(bounds, pos, side="right")) - 1
        mates = tuple(sorted(perm[bounds[bidx]:bounds[bidx + 1]]))
        mates = tuple(j for j in mates if j != i)
        counts[mates] = counts.get(mates, 0) + 1
    total = sum(counts.values())
    rbm_mean = sp.expand(sum(c * (sum(K[j] for j in m) / len(m) - Kbar) for m, c in counts.items()) / total)
    rbm_second = sp.expand(sum(c * (sum(K[j] for j in m) / len(m) - Kbar) ** 2 for m, c in counts.items()) / total)
    sizes = np.diff(bounds)
    rbm_factor = sum(sp.Rational(int(s), n) * sp.Rational(1, int(s) - 1) for s in sizes) - sp.Rational(1, n - 1)
    residual += rbm_mean + sp.expand(rbm_second - rbm_factor * Lam)

    symbols = tuple(K)
    fn = _lambdify(symbols, stated)

    def vector_function(values):
        """The lemma's E|chi|^2 for values of shape (..., n - 1) (the K_ij, j != i)."""
        values = np.asarray(values, float)
        return fn(*np.moveaxis(values, -1, 0))

    return Derivation(
        label="T3",
        statement=(
            f"N = {n}, p = {p}: E chi = 0 and E chi^2 = (1/(p-1) - 1/(N-1)) Lambda for a uniform (p-1)-subset; "
            "for the RBM-1 partition the factor is E[1/(|C|-1)] - 1/(N-1)"
        ),
        expression=stated,
        symbols=symbols,
        function=fn,
        residual=sp.simplify(residual),
        vector_function=vector_function,
        parts=(
            _part("factor", factor, ()),
            _part("rbm1_factor", rbm_factor, ()),
            _part("Lambda", Lam, symbols),
            _part("rbm1_second_moment", rbm_second, symbols),
        ),
        options=(("n", n), ("p", p)),
    )
