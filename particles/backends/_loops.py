"""Source of the compiled loops of the ``cpu`` backend (not imported as such).

These functions are plain Python; :mod:`particles.backends.cpu` compiles
them with ``numba.njit`` after binding the free names below. Binding them
per system family (and per user-defined system) is what lets one loop body
serve every system without a Python call per pair, while the built-in
systems keep an on-disk compilation cache.

The source is split by concept, one module each:

- ``_forces``: the families' per-particle forces and :func:`force_all`;
- ``_perms``: the RBM-1 permutations (``build_perms``), which need no system;
- ``_steps``: noise, Runge-Kutta stages, the update, the drivers
  ``run_batched`` and ``run_rbmr``, the widened batch of a lone particle
  (``lone_force``);
- ``_fast``: the fast path of the built-in componentwise kernels.

They call each other by name: :func:`namespace` merges their globals into
the one namespace they are compiled in, and this module re-exports their
functions for the backends that bind them one by one.

Free names bound at compile time:
  ``kernel_fn``, ``drift_fn``        scalar kernel/drift of a kernel system
  ``prepare_row``, ``member_force``  the family's per-particle routines
  ``HAS_PREPARE``, ``TRANSPOSED_KEYS`` constants: the family has a prepare pass / is attention
  ``pair_fn``, ``pair_const``, ``drift1``, ``drift_const``
                                     componentwise pieces of a built-in kernel (fast path only)
  ``force_all``, ``stage_state``, ... the other functions of these modules
  RNG, batch and kernel helpers from ``particles._rng`` / ``_batches`` / ``_kernels``,
  and ``softmax_step`` from :mod:`particles.device`.

Array conventions: states ``x`` are (R, N, d) float64 (R replicas), the
per-replica permutations ``idx`` are (R, N) int64, the stage derivatives
``K`` are (S, R, N, d), ``work`` is (R, N, W) per-particle scratch (W = d
for kernel systems, 3d for attention: Qx, Kx, Vx; 3dH + d for H heads, see
``particles._layout.attention_work_width``).
"""

from particles.backends import _fast, _forces, _perms, _steps
from particles.backends._fast import (
    FAST_BLOCK,
    SMALL_BATCH,
    block_forces,
    fused_step,
    lone_advance,
    lone_forces,
    phased_forces,
    phased_step,
    run_fast_fused,
    run_fast_phased,
    seg_advance,
    seg_forces,
    seg_gather,
    seg_noise,
    seg_slots,
    seg_step,
    stage_rows,
)
from particles.backends._forces import (
    ATTN_TILE,
    SCORE_BLOCK,
    ZERO_OUT,
    attn_head_force,
    attn_member_force,
    attn_prepare_row,
    attn_tile_force,
    force_all,
    gather_keys,
    kernel_member_force,
    kernel_prepare_row,
    normalise,
    project_tangent,
)
from particles.backends._perms import build_perms, perm_draws, perm_scan, perm_scatter, perm_shuffle, permute_replica
from particles.backends._steps import (
    advance_all,
    advance_particle,
    lone_force,
    particle_noise,
    run_batched,
    run_rbmr,
    save_state,
    stage_all,
    stage_particle,
)

#: The modules of the loop source, in the order their globals are merged by :func:`namespace`.
SOURCES = (_forces, _perms, _steps, _fast)

__all__ = [
    "SOURCES", "namespace", "FAST_BLOCK", "SMALL_BATCH", "ATTN_TILE", "SCORE_BLOCK", "ZERO_OUT",
    "block_forces", "fused_step", "lone_advance", "lone_forces", "phased_forces", "phased_step", "run_fast_fused",
    "run_fast_phased", "seg_advance", "seg_forces", "seg_gather", "seg_noise", "seg_slots", "seg_step", "stage_rows",
    "attn_head_force", "attn_member_force", "attn_prepare_row", "attn_tile_force", "force_all", "gather_keys",
    "kernel_member_force", "kernel_prepare_row", "normalise", "project_tangent",
    "build_perms", "perm_draws", "perm_scan", "perm_scatter", "perm_shuffle", "permute_replica",
    "advance_all", "advance_particle", "lone_force", "particle_noise", "run_batched", "run_rbmr", "save_state",
    "stage_all", "stage_particle",
]


def namespace():
    """A fresh dict of the globals the loop sources are compiled in: every source module's, merged.

    The modules define disjoint names (their shared imports -- ``np``,
    ``prange``, the stream ids -- are the same objects), so the merge order
    does not matter; the compiler binds the free names on top.
    """
    ns = {}
    for module in SOURCES:
        ns.update(vars(module))
    ns["__name__"] = __name__
    return ns
