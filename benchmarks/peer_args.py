"""The arguments every peer script (``peers_*.py``, run in .venv-bench) takes from ``run_peer_script``.

The split Foresight used and where to write, then the protocol's steps: the season, the
horizon H, the stride between cutoffs, and the processes to use.
"""
from __future__ import annotations

import argparse
import os


def peer_parser() -> argparse.ArgumentParser:
    """A parser with the shared arguments; a script adds its own."""
    parser = argparse.ArgumentParser()
    parser.add_argument("split", help="Parquet: unique_id, ds, y, part (train or test)")
    parser.add_argument("out_prefix", help="writes <prefix>.forecasts.parquet and <prefix>.timings.json")
    parser.add_argument("--season", type=int, default=288)
    parser.add_argument("--h", type=int, default=6)
    parser.add_argument("--stride", type=int, default=6)
    parser.add_argument("--n-jobs", type=int, default=os.cpu_count() or 1)
    return parser
