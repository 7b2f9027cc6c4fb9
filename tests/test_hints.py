"""Every hint in the code that names an option names one that exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import typer

from diffrun.cli import app as app_module

PACKAGE = Path(__file__).resolve().parents[1] / "diffrun"
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
# `ray start --head`: a command of another program, quoted; its options are not diffrun's
OTHER_COMMAND = re.compile(r"`(?!diffrun\b)[^`]*`")


def _options() -> set[str]:
    app_module._register()
    root = typer.main.get_command(app_module.app)
    found: set[str] = set()
    stack = [root]
    while stack:
        command = stack.pop()
        for param in command.params:
            found.update(getattr(param, "opts", []))
            found.update(getattr(param, "secondary_opts", []))
        stack.extend(getattr(command, "commands", {}).values())  # a group (typer may carry its own click)
    return found


def _text(node: ast.AST) -> str:
    """The literal text of a string, an f-string (its constant parts) or a concatenation of them."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return " ".join(_text(value) for value in node.values)
    if isinstance(node, ast.BinOp):
        return _text(node.left) + _text(node.right)
    return ""


def _hints() -> list[tuple[str, int, str]]:
    """(file, line, text) of every `hint=...` argument and every `*HINT*` constant in the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            values: list[ast.AST] = []
            if isinstance(node, ast.keyword) and node.arg == "hint":
                values.append(node.value)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Name) and "HINT" in t.id.upper() for t in targets):
                    values.append(node.value)
            elif isinstance(node, ast.FunctionDef):
                values += [d for a, d in zip(node.args.args[::-1], node.args.defaults[::-1], strict=False)
                           if a.arg == "hint"]
            for value in values:
                for part in ast.walk(value):
                    text = _text(part)
                    if text:
                        found.append((str(path.relative_to(PACKAGE.parent)), getattr(part, "lineno", 0), text))
    return found


def test_hints_name_only_real_options() -> None:
    options = _options()
    assert {"--max-input-bytes", "--max-pixels", "--overwrite"} <= options
    hints = _hints()
    assert len(hints) > 20  # the walk does find them
    wrong = [(f, line, name) for f, line, text in hints for name in OPTION.findall(OTHER_COMMAND.sub("", text))
             if name not in options]
    assert wrong == []
