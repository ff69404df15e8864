"""``python -m sanic_feeds.bench SCENARIO ...``: the bench without the server's CLI."""

from __future__ import annotations

import argparse
import sys

from .cli import add_bench_arguments, run_bench


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m sanic_feeds.bench")
    add_bench_arguments(parser)
    return run_bench(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
