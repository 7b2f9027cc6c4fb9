"""`diffrun completion SHELL`: print the script that makes bash, zsh or fish complete diffrun."""

from __future__ import annotations

import os
import sys
from enum import Enum
from typing import Annotated

import typer

PROG = "diffrun"
COMPLETE_VAR = "_DIFFRUN_COMPLETE"
"""The variable the script sets when it asks diffrun for completions (typer's protocol)."""


class Shell(str, Enum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


def completion(shell: Annotated[Shell, typer.Argument(metavar="SHELL", help="bash, zsh or fish.")]) -> None:
    """Print the script that makes bash, zsh or fish complete diffrun's commands and options.

    It only prints: nothing is installed and no shell file is changed.

    bash: `source <(diffrun completion bash)` in ~/.bashrc, or save it as
    ~/.local/share/bash-completion/completions/diffrun.

    zsh: save it as `_diffrun` in a folder on $fpath (after compinit), or `source <(diffrun completion zsh)`.

    fish: `diffrun completion fish > ~/.config/fish/completions/diffrun.fish`.

    """
    from typer.completion import get_completion_script

    sys.stdout.write(get_completion_script(prog_name=PROG, complete_var=COMPLETE_VAR, shell=shell.value) + "\n")


def answer_if_asked() -> None:
    """When a completion script asks (COMPLETE_VAR set), ready typer's completion for bash, zsh and fish.

    Only then: a normal start pays nothing for completion (the app has add_completion=False).
    """
    if COMPLETE_VAR in os.environ:
        from typer.completion import completion_init

        completion_init()


def register(app: typer.Typer) -> None:
    app.command("completion")(completion)
