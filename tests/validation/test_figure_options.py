"""Figures for papers: formats, resolution and size (``figure --format --dpi --size``), ``validation.figures.plot``,
and a layout that survives resizing (no text outside the canvas at the native size nor at 4 x 3 inches)."""

from __future__ import annotations

import json
import struct
import sys
import types

import numpy as np
import pytest

from tests import _toy_studies as toys
from validation import figures
from validation.__main__ import main
from validation.figures._base import FigureError, _words, _wrap_to, check_dpi, check_formats, check_size, new_figure
from validation.runner import run_study
from validation.store import ResultStore

toys.uninstall()

LONG = ("a deliberately long title with $\\alpha_{i}^{2} + \\beta$ mathematics that is much wider than a small "
        "panel, so that it has to be broken between words to stay inside")


def _crowded_plot(data):
    """Four panels, long titles, a long y label, a figure legend and a suptitle: what the real figures have."""
    d = data["toy_sum"]
    a = np.array([r.params["a"] for r in d.records])
    x = np.array([r.result["x"] for r in d.records])
    fig, axes = new_figure(2, 2, width=8.0, height=6.0)
    for k, ax in enumerate(axes.ravel()):
        ax.plot(a, x + k, "o", label=f"series {k}: the stored x shifted by {k}, with a label long enough to wrap")
        ax.set_title(f"({'abcd'[k]}) {LONG}", loc="left" if k % 2 else "center")
        ax.set_xlabel("parameter $a$ of the toy study (its grid)")
        ax.set_ylabel("stored $x$ of each cell, for every replicate of the quick grid")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center", ncols=3)
    fig.suptitle(f"suptitle: {LONG}")
    return fig, {"a": a, "x": x}


def _single_plot(data):
    """One panel with a long title, a long y label and a legend of long entries below it (like rbm_weak)."""
    d = data["toy_sum"]
    a = np.array([r.params["a"] for r in d.records])
    x = np.array([r.result["x"] for r in d.records])
    fig, ax = new_figure(width=6.4, height=5.4)
    for k in range(3):
        ax.plot(a, x + k, "o-", label=f"series {k}: the stored x of every cell shifted by {k}, slope 0.98 "
                                      "[0.91, 1.10] (verdict)")
    ax.set_title(LONG + "\nsecond line: " + LONG)
    ax.set_ylabel("$|\\mathbb{E}\\,x - a|$, the stored deviation of every cell, T = 1")
    ax.set_xlabel("parameter $a$")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=1)
    return fig, {"a": a}


@pytest.fixture
def crowded(monkeypatch, tmp_path):
    """Registered toy figures 'toy_crowded' (four panels) and 'toy_single', and a store with the toy study."""
    with toys.installed():
        monkeypatch.setattr(figures, "FIGURES", dict(figures.FIGURES))
        for name, fn in (("toy_crowded", _crowded_plot), ("toy_single", _single_plot)):
            mod = types.ModuleType(f"tests._{name}_figure")
            mod.NAME, mod.TITLE, mod.STUDIES, mod.plot = name, f"Toy: {name}", ("toy_sum",), fn
            monkeypatch.setitem(sys.modules, mod.__name__, mod)
            figures.register(mod)
        path = tmp_path / "results.sqlite"
        with ResultStore(path) as store:
            assert run_study("toy_sum", mode="quick", store=store, executor="serial", progress=False).ok
        yield path


def texts_outside(fig, tol_px=1.0):
    """What leaves the canvas (and would be clipped in the file): each axes with everything drawn around it
    (title, labels, tick labels, its legend: ``get_tightbbox``), the figure legends and the suptitle."""
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    W, H = fig.bbox.width, fig.bbox.height
    parts = [(f"axes {k}: {ax.get_title()[:30]!r}", ax.get_tightbbox(renderer)) for k, ax in enumerate(fig.axes)]
    parts += [(f"legend {k}", leg.get_window_extent(renderer)) for k, leg in enumerate(fig.legends)]
    if fig._suptitle is not None:
        parts.append(("suptitle", fig._suptitle.get_window_extent(renderer)))
    return [(what, [round(v) for v in (b.x0, b.y0, b.x1, b.y1)], (round(W), round(H))) for what, b in parts
            if b is not None and (b.x0 < -tol_px or b.y0 < -tol_px or b.x1 > W + tol_px or b.y1 > H + tol_px)]


def _png_size(path):
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


@pytest.mark.parametrize(("plot", "size"), [(_crowded_plot, (6.0, 4.5)), (_single_plot, (4.0, 3.0))])
def test_without_fitting_the_toys_clip(crowded, plot, size):
    """Negative control: the same figures resized *without* the refitting have text outside the canvas."""
    import matplotlib

    from validation.figures._base import _style, load_inputs

    with matplotlib.rc_context(_style()):
        fig, _ = plot(load_inputs(crowded, ["toy_sum"], "quick"))
        fig.set_size_inches(*size)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # constrained layout gives up: that is the point
            assert texts_outside(fig)


@pytest.mark.parametrize(("name", "size"), [("toy_crowded", (6.0, 4.5)), ("toy_single", None),
                                           ("toy_single", (4.0, 3.0)), ("toy_single", (3.4, 2.6))])
def test_plot_fits_every_text_inside_the_canvas(crowded, name, size):
    fig, data = figures.plot(name, crowded, mode="quick", size=size)
    native = (8.0, 6.0) if name == "toy_crowded" else (6.4, 5.4)
    assert tuple(fig.get_size_inches()) == (size or native)
    assert texts_outside(fig) == []
    # still the figure the module drew, its long title broken into lines, nothing dropped
    if name == "toy_crowded":
        assert set(data) == {"a", "x"} and len(fig.axes) == 4
        assert fig.axes[0].get_title().replace("\n", " ") == f"(a) {LONG}"
    else:
        assert fig.axes[0].get_title().replace("\n", " ") == f"{LONG} second line: {LONG}"
        assert len(fig.legends[0].get_texts()) == 3


def test_too_small_is_a_clear_error(crowded):
    with pytest.raises(FigureError, match=r"1 x 1 inches is too small for this figure's 4 panels .*its own size "
                                          r"is 8,6"):
        figures.plot("toy_crowded", crowded, mode="quick", size=(1.0, 1.0))


def test_figure_command_formats_dpi_and_size(crowded, tmp_path, capsys):
    out = tmp_path / "figs"
    assert main(["figure", "toy_single", "--store", str(crowded), "--out", str(out), "--quick",
                 "--format", "png,svg,pdf", "--dpi", "72", "--size", "4,3"]) == 0
    assert {p.name for p in out.iterdir()} == {"toy_single.png", "toy_single.svg", "toy_single.pdf",
                                               "toy_single.json"}
    assert _png_size(out / "toy_single.png") == (288, 216)  # 4 x 3 inches at 72 dpi
    assert (out / "toy_single.svg").read_text().lstrip().startswith("<?xml")
    assert (out / "toy_single.pdf").read_bytes()[:5] == b"%PDF-"
    side = json.loads((out / "toy_single.json").read_text())
    assert side["size_inches"] == [4.0, 3.0] and side["dpi"] == 72.0
    assert side["files"] == ["toy_single.png", "toy_single.svg", "toy_single.pdf"]
    # the defaults: PNG and PDF at the figure's own size, 150 dpi
    assert main(["figure", "toy_single", "--store", str(crowded), "--out", str(tmp_path / "d"), "--quick"]) == 0
    assert _png_size(tmp_path / "d" / "toy_single.png") == (960, 810)
    assert not (tmp_path / "d" / "toy_single.svg").exists()
    capsys.readouterr()
    # bad options: exit status 2, one line naming the option
    for argv, text in ((["--format", "png,bmp"], "argument --format: format must be a comma-separated list"),
                       (["--dpi", "0"], "argument --dpi: dpi must be in [20, 2400]"),
                       (["--size", "4"], "argument --size: size must be WIDTH,HEIGHT in inches"),
                       (["--size", "0.1,3"], "each in [1, 50]")):
        with pytest.raises(SystemExit) as exc:
            main(["figure", "toy_single", "--store", str(crowded), *argv])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and text in err and len(err.strip().splitlines()) == 1, (argv, err)
    # too small: exit status 1, one line, no files
    assert main(["figure", "toy_crowded", "--store", str(crowded), "--out", str(tmp_path / "s"), "--quick",
                 "--size", "1,1"]) == 1
    assert "too small for this figure's 4 panels" in capsys.readouterr().err
    assert not list((tmp_path / "s").glob("*.png"))


def test_option_checks_and_word_breaking():
    assert check_formats("PNG, svg,.pdf,jpeg") == ("png", "svg", "pdf", "jpg")
    assert check_size("3.4,2.6") == (3.4, 2.6) and check_size((4, 3)) == (4.0, 3.0) and check_size(None) is None
    assert check_dpi("300") == 300.0 and check_dpi(None) is None
    for bad, fn in (("", check_formats), ("4,3,2", check_size), ("nan", check_dpi), ("x", check_dpi)):
        with pytest.raises(ValueError):
            fn(bad)
    assert _words("a $x + y$ b  c$z w$") == ["a", "$x + y$", "b", "c$z w$"]  # never inside $...$
    fig, ax = new_figure(width=3.0, height=2.0)
    title = ax.set_title(LONG)
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    assert _wrap_to(title, 150.0, renderer)
    lines = title.get_text().split("\n")
    assert len(lines) > 2 and " ".join(lines) == LONG and "$\\alpha_{i}^{2} + \\beta$" in title.get_text()
    assert not _wrap_to(title, 10_000.0, renderer)  # fits already: unchanged


@pytest.mark.slow
@pytest.mark.parametrize("name", list(figures.FIGURES))
def test_every_figure_fits_at_its_size_and_at_60_percent(name, quick_store):
    """Each built-in figure from the quick records: no text outside the canvas at its own size and at 60% of it
    (a two-column paper figure); 4 x 3 inches fits those with one or two panels."""
    spec = figures.get_figure(name)
    store = quick_store(*spec.studies)
    fig, _ = figures.plot(name, store, mode="quick")
    assert texts_outside(fig) == [], name
    w, h = fig.get_size_inches()
    small, _ = figures.plot(name, store, mode="quick", size=(0.6 * w, 0.6 * h))
    assert texts_outside(small) == [], name
