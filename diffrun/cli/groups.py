"""Option groups: a set of options declared once, handed to each command as the one object it builds.

A group is a builder function whose parameters are typer options (`Annotated[..., typer.Option(...)]`
with their defaults) and whose result is what commands want: a `FetchPolicy`, a `ModelOptions`, a
`Job`. `takes(name=GROUP, ...)` replaces the command's parameter `name` with the group's options in the
signature typer reads, and calls the command with the built object in its place:

    @takes(policy=options.LOADING)
    def inspect(refs: ..., policy: FetchPolicy) -> None: ...

Only typer's public surface is used (a function signature); a new loader option is one edit, in the
builder.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

KEYWORD = inspect.Parameter.KEYWORD_ONLY


@dataclass(frozen=True)
class OptionGroup:
    build: Callable[..., Any]
    params: tuple[inspect.Parameter, ...]

    @classmethod
    def of(cls, build: Callable[..., Any]) -> OptionGroup:
        """The group declared by `build`'s parameters (each one a typer option with its default)."""
        return cls(build, tuple(_parameters(build)))

    def replacing(self, name: str, annotation: Any, default: Any) -> OptionGroup:
        """The same group with option `name` declared differently (its flag, help or default): e.g. `serve`
        turns --block-private into --allow-private, on by default. `build` still receives `name`."""
        if name not in self.names:
            raise KeyError(name)
        params = tuple(p.replace(annotation=annotation, default=default) if p.name == name else p
                       for p in self.params)
        return OptionGroup(self.build, params)

    def without(self, *names: str, **fixed: Any) -> OptionGroup:
        """The group less the options `names` (`build` gets their default, or the value in `fixed`)."""
        values = {p.name: fixed.get(p.name, p.default) for p in self.params if p.name in names}
        build = functools.partial(self.build, **values)
        return OptionGroup(build, tuple(p for p in self.params if p.name not in names))

    @property
    def names(self) -> set[str]:
        return {p.name for p in self.params}


def takes(**groups: OptionGroup) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a command: each parameter named like a keyword here becomes that group's options."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(command)
        missing = set(groups) - set(signature.parameters)
        if missing:
            raise TypeError(f"{command.__name__} has no parameter {sorted(missing)[0]!r} for its option group")
        params: list[inspect.Parameter] = []
        for param in _parameters(command):
            params.extend(groups[param.name].params if param.name in groups else (param,))
        seen: set[str] = set()
        for param in params:
            if param.name in seen:
                raise TypeError(f"{command.__name__}: option {param.name!r} is declared twice")
            seen.add(param.name)

        @functools.wraps(command)
        def wrapper(**values: Any) -> Any:
            for name, group in groups.items():
                own = {p.name: values.pop(p.name) for p in group.params if p.name in values}
                values[name] = group.build(**own)
            return command(**values)

        wrapper.__signature__ = signature.replace(parameters=params, return_annotation=None)  # type: ignore[attr-defined]
        # typer also reads typing.get_type_hints(): the merged options' annotations, evaluated, and no
        # placeholder's (its type may be imported only for type checkers)
        wrapper.__annotations__ = {p.name: p.annotation for p in params if p.annotation is not inspect.Parameter.empty}
        return wrapper

    return decorate


def _parameters(function: Callable[..., Any]) -> list[inspect.Parameter]:
    """`function`'s parameters, keyword-only, their annotations evaluated (`from __future__ import
    annotations` leaves strings). The return annotation is not: it may name a type imported only for
    type checkers. A placeholder's annotation that cannot be evaluated stays a string; `takes` drops it."""
    result = []
    for param in inspect.signature(function).parameters.values():
        annotation = param.annotation
        if isinstance(annotation, str):
            with contextlib.suppress(NameError):  # the module's own names
                annotation = eval(annotation, getattr(function, "__globals__", {}))
        result.append(param.replace(kind=KEYWORD, annotation=annotation))
    return result
