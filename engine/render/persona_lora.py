"""A trained persona LoRA: the peft adapter on the transformer, and its file in diffusers' format.

The file is what diffusers' DreamBooth scripts write: ``transformer.<module>.lora_A/B.weight``
tensors, and the peft ``LoraConfig`` as JSON under the safetensors metadata key
``lora_adapter_metadata`` (diffusers' ``save_lora_weights(..., transformer_lora_adapter_metadata=)``).
Without that metadata a loader infers the rank from the tensors and sets ``lora_alpha`` to it, so
a LoRA trained with alpha != rank would load with the wrong scale. Plain diffusers
``load_lora_weights`` reads the file, metadata included.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

#: the safetensors metadata key diffusers keeps the adapter config under
METADATA_KEY = "lora_adapter_metadata"
WEIGHT_NAME = "pytorch_lora_weights.safetensors"


def add_training_adapter(
    transformer: torch.nn.Module, adapter: str, *, rank: int, alpha: float, targets: tuple[str, ...]
) -> list[torch.nn.Parameter]:
    """Add a fresh LoRA ``adapter`` (B = 0: the model is unchanged) and make it the only active and
    the only trainable part of ``transformer``; its weights are fp32. Returns its parameters."""
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig

    wanted = lora_targets(transformer, targets)
    config = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=wanted)
    transformer.requires_grad_(False)
    transformer.add_adapter(config, adapter_name=adapter)
    transformer.enable_adapters()  # a mix switched off with disable_lora() left them disabled
    transformer.set_adapters([adapter], weights=[1.0])
    params = []
    for name, param in transformer.named_parameters():
        trainable = f".{adapter}." in name and "lora_" in name
        param.requires_grad_(trainable)
        if trainable:
            params.append(param)
    cast_training_params(transformer, dtype=torch.float32)
    return params


def lora_targets(transformer: torch.nn.Module, targets: tuple[str, ...]) -> list[str]:
    """peft ``target_modules`` for the Linear layers named by the suffixes ``targets``: a suffix
    as it is when every module it names is a Linear, else the full names of its Linear modules
    (klein's ``attn.to_out`` is a Linear in single-stream blocks, a ModuleList elsewhere)."""

    def linear(module: torch.nn.Module) -> bool:  # a Linear, or one that peft wrapped for another LoRA
        return isinstance(module, torch.nn.Linear) or isinstance(getattr(module, "base_layer", None), torch.nn.Linear)

    modules = list(transformer.named_modules())
    wanted: list[str] = []
    for target in targets:
        named = [(n, m) for n, m in modules if n == target or n.endswith("." + target)]
        if not named:
            continue
        if all(linear(m) for _, m in named):
            wanted.append(target)
        else:
            wanted.extend(n for n, m in named if linear(m))
    return wanted


def adapter_state(transformer: torch.nn.Module, adapter: str) -> dict[str, torch.Tensor]:
    """The adapter's LoRA tensors in peft's state-dict naming (no adapter name), on the CPU."""
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(transformer, adapter_name=adapter)
    return {key: value.detach().to("cpu", torch.float32).contiguous() for key, value in state.items()}


def adapter_metadata(transformer: torch.nn.Module, adapter: str) -> dict[str, Any]:
    """The adapter's peft config as a JSON-ready dict (what diffusers stores as metadata)."""
    config = transformer.peft_config[adapter].to_dict()  # type: ignore[index, union-attr, operator]
    return {k: sorted(v) if isinstance(v, set) else v for k, v in config.items()}


def save_persona_lora(
    pipeline_class: Any, state: dict[str, torch.Tensor], metadata: dict[str, Any], path: Path
) -> Path:
    """Write ``state`` with its adapter ``metadata`` to ``path`` through ``pipeline_class``'s
    ``save_lora_weights`` (the family's pipeline: FluxKontextPipeline, ...)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        pipeline_class.save_lora_weights(
            tmp,
            transformer_lora_layers=state,
            transformer_lora_adapter_metadata=dict(metadata),
            weight_name=WEIGHT_NAME,
        )
        (Path(tmp) / WEIGHT_NAME).replace(path)
    return path


def persona_lora_bytes(pipeline_class: Any, state: dict[str, torch.Tensor], metadata: dict[str, Any]) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        return save_persona_lora(pipeline_class, state, metadata, Path(tmp) / "lora.safetensors").read_bytes()


def read_metadata(path: Path) -> dict[str, Any]:
    """The transformer's adapter config stored in a persona LoRA file (``{}`` when absent)."""
    with safe_open(str(path), framework="pt") as fh:
        raw = (fh.metadata() or {}).get(METADATA_KEY)
    if not raw:
        return {}
    packed = json.loads(raw)
    prefix = "transformer."
    return {k.removeprefix(prefix): v for k, v in packed.items() if k.startswith(prefix)}
