"""The TV brain's latency and memory (BENCHMARKS.md §2), as ratios measured interleaved.

Run: .venv/bin/python bench/brain.py [--iterations 200] [--json] [--data-dir DIR]

Builds a brain with a 10,000-title catalog (MovieLens ml-latest-small's 9,742 titles
padded with synthetic ones) embedded by its own embedder, and 10,000 stored
patterns; then, in one thread, each iteration runs every operation once in a
shuffled order, so that all of them share the machine's noise:

- ``observe`` (durability "sync": fsync per view) and ``recommend(k=10)``;
- one short text through the brain's embedder;
- the same text through the shipped model run as is with onnxruntime directly
  (the shipped ``tokenizer.json`` pads to 128 tokens), on one thread (the
  reference of the goals); with onnxruntime's default threads it is timed
  alone after the loop (its spinning thread pool would slow the others);
- HNSW search (k=10) over the catalog vectors (omega.index, the brain's index
  settings) with profile-like queries, and numpy brute force over the same
  matrix (through BLAS and with einsum, one thread; the goal uses the faster);
  recall@10 of HNSW;
- the same index and brute force over 10,000 clustered synthetic vectors, the kind
  BENCHMARKS.md's reference figures were measured on (printed, not a goal).

The RSS goal is read in a separate process that is only a TV brain (open the
built data directory with the model, 300 views and lists): this process also
holds the reference sessions and the benchmark's own copies. Goals (PASS/FAIL):

    recommend p99 <= 1.5 x bare embedding p99      observe p99 <= 1.5 x bare p99
    brain embedder p99 <= 0.5 x bare p99           HNSW p99 <= 0.25 x brute p99,
    steady RSS <= 200 MB                           at recall@10 >= 0.98
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from omega.blas import one_blas_thread  # noqa: E402

# As BENCHMARKS.md §2 asks and omega-node does: OpenBLAS's second thread spun after
# each call and stole 4-5 ms from whatever this loop timed next.
one_blas_thread()

import numpy as np  # noqa: E402

from omega import Brain, Content, ViewingEvent  # noqa: E402
from omega.brain.settings import BrainSettings  # noqa: E402
from omega.index import create_index  # noqa: E402

MOVIES = ROOT.parent / "shared" / "data" / "ml-latest-small" / "movies.csv"
SHORT_TEXT = "Heat (1995). Genres: Action, Crime, Thriller"
N_ITEMS = 10_000
N_PATTERNS = 10_000
T0 = 1_700_000_000


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def pct(samples: list[float]) -> tuple[float, float]:
    a = np.asarray(samples) * 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def catalog(path: Path) -> list[Content]:
    items: list[Content] = []
    with open(path, encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            genres = tuple(g for g in row["genres"].split("|") if g != "(no genres listed)")
            items.append(Content(id=f"m{row['movieId']}", title=row["title"], genres=genres))
    rng = random.Random(7)
    words = ["Night", "River", "Last", "City", "Dream", "Storm", "Secret", "Road", "King",
             "Summer", "Ghost", "Blue", "War", "Love", "Island", "Star"]
    genres_all = ["Action", "Comedy", "Drama", "Thriller", "Romance", "Horror", "Sci-Fi",
                  "Documentary", "Animation", "Crime"]
    i = 0
    while len(items) < N_ITEMS:
        title = " ".join(rng.sample(words, 3))
        items.append(Content(id=f"s{i}", title=title, year=rng.randint(1950, 2023),
                             genres=tuple(rng.sample(genres_all, rng.randint(1, 3)))))
        i += 1
    return items


class BareOnnx:
    """The shipped model and tokenizer exactly as shipped, through onnxruntime directly."""

    def __init__(self, threads: int | None) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        from omega.brain.onnx_embedder import default_model_path, default_tokenizer_path

        self.tokenizer = Tokenizer.from_file(str(default_tokenizer_path()))  # pads to 128
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = threads
        self.session = ort.InferenceSession(str(default_model_path()[0]), options,
                                            providers=["CPUExecutionProvider"])

    def embed(self, text: str) -> np.ndarray:
        enc = self.tokenizer.encode(text)
        ids = np.asarray([enc.ids], dtype=np.int64)
        mask = np.asarray([enc.attention_mask], dtype=np.int64)
        out = self.session.run(None, {"input_ids": ids, "attention_mask": mask,
                                      "token_type_ids": np.zeros_like(ids)})[0]
        v = (out * mask[..., None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
        unit: np.ndarray = v / np.linalg.norm(v, axis=1, keepdims=True)
        return unit


def build(data_dir: Path, settings: BrainSettings, log: Callable[[str], None]) -> Brain:
    started = time.perf_counter()
    brain = Brain.open(data_dir, settings)
    log(f"brain open ({brain.status()['embedder']}) in {time.perf_counter() - started:.1f} s")
    if brain.status()["catalog"] < N_ITEMS:
        t = time.perf_counter()
        brain.add_content(catalog(MOVIES), progress=False)
        log(f"catalog of {N_ITEMS} embedded and stored in {time.perf_counter() - t:.1f} s")
    if brain.status()["patterns"] < N_PATTERNS:
        t = time.perf_counter()
        rng = np.random.default_rng(11)
        ids = brain.content_ids()
        vecs = brain.vectors(ids)
        pats = []
        for j in range(N_PATTERNS):
            # Profile-like keys: a recency-weighted mix of a few titles.
            pick = rng.choice(len(ids), 4, replace=False)
            key = (vecs[pick] * np.asarray([1, 0.5, 0.25, 0.125])[:, None]).sum(axis=0)
            pats.append((key.astype(np.float32), ids[int(pick[0])], float(rng.integers(0, 3)),
                         int(rng.integers(1, 4)), float(T0 + j)))
        brain.load_patterns(pats)
        log(f"{N_PATTERNS} patterns stored in {time.perf_counter() - t:.1f} s")
    return brain


def run(args: argparse.Namespace) -> dict[str, Any]:
    log: Callable[[str], None] = (lambda m: print(m, file=sys.stderr)) if args.json else print
    wall_started = time.perf_counter()
    tmp = None
    if args.data_dir is None:
        tmp = Path(tempfile.mkdtemp(prefix="omega-bench-brain-"))
        data_dir = tmp / "tv"
    else:
        data_dir = Path(args.data_dir)
    settings = BrainSettings(durability=args.durability, model_cache_dir=args.cache_dir)
    try:
        brain = build(data_dir, settings, log)
        try:
            result = measure(brain, args, log, wall_started)
        finally:
            brain.close()
        rss = child_rss(data_dir, args.cache_dir)
        result["rss_mb"]["tv_process"] = rss
        steady = rss["steady"]
        result["goals"].append({"goal": "steady RSS MB (TV process)", "ratio": steady,
                                "limit": 200.0, "pass": steady <= 200.0})
        result["seconds"] = round(time.perf_counter() - wall_started, 1)
        return result
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def child_rss(data_dir: Path, cache_dir: Path | None) -> dict[str, float]:
    """RSS of a process that is only a TV brain: open, then 300 views and lists."""
    cmd = [sys.executable, __file__, "--rss-child", str(data_dir)]
    if cache_dir is not None:
        cmd += ["--cache-dir", str(cache_dir)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def rss_child_main(data_dir: Path, cache_dir: Path | None) -> None:
    settings = BrainSettings(durability="sync", model_cache_dir=cache_dir)
    with Brain.open(data_dir, settings) as brain:
        opened = rss_mb()
        rng = random.Random(9)
        ids = brain.content_ids()
        t = int(brain.status()["last_timestamp"] or T0) + 1
        for i in range(300):
            t += rng.randint(60, 7200)
            brain.observe(ViewingEvent(rng.choice(ids), rng.random(), t))
            brain.recommend(k=10, timestamp=t + 1)
            if i % 10 == 0:
                brain.embedder.embed([SHORT_TEXT])
        steady = rss_mb()
    peak = 0.0
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    print(json.dumps({"after_open": round(opened, 1), "steady": round(steady, 1),
                      "peak": round(peak, 1)}))


def profile_queries(vecs: np.ndarray, n: int) -> list[np.ndarray]:
    """What the brain searches with: a profile, the decayed mix of recent titles."""
    qrng = np.random.default_rng(5)
    queries = []
    for _ in range(n):
        pick = qrng.choice(len(vecs), 5, replace=False)
        q = (vecs[pick] * (0.5 ** np.arange(5))[:, None]).sum(axis=0)
        queries.append((q / np.linalg.norm(q)).astype(np.float32))
    return queries


def clustered_vectors(n: int, dim: int, n_queries: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Unit vectors around 100 random centres, and queries drawn the same way."""
    rng = np.random.default_rng(9)
    centres = rng.normal(size=(100, dim)).astype(np.float32)

    def draw(m: int) -> np.ndarray:
        x = centres[rng.integers(0, 100, m)] + 0.3 * rng.normal(size=(m, dim)).astype(np.float32)
        out: np.ndarray = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
        return out

    return draw(n), list(draw(n_queries))


class SearchPair:
    """One HNSW index (the brain's settings) and numpy brute force over the same matrix."""

    def __init__(self, name: str, vecs: np.ndarray, queries: list[np.ndarray],
                 settings: BrainSettings, log: Callable[[str], None]) -> None:
        self.vecs = vecs
        self.queries = queries
        self.index = create_index("hnsw", vecs.shape[1], len(vecs), settings.index)
        t = time.perf_counter()
        self.index.add(np.arange(len(vecs), dtype=np.int64), vecs)
        log(f"HNSW over {len(vecs)} {name} vectors built in {time.perf_counter() - t:.1f} s")
        self.hits = 0
        self.total = 0

    def ops(self, qi: list[int], suffix: str) -> dict[str, Callable[[], None]]:
        vecs, queries, index = self.vecs, self.queries, self.index

        def hnsw() -> None:
            index.search(queries[qi[0]], 10)

        def brute() -> None:  # numpy through BLAS (one thread, as in a node)
            _top10(vecs @ queries[qi[0]])

        def brute_einsum() -> None:  # numpy on one core
            _top10(np.einsum("ij,j->i", vecs, queries[qi[0]]))

        return {f"hnsw_search{suffix}": hnsw, f"brute_search{suffix}": brute,
                f"brute_search_einsum{suffix}": brute_einsum}

    def score_recall(self, i: int) -> None:
        _, got = self.index.search(self.queries[i], 10)
        s = self.vecs @ self.queries[i]
        exact = set(np.argpartition(-s, 10)[:10].tolist())
        self.hits += len(exact & set(got[0].tolist()))
        self.total += 10

    def recall(self) -> float:
        return self.hits / max(self.total, 1)


def _top10(s: np.ndarray) -> None:
    top = np.argpartition(-s, 10)[:10]
    top[np.argsort(-s[top])]


def measure(brain: Brain, args: argparse.Namespace, log: Callable[[str], None],
            wall_started: float) -> dict[str, Any]:
    rng = random.Random(3)
    ids = brain.content_ids()
    clock = [int(brain.status()["last_timestamp"] or T0 + N_PATTERNS) + 1]

    def observe() -> None:
        clock[0] += rng.randint(60, 7200)
        brain.observe(ViewingEvent(rng.choice(ids), rng.random(), clock[0]))

    def recommend() -> None:
        brain.recommend(k=10, timestamp=clock[0] + 1)

    embedder = brain.embedder

    def brain_embed() -> None:
        embedder.embed([SHORT_TEXT])

    # Warm up the brain alone, then read its RSS (the reference sessions come next).
    for _ in range(30):
        observe()
        recommend()
        brain_embed()
    rss_brain = rss_mb()
    vecs = brain.vectors(ids)  # the bench's own copy, for HNSW and brute force
    titles = SearchPair("titles", vecs, profile_queries(vecs, args.iterations),
                        brain.settings, log)
    # BENCHMARKS.md's reference figures were measured on clustered vectors: the same
    # index and brute force on such data, in the same loop, say what the data costs.
    clustered = SearchPair("clustered", *clustered_vectors(len(ids), vecs.shape[1],
                                                           args.iterations),
                           brain.settings, log)
    qi = [0]

    before_ref = rss_mb()
    bare1 = BareOnnx(threads=1)
    bare_default = BareOnnx(threads=None)
    ref_mb = rss_mb() - before_ref
    ops: dict[str, Callable[[], object]] = {
        "observe": observe, "recommend": recommend, "brain_embed": brain_embed,
        "bare_embed": lambda: bare1.embed(SHORT_TEXT),
        **titles.ops(qi, ""), **clustered.ops(qi, "_clustered"),
    }
    for op in ops.values():  # warm-up of every path
        op()
    times: dict[str, list[float]] = {name: [] for name in ops}
    order = list(ops)
    deadline = time.monotonic() + args.max_seconds
    for i in range(args.iterations):
        if time.monotonic() > deadline:
            log(f"time budget reached after {i} iterations")
            break
        qi[0] = i
        rng.shuffle(order)
        for name in order:
            t0 = time.perf_counter()
            ops[name]()
            times[name].append(time.perf_counter() - t0)
        titles.score_recall(i)
        clustered.score_recall(i)
    # Alone, after the loop: onnxruntime's default thread pool spins between runs and
    # would slow whatever the loop timed next on a 2-core machine.
    times["bare_embed_default_threads"] = []
    bare_default.embed(SHORT_TEXT)
    for _ in range(min(len(times["observe"]), 200)):
        t0 = time.perf_counter()
        bare_default.embed(SHORT_TEXT)
        times["bare_embed_default_threads"].append(time.perf_counter() - t0)
    rss_end = rss_mb() - ref_mb
    # The reference: the faster of the two brute forces (the stricter ratio).
    brute99 = min(pct(times["brute_search"])[1], pct(times["brute_search_einsum"])[1])
    brute99_clustered = min(pct(times["brute_search_clustered"])[1],
                            pct(times["brute_search_einsum_clustered"])[1])
    figures = {name: dict(zip(("p50_ms", "p99_ms"), pct(t), strict=True))
               for name, t in times.items()}
    recall = titles.recall()
    bare99 = figures["bare_embed"]["p99_ms"]
    goals = [
        ("recommend p99 / bare embed p99", figures["recommend"]["p99_ms"] / bare99, 1.5),
        ("observe p99 / bare embed p99", figures["observe"]["p99_ms"] / bare99, 1.5),
        ("brain embed p99 / bare embed p99", figures["brain_embed"]["p99_ms"] / bare99, 0.5),
        ("HNSW p99 / brute force p99", figures["hnsw_search"]["p99_ms"] / brute99, 0.25),
    ]
    results = [{"goal": g, "ratio": round(r, 3), "limit": lim, "pass": bool(r <= lim)}
               for g, r, lim in goals]
    results.append({"goal": "HNSW recall@10", "ratio": round(recall, 4), "limit": 0.98,
                    "pass": recall >= 0.98})
    # Not the goal (that is on the brain's own vectors): the spec's kind of data.
    reference = {
        "hnsw_p99_over_brute_p99": round(
            figures["hnsw_search_clustered"]["p99_ms"] / brute99_clustered, 3),
        "hnsw_p50_over_brute_p50": round(
            figures["hnsw_search_clustered"]["p50_ms"]
            / min(figures["brute_search_clustered"]["p50_ms"],
                  figures["brute_search_einsum_clustered"]["p50_ms"]), 3),
        "recall_at_10": round(clustered.recall(), 4),
    }
    status = brain.status()
    return {
        "iterations": len(times["observe"]),
        "catalog": status["catalog"], "patterns": status["patterns"],
        "durability": status["durability"], "embedder": status["embedder"],
        "latency_ms": {k: {kk: round(vv, 3) for kk, vv in v.items()}
                       for k, v in figures.items()},
        "hnsw_recall_at_10": round(recall, 4),
        "hnsw_on_clustered_vectors": reference,
        "rss_mb": {"bench_process_after_build_and_warmup": round(rss_brain, 1),
                   "bench_process_at_end_minus_reference": round(rss_end, 1),
                   "reference_sessions": round(ref_mb, 1)},
        "goals": results,
        "seconds": round(time.perf_counter() - wall_started, 1),
    }


def print_table(r: dict[str, Any]) -> None:
    print(f"\nbrain: {r['catalog']} titles, {r['patterns']} patterns, durability "
          f"{r['durability']}, embedder {r['embedder']}, {r['iterations']} interleaved "
          f"iterations, {r['seconds']} s")
    print(f"{'operation':30s} {'p50 ms':>9s} {'p99 ms':>9s}")
    for name, v in r["latency_ms"].items():
        print(f"{name:30s} {v['p50_ms']:9.3f} {v['p99_ms']:9.3f}")
    print(f"HNSW recall@10 vs brute force: {r['hnsw_recall_at_10']:.4f}")
    c = r["hnsw_on_clustered_vectors"]
    print(f"Same index on clustered synthetic vectors (BENCHMARKS.md's reference kind, not "
          f"the goal): p99 {c['hnsw_p99_over_brute_p99']:.2f}x, p50 "
          f"{c['hnsw_p50_over_brute_p50']:.2f}x brute force, recall@10 {c['recall_at_10']:.4f}")
    rss = r["rss_mb"]
    tv = rss["tv_process"]
    print(f"RSS of a TV process (brain + model, 300 views): {tv['after_open']:.1f} MB after "
          f"open, {tv['steady']:.1f} MB steady, {tv['peak']:.1f} MB peak")
    print(f"RSS of this process: {rss['bench_process_after_build_and_warmup']:.1f} MB after "
          f"building and warm-up; the reference sessions added "
          f"{rss['reference_sessions']:.1f} MB")
    print(f"\n{'goal':36s} {'value':>8s} {'limit':>7s}")
    for g in r["goals"]:
        print(f"{g['goal']:36s} {g['ratio']:8.3f} {g['limit']:7.2f}  "
              f"{'PASS' if g['pass'] else 'FAIL'}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--max-seconds", type=float, default=45.0,
                   help="stop the interleaved loop after this long")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="reuse a brain here (built on first use); default: a fresh temp dir")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="where the embedder keeps its re-quantized model")
    p.add_argument("--durability", choices=("sync", "metasync", "nosync"), default="sync",
                   help="how observe reaches the disk (the shipped default: sync)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--rss-child", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.rss_child is not None:
        rss_child_main(args.rss_child, args.cache_dir)
        return 0
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
