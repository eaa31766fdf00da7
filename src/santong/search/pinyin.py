"""Pinyin (拼音) of Chinese names: `Patient?name=zhangsan`, `zhang san`, `zs`, `zhāng sān` and
`zhang1 san1` all find 张三.

The three-connections package defines the SearchParameter `name-pinyin` (expression
`Patient.name`, :data:`URL`). FHIRPath cannot compute pinyin, so this transform
(:mod:`santong.search.transforms`) indexes, for each name part with Chinese characters (family,
given, the whole name written together, text), its pinyin written together (`zhangsan`), with
spaces (`zhang san`) and as initials (`zs`). Tone marks and ü are folded like any search
string, so the index holds toneless syllables, with ü both as `v` (how it is typed) and `u`
(what `ü` folds to); a query's tone numbers are dropped. The standard Patient `name` parameter
also matches these values (its default, starts-with search only; :exact and :contains stay
with the written name).

Polyphonic characters (多音字: 曾 zeng/ceng, 单 shan/dan/chan) contribute every reading
pypinyin knows, as names are read in ways dictionaries of words do not predict; at most
:data:`MAX_READINGS` per character and :data:`MAX_COMBINATIONS` spellings per name part.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from santong.search import transforms, values

URL = "http://santong.example.org/fhir/SearchParameter/patient-name-pinyin"
PATIENT_NAME = "http://hl7.org/fhir/SearchParameter/Patient-name"
MAX_READINGS = 4
MAX_COMBINATIONS = 16

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f〇]")
_LATIN = re.compile(r"[a-z0-9]+")
_TOKEN = re.compile(r"[a-z0-9]+|\S")  # a Latin word, or any other single character
_TONE_NUMBER = re.compile(r"(?<=[a-z])[1-5]")
_QUERY = re.compile(r"[a-z]+(?: [a-z]+)*")


@lru_cache(maxsize=32768)
def readings(char: str) -> tuple[str, ...]:
    """The toneless readings of one Chinese character, most common first (ü as v and u)."""
    from pypinyin import Style, pinyin  # its dictionaries load on first use (~0.2 s)

    found = pinyin(char, style=Style.NORMAL, heteronym=True, errors="ignore")
    out: list[str] = []
    for reading in (found[0] if found else [])[:MAX_READINGS]:
        for spelling in (reading, reading.replace("v", "u")):
            if spelling not in out:
                out.append(spelling)
    return tuple(out)


def _syllables(text: str) -> list[tuple[str, ...]]:
    """Each syllable's spellings: a Chinese character's readings, a Latin word itself."""
    out: list[tuple[str, ...]] = []
    for token in _TOKEN.findall(values.normalise(text)):
        if _HAN.match(token):
            found = readings(token)
            if found:
                out.append(found)
        elif _LATIN.fullmatch(token):
            out.append((token,))
    return out


def _combinations(syllables: list[tuple[str, ...]]) -> Iterator[tuple[str, ...]]:
    """Every way to read the syllables, the likeliest first: each one's first (most common)
    reading, then with one other reading, then two… so a bound keeps the likely ones."""
    first = [spelled[0] for spelled in syllables]
    for count in range(len(syllables) + 1):
        for positions in itertools.combinations(range(len(syllables)), count):
            others = [syllables[p][1:] for p in positions]
            for picks in itertools.product(*others):
                combination = list(first)
                for position, pick in zip(positions, picks, strict=True):
                    combination[position] = pick
                yield tuple(combination)


# Names repeat (family names above all): the per-text work is cached, bounded.
@lru_cache(maxsize=65536)
def _readings_of(text: str) -> tuple[tuple[str, ...], ...]:
    if not _HAN.search(text):
        return ()
    return tuple(itertools.islice(_combinations(_syllables(text)), MAX_COMBINATIONS))


@lru_cache(maxsize=65536)
def _spellings(text: str) -> tuple[str, ...]:
    found: list[str] = []
    for combination in _readings_of(text):
        forms = ["".join(combination)]
        if len(combination) > 1:
            forms += [" ".join(combination), "".join(s[0] for s in combination)]
        found += [f for f in forms if f not in found]
    return tuple(found)


def spellings(text: str) -> list[str]:
    """The pinyin forms `text` is indexed under; none when it has no Chinese character."""
    return list(_spellings(text))


def index_values(selected: list[tuple[str, Any]]) -> list[str]:
    """The pinyin strings of the names selected (HumanName values): each part's, and family
    and given names as two words (欧阳娜娜: `ouyang nana`)."""
    out: list[str] = []
    seen: set[str] = set()
    for node_type, value in selected:
        texts = list(values.string_values(node_type, value))
        if node_type == "HumanName" and isinstance(value, dict):
            family = value.get("family")
            given = "".join(g for g in value.get("given", []) if isinstance(g, str))
            if isinstance(family, str) and given:
                words = [" ".join("".join(c) for c in pair) for pair in itertools.islice(
                    itertools.product(_readings_of(family), _readings_of(given)), 4)]
                out += [w for w in words if w not in out]
        for text in texts:
            if text in seen:
                continue
            seen.add(text)
            out += [s for s in _spellings(text) if s not in out]
    return out


def query_value(text: str) -> str | None:
    """A query as indexed: tone marks and tone numbers dropped; None if it is not pinyin."""
    folded = _TONE_NUMBER.sub("", values.normalise(text).replace("'", ""))
    return folded if _QUERY.fullmatch(folded) else None


transforms.register(transforms.Transform(URL, index_values, query_value, (PATIENT_NAME,)))
