"""Persona names under one rule (NFKC + casefold in Python) and the callback inbox, on SQLite and
PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest

from storage.inbox import Inbox
from storage.models import utcnow
from storage.names import name_key
from storage.repository import DuplicateName, Store


def test_name_key_folds_unicode_case_and_compatibility_forms() -> None:
    assert name_key("Élodie") == name_key("ÉLODIE") == name_key("e\u0301lodie") == "élodie"
    assert name_key("Straße") == name_key("STRASSE")
    assert name_key("Ｍｉａ") == name_key("mia")  # full-width letters (NFKC)
    assert name_key("Mia") != name_key("Mila")


async def test_names_that_differ_only_in_case_are_one_name(store: Store) -> None:
    owner = await store.user("console", "me")
    mia = await store.create_persona(owner.id, "Mia", "sweet", [], seed=1)
    with pytest.raises(DuplicateName):
        await store.create_persona(owner.id, "mia", "sweet", [], seed=2)
    elodie = await store.create_persona(owner.id, "Élodie", "sweet", [], seed=3)
    found = await store.find_persona(owner.id, "Élodie")
    assert found is not None and found.id == elodie.id  # SQLite's lower() would not fold É
    found = await store.find_persona(owner.id, "éLODIE")
    assert found is not None and found.id == elodie.id
    with pytest.raises(DuplicateName):
        await store.create_persona(owner.id, "ÉLODIE", "boss", [], seed=4)
    assert (await store.find_persona(owner.id, "MIA")).id == mia.id  # type: ignore[union-attr]


async def test_inbox_accepts_a_key_once_and_keeps_pending_items(store: Store) -> None:
    inbox = Inbox(store.db)
    first = await inbox.accept("wecom", "msg:1", {"Content": "/help"})
    again = await inbox.accept("wecom", "msg:1", {"Content": "/help"})
    other_platform = await inbox.accept("discord", "msg:1", {})
    second = await inbox.accept("wecom", "msg:2", {"Content": "你好"})
    assert first is not None and second is not None and other_platform is not None
    assert again is None
    pending = await inbox.pending("wecom")
    assert [(p.id, p.payload) for p in pending] == [(first, {"Content": "/help"}), (second, {"Content": "你好"})]
    await inbox.done(first)
    assert [p.id for p in await inbox.pending("wecom")] == [second]
    # a done item is still a dedupe key until it is purged
    assert await inbox.accept("wecom", "msg:1", {}) is None
    assert await inbox.purge("wecom", timedelta(seconds=60)) == 0  # too recent
    assert await inbox.purge("wecom", timedelta(seconds=60), now=utcnow() + timedelta(seconds=61)) == 1
    reaccepted = await inbox.accept("wecom", "msg:1", {})
    assert reaccepted is not None
    assert [p.id for p in await inbox.pending("wecom")] == [second, reaccepted]  # pending items stay
