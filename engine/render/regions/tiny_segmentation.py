"""Tiny, randomly initialised segmentation models, built entirely offline (``ENGINE_SEG_MODEL=tiny``).

The same classes as production (``Owlv2ForObjectDetection`` with its processor, ``SamHQModel`` or
``SamModel`` with theirs), just very small: a 64 px detector with 8 px patches and a 64 px SAM whose
image embedding is 8 x 8. Processors use transformers' PIL image processors (the default ones need
torchvision, which has no CPU build here). The CLIP tokenizer is byte-level without merges, its
start token not 0 (OWLv2 treats a query whose first id is 0 as padding).
"""

from __future__ import annotations

from typing import Any

import torch
from tokenizers.pre_tokenizers import ByteLevel
from transformers import (
    CLIPTokenizer,
    Owlv2Config,
    Owlv2ForObjectDetection,
    Owlv2Processor,
    SamConfig,
    SamHQConfig,
    SamHQModel,
    SamHQProcessor,
    SamModel,
    SamProcessor,
)
from transformers.models.owlv2.image_processing_pil_owlv2 import Owlv2ImageProcessorPil
from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

#: the tiny models' input side (pixels)
TINY_SEG_SIDE = 64
TINY_QUERY_TOKENS = 16

TINY_OWLV2_TEXT: dict[str, Any] = {
    "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
    "max_position_embeddings": TINY_QUERY_TOKENS,
}  # fmt: skip
TINY_OWLV2_VISION: dict[str, Any] = {
    "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
    "image_size": TINY_SEG_SIDE, "patch_size": 8,
}  # fmt: skip
TINY_SAM_VISION: dict[str, Any] = {
    "hidden_size": 32, "output_channels": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
    "image_size": TINY_SEG_SIDE, "patch_size": 8, "window_size": 4, "global_attn_indexes": [1],
    "num_pos_feats": 8, "mlp_dim": 64,
}  # fmt: skip
TINY_SAM_PROMPT: dict[str, Any] = {
    "hidden_size": 16,
    "image_size": TINY_SEG_SIDE,
    "patch_size": 8,
    "mask_input_channels": 4,
}
TINY_SAM_DECODER: dict[str, Any] = {
    "hidden_size": 16, "mlp_dim": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "iou_head_hidden_dim": 16,
}  # fmt: skip


def build_query_tokenizer() -> CLIPTokenizer:
    """A byte-level CLIP tokenizer (no merges) whose special tokens come after the bytes."""
    chars = sorted(ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for ch in chars:
        vocab[ch] = len(vocab)
    for ch in chars:
        vocab[ch + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=TINY_QUERY_TOKENS)


def build_tiny_owlv2(seed: int = 0) -> tuple[Owlv2ForObjectDetection, Owlv2Processor]:
    """The tiny text-grounded detector and its processor."""
    torch.manual_seed(seed)
    tokenizer = build_query_tokenizer()
    text = dict(
        TINY_OWLV2_TEXT,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = Owlv2ForObjectDetection(Owlv2Config(text_config=text, vision_config=TINY_OWLV2_VISION, projection_dim=16))
    images = Owlv2ImageProcessorPil(size={"height": TINY_SEG_SIDE, "width": TINY_SEG_SIDE})
    return model.eval(), Owlv2Processor(image_processor=images, tokenizer=tokenizer)


def sam_image_processor() -> SamImageProcessorPil:
    side = TINY_SEG_SIDE
    return SamImageProcessorPil(
        size={"longest_edge": side},
        pad_size={"height": side, "width": side},
        mask_size={"longest_edge": side // 4},
        mask_pad_size={"height": side // 4, "width": side // 4},
    )


def build_tiny_sam(*, hq: bool = True, seed: int = 0) -> tuple[SamHQModel | SamModel, SamHQProcessor | SamProcessor]:
    """The tiny SAM-HQ (``hq``) or SAM and its processor."""
    torch.manual_seed(seed)
    if hq:
        decoder = dict(TINY_SAM_DECODER, vit_dim=TINY_SAM_VISION["hidden_size"])
        config = SamHQConfig(
            vision_config=TINY_SAM_VISION, prompt_encoder_config=TINY_SAM_PROMPT, mask_decoder_config=decoder
        )
        return SamHQModel(config).eval(), SamHQProcessor(image_processor=sam_image_processor())
    config = SamConfig(
        vision_config=TINY_SAM_VISION, prompt_encoder_config=TINY_SAM_PROMPT, mask_decoder_config=TINY_SAM_DECODER
    )
    return SamModel(config).eval(), SamProcessor(image_processor=sam_image_processor())
