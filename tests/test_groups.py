"""Option groups (cli/groups.py): each group declared once, every command that takes it gets the same
options and receives the built object."""

from __future__ import annotations

from typing import Annotated

import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

from diffrun.cli import app as app_module
from diffrun.cli import job_options as jo
from diffrun.cli import model_options as mo
from diffrun.cli import options
from diffrun.cli.groups import OptionGroup, takes
from diffrun.loaders.policy import FetchPolicy


def _flags(command: str) -> set[str]:
    app_module._register()
    click_command = get_command(app_module.app).commands[command]  # type: ignore[attr-defined]
    return {flag for param in click_command.params for flag in param.opts}


def _group_flags(group: OptionGroup) -> set[str]:
    flags = set()
    for param in group.params:
        info = next(a for a in param.annotation.__metadata__ if isinstance(a, typer.models.OptionInfo))
        flags.add(info.default if isinstance(info.default, str) and info.default.startswith("-") else None)
        flags.update(d for d in (info.param_decls or ()) if d.startswith("--"))
    flags.discard(None)
    return flags


@pytest.mark.parametrize(("group", "commands"), [
    (options.LOADING, ("generate", "batch", "inspect", "serve")),
    (mo.RUNTIME_OPTIONS, ("generate", "batch", "serve")),
    (jo.JOB_OPTIONS, ("generate", "batch")),
    (jo.OUTPUT_FILES, ("generate", "batch")),
])
def test_every_command_taking_a_group_has_all_its_options(group: OptionGroup, commands: tuple[str, ...]) -> None:
    wanted = _group_flags(group)
    assert len(wanted) == len(group.params)
    for command in commands:
        assert wanted <= _flags(command), (command, wanted - _flags(command))


def test_the_command_receives_the_built_object() -> None:
    seen: list[FetchPolicy] = []
    app = typer.Typer()

    @app.command()
    @takes(policy=options.LOADING)
    def fetch(ref: Annotated[str, typer.Argument()], policy: FetchPolicy = None) -> None:
        seen.append(policy)

    result = CliRunner().invoke(app, ["x.png", "--timeout", "2.5", "--allow-host", "cdn.example.com"])
    assert result.exit_code == 0, result.output
    assert seen[0].timeout == 2.5 and seen[0].allow_hosts == ("cdn.example.com",)
    assert seen[0].block_private is False


def test_a_group_validates_as_it_builds() -> None:
    app = typer.Typer()

    @app.command()
    @takes(policy=options.LOADING)
    def fetch(policy: FetchPolicy = None) -> None:
        raise AssertionError("not reached")

    result = CliRunner().invoke(app, ["--timeout", "0"])
    assert "--timeout must be positive" in str(result.exception)


def test_replacing_an_option_keeps_the_builder() -> None:
    guard = Annotated[bool, typer.Option("--block-private/--allow-private")]  # on by default, as in serve
    serve_loading = options.LOADING.replacing("block_private", guard, True)
    seen: list[FetchPolicy] = []
    app = typer.Typer()

    @app.command()
    @takes(policy=serve_loading)
    def serve(policy: FetchPolicy = None) -> None:
        seen.append(policy)

    assert CliRunner().invoke(app, []).exit_code == 0
    assert seen[-1].block_private is True
    assert CliRunner().invoke(app, ["--allow-private"]).exit_code == 0
    assert seen[-1].block_private is False
    with pytest.raises(KeyError):
        options.LOADING.replacing("no_such_option", guard, True)


def test_an_option_declared_twice_is_refused() -> None:
    with pytest.raises(TypeError, match="declared twice"):
        @takes(policy=options.LOADING)
        def command(timeout: str = "1", policy: FetchPolicy = None) -> None:
            pass
