"""Decisions made in one place: the admin rule (chat and web) and a stored persona as a PersonaSpec
(the chat's jobs and ``eval identity`` alike)."""

from __future__ import annotations

from types import SimpleNamespace

from commands.config import ConversationConfig, is_admin
from commands.persona_spec import persona_spec
from engine.specs import ReferenceRole, ReferenceSpec


def test_the_admin_rule_takes_a_bare_id_or_platform_and_id() -> None:
    config = ConversationConfig(admin_ids=("42", "wecom:lily"))
    assert config.is_admin("discord", "42") and config.is_admin("wecom", "42")
    assert config.is_admin("wecom", "lily") and not config.is_admin("discord", "lily")
    assert not is_admin((), "console", "42")


def _persona(**values: object) -> SimpleNamespace:
    row = dict(
        id=7,
        archetype="photo",
        lora_mix=[["sweet/a", 0.5]],
        seed=3,
        reference_key="ref",
        face_embedding=[0.1],
        photo_key="photo",
        active_version=2,
        versions=[{"version": 1, "lora_key": "v1"}, {"version": 2, "lora_key": "v2"}],
    )
    return SimpleNamespace(**{**row, **values})


def test_a_persona_spec_carries_the_photo_and_the_version_asked_for() -> None:
    in_use = persona_spec(_persona())
    assert (in_use.photo_key, in_use.version, in_use.version_lora_key) == ("photo", 2, "v2")
    assert in_use.lora_mix == [("sweet/a", 0.5)] and in_use.embedding == [0.1]
    assert (persona_spec(_persona(), 1).version, persona_spec(_persona(), 1).version_lora_key) == (1, "v1")
    blend = persona_spec(_persona(), 0)
    assert (blend.version, blend.version_lora_key, blend.photo_key) == (0, None, "photo")


def test_reference_roles_are_one_enum_that_specs_accept_as_words() -> None:
    assert [str(role) for role in ReferenceRole] == ["product", "scene", "face"]
    assert ReferenceSpec.model_validate({"role": "scene", "key": "k"}).role is ReferenceRole.SCENE
    assert ReferenceSpec(role=ReferenceRole.FACE, key="k").model_dump(mode="json")["role"] == "face"


def test_the_conversation_offers_everything_the_handlers_ports_ask_for() -> None:
    import inspect
    import re

    from commands import ports
    from commands.conversation import Conversation

    assigned = set(re.findall(r"self\.(\w+) = ", inspect.getsource(Conversation.__init__)))
    protocols = [
        value for value in vars(ports).values() if inspect.isclass(value) and value.__module__ == ports.__name__
    ]
    assert len(protocols) >= 5
    for protocol in protocols:
        for klass in protocol.__mro__:
            if klass.__module__ != ports.__name__:
                continue
            assert set(klass.__annotations__) <= assigned, klass.__name__
            for name, member in vars(klass).items():
                if inspect.isfunction(member) and not name.startswith("_"):
                    offered = [p for p in inspect.signature(getattr(Conversation, name)).parameters if p != "self"]
                    asked = [p for p in inspect.signature(member).parameters if p != "self"]
                    assert offered == asked, name
