"""What ``raftkv-ctl`` and ``raftcloud`` share: exit codes, one-line errors, and global
options accepted before or after the subcommand (docs/operations.md, "Exit codes").

Click parses a group's options before the subcommand's name only.  So each global
option is declared twice: on the group, with its default, and on every
subcommand, without one; both store into ``ctx.obj`` under the
option's name, the subcommand's (parsed later) only when given.  Neither reaches
the command functions as an argument: they read ``ctx.obj``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, NoReturn

import click


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1          # the cluster answered no: not found, condition failed, refused...
    USAGE = 2           # a wrong option or argument (click's own code)
    NO_CLUSTER = 3      # no cluster file or secret found, or one that cannot be read
    WRONG_SECRET = 4    # the cluster does not know this secret
    NOT_LISTENING = 5   # nothing answers at any of the cluster's addresses
    NO_LEADER = 6       # replicas answer, but a group has no leader (yet)
    TIMEOUT = 7         # no answer in time (a write may still apply), or still stopping
    RUNNING = 8         # raftcloud up: a cloud already runs there


EXIT_CODES_HELP = """\b
Exit codes:
  0  done
  1  the cluster said no (not found, condition failed, refused)
  2  wrong usage (an unknown option, a missing argument)
  3  no cluster file or secret found (see -v), or one that cannot be read
  4  wrong secret: this cluster does not know your secret
  5  nothing listening at the cluster's addresses (is it up?)
  6  no leader (yet): the replicas answer but cannot serve
  7  timed out (a write may still apply); raftcloud down: still stopping
  8  raftcloud up: a cloud is already running there"""


class ToolError(Exception):
    """A failure a tool reports in one line (:func:`fail`), with its exit code."""

    def __init__(self, message: str, code: ExitCode) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def fail(message: str, code: ExitCode) -> NoReturn:
    """Say ``message`` on stderr, in one line, and exit with ``code``."""
    click.echo(f"error: {message}", err=True)
    raise click.exceptions.Exit(int(code))


@dataclass(frozen=True)
class GlobalOption:
    decls: tuple[str, ...]
    help: str
    default: Any = None
    type: Any = None
    is_flag: bool = False
    count: bool = False

    def _kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"help": self.help, "expose_value": False}
        if self.is_flag:
            kwargs["is_flag"] = True
        elif self.count:
            kwargs["count"] = True
        elif self.type is not None:
            kwargs["type"] = self.type
        return kwargs

    def on_group(self) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def store(ctx: click.Context, param: click.Parameter, value: Any) -> None:
            ctx.ensure_object(dict)[param.name or ""] = value
        show = self.default is not None and not self.is_flag and not self.count
        default = self.default
        if default is None and (self.is_flag or self.count):
            default = 0 if self.count else False
        return click.option(*self.decls, default=default, show_default=show, callback=store,
                            **self._kwargs())

    def on_command(self) -> click.Option:
        def store_if_given(ctx: click.Context, param: click.Parameter, value: Any) -> None:
            given = bool(value) if self.is_flag or self.count else value is not None
            if given:
                obj = ctx.ensure_object(dict)
                name = param.name or ""
                obj[name] = obj.get(name, 0) + value if self.count else value
        default = False if self.is_flag else 0 if self.count else None
        return click.Option(list(self.decls), default=default, callback=store_if_given,
                            **self._kwargs())


def global_options(group: click.Group, options: Sequence[GlobalOption]) -> None:
    """Accept ``options`` after the subcommand too, on every subcommand of ``group``
    (call it once all of them are defined); the group itself takes them with
    :func:`with_global_options`."""
    for command in group.commands.values():
        command.params.extend(option.on_command() for option in options)
        if command.epilog is None and group.epilog:
            command.epilog = group.epilog


def with_global_options(options: Sequence[GlobalOption]
                        ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The group's side of :func:`global_options`."""
    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            func = option.on_group()(func)
        return func
    return decorate
