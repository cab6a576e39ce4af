"""Signed, expiring links to a user's web studio (``/gallery``), made with itsdangerous.

The commands layer signs (it answers ``/gallery``); the web server (bot/web) verifies with the
same secret and salt. A token carries only the user's storage id, the workspace it was asked
from, and when it was signed; the
signature (HMAC-SHA1 over the payload and timestamp, keyed by WEB_SECRET) makes it unforgeable,
and :func:`read_token` rejects one older than its lifetime.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from itsdangerous import BadData, URLSafeTimedSerializer

SALT = "persona-studio.studio-link"
#: a link is ``<WEB_PUBLIC_URL><LINK_PATH><token>``
LINK_PATH = "/s/"


class BadLink(ValueError):
    """Forged, altered, expired or malformed: the message never says which."""


@dataclass(frozen=True)
class LinkClaims:
    user_id: int
    signed_at: float  # unix time
    #: the workspace whose posts the studio shows (None: a link from before workspaces, the user's home)
    workspace_id: int | None = None


def _serializer(secret: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret, salt=SALT)


def sign_token(secret: str, user_id: int, workspace_id: int | None = None) -> str:
    payload = {"u": int(user_id)} if workspace_id is None else {"u": int(user_id), "w": int(workspace_id)}
    return _serializer(secret).dumps(payload)


def studio_link(secret: str, public_url: str, user_id: int, page: str = "", *, workspace_id: int | None = None) -> str:
    """The user's link (to ``workspace_id``'s studio); ``page`` (a studio path, e.g.
    ``/studio/jobs/<id>``) is where it lands."""
    link = f"{public_url.rstrip('/')}{LINK_PATH}{sign_token(secret, user_id, workspace_id)}"
    return f"{link}?next={quote(page, safe='/')}" if page else link


def job_page(job_id: str) -> str:
    """The studio path of a job's live page (bot.web.live)."""
    return f"/studio/jobs/{quote(job_id, safe='')}"


def safe_next(page: str | None) -> str | None:
    """``page`` when it is a studio path a link may land on (never another site), else None."""
    if not page or not page.startswith("/studio/") or "//" in page or "\\" in page or ".." in page:
        return None
    return page


def read_token(secret: str, token: str, max_age_s: float) -> LinkClaims:
    """The claims of a valid token younger than ``max_age_s``; :class:`BadLink` otherwise."""
    try:
        payload, signed_at = _serializer(secret).loads(token, max_age=int(max_age_s), return_timestamp=True)
    except BadData:
        raise BadLink("invalid or expired link") from None
    user_id = payload.get("u") if isinstance(payload, dict) else None
    if not isinstance(user_id, int) or isinstance(user_id, bool):
        raise BadLink("invalid or expired link")
    workspace_id = payload.get("w")
    if workspace_id is not None and (not isinstance(workspace_id, int) or isinstance(workspace_id, bool)):
        raise BadLink("invalid or expired link")
    return LinkClaims(user_id=user_id, signed_at=signed_at.timestamp(), workspace_id=workspace_id)
