"""UCUM units in canonical form, so quantities compare across units (mg vs g, mmol/L vs mol/m3).

http://hl7.org/fhir/R4/search.html#quantity: "the server SHOULD … convert the quantity to a
canonical form". UCUM expressions are parsed by ucumvert into pint units and reduced to SI base
units; each unit's (factor, canonical unit) is computed once and cached, because parsing costs
about a millisecond and the write path indexes many quantities.
"""

from __future__ import annotations

import logging
import threading
from decimal import Decimal
from functools import cache
from typing import Any

UCUM = "http://unitsofmeasure.org"
log = logging.getLogger(__name__)
# The registry is warmed in a thread at start-up while requests may already convert: one
# registry, one conversion at a time (quantities of two registries cannot be compared).
_lock = threading.Lock()


@cache
def _registry() -> Any:
    from ucumvert import PintUcumRegistry  # loading takes about a second: only when needed

    return PintUcumRegistry()


@cache
def canonical(unit: str) -> tuple[Decimal, str] | None:
    """(factor, canonical unit) with value × factor in canonical units; None if not convertible.

    Units with an offset (Cel, [degF]) and arbitrary units have no multiplicative canonical
    form and are compared as written.
    """
    try:
        with _lock:
            quantity = (1 * _registry().from_ucum(unit)).to_base_units()
        # Floats carry about 15 significant digits: 0.9999999999999999 is 1.
        factor = Decimal(format(float(quantity.magnitude), ".15g"))
    except Exception as exc:  # ucumvert/pint raise many kinds for units they cannot reduce
        log.debug("UCUM unit %r has no canonical form: %s", unit, exc)
        return None
    return factor, f"{quantity.units:~C}"
