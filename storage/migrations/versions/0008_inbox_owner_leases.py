"""a lease per front end (``inbox_owners``) instead of one per inbox row

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08

- ``inbox_owners``: one row per front end and platform, its ``lease_until`` renewed with one
  upsert a beat (storage.inbox.Inbox.renew); until 0008 every beat rewrote the lease of every
  unfinished inbox row the front end held (thousands in a burst, under SQLite's write lock).
- ``inbox.owner`` / ``inbox.lease_until`` stay. A row's own lease is no longer renewed: it is
  written once, when the row is accepted or taken over, and a row is taken over only once both
  it and its owner's lease lapsed. So nothing is copied here: the rows of 0007 keep the leases
  they have, and a front end still running the code of 0007 (its peers upgrade first; the
  migration runs when a front end starts) keeps its rows by renewing their leases as before, with
  no row in ``inbox_owners`` (a missing row is a lapsed lease). Dropping the column would fail
  that front end's accepts instead.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inbox_owners",
        sa.Column("platform", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(128), primary_key=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    # the rows keep their owner; their leases are as the last accept or take-over wrote them, so a
    # front end of 0007 renews its own or takes over the lapsed (nothing is lost)
    op.drop_table("inbox_owners")
