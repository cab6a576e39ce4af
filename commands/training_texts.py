"""Texts about persona versions: ``/persona show``'s version list and a finished training's report."""

from __future__ import annotations

from typing import Any

from storage.models import Persona


def version_names(persona: Persona) -> str:
    return ", ".join(["blend", *(f"v{v['version']}" for v in persona.versions or [])])


def versions_text(persona: Persona) -> str:
    """``/persona show``'s list of versions, the one in use marked."""
    active = int(persona.active_version or 0)
    lines = [f"  {'▶' if active == 0 else ' '} blend (LoRA mix)"]
    for v in persona.versions or []:
        report = v.get("report") or {}
        checked = "" if report.get("identity_checked", True) else ", identity not checked"
        lines.append(
            f"  {'▶' if active == v['version'] else ' '} v{v['version']}: {report.get('kept', '?')} kept / "
            f"{report.get('rejected', '?')} rejected{checked}, {report.get('steps', '?')} steps, "
            f"loss {report.get('loss_first')} → {report.get('loss_last')} ({v.get('created_at', '')})"
        )
    return "Versions:\n" + "\n".join(lines)


def training_summary(persona_name: str, report: dict[str, Any], version: int | None) -> str:
    """The chat message of a finished training job."""
    by_reason = report.get("filter", {}).get("rejected_by_reason") or {}
    reasons = ", ".join(f"{n} {r}" for r, n in sorted(by_reason.items())) or "none"
    identity = (
        "identity checked against the reference"
        if report.get("identity_checked")
        else "identity NOT checked (the reference shows no face)"
    )
    head = f"Persona {persona_name}: version v{version} is trained and in use." if version else "Training finished."
    lines = [
        head,
        f"Candidates: {report.get('kept')} kept, {report.get('rejected')} rejected ({reasons}); {identity}.",
        f"Training: {report.get('steps')} steps, rank {report.get('rank')}, loss {report.get('loss_first')} → "
        f"{report.get('loss_last')} (eval {report.get('eval_loss_before')} → {report.get('eval_loss_after')}), "
        f"{report.get('seconds')} s.",
    ]
    identity_eval = report.get("identity")
    if identity_eval:
        before, after = identity_eval.get("before", {}), identity_eval.get("after", {})
        lines.append(
            f"Identity: mean {before.get('mean')} → {after.get('mean')}, "
            f"share above threshold {before.get('share_above')} → {after.get('share_above')}."
        )
    lines.append("/persona use <name> blend switches back.")
    return "\n".join(lines)
