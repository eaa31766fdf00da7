"""FHIR JSON in and out (santong.fhir.jsonio): decimals keep the text the client wrote
(http://hl7.org/fhir/R4/datatypes.html#decimal), whichever parser reads them."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from santong.fhir import jsonio


@pytest.mark.parametrize("body", [
    b'{"a":1.50}', b'[1.50]', b'{"a":[7.0,1e3]}', b'{"a":0.10}', b'{"a":1.2345678901234567}',
    b'{"a":123456789012345678901}', b'{"a":7.0,"b":"10:00.50"}', b'{"a":-2.50e-3}',
    b'{"system":"urn:oid:2.16.156.10011.1.3","value":5.6}', b'[0.00001]', b'[100.0]',
])
def test_decimals_come_back_as_written(body: bytes) -> None:
    assert jsonio.dumps(jsonio.loads(body)) == body


@settings(max_examples=500, deadline=None)
@given(st.decimals(allow_nan=False, allow_infinity=False, places=None),
       st.text(alphabet="0123456789.:-eE ", max_size=30))
def test_any_decimal_next_to_any_string_comes_back_as_written(value: Decimal, noise: str) -> None:
    text = str(value) if "E" not in str(value) else format(value, "f")
    if not text.lstrip("-").replace(".", "").isdigit() or (text.startswith(("0", "-0")) and (
            len(text.lstrip("-")) > 1 and text.lstrip("-")[1] != ".")):
        return  # not a JSON number literal (leading zeros)
    body = b'{"note":"' + noise.encode() + b'","value":' + text.encode() + b"}"
    assert jsonio.dumps(jsonio.loads(body)) == body


@pytest.mark.parametrize(("body", "compact"), [
    (b'{\n  "a": 1.50,\n  "b": [7.0, 5.6]\n}\n', b'{"a":1.50,"b":[7.0,5.6]}'),
    (b'{"a":1.5,"b":"\\u5f20"}', b'{"a":1.5,"b":"\xe5\xbc\xa0"}'),
    (b' {"a":[0.10, 2]} ', b'{"a":[0.10,2]}'),
])
def test_decimals_keep_their_text_in_bodies_written_otherwise(body: bytes, compact: bytes) -> None:
    """Bodies orjson would not write the same way (spaces, escapes) are checked number by
    number: the quick check (writing the body back) only accepts an identical body."""
    assert jsonio.dumps(jsonio.loads(body)) == compact


@pytest.mark.parametrize("body", [b'{"a":1e400}', b'{"a":[-1E+400,2.5]}',
                                  b'{"a":1' + b"0" * 400 + b"}"])
def test_numbers_beyond_a_double_are_read_with_their_text(body: bytes) -> None:
    """orjson refuses them ("number is infinity"); they are well-formed JSON, read with the
    text kept for the validator to judge."""
    assert jsonio.dumps(jsonio.loads(body)) == body


@pytest.mark.parametrize("body", [b'{"a":1e400,"b":"\\ud800"}', b'{"a":1e400,"b":NaN}',
                                  b'{"a":1e400,}',
                                  b"[1e400," + b"[" * 5000 + b"1" + b"]" * 5001])
def test_beyond_a_double_does_not_let_malformed_json_through(body: bytes) -> None:
    with pytest.raises(jsonio.JsonError):
        jsonio.loads(body)
