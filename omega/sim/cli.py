"""``omega-node bench quality``: argument wiring only; the runner is omega.sim.quality."""

from __future__ import annotations

import argparse


def add_quality_arguments(parser: argparse.ArgumentParser) -> None:
    from omega.sim.quality import add_arguments

    add_arguments(parser)


def run_quality(args: argparse.Namespace) -> int:
    from omega.sim.quality import run_from_args

    return run_from_args(args)
