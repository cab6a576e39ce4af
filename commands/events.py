"""What front ends hand to the commands layer (events) and what they get back (actions).

A front end translates its platform's message, slash command, reaction or button click into one
:class:`Event`, calls ``Conversation.handle(event)`` and renders the returned actions. Results
of background jobs arrive later as the same action types through the delivery callback.
Everything here is plain data: no platform objects, no model objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from engine.specs import ReferenceRole


class EventKind(StrEnum):
    COMMAND = "command"  # /persona, /post, /approve ... (text or slash command)
    MESSAGE = "message"  # plain text: inside a post thread it is an edit instruction
    REACTION = "reaction"  # a reaction or a button on a result message (carries turn_id)


class Button(StrEnum):
    """The four actions on a result; values are the command names they map to."""

    APPROVE = "approve"
    REGEN = "regen"
    UNDO = "undo"
    CANCEL = "cancel"


#: Emoji shown for each result action (Discord reactions, console hints).
BUTTON_EMOJI: dict[Button, str] = {
    Button.APPROVE: "✅",
    Button.REGEN: "🔁",
    Button.UNDO: "↩️",
    Button.CANCEL: "❌",
}
EMOJI_BUTTON: dict[str, Button] = {emoji: button for button, emoji in BUTTON_EMOJI.items()}
# Discord sends ↩️ with or without the variation selector depending on the client.
EMOJI_BUTTON["↩"] = Button.UNDO


#: the roles a reference image plays; ``None`` on an attachment means "not said"
REFERENCE_ROLES: tuple[str, ...] = tuple(ReferenceRole)


@dataclass(frozen=True)
class Attachment:
    """An uploaded file, already downloaded by the front end (CDN links expire).

    ``role`` is the reference role the front end knows for it (console ``@product=``, a Discord
    option named ``product_image``): one of :data:`REFERENCE_ROLES`, or ``None`` when not said.
    """

    filename: str
    data: bytes
    content_type: str | None = None
    role: str | None = None


@dataclass(frozen=True)
class Event:
    """One thing a user did, in platform-neutral terms.

    ``thread_id`` is the platform's id of the post thread the event happened in (a Discord
    thread channel id). Platforms without threads (WeCom, console) leave it ``None``; the
    commands layer then uses the user's current post session.
    ``command`` is the canonical command name for COMMAND events and the button name for
    REACTION events. ``options`` are typed arguments (slash commands) and ``args`` the raw text
    after the command (text front ends); the commands layer accepts either.
    """

    platform: str
    user_id: str
    kind: EventKind
    command: str | None = None
    args: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    user_name: str = ""
    channel_id: int | None = None
    thread_id: int | None = None
    turn_id: int | None = None
    attachments: tuple[Attachment, ...] = ()
    #: the workspace the event happened in (storage.workspace_keys): a Discord guild id, the WeCom
    #: corp id, ``dm:<user id>`` for a Discord DM; "" = the platform's default (console ``local``)
    workspace: str = ""
    workspace_name: str = ""
    #: the platform says the user manages the workspace (Discord: Manage Server): an admin of it
    workspace_admin: bool = False


@dataclass(frozen=True)
class Where:
    """Where an action goes: the post thread (storage id and platform ids) or the user."""

    platform: str
    user_id: str
    thread_db_id: int | None = None
    channel_id: int | None = None
    thread_id: int | None = None


@dataclass(frozen=True)
class Action:
    where: Where


@dataclass(frozen=True)
class Reply(Action):
    """Text for the user. ``private`` errors go only to the user (Discord: ephemeral).
    ``text_zh``, where given, is the same in Chinese: front ends that speak both (WeCom) show it
    first, the others only ``text``."""

    text: str = ""
    private: bool = False
    text_zh: str = ""


@dataclass(frozen=True)
class ImageOut:
    blob_key: str
    path: str  # file path in the blob store; front ends read or upload it
    filename: str
    caption: str = ""
    width: int = 0
    height: int = 0


@dataclass(frozen=True)
class ClipOut:
    """A clip as front ends get it: the MP4's path and facts, its poster, and a lower-bitrate copy
    for uploads with a size limit (when the clip is larger than VIDEO_UPLOAD_MB)."""

    blob_key: str
    path: str  # file path in the blob store
    filename: str
    size: int  # bytes
    seconds: float
    fps: int
    frames: int
    width: int
    height: int
    poster_path: str = ""
    small_path: str | None = None
    small_size: int | None = None
    caption: str = ""

    def fitting(self, limit: int) -> tuple[str, int] | None:
        """``(path, bytes)`` of the clip or its smaller copy, the first no larger than ``limit``."""
        for path, size in ((self.path, self.size), (self.small_path, self.small_size)):
            if path and size is not None and size <= limit:
                return path, size
        return None


@dataclass(frozen=True)
class Images(Action):
    """Result images of one turn, with the result buttons that act on ``turn_id``."""

    turn_id: int = 0
    job_id: str = ""
    text: str = ""
    images: tuple[ImageOut, ...] = ()
    buttons: tuple[Button, ...] = ()
    #: a video turn's clip: front ends send it instead of the images (its poster is ``images[0]``)
    clip: ClipOut | None = None


@dataclass(frozen=True)
class OpenThread(Action):
    """Open a platform thread for a new post.

    Front ends with threads create one (titled ``title``) and tell the conversation its id via
    ``Conversation.bind_thread(thread_db_id, channel_id, thread_id)`` before more events come.
    """

    title: str = ""
    text: str = ""


@dataclass(frozen=True)
class PreviewOut:
    """A live preview of a running job (engine.previews): a JPEG of its image(s) as they form."""

    seq: int  # 1, 2, 3 ... within the job's attempt
    percent: int  # how far the job was when it was made
    jpeg: bytes = field(repr=False, default=b"")
    width: int = 0
    height: int = 0
    images: int = 1  # > 1: a grid of a batch's images


@dataclass(frozen=True)
class Progress(Action):
    """Where a job is: waiting (``position`` ahead of it), running (step/total) or finished.

    A running job's progress carries its latest live preview when there is a new one (``preview``;
    each preview once), and ``live_url``: a private link to its live page in the web studio (when
    the installation has one)."""

    job_id: str = ""
    state: str = ""  # queued | running | done | failed | cancelled
    position: int | None = None
    step: int = 0
    total: int = 0
    eta_s: float | None = None
    text: str = ""
    preview: PreviewOut | None = None
    live_url: str = ""
    #: the user already knows this state (their ``/cancel`` was answered): front ends update what
    #: they show of the job (Discord: its status message) but send nothing new (WeCom: nothing)
    told: bool = False


@dataclass(frozen=True)
class ChooseRole(Action):
    """Ask which role just-uploaded images play: product, scene or face.

    Front ends show one button per role (WeCom: a card with 商品 / 场景 / 人脸). A click is the
    COMMAND event ``reference`` with options ``{"role": <role>, "key": key}``.
    """

    key: str = ""  # names the upload (the blob key of its first image)
    text: str = ""


@dataclass(frozen=True)
class FileOut(Action):
    """A file to send (the export zip)."""

    filename: str = ""
    data: bytes = b""
    text: str = ""


@dataclass(frozen=True)
class ReviewRequest(Action):
    """Ask the workspace's reviewers to approve turn ``turn_id`` of a post submitted for review.

    ``where`` is the post. Front ends with threads post ``text`` there mentioning ``reviewers``
    (platform user ids) with Approve / Request changes buttons; the others send each reviewer a
    card (通过 / 退回). Approve is the REACTION ``approve``, request changes the REACTION
    ``reject`` (then the reviewer gives the reason: ``/reject <reason>``), both with ``turn_id``.
    """

    turn_id: int = 0
    text: str = ""
    reviewers: tuple[str, ...] = ()
    #: the submitted images (front ends without threads show them to each reviewer)
    images: tuple[ImageOut, ...] = ()
