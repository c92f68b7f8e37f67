"""Pure unit tests of zohosim's parsers (no server)."""

from __future__ import annotations

import pytest

from zohosim.bulk import ApiError, parse_csv, parse_upload
from zohosim.schema import FieldError, check_format, compile_java_pattern, load_schema
from zohosim.search import CriteriaError, parse_criteria


@pytest.mark.parametrize(("pattern", "fmt", "has_date", "has_time"), [
    ("yyyy-MM-dd", "%Y-%m-%d", True, False),
    ("MM/dd/yyyy HH:mm:ss", "%m/%d/%Y %H:%M:%S", True, True),
    ("yyyy-MM-dd'T'HH:mm:ssXXX", "%Y-%m-%dT%H:%M:%S%z", True, True),
    ("dd.MM.yy hh:mm a", "%d.%m.%y %I:%M %p", True, True),
])
def test_java_patterns(pattern: str, fmt: str, has_date: bool, has_time: bool) -> None:
    assert compile_java_pattern(pattern) == (fmt, has_date, has_time)


def test_bad_patterns() -> None:
    with pytest.raises(ValueError):
        compile_java_pattern("yyyy-MM-dd 'T")
    with pytest.raises(ValueError):
        compile_java_pattern("yyyy-QQ")
    assert not check_format("date", "yyyy-MM-dd HH:mm")
    assert not check_format("datetime", "yyyy-MM-dd")
    assert check_format("datetime", "MM/dd/yyyy HH:mm")
    assert check_format("currency", "#,##0.00")


def test_csv_converters() -> None:
    fields = load_schema().modules["Orders"].fields
    assert fields["Order_Date"].from_csv("31/05/2024", "dd/MM/yyyy") == "2024-05-31"
    assert fields["Order_Date"].from_csv("05/31/2024") == "2024-05-31"
    assert fields["Shipped_At"].from_csv("2024-05-31T10:00:00Z",
                                         "yyyy-MM-dd'T'HH:mm:ssXXX") == "2024-05-31T10:00:00+00:00"
    assert fields["Is_Gift"].from_csv("TRUE") is True
    assert fields["Quantity"].from_csv("007") == 7
    with pytest.raises(FieldError) as exc:
        fields["Order_Date"].from_csv("2024-05-31", "dd/MM/yyyy")
    assert (exc.value.code, exc.value.extra) == ("INVALID_DATA", {"expected_data_type": "date"})
    with pytest.raises(FieldError):
        fields["Is_Gift"].from_csv("yes")


def test_delimiter_detection() -> None:
    for d in (",", ";", ":", "|"):
        c = parse_csv("x.csv", f"parent_id{d}Name\n1{d}a\n\n".encode())
        assert (c.header, c.rows) == (["parent_id", "Name"], [["1", "a"]])
    assert parse_csv("x.csv", "\ufeffName\nÄ\n".encode()).rows == [["Ä"]]
    assert parse_csv("x.csv", "Name\n\xc4\n".encode("cp1252")).rows == [["Ä"]]


def test_upload_parsing_errors() -> None:
    with pytest.raises(ApiError) as exc:
        parse_upload(b"PK\x03\x04broken")
    assert exc.value.code == "INVALID_FILE_FORMAT"


def test_criteria() -> None:
    rec = {"Name": "SO-1", "parent_id": "A,1", "Amount": 5.0, "Is_Gift": True}
    assert parse_criteria("(Name:equals:so-1)")(rec)
    assert parse_criteria(r"(parent_id:equals:A\,1)")(rec)
    assert parse_criteria("((Amount:greater_equal:5)and(Is_Gift:equals:true))")(rec)
    assert not parse_criteria("((Amount:less_than:5)or(Name:not_equal:SO-1))")(rec)
    assert parse_criteria("Name:starts_with:SO")(rec)
    for bad in ("(Name:likes:x)", "((Name:equals:x)", "(Name:equals:x)junk", "()"):
        with pytest.raises(CriteriaError):
            parse_criteria(bad)
