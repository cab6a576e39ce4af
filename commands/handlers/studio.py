"""``/gallery`` (画廊): a private, expiring link to the user's own web studio."""

from __future__ import annotations

from commands.context import Ctx
from commands.events import Action
from commands.ports import Configured
from commands.validation import InputError
from commands.web_links import studio_link


async def gallery(conv: Configured, ctx: Ctx) -> list[Action]:
    config = conv.config
    if not config.web_secret or not config.web_public_url:
        raise InputError("the web studio is not set up on this installation")
    link = studio_link(config.web_secret, config.web_public_url, ctx.user.id, workspace_id=ctx.workspace.id)
    text = (
        f"🖼️ Your studio: posts, personas and downloads (private link, works for {config.web_link_hours:g} h; "
        f"anyone with it sees your work, so keep it to yourself):\n{link}"
    )
    return [ctx.reply(text, private=True)]
