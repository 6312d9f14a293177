"""``omega-node``: one binary for every role, plus operator and TV commands.

  omega-node --role tv|shard|aggregator|hub --config config/ROLE.toml   run a node
  omega-node ctl tree|kill NAME|raft|health                             operate a running node
  omega-node health ADDRESS                                             health request over nng
  omega-node tv observe|recommend|import-catalog|status                 talk to a running TV
  omega-node bench quality --data DIR                                   MovieLens quality benchmark
  omega-node local-cluster                                              the main job

Exit codes: 0 ok, 1 runtime failure (including a root supervisor giving up),
2 bad usage or bad config (the message names the file and the key).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from omega.blas import one_blas_thread
from omega.config import ROLES, Overrides, Role, load_config
from omega.errors import ConfigError, OmegaError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

_ROLE_HELP = """roles:
  tv          the brain on each TV: embedder, index, LMDB memory, recommender, local API
  shard       one replica of a 3-node Raft group taking device pushes and serving pulls
  aggregator  sums shard summaries for a region
  hub         global consolidation: DP release, neighbour lists, trends, content registry
"""


def _add_node_flags(p: argparse.ArgumentParser, *, with_role: bool) -> None:
    if with_role:
        p.add_argument("--role", choices=ROLES, help="which node to run (see roles below)")
    p.add_argument("--config", type=Path, help="TOML config file for the role (default: built-in)")
    p.add_argument("--data-dir", type=Path, help="override [node] data_dir")
    p.add_argument("--listen", help="override [node] listen, e.g. tcp://127.0.0.1:7410")
    p.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        help="override [node] log_level",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="omega-node",
        description="Omega: edge-first recommendations for smart TVs. One binary, four roles.",
        epilog=_ROLE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_node_flags(parser, with_role=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    ctl = sub.add_parser("ctl", help="operate a running node over its local control socket")
    ctl.add_argument("--role", choices=ROLES, default=None, help="role of the node's config")
    ctl.add_argument("--config", type=Path, help="the node's config (to find its control socket)")
    ctl.add_argument("--data-dir", type=Path, help="the node's data dir (control socket inside)")
    ctl.add_argument("--control", help="control socket address, e.g. ipc:///path/control.sock")
    ctl.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the node")
    ctl_sub = ctl.add_subparsers(dest="ctl_command", metavar="CTL", required=True)
    ctl_sub.add_parser("tree", help="supervision tree: names, state, restart counts")
    kill = ctl_sub.add_parser(
        "kill", help="kill an actor abnormally (chaos); its supervisor restarts it"
    )
    kill.add_argument("name", help="actor name or dotted path, as shown by `ctl tree`")
    ctl_sub.add_parser(
        "raft", help="shard only: Raft role, term, leader, commit/applied index, log, snapshot"
    )
    ctl_sub.add_parser("shard", help="shard only: sync service counters (pushes, group commit)")
    ctl_sub.add_parser("health", help="the node's health")
    ctl_sub.add_parser(
        "metrics", help="Prometheus metrics in the text format (a TV's only way to show them)"
    )
    ctl_sub.add_parser("stop", help="orderly shutdown, as SIGTERM")

    health = sub.add_parser("health", help="send a health request to a node's listen address")
    health.add_argument("address", help="e.g. tcp://127.0.0.1:7410")
    health.add_argument("--timeout", type=float, default=3.0)

    tv = sub.add_parser("tv", help="talk to a running TV node over its local socket")
    tv.add_argument("--config", type=Path, help="the TV's config (to find its control socket)")
    tv.add_argument("--data-dir", type=Path, help="the TV's data dir (control socket inside)")
    tv.add_argument("--control", help="control socket address")
    tv.add_argument("--timeout", type=float, default=30.0)
    tv_sub = tv.add_subparsers(dest="tv_command", metavar="TV", required=True)
    obs = tv_sub.add_parser("observe", help="record a viewing event")
    obs.add_argument("content_id")
    obs.add_argument("watch_fraction", type=float)
    obs.add_argument("--timestamp", type=int, default=None, help="unix seconds (default: now)")
    rec = tv_sub.add_parser("recommend", help="top-k recommendations with reasons")
    rec.add_argument("-k", type=int, default=10)
    rec.add_argument("--timestamp", type=int, default=None)
    imp = tv_sub.add_parser(
        "import-catalog", help="import a catalog (MovieLens movies.csv or JSON lines)"
    )
    imp.add_argument("path", type=Path)
    tv_sub.add_parser("status", help="brain status")

    bench = sub.add_parser("bench", help="benchmarks that print figures")
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="BENCH", required=True)
    quality = bench_sub.add_parser(
        "quality", help="MovieLens HR@10/NDCG@10 of the brain vs baselines"
    )
    from omega.sim.cli import add_quality_arguments

    add_quality_arguments(quality)

    cluster = sub.add_parser("local-cluster", help="run a local constellation with simulated TVs")
    cluster.add_argument(
        "--config",
        type=Path,
        default=None,
        help="cluster description (default: config/local-cluster.toml)",
    )
    cluster.add_argument(
        "--data-dir", type=Path, default=None, help="where the nodes keep their data"
    )
    cluster.add_argument("--keep", action="store_true", help="keep running until Ctrl-C")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command is None:
            if args.role is None:
                parser.print_help(sys.stderr)
                print("\nomega-node: error: --role is required to run a node", file=sys.stderr)
                return EXIT_USAGE
            return _run_node(args)
        if args.command == "ctl":
            from omega.ops.ctl import run_ctl

            return run_ctl(args)
        if args.command == "health":
            from omega.ops.ctl import run_health

            return run_health(args)
        if args.command == "tv":
            from omega.ops.tvcli import run_tv

            return run_tv(args)
        if args.command == "bench":
            from omega.sim.cli import run_quality

            return run_quality(args)
        if args.command == "local-cluster":
            from omega.sim.cluster import run_local_cluster

            return run_local_cluster(args)
    except ConfigError as exc:
        print(f"omega-node: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OmegaError as exc:
        print(f"omega-node: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE
    parser.error(f"unknown command {args.command!r}")
    return EXIT_USAGE


def _run_node(args: argparse.Namespace) -> int:
    role: Role = args.role
    one_blas_thread()  # before numpy loads
    overrides = Overrides(data_dir=args.data_dir, listen=args.listen, log_level=args.log_level)
    cfg = load_config(role, args.config, overrides)
    from omega.node import run_node

    return run_node(cfg)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


if __name__ == "__main__":
    sys.exit(main())
