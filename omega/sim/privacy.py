"""Placeholder replaced below."""
from __future__ import annotations

import argparse


def run_privacy(args: argparse.Namespace) -> int:
    raise NotImplementedError
