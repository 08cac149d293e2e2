"""The study database: one SQLite file (``<study>/study.sqlite``, WAL journal, full sync) holding
the items, their blinded panels and segments, the annotators and every answer.

Tables::

    meta(key, value)                       seed, method names, creation settings (JSON values)
    methods(id, name, folder)              the compared prediction folders
    items(id, position, class_code, class_name, image_id, object_index, context_file)
    panels(id, item_id, method_id, slot, image_file, num_segments)      slot = blinded position
    segments(id, panel_id, number, area)   number = the id shown in the panel's legend (1..n)
    annotators(id, name, created)
    submissions(id, annotator_id, item_id, created, undone)             one saved item
    panel_answers(submission_id, panel_id, splits, num_parts)
    segment_answers(submission_id, segment_id, meaningful)

An undone submission stays in the file (``undone`` = its time) and no longer counts; at most one
active submission per (annotator, item). Every write is one transaction committed before the call
returns, so killing the server loses nothing that was acknowledged.
"""
import json
import os
import sqlite3
import time
from typing import Dict, List, Optional

DB_NAME = "study.sqlite"
IMAGES_DIR = "images"  # the only folder the server serves

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE methods (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, folder TEXT NOT NULL);
CREATE TABLE items (id INTEGER PRIMARY KEY, position INTEGER NOT NULL UNIQUE, class_code TEXT NOT NULL,
                    class_name TEXT NOT NULL, image_id TEXT NOT NULL, object_index INTEGER NOT NULL,
                    context_file TEXT NOT NULL);
CREATE TABLE panels (id INTEGER PRIMARY KEY, item_id INTEGER NOT NULL REFERENCES items(id),
                     method_id INTEGER NOT NULL REFERENCES methods(id), slot INTEGER NOT NULL,
                     image_file TEXT NOT NULL, num_segments INTEGER NOT NULL,
                     UNIQUE (item_id, slot), UNIQUE (item_id, method_id));
CREATE TABLE segments (id INTEGER PRIMARY KEY, panel_id INTEGER NOT NULL REFERENCES panels(id),
                       number INTEGER NOT NULL, area INTEGER NOT NULL, UNIQUE (panel_id, number));
CREATE TABLE annotators (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created REAL NOT NULL);
CREATE TABLE submissions (id INTEGER PRIMARY KEY, annotator_id INTEGER NOT NULL REFERENCES annotators(id),
                          item_id INTEGER NOT NULL REFERENCES items(id), created REAL NOT NULL,
                          undone REAL);
CREATE UNIQUE INDEX one_active_submission ON submissions (annotator_id, item_id) WHERE undone IS NULL;
CREATE TABLE panel_answers (submission_id INTEGER NOT NULL REFERENCES submissions(id),
                            panel_id INTEGER NOT NULL REFERENCES panels(id),
                            splits INTEGER NOT NULL CHECK (splits IN (0, 1)),
                            num_parts INTEGER NOT NULL CHECK (num_parts >= 0),
                            PRIMARY KEY (submission_id, panel_id));
CREATE TABLE segment_answers (submission_id INTEGER NOT NULL REFERENCES submissions(id),
                              segment_id INTEGER NOT NULL REFERENCES segments(id),
                              meaningful INTEGER NOT NULL CHECK (meaningful IN (0, 1)),
                              PRIMARY KEY (submission_id, segment_id));
"""


class StudyError(ValueError):
    """A study folder is missing, incomplete or not a study; or an answer does not fit it."""


def connect(study_dir: str, create: bool = False, path: Optional[str] = None) -> sqlite3.Connection:
    """Open ``<study_dir>/study.sqlite`` (or ``path``) in WAL mode with full sync and foreign keys;
    rows come as :class:`sqlite3.Row`. Raises :class:`StudyError` when the file does not exist and
    ``create`` is False."""
    path = path or os.path.join(study_dir, DB_NAME)
    if not create and not os.path.isfile(path):
        raise StudyError(f"{study_dir}: not a manual-evaluation study (no {DB_NAME}; run "
                         "tools/manual_eval.py prepare first)")
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def meta(conn: sqlite3.Connection) -> Dict[str, object]:
    """The ``meta`` table as ``{key: decoded JSON value}``."""
    return {r["key"]: json.loads(r["value"]) for r in conn.execute("SELECT key, value FROM meta")}


def item_view(conn: sqlite3.Connection, item_id: int) -> Optional[dict]:
    """An item as shown to annotators (no method names): ``{"item_id", "position", "class_name",
    "context", "panels": [{"panel_id", "slot", "image", "num_segments", "segments": [{"segment_id",
    "number"}]}]}`` with image paths relative to the study folder; None if there is no such item."""
    item = conn.execute("SELECT * FROM items WHERE id = ?", (item_id,)).fetchone()
    if item is None:
        return None
    panels = []
    for p in conn.execute("SELECT * FROM panels WHERE item_id = ? ORDER BY slot", (item_id,)):
        segs = [{"segment_id": s["id"], "number": s["number"]} for s in
                conn.execute("SELECT id, number FROM segments WHERE panel_id = ? ORDER BY number", (p["id"],))]
        panels.append({"panel_id": p["id"], "slot": p["slot"], "image": p["image_file"],
                       "num_segments": p["num_segments"], "segments": segs})
    return {"item_id": item["id"], "position": item["position"], "class_name": item["class_name"],
            "context": item["context_file"], "panels": panels}


def annotator_id(conn: sqlite3.Connection, name: str, create: bool = False) -> Optional[int]:
    """Id of annotator ``name`` (created when ``create``); None when unknown."""
    row = conn.execute("SELECT id FROM annotators WHERE name = ?", (name,)).fetchone()
    if row is None and create:
        conn.execute("INSERT OR IGNORE INTO annotators (name, created) VALUES (?, ?)", (name, time.time()))
        row = conn.execute("SELECT id FROM annotators WHERE name = ?", (name,)).fetchone()
    return None if row is None else int(row["id"])


def next_item(conn: sqlite3.Connection, annotator: int) -> Optional[int]:
    """The first item (by position) the annotator has no active submission for; None when done."""
    row = conn.execute("SELECT id FROM items WHERE id NOT IN (SELECT item_id FROM submissions WHERE "
                       "annotator_id = ? AND undone IS NULL) ORDER BY position LIMIT 1", (annotator,)).fetchone()
    return None if row is None else int(row["id"])


def progress(conn: sqlite3.Connection, annotator: int) -> Dict[str, int]:
    """``{"done": items saved by the annotator, "total": items in the study}``."""
    done = conn.execute("SELECT COUNT(*) FROM submissions WHERE annotator_id = ? AND undone IS NULL",
                        (annotator,)).fetchone()[0]
    return {"done": int(done), "total": int(conn.execute("SELECT COUNT(*) FROM items").fetchone()[0])}


def save_answer(conn: sqlite3.Connection, annotator: int, item_id: int, panels: List[dict]) -> int:
    """Validate and store one item's answers in one transaction; returns the submission id.

    ``panels``: one ``{"panel_id": int, "splits": bool, "num_parts": int, "segments":
    [{"segment_id": int, "meaningful": bool}]}`` per panel of the item, each segment of the panel
    answered exactly once, ``0 <= num_parts <= num_segments``. Raises :class:`StudyError` (nothing
    written) naming what does not fit: unknown item / panel / segment, a missing or repeated
    answer, a value out of range, or an item the annotator has already saved.
    """
    view = item_view(conn, item_id)
    if view is None:
        raise StudyError(f"no item {item_id}")
    want = {p["panel_id"]: p for p in view["panels"]}
    got = [p["panel_id"] for p in panels]
    if sorted(got) != sorted(want):
        raise StudyError(f"item {item_id} has panels {sorted(want)}, the answer gives {got}")
    for p in panels:
        panel = want[p["panel_id"]]
        if not isinstance(p["splits"], bool):
            raise StudyError(f"panel {p['panel_id']}: 'splits' must be true or false")
        n = p["num_parts"]
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= panel["num_segments"]:
            raise StudyError(f"panel {p['panel_id']}: num_parts {n!r} outside 0..{panel['num_segments']} "
                             "(the number of segments it shows)")
        seg_ids = sorted(s["segment_id"] for s in panel["segments"])
        answered = [s["segment_id"] for s in p["segments"]]
        if sorted(answered) != seg_ids:
            raise StudyError(f"panel {p['panel_id']} has segments {seg_ids}, the answer gives {answered}")
        if any(not isinstance(s["meaningful"], bool) for s in p["segments"]):
            raise StudyError(f"panel {p['panel_id']}: 'meaningful' must be true or false")
    try:
        conn.execute("BEGIN IMMEDIATE")
        cur = conn.execute("INSERT INTO submissions (annotator_id, item_id, created) VALUES (?, ?, ?)",
                           (annotator, item_id, time.time()))
        sub = cur.lastrowid
        for p in panels:
            conn.execute("INSERT INTO panel_answers VALUES (?, ?, ?, ?)",
                         (sub, p["panel_id"], int(p["splits"]), int(p["num_parts"])))
            conn.executemany("INSERT INTO segment_answers VALUES (?, ?, ?)",
                             [(sub, s["segment_id"], int(s["meaningful"])) for s in p["segments"]])
        conn.execute("COMMIT")
    except sqlite3.IntegrityError:
        conn.execute("ROLLBACK")
        raise StudyError(f"item {item_id} is already saved for this annotator (undo it first)") from None
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return int(sub)


def undo_last(conn: sqlite3.Connection, annotator: int) -> Optional[int]:
    """Mark the annotator's latest active submission undone; returns its item id (None if none)."""
    conn.execute("BEGIN IMMEDIATE")
    row = conn.execute("SELECT id, item_id FROM submissions WHERE annotator_id = ? AND undone IS NULL "
                       "ORDER BY created DESC, id DESC LIMIT 1", (annotator,)).fetchone()
    if row is not None:
        conn.execute("UPDATE submissions SET undone = ? WHERE id = ?", (time.time(), row["id"]))
    conn.execute("COMMIT")
    return None if row is None else int(row["item_id"])


def answer_rows(conn: sqlite3.Connection) -> List[dict]:
    """Every active panel answer with its context: ``{"annotator", "item_id", "class_code",
    "method", "panel_id", "splits", "num_parts", "shown", "accepted"}`` (``shown``: segments of the
    panel, ``accepted``: those answered meaningful)."""
    rows = conn.execute("""
        SELECT a.name AS annotator, i.id AS item_id, i.class_code, m.name AS method, p.id AS panel_id,
               pa.splits, pa.num_parts, p.num_segments AS shown,
               (SELECT COALESCE(SUM(sa.meaningful), 0) FROM segment_answers sa JOIN segments s
                  ON s.id = sa.segment_id WHERE sa.submission_id = sub.id AND s.panel_id = p.id) AS accepted
        FROM submissions sub JOIN annotators a ON a.id = sub.annotator_id
        JOIN items i ON i.id = sub.item_id JOIN panel_answers pa ON pa.submission_id = sub.id
        JOIN panels p ON p.id = pa.panel_id JOIN methods m ON m.id = p.method_id
        WHERE sub.undone IS NULL ORDER BY sub.id, p.slot""")
    return [dict(r) for r in rows]


def segment_rows(conn: sqlite3.Connection) -> List[dict]:
    """Every active segment answer: ``{"annotator", "segment_id", "meaningful"}``."""
    return [dict(r) for r in conn.execute("""
        SELECT a.name AS annotator, sa.segment_id, sa.meaningful FROM segment_answers sa
        JOIN submissions sub ON sub.id = sa.submission_id JOIN annotators a ON a.id = sub.annotator_id
        WHERE sub.undone IS NULL""")]
