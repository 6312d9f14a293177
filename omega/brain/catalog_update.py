"""What ``add_content`` will write: plain planning over the catalog in RAM.

All items are checked and planned before anything is embedded or written: a bad
item refuses the whole call and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from omega.brain.catalog import Catalog, text_hash
from omega.brain.content import Content, content_text
from omega.brain.errors import InvalidContent
from omega.brain.learning import normalized
from omega.brain.memory import CatalogRecord

__all__ = ["CatalogPlan", "CatalogUpdate", "given_vectors", "plan_update", "plan_writes"]

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class CatalogUpdate:
    """What ``add_content`` did: new titles, changed titles, identical re-sends."""

    added: int
    updated: int
    unchanged: int


@dataclass(frozen=True)
class CatalogPlan:
    """Records to write (positions assigned), with the text each is embedded from."""

    records: list[CatalogRecord]
    texts: list[str]
    #: Indexes into ``records`` whose vector must be (re)computed or replaced.
    changed: list[int]
    unchanged: int
    #: The next free catalog position after this update.
    next_idx: int


def plan_update(catalog: Catalog, items: Iterable[Content], max_items: int,
                given: Mapping[str, F32] | None = None) -> CatalogPlan:
    """Plan an upsert: a repeated id updates the item (the last one wins); an item
    identical to the stored one is skipped; a new or changed text, or a given
    vector, marks the item ``changed``. ``InvalidContent`` refuses the whole call."""
    batch: dict[str, Content] = {}
    for item in items:
        if not isinstance(item, Content):
            raise InvalidContent("?", "item", f"expected Content, got {type(item).__name__}")
        batch[item.id] = item
    n_new = sum(1 for cid in batch if cid not in catalog)
    if len(catalog) + n_new > max_items:
        raise InvalidContent("?", "catalog", f"more than max_catalog_items={max_items} titles")
    given = given or {}
    records: list[CatalogRecord] = []
    texts: list[str] = []
    unchanged = 0
    next_idx = len(catalog)
    for cid, item in batch.items():
        text = content_text(item)
        rec = CatalogRecord(
            idx=catalog.position.get(cid, -1), content_id=cid, title=item.title,
            genres=tuple(item.genres), description=item.description, year=item.year,
            duration_min=item.duration_min, metadata=dict(item.metadata),
            text_hash=text_hash(text))
        if rec.idx >= 0:
            if catalog.records[rec.idx] == rec:
                unchanged += 1
                continue
        else:
            rec = replace(rec, idx=next_idx)
            next_idx += 1
        records.append(rec)
        texts.append(text)
    changed = [i for i, rec in enumerate(records)
               if rec.idx >= len(catalog) or catalog.records[rec.idx].text_hash != rec.text_hash
               or rec.content_id in given]
    return CatalogPlan(records, texts, changed, unchanged, next_idx)


def plan_writes(plan: CatalogPlan, catalog: Catalog, given: Mapping[str, F32],
                embed: Callable[[list[str]], F32]) -> list[tuple[CatalogRecord, F32]]:
    """Each planned record with its vector: ``given``, else embedded (changed text),
    else the stored one (a metadata-only change)."""
    to_embed = [i for i in plan.changed if plan.records[i].content_id not in given]
    vecs = embed([plan.texts[i] for i in to_embed])
    vec_of = {i: vecs[j] for j, i in enumerate(to_embed)}
    vec_of.update({i: given[plan.records[i].content_id] for i in plan.changed
                   if plan.records[i].content_id in given})
    return [(rec, vec_of[i] if i in vec_of else catalog.embeddings[rec.idx].copy())
            for i, rec in enumerate(plan.records)]


def given_vectors(vectors: Mapping[str, npt.ArrayLike] | None, dim: int) -> dict[str, F32]:
    """Embeddings that come with items (the crowd's new content): checked, unit length."""
    out: dict[str, F32] = {}
    for cid, vec in (vectors or {}).items():
        v = np.asarray(vec, dtype=np.float32).reshape(-1)
        if v.size != dim or not np.isfinite(v).all() or not v.any():
            raise InvalidContent(cid, "embedding", f"must be {dim} finite floats, not all 0")
        out[cid] = normalized(v)
    return out
