"""The command table: every command once — name, aliases, arguments, description, handler.

The text parser (``commands.parser``), ``/help``, Discord's slash-command builder and the
dispatch in ``Conversation.handle`` all read :data:`COMMANDS`. A new command is one row here plus
one handler function ``async def handler(conv, ctx) -> list[Action]``.
"""

from __future__ import annotations

from commands.command import Arg, Command
from commands.handlers import info, personas, posts, products, references, studio
from commands.params import BOUNDS
from commands.validation import MAX_TEXT_CHARS

_NAME = Arg("name", "str", "the persona", required=True, autocomplete="personas")
_PRODUCT = Arg("name", "str", "the product", required=True, autocomplete="products")
_TEXT_ONLY = frozenset({"console", "wecom"})
#: offered on no front end as a command of its own: the buttons of a role question send it
_BUTTON_ONLY: frozenset[str] = frozenset()

COMMANDS: tuple[Command, ...] = (
    Command(
        "persona",
        "Create and manage personas",
        "创建和管理人设",
        "/persona create <archetype> [name] | create-from-photo <name> consent=yes | list | show | delete <name> "
        "| train <name> | use <name> v<N>",
        aliases=("人设",),
        handler=personas.persona,
        subcommands=(
            Command(
                "create",
                "Create a persona: a new face blended from an archetype's LoRAs",
                "创建人设：由一个风格的多个 LoRA 混合出新面孔",
                "/persona create <archetype> [name]",
                aliases=("创建",),
                args=(
                    Arg("archetype", "str", "the look to start from", required=True, autocomplete="archetypes"),
                    Arg("name", "str", "a name for the persona (default: one is made up)", min=1, max=40),
                ),
            ),
            Command(
                "create-from-photo",
                "Create a persona from a photo of a real person who agreed to it",
                "用真人照片创建人设（需本人同意，consent=yes）",
                "/persona create-from-photo <name> consent=yes (+ face image)",
                aliases=("照片创建",),
                args=(
                    Arg("name", "str", "a name for the persona", required=True, min=1, max=40),
                    Arg("consent", "str", "type yes: the pictured person agreed to this use", min=1, max=10),
                    Arg("image", "attachment", "a photo of the face", role="face"),
                ),
            ),
            Command("list", "Your personas", "我的人设", "/persona list", aliases=("列表",)),
            Command(
                "show",
                "Show a persona: its mix, seed and reference face",
                "查看人设：混合、种子和参考脸",
                "/persona show <name>",
                aliases=("查看",),
                args=(_NAME,),
            ),
            Command(
                "train",
                "Train a persona LoRA version from renders that match its face",
                "训练人设：用与参考脸一致的渲染图训练新的 LoRA 版本",
                "/persona train <name> [images=N] [steps=S] [rank=R]",
                aliases=("训练",),
                args=(
                    _NAME,
                    Arg("images", "int", "candidate renders (default 32)", min=1, max=128),
                    Arg("steps", "int", "training steps (default 500)", min=1, max=5000),
                    Arg("rank", "int", "LoRA rank (default 16)", min=1, max=128),
                ),
            ),
            Command(
                "use",
                "Choose the version a persona renders with: v<N> or blend",
                "切换人设版本：v<N> 或 blend（混合）",
                "/persona use <name> v<N>|blend",
                aliases=("使用",),
                args=(_NAME, Arg("version", "str", "v<N> or blend", required=True, min=1, max=10)),
            ),
            Command(
                "delete",
                "Delete one of your personas",
                "删除人设",
                "/persona delete <name>",
                aliases=("删除",),
                args=(_NAME,),
            ),
        ),
    ),
    Command(
        "post",
        "Open a post thread with the first images of a persona",
        "发帖：用人设生成第一批图片（1-4 张）",
        "/post <persona> [count=N] [product=<name>[,<name>]] <prompt>",
        aliases=("发帖",),
        handler=posts.post,
        args=(
            Arg("persona", "str", "which persona", required=True, autocomplete="personas"),
            Arg("prompt", "str", "what the picture shows", required=True, min=1, max=MAX_TEXT_CHARS),
            Arg("count", "int", "how many images (1-4)", min=1, max=4, default=1),
            Arg("product", "str", "products from your library (comma-separated)", max=200, autocomplete="products"),
            Arg("product_image", "attachment", "a product image for this post", role="product"),
            Arg("scene", "attachment", "a scene image to start from", role="scene"),
            # wave 1's name of the scene option: kept so existing clients and habits still work
            Arg("image", "attachment", "optional scene image to start from", role="scene"),
        ),
    ),
    Command(
        "product",
        "Your product library: the products your posts show",
        "商品库：帖子里展示的商品",
        "/product add <name> (+ image) | list | show <name> | delete <name>",
        aliases=("商品",),
        handler=products.product,
        subcommands=(
            Command(
                "add",
                "Add a product to your library with one image",
                "添加商品（附一张图片，或先发图片再发 商品 添加 <名字>）",
                "/product add <name> (+ image)",
                aliases=("添加",),
                args=(
                    Arg("name", "str", "a name for the product", required=True, min=1, max=40),
                    Arg("image", "attachment", "the product's image", role="product"),
                ),
            ),
            Command("list", "Your products", "我的商品", "/product list", aliases=("列表",)),
            Command(
                "show",
                "Show a product's image",
                "查看商品",
                "/product show <name>",
                aliases=("查看",),
                args=(_PRODUCT,),
            ),
            Command(
                "delete",
                "Delete a product from your library",
                "删除商品",
                "/product delete <name>",
                aliases=("删除",),
                args=(_PRODUCT,),
            ),
        ),
    ),
    Command(
        "reference",
        "The role of an image you sent: product, scene or face",
        "图片的用途：商品 / 场景 / 人脸",
        "/reference product|scene|face <key>",
        handler=references.choose,
        platforms=_BUTTON_ONLY,
    ),
    Command(
        "approve",
        "✅ Approve the current result of this post",
        "通过当前结果",
        "/approve",
        aliases=("ok", "通过"),
        handler=posts.approve,
        result_action=True,
        emoji="✅",
    ),
    Command(
        "regen",
        "🔁 Regenerate the current result with a new seed",
        "换一个种子重新生成",
        "/regen",
        aliases=("regenerate", "重来"),
        handler=posts.regen,
        result_action=True,
        emoji="🔁",
    ),
    Command(
        "undo",
        "↩️ Go back to the previous image of this post",
        "撤销，回到上一张",
        "/undo",
        aliases=("撤销",),
        handler=posts.undo,
        result_action=True,
        emoji="↩️",
    ),
    Command(
        "cancel",
        "❌ Cancel this post's running job (outside a post: your persona training)",
        "取消正在进行的任务",
        "/cancel",
        aliases=("取消",),
        handler=posts.cancel,
        result_action=True,
        emoji="❌",
    ),
    Command(
        "history",
        "The turn tree of this post, with identity scores",
        "本帖的修改历史和相似度",
        "/history",
        aliases=("历史",),
        handler=info.history,
    ),
    Command(
        "export",
        "Approved images of this post and a manifest, as a zip",
        "导出已通过的图片和 manifest（zip）",
        "/export",
        aliases=("导出",),
        handler=info.export,
    ),
    Command(
        "status",
        "Your jobs and their places in the queue",
        "我的任务和排队位置",
        "/status",
        aliases=("状态",),
        handler=info.status,
    ),
    Command(
        "settings",
        "Generation settings: in a post for that post, elsewhere your defaults",
        "生成设置：在帖子里只改本帖，否则改默认值",
        "/settings [post] steps=N guidance=G size=WxH seed=S|random",
        aliases=("设置",),
        handler=info.settings,
        args=(
            Arg("steps", "int", "denoising steps", min=BOUNDS["steps"][0], max=BOUNDS["steps"][1]),
            Arg("guidance", "float", "guidance scale", min=BOUNDS["guidance"][0], max=BOUNDS["guidance"][1]),
            Arg("size", "str", "image size as WxH, e.g. 1024x1024", min=3, max=11),
            Arg("seed", "str", "a number, or 'random'", min=1, max=20),
        ),
    ),
    Command(
        "threads",
        "List your posts",
        "我的帖子列表",
        "/threads",
        handler=info.threads,
        platforms=_TEXT_ONLY,
    ),
    Command(
        "thread",
        "Switch to one of your posts",
        "切换到某个帖子",
        "/thread <id>",
        handler=info.thread,
        platforms=_TEXT_ONLY,
        args=(Arg("id", "int", "the post number", required=True),),
    ),
    Command(
        "gallery",
        "Your posts and personas in the browser: a private link",
        "在浏览器中查看我的帖子和人设（私人链接）",
        "/gallery",
        aliases=("画廊",),
        handler=studio.gallery,
    ),
    Command("help", "How Persona Studio works", "帮助", "/help", aliases=("帮助",), handler=info.help),
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
            lines.append(f"  {row.usage or '/' + row.name}{emoji}")
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
