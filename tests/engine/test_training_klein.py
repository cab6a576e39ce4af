"""Persona LoRA training on the FLUX.2 [klein] family (ENGINE_MODEL=tiny-klein): the loss on a
fixed-noise batch falls, the saved file reproduces the trained transformer in a fresh
Flux2KleinPipeline (alpha included), and ENGINE_TRAIN_MODEL trains on another (Base) transformer
whose LoRA the distilled pipeline then renders with."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.jobs.dispatch import run_job
from engine.render.persona_lora import persona_lora_bytes, read_metadata
from engine.specs import JobKind, JobSpec, PersonaSpec, TrainParams, default_params
from engine.training.families import KLEIN_TRAINING, train_family_of, training_pipeline_of
from engine.training.loop import TrainConfig, encode_samples, train_lora
from tests.engine.test_training import _samples


def _engine(root: Path, train_model: str | None = None):  # -> engine.render.engine.Engine
    from engine.config import EngineConfig
    from engine.render.engine import Engine
    from storage.blobs import BlobStore

    config = EngineConfig(model="tiny-klein", lora_dir=root / "loras", identity_threshold=0.55, train_model=train_model)
    eng = Engine(config, BlobStore(root / "blobs"))
    eng.load()
    return eng


@pytest.fixture(scope="module")
def klein(tmp_path_factory: pytest.TempPathFactory):  # -> engine.render.engine.Engine
    return _engine(tmp_path_factory.mktemp("klein-train"))


@pytest.fixture
def klein_lp(klein):  # -> engine.render.pipeline.LoadedPipeline
    klein.adapters.apply([])
    yield klein.pipeline
    klein.adapters.apply([])


def test_klein_latents_are_what_its_pipeline_encodes(klein_lp) -> None:
    """Patchified, batch-norm normalised latents: decoding them the way the pipeline ends gives
    back the image (as well as a tiny random VAE can) and their shape is the transformer's."""
    assert train_family_of(klein_lp) is KLEIN_TRAINING
    encoded = encode_samples(klein_lp, KLEIN_TRAINING, _samples(1), 64)[0]
    channels = klein_lp.pipe.transformer.config.in_channels
    assert encoded.latents.shape == (1, channels, 4, 4)  # 64 px / 8 (VAE) / 2 (patches)
    assert encoded.cond["prompt_embeds"].shape[-1] == klein_lp.pipe.transformer.config.joint_attention_dim
    assert encoded.cond["text_ids"].shape[-1] == 4  # klein's 4-axis ids


def test_klein_loss_on_a_fixed_noise_batch_falls(klein_lp) -> None:
    # the tiny klein learns slower than the tiny Kontext (measured: 30 steps at 3e-3 move it 0.1 %,
    # 60 at 1e-2 about 9 %)
    config = TrainConfig(steps=60, rank=4, lr=1e-2, resolution=64, checkpoint_every=100, seed=3)
    outcome = train_lora(klein_lp, KLEIN_TRAINING, _samples(), config)
    assert len(outcome.losses) == 60
    assert outcome.eval_after < outcome.eval_before * 0.95, (outcome.eval_before, outcome.eval_after)
    assert not any("persona_training" in n for n, _ in klein_lp.pipe.transformer.named_parameters())
    # every klein layer family got the adapter: single-stream fused projections included
    targets = set(outcome.metadata["target_modules"])
    assert "attn.to_qkv_mlp_proj" in targets and "single_transformer_blocks.0.attn.to_out" in targets


def test_klein_saved_lora_reproduces_the_trained_transformer_with_its_alpha(klein_lp, tmp_path) -> None:
    from diffusers import Flux2KleinPipeline
    from safetensors.torch import save_file

    from engine.render.tiny_klein import build_tiny_klein_pipeline

    config = TrainConfig(steps=6, rank=4, alpha=8.0, lr=3e-3, resolution=64, checkpoint_every=100)
    samples = _samples(1)
    probe: dict = {}

    def predict(lp) -> torch.Tensor:
        encoded = probe["encoded"]
        with torch.no_grad():
            return KLEIN_TRAINING.predict(
                lp, encoded.latents + 0.5 * probe["noise"], torch.tensor([0.5]), encoded.cond, 1.0
            )

    def record() -> None:  # the trained transformer, adapter still on
        probe["encoded"] = encode_samples(klein_lp, KLEIN_TRAINING, samples, 64)[0]
        probe["noise"] = torch.randn(probe["encoded"].latents.shape, generator=torch.Generator().manual_seed(5))
        probe["trained"] = predict(klein_lp)

    outcome = train_lora(klein_lp, KLEIN_TRAINING, samples, config, after_training=record)
    assert outcome.metadata["lora_alpha"] == 8.0 and outcome.metadata["r"] == 4
    path = tmp_path / "lora.safetensors"
    path.write_bytes(persona_lora_bytes(Flux2KleinPipeline, outcome.state, outcome.metadata))
    assert read_metadata(path)["lora_alpha"] == 8.0

    fresh = build_tiny_klein_pipeline()  # same base weights, no adapter: plain diffusers loading
    fresh.load_lora_weights(str(path), adapter_name="persona")
    assert fresh.transformer.peft_config["persona"].lora_alpha == 8.0
    assert torch.equal(predict(type(klein_lp)(**{**klein_lp.__dict__, "pipe": fresh})), probe["trained"])
    base = predict(type(klein_lp)(**{**klein_lp.__dict__, "pipe": build_tiny_klein_pipeline()}))
    assert not torch.allclose(base, probe["trained"])  # the LoRA is what reproduces it

    bare = tmp_path / "bare.safetensors"  # without the metadata alpha becomes the rank: another model
    save_file({f"transformer.{k}": v for k, v in outcome.state.items()}, str(bare))
    wrong = build_tiny_klein_pipeline()
    wrong.load_lora_weights(str(bare), adapter_name="persona")
    assert wrong.transformer.peft_config["persona"].lora_alpha == 4
    assert not torch.allclose(predict(type(klein_lp)(**{**klein_lp.__dict__, "pipe": wrong})), probe["trained"])


def test_engine_train_model_trains_on_the_base_transformer_and_renders_with_the_distilled_one(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from engine.render.tiny_klein import build_tiny_klein_pipeline

    root = tmp_path_factory.mktemp("klein-base")
    base_folder = root / "FLUX.2-klein-base-tiny"
    build_tiny_klein_pipeline(seed=7).save_pretrained(base_folder)  # other weights than tiny-klein (seed 0)
    eng = _engine(root, train_model=str(base_folder))

    train_lp = training_pipeline_of(eng)
    assert train_lp.pipe.transformer is not eng.pipeline.pipe.transformer
    assert train_lp.pipe.vae is eng.pipeline.pipe.vae and train_lp.pipe.text_encoder is eng.pipeline.pipe.text_encoder
    assert train_lp.pipe.config.is_distilled is False and eng.pipeline.pipe.config.is_distilled is True
    saved = build_tiny_klein_pipeline(seed=7).transformer.state_dict()
    for name, value in train_lp.pipe.transformer.state_dict().items():
        assert torch.equal(value, saved[name]), name
    render_weights = {n: p.detach().clone() for n, p in eng.pipeline.pipe.transformer.named_parameters()}

    spec = JobSpec(
        job_id="klein-train-base",
        kind=JobKind.TRAIN_PERSONA,
        persona=PersonaSpec(persona_id=4, archetype="sweet", seed=2),
        seed=2,
        params=default_params("tiny-klein"),
        train=TrainParams(images=2, steps=4, rank=4, checkpoint_every=2),
    )
    result = run_job(eng, spec)  # the job runner sends it to engine.training
    report = result.training
    assert report is not None
    assert report["family"] == "flux2-klein" and report["train_model"] == str(base_folder)
    assert report["steps"] == 4 and report["kept"] == len(result.image_keys) >= 1
    after = dict(eng.pipeline.pipe.transformer.named_parameters())
    assert set(after) == set(render_weights)  # no adapter left on the rendering transformer
    assert all(torch.equal(after[n], v) for n, v in render_weights.items())

    lora_key = report["lora_key"]
    versioned = spec.persona.model_copy(update={"version": 1, "version_lora_key": lora_key})
    render = JobSpec(
        job_id="klein-render-v1", kind=JobKind.GENERATE, persona=versioned, prompt="a photo", seed=1
    ).model_copy(update={"params": default_params("tiny-klein")})
    rendered = eng.run(render)
    assert rendered.lora_mix == [("blob:" + lora_key, 1.0)]
    # the trained version went into the one persona slot (engine.render.persona_slot), read with its metadata
    from engine.render.persona_slot import read_lora

    assert list(eng.pipeline.pipe.transformer.peft_config) == ["persona"]
    assert eng.adapters.slot is not None and eng.adapters.slot.key == ("mix", (("blob:" + lora_key, 1.0),))
    factors = read_lora(type(eng.pipeline.pipe), eng.blobs.path(lora_key))
    assert {a.shape[0] for a, _, _ in factors.values()} == {4} and {s for _, _, s in factors.values()} == {1.0}
