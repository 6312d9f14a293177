"""The hub's release time at 10,000 and 100,000 titles (omega.federation.release).

Run: .venv/bin/python bench/release.py [--titles 10000 100000] [--partners 30] [--repeat 3]

Synthetic sums: every title has on average ``--partners`` co-viewed titles, drawn
Zipf-like (popular titles pair with many), with report counts of a large fleet
(each pair reported by 1,000 to 10 M TVs).
Times ``build_release`` (noise, thresholds, top-20 lists, popularity, one region's
trends) and the sums' bytes round trip (what the hub writes to its Raft log and
LMDB), and prints the release's size; p50 and max over ``--repeat`` runs, one
thread. The machine is shared: compare sizes as ratios measured in one run.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import msgpack
import numpy as np

from omega.blas import one_blas_thread
from omega.federation.release import ReleaseSettings, build_release
from omega.federation.report import title_key
from omega.federation.sums import CoviewSums
from omega.federation.trends import RegionWindow


def synthetic_sums(
    n_titles: int, partners: int, seed: int = 0
) -> tuple[CoviewSums, dict[int, str]]:
    """Sums of ``n_titles * partners / 2`` distinct pairs with Zipf-like popularity."""
    rng = np.random.default_rng(seed)
    ids = [f"title-{i:07d}" for i in range(n_titles)]
    keys = np.array([title_key(c) for c in ids], dtype=np.uint64)
    m = n_titles * partners // 2
    # Zipf-like: title i is drawn with weight 1 / (i + 10).
    p = 1.0 / (np.arange(n_titles) + 10.0)
    p /= p.sum()
    x = rng.choice(n_titles, size=2 * m, p=p)
    y = rng.choice(n_titles, size=2 * m)
    a, b = np.minimum(keys[x], keys[y]), np.maximum(keys[x], keys[y])
    keep = a != b
    pairs = np.unique(np.stack([a[keep], b[keep]], axis=1), axis=0)[:m]
    # Report counts of a large fleet (most pairs clear the threshold of σ ≈ 670).
    reports = rng.zipf(1.6, size=len(pairs)).clip(max=10_000).astype(np.int64) * 1000
    weights = reports * 255
    tw = np.zeros(n_titles, dtype=np.int64)
    tn = np.zeros(n_titles, dtype=np.int64)
    pos = {int(k): i for i, k in enumerate(keys)}
    ia = np.array([pos[int(k)] for k in pairs[:, 0]])
    ib = np.array([pos[int(k)] for k in pairs[:, 1]])
    for idx in (ia, ib):
        np.add.at(tw, idx, weights)
        np.add.at(tn, idx, reports)
    order = np.argsort(keys)
    doc = {
        "format": 1,
        "reports": int(reports.sum()),
        "pa": pairs[:, 0].astype("<u8").tobytes(),
        "pb": pairs[:, 1].astype("<u8").tobytes(),
        "pw": weights.astype("<i8").tobytes(),
        "pn": reports.astype("<i8").tobytes(),
        "t": keys[order].astype("<u8").tobytes(),
        "tw": tw[order].astype("<i8").tobytes(),
        "tn": tn[order].astype("<i8").tobytes(),
    }
    sums = CoviewSums.from_bytes(msgpack.packb(doc, use_bin_type=True))
    return sums, {int(k): c for k, c in zip(keys, ids, strict=True)}


def release_bytes(rel: object) -> int:
    from omega.federation.release import Release

    assert isinstance(rel, Release)
    doc = {
        "neighbours": [
            [c, [[o, round(v, 4)] for o, v in lst]] for c, lst in rel.neighbours.items()
        ],
        "popularity": [[c, round(v, 1)] for c, v in rel.popularity.items()],
        "trends": {r: [[c, v] for c, v in lst] for r, lst in rel.trends.items()},
    }
    return len(msgpack.packb(doc, use_bin_type=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--titles", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--partners", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    one_blas_thread()
    settings = ReleaseSettings(contributions=1000)
    print(f"release settings: ε {settings.epsilon}, δ {settings.delta}, σ {settings.sigma:.1f}, "
          f"threshold {settings.threshold_sigmas}·σ, top-{settings.top_k}")
    for n in args.titles:
        t = time.perf_counter()
        sums, catalog = synthetic_sums(n, args.partners)
        made = time.perf_counter() - t
        region = RegionWindow()
        region.recent = {k: int(w * 255) for k, (w, _) in
                         ((k, sums.title(k)) for k in list(catalog)[: n // 10])}
        region.roll()
        region.recent = {k: int(w * 300) for k, (w, _) in
                         ((k, sums.title(k)) for k in list(catalog)[: n // 10])}
        times, ser, de = [], [], []
        rel = None
        for i in range(args.repeat):
            t = time.perf_counter()
            rel = build_release(sums, catalog, settings, np.random.default_rng(i),
                                regions={"eu": region})
            times.append(time.perf_counter() - t)
            t = time.perf_counter()
            blob = sums.to_bytes()
            ser.append(time.perf_counter() - t)
            t = time.perf_counter()
            CoviewSums.from_bytes(blob)
            de.append(time.perf_counter() - t)
        assert rel is not None
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"{n:>7,} titles, {sums.n_pairs:>9,} pairs (built in {made:.1f} s): "
            f"build_release p50 {statistics.median(times):.2f} s max {max(times):.2f} s; "
            f"sums to_bytes p50 {statistics.median(ser):.2f} s, from_bytes p50 "
            f"{statistics.median(de):.2f} s, {len(blob) / 1e6:.1f} MB; release "
            f"{rel.pairs_published:,} pairs, {rel.titles_published:,} titles, "
            f"{release_bytes(rel) / 1e6:.1f} MB msgpack; max RSS {rss:.0f} MB",
            flush=True,
        )


if __name__ == "__main__":
    main()
