"""A worker's kept connection: each use gets it as new (no transaction, no advisory lock), a dead
one is replaced, a forked child never uses its parent's. Real PostgreSQL."""

from __future__ import annotations

import os

import pytest

from pipeline.legacy import connection
from pipeline.legacy.connection import KeptConnection, connect
from pipeline.settings import Settings


def _backend(conn: object) -> int:
    with conn.cursor() as cur:  # type: ignore[attr-defined]
        cur.execute("SELECT pg_backend_pid()")
        return int(cur.fetchone()[0])


def _locks_of(settings: Settings, pid: int) -> int:
    other = connect(settings)
    try:
        with other.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = %s", (pid,)
            )
            return int(cur.fetchone()[0])
    finally:
        other.close()


def test_each_use_gets_the_same_connection_clean(legacy_db: Settings) -> None:
    setup = connect(legacy_db, autocommit=True)
    with setup.cursor() as cur:
        cur.execute("CREATE TABLE left_open (x int)")
    setup.close()
    kept = KeptConnection("test-kept")
    try:
        with kept.use(legacy_db) as conn:
            conn.isolation_level = "REPEATABLE READ"
            first = _backend(conn)
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_lock(4242, 1)")  # a batch lock left behind
                cur.execute("INSERT INTO left_open VALUES (1)")  # never committed
        assert _locks_of(legacy_db, first) == 0, "a step's advisory lock outlived it"
        with kept.use(legacy_db) as conn:
            assert conn.info.transaction_status == 0  # idle: no transaction carried over
            assert _backend(conn) == first, "a new backend per use: no reuse"
            assert conn.isolation_level is None
            assert not conn.autocommit
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM left_open")
                assert cur.fetchone()[0] == 0, "the previous use's insert was committed"
    finally:
        kept.close()


def test_a_failed_use_is_rolled_back_and_the_connection_kept(legacy_db: Settings) -> None:
    kept = KeptConnection("test-kept")
    try:
        with pytest.raises(RuntimeError), kept.use(legacy_db) as conn:
            first = _backend(conn)
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_lock(4242, 2)")
            raise RuntimeError("the step failed")
        assert _locks_of(legacy_db, first) == 0
        with kept.use(legacy_db) as conn:
            assert _backend(conn) == first
    finally:
        kept.close()


def test_a_connection_the_server_dropped_is_replaced(
    legacy_db: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = KeptConnection("test-kept")
    try:
        with kept.use(legacy_db) as conn:
            first = _backend(conn)
        killer = connect(legacy_db, autocommit=True)
        try:
            with killer.cursor() as cur:
                cur.execute("SELECT pg_terminate_backend(%s)", (first,))
        finally:
            killer.close()
        monkeypatch.setattr(connection, "PING_AFTER_IDLE", 0.0)  # ping at once, not after 30 s
        with kept.use(legacy_db) as conn:
            second = _backend(conn)
        assert second != first
    finally:
        kept.close()


def test_a_forked_child_opens_its_own(legacy_db: Settings) -> None:
    kept = KeptConnection("test-kept")
    try:
        with kept.use(legacy_db) as conn:
            parent = _backend(conn)
        read, write = os.pipe()
        child = os.fork()
        if child == 0:  # the child: report its backend, leave the parent's socket alone
            try:
                with kept.use(legacy_db) as conn:
                    os.write(write, str(_backend(conn)).encode())
            finally:
                os._exit(0)
        os.close(write)
        got = os.read(read, 64).decode()
        os.waitpid(child, 0)
        os.close(read)
        assert got and int(got) != parent, "the child used its parent's connection"
        with kept.use(legacy_db) as conn:  # the parent's is untouched by the child
            assert _backend(conn) == parent
    finally:
        kept.close()
