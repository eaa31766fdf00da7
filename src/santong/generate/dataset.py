"""The generated data set: the community, then each patient's record."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property

from santong.generate.common import Resource
from santong.generate.community import Community, build_community
from santong.generate.patients import patient_record

# The "today" of the generated world (fixed, so that output depends only on the arguments).
AS_OF = date(2025, 6, 30)


@dataclass
class Dataset:
    patients: int
    seed: int = 1
    as_of: date = field(default=AS_OF)

    def __post_init__(self) -> None:
        if self.patients < 0:
            raise ValueError("patients must be >= 0")

    @cached_property
    def community(self) -> Community:
        return build_community(self.seed, self.patients, self.as_of)

    def shared(self) -> list[Resource]:
        """Organisations, affiliations, practitioners, roles and care teams."""
        return self.community.resources

    def record(self, index: int) -> list[Resource]:
        """Patient number `index` (1-based) and everything about them; the Patient first."""
        return patient_record(self.community, self.seed, index, self.as_of)

    def records(self) -> Iterator[list[Resource]]:
        for index in range(1, self.patients + 1):
            yield self.record(index)

    def resources(self) -> Iterator[Resource]:
        yield from self.shared()
        for record in self.records():
            yield from record
