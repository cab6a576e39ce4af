"""Migration 0007 on a database with per-user data (SQLite and PostgreSQL): personas, products
and posts move into their owners' workspaces without loss; clashing names get a suffix and a
notice for their owner; posts, turns and jobs survive; a downgrade gives per-user data back."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from storage.db import Database
from storage.repository import Store

BEFORE = "0005"

USERS = [  # id, platform, platform id, display name
    (1, "console", "ann", "Ann"),
    (2, "console", "bob", "Bob"),
    (3, "wecom", "zhang", "张三"),
    (4, "wecom", "li", "李四"),
    (5, "discord", "555", "Dee"),
]
PERSONAS = [  # id, owner, name, deleted
    (1, 1, "Mia", False),
    (2, 2, "mia", False),  # clashes with Ann's Mia in `local`: becomes mia-2
    (3, 2, "Zoe", False),
    (4, 1, "Zoe", True),  # deleted: keeps its name, clashes with nothing
    (5, 3, "Mia", False),
    (6, 4, "MIA", False),  # clashes in the WeCom company
    (7, 5, "Mia", False),  # alone in Dee's personal workspace
]
PRODUCTS = [(1, 1, "mug"), (2, 2, "Mug"), (3, 4, "bag")]


async def _per_user_data(db: Database) -> None:
    async with db.session() as s:
        for uid, platform, pid, display in USERS:
            await s.execute(
                text(
                    "INSERT INTO users (id, platform, platform_user_id, display_name, settings, created_at)"
                    " VALUES (:id, :p, :pid, :d, '{}', CURRENT_TIMESTAMP)"
                ),
                {"id": uid, "p": platform, "pid": pid, "d": display},
            )
        for pid, owner, name, deleted in PERSONAS:
            await s.execute(
                text(
                    "INSERT INTO personas (id, owner_id, name, name_key, archetype, lora_mix, seed, reference_key,"
                    " status, versions, active_version, created_at, deleted_at) VALUES (:id, :o, :n, :k, 'sweet',"
                    " '[]', 7, :ref, 'ready', '[{\"version\": 1}]', 1, CURRENT_TIMESTAMP,"
                    + (" CURRENT_TIMESTAMP)" if deleted else " NULL)")
                ),
                {"id": pid, "o": owner, "n": name, "k": name.casefold(), "ref": f"portrait{pid}"},
            )
        for pid, owner, name in PRODUCTS:
            await s.execute(
                text(
                    "INSERT INTO products (id, owner_id, name, name_key, image_key, created_at)"
                    " VALUES (:id, :o, :n, :k, :img, CURRENT_TIMESTAMP)"
                ),
                {"id": pid, "o": owner, "n": name, "k": name.casefold(), "img": f"image{pid}"},
            )
        await s.execute(
            text(
                "INSERT INTO jobs (id, kind, status, progress, spec, platform, attempts, delivered, created_at)"
                " VALUES ('j1', 'edit', 'done', 1.0, '{}', 'console', 1, true, CURRENT_TIMESTAMP)"
            )
        )
        await s.execute(
            text(
                'INSERT INTO threads (id, platform, owner_id, persona_id, title, prompt, "references", settings,'
                " status, created_at, updated_at) VALUES (1, 'console', 2, 2, 't', 'a latte', '[]', '{}', 'approved',"
                " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
        for tid, parent in ((1, None), (2, 1)):
            await s.execute(
                text(
                    "INSERT INTO turns (id, thread_id, parent_id, kind, instruction, seed, params, image_keys,"
                    ' identity_scores, "references", status, job_id, approved, created_at) VALUES (:id, 1, :parent,'
                    " 'edit', 'x', 1, '{}', '[\"k\"]', '[]', '[]', 'done', 'j1', :approved, CURRENT_TIMESTAMP)"
                ),
                {"id": tid, "parent": parent, "approved": tid == 2},
            )
        await s.execute(text("UPDATE jobs SET thread_id = 1"))
        await s.execute(text("UPDATE threads SET current_turn_id = 2 WHERE id = 1"))


async def _rows(db: Database, sql: str) -> list[tuple[Any, ...]]:
    async with db.read() as s:
        return [tuple(r) for r in (await s.execute(text(sql))).all()]


async def test_0007_moves_per_user_data_into_workspaces(database_url: str) -> None:
    db = Database(database_url)
    try:
        await db.upgrade(BEFORE)
        await _per_user_data(db)
        await db.upgrade()
        store = Store(db)
        local = await store.workspace("console", "local")
        ann, bob, zhang, li, dee = [await store.get_user(uid) for uid, *_ in USERS]

        # every persona kept its row, id, portrait and versions; the second Mia of a workspace is renamed
        rows = await _rows(db, "SELECT id, workspace_id, owner_id, name, reference_key, active_version FROM personas")
        by_id = {r[0]: r for r in rows}
        assert len(rows) == len(PERSONAS)
        assert [by_id[i][3] for i in range(1, 8)] == ["Mia", "mia-2", "Zoe", "Zoe", "Mia", "MIA-2", "Mia"]
        assert all(by_id[i][4] == f"portrait{i}" and by_id[i][5] == 1 for i in by_id)
        assert {by_id[i][1] for i in (1, 2, 3, 4)} == {local.id}
        company = by_id[5][1]
        assert by_id[6][1] == company and company != local.id
        personal = await store.get_workspace(by_id[7][1])
        assert (personal.platform, personal.external_id, personal.personal) == ("discord", "dm:555", True)
        assert [p.id for p in await store.list_personas_in(local.id)] == [1, 2, 3]
        assert (await store.find_persona_in(local.id, "MIA-2")).owner_id == bob.id  # the name rule holds

        # products too
        assert [(p.name, p.owner_id) for p in await store.list_products_in(local.id)] == [
            ("mug", ann.id),
            ("Mug-2", bob.id),
        ]
        assert [p.name for p in await store.list_products_in(company)] == ["bag"]

        # the owners of renamed things hear it once, with their next command; Dee where hers went
        bob_notes = await store.take_notices(bob.id)
        assert len(bob_notes) == 2 and "“mia” is now called “mia-2”" in bob_notes[0] and "Mug-2" in bob_notes[1]
        assert await store.take_notices(bob.id) == []
        assert "“MIA” is now called “MIA-2”" in (await store.take_notices(li.id))[0]
        assert await store.take_notices(ann.id) == [] and await store.take_notices(zhang.id) == []
        assert "personal workspace" in (await store.take_notices(dee.id))[0]

        # members: both console users in local, the personal workspace's user its admin
        assert {(m.user.id, m.role) for m in await store.members(local.id)} == {(ann.id, "member"), (bob.id, "member")}
        assert [(m.user.id, m.role) for m in await store.members(personal.id)] == [(dee.id, "admin")]

        # the post, its turns, its job and its approval survive; the post has a workspace and a log
        thread = await store.thread_in(local.id, 1)
        assert thread is not None and thread.owner_id == bob.id and thread.current_turn_id == 2
        assert [(t.id, t.approved) for t in await store.turns(1)] == [(1, False), (2, True)]
        assert (await store.get_job("j1")).thread_id == 1
        log = await store.activity(1)
        assert [(e.who, e.action, e.detail) for e in log] == [("Bob", "created", "a latte")]

        # the WeCom company was stored unbound: its first event binds it (nothing is lost)
        bound = await store.workspace("wecom", "ww-corp-1")
        assert bound.id == company
        assert (await store.workspace("wecom", "ww-corp-1")).id == company
        assert [p.id for p in await store.list_personas_in(bound.id)] == [5, 6]
    finally:
        await db.dispose()


async def test_0007_with_known_homes_and_back_down(database_url: str) -> None:
    """Known corp and guild ids name the workspaces; the downgrade returns per-user names."""
    db = Database(database_url)
    try:
        await db.upgrade(BEFORE)
        await _per_user_data(db)
        await db.upgrade(home_workspaces={"wecom": "ww-corp-1", "discord": "9001"})
        store = Store(db)
        guild = await store.workspace("discord", "9001")
        assert [p.id for p in await store.list_personas_in(guild.id)] == [7]
        assert [m.role for m in await store.members(guild.id)] == ["member"]
        company = await store.workspace("wecom", "ww-corp-1")
        assert [p.name for p in await store.list_personas_in(company.id)] == ["Mia", "MIA-2"]
        assert await store.take_notices(5) == []  # Dee's personas are in her server: nothing to tell

        await db.downgrade(BEFORE)
        assert await db.current_revision() == BEFORE
        rows = await _rows(db, "SELECT id, owner_id, name FROM personas ORDER BY id")
        assert [r[2] for r in rows] == ["Mia", "mia-2", "Zoe", "Zoe", "Mia", "MIA-2", "Mia"]
        assert len(await _rows(db, "SELECT id FROM turns")) == 2
        await db.upgrade()  # and up again
        assert await db.current_revision() is not None
    finally:
        await db.dispose()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_0007_on_an_empty_database(database_url: str) -> None:
    db = Database(database_url)
    try:
        await db.upgrade()
        assert await _rows(db, "SELECT id FROM workspaces") == []
    finally:
        await db.dispose()


def test_the_settings_name_the_homes_of_wecom_and_a_single_discord_server() -> None:
    from storage.workspace_keys import configured_homes

    assert configured_homes("ww-corp-1", [9001]) == {"wecom": "ww-corp-1", "discord": "9001"}
    assert configured_homes(None, [9001, 9002]) == {}  # several servers: users' own workspaces
