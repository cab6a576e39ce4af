"""``/product add | list | show | delete``: the workspace's library of product images, by name (a handler
per row). Any member adds and uses products; deleting one needs its creator or an admin."""

from __future__ import annotations

from commands import references as refs
from commands import workspaces
from commands.context import Ctx
from commands.events import Action, Images
from commands.names import check_name
from commands.ports import Imaging, Stored
from commands.validation import InputError
from storage.models import Product
from storage.repository import DuplicateName


async def add(conv: Imaging, ctx: Ctx, *, name: str) -> list[Action]:
    """The attached image, or else the image sent just before (``商品 添加 <名字>`` after an image)."""
    name = check_name(name, "product")
    attachments = ctx.event.attachments
    if len(attachments) > 1:
        raise InputError("attach one image of the product")
    waiting = refs.pending(ctx.user)
    if attachments:
        key = (await refs.store_attachments(conv, attachments))[0][1]
    elif waiting:
        key = waiting[-1]["key"]
    else:
        raise InputError("attach the product's image (or send the image first, then /product add <name>)")
    try:
        created = await conv.store.create_product(ctx.user.id, name, key, workspace_id=ctx.workspace.id)
    except DuplicateName as exc:
        raise InputError(f"{exc}; /product delete {name} first to replace it") from None
    if not attachments:  # the waiting image is in the library now, not in the next post
        rest = [row for row in waiting if row["key"] != key]
        ctx.user.settings = await conv.store.update_user_settings(ctx.user.id, {refs.PENDING: rest})
    text = f"🛍️ Product {created.name} saved. Use it: /post <persona> product={created.name} <prompt>"
    return [Images(where=ctx.where_user(), text=text, images=(await conv.image(key, f"product-{created.name}.png"),))]


async def list_products(conv: Stored, ctx: Ctx) -> list[Action]:
    found = await conv.store.list_products_in(ctx.workspace.id)
    if not found:
        return [ctx.reply("The product library is empty. Add one: /product add <name> with an image.")]
    return [ctx.reply("This workspace's products:\n" + "\n".join(f"• {p.name}" for p in found))]


async def show(conv: Imaging, ctx: Ctx, *, name: str) -> list[Action]:
    found = await own_product(conv, ctx, name)
    image = await conv.image(found.image_key, f"product-{found.name}.png")
    text = f"Product {found.name} (sha256 {found.image_key[:12]}…)"
    return [Images(where=ctx.where_user(), text=text, images=(image,))]


async def delete(conv: Stored, ctx: Ctx, *, name: str) -> list[Action]:
    found = await own_product(conv, ctx, name)
    workspaces.check_creator(ctx, found, f"product {found.name}")
    await conv.store.delete_product(found.id)
    return [ctx.reply(f"Product {found.name} deleted. Posts that used it keep their images.")]


async def own_product(conv: Stored, ctx: Ctx, name: str) -> Product:
    found = await conv.store.find_product_in(ctx.workspace.id, name)
    if found is None:
        owned = ", ".join(p.name for p in await conv.store.list_products_in(ctx.workspace.id)) or "none yet"
        raise InputError(f"there is no product named {name!r} here (this workspace's: {owned})")
    return found
