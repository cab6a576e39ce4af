"""References: images with a role (product, scene, face) that condition a post or one edit.

Where they come from: attachments whose front end said the role (console ``@product=path``, a
Discord option), a leading ``product:`` / ``scene:`` / ``face:`` word on an edit, ``product=<name>``
(the user's product library), and images sent alone beforehand (pending until the next post or
edit; their role chosen by a button when the platform did not say it). Every check here runs
before anything is stored; images are validated exactly as scene images always were
(:func:`commands.validation.check_image`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from commands.context import Ctx
from commands.events import REFERENCE_ROLES, Action, Attachment, ChooseRole
from commands.ports import Imaging, Stored
from commands.validation import InputError, check_image
from engine.specs import ReferenceRole, ReferenceSpec, reference_limit

if TYPE_CHECKING:
    from storage.models import Thread, User

ROLE_WORDS: dict[str, ReferenceRole] = {
    "product": ReferenceRole.PRODUCT,
    "商品": ReferenceRole.PRODUCT,
    "scene": ReferenceRole.SCENE,
    "场景": ReferenceRole.SCENE,
    "face": ReferenceRole.FACE,
    "人脸": ReferenceRole.FACE,
}
ROLE_LABELS: dict[str, str] = {
    ReferenceRole.PRODUCT: "商品 product",
    ReferenceRole.SCENE: "场景 scene",
    ReferenceRole.FACE: "人脸 face",
}
_ROLE_PREFIX = re.compile(r"^(product|scene|face|商品|场景|人脸)\s*[:：]\s*", re.I)
_PRODUCT_PREFIX = re.compile(r"^product\s*=\s*(\S+)\s*", re.I)
#: user settings keys: images sent alone, waiting for the next post or edit; an edit waiting for a role
PENDING = "pending_refs"
PENDING_EDIT = "pending_edit"


def role_prefix(text: str) -> tuple[str | None, str]:
    """``"product: now she holds it"`` -> ("product", "now she holds it")."""
    match = _ROLE_PREFIX.match(text.strip())
    if match is None:
        return None, text
    return ROLE_WORDS[match.group(1).lower()], text.strip()[match.end() :]


def product_prefix(text: str) -> tuple[list[str], str]:
    """``"product=mug,cap now she holds the mug"`` -> (["mug", "cap"], "now she holds the mug")."""
    match = _PRODUCT_PREFIX.match(text.strip())
    if match is None:
        return [], text
    return split_names(match.group(1)), text.strip()[match.end() :]


def split_names(raw: str | None) -> list[str]:
    """``"mug, cap"`` -> ["mug", "cap"] (commas ASCII or full-width; duplicates dropped)."""
    names = [part.strip() for part in re.split(r"[,，]", raw or "")]
    return list(dict.fromkeys(name for name in names if name))


def as_dicts(refs: Iterable[ReferenceSpec]) -> list[dict[str, Any]]:
    return [ref.model_dump(mode="json") for ref in refs]


def from_dicts(rows: Iterable[dict[str, Any]] | None) -> list[ReferenceSpec]:
    return [ReferenceSpec.model_validate(row) for row in rows or ()]


def check_attachments(attachments: Sequence[Attachment]) -> None:
    """Refuse the whole message if any image is bad or any role unknown; nothing is stored."""
    for attachment in attachments:
        if attachment.role is not None and attachment.role not in REFERENCE_ROLES:
            raise InputError(f"unknown image role {attachment.role!r}; use product, scene or face")
        check_image(attachment.data, attachment.filename)


async def store_attachments(
    conv: Imaging, attachments: Sequence[Attachment], role: str | None = None
) -> list[tuple[str | None, str]]:
    """Validate every attachment, then store them: ``[(role or None, blob key), ...]``."""
    check_attachments(attachments)
    return [(a.role or role, await asyncio.to_thread(conv.blobs.put, a.data)) for a in attachments]


async def library(conv: Stored, workspace_id: int, names: Sequence[str]) -> list[ReferenceSpec]:
    """The named products of the workspace's library as references; InputError naming a missing one."""
    refs = []
    for name in names:
        product = await conv.store.find_product_in(workspace_id, name)
        if product is None:
            owned = ", ".join(p.name for p in await conv.store.list_products_in(workspace_id)) or "none yet"
            raise InputError(
                f"there is no product named {name!r} here (this workspace's: {owned}); add it with /product add"
            )
        refs.append(ReferenceSpec(role=ReferenceRole.PRODUCT, key=product.image_key, name=product.name))
    return refs


def pending(user: User) -> list[dict[str, Any]]:
    return list((user.settings or {}).get(PENDING) or [])


def pending_refs(user: User) -> list[ReferenceSpec]:
    """Images sent alone before this post or edit (the ones whose role was never chosen: scenes)."""
    edit = (user.settings or {}).get(PENDING_EDIT) or {}
    waiting = edit.get("batch")
    return [
        ReferenceSpec(role=row.get("role") or ReferenceRole.SCENE, key=row["key"])
        for row in pending(user)
        if waiting is None or row.get("batch") != waiting
    ]


def check_limit(
    model: str, refs: Sequence[ReferenceSpec], *, editing: bool, attached: Sequence[Attachment] = ()
) -> None:
    """The engine family's limit on reference images: the current image, the persona's portrait,
    then the references. A post is checked as its edits will be (each edit conditions on the
    current image too), so a post that could not be edited is refused at once. ``attached``:
    images not stored yet (their role may be unknown still)."""
    limit = reference_limit(model)
    if limit is None:
        return
    parts = ["the current image" if editing else "the image each edit changes", "the persona's portrait"]
    parts += [f"{ref.role} {ref.name}" if ref.name else f"a {ref.role} image" for ref in refs]
    parts += [f"a {a.role} image" if a.role else "a new image" for a in attached]
    if len(parts) > limit:
        what = "edit" if editing else "post"
        raise InputError(
            f"this model takes at most {limit} reference images and this {what} would use {len(parts)} "
            f"({', '.join(parts)}); drop a product or an image and send it again"
        )


#: images kept waiting per user; older ones are dropped
MAX_PENDING = 8
ASK = "What is this image? 这张图是？ 商品 product / 场景 scene / 人脸 face"


async def park(
    conv: Imaging, ctx: Ctx, attachments: tuple[Attachment, ...], *, edit: tuple[Thread, str] | None = None
) -> list[Action]:
    """Store images for the next post or edit (``edit``: for that edit, once their role is chosen)."""
    stored = await store_attachments(conv, attachments)
    batch = stored[0][1]
    rows = [row for row in pending(ctx.user) if row.get("batch") != batch]
    rows += [{"role": role, "key": key, "batch": batch} for role, key in stored]
    changes: dict[str, object] = {PENDING: rows[-MAX_PENDING:]}
    if edit is not None:
        changes[PENDING_EDIT] = {"thread": edit[0].id, "text": edit[1], "batch": batch}
    ctx.user.settings = await conv.store.update_user_settings(ctx.user.id, changes)
    where = ctx.where_thread(edit[0]) if edit is not None else ctx.where_user()
    if edit is not None or any(role is None for role, _ in stored):
        return [ChooseRole(where=where, key=batch, text=ASK)]
    roles = ", ".join(dict.fromkeys(ROLE_LABELS[str(role)] for role, _ in stored))
    return [ctx.reply(f"Got the image ({roles}): it goes into your next post or edit.")]


def one_scene(refs: Sequence[ReferenceSpec]) -> str | None:
    """The scene image's key (a post starts from it); more than one scene is refused."""
    scenes = [ref.key for ref in refs if ref.role == ReferenceRole.SCENE]
    if len(dict.fromkeys(scenes)) > 1:
        raise InputError("a post takes one scene image; send one scene and the rest as product or face images")
    return scenes[0] if scenes else None


def dedupe(refs: Iterable[ReferenceSpec]) -> list[ReferenceSpec]:
    """The same image with the same role once (a product both attached and named, say)."""
    seen: dict[tuple[str, str], ReferenceSpec] = {}
    for ref in refs:
        seen.setdefault((ref.role, ref.key), ref)
    return list(seen.values())


def describe(refs: Sequence[ReferenceSpec]) -> str:
    """``"product mug, a scene image"`` for replies."""
    return ", ".join(f"{ref.role} {ref.name}" if ref.name else f"a {ref.role} image" for ref in refs)
