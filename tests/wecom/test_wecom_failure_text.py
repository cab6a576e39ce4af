"""A failed job on WeCom: one text message, Chinese first, then English (help and progress are in
both languages there), with the error id and without the exception's internals."""

from __future__ import annotations

import pytest
from botocore.exceptions import EndpointConnectionError

from bot.wecom.render import ActionRenderer
from commands.events import Progress, Reply, Where
from commands.outputs import failure_text, failure_text_zh
from engine.errors import PhotoHasNoFace
from engine.jobs import failures
from engine.jobs.failures import MESSAGES_ZH, USER_ERRORS, Failure, classify
from storage.models import Job, JobStatus

WHERE = Where(platform="wecom", user_id="zoe")


def _failed(kind: str, failure: Failure) -> Job:
    detail = {**failure.as_json(), "detail": "EndpointConnectionError: http://10.0.0.5:9000/blobs/826e"}
    return Job(id="j1", kind=kind, status=JobStatus.FAILED, error=failure.user_text, result={"failure": detail})


def _planned(job: Job) -> list[dict]:
    actions = [
        Progress(where=WHERE, job_id=job.id, state="failed"),
        Reply(where=WHERE, text=failure_text(job), text_zh=failure_text_zh(job)),
    ]
    return ActionRenderer(api=lambda: None).plan(actions)  # type: ignore[arg-type, return-value]


def test_a_storage_failure_reads_in_both_languages_without_internals() -> None:
    failure = classify(EndpointConnectionError(endpoint_url="http://10.0.0.5:9000/blobs/826e"))
    (message,) = _planned(_failed("edit", failure))  # the failed status is told by the reply itself
    chinese, english = message["text"].split("\n")
    assert "图片存储暂时不可用" in chinese and f"错误编号 {failure.error_id}" in chinese and "/重来" in chinese
    assert english.startswith("Sorry, that did not work") and failure.error_id in english
    assert "10.0.0.5" not in message["text"] and "826e" not in message["text"]


def test_a_photo_without_a_face_offers_no_new_seed_and_frees_the_name() -> None:
    failure = classify(PhotoHasNoFace("no face found in the photo"))
    (message,) = _planned(_failed("create_persona", failure))
    chinese, english = message["text"].split("\n")
    assert "没有找到人脸" in chinese and "人设名称已释放" in chinese and "/重来" not in chinese
    assert "no face found in the photo" in english and "🔁" not in english


@pytest.mark.parametrize("kind", sorted({*failures.MESSAGES, *USER_ERRORS.values()}))
def test_every_kind_of_failure_has_its_chinese_line(kind: str) -> None:
    assert MESSAGES_ZH.get(kind)


def test_a_failure_of_no_known_kind_stays_english_only() -> None:
    job = Job(id="j2", kind="edit", status=JobStatus.FAILED, error="boom", result=None)
    (message,) = _planned(job)
    assert (
        message["text"] == "Sorry, that did not work: boom. Send the instruction again, or 🔁 to try with a new seed."
    )
