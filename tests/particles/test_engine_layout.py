"""Parameter layouts (``particles._layout``), permutations compiled on their own, the ``rng`` contract."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from particles import _layout, _validate, initial, systems


def test_builtin_systems_pack_their_named_layouts():
    t = systems.confined_tanh(r=1.5, L=0.25)
    assert t.params[_layout.MODEL] == _layout.MODEL_TANH
    assert (t.params[_layout.TANH_R], t.params[_layout.TANH_L]) == (1.5, 0.25)
    dy = systems.dyson(eps=0.01)
    assert dy.params[_layout.MODEL] == _layout.MODEL_DYSON and dy.params[_layout.DYSON_EPS] == 0.01
    assert_array_equal(t.params, [0.0, 1.5, 0.25])  # the stored vector itself: the on-disk caches key on it
    assert_array_equal(dy.params, [1.0, 0.01])


def test_attention_layout_round_trips():
    Q = np.arange(4.0).reshape(2, 2)
    V = -np.eye(2)
    sa = systems.attention(1.25, "USA", Q=Q, V=V)
    assert_array_equal(sa.params, [1.25, 1.0, 1.0, 0.0, 0, 1, 2, 3, 1, 0, 0, 1, -1, 0, 0, -1])
    f = _layout.unpack_attention(sa.params, 2)
    assert (f.beta, f.norm, f.include_self, f.identity) == (1.25, _layout.ATTN_MEAN, 1.0, 0.0)
    assert_array_equal(f.Q, Q)
    assert_array_equal(f.K, np.eye(2))
    assert_array_equal(f.V, V)
    ident = systems.attention(0.5, "SA")
    assert_array_equal(ident.params, [0.5, _layout.ATTN_SOFTMAX, 1.0, 1.0])
    g = _layout.unpack_attention(ident.params, 3)
    assert g.identity == 1.0 and g.Q is None and g.K is None and g.V is None


def test_drawing_a_partition_compiles_no_system_loops():
    code = ("import particles\n"
            "from particles.backends import cpu\n"
            "p = particles.partition(100, 7, seed=3, step=2)\n"
            "assert not cpu._families, cpu._families\n"
            "print(p.perm[:5].tolist())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    from particles.backends import reference

    assert out.strip() == str(reference.permutation(3, 0, 2, 100)[:5].tolist())


def test_rng_contract_accepts_four_kinds():
    gen = np.random.default_rng(3)
    assert _validate.as_generator(gen) is gen
    a = _validate.as_generator(5).standard_normal(3)
    assert_array_equal(a, np.random.default_rng(5).standard_normal(3))
    assert_array_equal(_validate.as_generator(np.uint64(2**64 - 1)).integers(9, size=4),
                       np.random.default_rng(2**64 - 1).integers(9, size=4))
    ss = np.random.SeedSequence(11)
    assert_array_equal(_validate.as_generator(ss).standard_normal(2),
                       np.random.default_rng(np.random.SeedSequence(11)).standard_normal(2))
    assert isinstance(_validate.as_generator(None, allow_none=True), np.random.Generator)
    # initial states: the same bits as NumPy's generator seeded the same way
    assert_array_equal(initial.gaussian(4, 2, rng=8), np.random.default_rng(8).standard_normal((4, 2)))


@pytest.mark.parametrize("bad", [None, 1.0, "3", True, np.random.RandomState(0), np.random.PCG64(0), [1, 2]])
def test_rng_contract_refuses_other_types(bad):
    with pytest.raises(TypeError, match=r"^rng must be a non-negative int seed, a numpy.random.SeedSequence or a "
                                        r"numpy.random.Generator, got "):
        _validate.as_generator(bad)


def test_rng_contract_ranges_and_none():
    for bad in (-1, 2**64):
        with pytest.raises(ValueError, match=r"^rng, as an int seed, must satisfy 0 <= rng < 2\*\*64, got "):
            _validate.as_generator(bad)
    with pytest.raises(TypeError, match=r"^rng must be None, a non-negative int seed"):
        initial.uniform_sphere(3, 2, rng=1.5)
    import attention_theory._validate as av

    with pytest.raises(TypeError, match=r"^rng must be a non-negative int seed"):
        av.as_generator(None)
    assert av.seed_from(7) == 7
    assert av.seed_from(np.random.default_rng(1)) == int(np.random.default_rng(1).integers(2**63))
