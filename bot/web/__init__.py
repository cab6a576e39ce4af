"""The web studio: a user's posts and personas behind signed links from chat, and the
operators' /healthz, /readyz and /metrics (aiohttp, Jinja2 templates shipped with the package)."""

from bot.web.config import WebConfig
from bot.web.server import WebFrontEnd, make_state, make_web_app

__all__ = ["WebConfig", "WebFrontEnd", "make_state", "make_web_app"]
