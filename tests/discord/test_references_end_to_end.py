"""References on Discord end to end: the real client, the fake Discord, the REAL conversation and
the tiny engine. ``/product add name: image:``, a ``/post`` using that product (autocompleted)
and a scene, an edit whose image gets its role from buttons, and a stranger's click changing nothing."""

from __future__ import annotations

import hashlib

from tests.discord import test_end_to_end as e2e
from tests.discord.conftest import StartBot
from tests.discord.helpers import png_bytes
from tests.discord.test_end_to_end import Studio, content, custom_ids, ready_persona, turn_of, wait_result
from tests.fakes.discord_server import CALLBACK_AUTOCOMPLETE_RESULT, MESSAGE_FLAG_EPHEMERAL, FakeDiscord

# the end-to-end module's fixtures: its tiny engine and a fresh app per test
tiny_engine = e2e.tiny_engine
studio = e2e.studio


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_product_add_then_a_post_and_an_edit_using_references(
    studio: Studio, fake: FakeDiscord, start_bot: StartBot
) -> None:
    await start_bot(studio.app.conversation)
    await ready_persona(fake, studio)
    owner = await studio.owner(fake)

    # /product add name: mug image: — an ephemeral card with the product's image
    mug = png_bytes(80, 80, noise=True, seed=1)
    mark = fake.mark()
    await fake.send_interaction(
        fake.slash_command(
            "product", {"name": "mug", "image": fake.add_cdn_file("mug.png", mug, "image/png")}, subcommand="add"
        )
    )
    card = await fake.wait_request(route="followup", since=mark)
    assert content(card).startswith("🛍️ Product mug saved") and card.json["flags"] & MESSAGE_FLAG_EPHEMERAL
    assert [f.data for f in card.files] == [mug]
    product = await studio.store.find_product(owner.id, "mug")
    assert product is not None and product.image_key == sha(mug)

    # /post's product option completes from the library
    auto = await fake.send_interaction(
        fake.slash_command("post", {"persona": "mia", "prompt": "x", "product": "m"}, focused="product")
    )
    callback = await fake.wait_callback(auto)
    assert callback.json["type"] == CALLBACK_AUTOCOMPLETE_RESULT
    assert [c["value"] for c in callback.json["data"]["choices"]] == ["mug"]

    # /post with the product and a scene attachment: both recorded on the first turn
    scene = png_bytes(96, 64, noise=True, seed=2)
    mark = fake.mark()
    options = {"persona": "mia", "prompt": "coffee time", "product": "mug", "scene": fake.add_cdn_file("s.png", scene)}
    await fake.send_interaction(fake.slash_command("post", options))
    created = await fake.wait_request(route="create_thread_from_message", since=mark)
    thread_id = int(created.response["id"])
    assert "with product mug, a scene image" in fake.messages[thread_id]["content"]
    first = await studio.store.get_turn(turn_of(await wait_result(fake, thread_id, since=mark, text="Generate #")))
    assert first.references == [
        {"role": "product", "key": sha(mug), "name": "mug"},
        {"role": "scene", "key": sha(scene), "name": None},
    ]

    # an image on a thread message without a role word: buttons ask for its role, nothing runs yet
    bag = png_bytes(64, 64, noise=True, seed=3)
    mark = fake.mark()
    jobs_before = len(await studio.jobs(fake))
    await fake.user_message(thread_id, "now she holds the bag", attachments=[fake.add_cdn_file("bag.png", bag)])
    question = await fake.wait_request(lambda r: bool(custom_ids(r)), route="create_message", since=mark)
    assert question.vars["channel_id"] == str(thread_id)
    assert custom_ids(question) == [f"persona:ref:{role}:{sha(bag)}" for role in ("product", "scene", "face")]
    assert len(await studio.jobs(fake)) == jobs_before
    question_id = int(question.response["id"])

    # a stranger's click changes nothing and tells only them
    mark = fake.mark()
    await fake.send_interaction(fake.component_click(question_id, f"persona:ref:scene:{sha(bag)}", user=fake.stranger))
    refused = await fake.wait_request(route="followup", since=mark)
    assert refused.json["flags"] & MESSAGE_FLAG_EPHEMERAL and "no longer waiting" in content(refused)
    assert len(await studio.jobs(fake)) == jobs_before

    # the owner's click runs the edit with the image as a product
    mark = fake.mark()
    await fake.send_interaction(fake.component_click(question_id, f"persona:ref:product:{sha(bag)}"))
    edit = await studio.store.get_turn(turn_of(await wait_result(fake, thread_id, since=mark, text="Edit #")))
    assert (edit.instruction, edit.parent_id) == ("now she holds the bag", first.id)
    assert edit.references == [*first.references, {"role": "product", "key": sha(bag), "name": None}]

    # a leading role word needs no question
    hat = png_bytes(64, 64, noise=True, seed=4)
    mark = fake.mark()
    await fake.user_message(thread_id, "face: make her look like this", attachments=[fake.add_cdn_file("h.png", hat)])
    edit2 = await studio.store.get_turn(turn_of(await wait_result(fake, thread_id, since=mark, text="Edit #")))
    assert edit2.references[-1] == {"role": "face", "key": sha(hat), "name": None}
    assert not [r for r in fake.requests_for("create_message", since=mark) if "persona:ref:" in str(custom_ids(r))]
