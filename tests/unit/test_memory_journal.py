"""The storage journal's file (append, fsync, torn tails, adoption, bounds), filters as data, and the row cache."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pyarrow as pa
import pytest

from voiceserver.memory import MemoryStoreError
from voiceserver.memory.journal import JournalEntry, StorageJournal, read_records
from voiceserver.memory.outage import RowCache
from voiceserver.memory.schema import MESSAGES, MESSAGES_SCHEMA, Where, both, eq, ge, is_in, lt


def rows(*ids: str) -> pa.Table:
    return pa.Table.from_pylist([{"id": i, "thread_id": "t", "resource_id": "r", "role": "user", "type": "text",
                                  "content": f"text of {i}", "metadata": "{}", "created_at": n}
                                 for n, i in enumerate(ids)], schema=MESSAGES_SCHEMA)


def test_filters_carry_their_condition_and_rebuild_from_it():
    where = both(eq("thread_id", "t-1"), is_in("id", ["a", "b"]), ge("created_at", 5), lt("created_at", 9))
    assert isinstance(where, Where)
    assert where == "(thread_id = 't-1') AND (id IN ('a', 'b')) AND (created_at >= 5) AND (created_at < 9)"
    assert where.matches({"thread_id": "t-1", "id": "b", "created_at": 5})
    assert not where.matches({"thread_id": "t-1", "id": "c", "created_at": 5})
    assert not where.matches({"thread_id": "t-1", "id": "a", "created_at": 9})
    assert not where.matches({"thread_id": "t-1", "id": "a"})  # a missing column never matches a bound
    rebuilt = Where.from_spec(where.spec)
    assert rebuilt == where and rebuilt.spec == where.spec
    assert not is_in("id", []).matches({"id": "a"}) and both().matches({})
    raw = Where.of("kind = 'x'")
    assert raw.spec == ["sql", "kind = 'x'"] and not raw.matches({"kind": "x"})
    assert both(eq("a", "x"), "b = 1") == "(a = 'x') AND (b = 1)" and not isinstance(both(eq("a", "x"), "b = 1"),
                                                                                      Where)


def test_entries_survive_the_file_and_a_torn_tail_is_dropped(tmp_path):
    journal = StorageJournal(tmp_path)
    journal.open()
    journal.append(JournalEntry("add", MESSAGES, "id", rows("m1", "m2")))
    journal.append(JournalEntry("delete", MESSAGES, where=eq("id", "m1")))
    journal.append(JournalEntry("upsert", MESSAGES, "id", rows("m3")))
    assert journal.pending == 3
    data = journal.path.read_bytes()
    entries, valid = read_records(data)
    assert valid == len(data) and [e.op for e in entries] == ["add", "delete", "upsert"]
    assert entries[0].rows.equals(rows("m1", "m2")) and entries[1].where.matches({"id": "m1"})
    # A crash in the middle of the third append: its record is cut; the first two are whole.
    cut, _ = read_records(data[:-10])
    assert [e.op for e in cut] == ["add", "delete"]
    corrupt = bytearray(data)
    corrupt[len(data) - 5] ^= 0xFF  # a flipped byte fails the checksum
    assert len(read_records(bytes(corrupt))[0]) == 2


def test_flushed_entries_leave_the_file(tmp_path):
    journal = StorageJournal(tmp_path)
    journal.open()
    for i in range(4):
        journal.append(JournalEntry("add", MESSAGES, "id", rows(f"m{i}")))
    journal.flushed(3)
    assert journal.pending == 1
    entries, _ = read_records(journal.path.read_bytes())
    assert [e.row_dicts[0]["id"] for e in entries] == ["m3"]
    journal.append(JournalEntry("add", MESSAGES, "id", rows("m4")))  # the rewritten file takes appends
    journal.flushed(2)
    assert journal.pending == 0 and journal.path.read_bytes() == b"" and journal.bytes == 0
    journal.close()
    assert not list(tmp_path.glob("journal-*")), "an empty journal leaves no file behind"


def test_bounds_give_a_clear_error(tmp_path):
    journal = StorageJournal(tmp_path, max_entries=2)
    journal.open()
    journal.append(JournalEntry("add", MESSAGES, "id", rows("a")))
    journal.append(JournalEntry("add", MESSAGES, "id", rows("b")))
    with pytest.raises(MemoryStoreError) as full:
        journal.append(JournalEntry("add", MESSAGES, "id", rows("c")))
    assert full.value.code == "storage_journal_full" and "journal_max_entries=2" in str(full.value)
    small = StorageJournal(tmp_path / "small", max_bytes=600)
    small.open()
    with pytest.raises(MemoryStoreError) as too_big:
        small.append(JournalEntry("add", MESSAGES, "id", rows(*[f"m{i}" for i in range(50)])))
    assert too_big.value.code == "storage_journal_full" and small.pending == 0


def test_a_dead_process_journal_is_adopted_and_a_live_one_is_not(tmp_path):
    script = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {os.getcwd()!r})
        from tests.unit.test_memory_journal import rows
        from voiceserver.memory.journal import JournalEntry, StorageJournal
        j = StorageJournal({str(tmp_path)!r})
        j.open()
        j.append(JournalEntry("add", "messages", "id", rows(sys.argv[1])))
        print("appended", flush=True)
        if sys.argv[2] == "hold":
            time.sleep(60)
        os._exit(0)  # like a kill: no close
    """)
    live = subprocess.Popen([sys.executable, "-c", script, "alive", "hold"], stdout=subprocess.PIPE)
    try:
        assert live.stdout.readline().strip() == b"appended"
        subprocess.run([sys.executable, "-c", script, "dead", "exit"], check=True, capture_output=True)
        journal = StorageJournal(tmp_path)
        adopted = journal.open()
        assert [e.row_dicts[0]["id"] for e in adopted] == ["dead"], "only the dead process's file is taken"
        assert len(list(tmp_path.glob("journal-*.wal"))) == 2  # ours (holding "dead") and the live one's
        journal.close()
    finally:
        live.kill()
        live.wait()
    again = StorageJournal(tmp_path)
    assert sorted(e.row_dicts[0]["id"] for e in again.open()) == ["alive", "dead"]
    again.close()


def test_an_unwritable_journal_directory_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(MemoryStoreError) as info:
        StorageJournal(blocker / "journal").open()
    assert info.value.code == "storage_journal_failed" and "storage.journal_dir" in str(info.value)


def test_the_row_cache_is_bounded_and_applies_deletes():
    cache = RowCache(max_rows=3)
    cache.remember(MESSAGES, [{"id": "a", "thread_id": "t"}, {"id": "b", "thread_id": "t"}])
    cache.remember("threads", [{"id": "t1"}, {"id": "t2"}])  # four rows: the oldest ("a") goes
    assert set(cache.rows(MESSAGES)) == {"b"} and len(cache) == 3
    cache.remember(MESSAGES, [{"id": "b", "thread_id": "t", "content": "new"}])
    assert cache.rows(MESSAGES)["b"]["content"] == "new"
    cache.remember(MESSAGES, [{"id": "b", "thread_id": "t", "content": "ignored"}], only_new=True)
    assert cache.rows(MESSAGES)["b"]["content"] == "new"
    cache.forget(MESSAGES, eq("thread_id", "t"))
    assert cache.rows(MESSAGES) == {} and len(cache) == 2
    cache.forget("threads", Where.of("anything"))  # a filter Python cannot test drops the whole table
    assert cache.rows("threads") == {} and len(cache) == 0
