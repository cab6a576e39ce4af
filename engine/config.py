"""The engine's configuration: the ENGINE_* settings (and the model-side ones: LoRA library, face
gate, PNG level) as one object, built in one place from the process settings and passed whole.

``EngineConfig.from_settings(settings)`` is the only place that reads them for an engine; tests
build a tiny one directly: ``EngineConfig(model="tiny", lora_dir=..., identity_threshold=0.55)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from storage.blobs import DEFAULT_PNG_COMPRESS_LEVEL

if TYPE_CHECKING:
    from storage.settings import Settings


@dataclass(frozen=True)
class EngineConfig:
    """How a worker's engine loads and runs its model (engine.render.engine.Engine)."""

    #: ENGINE_MODEL: ``tiny`` / ``tiny-klein`` (offline random weights), a hub id or a local folder
    model: str = "tiny"
    #: LORA_DIR: the LoRA libraries (a folder per family, engine.specs.FamilyFacts.lora_root)
    lora_dir: Path = Path("./data/loras")
    #: the identity gate's similarity threshold (IDENTITY_THRESHOLD, or the face backend's default)
    identity_threshold: float = 0.55
    #: ENGINE_DEVICE (``None``: CUDA when there is one), ENGINE_DTYPE, ENGINE_CPU_OFFLOAD
    device: str | None = None
    dtype: str = "auto"
    cpu_offload: bool = False
    #: FACE_BACKEND and FACE_MODEL_DIR (engine.render.identity)
    face_backend: str = "dlib"
    face_model_dir: Path | None = None
    #: torch threads (ENGINE_THREADS, effective); ``None`` leaves torch's default
    threads: int | None = None
    #: PNG_COMPRESS_LEVEL of stored results
    png_compress_level: int = DEFAULT_PNG_COMPRESS_LEVEL
    #: ENGINE_COMPILE, ENGINE_ATTENTION, ENGINE_FUSE_QKV (engine.render.speedups) and torch.compile's backend
    compile: Literal["none", "regional", "full"] = "none"
    attention: str | None = None
    fuse_qkv: bool = False
    compile_backend: str | Callable[..., Any] = "inductor"
    #: ENGINE_MAX_BATCH: images of one post rendered as one batch
    max_batch: int = 4
    #: ENGINE_PERSONA_SLOT, ENGINE_PERSONA_RANK (engine.render.persona_slot; rank 0 = auto)
    persona_slot: bool = True
    persona_rank: int = 0
    #: ENGINE_TRAIN_MODEL: the model persona training runs on (klein: its Base model); ``None`` = ``model``
    train_model: str | None = None
    #: ENGINE_VIDEO_MODEL (``tiny``, a Wan image-to-video hub id or folder) and ENGINE_VIDEO_CPU_OFFLOAD
    video_model: str = "tiny"
    video_cpu_offload: bool = False
    #: VIDEO_UPLOAD_MB: a clip larger than this also gets a lower-bitrate copy for chat uploads
    video_upload_mb: float = 8.0
    #: load the image pipeline (False on a worker that serves only the video queue: it never renders stills)
    load_images: bool = True
    #: per-thread caches kept (engine.render.caches) and persona adapters loaded at once
    thread_cache_size: int = 16
    adapter_capacity: int = 8
    #: with compiling on, render the default size once at load so the first job does not compile
    warm: bool = True
    #: ENGINE_SEG_MODEL: region edits' detector and SAM (engine.render.regions.segmentation);
    #: empty: ``tiny`` with a tiny model, else the production checkpoints
    seg_model: str = ""
    #: PREVIEWS, PREVIEW_MIN_INTERVAL_S: live previews of running renders (engine.render.previews)
    previews: bool = True
    preview_min_interval_s: float = 2.0

    @classmethod
    def from_settings(cls, settings: Settings) -> EngineConfig:
        """The engine's part of the process settings."""
        return cls(
            model=settings.engine_model,
            lora_dir=settings.lora_dir,
            identity_threshold=settings.effective_identity_threshold,
            device=settings.engine_device,
            dtype=settings.engine_dtype,
            cpu_offload=settings.engine_cpu_offload,
            face_backend=settings.face_backend,
            face_model_dir=settings.face_model_dir,
            threads=settings.effective_engine_threads,
            png_compress_level=settings.png_compress_level,
            compile=settings.engine_compile,
            attention=settings.engine_attention,
            fuse_qkv=settings.engine_fuse_qkv,
            max_batch=settings.engine_max_batch,
            persona_slot=settings.engine_persona_slot,
            persona_rank=settings.engine_persona_rank,
            train_model=settings.engine_train_model or None,
            seg_model=settings.engine_seg_model,
            video_model=settings.engine_video_model,
            video_cpu_offload=settings.engine_video_cpu_offload,
            video_upload_mb=settings.video_upload_mb,
            previews=settings.previews,
            preview_min_interval_s=settings.preview_min_interval_s,
        )
