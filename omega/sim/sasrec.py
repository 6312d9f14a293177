"""SASRec (Kang & McAuley 2018), the central sequential baseline of the quality benchmark.

Self-attentive sequential recommendation in PyTorch on the CPU: an item embedding
plus a learned position embedding, ``blocks`` causal self-attention blocks (each
``x + Dropout(SA(LayerNorm(x)))`` then ``x + Dropout(FFN(LayerNorm(x)))``, as in
the paper), a final layer norm, and the item embedding again as the output layer.
It is trained to predict the next item at every position of the users' *training*
sequences (BENCHMARKS.md §1: what is learned from other users uses training items
only) with a full softmax cross-entropy over the catalog — the "SASRec (central,
full softmax)" row of BENCHMARKS.md — and stopped early on the validation item
(NDCG@k, full ranking without the user's history; never the test item).

The only module that imports ``torch``, and only inside its functions: PyTorch is
the optional ``bench`` extra (``pip install -e '.[bench]'``); :func:`available`
says whether it is installed without importing it. A trained model is a
:class:`omega.sim.baselines.Scorer`, ranked like every other baseline.

Deterministic for a given seed: ``torch.manual_seed``, a seeded order of the
training windows, and ``settings.threads`` intra-op threads (default 1, set for
the fit and scoring and restored afterwards).
"""

from __future__ import annotations

import importlib.util
import logging
import math
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from omega.schema import require
from omega.sim.metrics import hit_ndcg, top_k

if TYPE_CHECKING:
    import torch

__all__ = ["SASRecFit", "SASRecScorer", "SASRecSettings", "available", "fit_sasrec"]

log = logging.getLogger("omega.sim")

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

#: Histories encoded per forward pass when scoring.
SCORE_BATCH = 256


def available() -> bool:
    """Whether PyTorch (the ``bench`` extra) is installed; does not import it."""
    return importlib.util.find_spec("torch") is not None


@dataclass(frozen=True)
class SASRecSettings:
    """Model and training knobs.

    The architecture is the paper's MovieLens-1M setting (maxlen 200, 50 dims, 2
    blocks, 1 head, dropout 0.2, Adam β₂ 0.98). The optimisation is faster than the
    paper's (lr 1e-3, batch 128) so the fit ends in minutes on one core: on
    ml-latest-small, validation NDCG@10 after 5 epochs was 0.023 at lr 1e-3 and
    0.031 at 5e-3 (batch 32, every window); 5e-3 peaked at 0.065 at epoch 14.
    """

    maxlen: int = 200
    """Positions per sequence: a history's last ``maxlen`` items are encoded."""
    all_windows: bool = True
    """Train on every ``maxlen`` piece of a long training sequence, not only its most
    recent one (the paper's choice). On ml-latest-small: validation NDCG@10 0.065 vs
    0.053, for 1.7× the positions per epoch (99,006 vs 57,717)."""
    hidden: int = 50
    blocks: int = 2
    heads: int = 1
    dropout: float = 0.2
    lr: float = 5e-3
    batch: int = 32
    """Training windows (of up to ``maxlen`` positions) per Adam step."""
    max_epochs: int = 30
    """A cap on the fit's time (~10-20 s an epoch on ml-latest-small, one core)."""
    patience: int = 5
    """Stop after this many epochs without a better validation NDCG@k."""
    logit_chunk: int = 1 << 24
    """Bound on the floats of one logits block (positions × catalog) in the loss: the
    softmax is computed in chunks of positions, so memory does not grow with the batch."""
    seed: int = 20261203
    threads: int = 1
    """Intra-op threads of torch during the fit and scoring (the machine is shared)."""

    def __post_init__(self) -> None:
        require(1 <= self.maxlen <= 10_000, "maxlen", "must be 1-10000")
        require(1 <= self.hidden <= 4096, "hidden", "must be 1-4096")
        require(self.heads >= 1 and self.hidden % self.heads == 0, "heads",
                "must be >= 1 and divide hidden")
        require(0 <= self.blocks <= 64, "blocks", "must be 0-64")
        require(0.0 <= self.dropout < 1.0, "dropout", "must be in [0, 1)")
        require(self.lr > 0, "lr", "must be positive")
        require(self.batch >= 1, "batch", "must be >= 1")
        require(self.max_epochs >= 1, "max_epochs", "must be >= 1")
        require(self.patience >= 1, "patience", "must be >= 1")
        require(self.logit_chunk >= 1, "logit_chunk", "must be >= 1")
        require(self.threads >= 1, "threads", "must be >= 1")


@dataclass(frozen=True)
class Epoch:
    """One training epoch: mean training loss and validation figures after it."""

    epoch: int
    loss: float
    val_hr: float
    val_ndcg: float
    seconds: float


@dataclass(frozen=True)
class SASRecFit:
    """A trained model (its best epoch on validation) and how it got there."""

    scorer: SASRecScorer
    best_epoch: int
    val_hr: float
    val_ndcg: float
    epochs: tuple[Epoch, ...]
    seconds: float
    windows: int
    """Training windows per epoch."""
    positions: int
    """Next-item targets per epoch."""


@dataclass(eq=False)
class SASRecScorer:
    """A trained network as a :class:`omega.sim.baselines.Scorer`.

    A history's score row is the output of its last position against every item
    embedding; histories longer than ``maxlen`` keep their most recent items.
    """

    net: Any = field(repr=False)
    """The ``torch.nn.ModuleDict`` built by :func:`_network`, in eval mode."""
    settings: SASRecSettings
    items: int

    @property
    def n_items(self) -> int:
        return self.items

    def scores(self, histories: Sequence[IntArray]) -> FloatArray:
        import torch

        out = np.empty((len(histories), self.items), dtype=np.float64)
        with _threads(self.settings.threads), torch.no_grad():
            for lo in range(0, len(histories), SCORE_BATCH):
                part = histories[lo : lo + SCORE_BATCH]
                width = max(1, min(self.settings.maxlen, max(len(h) for h in part)))
                seqs = torch.from_numpy(_left_padded(part, width))
                last = _encode(self.net, seqs, self.settings, training=False)[:, -1, :]
                logits = last @ self.net["item_emb"].weight[1:].T
                out[lo : lo + len(part)] = logits.double().numpy()
        return out


def fit_sasrec(
    sequences: Sequence[IntArray],
    n_items: int,
    val_histories: Sequence[IntArray],
    val_targets: Sequence[int],
    *,
    k: int = 10,
    settings: SASRecSettings | None = None,
    progress: bool = False,
) -> SASRecFit:
    """Train on ``sequences`` (catalog indices, oldest first) and keep the best epoch.

    After every epoch the model ranks the whole catalog (minus each history) for
    ``val_histories`` and is scored on ``val_targets`` by NDCG@``k``; training
    stops after ``settings.patience`` epochs without improvement and the best
    epoch's weights are kept. Raises ``ValueError`` for inconsistent input and
    ``ImportError`` when PyTorch is not installed.
    """
    import torch
    from tqdm import tqdm

    s = settings or SASRecSettings()
    if n_items < 1:
        raise ValueError(f"SASRec needs a catalog, got {n_items} items")
    if len(val_histories) != len(val_targets):
        raise ValueError(f"{len(val_histories)} validation histories for "
                         f"{len(val_targets)} targets")
    for seq in (*sequences, *val_histories, np.asarray(val_targets, dtype=np.int64)):
        if len(seq) and (int(np.min(seq)) < 0 or int(np.max(seq)) >= n_items):
            raise ValueError(f"an item index outside the catalog of {n_items}")
    inputs, targets = training_windows(sequences, s.maxlen, every=s.all_windows)
    if len(inputs) == 0:
        raise ValueError("no training sequence has two items")
    t0 = time.perf_counter()
    with _threads(s.threads):
        torch.manual_seed(s.seed)
        net = _network(n_items, s)
        opt = torch.optim.Adam(net.parameters(), lr=s.lr, betas=(0.9, 0.98))
        order_rng = np.random.default_rng(s.seed)
        x_all, y_all = torch.from_numpy(inputs), torch.from_numpy(targets)
        lengths = (targets > 0).sum(axis=1)
        scorer = SASRecScorer(net, s, n_items)
        best: tuple[float, float, int, dict[str, torch.Tensor]] | None = None
        epochs: list[Epoch] = []
        bar = tqdm(range(1, s.max_epochs + 1), desc="SASRec", unit="epoch",
                   disable=not progress, file=sys.stderr)
        for epoch in bar:
            t = time.perf_counter()
            net.train()
            batches = length_batches(lengths, s.batch, order_rng)
            loss = _train_epoch(net, opt, x_all, y_all, batches, s)
            net.eval()
            lists = top_k(scorer.scores(val_histories), val_histories, k)
            hit, ndcg = hit_ndcg(lists, val_targets)
            hr, nd = float(hit.mean()), float(ndcg.mean())
            epochs.append(Epoch(epoch, loss, hr, nd, time.perf_counter() - t))
            if best is None or nd > best[1]:
                state = {name: v.detach().clone() for name, v in net.state_dict().items()}
                best = (hr, nd, epoch, state)
            bar.set_postfix_str(f"loss {loss:.3f} val NDCG@{k} {nd:.4f} best {best[1]:.4f} "
                                f"(epoch {best[2]})")
            log.debug("sasrec epoch", extra={"fields": {
                "epoch": epoch, "loss": round(loss, 4), "val_hr": round(hr, 4),
                "val_ndcg": round(nd, 4), "seconds": round(epochs[-1].seconds, 2)}})
            if epoch - best[2] >= s.patience:
                break
        bar.close()
        assert best is not None  # max_epochs >= 1
        net.load_state_dict(best[3])
        net.eval()
    seconds = time.perf_counter() - t0
    log.info("sasrec trained", extra={"fields": {
        "epochs": len(epochs), "best_epoch": best[2], "val_hr": round(best[0], 4),
        "val_ndcg": round(best[1], 4), "windows": len(inputs),
        "positions": int((targets > 0).sum()), "seconds": round(seconds, 1)}})
    return SASRecFit(scorer, best[2], best[0], best[1], tuple(epochs), seconds,
                     len(inputs), int((targets > 0).sum()))


def training_windows(
    sequences: Sequence[IntArray], maxlen: int, *, every: bool = True
) -> tuple[IntArray, IntArray]:
    """Next-item training windows: ``(inputs, targets)``, each ``(windows, maxlen)``.

    Each sequence ``s`` gives inputs ``s[:-1]`` and targets ``s[1:]``, cut into
    pieces of ``maxlen`` positions from the end (so the most recent piece is
    full; with ``every=False`` only that piece) and left-padded. Items are
    shifted by one: 0 is padding.
    """
    ins: list[IntArray] = []
    outs: list[IntArray] = []
    for seq in sequences:
        seq = np.asarray(seq, dtype=np.int64) + 1
        for end in range(len(seq) - 1, 0, -maxlen):
            start = max(0, end - maxlen)
            ins.append(_pad_left(seq[start:end], maxlen))
            outs.append(_pad_left(seq[start + 1 : end + 1], maxlen))
            if not every:
                break
    if not ins:
        empty = np.zeros((0, maxlen), dtype=np.int64)
        return empty, empty.copy()
    return np.stack(ins), np.stack(outs)


# -- the network -----------------------------------------------------------------------------


def _network(n_items: int, s: SASRecSettings) -> Any:
    """The layers as a ``ModuleDict`` (no subclass: torch stays an optional import)."""
    import torch
    from torch import nn

    blocks = nn.ModuleList(
        nn.ModuleDict({
            "attn_norm": nn.LayerNorm(s.hidden, eps=1e-8),
            "qkv": nn.Linear(s.hidden, 3 * s.hidden),
            "proj": nn.Linear(s.hidden, s.hidden),
            "ffn_norm": nn.LayerNorm(s.hidden, eps=1e-8),
            "ffn_in": nn.Linear(s.hidden, s.hidden),
            "ffn_out": nn.Linear(s.hidden, s.hidden),
        })
        for _ in range(s.blocks)
    )
    net: Any = nn.ModuleDict({
        "item_emb": nn.Embedding(n_items + 1, s.hidden, padding_idx=0),
        "pos_emb": nn.Embedding(s.maxlen, s.hidden),
        "blocks": blocks,
        "norm": nn.LayerNorm(s.hidden, eps=1e-8),
    })
    # Xavier-normal weights (as the reference PyTorch port does); the padding row stays 0.
    for name, p in net.named_parameters():
        if p.dim() > 1:
            nn.init.xavier_normal_(p)
        elif name.endswith("bias"):
            nn.init.zeros_(p)
    with torch.no_grad():
        net["item_emb"].weight[0].zero_()
    return net


def _encode(net: Any, seqs: torch.Tensor, s: SASRecSettings, *, training: bool) -> torch.Tensor:
    """``(batch, maxlen, hidden)`` states of left-padded item sequences (0 = padding)."""
    import torch
    import torch.nn.functional as F

    batch, length = seqs.shape
    drop = s.dropout if training else 0.0
    real = (seqs > 0).unsqueeze(-1)
    x = net["item_emb"](seqs) * math.sqrt(s.hidden)
    x = x + net["pos_emb"].weight[s.maxlen - length :].unsqueeze(0)
    x = F.dropout(x, drop, training) * real
    # Causal, and never onto padding; each position may always see itself, so a padding
    # row has one key (its output is zeroed below) rather than none (NaN).
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    keys = (seqs > 0).unsqueeze(1) | torch.eye(length, dtype=torch.bool).unsqueeze(0)
    mask = (causal.unsqueeze(0) & keys).unsqueeze(1)
    head = s.hidden // s.heads
    for block in net["blocks"]:
        q, k, v = block["qkv"](block["attn_norm"](x)).split(s.hidden, dim=-1)
        q, k, v = (t.view(batch, length, s.heads, head).transpose(1, 2) for t in (q, k, v))
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        att = att.transpose(1, 2).reshape(batch, length, s.hidden)
        x = x + F.dropout(block["proj"](att), drop, training)
        h = F.relu(block["ffn_in"](block["ffn_norm"](x)))
        h = block["ffn_out"](F.dropout(h, drop, training))
        x = (x + F.dropout(h, drop, training)) * real
    out: torch.Tensor = net["norm"](x)
    return out


def length_batches(lengths: IntArray, batch: int, rng: np.random.Generator) -> list[IntArray]:
    """Window indices in batches of similar length, in a random order.

    Windows are sorted by length (random order among equal lengths) and cut into
    batches, and the batches are shuffled: a batch is then trimmed to its longest
    window, so short histories do not pay for 200 positions of padding.
    """
    order = np.lexsort((rng.random(len(lengths)), lengths))
    batches = [order[lo : lo + batch] for lo in range(0, len(order), batch)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _train_epoch(
    net: Any,
    opt: torch.optim.Optimizer,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    batches: Sequence[IntArray],
    s: SASRecSettings,
) -> float:
    """One pass over ``batches`` of windows; the mean cross-entropy per target."""
    import torch
    import torch.nn.functional as F

    total, count = 0.0, 0
    for batch in batches:
        idx = torch.from_numpy(batch)
        tgt = targets[idx]
        keep = tgt > 0
        n = int(keep.sum())
        if n == 0:
            continue
        # Left-padded: the batch's positions without a target in any row are dropped.
        width = int(keep.sum(dim=1).max())
        seqs, tgt, keep = inputs[idx][:, -width:], tgt[:, -width:], keep[:, -width:]
        opt.zero_grad(set_to_none=True)
        states = _encode(net, seqs, s, training=True)[keep]
        labels = tgt[keep] - 1
        # The full softmax, in chunks of positions: each chunk's logits are freed after
        # its backward; the gradients reach the states through a detached copy.
        detached = states.detach().requires_grad_(True)
        weight = net["item_emb"].weight
        chunk = max(1, s.logit_chunk // weight.shape[0])
        loss_sum = 0.0
        for c in range(0, n, chunk):
            logits = detached[c : c + chunk] @ weight[1:].T
            loss = F.cross_entropy(logits, labels[c : c + chunk], reduction="sum")
            torch.autograd.backward(loss / n)
            loss_sum += float(loss.detach())
        torch.autograd.backward(states, detached.grad)
        opt.step()
        total += loss_sum
        count += n
    return total / max(count, 1)


def _left_padded(histories: Sequence[IntArray], maxlen: int) -> IntArray:
    """The last ``maxlen`` items of each history, shifted by one and left-padded with 0."""
    out = np.zeros((len(histories), maxlen), dtype=np.int64)
    for row, h in enumerate(histories):
        tail = np.asarray(h, dtype=np.int64)[-maxlen:]
        if len(tail):
            out[row, maxlen - len(tail) :] = tail + 1
    return out


def _pad_left(values: IntArray, maxlen: int) -> IntArray:
    out = np.zeros(maxlen, dtype=np.int64)
    out[maxlen - len(values) :] = values
    return out


@contextmanager
def _threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` for the block, restored after it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
