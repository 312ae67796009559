"""Command line: ``python -m validation COMMAND`` (also installed as ``particle-attention``).

Commands
--------
``list``
    the registered studies: name, version, THEORY labels, cells in quick/full mode, title.
``run STUDY [--quick|--full] [--store PATH] [--scheduler ADDR] [--workers N] [--seed S] [--no-progress]``
    compute the missing cells of one study into the store (default ``./results.sqlite``),
    then print its verdicts.
``report [STUDY ...] [--store PATH] [--json] [--quick|--full]``
    verdicts of the stored studies, as a table or as JSON.
``reproduce [STUDY ...] [--quick|--full] [--out DIR] [--store PATH] [--workers N] [--scheduler ADDR]``
    run every registered study (or the ones named), write ``DIR/report.txt``,
    ``DIR/report.json`` and the figures (store: ``DIR/results.sqlite``).
``figure [NAME ...] [--store PATH] [--out DIR] [--quick|--full] [--run] [--list] [--format F,F] [--dpi N] [--size W,H]``
    draw figures from the stored results (PNG and PDF by default, and a JSON
    data file with provenance); ``--run`` first computes the cells the figures need.
``export STUDY [--format csv|jsonl|parquet] [--out PATH] [--store PATH] [--quick|--full]``
    the raw records of one study, one row per cell (see :func:`validation.store.records_table`).
``demo [--out DIR] [--full]``
    the RBM-1 strong-order demo (measures and plots in one go).

``run`` and ``reproduce`` default to full mode (paper-size); ``--quick`` takes minutes.
Interrupted runs resume: rerun the same command. Exit status: 0 when every
verdict passes and every cell succeeded; 1 when a verdict fails, a cell fails,
a study is incomplete or a run errors; 2 for bad arguments or an unknown study;
130 after Ctrl-C. Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import time
from pathlib import Path

__all__ = ["main"]

PROG = "python -m validation"
DEFAULT_STORE = "results.sqlite"


class _Usage(Exception):
    """Bad command-line usage (exit status 2)."""


class _Fail(Exception):
    """A run-time error reported in one line (exit status 1)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        """One line, no usage block (argparse's default prints several)."""
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover  (macOS, Windows)
        return max(1, os.cpu_count() or 1)


def _nonneg_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text}")
    return value


def _formats(text):
    from validation.figures._base import check_formats

    try:
        return check_formats(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _dpi(text):
    from validation.figures._base import check_dpi

    try:
        return check_dpi(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _size(text):
    from validation.figures._base import check_size

    try:
        return check_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser():
    parser = _Parser(
        prog=PROG,
        description="Check the particle-attention library against its theorems with numbers: run the studies "
                    "(resumable, on local processes or a Dask cluster), store every cell in a SQLite file, "
                    "report the verdicts.",
        epilog="Exit status: 0 all verdicts pass; 1 a verdict or a cell failed, or an error; 2 bad arguments.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    imports = _Parser(add_help=False)
    imports.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                         help="import MODULE first (a module of your own that registers more studies "
                              "with validation.study.register); repeatable")
    store = _Parser(add_help=False)
    store.add_argument("--store", metavar="PATH", default=None,
                       help=f"results store (SQLite file; default: ./{DEFAULT_STORE})")
    def _modes(parser, default_help):
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--quick", dest="mode", action="store_const", const="quick",
                           help="quick mode: small grids, minutes")
        group.add_argument("--full", dest="mode", action="store_const", const="full", help=default_help)

    runopts = _Parser(add_help=False)
    runopts.add_argument("--workers", type=_nonneg_int, default=_default_workers(), metavar="N",
                         help="local worker processes (default: %(default)s, the usable cores; 0 runs every "
                              "cell in this process)")
    runopts.add_argument("--scheduler", metavar="ADDR", default=None,
                         help="run the cells on a Dask cluster, e.g. tcp://HOST:8786 (needs the 'distributed' "
                              "extra; start workers with --nthreads 1)")
    runopts.add_argument("--seed", type=_nonneg_int, default=0, metavar="S",
                         help="base seed entering every cell's seed (default: %(default)s); one store holds "
                              "one base seed per study")
    runopts.add_argument("--no-progress", dest="progress", action="store_false",
                         help="no progress bar")
    # the mode flags are built per parser: argparse shares a parent's actions (and their defaults) among children
    execution = _Parser(add_help=False, parents=[runopts])
    _modes(execution, "full mode: the paper-size grids (default)")
    execution.set_defaults(mode="full")

    lst = sub.add_parser("list", parents=[imports], help="list the studies",
                         description="List the registered studies: name, version, THEORY labels, number of "
                                     "cells in quick and full mode, title.")
    lst.set_defaults(handler=_cmd_list)

    run = sub.add_parser("run", parents=[execution, store, imports], help="run one study into the store",
                         description="Compute the cells of STUDY that the store does not hold yet (each one is "
                                     "stored as soon as it is finished: an interrupted run resumes), then print "
                                     "the study's verdicts.")
    run.add_argument("study", metavar="STUDY", help="study name (see the list command)")
    run.set_defaults(handler=_cmd_run)

    rep = sub.add_parser("report", parents=[store, imports], help="print the verdicts of stored studies",
                         description="Verdicts of the studies in the store (nothing is recomputed): claim, THEORY "
                                     "label, predicted, measured with its interval, tolerance, PASS/FAIL/info.")
    rep.add_argument("studies", nargs="*", metavar="STUDY", help="studies to report (default: all stored)")
    rep.add_argument("--json", action="store_true", help="print JSON instead of a table")
    rmodes = rep.add_mutually_exclusive_group()
    rmodes.add_argument("--quick", dest="mode", action="store_const", const="quick",
                        help="judge the quick-mode cells")
    rmodes.add_argument("--full", dest="mode", action="store_const", const="full",
                        help="judge the full-mode cells (default: full when complete, else quick)")
    rep.set_defaults(handler=_cmd_report, mode=None)

    rpr = sub.add_parser("reproduce", parents=[execution, imports],
                         help="run every study, write the report and the figures",
                         description="Run every registered study (or the ones named) into OUT/results.sqlite, "
                                     "then write OUT/report.txt, OUT/report.json and the figures. Resumable.")
    rpr.add_argument("studies", nargs="*", metavar="STUDY", help="studies to run (default: every registered one)")
    rpr.add_argument("--out", default="out", metavar="DIR", help="output directory (default: %(default)s)")
    rpr.add_argument("--store", metavar="PATH", default=None,
                     help="results store (default: OUT/results.sqlite)")
    rpr.set_defaults(handler=_cmd_reproduce)

    exp = sub.add_parser(
        "export", parents=[store, imports], help="write the raw records of a study as CSV, JSON lines or Parquet",
        description="Write every stored cell of STUDY (one mode) as one row: study, version, mode, replicate, "
                    "seed, the parameters (params.NAME) and the stored results (result.NAME; nested dicts "
                    "become dotted names), then elapsed, worker, finished_at, package_version. CSV writes numbers "
                    "and lists as JSON text; JSON lines keeps lists as lists; Parquet needs pyarrow (pip install "
                    "'particle-attention[data]'). The fields of each study are listed in the docs' study catalog.")
    exp.add_argument("study", metavar="STUDY", help="study name (see the list command)")
    exp.add_argument("--format", choices=("csv", "jsonl", "parquet"), default=None,
                     help="output format (default: from the suffix of --out, else csv)")
    exp.add_argument("--out", metavar="PATH", default="-",
                     help="output file (default: standard output; parquet needs a file)")
    emodes = exp.add_mutually_exclusive_group()
    emodes.add_argument("--quick", dest="mode", action="store_const", const="quick", help="the quick-mode cells")
    emodes.add_argument("--full", dest="mode", action="store_const", const="full",
                        help="the full-mode cells (default: full when complete, else quick, as report chooses)")
    exp.set_defaults(handler=_cmd_export, mode=None)

    fig = sub.add_parser(
        "figure", parents=[runopts, store, imports], help="draw figures from the stored results",
        description="Draw figures from the results in the store: NAME.png, NAME.pdf (or the formats of --format, "
                    "at --size and --dpi) and NAME.json (the plotted data with provenance) in OUT. Nothing is "
                    "simulated unless --run is given, which first computes (resumably) the cells of the studies "
                    "the figures read; without --run, the store must already hold them (e.g. from reproduce).")
    fig.add_argument("names", nargs="*", metavar="NAME", help="figures to draw (default: every figure)")
    fig.add_argument("--out", default="out", metavar="DIR", help="output directory (default: %(default)s)")
    fig.add_argument("--run", action="store_true", help="first compute the missing cells of the studies needed")
    fig.add_argument("--list", dest="list_only", action="store_true", help="list the figures and their studies")
    fig.add_argument("--format", dest="formats", type=_formats, default="png,pdf", metavar="FMT[,FMT...]",
                     help="file formats, comma-separated, among png, pdf, svg, eps, jpg, tiff (default: %(default)s)")
    fig.add_argument("--dpi", type=_dpi, default=None, metavar="N",
                     help="resolution of the raster formats (png, jpg, tiff) in dots per inch (default: 150)")
    fig.add_argument("--size", type=_size, default=None, metavar="W,H",
                     help="figure size in inches, e.g. 3.4,2.6 for a journal column (default: each figure's own); "
                          "titles and legends are re-broken to fit")
    _modes(fig, "full mode (default: per study, the complete mode in the store, full first; with --run: full)")
    fig.set_defaults(handler=_cmd_figure, mode=None)

    demo = sub.add_parser(
        "demo", help="measure the strong order of RBM-1 in tau (T4) and compare it with the theory",
        description="Measure the strong order of RBM-1 in tau on the confined tanh system for p = 2, 4, 8, print "
                    "measured vs theoretical order with 95% intervals and a verdict, and write "
                    "rbm_strong_order.png/.pdf/.json. Exit status 0 when all verdicts are consistent.")
    demo.add_argument("--out", default="out", metavar="DIR", help="output directory (default: %(default)s)")
    demo.add_argument("--full", action="store_true",
                      help="full size (4x the replicas, one finer level; a few minutes) instead of quick (<1 min)")
    demo.set_defaults(handler=_cmd_demo)
    return parser


# -- helpers -----------------------------------------------------------------------------------------------------

def _err(message: str) -> None:
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)


def _info(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    from validation.runner import _fmt_duration

    return _fmt_duration(seconds)


def _import_modules(modules) -> None:
    if modules:
        _cwd_on_path()
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise _Usage(f"cannot import {name}: {exc}") from None


def _cwd_on_path() -> None:
    """Put the current directory first on sys.path, as ``python -m validation`` does.

    The console script (``particle-attention``) starts with its own directory on sys.path instead, so
    ``--import my_studies`` would not find ``./my_studies.py``. Local worker processes ("spawn") inherit
    sys.path, so they find it too.
    """
    cwd = os.getcwd()
    if not any(p in ("", cwd) or (p and os.path.abspath(p) == cwd) for p in sys.path):
        sys.path.insert(0, cwd)


def _study(name: str):
    from validation.catalog import get_study

    try:
        return get_study(name)  # registered by --import: the built-ins are not loaded
    except KeyError as exc:
        raise _Usage(exc.args[0]) from None


def _all_studies():
    from validation.catalog import all_studies

    return all_studies()


@contextlib.contextmanager
def _executor(args, shared: bool):
    """What run_study gets: a Dask client, "serial", a shared local pool (reproduce) or "local"."""
    from validation.runner import connect_scheduler, local_pool, stop_pool

    if args.scheduler:
        client = connect_scheduler(args.scheduler)
        try:
            yield client
        finally:
            client.close()
    elif args.workers == 0:
        yield "serial"
    elif not shared:
        yield "local"
    else:
        pool = local_pool(args.workers)
        try:
            yield pool
        except BaseException:
            stop_pool(pool)
            raise
        else:
            pool.shutdown(wait=True)


def _report_failures(summary) -> None:
    """The failed cells were listed as they failed (validation.runner); say what to do about them."""
    if summary.failed:
        _info(f"{_plural(summary.failed, 'cell')} of {summary.study} failed (listed above; not stored): "
              "the study is not judged; rerun to retry them")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


# -- commands ----------------------------------------------------------------------------------------------------

def _cmd_list(args) -> int:
    rows = [("study", "version", "quick", "full", "labels", "title")]
    for s in _all_studies():
        counts = []
        for mode in ("quick", "full"):
            try:
                counts.append(str(len(s.cells(mode))))
            except Exception as exc:  # a broken grid should not hide the other studies
                counts.append(f"error ({type(exc).__name__})")
        rows.append((s.name, str(s.version), *counts, ",".join(s.labels) or "-", s.title))
    if len(rows) == 1:
        print("no studies registered")
        return 0
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[5])
    print("\n'quick' and 'full': number of cells (parameter sets x replicates) in each mode.")
    print(f"figures drawn from these studies: {PROG} figure --list")
    return 0


def _cmd_run(args) -> int:
    from validation.report import report
    from validation.runner import run_study
    from validation.store import ResultStore

    study = _study(args.study)
    t0 = time.perf_counter()
    with ResultStore(args.store or DEFAULT_STORE) as store, _executor(args, shared=False) as executor:
        summary = run_study(study, mode=args.mode, store=store, executor=executor, workers=args.workers,
                            base_seed=args.seed, progress=args.progress)
        _info(str(summary))
        _report_failures(summary)
        status = 0 if summary.ok else 1
        if summary.ok:
            rep = report(store, [study.name], mode=args.mode)
            print(rep.text(), end="")
            status = 0 if rep.ok else 1
    _info(f"time taken: {_duration(time.perf_counter() - t0)}; store: {store.path}")
    return status


def _cmd_report(args) -> int:
    from validation.report import report
    from validation.store import ResultStore

    for name in args.studies:
        _study(name)
    with ResultStore(args.store or DEFAULT_STORE, create=False) as store:
        rep = report(store, args.studies or None, mode=args.mode)
    if not rep.studies and not args.json:
        print(f"no results of registered studies in {store.path}")
        for note in rep.notes:
            print(f"note: {note}")
        return 1
    print(rep.json() if args.json else rep.text(), end="\n" if args.json else "")
    return 0 if rep.ok and rep.studies else 1


def _cmd_reproduce(args) -> int:
    from validation.report import report
    from validation.runner import run_study
    from validation.store import ResultStore

    t0 = time.perf_counter()
    studies = [_study(n) for n in dict.fromkeys(args.studies)] if args.studies else _all_studies()
    if not studies:
        raise _Usage("no studies registered")
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _Fail(f"cannot create output directory {out}: {exc.strerror or exc}") from None
    store_path = Path(args.store) if args.store else out / "results.sqlite"
    status = 0
    with ResultStore(store_path) as store:
        with _executor(args, shared=True) as executor:
            for study in studies:
                summary = run_study(study, mode=args.mode, store=store, executor=executor, workers=args.workers,
                                    base_seed=args.seed, progress=args.progress)
                _info(str(summary))
                _report_failures(summary)
                status |= not summary.ok
        rep = report(store, [s.name for s in studies], mode=args.mode)
        (out / "report.txt").write_text(rep.text())
        (out / "report.json").write_text(rep.json() + "\n")
        print(rep.text(), end="")
        status |= not rep.ok
        status |= _figures(store, out, args.mode, [s.name for s in studies])
    _info(f"wrote {out / 'report.txt'} and {out / 'report.json'}; store: {store_path}")
    _info(f"time taken: {_duration(time.perf_counter() - t0)}")
    return int(bool(status))


def _figures(store, out: Path, mode: str, studies: list[str]) -> int:
    """Draw every figure whose studies were run (validation.figures.make_figures); 1 when one failed."""
    from validation.figures import make_figures

    try:
        paths = make_figures(store, out, mode=mode, studies=studies)
    except Exception as exc:  # make_figures listed each failure already
        _err(f"figures failed: {type(exc).__name__}: {exc}")
        return 1
    for p in paths:
        _info(f"figure: {p}")
    if not paths:
        _info("figures: none drawn (no figure reads only the studies that were run; see "
              f"'{PROG} figure --list')")
    return 0


def _cmd_figure(args) -> int:
    from validation.figures import FIGURES, FigureError, draw

    if args.list_only:
        width = max((len(n) for n in FIGURES), default=6)
        for spec in FIGURES.values():
            print(f"{spec.name.ljust(width)}  {', '.join(spec.studies)}\n{'':{width}}  {spec.title}")
        return 0
    names = list(dict.fromkeys(args.names)) or list(FIGURES)
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        raise _Usage(f"unknown figure {unknown[0]!r}; known figures: {', '.join(FIGURES)}")
    store_path = Path(args.store or DEFAULT_STORE)
    status = 0
    if args.run:
        from validation.runner import run_study
        from validation.store import ResultStore

        mode = args.mode or "full"
        needed = list(dict.fromkeys(s for n in names for s in FIGURES[n].studies))
        with ResultStore(store_path) as store, _executor(args, shared=True) as executor:
            for name in needed:
                summary = run_study(_study(name), mode=mode, store=store, executor=executor, workers=args.workers,
                                    base_seed=args.seed, progress=args.progress)
                _info(str(summary))
                _report_failures(summary)
                status |= not summary.ok
        args.mode = mode
    elif not store_path.exists():
        raise _Fail(f"no results store at {store_path}; run the studies first (add --run, or use "
                    f"'{PROG} reproduce') or point --store at one")
    for name in names:
        try:
            paths = draw(name, store_path, args.out, mode=args.mode, formats=args.formats, dpi=args.dpi,
                         size=args.size)
        except FigureError as exc:
            _err(f"figure {name}: {exc}")
            status = 1
            continue
        except Exception as exc:  # a broken plot: one line, and the other figures are still drawn
            _err(f"figure {name} failed: {type(exc).__name__}: {exc}")
            status = 1
            continue
        for p in paths:
            _info(f"figure: {p}")
    return int(bool(status))


def _cmd_export(args) -> int:
    from validation.store import EXPORT_FORMATS, ResultStore, export_records, load_records

    study = _study(args.study)
    fmt = args.format
    if fmt is None:
        suffix = Path(args.out).suffix.lstrip(".").lower() if args.out != "-" else ""
        fmt = {"ndjson": "jsonl", "pq": "parquet"}.get(suffix, suffix) if suffix else "csv"
        if fmt not in EXPORT_FORMATS:
            raise _Usage(f"cannot tell the format from --out {args.out}: give --format "
                         f"({', '.join(EXPORT_FORMATS)})")
    if fmt == "parquet" and args.out == "-":
        raise _Usage("parquet is binary: give --out PATH")
    with ResultStore(args.store or DEFAULT_STORE, create=False) as store:
        mode, records = load_records(store, study, mode=args.mode)
        if not records:
            hint = f"{PROG} run {study.name}" + (" --quick" if mode == "quick" else "")
            raise _Fail(f"no stored cells of {study.name} v{study.version} ({mode} mode) in {store.path}; compute "
                        f"them with: {hint} --store {store.path}")
        target = sys.stdout if args.out == "-" else args.out
        try:
            _, n_rows, n_cols = export_records(store, study, target, format=fmt, mode=mode)
        except ImportError as exc:
            raise _Fail(str(exc)) from None
        except OSError as exc:
            raise _Fail(f"cannot write {args.out}: {exc.strerror or exc}") from None
    where = "standard output" if args.out == "-" else args.out
    _info(f"{study.name} v{study.version} ({mode} mode): {n_rows} cells x {n_cols} columns as {fmt} to {where}")
    return 0


def _cmd_demo(args) -> int:
    from validation.strong_order import run_demo

    result = run_demo(args.out, quick=not args.full)
    return 0 if result.consistent else 1


def main(argv=None):
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    from validation.runner import RunError, RunInterrupted
    from validation.store import StoreError

    try:
        _import_modules(getattr(args, "imports", ()))
        return args.handler(args)
    except _Usage as exc:
        _err(exc)
        return 2
    except (_Fail, StoreError, RunError) as exc:
        _err(exc)
        return 1
    except RunInterrupted as exc:
        _info(f"interrupted: {exc.summary}")
        _info("finished cells are stored; rerun the same command to resume")
        return 130
    except KeyboardInterrupt:
        _info("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
