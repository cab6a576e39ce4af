"""The one port between front ends and the conversation: the Conversation implements every
method of it with the same signature, and so does the Discord tests' stand-in."""

from __future__ import annotations

import inspect

import pytest

from bot.frontend import ConversationPort
from commands.conversation import Conversation
from tests.discord.standin import StandInConversation

MEMBERS = sorted(name for name, value in vars(ConversationPort).items() if callable(value) and not name.startswith("_"))


def test_the_port_names_what_front_ends_call() -> None:
    assert {"handle", "add_deliverer", "deliver_pending", "bind_thread", "can_act", "archetypes"} <= set(MEMBERS)


@pytest.mark.parametrize("name", MEMBERS)
def test_the_conversation_implements_the_port(name: str) -> None:
    port, real = getattr(ConversationPort, name), getattr(Conversation, name)
    assert inspect.signature(real) == inspect.signature(port), name
    assert inspect.iscoroutinefunction(real) == inspect.iscoroutinefunction(port), name


@pytest.mark.parametrize("name", MEMBERS)
def test_the_discord_stand_in_has_the_port(name: str) -> None:
    assert inspect.iscoroutinefunction(getattr(StandInConversation, name)) == inspect.iscoroutinefunction(
        getattr(ConversationPort, name)
    )
