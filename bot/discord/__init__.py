"""The Discord front end (discord.py): see :mod:`bot.discord.client` for how it is built.

Modules here import ``discord`` absolutely, so this package never shadows discord.py.
"""

from bot.discord.client import PersonaBot
from bot.discord.config import DiscordConfig
from bot.discord.front_end import DiscordFrontEnd, run_discord
from bot.discord.permissions import REQUIRED_PERMISSIONS, invite_url

__all__ = ["REQUIRED_PERMISSIONS", "DiscordConfig", "DiscordFrontEnd", "PersonaBot", "invite_url", "run_discord"]
