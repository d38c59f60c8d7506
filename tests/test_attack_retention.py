"""Attack on retention + verify: whoever can write the database widens a real archive's row
over retained events it does not hold, then deletes those events. ``verify`` must not take
the row's word for what the archive covers."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from auditcore.lifecycle.retention import Retention
from auditcore.lifecycle.tables import ArchiveRow
from tests.integrity_support import Store
from tests.test_retention import ALICE, Row, pruned, store  # noqa: F401  (fixtures)


def test_a_widened_archive_row_does_not_hide_a_deletion(
    pruned: tuple[Store, dict[str, list[Row]], Path],  # noqa: F811
) -> None:
    store_, _, _ = pruned
    with store_.core() as audit:
        for n in range(3):  # acme's newer events, kept by the policy, logged and signed
            audit.record("incident.comment_added", workspace_id="acme", actor=ALICE,
                         metadata={"body": f"kept {n}"})  # fmt: skip
        audit.integrity.sign_now()
    kept = store_.positions_of("acme")  # the prune's own event, then the three
    doomed = kept[:3]
    for position in doomed:
        store_.execute("DELETE FROM {events} WHERE {position} = ?", (position,))
    with store_.core() as audit:
        retention = Retention(audit)
        with Session(retention.engine) as session, session.begin():
            [row] = session.scalars(select(ArchiveRow)).all()
            session.execute(
                update(ArchiveRow)
                .where(ArchiveRow.workspace_id == row.workspace_id)
                .where(ArchiveRow.from_size == row.from_size)
                .values(to_size=row.to_size + 3, last_position=doomed[-1])
            )
        report = audit.integrity.verify(pruned=retention.pruned_ranges())
        retention.check_archives(report, audit.integrity.trusted_keys())
        retention.close()
    assert not report.ok
    assert {p.workspace_id for p in report.problems} == {"acme"}
    assert {p.kind for p in report.problems} & {"archive", "deleted"}, [
        p.describe() for p in report.problems
    ]
