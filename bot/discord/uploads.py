"""Images, clips and files under Discord's upload limit.

Images larger than the upload limit of the interaction (``attachment_size_limit``) or guild are
sent as JPEG/WebP under the limit (the PNG stays in the blob store); a 413 answer lowers the
guild's known limit and the images are sent again, smaller.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import discord

from bot.discord.slash import result_view
from commands.events import BUTTON_EMOJI, Button, FileOut, Images

log = logging.getLogger(__name__)


def fit_image(data: bytes, filename: str, limit: int) -> tuple[bytes, str]:
    """``data`` if it fits ``limit`` bytes, else a JPEG/WebP copy under it (scaled down if need be)."""
    if len(data) <= limit:
        return data, filename
    from PIL import Image

    stem = Path(filename).stem
    with Image.open(io.BytesIO(data)) as opened:
        opened.load()
        rgb = opened.convert("RGB")
    scale = 1.0
    while scale > 0.02:
        image = rgb
        if scale < 1.0:
            size = (max(1, int(rgb.width * scale)), max(1, int(rgb.height * scale)))
            image = rgb.resize(size, Image.Resampling.LANCZOS)
        for fmt, quality in (("JPEG", 90), ("JPEG", 80), ("WEBP", 80), ("JPEG", 65), ("WEBP", 60), ("JPEG", 50)):
            out = io.BytesIO()
            image.save(out, fmt, quality=quality)
            if out.tell() <= limit:
                ext = "jpg" if fmt == "JPEG" else "webp"
                return out.getvalue(), f"{stem}.{ext}"
        scale *= 0.7
    raise ValueError(f"{filename} cannot be made smaller than {limit} bytes")


class UploadLimits:
    """The upload limit of each guild: its tier's, or what an interaction or a 413 taught us."""

    def __init__(self) -> None:
        self._by_guild: dict[int, int] = {}

    def note(self, interaction: discord.Interaction[Any]) -> None:
        limit = getattr(interaction, "filesize_limit", None)
        if interaction.guild_id is not None and isinstance(limit, int) and limit > 0:
            self._by_guild[interaction.guild_id] = limit

    def for_channel(self, channel: Any) -> int:
        guild = getattr(channel, "guild", None)
        if guild is not None:
            return self._by_guild.get(guild.id, guild.filesize_limit)
        return discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES

    def for_interaction(self, interaction: discord.Interaction[Any]) -> int:
        return getattr(interaction, "filesize_limit", None) or self.for_channel(interaction.channel)

    def lower(self, channel: Any, limit: int) -> None:
        guild = getattr(channel, "guild", None)
        if guild is not None:
            self._by_guild[guild.id] = limit


async def _read_all(action: Images) -> list[bytes]:
    return [await asyncio.to_thread(Path(image.path).read_bytes) for image in action.images]


async def _fit_all(action: Images, raw: Sequence[bytes], limit: int) -> list[tuple[bytes, str]]:
    return [
        await asyncio.to_thread(fit_image, data, image.filename, limit)
        for data, image in zip(raw, action.images, strict=True)
    ]


def _files(action: Images, fitted: Sequence[tuple[bytes, str]]) -> list[discord.File]:
    return [
        discord.File(io.BytesIO(data), filename=name, description=(image.caption or None) and image.caption[:1024])
        for (data, name), image in zip(fitted, action.images, strict=True)
    ]


async def card_files(action: Images, limit: int) -> list[discord.File]:
    """The images of a card (``/persona show``) as files under ``limit`` bytes each."""
    return _files(action, await _fit_all(action, await _read_all(action), limit))


async def send_images(channel: Any, action: Images, content: str | None, limits: UploadLimits) -> discord.Message:
    """Post the images of ``action`` with its buttons, smaller after each 413; the message sent.
    A clip is posted as its MP4 instead (Discord plays it inline): :func:`send_clip`."""
    view = result_view(action.turn_id, action.buttons) if action.buttons and action.turn_id else None
    if action.clip is not None:
        sent = await send_clip(channel, action, content, limits, view)
        if sent is not None:
            return sent
        content = f"{content or ''}\n(the clip is over this server's upload limit: its poster instead)".strip()
    raw = await _read_all(action)
    limit = limits.for_channel(channel)
    for _attempt in range(4):
        fitted = await _fit_all(action, raw, limit)
        kwargs: dict[str, Any] = {"files": _files(action, fitted)}
        if view is not None:
            kwargs["view"] = view
        try:
            return await channel.send(content, **kwargs)
        except discord.HTTPException as exc:
            if exc.status != 413 and exc.code != 40005:
                raise
            limit = max(64 * 1024, max(len(d) for d, _ in fitted) // 2)
            limits.lower(channel, limit)
            log.info("upload limit hit in channel %s; retrying under %d bytes", channel.id, limit)
    raise RuntimeError(f"images of turn {action.turn_id} did not fit the upload limit")


async def send_clip(
    channel: Any, action: Images, content: str | None, limits: UploadLimits, view: Any
) -> discord.Message | None:
    """Post the clip of ``action``: the MP4, or its lower-bitrate copy when the MP4 is over the
    channel's upload limit (or a 413 says so); None when neither fits."""
    clip = action.clip
    assert clip is not None
    limit = limits.for_channel(channel)
    for _attempt in range(2):
        chosen = clip.fitting(limit)
        if chosen is None:
            return None
        path, size = chosen
        data = await asyncio.to_thread(Path(path).read_bytes)
        kwargs: dict[str, Any] = {"file": discord.File(io.BytesIO(data), filename=clip.filename)}
        if view is not None:
            kwargs["view"] = view
        try:
            return await channel.send(content, **kwargs)
        except discord.HTTPException as exc:
            if exc.status != 413 and exc.code != 40005:
                raise
            limit = size - 1  # the small copy next, if there is one
            limits.lower(channel, limit)
    return None


async def add_reactions(message: discord.Message, buttons: Sequence[Button]) -> None:
    """✅ 🔁 ↩️ ❌ under a posted result; a failure is logged, the result stays delivered."""
    for button in buttons:
        try:
            await message.add_reaction(BUTTON_EMOJI[button])
        except discord.HTTPException as exc:
            log.warning("could not add %s to result %s: %s", BUTTON_EMOJI[button], message.id, exc)


async def send_file(channel: Any, action: FileOut, limits: UploadLimits) -> None:
    limit = limits.for_channel(channel)
    if len(action.data) > limit:
        await channel.send(
            f"{action.filename} is {len(action.data) / 1e6:.1f} MB, over this server's upload limit "
            f"of {limit / 1e6:.0f} MB. Export fewer images, or use the console export."
        )
        return
    await channel.send(action.text or None, file=discord.File(io.BytesIO(action.data), filename=action.filename))
