"""Issue 20, answer time: a ``/post`` on a threaded platform (Discord) stores its post, log line,
held job and turn in one commit, and a known user's context is one read (not one per part)."""

from __future__ import annotations

from sqlalchemy import event, update

from bot.app import App
from commands.events import Event, EventKind, OpenThread
from storage.models import JobStatus, Persona


def _post(n: int) -> Event:
    return Event(
        platform="discord",
        user_id="4242",
        user_name="Ann",
        kind=EventKind.COMMAND,
        command="post",
        options={"persona": "mia", "prompt": f"a latte, take {n}"},
        channel_id=5,
        workspace="777",
        workspace_name="Shop",
    )


async def test_a_post_is_one_commit_and_its_context_one_read(app: App) -> None:
    store = app.store
    owner = await store.user("discord", "4242", "Ann")
    workspace = await store.workspace("discord", "777", "Shop")
    await store.join_workspace(workspace.id, owner.id)
    persona = await store.create_persona(owner.id, "mia", "sweet", [], seed=1, workspace_id=workspace.id)
    async with store.db.session() as s:
        await s.execute(update(Persona).where(Persona.id == persona.id).values(status="ready"))
    await app.conversation.handle(_post(0))  # the first time may make what is missing

    commits: list[str] = []
    statements: list[str] = []
    engine = store.db.engine.sync_engine
    event.listen(engine, "commit", lambda conn: commits.append("commit"))
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2].split()[0].upper()))
    actions = await app.conversation.handle(_post(1))

    assert [type(a) for a in actions] == [OpenThread]
    assert len(commits) == 1, commits
    inserts = [s for s in statements if s == "INSERT"]
    assert len(inserts) == 4  # the post, its log line, its job, its turn
    reads = [s for s in statements if s == "SELECT"]
    assert len(reads) <= 3, statements  # the context, the persona, the user's jobs (limits)
    thread_db_id = actions[0].where.thread_db_id
    assert thread_db_id is not None
    (job,) = await store.thread_jobs(thread_db_id)
    assert job.status == JobStatus.HELD  # waits for the Discord thread
    assert [a.action for a in await store.activity(thread_db_id)] == ["created"]
