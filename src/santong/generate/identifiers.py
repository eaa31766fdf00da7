"""Chinese identifiers with their check characters, and their validators.

* 公民身份号码 (national ID), GB 11643-1999: 6-digit GB/T 2260 address code, 8-digit birth date,
  3-digit sequence (odd for men, even for women), ISO 7064 MOD 11-2 check character (0-9, X).
* 组织机构代码 (organisation code), GB 11714-1997: 8 body characters and a MOD 11 check character.
* 统一社会信用代码 (USCC), GB 32100-2015: registration authority and type (2 chars), 6-digit
  GB/T 2260 code, the 9-character GB 11714 code, and a MOD 31 check character over 31 symbols
  (digits and upper-case letters without I, O, S, V, Z).
* 城乡居民健康档案编号 (health-record number), 17 digits: county code (6), township (3),
  village/residents' committee (3), personal sequence (5) — 国家基本公共卫生服务规范.
"""

from __future__ import annotations

import re
from datetime import date

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
_ID_RE = re.compile(r"^[1-9]\d{5}(18|19|20)\d{2}(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])\d{3}[0-9X]$")

_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)
_ORG_RE = re.compile(r"^[0-9A-Z]{8}[0-9X]$")

USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_USCC_RE = re.compile(r"^[1-9ANY][0-9A-Z]\d{6}[0-9A-Z]{8}[0-9X][0-9A-HJ-NP-RTUW-Y]$")


def national_id_check(first17: str) -> str:
    total = sum(int(c) * w for c, w in zip(first17, _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11]


def national_id(area: str, birth: date, sequence: int) -> str:
    """An 18-character 公民身份号码; `sequence` (0-999) is odd for men, even for women."""
    if not (len(area) == 6 and area.isdigit()) or not 0 <= sequence <= 999:
        raise ValueError("area must be 6 digits and sequence 0-999")
    body = f"{area}{birth:%Y%m%d}{sequence:03d}"
    return body + national_id_check(body)


def is_valid_national_id(value: str) -> bool:
    if not _ID_RE.match(value):
        return False
    try:
        date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return False
    return national_id_check(value[:17]) == value[17]


def _org_value(char: str) -> int:
    return int(char) if char.isdigit() else ord(char) - ord("A") + 10


def org_code_check(body8: str) -> str:
    remainder = 11 - sum(_org_value(c) * w for c, w in zip(body8, _ORG_WEIGHTS, strict=True)) % 11
    return "X" if remainder == 10 else "0" if remainder == 11 else str(remainder)


def org_code(body8: str) -> str:
    """A 9-character GB 11714 组织机构代码 from its 8 body characters."""
    return body8 + org_code_check(body8)


def is_valid_org_code(value: str) -> bool:
    return bool(_ORG_RE.match(value)) and org_code_check(value[:8]) == value[8]


def uscc_check(first17: str) -> str:
    total = sum(USCC_CHARS.index(c) * w for c, w in zip(first17, _USCC_WEIGHTS, strict=True))
    return USCC_CHARS[(31 - total % 31) % 31]


def uscc(registration: str, area: str, org: str) -> str:
    """An 18-character 统一社会信用代码: e.g. registration "12" (机构编制, 事业单位)."""
    body = f"{registration}{area}{org}"
    if len(body) != 17 or any(c not in USCC_CHARS for c in body):
        raise ValueError(f"invalid USCC body {body!r}")
    return body + uscc_check(body)


def is_valid_uscc(value: str) -> bool:
    if not _USCC_RE.match(value) or any(c not in USCC_CHARS for c in value):
        return False
    return uscc_check(value[:17]) == value[17] and is_valid_org_code(value[8:17])


def health_record_number(county: str, township: int, village: int, sequence: int) -> str:
    """The 17-digit 城乡居民健康档案编号."""
    if not (0 < township < 1000 and 0 < village < 1000 and 0 < sequence < 100000):
        raise ValueError("township/village 1-999, sequence 1-99999")
    return f"{county}{township:03d}{village:03d}{sequence:05d}"


def is_valid_health_record_number(value: str) -> bool:
    return len(value) == 17 and value.isdigit() and value[0] != "0"
