"""Child of test_brain_crash.py: stream observes, print each acknowledged one.

    python brain_crash_child.py DATA_DIR START_TIMESTAMP SEED

Prints ``ready`` once the brain is open, then ``ack <seq> <content_id> <timestamp>``
after each ``observe`` returned (flushed), forever, until the parent kills it.
"""

from __future__ import annotations

import random
import sys

from omega import Brain, Content, ViewingEvent
from omega.brain.embedder import HashEmbedder
from omega.brain.settings import BrainSettings

CATALOG = [Content(id=f"c{i}", title=f"Title number {i}", genres=(f"g{i % 5}",))
           for i in range(200)]


def main() -> int:
    data_dir, start, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    brain = Brain.open(data_dir, BrainSettings(durability="sync"), embedder=HashEmbedder())
    if brain.status()["catalog"] == 0:
        brain.add_content(CATALOG)
    print("ready", flush=True)
    t = start
    while True:
        t += rng.randint(1, 600)
        cid = f"c{rng.randrange(len(CATALOG))}"
        seq = brain.observe(ViewingEvent(cid, rng.random(), t))
        if rng.random() < 0.1:
            brain.recommend(k=5, timestamp=t)
        print(f"ack {seq} {cid} {t}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
