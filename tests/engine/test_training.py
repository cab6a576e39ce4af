"""Persona LoRA training on the tiny pipeline: the loss falls, the saved file reproduces the trained
transformer in a fresh pipeline (alpha included), and an interrupted run resumes from its checkpoint."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from engine.errors import JobCancelled
from engine.render.persona_lora import persona_lora_bytes, read_metadata
from engine.training.families import train_family_of
from engine.training.loop import Sample, TrainConfig, encode_samples, eval_loss, flow_loss, train_lora


def _samples(n: int = 2) -> list[Sample]:
    colours = [(200, 60, 40), (40, 90, 200), (30, 160, 70), (220, 200, 40)]
    out = []
    for i in range(n):
        image = Image.new("RGB", (64, 64), colours[i])
        pattern = np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8)
        image.paste(Image.fromarray(pattern), (16 * (i % 2), 16))
        out.append(Sample(image, f"pst1 person, photo {i}"))
    return out


class MemoryCheckpoints:
    def __init__(self) -> None:
        self.data: bytes | None = None
        self.saves = 0

    def load(self) -> bytes | None:
        return self.data

    def save(self, data: bytes) -> None:
        self.data = data
        self.saves += 1


def test_loss_on_a_fixed_noise_batch_falls(lp) -> None:
    config = TrainConfig(steps=30, rank=4, lr=3e-3, resolution=64, checkpoint_every=100, seed=3)
    outcome = train_lora(lp, train_family_of(lp), _samples(), config)
    assert len(outcome.losses) == 30
    assert outcome.eval_after < outcome.eval_before * 0.97, (outcome.eval_before, outcome.eval_after)
    # the adapter is gone again: the pipeline renders as before
    assert not any("persona_training" in name for name, _ in lp.pipe.transformer.named_parameters())


def test_saved_lora_reproduces_the_trained_transformer_in_a_fresh_pipeline(lp, tmp_path) -> None:
    from engine.render.tiny_kontext import build_tiny_pipeline

    family = train_family_of(lp)
    config = TrainConfig(steps=6, rank=4, alpha=8.0, lr=3e-3, resolution=64, checkpoint_every=100)
    samples = _samples(1)
    probe = {}

    def record() -> None:  # the trained transformer, adapter still on
        gen = torch.Generator().manual_seed(5)
        encoded = probe["encoded"] = encode_samples(lp, family, samples, 64)
        probe["noise"] = torch.randn(encoded[0].latents.shape, generator=gen)
        with torch.no_grad():
            probe["trained"] = family.predict(
                lp, encoded[0].latents + 0.5 * probe["noise"], torch.tensor([0.5]), encoded[0].cond, 3.5
            )

    outcome = train_lora(lp, family, samples, config, after_training=record)
    assert outcome.metadata["lora_alpha"] == 8.0 and outcome.metadata["r"] == 4
    path = tmp_path / "lora.safetensors"
    path.write_bytes(persona_lora_bytes(type(lp.pipe), outcome.state, outcome.metadata))
    assert read_metadata(path)["lora_alpha"] == 8.0

    fresh = build_tiny_pipeline()  # same base weights (seed 0), no adapter
    fresh.load_lora_weights(str(path), adapter_name="persona")
    assert fresh.transformer.peft_config["persona"].lora_alpha == 8.0
    fresh_lp = type(lp)(**{**lp.__dict__, "pipe": fresh})
    encoded = probe["encoded"]
    with torch.no_grad():
        again = family.predict(
            fresh_lp, encoded[0].latents + 0.5 * probe["noise"], torch.tensor([0.5]), encoded[0].cond, 3.5
        )
    assert torch.equal(again, probe["trained"])

    # without the metadata the loader would take alpha = rank: another (wrong) model
    bare = tmp_path / "bare.safetensors"
    from safetensors.torch import save_file

    save_file({f"transformer.{k}": v for k, v in outcome.state.items()}, str(bare))
    wrong = build_tiny_pipeline()
    wrong.load_lora_weights(str(bare), adapter_name="persona")
    assert wrong.transformer.peft_config["persona"].lora_alpha == 4
    with torch.no_grad():
        off = family.predict(
            type(lp)(**{**lp.__dict__, "pipe": wrong}),
            encoded[0].latents + 0.5 * probe["noise"],
            torch.tensor([0.5]),
            encoded[0].cond,
            3.5,
        )
    assert not torch.allclose(off, probe["trained"])


def test_an_interrupted_run_resumes_from_its_checkpoint_and_ends_where_an_unbroken_one_does(lp) -> None:
    family = train_family_of(lp)
    config = TrainConfig(steps=12, rank=4, lr=3e-3, resolution=64, checkpoint_every=4, seed=9)
    unbroken = train_lora(lp, family, _samples(), config)

    store = MemoryCheckpoints()
    steps_seen: list[int] = []

    def crash_after_six() -> bool:  # stands in for a worker that dies during step 7
        return len(steps_seen) >= 6

    try:
        train_lora(
            lp,
            family,
            _samples(),
            config,
            checkpoints=store,
            on_step=lambda s, t, loss: steps_seen.append(s),
            cancel=crash_after_six,
        )
    except JobCancelled:
        pass
    else:
        raise AssertionError("the first run should have stopped")
    assert steps_seen == [1, 2, 3, 4, 5, 6] and store.saves == 1  # one checkpoint, at step 4

    resumed_steps: list[int] = []
    resumed = train_lora(
        lp, family, _samples(), config, checkpoints=store, on_step=lambda s, t, loss: resumed_steps.append(s)
    )
    assert resumed.resumed_from == 4 and resumed_steps == list(range(5, 13))
    assert len(resumed.losses) == 12
    assert resumed.losses == unbroken.losses  # the same steps, drawn from (seed, step)
    for key, value in unbroken.state.items():
        assert torch.allclose(resumed.state[key], value, atol=1e-6), key


def test_flow_loss_pairs_each_caption_with_its_own_latents(lp) -> None:
    """Latents and captions are computed once per sample and kept by its index."""
    family = train_family_of(lp)
    encoded = encode_samples(lp, family, _samples(2), 64)
    assert not torch.equal(encoded[0].latents, encoded[1].latents)
    assert not torch.equal(encoded[0].cond["prompt_embeds"], encoded[1].cond["prompt_embeds"])
    noise = torch.randn(encoded[0].latents.shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = float(flow_loss(lp, family, encoded[0], noise, torch.tensor([0.5]), 3.5))
        again = float(flow_loss(lp, family, encoded[0], noise, torch.tensor([0.5]), 3.5))
    assert a == again
    assert eval_loss(lp, family, encoded, TrainConfig(resolution=64)) == eval_loss(
        lp, family, encoded, TrainConfig(resolution=64)
    )
