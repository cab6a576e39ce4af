"""Render parameters of a job: engine defaults, then the user's settings, then the post's;
the parsing of ``/settings key=value`` words; and the bounds every front end shows."""

from __future__ import annotations

import random
from typing import Any

from annotated_types import Ge, Le
from pydantic import BaseModel

from commands.validation import InputError
from engine.specs import JobSpec, RenderParams, TrainParams, default_params, size_limits

SETTING_KEYS = ("steps", "guidance", "size", "seed")
SEED_LIMIT = 2**32
SEED_HINT = f"0 to {SEED_LIMIT - 1}, or random"


def field_bounds(model: type[BaseModel], field: str) -> tuple[float, float]:
    """``(low, high)`` of a pydantic model's field, read from its ``ge=`` / ``le=`` constraints."""
    low = high = None
    for rule in model.model_fields[field].metadata:
        if isinstance(rule, Ge):
            low = rule.ge
        elif isinstance(rule, Le):
            high = rule.le
    assert low is not None and high is not None, f"{model.__name__}.{field} needs ge= and le="
    return float(low), float(high)


#: the one source of the steps and guidance ranges (``/settings``, Discord's options, the hints)
BOUNDS: dict[str, tuple[float, float]] = {
    "steps": field_bounds(RenderParams, "steps"),
    "guidance": field_bounds(RenderParams, "guidance"),
}
#: images per post (``/post count=N``)
COUNT_BOUNDS = field_bounds(JobSpec, "count")
#: ``/persona train`` options: images, steps, rank
TRAIN_BOUNDS: dict[str, tuple[float, float]] = {
    name: field_bounds(TrainParams, name) for name in ("images", "steps", "rank")
}


def _hint(key: str) -> str:
    if key in BOUNDS:
        low, high = BOUNDS[key]
        return f"{low:g}-{high:g}"
    return {"size": "WxH", "seed": SEED_HINT}[key]


def effective_params(
    model: str, user_settings: dict[str, Any] | None, thread_settings: dict[str, Any] | None
) -> RenderParams:
    merged = default_params(model).model_dump()
    for layer in (user_settings or {}, thread_settings or {}):
        merged.update({k: layer[k] for k in ("steps", "guidance", "width", "height") if layer.get(k) is not None})
    return RenderParams.model_validate(merged)


def pick_seed(user_settings: dict[str, Any] | None, thread_settings: dict[str, Any] | None) -> int:
    """The seed setting (the post's over the user's), or a fresh random seed."""
    fixed = None
    for layer in (user_settings or {}, thread_settings or {}):
        if "seed" in layer:
            fixed = layer["seed"]
    return int(fixed) if fixed is not None else random.randrange(2**31)


def _in_bounds(key: str, value: float) -> float:
    low, high = BOUNDS[key]
    if not low <= value <= high:
        raise ValueError
    return value


def parse_settings(raw: dict[str, Any], model: str) -> dict[str, Any]:
    """``{"steps": "8", "size": "768x1024"}`` -> ``{"steps": 8, "width": 768, "height": 1024}``;
    InputError naming the setting and its range on a bad value."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        text = str(value).strip().lower()
        try:
            if key == "steps":
                out["steps"] = int(_in_bounds("steps", int(text)))
            elif key == "guidance":
                out["guidance"] = _in_bounds("guidance", float(text))
            elif key == "size":
                width, height = (int(part) for part in text.replace("×", "x").split("x"))
                low, high = size_limits(model)
                if not (low <= width <= high and low <= height <= high):
                    raise InputError(f"size: each side must be from {low} to {high} pixels")
                out["width"], out["height"] = width // 16 * 16, height // 16 * 16
            elif key == "seed":
                out["seed"] = None if text in ("random", "none", "") else int(text)
                if out["seed"] is not None and not 0 <= out["seed"] < SEED_LIMIT:
                    raise ValueError
            else:
                raise InputError(f"unknown setting {key!r}; known: {', '.join(SETTING_KEYS)}")
        except InputError:
            raise
        except (ValueError, OverflowError):
            raise InputError(f"'{key}={value}' is not valid (expected {_hint(key)})") from None
    return out
