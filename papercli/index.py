"""The SQLite index under $PAPERCLI_HOME: validated registry files and a full-text index.

The YAML files stay the source of truth: a row is trusted only while its file's mtime and size
match, and, when the file changed within RACY_NS of being indexed (so a same-size edit in the
same clock tick could hide), while its content hash matches too. Deleting the index loses
nothing. Writes happen in one transaction per sync, in WAL mode, so readers never see half an
update and a crash mid-update leaves the previous state. A home we cannot write only costs speed.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

from papercli import paths

# bump when these tables change (3: snapshots; 5: snapshots in parts, see registry.StoredRecords);
# the registry passes its own schema version too
FORMAT = "5"
RACY_NS = 2_000_000_000  # coarse file-system clocks (FAT: 2 s) tick this slowly
# Search columns, each with its bm25 weight: a hit in the id or title counts most.
COLUMNS = (
    ("names", 10.0),
    ("title", 8.0),
    ("authors", 5.0),
    ("tags", 5.0),
    ("summary", 3.0),
    ("key_points", 2.0),
    ("abstract", 2.0),
    ("fulltext", 1.0),
)
HIT_START, HIT_END = "\x02", "\x03"  # snippet markers; render turns them into highlights


def index_path() -> Path:
    return paths.cache_dir() / "index.sqlite3"


def fts5_wanted() -> bool:
    """PAPERCLI_INDEX_FTS=0 forces the plain-table fallback (builds without FTS5 use it anyway)."""
    return os.environ.get("PAPERCLI_INDEX_FTS", "1") != "0"


class Row(NamedTuple):  # not a dataclass: see registry.Claim
    rowid: int
    mtime_ns: int
    size: int
    digest: bytes
    indexed_ns: int
    data: bytes
    doc_sig: str | None


PARALLEL_MIN = 400  # files to check before a second process pays for its start (~30 ms)


def check_all(check: Callable, items: list[tuple[str, bytes | None]]) -> list[tuple[tuple, bytes]]:
    """`check(path, content)` for every item, in order, each with the digest of the content
    checked (b"" when unreadable); an item without content is read first, where it is checked.
    A first run over thousands of files is YAML parsing bound (~300 us a file, mostly in
    libyaml): forked workers share it out over the cores, and read and hash the files too. They
    inherit `items` with the fork and are sent only ranges of it (not ~50 MB of file contents
    through pipes), and return only the stored pairs; a file they find broken is checked again
    here, so its problems (exceptions with their own arguments) never cross a process
    boundary."""
    global _FORKED
    workers = min(os.cpu_count() or 1, 8)
    if len(items) < PARALLEL_MIN or workers < 2 or not hasattr(os, "fork"):
        return [_checked(check, path, content) for path, content in items]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    step = max(16, len(items) // (workers * 8))
    ranges = [(start, min(start + step, len(items))) for start in range(0, len(items), step)]
    _FORKED = (check, items)  # set before the pool forks its workers, which read it
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            done = [pair for part in pool.map(_pairs_in, ranges) for pair in part]
    except (OSError, RuntimeError):  # no processes to be had (limits, sandboxes): do it here
        return [_checked(check, path, content) for path, content in items]
    finally:
        _FORKED = None
    return [
        ((pair, []), digest) if pair is not None else (check(path, content), digest)
        for (pair, digest), (path, content) in zip(done, items, strict=True)
    ]


_FORKED: tuple[Callable, list[tuple[str, bytes | None]]] | None = None


def _checked(check: Callable, path: str, content: bytes | None) -> tuple[tuple, bytes]:
    if content is None:
        try:
            with open(path, "rb") as f:  # not Path(): 10,000 of those cost ~50 ms
                content = f.read()
        except OSError:
            pass  # `check` reads it again and reports why it cannot
    return check(path, content), content_hash(content) if content is not None else b""


def _pairs_in(span: tuple[int, int]) -> list[tuple[object, bytes]]:
    """In a worker: the stored pair (or None) and the digest of each inherited item in span."""
    check, items = _FORKED  # type: ignore[misc]
    out = []
    for path, content in items[span[0] : span[1]]:
        (pair, _), digest = _checked(check, path, content)
        out.append((pair, digest))
    return out


def content_hash(data: bytes) -> bytes:
    import hashlib  # only when a file changed or is racy

    return hashlib.blake2b(data, digest_size=16).digest()


class Index:
    def __init__(self, conn: sqlite3.Connection):
        # path -> (rowid, doc_sig) of the rows sync_directory found current, so that search's
        # sync_docs need not read all of them again (at 10,000 papers that read costs ~60 ms)
        self.current: dict[str, tuple[int, str | None]] = {}
        self.conn = conn
        self.fts = self._docs_table()

    # ------------------------------------------------------------------------- opening
    @classmethod
    def open(cls, schema: int, path: Path | None = None) -> Index | None:
        """The index, created (or rebuilt, when `schema`, the version of the stored paper
        dicts, changed) as needed; None when it cannot be opened at all."""
        path = path or index_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, timeout=5.0, isolation_level=None)
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL keeps commits atomic with this
            return cls(cls._ready(conn, schema))
        except sqlite3.OperationalError:
            return None  # busy or locked past the timeout: this run goes without the index
        except sqlite3.DatabaseError:
            try:  # a damaged file: it only holds what the YAML files say, so start again
                path.unlink(missing_ok=True)
                conn = sqlite3.connect(path, timeout=5.0, isolation_level=None)
                return cls(cls._ready(conn, schema))
            except (OSError, sqlite3.Error):
                return None
        except OSError:
            return None

    @staticmethod
    def _ready(conn: sqlite3.Connection, schema: int) -> sqlite3.Connection:
        want = f"{FORMAT}.{schema}:{'fts5' if fts5_wanted() else 'plain'}"
        try:
            found = conn.execute("SELECT value FROM meta WHERE key='format'").fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise  # busy, locked: never rebuild an index another process is using
            found = None
        if found and found[0] == want:
            return conn
        # 16 KiB pages (for a new file; before WAL, which fixes it): the listing snapshot and
        # the documents span a quarter of the pages a read must visit at SQLite's default 4 KiB
        conn.execute("PRAGMA page_size=16384")
        # WAL (a property of the file, so set once here): readers go on while one writes
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            for table in ("files", "docs", "meta", "snapshots"):
                conn.execute(f"DROP TABLE IF EXISTS {table}")
            conn.execute("CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT)")
            conn.execute(
                "CREATE TABLE files(rowid INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL,"
                " dir TEXT NOT NULL, mtime_ns INTEGER, size INTEGER, digest BLOB,"
                " indexed_ns INTEGER, data BLOB, light BLOB, doc_sig TEXT)"
            )
            conn.execute("CREATE INDEX files_dir ON files(dir)")
            conn.execute(
                "CREATE TABLE snapshots(name TEXT PRIMARY KEY, signature BLOB,"
                " made_ns INTEGER, data BLOB)"
            )
            cols = ", ".join(name for name, _ in COLUMNS)
            if fts5_wanted() and _has_fts5(conn):
                conn.execute(
                    f"CREATE VIRTUAL TABLE docs USING fts5({cols},"
                    " tokenize='unicode61 remove_diacritics 2')"
                )
            else:
                conn.execute(f"CREATE TABLE docs(rowid INTEGER PRIMARY KEY, {cols})")
            conn.execute("INSERT INTO meta VALUES('format', ?)", (want,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return conn

    def _docs_table(self) -> bool:
        sql = self.conn.execute("SELECT sql FROM sqlite_master WHERE name='docs'").fetchone()
        return bool(sql) and "fts5" in sql[0].lower()

    def close(self) -> None:
        self.conn.close()

    # ------------------------------------------------------------------------- registry files
    def sync_directory(
        self,
        directory: Path,
        entries: list[os.DirEntry],
        check: Callable[[str, bytes | None], tuple[tuple[bytes, bytes] | None, list]],
        *,
        light: bool = False,
    ) -> tuple[list[bytes], list]:
        """The stored paper of every file in `entries` (checked again where it changed), and
        every problem of the broken ones. `check(path, content)` returns the paper, marshalled
        in full and in its light form (what a listing needs: far cheaper to load), or None
        with its problems; `light` picks which is returned. Broken files are never stored, so
        they are reported each run. Stale rows are replaced and rows of vanished files dropped
        in one transaction."""
        key = str(directory)
        make = tuple.__new__  # see registry.scan_directory
        rows = {
            row[0]: make(Row, row[1:])
            for row in self.conn.execute(
                "SELECT path, rowid, mtime_ns, size, digest, indexed_ns,"
                f" {'light' if light else 'data'}, doc_sig FROM files WHERE dir=?",
                (key,),
            )
        }
        now = time.time_ns()
        out: list[bytes | None] = []
        problems: list = []
        upserts: list[tuple] = []
        touched: list[tuple] = []
        gone: list[int] = []
        pending: list[
            tuple
        ] = []  # files to check: (slot in out, entry, stat, row, content, digest)
        for entry in entries:
            st = entry.stat()
            row = rows.pop(entry.path, None)
            same_stat = row is not None and (row.mtime_ns, row.size) == (st.st_mtime_ns, st.st_size)
            if same_stat and st.st_mtime_ns + RACY_NS < row.indexed_ns:
                out.append(row.data)
                self.current[entry.path] = (row.rowid, row.doc_sig)
                continue
            content: bytes | None = None  # a new file is read where it is checked
            if row is not None:
                try:
                    with open(entry.path, "rb") as f:
                        content = f.read()
                except OSError:
                    pass  # `check` reads it again and reports why it cannot
                if content is not None and row.digest == content_hash(content):
                    out.append(row.data)  # touched, or racy but unchanged
                    touched.append((st.st_mtime_ns, st.st_size, now, row.rowid))
                    continue
            pending.append((len(out), entry, st, row, content))
            out.append(None)  # filled in file order below, so the same file wins a clash
        checked = check_all(check, [(e.path, content) for _, e, _, _, content in pending])
        for (slot, entry, st, row, _), ((pair, found), digest) in zip(
            pending, checked, strict=True
        ):
            problems += found
            if row is not None:
                gone.append(row.rowid)  # replaced below, or valid before and broken now
            if pair is not None:
                out[slot] = pair[1] if light else pair[0]
                upserts.append((entry.path, key, st.st_mtime_ns, st.st_size, digest, now, *pair))
        gone += [row.rowid for row in rows.values()]  # files that are no longer there
        if upserts or touched or gone:
            self._write(upserts, touched, gone)
        return [b for b in out if b is not None], problems

    def _write(self, upserts: list[tuple], touched: list[tuple], gone: list[int]) -> None:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return  # another process holds the write lock past the timeout: try next run
        try:
            # this folder's rows are in `gone`; a file may also have one stored under another
            # name of its folder, or by search outside any folder (see sync_docs)
            strays = {}
            if upserts:
                strays = dict(
                    self.conn.execute(
                        "SELECT path, rowid FROM files WHERE dir!=?", (upserts[0][1],)
                    )
                )
            drop = gone + [strays[u[0]] for u in upserts if u[0] in strays]
            self.conn.executemany("DELETE FROM files WHERE rowid=?", [(r,) for r in drop])
            self.conn.executemany("DELETE FROM docs WHERE rowid=?", [(r,) for r in drop])
            self.conn.executemany(
                "INSERT INTO files(path, dir, mtime_ns, size, digest, indexed_ns, data, light)"
                " VALUES (?,?,?,?,?,?,?,?)",
                upserts,
            )
            self.conn.executemany(
                "UPDATE files SET mtime_ns=?, size=?, indexed_ns=? WHERE rowid=?", touched
            )
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def paper_data(self, path: str) -> bytes | None:
        """The full stored paper of one file (current once a load has synced its folder)."""
        row = self.conn.execute("SELECT data FROM files WHERE path=?", (path,)).fetchone()
        return row[0] if row else None

    def _all_rows(self) -> dict[str, tuple[int, str | None]]:
        """path -> (rowid, doc_sig) of every stored file."""
        return {
            path: (rowid, sig)
            for path, rowid, sig in self.conn.execute("SELECT path, rowid, doc_sig FROM files")
        }

    def rowids(self, paths: list[str]) -> list[int] | None:
        """The rows of these files, in order; None if one has none."""
        found = self._all_rows()
        rows = [found[path][0] if path in found else None for path in paths]
        return None if None in rows else rows  # type: ignore[return-value]

    # ------------------------------------------------------------------------- snapshots
    def snapshot(self, name: str, signature: bytes) -> bytes | None:
        """A stored snapshot, if made from files of this `signature` (store_snapshot keeps only
        those whose files were all older than RACY_NS, so an equal signature is trusted)."""
        row = self.conn.execute(
            "SELECT signature, data FROM snapshots WHERE name=?", (name,)
        ).fetchone()
        return row[1] if row is not None and row[0] == signature else None

    def store_snapshot(self, parts: dict[str, bytes], signature: bytes, newest_ns: int) -> None:
        """Store a snapshot's parts (name -> data), all in one transaction, unless its newest
        file (changed at `newest_ns`) is within RACY_NS of now: a same-size edit in the same
        clock tick could then hide behind its signature."""
        now = time.time_ns()
        if newest_ns + RACY_NS >= now:
            return  # a file this recent could change unseen within a clock tick: next run
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return  # locked past the timeout by another writer: the next run stores it
        try:
            self.conn.executemany(
                "INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?, ?)",
                [(name, signature, now, data) for name, data in parts.items()],
            )
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def light_records(self, rowids: list[int]) -> dict[int, bytes]:
        """rowid -> the stored light record (see sync_directory) of some files."""
        out: dict[int, bytes] = {}
        for start in range(0, len(rowids), 900):  # SQLite's limit on bound parameters
            chunk = rowids[start : start + 900]
            sql = f"SELECT rowid, light FROM files WHERE rowid IN ({', '.join('?' * len(chunk))})"
            out.update(self.conn.execute(sql, chunk))
        return out

    # ------------------------------------------------------------------------- search documents
    def docs_current(self, signature: bytes) -> bool:
        """Whether the last complete sync_docs was given this `signature`."""
        row = self.conn.execute("SELECT value FROM meta WHERE key='docs'").fetchone()
        return row is not None and row[0] == signature.hex()

    def sync_docs(
        self,
        docs: dict[str, str],
        build: Callable[[bytes | None, str], dict[str, str]],
        signature: bytes | None = None,
    ) -> dict[str, int]:
        """Keep one search document per served file. `docs` maps a file's path to a signature
        of what its document holds; where that changed, `build(stored paper or None, path)`
        makes the document's columns again. Returns path -> rowid. `signature`, of everything
        `docs` was made from, is recorded once all are current (see docs_current)."""
        mark = ("docs", signature.hex() if signature else "")
        have = self.current
        if any(path not in have for path in docs):  # rows this process did not read yet
            have = self._all_rows()
        have = dict(have)
        changed = [
            (path, sig) for path, sig in docs.items() if path not in have or have[path][1] != sig
        ]
        if not changed and signature is not None and not self.docs_current(signature):
            try:
                self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", mark)
            except sqlite3.OperationalError:
                pass  # locked: the next search records it
        if changed:
            names = [name for name, _ in COLUMNS]
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:
                return {path: have[path][0] for path in docs if path in have}
            try:
                for path, sig in changed:
                    if path not in have:  # a file the registry did not store (no index home)
                        cur = self.conn.execute(
                            "INSERT INTO files(path, dir) VALUES (?, '')", (path,)
                        )
                        have[path] = (cur.lastrowid, None)
                    rowid = have[path][0]
                    stored = self.conn.execute("SELECT data FROM files WHERE rowid=?", (rowid,))
                    cols = build(stored.fetchone()[0], path)
                    self.conn.execute("DELETE FROM docs WHERE rowid=?", (rowid,))
                    self.conn.execute(
                        f"INSERT INTO docs(rowid, {', '.join(names)})"
                        f" VALUES (?{', ?' * len(names)})",
                        (rowid, *(cols.get(n, "") for n in names)),
                    )
                    self.conn.execute("UPDATE files SET doc_sig=? WHERE rowid=?", (sig, rowid))
                self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", mark)
                self.conn.execute("COMMIT")
                self.current.update((path, (have[path][0], sig)) for path, sig in changed)
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
        return {path: have[path][0] for path in docs if path in have}

    def match(self, fts_query: str) -> list[tuple[int, float]]:
        """(rowid, bm25 score, higher is better) of every document matching an FTS5 query."""
        weights = ", ".join(str(w) for _, w in COLUMNS)
        return [
            (rowid, -score)
            for rowid, score in self.conn.execute(
                f"SELECT rowid, bm25(docs, {weights}) FROM docs WHERE docs MATCH ?",
                (fts_query,),
            )
        ]

    def snippets(self, fts_query: str, rowids: list[int], words: int = 12) -> dict[int, str]:
        marks = "?, ?, '…', ?"
        sql = (
            f"SELECT rowid, snippet(docs, -1, {marks}) FROM docs WHERE docs MATCH ?"
            f" AND rowid IN ({', '.join('?' * len(rowids))})"
        )
        return dict(self.conn.execute(sql, (HIT_START, HIT_END, words, fts_query, *rowids)))

    def documents(self, rowids: Iterable[int]) -> dict[int, dict[str, str]]:
        """The stored columns of some documents (the fallback ranks these in Python)."""
        names = [name for name, _ in COLUMNS]
        ids = list(rowids)
        out: dict[int, dict[str, str]] = {}
        for start in range(0, len(ids), 900):  # SQLite's limit on bound parameters
            chunk = ids[start : start + 900]
            sql = (
                f"SELECT rowid, {', '.join(names)} FROM docs"
                f" WHERE rowid IN ({', '.join('?' * len(chunk))})"
            )
            for rowid, *cols in self.conn.execute(sql, chunk):
                out[rowid] = dict(zip(names, cols, strict=True))
        return out


def _has_fts5(conn: sqlite3.Connection) -> bool:
    try:
        conn.execute("CREATE VIRTUAL TABLE temp.fts5_probe USING fts5(x)")
        conn.execute("DROP TABLE temp.fts5_probe")
        return True
    except sqlite3.OperationalError:
        return False
