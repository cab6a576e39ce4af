"""Which workspace a platform place is: the keys ``(platform, external_id)`` of workspaces.

* Discord: the guild id of a server; a DM is the user's personal workspace ``dm:<user id>``.
* WeCom: the corp id (one company per installation).
* console: ``local``.

A user's *home* workspace is where their personas and products went when they became a team's
(migration 0007) and where the owner-keyed repository calls put new ones: the console's
``local``, the WeCom company, a Discord user's home server when the installation names one,
else their personal workspace. The WeCom company is stored *unbound* (external id ``""``) when
its corp id was not known; the first WeCom event binds it
(:meth:`storage.workspaces.WorkspaceRecords.workspace`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

LOCAL = "local"
#: external id of a platform's one workspace whose id is not known yet (bound on first use)
UNBOUND = ""
PERSONAL_PREFIX = "dm:"
#: platforms with one shared workspace per installation; others get one workspace per user
_ONE_PER_INSTALLATION = {"console": LOCAL, "wecom": UNBOUND}


class WorkspaceKey(NamedTuple):
    platform: str
    external_id: str
    personal: bool = False


def personal_key(platform: str, platform_user_id: str) -> WorkspaceKey:
    """The personal workspace of a user (Discord DMs)."""
    return WorkspaceKey(platform, f"{PERSONAL_PREFIX}{platform_user_id}", True)


def home_key(platform: str, platform_user_id: str, homes: Mapping[str, str] | None = None) -> WorkspaceKey:
    """The home workspace of a user; ``homes`` maps a platform to its known shared workspace id
    (``{"wecom": corp id, "discord": the one guild id}``)."""
    known = (homes or {}).get(platform)
    if known:
        return WorkspaceKey(platform, str(known))
    if platform in _ONE_PER_INSTALLATION:
        return WorkspaceKey(platform, _ONE_PER_INSTALLATION[platform])
    return personal_key(platform, platform_user_id)


def configured_homes(wecom_corp_id: str | None, discord_guild_ids: Sequence[int]) -> dict[str, str]:
    """The shared home workspaces an installation's settings name, for migration 0007: its WeCom
    company, and its Discord server when it names exactly one (``DISCORD_GUILD_IDS``)."""
    homes: dict[str, str] = {}
    if wecom_corp_id:
        homes["wecom"] = wecom_corp_id
    if len(discord_guild_ids) == 1:
        homes["discord"] = str(discord_guild_ids[0])
    return homes
