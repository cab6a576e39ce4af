"""The WeCom (企业微信) front end: a self-built app's callback server (see :mod:`bot.wecom.server`)."""

from bot.wecom.config import WeComConfig
from bot.wecom.front_end import WECOM_BOT, WeComFrontEnd, create_wecom_app
from bot.wecom.server import CALLBACK_PATH, WeComBot

__all__ = ["CALLBACK_PATH", "WECOM_BOT", "WeComBot", "WeComConfig", "WeComFrontEnd", "create_wecom_app"]
