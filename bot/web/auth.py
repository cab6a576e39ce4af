"""Who is looking: the signed link from chat, kept in a cookie for the pages that follow.

``/s/<token>`` (the link ``/gallery`` sends) checks the token and puts it in an HttpOnly cookie,
then redirects to the gallery (or to the studio page of its ``next``), so page and image URLs stay
short and the token never appears in them (nor, with ``Referrer-Policy: no-referrer``, in a
Referer). Every studio request checks the cookie's token again: its signature and its age. A
forged, altered or expired one gets 403 with the same text, whatever was wrong with it.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

from aiohttp import web

from bot.web.state import STATE, WebState
from commands.web_links import BadLink, LinkClaims, read_token, safe_next
from storage.models import User
from storage.rows import NotFound

COOKIE = "ps_studio"
FORBIDDEN_TEXT = "This studio link is not valid (it may have expired). Send /gallery in chat for a new one."


@dataclass(frozen=True)
class Viewer:
    user: User
    claims: LinkClaims
    token: str
    admin: bool
    #: the workspace the link was asked from: the studio shows its posts, personas and images only
    workspace_id: int = 0

    def csrf(self, secret: str) -> str:
        """The form token of this session (cancel buttons post it back)."""
        return hmac.new(secret.encode(), b"csrf:" + self.token.encode(), hashlib.sha256).hexdigest()[:32]


def forbidden() -> web.HTTPForbidden:
    return web.HTTPForbidden(text=FORBIDDEN_TEXT)


async def _viewer(state: WebState, token: str) -> Viewer:
    try:
        claims = read_token(state.secret, token, state.link_max_age_s)
        user = await state.store.get_user(claims.user_id)
    except (BadLink, NotFound):
        raise forbidden() from None
    if claims.workspace_id is None:  # a link naming no workspace: where the user was last
        last = await state.store.last_workspace_of(user.id)
        workspace_id = last.id if last is not None else (await state.store.home_workspace(user)).id
    elif await state.store.role_of(claims.workspace_id, user.id) is None:
        raise forbidden()
    else:
        workspace_id = claims.workspace_id
    admin = state.is_admin(user.platform, user.platform_user_id)
    return Viewer(user=user, claims=claims, token=token, admin=admin, workspace_id=workspace_id)


async def enter(request: web.Request) -> web.Response:
    """``GET /s/<token>``: check the link, keep it in the cookie, go to the gallery (or to the studio
    page its ``next`` names, e.g. a running job's live page)."""
    state = request.app[STATE]
    token = request.match_info["token"]
    viewer = await _viewer(state, token)
    left_s = max(1, int(viewer.claims.signed_at + state.link_max_age_s - time.time()))
    response = web.HTTPSeeOther(safe_next(request.query.get("next")) or "/studio/posts")
    response.set_cookie(
        COOKIE,
        token,
        max_age=left_s,
        path="/",
        httponly=True,
        samesite="Lax",
        secure=is_https(request),
    )
    raise response


def is_https(request: web.Request) -> bool:
    """TLS here, or at the proxy in front (``X-Forwarded-Proto: https``; trusting it can only make
    the cookie stricter)."""
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.secure or forwarded == "https"


async def viewer_of(request: web.Request) -> Viewer:
    """The viewer of a studio request; 403 without a valid link."""
    token = request.cookies.get(COOKIE)
    if not token:
        raise forbidden()
    return await _viewer(request.app[STATE], token)


async def admin_of(request: web.Request) -> Viewer:
    viewer = await viewer_of(request)
    if not viewer.admin:
        raise forbidden()
    return viewer
