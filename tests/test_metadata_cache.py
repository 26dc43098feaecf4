"""The parsed core metadata of stored blobs (``gitmirror.metadata_cache``): kept across runs,
dropped whole when unreadable or written by another parsing, never trusted over a failure."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gitmirror.metadata import CoreMetadata, parse
from gitmirror.metadata_cache import METADATA_FILE, WHEEL, MetadataCache

SHA = "ab" * 32
PARSED = parse(
    b"Metadata-Version: 2.1\nName: lib\nVersion: 2.0\nRequires-Dist: deep>=1\n"
    b"Requires-Dist: extra-dep; extra == 'fancy'\nProvides-Extra: fancy\nRequires-Python: >=3.9\n"
)


def test_what_a_run_learns_is_read_by_the_next(tmp_path: Path) -> None:
    first = MetadataCache(tmp_path)
    assert first.get(WHEEL, SHA) is None
    first.put(WHEEL, SHA, PARSED)
    assert first.get(WHEEL, SHA) == PARSED  # within the run, before any save
    first.save()
    first.close()
    second = MetadataCache(tmp_path)
    assert second.get(WHEEL, SHA) == PARSED
    assert isinstance(second.get(WHEEL, SHA), CoreMetadata)
    assert second.get(WHEEL, SHA).requires_dist == ("deep>=1", "extra-dep; extra == 'fancy'")
    assert second.get(METADATA_FILE, SHA) is None  # a PEP 658 blob's entry is another key
    second.close()


def test_a_damaged_cache_is_replaced_and_costs_only_a_miss(tmp_path: Path) -> None:
    cache = MetadataCache(tmp_path)
    cache.path.parent.mkdir(parents=True)
    cache.path.write_bytes(b"not a database at all" * 100)
    assert cache.get(WHEEL, SHA) is None
    assert cache.path.read_bytes() == b"not a database at all" * 100  # reading changes nothing
    cache.put(WHEEL, SHA, PARSED)
    cache.save()
    cache.close()
    assert MetadataCache(tmp_path).get(WHEEL, SHA) == PARSED


def test_entries_of_another_parsing_are_dropped(tmp_path: Path) -> None:
    cache = MetadataCache(tmp_path)
    cache.put(WHEEL, SHA, PARSED)
    cache.save()
    cache.close()
    with sqlite3.connect(cache.path) as db:
        db.execute("UPDATE meta SET value = 'an older parse' WHERE key = 'schema'")
    db.close()
    reader = MetadataCache(tmp_path)
    assert reader.get(WHEEL, SHA) is None
    reader.close()
    assert rows(cache.path) == 1  # a reader (``plan``) leaves the file as it found it
    writer = MetadataCache(tmp_path)
    writer.put(METADATA_FILE, SHA, PARSED)
    writer.save()
    writer.close()
    assert rows(cache.path) == 1  # the older entries went; this run's is there
    assert MetadataCache(tmp_path).get(METADATA_FILE, SHA) == PARSED


def rows(path: Path) -> int:
    with sqlite3.connect(path) as db:
        count = db.execute("SELECT COUNT(*) FROM metadata").fetchone()[0]
    db.close()
    return count


def test_an_entry_that_does_not_read_as_metadata_is_a_miss(tmp_path: Path) -> None:
    cache = MetadataCache(tmp_path)
    cache.put(WHEEL, SHA, PARSED)
    cache.put(WHEEL, "cd" * 32, PARSED)
    cache.save()
    cache.close()
    with sqlite3.connect(cache.path) as db:
        db.execute("UPDATE metadata SET fields = ? WHERE sha256 = ?", ('{"name": "lib", "requires_dist": [1]}', SHA))
        db.execute("UPDATE metadata SET fields = ? WHERE sha256 = ?", ('{"unknown": "field"}', "cd" * 32))
    db.close()
    reopened = MetadataCache(tmp_path)
    assert reopened.get(WHEEL, SHA) is None
    assert reopened.get(WHEEL, "cd" * 32) is None
