"""The cost study at graph scale: RBA to 2**20 tokens in full mode, the dense score memory in the details."""

from __future__ import annotations

from validation.studies import cost
from validation.study import Record, get_study

STUDY = "cost_scaling"


def test_rba_runs_to_2_20_tokens_in_full_mode_and_quick_mode_is_unchanged():
    study = get_study(STUDY)
    full = [p["n"] for p in study.grid("full") if p["kind"] == "rba"]
    quick = [p["n"] for p in study.grid("quick") if p["kind"] == "rba"]
    assert full == [4096, 8192, 16384, 32768, 65536, 131072, 262144, 524288, 1048576]
    assert quick == [1024, 2048, 4096, 8192, 16384]  # CI runs the quick grid: kept as small as before


def test_dense_score_bytes_is_n_squared_float64():
    assert cost.dense_score_bytes(1024) == 8 * 1024 * 1024
    assert cost.dense_score_bytes(2**20) == 8 * 2**40  # 8 TiB


def _fake_records(kind, ns, peak_per_token):
    out = []
    for n in ns:
        res = {"seconds": 1e-6 * n, "seconds_all": [1e-6 * n] * 3, "cpu_seconds": 1e-6 * n,
               "cpu_seconds_all": [1e-6 * n] * 3, "cpu_per_wall": 1.0,
               "unit": "call" if cost.KINDS[kind]["group"] == "attention" else "step",
               "peak_bytes": peak_per_token * n}
        out.append(Record(params={"kind": kind, "n": n, "repeats": 3}, replicate=0, seed=0, result=res))
    return out


def test_memory_verdicts_of_attention_carry_the_dense_score_memory():
    ns = [2**k for k in range(12, 21)]
    records = _fake_records("rba", ns, 600) + _fake_records("rbm1", ns, 50)
    verdicts = get_study(STUDY).verdicts(records, "full")
    memory = {v.details["kind"]: v for v in verdicts if v.claim.startswith("peak-memory")}
    assert memory["rba"].details["dense_score_bytes"] == [8 * n * n for n in ns]
    assert memory["rba"].details["peak_bytes"] == [600 * n for n in ns]
    assert memory["rba"].passed is True
    assert "dense_score_bytes" not in memory["rbm1"].details  # particles: no score matrix to compare with
