"""The command table: every command once — name, aliases, arguments, description, handler.

The text parser (``commands.parser``), ``/help``, Discord's slash-command builder and the
dispatch in ``Conversation.handle`` all read :data:`COMMANDS`; :mod:`commands.args` binds each
row's arguments. A new command is one row here plus one handler function
``async def handler(conv, ctx, **arguments) -> list[Action]``; a new option is one ``Arg`` in its row.
"""

from __future__ import annotations

from commands.args import usage
from commands.command import Arg, Command
from commands.handlers import edits, info, posts, references, review, studio, video
from commands.params import BOUNDS, COUNT_BOUNDS, SEED_HINT
from commands.references import ROLE_WORDS
from commands.regions import MASK_ROLE
from commands.table_groups import PERSONA, PRODUCT
from commands.table_team import REJECT, TEAM
from commands.validation import MAX_TEXT_CHARS
from engine.specs import MAX_SECONDS, MIN_SECONDS, ReferenceRole

_TEXT_ONLY = frozenset({"console", "wecom"})
#: offered on no front end as a command of its own: the buttons of a role question send it
_BUTTON_ONLY: frozenset[str] = frozenset()
_COUNT_LOW, _COUNT_HIGH = COUNT_BOUNDS
#: ``/settings``: a bad value is refused naming what was typed and the range
_SETTING_ERROR = "'{name}={value}' is not valid (expected {low}-{high})"


COMMANDS: tuple[Command, ...] = (
    PERSONA,
    Command(
        "post",
        "Open a post thread with the first images of a persona",
        f"发帖：用人设生成第一批图片（{_COUNT_LOW:g}-{_COUNT_HIGH:g} 张）",
        aliases=("发帖",),
        handler=posts.post,
        args=(
            Arg("persona", "str", "which persona", required=True, autocomplete="personas", positional=True),
            Arg(
                "prompt",
                "str",
                "what the picture shows",
                required=True,
                min=1,
                max=MAX_TEXT_CHARS,
                positional=True,
                takes="text",
                missing="the prompt is empty",
            ),
            Arg(
                "count",
                "int",
                f"how many images ({_COUNT_LOW:g}-{_COUNT_HIGH:g})",
                min=_COUNT_LOW,
                max=_COUNT_HIGH,
                default=1,
                aliases=("n",),
                shown="[count=N]",
            ),
            Arg(
                "product",
                "str",
                "products from your library (comma-separated)",
                max=200,
                autocomplete="products",
                shown="[product=<name>[,<name>]]",
            ),
            Arg("product_image", "attachment", "a product image for this post", role=ReferenceRole.PRODUCT),
            Arg("scene", "attachment", "a scene image to start from", role=ReferenceRole.SCENE),
            # wave 1's name of the scene option: kept so existing clients and habits still work
            Arg("image", "attachment", "optional scene image to start from", role=ReferenceRole.SCENE),
        ),
    ),
    PRODUCT,
    Command(
        "reference",
        "The role of an image you sent: product, scene or face",
        "图片的用途：商品 / 场景 / 人脸",
        handler=references.choose,
        platforms=_BUTTON_ONLY,
        args=(
            Arg(
                "role",
                "str",
                "what the image is",
                required=True,
                positional=True,
                choices=tuple(ROLE_WORDS.items()),
                error="choose product, scene or face for the image",
                missing="choose product, scene or face for the image",
                shown="product|scene|face",
            ),
            Arg(
                "key",
                "str",
                "the image waiting for its role",
                required=True,
                positional=True,
                shown="<key>",
                missing="that image is no longer waiting (it was used already); send it again",
            ),
        ),
    ),
    Command(
        "edit",
        "Edit this post's image; region= changes only that part (a mask image too)",
        "修改图片；区域= 只改那一部分（也可附蒙版图）",
        aliases=("编辑",),
        handler=edits.edit_command,
        args=(
            Arg(
                "instruction",
                "str",
                "what to change",
                required=True,
                min=1,
                max=MAX_TEXT_CHARS,
                positional=True,
                takes="text",
                missing="say what to change",
            ),
            Arg("region", "str", "only this part of the image, in words (e.g. top, hat)", max=100, aliases=("区域",)),
            Arg("image", "str", "which image: a number, or all", max=3, shown="[image=N|all]"),
            Arg("product", "str", "products from your library (comma-separated)", max=200, autocomplete="products"),
            Arg("mask", "attachment", "a mask image: white = change, black = keep", role=MASK_ROLE),
            Arg("product_image", "attachment", "a product image for this edit", role=ReferenceRole.PRODUCT),
        ),
    ),
    Command(
        "tryon",
        "Dress the persona in a product from your library (or an attached garment photo)",
        "试穿：让人设穿上商品库里的服装（或附上的服装图）",
        aliases=("试穿",),
        handler=edits.tryon,
        args=(
            Arg("product", "str", "the garment, from your library", positional=True, autocomplete="products"),
            Arg("region", "str", "the part it replaces, in words (default: the clothes)", max=100, aliases=("区域",)),
            Arg(
                "product_image",
                "attachment",
                "a garment photo (on a mannequin or laid flat)",
                role=ReferenceRole.PRODUCT,
            ),
        ),
    ),
    Command(
        "approve",
        "✅ Approve the current result of this post",
        "通过当前结果",
        aliases=("ok", "通过"),
        handler=review.approve,
        result_action=True,
        emoji="✅",
    ),
    Command(
        "regen",
        "🔁 Regenerate the current result with a new seed",
        "换一个种子重新生成",
        aliases=("regenerate", "重来"),
        handler=posts.regen,
        result_action=True,
        emoji="🔁",
    ),
    Command(
        "undo",
        "↩️ Go back to the previous image of this post",
        "撤销，回到上一张",
        aliases=("撤销",),
        handler=posts.undo,
        result_action=True,
        emoji="↩️",
    ),
    Command(
        "cancel",
        "❌ Cancel this post's running job (outside a post: your persona training)",
        "取消正在进行的任务",
        aliases=("取消",),
        handler=posts.cancel,
        result_action=True,
        emoji="❌",
    ),
    REJECT,
    TEAM,
    Command(
        "video",
        "🎬 A short clip of this post's approved image (image 1, or #N)",
        f"视频：把已通过的图片做成 {MIN_SECONDS:g}-{MAX_SECONDS:g} 秒短视频",
        aliases=("视频", "clip"),
        handler=video.video,
        args=(
            Arg("image", "str", "which image of the approved result: #N (default #1)", max=4, prefix="#", shown="[#N]"),
            Arg(
                "seconds",
                "float",
                f"length in seconds ({MIN_SECONDS:g}-{MAX_SECONDS:g})",
                min=MIN_SECONDS,
                max=MAX_SECONDS,
                error="'{name}={value}' is not valid (expected {low}-{high} seconds)",
                shown=f"[seconds={MIN_SECONDS:g}..{MAX_SECONDS:g}]",
            ),
            Arg(
                "motion",
                "str",
                "how it moves: 'she lifts the cup and smiles'",
                positional=True,
                takes="text",
                max=MAX_TEXT_CHARS,
                shown="[motion=<words>]",
            ),
        ),
    ),
    Command(
        "history",
        "The turn tree of this post, with identity scores",
        "本帖的修改历史和相似度",
        aliases=("历史",),
        handler=info.history,
    ),
    Command(
        "export",
        "Approved images of this post and a manifest, as a zip",
        "导出已通过的图片和 manifest（zip）",
        aliases=("导出",),
        handler=info.export,
    ),
    Command(
        "status",
        "Your jobs and their places in the queue",
        "我的任务和排队位置",
        aliases=("状态",),
        handler=info.status,
    ),
    Command(
        "settings",
        "Generation settings: in a post for that post, elsewhere your defaults",
        "生成设置：在帖子里只改本帖，否则改默认值",
        aliases=("设置",),
        handler=info.settings,
        args=(
            Arg(
                "scope",
                "str",
                "post: this post's settings",
                positional=True,
                text_only=True,
                shown="[post]",
                choices=(("post", "post"), ("thread", "post"), ("本帖", "post")),
            ),
            Arg(
                "steps",
                "int",
                "denoising steps",
                min=BOUNDS["steps"][0],
                max=BOUNDS["steps"][1],
                error=_SETTING_ERROR,
                shown="steps=N",
            ),
            Arg(
                "guidance",
                "float",
                "guidance scale",
                min=BOUNDS["guidance"][0],
                max=BOUNDS["guidance"][1],
                error=_SETTING_ERROR,
                shown="guidance=G",
            ),
            Arg(
                "size",
                "str",
                "image size as WxH, e.g. 1024x1024",
                min=3,
                max=11,
                shown="size=WxH",
                error="'{name}={value}' is not valid (expected WxH)",
            ),
            Arg(
                "seed",
                "str",
                "a number, or 'random'",
                min=1,
                max=20,
                shown="seed=S|random",
                error="'{name}={value}' is not valid (expected " + SEED_HINT + ")",
            ),
        ),
    ),
    Command(
        "threads",
        "List your posts (all: every post of the workspace)",
        "我的帖子列表（全部：团队的所有帖子）",
        handler=info.threads,
        platforms=_TEXT_ONLY,
        args=(
            Arg("scope", "str", "all: the whole workspace", positional=True, choices=(("all", "all"), ("全部", "all"))),
        ),
    ),
    Command(
        "thread",
        "Switch to one of your posts",
        "切换到某个帖子",
        handler=info.thread,
        platforms=_TEXT_ONLY,
        # a string: '#12' works, and a bad number is answered as a missing post (commands.ids)
        args=(
            Arg(
                "id",
                "str",
                "the post number",
                required=True,
                positional=True,
                takes="words",
                missing="usage: /thread <post number>",
            ),
        ),
    ),
    Command(
        "gallery",
        "Your posts and personas in the browser: a private link",
        "在浏览器中查看我的帖子和人设（私人链接）",
        aliases=("画廊",),
        handler=studio.gallery,
    ),
    Command("help", "How Persona Studio works", "帮助", aliases=("帮助",), handler=info.help),
)

_BY_WORD: dict[str, Command] = {}
for _command in COMMANDS:
    for _word in (_command.name, *_command.aliases):
        _BY_WORD[_word.lower()] = _command


def find(word: str) -> Command | None:
    """The command named (or aliased) ``word``, case-insensitively."""
    return _BY_WORD.get(word.strip().lower())


def help_text() -> str:
    """``/help``: every command with its usage and summary, English and Chinese, from the table."""
    lines = ["Persona Studio — commands / 命令"]
    for command in COMMANDS:
        if command.platforms == _BUTTON_ONLY:
            continue
        rows = command.subcommands or (command,)
        for row in rows:
            where = "" if command.platforms is None else f" ({', '.join(sorted(command.platforms))})"
            emoji = f" {command.emoji}" if command.emoji else ""
            lines.append(f"  {usage(row, command if command.subcommands else None)}{emoji}")
            summary = row.summary[:1].lower() + row.summary[1:]
            lines.append(f"      {summary}{where} · {row.summary_zh}")
        if command.name == "post":
            lines.append("  <text inside a post>  edit the current image ('hold the latte higher')")
            lines.append("      直接发文字即修改当前图片")
            lines.append("      all: <text> edits every image;  #2 <text> edits image 2 · all: 改全部，#2 改第 2 张")
            lines.append("      product=<name> <text> puts a library product into this edit · 用商品库里的商品")
            lines.append("  images: product / scene / face references (console @product=path @scene=path @face=path)")
            lines.append("      图片可作 商品 / 场景 / 人脸 参考图：发图后点选用途，用于下一次发帖或修改")
    aliases = " ".join(a for c in COMMANDS for a in c.aliases if not a.isascii())
    lines.append(f"WeCom 企业微信: {aliases}")
    return "\n".join(lines)
