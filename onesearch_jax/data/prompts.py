"""The text layout of model inputs: student and teacher prompts, and alignment task prompts.

OneSearch-V2 (arXiv 2603.24422) feeds the generator one text per request. Its teacher input
``x^T`` holds the user profile, the query, the query SID, the recent queries, the SIDs of
recently engaged items and the keyword CoT; the student input ``x^S`` is the same without the
keywords (DESIGN.md, "Inputs"). Both are rendered here from one :class:`PromptRecord`, so the
keyword segment is the only difference between them.

Layout: a sequence of segments, each a marker from :data:`PROMPT_MARKERS` followed by one space
and its content, segments joined by one space. A personalised input has, in this order::

    [user] gender F, age 24-30, location Jiangsu Nanjing
    [query] yoga mat
    [query_sid] <a_19><b_4><c_6><d_142><d_479>
    [keywords] non-slip, kara                          (teacher only)
    [recent_queries] dumbbells | dress                 (most recent first, up to 10)
    [recent_items] <a_3>...<d_301> <a_7>...<d_260>     (most recent first, up to 20)

all on one line (shown broken here), e.g. the student input ``[user] gender F, age 24-30,
location Jiangsu Nanjing [query] yoga mat [query_sid] <a_19><b_4><c_6><d_142><d_479>
[recent_queries] none [recent_items] none``.

Rules, chosen so the layout is fixed and the invariant is exact:

* Every segment is always present. An empty list (no history, no keyword) renders as the
  content ``none`` (:data:`NONE`); a missing profile field renders as ``unknown``.
* ``teacher_inputs`` is ``inputs`` with the keyword segment inserted after the query SID
  segment; removing that one segment (:func:`remove_segment`) gives ``inputs`` back exactly.
  The keywords sit before the history, so a length cut at the end (seqio truncation) drops the
  oldest history first and never the keywords.
* List separators: recent queries `` | ``, keywords ``, ``, item SIDs a space. Location is the
  province and the city (the city alone when they are equal, as for 天津 天津); the country is
  left out (one country per log).
* Free text (profile values, queries, keywords, titles, categories) is cleaned by
  :func:`clean_text`: whitespace runs become one space, and a marker or SID token written in
  the text (``[query]``, ``<a_12>``) gets round brackets (``(query)``, ``(a_12)``), so the only
  markers and SID tokens of an input are the structural ones and :func:`split_segments` is
  unambiguous.

Stage-1 and stage-2 inputs (:func:`render_task_input`) start with a ``[task]`` segment naming the
sub-task, then the segments of what the task reads (``[query]``, ``[query_sid]``, ``[title]`` or
``[item_sid]``), e.g. ``[task] title_to_sid [title] Kara red yoga mat``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence

from onesearch_jax.data.schema import User

MARKER_TASK = "[task]"
MARKER_USER = "[user]"
MARKER_QUERY = "[query]"
MARKER_QUERY_SID = "[query_sid]"
MARKER_KEYWORDS = "[keywords]"
MARKER_RECENT_QUERIES = "[recent_queries]"
MARKER_RECENT_ITEMS = "[recent_items]"
MARKER_TITLE = "[title]"
MARKER_ITEM_SID = "[item_sid]"

PROMPT_MARKERS: tuple[str, ...] = (
    MARKER_TASK, MARKER_USER, MARKER_QUERY, MARKER_QUERY_SID, MARKER_KEYWORDS, MARKER_RECENT_QUERIES,
    MARKER_RECENT_ITEMS, MARKER_TITLE, MARKER_ITEM_SID,
)  # fmt: skip
"""Every segment marker; the vocabulary keeps each one a single piece."""

STUDENT_ORDER: tuple[str, ...] = (
    MARKER_USER, MARKER_QUERY, MARKER_QUERY_SID, MARKER_RECENT_QUERIES, MARKER_RECENT_ITEMS,
)  # fmt: skip
TEACHER_ORDER: tuple[str, ...] = (
    MARKER_USER, MARKER_QUERY, MARKER_QUERY_SID, MARKER_KEYWORDS, MARKER_RECENT_QUERIES, MARKER_RECENT_ITEMS,
)  # fmt: skip
NONE = "none"
UNKNOWN = "unknown"
QUERY_SEPARATOR = " | "
KEYWORD_SEPARATOR = ", "
SID_SEPARATOR = " "

_MARKER_RE = re.compile("|".join(re.escape(m) for m in PROMPT_MARKERS))
_SID_TOKEN_RE = re.compile(r"<([a-z]_\d+)>")
_SID_RE = re.compile(r"^(<[a-z]_\d+>)+$")
_MISSING_VALUES = frozenset({"", "unknown", "null", "none", "nan"})


def clean_text(text: str) -> str:
    """Free text made safe for a prompt (rules in the module docstring).

    Args:
        text: any text.

    Returns:
        The text with whitespace runs collapsed and markers / SID tokens neutralised.
    """
    text = " ".join(str(text).split())
    text = _MARKER_RE.sub(lambda m: "(" + m.group(0)[1:-1] + ")", text)
    return _SID_TOKEN_RE.sub(r"(\1)", text)


def _check_sid(sid: str, what: str) -> str:
    if not _SID_RE.match(sid):
        raise ValueError(f"{what}: {sid!r} is not a SID token string like <a_1><b_2><c_3><d_4><d_260>")
    return sid


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class UserProfile:
    """What the prompt says about the searcher.

    Attributes:
        gender: users.jsonl ``gender`` (``unknown`` when missing).
        age_bucket: users.jsonl ``age_bucket``.
        location: province and city (see :meth:`from_user`).
    """

    gender: str = UNKNOWN
    age_bucket: str = UNKNOWN
    location: str = UNKNOWN

    @classmethod
    def from_user(cls, user: User | None) -> UserProfile:
        """The profile of a users.jsonl record (all ``unknown`` for None)."""
        if user is None:
            return cls()

        def value(text: str) -> str | None:
            cleaned = clean_text(text)
            return None if cleaned.lower() in _MISSING_VALUES else cleaned

        parts: list[str] = []
        for part in (value(user.fre_province), value(user.fre_city)):
            if part is not None and part not in parts:
                parts.append(part)
        return cls(
            gender=value(user.gender) or UNKNOWN,
            age_bucket=value(user.age_bucket) or UNKNOWN,
            location=" ".join(parts) or UNKNOWN,
        )

    def render(self) -> str:
        """``gender F, age 24-30, location Jiangsu Nanjing``."""
        gender, age, location = (clean_text(v) for v in (self.gender, self.age_bucket, self.location))
        return f"gender {gender}, age {age}, location {location}"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PromptRecord:
    """The structured content of one personalised request, rendered by :func:`render_prompts`.

    Attributes:
        profile: the searcher's profile.
        query: the query as typed.
        query_sid: the query's SID tokens (``<a_i><b_j>...``).
        recent_queries: queries of earlier sessions, most recent first (already capped).
        recent_item_sids: SID tokens of items clicked or bought earlier, most recent first.
        keywords: the keyword CoT (teacher only), ranked.
    """

    profile: UserProfile
    query: str
    query_sid: str
    recent_queries: tuple[str, ...] = ()
    recent_item_sids: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("recent_queries", "recent_item_sids", "keywords"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not clean_text(self.query):
            raise ValueError("PromptRecord.query is empty")
        _check_sid(self.query_sid, "PromptRecord.query_sid")
        for sid in self.recent_item_sids:
            _check_sid(sid, "PromptRecord.recent_item_sids")


@dataclasses.dataclass(frozen=True, slots=True)
class RenderedPrompts:
    """Student and teacher inputs of one record."""

    inputs: str
    teacher_inputs: str


def _list(values: Iterable[str], separator: str) -> str:
    cleaned = [c for c in (clean_text(v) for v in values) if c]
    return separator.join(cleaned) if cleaned else NONE


def segment(marker: str, content: str) -> str:
    """One segment: ``marker`` + space + ``content`` (``none`` when the content is empty)."""
    if marker not in PROMPT_MARKERS:
        raise ValueError(f"unknown prompt marker {marker!r}; known: {', '.join(PROMPT_MARKERS)}")
    return f"{marker} {content or NONE}"


def keyword_segment(keywords: Sequence[str]) -> str:
    """``[keywords] k1, k2`` (``[keywords] none`` for no keyword)."""
    return segment(MARKER_KEYWORDS, _list(keywords, KEYWORD_SEPARATOR))


def _segments(record: PromptRecord) -> dict[str, str]:
    return {
        MARKER_USER: segment(MARKER_USER, record.profile.render()),
        MARKER_QUERY: segment(MARKER_QUERY, clean_text(record.query)),
        MARKER_QUERY_SID: segment(MARKER_QUERY_SID, record.query_sid),
        MARKER_KEYWORDS: keyword_segment(record.keywords),
        MARKER_RECENT_QUERIES: segment(MARKER_RECENT_QUERIES, _list(record.recent_queries, QUERY_SEPARATOR)),
        MARKER_RECENT_ITEMS: segment(MARKER_RECENT_ITEMS, SID_SEPARATOR.join(record.recent_item_sids) or NONE),
    }


def render_prompts(record: PromptRecord) -> RenderedPrompts:
    """Student ``inputs`` and ``teacher_inputs`` of a record (layout in the module docstring)."""
    parts = _segments(record)
    return RenderedPrompts(
        inputs=" ".join(parts[m] for m in STUDENT_ORDER),
        teacher_inputs=" ".join(parts[m] for m in TEACHER_ORDER),
    )


def render_task_input(task: str, segments: Sequence[tuple[str, str]]) -> str:
    """``[task] TASK`` followed by ``segments`` (pairs of marker and raw content).

    Content of ``[query_sid]`` and ``[item_sid]`` segments must be SID tokens; other content is
    cleaned with :func:`clean_text`.
    """
    if not re.fullmatch(r"[a-z0-9_]+", task):
        raise ValueError(f"task name {task!r}: use lower-case letters, digits and underscores")
    parts = [segment(MARKER_TASK, task)]
    for marker, content in segments:
        if marker in (MARKER_QUERY_SID, MARKER_ITEM_SID):
            parts.append(segment(marker, _check_sid(content, marker)))
        else:
            parts.append(segment(marker, clean_text(content)))
    return " ".join(parts)


def split_segments(text: str) -> list[tuple[str, str]]:
    """The ``(marker, content)`` pairs of a rendered input, in order.

    Raises:
        ValueError: when the text does not start with a marker.
    """
    found = list(_MARKER_RE.finditer(text))
    if not found or found[0].start() != 0:
        raise ValueError(f"{text[:40]!r}...: a prompt starts with a marker ({', '.join(PROMPT_MARKERS)})")
    out = []
    for i, m in enumerate(found):
        end = found[i + 1].start() - 1 if i + 1 < len(found) else len(text)
        out.append((m.group(0), text[m.end() + 1 : end]))
    return out


def join_segments(segments: Sequence[tuple[str, str]]) -> str:
    """The inverse of :func:`split_segments`."""
    return " ".join(f"{marker} {content}" for marker, content in segments)


def remove_segment(text: str, marker: str) -> str:
    """``text`` without its segment(s) introduced by ``marker``."""
    return join_segments([(m, c) for m, c in split_segments(text) if m != marker])
