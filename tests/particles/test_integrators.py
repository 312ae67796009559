"""The Runge-Kutta tableaux on ``particles.integrators.Scheme`` satisfy the order conditions of their declared order.

The conditions are the classical ones for explicit methods (Butcher), up to order 4, written out here from the
rooted trees; the next bushy-tree condition b . c^order = 1/(order + 1) must fail, so the declared order is not
understated.
"""

from __future__ import annotations

import numpy as np
import pytest

from particles import integrators


def _conditions(A, b):
    c = A.sum(axis=1)
    return {
        1: [(b.sum(), 1.0)],
        2: [(b @ c, 1 / 2)],
        3: [(b @ c**2, 1 / 3), (b @ A @ c, 1 / 6)],
        4: [(b @ c**3, 1 / 4), (b @ (c * (A @ c)), 1 / 8), (b @ A @ c**2, 1 / 12), (b @ A @ A @ c, 1 / 24)],
    }


@pytest.mark.parametrize("name", sorted(integrators.SCHEMES))
def test_tableau_has_its_declared_order(name):
    scheme = integrators.SCHEMES[name]
    A, b = scheme.tableau()
    assert A.shape == (scheme.stages, scheme.stages) and b.shape == (scheme.stages,)
    assert np.all(np.triu(A) == 0.0)  # explicit
    conds = _conditions(A, b)
    for order in range(1, scheme.order + 1):
        for got, want in conds[order]:
            assert got == pytest.approx(want, abs=1e-15), (name, order)
    c = A.sum(axis=1)
    assert abs(b @ c**scheme.order - 1 / (scheme.order + 1)) > 1e-3  # order + 1 fails


def test_classical_coefficients():
    A, b = integrators.RK4.tableau()
    np.testing.assert_array_equal(A.sum(axis=1), [0.0, 0.5, 0.5, 1.0])
    np.testing.assert_array_equal(b * 6, [1.0, 2.0, 2.0, 1.0])
    A, b = integrators.HEUN.tableau()
    np.testing.assert_array_equal(A, [[0.0, 0.0], [1.0, 0.0]])
    np.testing.assert_array_equal(b, [0.5, 0.5])
