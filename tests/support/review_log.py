"""The decision log's invariants, checked straight in the database (one consistent snapshot).

For every image: its log entries (in id order) form a continuous chain — the first entry's
`from_status` is the status the image was created with (pending), each next entry's `from_status`
is the previous entry's `to_status` — and its status is the last entry's `to_status` (pending
when it has none); `decided_at` is set exactly when it is not pending. Feedback rows exist exactly
for the rejection entries of a character that remain in the log, one each, for the same image."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from types import SimpleNamespace

import sqlalchemy as sa


@dataclass
class LogReport:
    images: int = 0
    entries: int = 0
    broken_links: int = 0  # entries whose from_status is not the previous entry's to_status
    status_mismatches: int = 0  # images whose status is not their last entry's to_status
    decided_at_wrong: int = 0
    feedback_mismatches: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.broken_links or self.status_mismatches or self.decided_at_wrong or self.feedback_mismatches)

    def summary(self) -> str:
        return (f"{self.images} images, {self.entries} log entries: {self.broken_links} broken links, "
                f"{self.status_mismatches} status mismatches, {self.decided_at_wrong} wrong decided_at, "
                f"{self.feedback_mismatches} feedback mismatches; first problems: {self.problems[:5]}")


def _rows(cur, query: str) -> list:
    cur.execute(query)
    names = [d[0] for d in cur.description]
    return [SimpleNamespace(**dict(zip(names, r, strict=True))) for r in cur.fetchall()]


def _problem(report: LogReport, kind: str, text: str) -> None:
    setattr(report, kind, getattr(report, kind) + 1)
    if len(report.problems) < 50:
        report.problems.append(text)


def check_decision_log(engine: sa.Engine, created_status: str = "pending") -> LogReport:
    """Read images, the log and feedback in one snapshot (REPEATABLE READ on PostgreSQL; SQLite's
    transactions are serialised) and count every broken invariant."""
    queries = ("SELECT id, status, decided_at FROM images",
               "SELECT id, image_id, character_id, from_status, to_status, feedback_id FROM image_decisions ORDER BY id",
               "SELECT id, image_id FROM feedback")
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn, conn.begin():
            images, entries, feedback = (conn.execute(sa.text(q)).all() for q in queries)
    else:  # a deferred read transaction: one WAL snapshot, without queueing for the write lock
        raw = engine.raw_connection()
        try:
            cur = raw.cursor()
            cur.execute("BEGIN")
            images, entries, feedback = (_rows(cur, q) for q in queries)
            cur.execute("COMMIT")
        finally:
            raw.close()
    report = LogReport(images=len(images), entries=len(entries))
    chains: dict[int, list] = {}
    for e in entries:
        chains.setdefault(e.image_id, []).append(e)
    for image in images:
        chain = chains.get(image.id, [])
        previous = created_status
        for e in chain:
            if e.from_status != previous:
                _problem(report, "broken_links", f"image {image.id}: entry {e.id} goes {e.from_status}->{e.to_status} "
                                                 f"after {previous}")
            previous = e.to_status
        if image.status != previous:
            _problem(report, "status_mismatches", f"image {image.id} is {image.status}, its log ends at {previous}")
        if (image.status == "pending") != (image.decided_at is None):
            _problem(report, "decided_at_wrong", f"image {image.id} is {image.status}, decided_at {image.decided_at}")
    wanted = Counter(e.feedback_id for e in entries if e.to_status == "rejected" and e.character_id is not None)
    if None in wanted:
        _problem(report, "feedback_mismatches", f"{wanted[None]} rejection entries without a feedback row")
    entry_image = {e.feedback_id: e.image_id for e in entries if e.feedback_id is not None}
    stray = [e.id for e in entries if e.feedback_id is not None and e.to_status != "rejected"]
    if stray:
        _problem(report, "feedback_mismatches", f"entries {stray[:10]} link feedback but are no rejection")
    rows = {f.id: f.image_id for f in feedback}
    for fid, n in wanted.items():
        if fid is not None and (n > 1 or fid not in rows or rows[fid] != entry_image[fid]):
            _problem(report, "feedback_mismatches", f"feedback {fid}: {n} entries, row for image {rows.get(fid)}")
    orphans = set(rows) - set(wanted)
    if orphans:
        _problem(report, "feedback_mismatches", f"{len(orphans)} feedback rows no log entry explains: "
                                                f"{sorted(orphans)[:10]}")
    return report
