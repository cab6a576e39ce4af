"""One persona slot: a persona's LoRA blend merged into ONE exact LoRA and hot-swapped into a
single adapter of the transformer, so a compiled transformer switches personas without recompiling.

A blend ``sum_i w_i * s_i * B_i A_i`` (``s_i = alpha_i / rank_i``, what ``set_adapters`` computes)
is itself a LoRA of rank ``sum_i rank_i``: stack the members' A matrices, and stack their B
matrices each scaled by ``w_i * s_i`` (PEFT's "cat" combination, :func:`merge_loras`). The merged
LoRA has scale 1, so its output equals the blend up to fp32 rounding.

:class:`PersonaSlot` keeps that LoRA in one peft adapter (:data:`SLOT`): ``enable_lora_hotswap(
target_rank=...)`` runs before the first load, every later persona is loaded with
``load_lora_weights(..., adapter_name=SLOT, hotswap=True)``, which copies the weights into the
existing (rank-padded) tensors in place. No persona at all is a zero LoRA in the slot. A LoRA whose
rank exceeds the slot's or that adapts layers the slot does not have rebuilds the slot (counted in
``rebuilds``; a compiled transformer recompiles once then).

The slot API is "load this LoRA as the persona": :meth:`PersonaSlot.load` takes a LoRA file or a
diffusers-format state dict (a trained persona version, say) and a cache key; :meth:`PersonaSlot.apply_mix`
merges a library blend first. Files are read in any format the pipeline's ``lora_state_dict`` reads.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from cachetools import LRUCache

log = logging.getLogger(__name__)

#: the one adapter name of the persona slot
SLOT = "persona"
#: the smallest automatic slot rank (a trained persona version is rank 16 by default)
MIN_AUTO_RANK = 16
#: a member LoRA: module name (``transformer.…``) -> (A: rank x in, B: out x rank, scale)
LoraFactors = dict[str, tuple[torch.Tensor, torch.Tensor, float]]


def _alpha_of(module: str, alphas: Mapping[str, Any], metadata: Mapping[str, Any] | None) -> float | None:
    for key in (f"{module}.alpha", module.removeprefix("transformer.") + ".alpha"):
        if key in alphas:
            value = alphas[key]
            return float(value.item() if isinstance(value, torch.Tensor) else value)
    if metadata:
        for pattern, value in (metadata.get("alpha_pattern") or {}).items():
            if module.endswith(pattern):
                return float(value)
        if metadata.get("lora_alpha") is not None:
            return float(metadata["lora_alpha"])
    return None


def read_lora(pipe_cls: type, source: str | Path | Mapping[str, torch.Tensor]) -> LoraFactors:
    """The LoRA in ``source`` (a file, or a state dict) as A, B and scale per adapted module, in
    diffusers' module names, the way ``load_lora_weights`` would scale it (alpha / rank, or
    alpha / sqrt(rank) with rsLoRA; scale 1 without an alpha)."""
    params = inspect.signature(pipe_cls.lora_state_dict).parameters
    kwargs: dict[str, Any] = {"return_lora_metadata": True}
    if "return_alphas" in params:
        kwargs["return_alphas"] = True
    given = dict(source) if isinstance(source, Mapping) else str(source)
    out = pipe_cls.lora_state_dict(given, **kwargs)
    parts = list(out) if isinstance(out, tuple) else [out]
    state_dict: dict[str, torch.Tensor] = dict(parts[0])
    alphas: dict[str, Any] = dict(parts[1]) if len(parts) == 3 and parts[1] else {}
    metadata = parts[-1] if len(parts) >= 2 else None
    if isinstance(metadata, str):
        metadata = json.loads(metadata)
    alphas.update({k: state_dict.pop(k) for k in [k for k in state_dict if k.endswith(".alpha")]})
    factors: LoraFactors = {}
    for key, a in state_dict.items():
        if not key.endswith(".lora_A.weight"):
            continue
        module = key.removesuffix(".lora_A.weight")
        if not module.startswith(("transformer.", "text_encoder")):
            module = "transformer." + module
        b = state_dict.get(key.replace(".lora_A.", ".lora_B."))
        if b is None:
            raise ValueError(f"LoRA {module}: lora_A without lora_B")
        rank = a.shape[0]
        alpha = _alpha_of(module, alphas, metadata)
        if alpha is None:
            scale = 1.0
        elif metadata and metadata.get("use_rslora"):
            scale = alpha / math.sqrt(rank)
        else:
            scale = alpha / rank
        factors[module] = (a.float(), b.float(), scale)
    if not factors:
        raise ValueError("no LoRA layers (lora_A/lora_B) found")
    return factors


def merge_loras(members: Sequence[tuple[LoraFactors, float]]) -> dict[str, torch.Tensor]:
    """One diffusers-format LoRA (scale 1) equal to ``sum_i weight_i * member_i``: per module, A
    matrices stacked along the rank, B matrices scaled by ``weight * scale`` and stacked likewise."""
    modules: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for factors, weight in members:
        for module, (a, b, scale) in factors.items():
            modules.setdefault(module, []).append((a, b * (float(weight) * scale)))
    merged: dict[str, torch.Tensor] = {}
    for module, pairs in modules.items():
        merged[f"{module}.lora_A.weight"] = torch.cat([a for a, _ in pairs], dim=0).contiguous()
        merged[f"{module}.lora_B.weight"] = torch.cat([b for _, b in pairs], dim=1).contiguous()
    return merged


def _shape(state_dict: Mapping[str, torch.Tensor]) -> tuple[set[str], int]:
    """Adapted modules and the largest rank of a diffusers-format LoRA state dict."""
    modules = {k.removesuffix(".lora_A.weight") for k in state_dict if k.endswith(".lora_A.weight")}
    rank = max((v.shape[0] for k, v in state_dict.items() if k.endswith(".lora_A.weight")), default=1)
    return modules, rank


class PersonaSlot:
    """The transformer's one persona adapter; see the module docstring.

    ``target_rank``: the slot's rank (LoRAs are zero-padded to it); ``0`` = auto: a blend of
    ``mix_size`` library LoRAs of the layout's largest rank, at least :data:`MIN_AUTO_RANK`.
    ``layout``: LoRA files whose modules the slot adapts from the start (the library), so later
    personas hot-swap instead of rebuilding. ``disk_loads`` counts LoRA files read."""

    def __init__(
        self,
        pipe: Any,
        *,
        target_rank: int = 0,
        layout: Sequence[Path] = (),
        mix_size: int = 3,
        cache_size: int = 16,
    ) -> None:
        self.pipe = pipe
        self.target_rank = target_rank
        self.mix_size = max(1, mix_size)
        self.layout = list(layout)
        self.disk_loads = 0
        self.loads = 0  # LoRAs put into the slot (hot swaps + rebuilds)
        self.rebuilds = 0  # loads that could not hot-swap (the first load is not counted)
        self.key: Hashable | None = None  # what the slot holds now
        self._modules: set[str] = set()
        self._rank = 0
        self._shapes: dict[str, tuple[int, int]] = {}  # the slot's layers: module -> (in, out)
        self._files: LRUCache[str, LoraFactors] = LRUCache(maxsize=64)
        self._merged: LRUCache[Hashable, dict[str, torch.Tensor]] = LRUCache(maxsize=max(1, cache_size))

    # -- reading ---------------------------------------------------------------------------------
    def factors(self, path: Path) -> LoraFactors:
        """A LoRA file's factors (read once)."""
        key = str(path)
        found = self._files.get(key)
        if found is None:
            found = self._files[key] = read_lora(type(self.pipe), path)
            self.disk_loads += 1
        return found

    def _zero(self) -> dict[str, torch.Tensor]:
        """A rank-1 LoRA on every layer the layout's files adapt that changes nothing (A = B = 0)."""
        shapes = dict(self._shapes)
        for path in self.layout:
            for module, (a, b, _) in self.factors(path).items():
                shapes[module] = (a.shape[1], b.shape[0])
        zero: dict[str, torch.Tensor] = {}
        for module, (fan_in, fan_out) in shapes.items():
            zero[f"{module}.lora_A.weight"] = torch.zeros(1, fan_in)
            zero[f"{module}.lora_B.weight"] = torch.zeros(fan_out, 1)
        return zero

    # -- loading ---------------------------------------------------------------------------------
    def apply_mix(self, mix: Sequence[tuple[str, float]], path_of: Callable[[str], Path]) -> None:
        """Make the blend ``mix`` (LoRA name, weight) the persona; an empty mix is no LoRA."""
        key = ("mix", tuple((str(n), float(w)) for n, w in mix))
        self._ensure_active()
        if key == self.key:
            return
        if not mix:
            merged = self._zero()
            if not merged:  # nothing loaded yet and nothing to load: no LoRA
                return
        else:
            merged = self._merged.get(key)
            if merged is None:
                merged = merge_loras([(self.factors(path_of(name)), weight) for name, weight in mix])
                self._merged[key] = merged
        self.load(merged, key)

    def load(self, lora: str | Path | Mapping[str, torch.Tensor], key: Hashable) -> None:
        """Load ``lora`` (a LoRA file in any format the pipeline reads, or a diffusers-format state
        dict with ``transformer.`` keys) as the persona, under the cache key ``key``."""
        if key == self.key:
            return
        if isinstance(lora, str | Path):
            state_dict = merge_loras([(self.factors(Path(lora)), 1.0)])
        else:
            state_dict = dict(lora)
        modules, rank = _shape(state_dict)
        self._ensure_active()
        if self._modules and modules <= self._modules and rank <= self._rank:
            self.pipe.load_lora_weights(self._padded(state_dict), adapter_name=SLOT, hotswap=True)
        else:
            self._build(state_dict, modules, rank)
        self.loads += 1
        self.key = key

    def _build(self, state_dict: dict[str, torch.Tensor], modules: set[str], rank: int) -> None:
        """(Re)create the slot adapter: hotswap enabled first, with room for ``rank``."""
        if self._modules:
            self.rebuilds += 1
            log.warning("persona slot rebuilt (rank %d, %d layers): a compiled model recompiles", rank, len(modules))
            self.pipe.delete_adapters(SLOT)
        self._shapes = {}
        layout = self._zero()
        layout_modules = _shape(layout)[0] if layout else set()
        member_rank = max((a.shape[0] for p in self.layout for a, _, _ in self.factors(p).values()), default=0)
        self._rank = max(rank, self.target_rank or max(MIN_AUTO_RANK, self.mix_size * member_rank))
        # every layer the layout adapts gets a slot entry now (zero where this LoRA has none)
        full = {**layout, **state_dict}
        for k, v in full.items():
            if k.endswith(".lora_A.weight"):
                module = k.removesuffix(".lora_A.weight")
                self._shapes[module] = (v.shape[1], full[f"{module}.lora_B.weight"].shape[0])
        self._modules = modules | layout_modules
        self.pipe.enable_lora_hotswap(target_rank=self._rank, check_compiled="ignore")
        self.pipe.load_lora_weights(self._padded(full), adapter_name=SLOT)
        self._ensure_active()

    def _padded(self, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``state_dict`` on every slot layer at exactly the slot's rank (zero rows of A, zero
        columns of B: the same product): every load then has the same peft config (one rank, no
        rank or alpha patterns), which hot swapping requires."""
        padded: dict[str, torch.Tensor] = {}
        for module, (fan_in, fan_out) in self._shapes.items():
            a = torch.zeros(self._rank, fan_in)
            b = torch.zeros(fan_out, self._rank)
            given = state_dict.get(f"{module}.lora_A.weight")
            if given is not None:
                a[: given.shape[0]] = given
                b[:, : given.shape[0]] = state_dict[f"{module}.lora_B.weight"]
            padded[f"{module}.lora_A.weight"] = a
            padded[f"{module}.lora_B.weight"] = b
        return padded

    def touches_text_encoders(self) -> bool:
        return any(not module.startswith("transformer.") for module in self._shapes)

    def _ensure_active(self) -> None:
        """Make the slot the only active adapter again if something else (a blend, training) changed that."""
        if not self._modules:
            return
        transformer = self.pipe.transformer
        if list(transformer.active_adapters()) != [SLOT]:  # set_adapter keeps the slot's tensor scalings
            transformer.enable_adapters()
            transformer.set_adapter(SLOT)
