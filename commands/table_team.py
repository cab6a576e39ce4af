"""The team rows of the command table (:mod:`commands.table`): ``/team`` (show, role, review) and
``/reject <reason>``."""

from __future__ import annotations

from commands.command import Arg, Command
from commands.handlers import review, team

TEAM = Command(
    "team",
    "Your workspace: its members, their roles, review on/off",
    "团队：成员、角色和审核开关",
    aliases=("团队",),
    default_subcommand="show",
    subcommands=(
        Command(
            "show",
            "The workspace, its members with roles, review on/off",
            "查看团队",
            aliases=("查看",),
            handler=team.show,
        ),
        Command(
            "role",
            "Give a member a role: admin, reviewer or member (admins)",
            "设置成员角色：管理员 / 审核员 / 成员（仅管理员）",
            aliases=("角色",),
            handler=team.role,
            args=(
                Arg("user", "str", "the member (a mention, id or name)", required=True, max=100, positional=True),
                Arg(
                    "role",
                    "str",
                    "admin, reviewer or member",
                    required=True,
                    positional=True,
                    choices=tuple(team.ROLE_WORDS.items()),
                    shown="admin|reviewer|member",
                ),
            ),
        ),
        Command(
            "review",
            "Review before approval on or off (admins)",
            "审核开关：开 / 关（仅管理员）",
            aliases=("审核",),
            handler=team.review,
            args=(
                Arg(
                    "switch",
                    "str",
                    "on or off",
                    required=True,
                    positional=True,
                    choices=tuple(team.SWITCH_WORDS.items()),
                    shown="on|off",
                ),
            ),
        ),
    ),
)

REJECT = Command(
    "reject",
    "Request changes to a post in review, with the reason (reviewers)",
    "退回审核中的帖子并说明原因（审核员）",
    aliases=("退回",),
    handler=review.reject,
    result_action=True,  # also the Request changes button (退回) of a review request
    args=(Arg("reason", "str", "what should change", max=1000, positional=True, takes="text", shown="<reason>"),),
)
