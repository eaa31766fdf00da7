"""Value transforms: index values that FHIRPath cannot compute, keyed by SearchParameter url.

A SearchParameter's expression selects elements (`Patient.name`); a transform registered for
its url turns those into the strings indexed instead (the pinyin of Chinese names,
:mod:`santong.search.pinyin`). Queries on the parameter normalise their values with the
transform's `query` function, and a transform may *widen* other string parameters: searching
those also matches its values (the standard Patient `name` also finds pinyin). A transform
takes effect only where its SearchParameter is loaded (stored and registered): without it,
nothing is indexed or widened.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Transform", "for_url", "register", "widening"]


@dataclass(frozen=True, slots=True)
class Transform:
    url: str  # the SearchParameter whose values this computes
    # (FHIR type, JSON value) of each selected element → the strings to index
    values: Callable[[list[tuple[str, Any]]], list[str]]
    # A query value → the form it is looked up in (as indexed); None: it cannot match.
    query: Callable[[str], str | None]
    # urls of string parameters whose plain (starts-with) searches also match these values
    widens: tuple[str, ...] = ()


_BY_URL: dict[str, Transform] = {}
_WIDENING: dict[str, tuple[Transform, ...]] = {}


def register(transform: Transform) -> None:
    _BY_URL[transform.url] = transform
    for url in transform.widens:
        _WIDENING[url] = (*_WIDENING.get(url, ()), transform)


def for_url(url: str) -> Transform | None:
    return _BY_URL.get(url)


def widening(url: str) -> tuple[Transform, ...]:
    """The transforms whose values a search on parameter `url` also matches."""
    return _WIDENING.get(url, ())


# The built-in transforms register themselves.
from santong.search import pinyin as _pinyin  # noqa: E402, F401
