"""What a handler gets besides the conversation: the event, its user, the workspace it happened in
and the user's role there, and where replies go."""

from __future__ import annotations

from dataclasses import dataclass

from commands.events import Event, Reply, Where
from storage.models import Thread, User, Workspace, WorkspaceRole


@dataclass
class Ctx:
    event: Event
    user: User
    #: where the event happened (commands.workspaces.resolve); its personas, products and posts
    workspace: Workspace
    #: the user's role there (ADMIN_IDS and the platform's admins count as admins)
    role: WorkspaceRole = WorkspaceRole.MEMBER
    #: the usage line of the table row being run ("" for plain messages)
    usage: str = ""

    @property
    def is_admin(self) -> bool:
        return self.role == WorkspaceRole.ADMIN

    @property
    def reviews(self) -> bool:
        """A reviewer (admins count as reviewers)."""
        return self.role.reviews

    def where_user(self) -> Where:
        return Where(
            platform=self.event.platform,
            user_id=self.event.user_id,
            channel_id=self.event.channel_id,
            thread_id=self.event.thread_id,
        )

    def where_thread(self, thread: Thread) -> Where:
        return Where(
            platform=self.event.platform,
            user_id=self.event.user_id,
            thread_db_id=thread.id,
            channel_id=thread.channel_id,
            thread_id=thread.thread_id,
        )

    def where_author(self, thread: Thread, author: User) -> Where:
        """The post, addressed to its author (WeCom and the console send to the user)."""
        return Where(
            platform=self.event.platform,
            user_id=author.platform_user_id,
            thread_db_id=thread.id,
            channel_id=thread.channel_id,
            thread_id=thread.thread_id,
        )

    def reply(self, text: str, *, where: Where | None = None, private: bool = False) -> Reply:
        return Reply(where=where or self.where_user(), text=text, private=private)

    def error(self, text: str) -> Reply:
        """A refusal. Our own opening word is capitalised; user input (quoted by the message that
        carries it) is never changed."""
        message = text[0].upper() + text[1:] if text[:1].isascii() and text[:1].isalpha() else text
        return Reply(where=self.where_user(), text=f"⚠️ {message}", private=True)
