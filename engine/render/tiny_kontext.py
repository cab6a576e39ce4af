"""A tiny, randomly initialised FLUX.1 Kontext pipeline, built entirely offline.

Same classes as FLUX.1-Kontext-dev (FluxTransformer2DModel with guidance embeddings, AutoencoderKL
with 8x downsampling and 16 latent channels, CLIP and T5 text encoders, their tokenizers and the
flow-matching scheduler), just very small, so tests and the demo exercise the production code path
on a CPU in well under a second per image. Nothing is downloaded: the tokenizers are built here
from generated vocabularies.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxKontextPipeline, FluxTransformer2DModel
from tokenizers.pre_tokenizers import ByteLevel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel, T5Tokenizer

#: Config of the tiny transformer; engine.render.loras writes LoRAs that fit it.
TINY_TRANSFORMER_CONFIG: dict[str, object] = {
    "patch_size": 1,
    "in_channels": 64,  # 16 latent channels x 2x2 packing, as in FLUX.1
    "num_layers": 1,
    "num_single_layers": 1,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": 32,  # = T5 d_model
    "pooled_projection_dim": 32,  # = CLIP hidden size
    "guidance_embeds": True,  # like Kontext-dev
    "axes_dims_rope": (4, 6, 6),  # sums to attention_head_dim
}
#: Max T5 tokens for the tiny model (the real one uses 512).
TINY_MAX_SEQUENCE_LENGTH = 32
_CLIP_MAX_LENGTH = 77
#: Config of the tiny VAE: 4 levels -> 8x downsampling and 16 latent channels, like FLUX's VAE.
TINY_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (8, 8, 16, 16),
    "layers_per_block": 1,
    "latent_channels": 16,
    "norm_num_groups": 4,
    "sample_size": 64,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
    "shift_factor": 0.0609,
    "scaling_factor": 1.5035,
}
#: CLIPTextConfig of the tiny CLIP text encoder (vocabulary and special tokens come from the tokenizer).
TINY_CLIP_CONFIG: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "projection_dim": 32,
}
#: T5Config of the tiny T5 encoder (vocabulary and special tokens come from the tokenizer).
TINY_T5_CONFIG: dict[str, Any] = {
    "d_model": 32,
    "d_kv": 8,
    "d_ff": 37,
    "num_layers": 2,
    "num_heads": 4,
    "relative_attention_num_buckets": 8,
    "feed_forward_proj": "gated-gelu",
}


def build_clip_tokenizer() -> CLIPTokenizer:
    """A byte-level BPE CLIP tokenizer: every byte is a token (with and without ``</w>``), no merges."""
    chars = sorted(ByteLevel.alphabet())
    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in chars:
        vocab[ch] = len(vocab)
    for ch in chars:
        vocab[ch + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=_CLIP_MAX_LENGTH)


def build_t5_tokenizer(max_sequence_length: int = TINY_MAX_SEQUENCE_LENGTH) -> T5Tokenizer:
    """A unigram T5 tokenizer over single characters and a few frequent word pieces."""
    pieces = ["<pad>", "</s>", "<unk>", "▁"]
    pieces += list(string.ascii_lowercase + string.ascii_uppercase + string.digits + string.punctuation)
    pieces += ["▁" + ch for ch in string.ascii_lowercase]
    vocab = [(p, 0.0 if i < 3 else -float(len(p) == 1) - 1.0) for i, p in enumerate(pieces)]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=max_sequence_length)


def build_tiny_pipeline(seed: int = 0) -> FluxKontextPipeline:
    """Build the tiny pipeline with weights drawn from ``seed``; every module in eval mode."""
    return build_random_pipeline(seed=seed)


def build_random_pipeline(
    *,
    seed: int | None = 0,
    transformer: Mapping[str, Any] = TINY_TRANSFORMER_CONFIG,
    vae: Mapping[str, Any] = TINY_VAE_CONFIG,
    clip: Mapping[str, Any] = TINY_CLIP_CONFIG,
    t5: Mapping[str, Any] = TINY_T5_CONFIG,
    max_sequence_length: int = TINY_MAX_SEQUENCE_LENGTH,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> FluxKontextPipeline:
    """A FLUX.1 Kontext pipeline of the given module configs with random weights (the tiny one by
    default; bench/engine.py builds the full-size architecture with it). Weights are drawn from
    ``seed`` (``None``: not reseeded) and created directly on ``device`` in ``dtype``; every module
    is in eval mode."""
    if seed is not None:
        torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    if dtype is not None:
        torch.set_default_dtype(dtype)
    try:
        with torch.device(device or "cpu"):
            flux = FluxTransformer2DModel(**transformer)
            autoencoder = AutoencoderKL(**vae)
            tokenizer = build_clip_tokenizer()
            text_encoder = CLIPTextModel(
                CLIPTextConfig(
                    vocab_size=len(tokenizer),
                    max_position_embeddings=_CLIP_MAX_LENGTH,
                    bos_token_id=tokenizer.bos_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id,
                    **clip,
                )
            )
            tokenizer_2 = build_t5_tokenizer(max_sequence_length)
            text_encoder_2 = T5EncoderModel(
                T5Config(
                    vocab_size=len(tokenizer_2),
                    pad_token_id=tokenizer_2.pad_token_id,
                    eos_token_id=tokenizer_2.eos_token_id,
                    decoder_start_token_id=tokenizer_2.pad_token_id,
                    **t5,
                )
            )
    finally:
        torch.set_default_dtype(previous)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15)
    pipe = FluxKontextPipeline(
        scheduler=scheduler,
        vae=autoencoder,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        transformer=flux,
    )
    for module in (flux, autoencoder, text_encoder, text_encoder_2):
        module.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe
