"""Command-line interface: ``python -m validation demo [--out DIR] [--full]``.

Exit status 0 when every verdict is consistent with the theory, 1 otherwise
(2 for bad arguments, from argparse). A fuller CLI (studies, figures,
reports) comes later.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m validation",
        description="Check the particle-attention library against its theorems with numbers.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser(
        "demo", help="measure the strong order of RBM-1 in tau (T4) and compare it with the theory",
        description="Measure the strong order of RBM-1 in tau on the confined tanh system for p = 2, 4, 8, print "
                    "measured vs theoretical order with 95%% intervals and a verdict, and write "
                    "rbm_strong_order.png/.pdf/.json. Exit status 0 when all verdicts are consistent.")
    demo.add_argument("--out", default="out", metavar="DIR", help="output directory (default: %(default)s)")
    demo.add_argument("--full", action="store_true",
                      help="full size (4x the replicas, one finer level; a few minutes) instead of quick (<1 min)")
    return parser


def main(argv=None):
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from validation.strong_order import run_demo

        result = run_demo(args.out, quick=not args.full)
        return 0 if result.consistent else 1
    return 2  # pragma: no cover  (argparse rejects unknown commands)


if __name__ == "__main__":
    sys.exit(main())
