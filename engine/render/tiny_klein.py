"""A tiny, randomly initialised FLUX.2 [klein] pipeline, built entirely offline.

Same classes as FLUX.2-klein-4B (Flux2Transformer2DModel without guidance embeddings,
AutoencoderKLFlux2 with 32 latent channels and batch-norm statistics, a Qwen3ForCausalLM text
encoder whose hidden states of three layers are stacked, a Qwen2 tokenizer with a chat template,
the flow-matching scheduler), just very small. Nothing is downloaded: the tokenizer is built here
from a byte-level vocabulary without merges (every byte is one token).

Facts the tiny build has to respect: klein applies the tokenizer's chat template, so the tokenizer
needs ``chat_template``; the transformer's ``joint_attention_dim`` is three times the encoder's
hidden size and ``text_encoder_out_layers`` must name hidden states the encoder has
(:func:`text_encoder_out_layers`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline, Flux2Transformer2DModel
from tokenizers.pre_tokenizers import ByteLevel
from transformers import Qwen2TokenizerFast, Qwen3Config, Qwen3ForCausalLM

#: klein-4B / 9B stack the hidden states of these Qwen3 layers (36-layer encoders)
REAL_OUT_LAYERS = (9, 18, 27)
#: max text tokens of the tiny model (byte-level: one token per byte of the templated prompt)
TINY_KLEIN_MAX_SEQUENCE_LENGTH = 128

#: Qwen3 config of the tiny text encoder (vocabulary and special tokens come from the tokenizer)
TINY_QWEN3_CONFIG: dict[str, Any] = {
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 8,
    "max_position_embeddings": 256,
    "tie_word_embeddings": True,
}
#: Config of the tiny transformer: 2 x 16 wide, one double and one single block
TINY_KLEIN_TRANSFORMER_CONFIG: dict[str, Any] = {
    "patch_size": 1,
    "in_channels": 128,  # 32 latent channels x 2x2 patches, as in FLUX.2
    "num_layers": 1,
    "num_single_layers": 1,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": 3 * TINY_QWEN3_CONFIG["hidden_size"],  # three stacked encoder layers
    "timestep_guidance_channels": 32,
    "mlp_ratio": 2.0,
    "axes_dims_rope": (4, 4, 4, 4),  # sums to attention_head_dim
    "guidance_embeds": False,  # klein is step-distilled: no guidance embedding
}
#: Config of the tiny VAE: four blocks -> 8x downsampling, 32 latent channels like FLUX.2's VAE
TINY_KLEIN_VAE_CONFIG: dict[str, Any] = {
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (8, 8, 16, 16),
    "layers_per_block": 1,
    "latent_channels": 32,
    "norm_num_groups": 4,
    "sample_size": 64,
    "mid_block_add_attention": False,
}

#: Qwen3's chat template, reduced to what klein renders: one user turn and an empty thinking block
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)
_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")


def build_qwen_tokenizer(max_length: int = TINY_KLEIN_MAX_SEQUENCE_LENGTH) -> Qwen2TokenizerFast:
    """A byte-level Qwen2 tokenizer: the 256 byte symbols, no merges, Qwen's special tokens."""
    vocab = {ch: i for i, ch in enumerate(sorted(ByteLevel.alphabet()))}
    for token in _SPECIALS:
        vocab[token] = len(vocab)
    tokenizer = Qwen2TokenizerFast(vocab=vocab, merges=[], model_max_length=max_length)
    tokenizer.add_special_tokens({"additional_special_tokens": list(_SPECIALS[1:])})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def text_encoder_out_layers(num_hidden_layers: int) -> tuple[int, ...]:
    """Hidden states klein stacks: (9, 18, 27) for the real 36-layer encoders; for smaller ones
    three evenly spaced states that exist (``hidden_states`` has ``num_hidden_layers + 1``)."""
    if num_hidden_layers >= max(REAL_OUT_LAYERS):
        return REAL_OUT_LAYERS
    n = max(1, num_hidden_layers)
    return (n // 3, (2 * n) // 3, n)


def build_tiny_klein_pipeline(seed: int = 0) -> Flux2KleinPipeline:
    """The tiny klein pipeline with weights drawn from ``seed``; every module in eval mode."""
    return build_random_klein_pipeline(seed=seed)


def build_random_klein_pipeline(
    *,
    seed: int | None = 0,
    transformer: Mapping[str, Any] = TINY_KLEIN_TRANSFORMER_CONFIG,
    vae: Mapping[str, Any] = TINY_KLEIN_VAE_CONFIG,
    qwen3: Mapping[str, Any] = TINY_QWEN3_CONFIG,
    max_sequence_length: int = TINY_KLEIN_MAX_SEQUENCE_LENGTH,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Flux2KleinPipeline:
    """A Flux2KleinPipeline of the given module configs with random weights (the tiny one by
    default; bench/engine.py builds the full-size klein 4B architecture with it)."""
    if seed is not None:
        torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    if dtype is not None:
        torch.set_default_dtype(dtype)
    try:
        with torch.device(device or "cpu"):
            flux = Flux2Transformer2DModel(**transformer)
            autoencoder = AutoencoderKLFlux2(**vae)
            tokenizer = build_qwen_tokenizer(max_sequence_length)
            text_encoder = Qwen3ForCausalLM(
                Qwen3Config(
                    vocab_size=len(tokenizer),
                    bos_token_id=None,
                    eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
                    pad_token_id=tokenizer.pad_token_id,
                    **qwen3,
                )
            )
    finally:
        torch.set_default_dtype(previous)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15)
    pipe = Flux2KleinPipeline(
        scheduler=scheduler,
        vae=autoencoder,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=flux,
        is_distilled=True,
    )
    for module in (flux, autoencoder, text_encoder):
        module.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe
