"""Every setting as a flag: the options of ``serve`` and ``config`` are made from :class:`~promocodes.config.Settings`,
so a setting declared there is a flag (``--db-timeout``) and an environment variable (``PROMOCODES_DB_TIMEOUT``) at
once, read by Typer in one place, with nothing to add here."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from promocodes.config import Settings, env_name

T = TypeVar("T")


def _option(setting: dataclasses.Field[Any]) -> inspect.Parameter:
    kind = type(setting.default)
    option = typer.Option(
        f"--{setting.name.replace('_', '-')}",
        envvar=env_name(setting.name),
        help=setting.metadata["help"],
        min=0 if kind in (int, float) else None,  # every number of the settings is a size, a count or seconds
    )
    return inspect.Parameter(
        setting.name, inspect.Parameter.KEYWORD_ONLY, default=setting.default, annotation=Annotated[kind, option]
    )


def with_settings(function: Callable[..., T]) -> Callable[..., T]:
    """Give a command one option per setting; the command receives them whole as ``settings: Settings``."""
    own = inspect.signature(function, eval_str=True)
    names = [setting.name for setting in dataclasses.fields(Settings)]
    parameters = [parameter for name, parameter in own.parameters.items() if name != "settings"]
    parameters += [_option(setting) for setting in dataclasses.fields(Settings)]

    @functools.wraps(function)
    def run(**given: Any) -> T:
        settings = Settings(**{name: given.pop(name) for name in names})
        return function(settings=settings, **given)

    run.__signature__ = own.replace(parameters=parameters)  # type: ignore[attr-defined]
    run.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
    return run
