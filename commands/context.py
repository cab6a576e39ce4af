"""What a handler gets besides the conversation: the event and its user, and where replies go."""

from __future__ import annotations

from dataclasses import dataclass

from commands.events import Event, Reply, Where
from storage.models import Thread, User


@dataclass
class Ctx:
    event: Event
    user: User
    #: the usage line of the table row being run ("" for plain messages)
    usage: str = ""

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

    def reply(self, text: str, *, where: Where | None = None, private: bool = False) -> Reply:
        return Reply(where=where or self.where_user(), text=text, private=private)

    def error(self, text: str) -> Reply:
        """A refusal. Our own opening word is capitalised; user input (quoted by the message that
        carries it) is never changed."""
        message = text[0].upper() + text[1:] if text[:1].isascii() and text[:1].isalpha() else text
        return Reply(where=self.where_user(), text=f"⚠️ {message}", private=True)
