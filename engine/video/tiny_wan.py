"""A tiny, randomly initialised Wan 2.2 TI2V pipeline, built entirely offline.

Same classes and layout as Wan2.2-TI2V-5B (``WanImageToVideoPipeline`` with ``expand_timesteps``:
the first latent frame is the source image, a 48-channel residual ``AutoencoderKLWan`` compressing
16x in space and 4x in time, a ``WanTransformer3DModel`` with (1, 2, 2) patches, a UMT5 text encoder
and flow-matching UniPC), only very small, so tests run the production clip path on a CPU in about a
second. The UMT5 stand-in's tokenizer is the tiny T5 tokenizer of engine.render.tiny_kontext,
built here from a generated vocabulary: nothing is downloaded.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanImageToVideoPipeline, WanTransformer3DModel
from transformers import UMT5Config, UMT5EncoderModel

from engine.render.tiny_kontext import build_t5_tokenizer

#: UMT5 tokens per prompt for the tiny model (the real one uses 512)
TINY_VIDEO_MAX_SEQUENCE_LENGTH = 32
#: latent channels of Wan 2.2's TI2V VAE
_Z_DIM = 48
#: the tiny VAE: Wan 2.2's residual layout (2x2 pixel patches in, 16x spatial / 4x temporal), 4 channels wide
TINY_WAN_VAE_CONFIG: dict[str, Any] = {
    "base_dim": 4,
    "z_dim": _Z_DIM,
    "in_channels": 12,  # 3 colours x the 2x2 patch
    "out_channels": 12,
    "is_residual": True,
    "patch_size": 2,
    "latents_mean": [0.0] * _Z_DIM,
    "latents_std": [1.0] * _Z_DIM,
    "dim_mult": [1, 1, 1, 1],
    "num_res_blocks": 1,
    "scale_factor_spatial": 16,
    "scale_factor_temporal": 4,
    "temperal_downsample": [False, True, True],
}
#: the tiny transformer (one block, 24 wide); its text_dim is the UMT5 stand-in's d_model
TINY_WAN_TRANSFORMER_CONFIG: dict[str, Any] = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 2,
    "attention_head_dim": 12,
    "in_channels": _Z_DIM,
    "out_channels": _Z_DIM,
    "text_dim": 32,
    "freq_dim": 32,
    "ffn_dim": 32,
    "num_layers": 1,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "rope_max_seq_len": 32,
}
#: UMT5Config of the stand-in text encoder (vocabulary and special tokens come from the tokenizer)
TINY_UMT5_CONFIG: dict[str, Any] = {
    "d_model": 32,
    "d_kv": 8,
    "d_ff": 37,
    "num_layers": 2,
    "num_heads": 4,
    "relative_attention_num_buckets": 8,
}


def build_tiny_video_pipeline(seed: int = 0) -> WanImageToVideoPipeline:
    """The tiny Wan TI2V pipeline with weights drawn from ``seed``; every module in eval mode."""
    torch.manual_seed(seed)
    with torch.device("cpu"):
        vae = AutoencoderKLWan(**TINY_WAN_VAE_CONFIG)
        transformer = WanTransformer3DModel(**TINY_WAN_TRANSFORMER_CONFIG)
        tokenizer = build_t5_tokenizer(TINY_VIDEO_MAX_SEQUENCE_LENGTH)
        text_encoder = UMT5EncoderModel(
            UMT5Config(
                vocab_size=len(tokenizer),
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                decoder_start_token_id=tokenizer.pad_token_id,
                **TINY_UMT5_CONFIG,
            )
        )
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0)
    pipe = WanImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=scheduler,
        transformer=transformer,
        expand_timesteps=True,  # Wan 2.2 TI2V: the source image is the first latent frame
    )
    for module in (vae, transformer, text_encoder):
        module.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe
