"""Array literals: what PostgreSQL reads back is exactly the list sent, whatever the text."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.arrays import int_array, text_array
from tests.fixtures.db import scratch_connection

AWKWARD = ["", " ", "NULL", "null", "a,b", "{x}", '"', '\\', '\\"', "'", "a b\n\tc", "é€😀",
           "}", "{", ",", "  padded  "]


@pytest.fixture(scope="module")
def conn() -> Iterator[psycopg2.extensions.connection]:
    with scratch_connection("ordersync_arrays") as connection:
        yield connection


def read_back(conn: psycopg2.extensions.connection, literal: str, cast: str) -> list[object]:
    with conn.cursor() as cur:
        cur.execute(f"SELECT %s::{cast}", (literal,))
        value = cur.fetchone()[0]  # type: ignore[index]
    conn.rollback()
    return value  # type: ignore[no-any-return]


def test_awkward_texts_and_nulls_come_back_as_sent(conn: psycopg2.extensions.connection) -> None:
    values: list[str | None] = [*AWKWARD, None, "x", None]
    assert read_back(conn, text_array(values), "text[]") == values
    assert read_back(conn, text_array(AWKWARD), "text[]") == AWKWARD  # the no-None path
    assert read_back(conn, text_array(["1", "2", "300"]), "text[]") == ["1", "2", "300"]
    assert read_back(conn, text_array([]), "text[]") == []


def test_integers_come_back_as_sent(conn: psycopg2.extensions.connection) -> None:
    values = [0, -1, 2**62, 7]
    assert read_back(conn, int_array(values), "bigint[]") == values
    assert read_back(conn, int_array([]), "bigint[]") == []


TEXTS = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(st.lists(st.one_of(st.none(), TEXTS)))
def test_any_list_of_texts_round_trips(
    conn: psycopg2.extensions.connection, values: list[str | None]
) -> None:
    assert read_back(conn, text_array(values), "text[]") == values


def test_a_batch_of_keys_is_one_literal_not_one_constant_per_key() -> None:
    keys = [str(k) for k in range(25_000)]
    literal = text_array(keys)
    assert literal.startswith('{"0","1",') and literal.endswith('"24999"}')
    assert "ARRAY" not in literal
