"""Cost: wall time and peak memory vs N, attention estimators and particle steps (study ``cost_scaling``).

Four log-log panels: (a) time per call of exact softmax attention, RBA, LARA
and RFA; (b) time per step of the full and the RBM-1 step; (c), (d) their peak
traced memory. The best of the timed repeats is the marker and line, every
repeat a faint dot (their spread shows how noisy the machine was). Legends
carry the fitted exponents with their 95% intervals, taken from the study's
verdicts (so the figure and the report agree); grey lines of slope 1 and 2 are
references. The footer names the machine, the threads and the mode: these are
measurements of one machine, not deterministic results.
"""

from __future__ import annotations

import numpy as np

from validation.figures._base import PALETTE, new_figure

NAME = "cost"
TITLE = "Cost: time and peak memory vs N (exact, RBA, LARA, RFA; full vs RBM-1 step)"
STUDIES = ("cost_scaling",)

_MARKERS = {"exact": "o", "rba": "s", "lara": "^", "rfa": "D", "full": "o", "rbm1": "s"}
_COLOURS = {"exact": PALETTE[0], "rba": PALETTE[1], "lara": PALETTE[2], "rfa": PALETTE[3],
            "full": PALETTE[0], "rbm1": PALETTE[1]}
_MIB = 2.0**20


#: Timed calls during which the process had a core for less than this fraction of the wall time are drawn hollow.
BUSY = 0.8


def _legend_text(label, v, what):
    lo, hi = v.interval
    if what == "time":  # two lines: the panels are narrow
        cpu = v.details.get("cpu_fit")
        cpu_text = f", CPU {cpu['slope']:.2f}" if cpu else ""
        return f"{label} (expected {v.predicted:g}):\nwall {v.measured:.2f} [{lo:.2f}, {hi:.2f}]{cpu_text}"
    return f"{label}: {v.measured:.2f} [{lo:.2f}, {hi:.2f}] (expected {v.predicted:g})"


def _verdicts_by_kind(data):
    out = {}
    for v in data.verdicts():
        what = "time" if v.claim.startswith("time exponent") else "memory"
        out.setdefault(v.details["kind"], {})[what] = v
    return out


def _range(values, fmt="{:g}"):
    values = sorted(set(values))
    if not values:
        return "?"
    return fmt.format(values[0]) if len(values) == 1 else f"{fmt.format(values[0])}-{fmt.format(values[-1])}"


def machine_summary(records):
    """One line on where and how the cells ran (CPU, cores, threads, load), from the stored records."""
    machines = [r.result["machine"] for r in records]
    cpus = sorted({m["cpu"] for m in machines})
    logical = _range([m["logical_cpus"] for m in machines if m.get("logical_cpus")])
    hosts = {m["host"] for m in machines}
    numba = _range([r.result["threads"]["numba"] for r in records])
    blas_values = [t for r in records for t in (r.result["threads"]["blas"] or {}).values()]
    blas = _range(blas_values) if blas_values else "not controlled"
    loads = [x for m in machines for key in ("load_average_start", "load_average_end")
             for x in (m.get(key) or [])[:1]]
    load = _range(loads, "{:.1f}") if loads else "?"
    where = f"{len(hosts)} hosts, " if len(hosts) > 1 else ""
    return (f"{where}{' / '.join(cpus)}, {logical} logical CPUs; threads per cell: Numba {numba}, BLAS {blas}; "
            f"1-min load average during the cells {load}")


def _panel(ax, series, verdicts, kinds, key, scale, what):
    for kind in kinds:
        if kind not in series:
            continue
        s = series[kind]
        n = np.asarray(s["n"], dtype=float)
        colour, marker = _COLOURS[kind], _MARKERS[kind]
        v = verdicts[kind][what]
        label = _legend_text(s["label"], v, what)
        y = np.asarray(s[key], dtype=float) / scale
        ax.plot(n, y, marker=marker, color=colour, label=label, zorder=3)
        if what == "time":
            for ni, reps in zip(n, s["seconds_all"]):
                ax.plot(np.full(len(reps), ni), reps, ".", color=colour, alpha=0.35, ms=3, zorder=1)
            busy = np.asarray(s["cpu_per_wall"]) < BUSY
            if busy.any():  # hollow markers on top: the timed calls waited for a core
                ax.plot(n[busy], y[busy], ls="none", marker=marker, mfc="white", mec=colour, zorder=4)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")


def _reference(ax, series, kinds, key, scale, slope, **kw):
    """A grey line of ``slope`` below every point of ``kinds`` (by a factor 2), over their range of N."""
    pts = [(n, y / scale) for k in kinds if k in series for n, y in zip(series[k]["n"], series[k][key])]
    if not pts:
        return None
    x, y = np.array(pts, dtype=float).T
    anchor = float(np.min(y / x**slope)) / 2.0
    xs = np.array([x.min(), x.max()])
    return ax.plot(xs, anchor * xs**slope, color="0.2", lw=1.0, zorder=2, **kw)[0]


def _references(ax, series, quadratic, linear, key, scale):
    _reference(ax, series, quadratic, key, scale, 2.0, ls="--", label="slope 2 (reference)")
    _reference(ax, series, linear, key, scale, 1.0, ls=":", label="slope 1 (reference)")


def _dense_scores(ax, verdicts):
    """The 8 N^2 bytes of the dense score matrix at RBA's sizes, as the study computed them (never allocated)."""
    v = verdicts.get("rba", {}).get("memory")
    if v is None or "dense_score_bytes" not in v.details:
        return None
    n = np.asarray(v.details["n"], dtype=float)
    dense = np.asarray(v.details["dense_score_bytes"], dtype=float)
    ax.plot(n, dense / _MIB, color="0.45", ls="-.", lw=1.2, zorder=2,
            label=f"dense N x N scores (computed): {dense[-1] / 2**30:.3g} GiB at N = {int(n[-1])}")
    return {"n": n, "bytes": dense}


def plot(data):
    d = data["cost_scaling"]
    series = d.study.series(d.records)
    verdicts = _verdicts_by_kind(d)
    series = {k: s for k, s in series.items() if k in verdicts}  # kinds with a fit (>= 3 sizes)
    attention = [k for k, s in series.items() if s["group"] == "attention"]
    steps = [k for k, s in series.items() if s["group"] == "particles"]

    fig, axes = new_figure(2, 2, width=7.6, height=9.6)
    (a_time, p_time), (a_mem, p_mem) = axes
    _panel(a_time, series, verdicts, attention, "seconds", 1.0, "time")
    _panel(p_time, series, verdicts, steps, "seconds", 1.0, "time")
    _panel(a_mem, series, verdicts, attention, "peak_bytes", _MIB, "memory")
    _panel(p_mem, series, verdicts, steps, "peak_bytes", _MIB, "memory")
    linear = [k for k in attention if series[k]["time_exponent"] == 1.0]
    _references(a_time, series, ["exact"], linear, "seconds", 1.0)
    _references(p_time, series, ["full"], ["rbm1"], "seconds", 1.0)
    _references(a_mem, series, ["exact"], linear, "peak_bytes", _MIB)
    _references(p_mem, series, [], steps, "peak_bytes", _MIB)
    dense = _dense_scores(a_mem, verdicts)

    a_time.set_title("(a) attention: wall time per call (d = 64)")
    p_time.set_title("(b) particles: wall time per step (tanh, d = 3)")
    a_mem.set_title("(c) attention: peak memory per call")
    p_mem.set_title("(d) particles: peak memory per call")
    for ax in (a_time, a_mem):
        ax.set_xlabel("N (queries = keys)")
    for ax in (p_time, p_mem):
        ax.set_xlabel("N (particles)")
    a_time.set_ylabel("time per call [s]")
    p_time.set_ylabel("time per step [s]")
    a_mem.set_ylabel("peak traced memory [MiB]")
    p_mem.set_ylabel("peak traced memory [MiB]")
    for ax in axes.ravel():  # below the axes: inside, the legends would cover the data of the upper left
        if not ax.get_legend_handles_labels()[0]:  # a partial store: nothing of this family
            continue
        time_panel = ax in (a_time, p_time)
        title = ("fitted exponent of the wall time [95% CI], of the CPU time" if time_panel
                 else "fitted exponent [95% CI]")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), title=title, title_fontsize=7.5)

    repeats = sorted({r.params["repeats"] for r in d.records})
    machine = machine_summary(d.records)
    fig.supxlabel(f"{machine}\n{d.mode} mode: best of {'/'.join(map(str, repeats))} timed calls after a warm-up "
                  "call (dots: every repeat; hollow: the process had a core for less than "
                  f"{BUSY:.0%} of the timed wall time)\nmemory: tracemalloc peak of one call, output included, "
                  "inputs excluded", fontsize=7, color="0.3")

    plotted = {}
    for kind, s in series.items():
        vt, vm = verdicts[kind]["time"], verdicts[kind]["memory"]
        plotted[kind] = {
            "label": s["label"], "group": s["group"], "unit": s["unit"], "n": s["n"],
            "seconds": s["seconds"], "seconds_all": s["seconds_all"], "peak_bytes": s["peak_bytes"],
            "cpu_per_wall": s["cpu_per_wall"],
            "cpu_seconds": s["cpu_seconds"],
            "time_exponent": {"measured": vt.measured, "interval": list(vt.interval), "predicted": vt.predicted,
                              "cpu_time_exponent": (vt.details.get("cpu_fit") or {}).get("slope")},
            "memory_exponent": {"measured": vm.measured, "interval": list(vm.interval), "predicted": vm.predicted,
                                "passed": vm.passed},
        }
    return fig, {"mode": d.mode, "machine": machine, "kinds": plotted, "dense_scores": dense}
