"""Persona LoRA mixes: the library on disk, drawing a mix, applying it to the pipeline.

A persona is a weighted blend of several real-face LoRAs of one archetype. The library lives in
``LORA_DIR`` as ``<archetype>/<name>.safetensors`` in any format ``load_lora_weights`` accepts
(diffusers/peft, kohya, ...); a LoRA's name is ``"<archetype>/<file stem>"``.

A LoRA fits one transformer, so each engine family has its own library (engine.render.families.RenderFamily.lora_root):
``LORA_DIR/klein/`` for FLUX.2 klein, ``LORA_DIR/kontext/`` or else ``LORA_DIR`` itself for
Kontext. The tiny library is generated per family (``tiny`` into LORA_DIR, ``tiny-klein`` into
``LORA_DIR/klein``).

This module imports nothing heavy at import time: listing archetypes and drawing mixes work
without torch; :class:`AdapterManager` and :func:`write_tiny_library` use the pipeline / torch.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.specs import TINY_ARCHETYPES, PersonaSpec

if TYPE_CHECKING:
    from diffusers import FluxKontextPipeline

    from engine.render.persona_slot import PersonaSlot

#: Transformer layers the tiny LoRAs adapt (suffixes of module names).
TINY_TARGETS = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "proj_out")
#: klein's single-stream blocks fuse their projections into these layers
KLEIN_EXTRA_TARGETS = ("attn.to_qkv_mlp_proj", "attn.to_out")
_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")


class LoraLibrary:
    """The LoRA files under ``root``: one folder per archetype, one ``.safetensors`` per face."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def archetypes(self) -> list[str]:
        """Archetype folders holding at least one LoRA, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(
            d.name
            for d in self.root.iterdir()
            if d.is_dir() and not d.name.startswith(".") and any(d.glob("*.safetensors"))
        )

    def is_empty(self) -> bool:
        return not self.archetypes()

    def names(self, archetype: str) -> list[str]:
        """LoRA names (``"<archetype>/<stem>"``) of ``archetype``; ValueError when it is unknown."""
        known = self.archetypes()
        if archetype not in known:
            listed = ", ".join(known) or f"none: {self.root} holds no <archetype>/<name>.safetensors"
            raise ValueError(f"unknown archetype {archetype!r}; known archetypes: {listed}")
        return [f"{archetype}/{p.stem}" for p in sorted((self.root / archetype).glob("*.safetensors"))]

    def path(self, name: str) -> Path:
        """File of the LoRA called ``name``; ValueError on a malformed name, FileNotFoundError if absent."""
        archetype, _, stem = name.partition("/")
        if not (_NAME.match(archetype) and _NAME.match(stem)):
            raise ValueError(f"bad LoRA name {name!r}; expected '<archetype>/<file stem>'")
        path = self.root / archetype / f"{stem}.safetensors"
        if not path.is_file():
            raise FileNotFoundError(f"LoRA {name!r} not found: no file {path}")
        return path

    def draw_mix(self, archetype: str, seed: int, k: int = 3) -> list[tuple[str, float]]:
        return draw_mix(self.names(archetype), seed, k)


def draw_mix(names: Sequence[str], seed: int, k: int = 3, concentration: float = 1.0) -> list[tuple[str, float]]:
    """Pick ``k`` of ``names`` and Dirichlet weights summing to 1, both determined by ``seed``."""
    if not names:
        raise ValueError("no LoRAs to draw a mix from")
    if k < 1:
        raise ValueError(f"k must be at least 1 (got {k})")
    rng = np.random.default_rng(seed)
    k = min(k, len(names))
    chosen = rng.choice(len(names), size=k, replace=False)
    weights = rng.dirichlet([concentration] * k)
    return [(names[int(i)], float(w)) for i, w in zip(chosen, weights, strict=True)]


#: LoRA names of this form are a trained persona version's file in the blob store
BLOB_PREFIX = "blob:"


def persona_mix(persona: PersonaSpec) -> list[tuple[str, float]]:
    """The LoRAs a persona renders with: its trained version in use (one LoRA at weight 1), else its blend."""
    if persona.version and persona.version_lora_key:
        return [(BLOB_PREFIX + persona.version_lora_key, 1.0)]
    return [(str(n), float(w)) for n, w in persona.lora_mix]


def adapter_name(lora_name: str) -> str:
    """The peft adapter name of a LoRA (module attribute safe: no '/' or '.')."""
    return re.sub(r"[^A-Za-z0-9_]", "_", lora_name.replace("/", "__"))


class AdapterManager:
    """Keeps up to ``capacity`` LoRAs loaded in the pipeline (least recently used evicted) and
    activates a persona's mix with ``set_adapters``. ``disk_loads`` counts files read from disk:
    switching between personas whose LoRAs are loaded reads nothing.

    With a ``slot`` (engine.render.persona_slot) a mix is instead merged into one exact LoRA and
    hot-swapped into the one persona adapter: no recompile of a compiled transformer. A trained
    persona version (``blob:<key>``, weight 1) goes into the same slot as it is."""

    def __init__(
        self,
        pipe: FluxKontextPipeline,
        library: LoraLibrary,
        capacity: int = 8,
        blob_path: Callable[[str], Path] | None = None,
        slot: PersonaSlot | None = None,
    ) -> None:
        self.pipe = pipe
        self.library = library
        #: file of a ``blob:<key>`` LoRA (a trained persona version)
        self.blob_path = blob_path
        self.slot = slot
        self.capacity = max(1, capacity)
        self._loaded: OrderedDict[str, str] = OrderedDict()  # LoRA name -> adapter name, LRU first
        self._active: tuple[tuple[str, float], ...] = ()
        self.disk_loads = 0

    @property
    def loaded(self) -> list[str]:
        """Loaded LoRA names, least recently used first."""
        return list(self._loaded)

    @property
    def active(self) -> tuple[tuple[str, float], ...]:
        return self._active

    def touches_text_encoders(self) -> bool:
        """Whether an active LoRA changes a text encoder (then prompt embeddings depend on the mix)."""
        if not self._active:
            return False
        if self.slot is not None:
            return self.slot.touches_text_encoders()
        per_part = self.pipe.get_list_adapters()
        names = {self._loaded[n] for n, _ in self._active}
        return any(part != "transformer" and names & set(adapters) for part, adapters in per_part.items())

    def path(self, name: str) -> Path:
        """The file of LoRA ``name``: a library name, or ``blob:<key>`` (a trained persona version)."""
        if name.startswith(BLOB_PREFIX) and self.blob_path is not None:
            return self.blob_path(name.removeprefix(BLOB_PREFIX))
        return self.library.path(name)

    def _ensure_loaded(self, name: str) -> str:
        if name in self._loaded:
            self._loaded.move_to_end(name)
            return self._loaded[name]
        path = self.path(name)
        adapter = adapter_name(name)
        self.pipe.load_lora_weights(str(path), adapter_name=adapter)
        self.disk_loads += 1
        self._loaded[name] = adapter
        return adapter

    def _evict(self, keep: set[str]) -> None:
        for name in list(self._loaded):
            if len(self._loaded) <= self.capacity:
                break
            if name not in keep:
                self.pipe.delete_adapters(self._loaded.pop(name))

    def forget_active(self) -> None:
        """Something else changed the active adapters (training): the next ``apply`` sets them again."""
        self._active = (("<changed>", 0.0),)

    def apply(self, mix: Sequence[tuple[str, float]]) -> None:
        """Make ``mix`` the active LoRA blend; an empty mix turns LoRAs off."""
        mix = tuple((str(n), float(w)) for n, w in mix)
        if self.slot is not None:
            self.slot.apply_mix(mix, self.path)
            self.disk_loads = self.slot.disk_loads
            self._active = mix
            return
        if mix == self._active:
            return
        if not mix:
            if self._loaded:
                self.pipe.disable_lora()
            self._active = ()
            return
        adapters = [self._ensure_loaded(name) for name, _ in mix]
        self._evict(keep={name for name, _ in mix})
        self.pipe.enable_lora()
        self.pipe.set_adapters(adapters, adapter_weights=[w for _, w in mix])
        self._active = mix


def _tiny_transformer(model: str) -> Any:
    """The tiny transformer of ``model`` (``tiny`` or ``tiny-klein``) on the meta device."""
    import torch

    from engine.render.families import KONTEXT, tiny_family

    with torch.device("meta"):
        return (tiny_family(model) or KONTEXT).tiny_transformer()


def write_tiny_library(
    root: Path,
    archetypes: Sequence[str] = TINY_ARCHETYPES,
    per_archetype: int = 4,
    rank: int = 4,
    seed: int = 0,
    model: str = "tiny",
) -> list[Path]:
    """Write random diffusers/peft-format LoRAs for the tiny transformer of ``model`` (``tiny``:
    Kontext, ``tiny-klein``: klein) under ``root``.

    Keys are ``transformer.<module>.lora_A.weight`` (rank x in) and ``...lora_B.weight``
    (out x rank) for the :data:`TINY_TARGETS` layers (klein's single blocks: their fused
    ``attn.to_qkv_mlp_proj`` and ``attn.to_out``); no alphas, so each LoRA's scale is 1.
    Returns the files written.
    """
    import torch
    from safetensors.torch import save_file

    transformer = _tiny_transformer(model)
    targets = (*TINY_TARGETS, *KLEIN_EXTRA_TARGETS)
    layers = [
        (name, module.in_features, module.out_features)
        for name, module in transformer.named_modules()
        if isinstance(module, torch.nn.Linear) and name.endswith(targets)
    ]
    generator = torch.Generator().manual_seed(seed)
    written = []
    for archetype in archetypes:
        folder = Path(root) / archetype
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_archetype):
            tensors = {}
            for name, fan_in, fan_out in layers:
                a = torch.randn(rank, fan_in, generator=generator) / fan_in**0.5
                b = torch.randn(fan_out, rank, generator=generator) * (0.5 / rank**0.5)
                tensors[f"transformer.{name}.lora_A.weight"] = a.contiguous()
                tensors[f"transformer.{name}.lora_B.weight"] = b.contiguous()
            path = folder / f"{archetype}_face{i + 1}.safetensors"
            save_file(tensors, str(path), metadata={"format": "pt"})
            written.append(path)
    return written
