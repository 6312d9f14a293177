"""``omega-node``: one binary for every role, plus operator and TV commands.

  omega-node --role tv|shard|aggregator|hub --config config/ROLE.toml   run a node
  omega-node ctl tree|kill NAME|raft|shard|health|stop                  operate a running node
  omega-node ctl federation [trigger [--release N]]                     federation, per role
  omega-node ctl federation rotate-key [--key-id ID]                    the hub's report key
  omega-node ctl content add FILE                                       the hub's registry
  omega-node health ADDRESS                                             health request over nng
  omega-node tv import-catalog|observe|recommend|status                 talk to a running TV
  omega-node bench quality --data DIR                                   MovieLens quality benchmark
  omega-node local-cluster                                              the main job

Exit codes: 0 ok, 1 runtime failure (including a root supervisor giving up),
2 bad usage or bad config (the message names the file and the key, or the
address already in use).

Only the standard library is imported to parse arguments (``--help`` works
without the engines installed); each command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from omega.blas import one_blas_thread
from omega.config import ROLES, Overrides, Role, load_config
from omega.errors import ConfigError, OmegaError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

_ROLE_HELP = """roles:
  tv          the brain on each TV: embedder, index, LMDB memory, recommender, its local
              API on the control socket (`omega-node tv ...`) and, once provisioned
              (`omega-node tv provision`), its sync agent: sealed co-view reports pushed
              to its shard group, the crowd's releases pulled and merged
  shard       one replica of a 3-node Raft group: takes signed device pushes of sealed
              reports (stored, replicated), serves pulls, forwards shuffled batches of
              >= k devices to its region's aggregator
  aggregator  a shuffler that cannot open reports: mixes its shards' batches, forwards
              them to the hub with only the region label
  hub         a Raft group: opens reports, sums them, adds calibrated noise, publishes
              per-title neighbour lists, popularity, trends and new content (releases)

Secrets come from the environment (or files named in the config's [secrets] table),
never from the TOML. A shard needs OMEGA_FLEET_KEY, OMEGA_DEDUP_SECRET and
OMEGA_RAFT_PASSWORD, a hub OMEGA_RAFT_PASSWORD, each at least 16 bytes (e.g.
`openssl rand -hex 16`); a TV's device key is written by `omega-node tv provision`.
"""

_INSTALL_HINT = (
    "install Omega and its dependencies into a virtualenv and run it from there:\n"
    "  python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/omega-node --help"
)


def _ranged(kind: Callable[[str], float], lo: float, hi: float, what: str
            ) -> Callable[[str], float]:
    """An argparse type: ``kind(text)`` within ``[lo, hi]``, else a usage error (exit 2)."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            noun = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{what} must be {noun}, got {text!r}") from None
        if not (math.isfinite(value) and lo <= value <= hi):
            raise argparse.ArgumentTypeError(f"{what} must be between {lo:g} and {hi:g}, "
                                             f"got {text}")
        return value

    return parse


def _wants(argv: Sequence[str] | None, command: str) -> bool:
    return command in (sys.argv[1:] if argv is None else argv)


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


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
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
    ctl.add_argument("--timeout", type=_ranged(float, 0.1, 3600, "--timeout"), default=5.0,
                     help="seconds to wait for the node, 0.1-3600 (default 5)")
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
    fed = ctl_sub.add_parser(
        "federation",
        help="federation: batches held/forwarded/received, last release, ε spent; "
        "trigger a round now; rotate the hub's report key",
    )
    fed.add_argument("name", nargs="?", default="status",
                     choices=("status", "trigger", "rotate-key"),
                     help="status (default); trigger: forward / mix / release now; "
                     "rotate-key: hub only, a new key pair (the old one opens for key_grace_s)")
    fed.add_argument("--release", type=int, metavar="N",
                     help="trigger on the hub only: the release to make, the one after "
                     "last_release.version in status; asking again for the same N after a "
                     "lost answer does not release (and spend ε) twice")
    fed.add_argument("--key-id", type=int, metavar="ID",
                     help="rotate-key only: the key to make current, the one after "
                     "`current_key` in status; asking again for the same id after a lost "
                     "answer (leader change, timeout) does not rotate twice")
    content = ctl_sub.add_parser("content", help="hub only: the content registry")
    content.add_argument("action", choices=("add",), help="add titles from a file")
    content.add_argument("name", metavar="FILE", type=lambda p: str(Path(p).resolve()),
                         help="JSON lines: {\"id\", \"title\", \"metadata\"?, \"embedding\"?}; "
                         "titles without an embedding are embedded by the hub")
    ctl_sub.add_parser("health", help="the node's health")
    ctl_sub.add_parser(
        "metrics", help="Prometheus metrics in the text format (a TV's only way to show them)"
    )
    ctl_sub.add_parser("stop", help="orderly shutdown, as SIGTERM")

    health = sub.add_parser("health", help="send a health request to a node's listen address")
    health.add_argument("address", help="e.g. tcp://127.0.0.1:7410")
    health.add_argument("--timeout", type=_ranged(float, 0.1, 3600, "--timeout"), default=3.0,
                        help="seconds to wait for the answer, 0.1-3600 (default 3)")

    tv = sub.add_parser(
        "tv",
        help="talk to a running TV node over its local control socket",
        description="Talk to a running TV node (start it first: "
        "omega-node --role tv --config config/tv.toml).",
    )
    tv.add_argument("--config", type=Path, help="the TV's config (to find its control socket)")
    tv.add_argument("--data-dir", type=Path, help="the TV's data dir (control socket inside)")
    tv.add_argument("--control", help="control socket address, e.g. ipc:///path/control.sock")
    tv.add_argument("--timeout", type=_ranged(float, 0.1, 3600, "--timeout"), default=30.0,
                    help="seconds to wait for the TV's answer, 0.1-3600 (default 30)")
    tv_sub = tv.add_subparsers(dest="tv_command", metavar="TV", required=True)
    obs = tv_sub.add_parser("observe", help="record a viewing event",
                            description="Record that the viewer watched a title.")
    obs.add_argument("content_id", help="the title's id in the imported catalog, e.g. 1")
    obs.add_argument("watch_fraction", type=_ranged(float, 0.0, 1.0, "watch_fraction"),
                     help="how much of it was watched, 0.0-1.0 (0.8 or more counts as finished)")
    obs.add_argument("--timestamp", type=_ranged(int, 0, 253_402_300_799, "--timestamp"),
                     default=None, help="when, in Unix seconds (default: now)")
    rec = tv_sub.add_parser(
        "recommend", help="top-k recommendations: rank, title and reason",
        description="The top k unwatched titles, best first: rank, title and why. The order "
        "mixes relevance and variety, so it is the rank that matters, not a score.",
    )
    rec.add_argument("-k", type=_ranged(int, 1, 100, "-k"), default=10,
                     help="how many titles, 1-100 (default 10)")
    rec.add_argument("--timestamp", type=_ranged(int, 0, 253_402_300_799, "--timestamp"),
                     default=None, help="the viewer's time in Unix seconds (default: now)")
    rec.add_argument("--json", action="store_true",
                     help="print JSON lines: rank, content id, title, score, source, reason")
    imp = tv_sub.add_parser(
        "import-catalog", help="import a catalog (MovieLens movies.csv or JSON lines)",
        description="Add or update titles in the TV's catalog; new text is embedded once "
        "(about 3 ms a title). Progress goes to stderr.",
    )
    imp.add_argument("path", type=Path,
                     help="movies.csv (movieId,title,genres) or JSON lines with id and title")
    tv_sub.add_parser("status", help="brain status (catalog size, views, patterns, storage) "
                      "and sync state (last push/pull, queue, backoff, global version, hub key "
                      "id, epsilon today, shard group)")
    prov = tv_sub.add_parser(
        "provision",
        help="write a TV's config and device key (device id, region, shard map, hub keys); "
        "run where the fleet key is, not on the TV",
    )
    prov.add_argument("--out", type=Path, required=True, help="directory for tv.toml + device.key")
    prov.add_argument("--device-id", required=True, help="1-31 of A-Z a-z 0-9 . _ : -")
    prov.add_argument("--region", required=True)
    prov.add_argument("--group", action="append", required=True, metavar="[REGION/]NAME=EPS",
                      help="a shard group: NAME=tcp://h:p,tcp://h:p,... (repeat per group)")
    prov.add_argument("--hub-key-id", type=int, required=True)
    prov.add_argument("--hub-public-key", required=True, help="the hub's X25519 public key, hex")
    prov.add_argument("--hub-verify-key", required=True,
                      help="the hub's Ed25519 verify key, hex: the TV adopts a new hub key only "
                      "if the hub signed it (`ctl federation` on the hub prints all three hub "
                      "options as its `provision` line)")
    prov.add_argument("--fleet-key-env", default="OMEGA_FLEET_KEY",
                      help="environment variable holding the fleet key")
    prov.add_argument("--fleet-key-file", type=Path, help="file holding the fleet key")
    prov.add_argument("--tier", choices=("premium", "active", "casual"), default="active")
    prov.add_argument("--tv-data-dir", type=Path, help="the TV's data dir (default OUT/data)")
    prov.add_argument("--force", action="store_true", help="overwrite an existing provisioning")

    bench = sub.add_parser("bench", help="benchmarks that print figures")
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="BENCH", required=True)
    quality = bench_sub.add_parser(
        "quality", help="MovieLens HR@10/NDCG@10 of the brain vs baselines"
    )
    if _wants(argv, "bench"):  # its options live with the simulator (numpy): loaded when asked
        from omega.sim.cli import add_quality_arguments

        try:
            add_quality_arguments(quality)
        except ModuleNotFoundError as exc:  # say so in its help; running it will say more
            quality.description = f"(its options need the missing package {exc.name!r})"
    privacy = bench_sub.add_parser(
        "privacy", help="replay MovieLens users as TVs through the real report, seal and shard "
        "code; the shard, hub and release adversaries against chance, per privacy setting"
    )
    privacy.add_argument("--data", type=Path, required=True, help="a MovieLens directory")
    privacy.add_argument("--json", action="store_true", help="print the rows as JSON")
    privacy.add_argument("--users", type=int, default=0,
                         help="at most this many users (0: all; more than k, or no batch forms)")
    privacy.add_argument("--days", type=int, default=7, help="days of viewing replayed per TV")
    privacy.add_argument("--seed", type=int, default=0)

    cluster = sub.add_parser(
        "local-cluster",
        help="the main job: a local constellation on 127.0.0.1 (3 shard replicas, an "
        "aggregator, a hub, a real TV, simulated TVs) checked end to end",
    )
    cluster.add_argument(
        "--config",
        type=Path,
        default=None,
        help="cluster description (default: config/local-cluster.toml)",
    )
    cluster.add_argument(
        "--data-dir", type=Path, default=None, help="where the nodes keep their data"
    )
    cluster.add_argument(
        "--base-port", type=_ranged(int, 1024, 65000, "--base-port"), default=None,
        help="move every port: shards base+10.., Raft base+20.., aggregator base+30, "
        "hub base+40 (1024-65000; default from the file: 7400)",
    )
    cluster.add_argument("--keep", action="store_true", help="keep running until Ctrl-C")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(argv)
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
        if args.command == "bench" and args.bench_command == "privacy":
            from omega.sim.privacy import run_privacy

            return run_privacy(args)
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
    except BrokenPipeError:  # `omega-node ... | head`: the reader has gone, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] == "omega":
            raise
        print(f"omega-node: error: the Python package {exc.name!r} is missing; "
              f"{_INSTALL_HINT}", file=sys.stderr)
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


if __name__ == "__main__":
    sys.exit(main())
