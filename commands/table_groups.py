"""The ``/persona`` and ``/product`` groups of the command table (:mod:`commands.table`): one row,
with its own handler and arguments, per subcommand."""

from __future__ import annotations

from dataclasses import replace

from commands.command import Arg, Command
from commands.handlers import persona_versions, personas, products
from commands.params import TRAIN_BOUNDS
from engine.specs import REAL_TRAIN_DEFAULTS, ReferenceRole

_NAME = Arg(
    "name",
    "str",
    "the persona",
    required=True,
    autocomplete="personas",
    positional=True,
    takes="words",
    missing="name the persona (see /persona list)",
)
_PRODUCT = Arg(
    "name",
    "str",
    "the product",
    required=True,
    autocomplete="products",
    positional=True,
    takes="words",
    missing="name the product (see /product list)",
)
_NEW_NAME = Arg(
    "name",
    "str",
    "",
    required=True,
    min=1,
    max=40,
    positional=True,
    takes="words",
    error="a persona name has 1-40 letters, digits, spaces, '-', '_' or '.'",
)


def _train_arg(name: str, what: str, shown: str) -> Arg:
    low, high = TRAIN_BOUNDS[name]
    default = getattr(REAL_TRAIN_DEFAULTS, name)
    return Arg(name, "int", f"{what} (default {default})", min=low, max=high, shown=shown)


PERSONA = Command(
    "persona",
    "Create and manage personas",
    "创建和管理人设",
    aliases=("人设",),
    default_subcommand="list",
    subcommands=(
        Command(
            "create",
            "Create a persona: a new face blended from an archetype's LoRAs",
            "创建人设：由一个风格的多个 LoRA 混合出新面孔",
            aliases=("创建",),
            handler=personas.create,
            args=(
                Arg(
                    "archetype",
                    "str",
                    "the look to start from",
                    required=True,
                    autocomplete="archetypes",
                    positional=True,
                ),
                replace(_NEW_NAME, description="a name for the persona (default: one is made up)", required=False),
            ),
        ),
        Command(
            "create-from-photo",
            "Create a persona from a photo of a real person who agreed to it",
            "用真人照片创建人设（需本人同意，consent=yes）",
            aliases=("照片创建",),
            handler=personas.create_from_photo,
            args=(
                replace(_NEW_NAME, description="a name for the persona"),
                Arg(
                    "consent",
                    "str",
                    "type yes: the pictured person agreed to this use",
                    min=1,
                    max=10,
                    shown="consent=yes",
                ),
                Arg("image", "attachment", "a photo of the face", role=ReferenceRole.FACE, shown="(+ face image)"),
            ),
        ),
        Command("list", "Your personas", "我的人设", aliases=("列表",), handler=personas.list_personas),
        Command(
            "show",
            "Show a persona: its mix, seed and reference face",
            "查看人设：混合、种子和参考脸",
            aliases=("查看",),
            handler=personas.show,
            args=(_NAME,),
        ),
        Command(
            "train",
            "Train a persona LoRA version from renders that match its face",
            "训练人设：用与参考脸一致的渲染图训练新的 LoRA 版本",
            aliases=("训练",),
            handler=persona_versions.train,
            args=(
                _NAME,
                _train_arg("images", "candidate renders", "[images=N]"),
                _train_arg("steps", "training steps", "[steps=S]"),
                _train_arg("rank", "LoRA rank", "[rank=R]"),
            ),
        ),
        Command(
            "use",
            "Choose the version a persona renders with: v<N> or blend",
            "切换人设版本：v<N> 或 blend（混合）",
            aliases=("使用",),
            handler=persona_versions.use,
            args=(
                replace(_NAME, missing=""),
                Arg(
                    "version",
                    "str",
                    "v<N> or blend",
                    required=True,
                    min=1,
                    max=10,
                    positional=True,
                    shown="v<N>|blend",
                ),
            ),
        ),
        Command(
            "delete",
            "Delete one of your personas",
            "删除人设",
            aliases=("删除",),
            handler=personas.delete,
            args=(_NAME,),
        ),
    ),
)
PRODUCT = Command(
    "product",
    "Your product library: the products your posts show",
    "商品库：帖子里展示的商品",
    aliases=("商品",),
    default_subcommand="list",
    subcommands=(
        Command(
            "add",
            "Add a product to your library with one image",
            "添加商品（附一张图片，或先发图片再发 商品 添加 <名字>）",
            aliases=("添加",),
            handler=products.add,
            args=(
                replace(
                    _NEW_NAME,
                    description="a name for the product",
                    error="a product name has 1-40 letters, digits, spaces, '-', '_' or '.'",
                ),
                Arg("image", "attachment", "the product's image", role=ReferenceRole.PRODUCT, shown="(+ image)"),
            ),
        ),
        Command("list", "Your products", "我的商品", aliases=("列表",), handler=products.list_products),
        Command(
            "show", "Show a product's image", "查看商品", aliases=("查看",), handler=products.show, args=(_PRODUCT,)
        ),
        Command(
            "delete",
            "Delete a product from your library",
            "删除商品",
            aliases=("删除",),
            handler=products.delete,
            args=(_PRODUCT,),
        ),
    ),
)
