"""The records a TV integrator passes to the brain, and their validation.

``Content`` (a catalog item), ``ViewingEvent`` (one view) and
``Recommendation`` (one result) are frozen dataclasses. ``Content`` validates
itself on construction; a ``ViewingEvent`` is checked by ``check_event`` in
``Brain.observe`` (its time order needs the brain's state). Bad input raises a
``omega.brain.errors.BadInput`` subclass.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from omega.brain.errors import InvalidContent, InvalidEvent

__all__ = [
    "MAX_DESCRIPTION_CHARS",
    "MAX_GENRES",
    "MAX_ID_CHARS",
    "MAX_TITLE_CHARS",
    "Content",
    "MetaValue",
    "Recommendation",
    "ViewingEvent",
    "check_event",
    "content_text",
]

MAX_ID_CHARS = 256
MAX_TITLE_CHARS = 500
MAX_DESCRIPTION_CHARS = 5000
MAX_GENRES = 16
MAX_GENRE_CHARS = 64
MAX_METADATA_KEYS = 64
MAX_METADATA_CHARS = 1024
MAX_CONTEXT_KEYS = 16
#: Later than any real event (year 5138): catches milliseconds passed as seconds.
MAX_TIMESTAMP = 1e11

MetaValue = str | int | float | bool


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) == "Cc" for ch in text)


@dataclass(frozen=True)
class Content:
    """One catalog item.

    ``metadata`` holds extra scalar fields (str, int, float, bool). The brain reads
    one of them: ``popularity`` (a non-negative number), used as the local
    popularity prior when the crowd has not sent one.
    """

    id: str
    title: str
    genres: tuple[str, ...] = ()
    description: str = ""
    year: int | None = None
    duration_min: float | None = None
    metadata: Mapping[str, MetaValue] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        cid = self.id if isinstance(self.id, str) else repr(self.id)

        def bad(name: str, message: str) -> InvalidContent:
            return InvalidContent(cid, name, message)

        if not isinstance(self.id, str) or not self.id.strip():
            raise bad("id", "must be a non-empty string")
        if len(self.id) > MAX_ID_CHARS or _has_control(self.id):
            raise bad("id", f"must be at most {MAX_ID_CHARS} printable characters")
        if not isinstance(self.title, str) or not self.title.strip():
            raise bad("title", "must be a non-empty string")
        if len(self.title) > MAX_TITLE_CHARS:
            raise bad("title", f"is {len(self.title)} characters; the limit is {MAX_TITLE_CHARS}")
        if isinstance(self.genres, str) or not isinstance(self.genres, tuple | list):
            raise bad("genres", "must be a tuple of strings")
        if len(self.genres) > MAX_GENRES:
            raise bad("genres", f"at most {MAX_GENRES} genres")
        for g in self.genres:
            if not isinstance(g, str) or not g.strip() or len(g) > MAX_GENRE_CHARS:
                raise bad("genres", f"each genre must be 1-{MAX_GENRE_CHARS} characters")
        if isinstance(self.genres, list):
            object.__setattr__(self, "genres", tuple(self.genres))
        if not isinstance(self.description, str) or len(self.description) > MAX_DESCRIPTION_CHARS:
            raise bad("description", f"must be a string of at most {MAX_DESCRIPTION_CHARS} chars")
        if self.year is not None and (
            isinstance(self.year, bool) or not isinstance(self.year, int)
            or not 1800 <= self.year <= 2200
        ):
            raise bad("year", "must be an integer between 1800 and 2200")
        if self.duration_min is not None and (
            isinstance(self.duration_min, bool)
            or not isinstance(self.duration_min, int | float)
            or not math.isfinite(self.duration_min)
            or not 0 < self.duration_min <= 100_000
        ):
            raise bad("duration_min", "must be a number of minutes in (0, 100000]")
        _check_metadata(cid, self.metadata)

    @property
    def popularity(self) -> float | None:
        """The catalog's own popularity prior, if the integrator gave one."""
        value = self.metadata.get("popularity")
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value)


def _check_metadata(cid: str, metadata: Any) -> None:
    if not isinstance(metadata, Mapping):
        raise InvalidContent(cid, "metadata", "must be a mapping")
    if len(metadata) > MAX_METADATA_KEYS:
        raise InvalidContent(cid, "metadata", f"at most {MAX_METADATA_KEYS} keys")
    for key, value in metadata.items():
        if not isinstance(key, str) or not key or len(key) > 64:
            raise InvalidContent(cid, "metadata", "keys must be strings of 1-64 characters")
        name = f"metadata.{key}"
        if isinstance(value, str):
            if len(value) > MAX_METADATA_CHARS:
                raise InvalidContent(cid, name, f"at most {MAX_METADATA_CHARS} characters")
        elif isinstance(value, bool):
            pass
        elif isinstance(value, int):
            if not -(2**63) <= value < 2**63:
                raise InvalidContent(cid, name, "integer out of 64-bit range")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise InvalidContent(cid, name, "must be finite")
        else:
            raise InvalidContent(cid, name, "values must be str, int, float or bool")
    pop = metadata.get("popularity")
    if pop is not None and (
        isinstance(pop, bool) or not isinstance(pop, int | float) or pop < 0
    ):
        raise InvalidContent(cid, "metadata.popularity", "must be a non-negative number")


def content_text(item: Content) -> str:
    """The text the embedder sees: ``"Title (year). Genres: a, b, c. Description"``.

    The year is added only when the title does not already carry it (MovieLens
    titles do), so both kinds of catalog embed the same way (BENCHMARKS.md §1).
    """
    text = item.title.strip()
    if item.year is not None and f"({item.year})" not in text:
        text = f"{text} ({item.year})"
    if item.genres:
        text += ". Genres: " + ", ".join(g.strip() for g in item.genres)
    if item.description.strip():
        text += ". " + item.description.strip()
    return text


@dataclass(frozen=True)
class ViewingEvent:
    """One view: what, how much of it (0..1), when (Unix seconds), and in which context.

    ``context`` is optional free-form labels from the TV (``{"daypart": "evening"}``
    overrides the daypart derived from the timestamp).
    """

    content_id: str
    watch_fraction: float
    timestamp: float
    context: Mapping[str, str] | None = field(default=None, hash=False)


def check_event(event: Any) -> None:
    """Refuse a malformed event (not its time order, which needs the brain's state)."""
    if not isinstance(event, ViewingEvent):
        raise InvalidEvent("event", f"expected a ViewingEvent, got {type(event).__name__}")
    if not isinstance(event.content_id, str) or not event.content_id:
        raise InvalidEvent("content_id", "must be a non-empty string")
    wf = event.watch_fraction
    if isinstance(wf, bool) or not isinstance(wf, int | float) or not math.isfinite(wf):
        raise InvalidEvent("watch_fraction", f"must be a finite number, got {wf!r}")
    if not 0.0 <= wf <= 1.0:
        raise InvalidEvent("watch_fraction", f"must be within [0, 1], got {wf}")
    ts = event.timestamp
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
        raise InvalidEvent("timestamp", f"must be a finite number of seconds, got {ts!r}")
    if not 0 <= ts < MAX_TIMESTAMP:
        raise InvalidEvent("timestamp",
                           f"must be Unix seconds in [0, {MAX_TIMESTAMP:.0e}), got {ts}")
    check_context(event.context)


def check_context(context: Any) -> None:
    """A context is a small mapping of short strings to short strings."""
    if context is None:
        return
    if not isinstance(context, Mapping) or len(context) > MAX_CONTEXT_KEYS:
        raise InvalidEvent("context", f"must be a mapping of at most {MAX_CONTEXT_KEYS} keys")
    for key, value in context.items():
        if not isinstance(key, str) or not isinstance(value, str) or not key \
                or len(key) > 64 or len(value) > 256:
            raise InvalidEvent("context", "keys and values must be short strings")


@dataclass(frozen=True)
class Recommendation:
    """One recommended title.

    ``reason`` is a sentence for a person ("because you finished Heat");
    ``source`` names the signal that placed it: ``crowd``, ``similar``,
    ``trending``, ``popular``, ``context`` or ``new``.
    """

    content_id: str
    score: float
    reason: str
    source: str = ""
    #: The title's display name, as imported.
    title: str = ""
