"""Progress for `generate` and `batch`: a rich bar on a terminal, plain lines anywhere else.

Off a terminal (stderr a file or a pipe, with `--progress`), the same rich `Progress` bookkeeping is
kept but nothing is drawn; each task is written as a plain line when its phase changes (description
or status), and otherwise at most once per `interval` seconds, with n/N and an ETA where known.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import Progress, ProgressColumn, Task, TaskID

from diffrun.cli.console import clean, err

Detail = Callable[[Task], str]


def duration(seconds: float) -> str:
    """`4.2 s`, `3 min 05 s`, `2 h 07 min`."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


class LineProgress(Progress):
    """A rich `Progress` that writes plain lines instead of redrawing a bar (for logs and CI).

    `unit` names what is counted (`3/20 steps`); `detail(task)` adds a parenthesised part
    (`2 ok, 1 failed`). A task's `status` field, when it has one, is part of its phase.
    """

    def __init__(self, *, console: Console, unit: str | None = None, detail: Detail | None = None,
                 interval: float = 1.0, get_time: Callable[[], float] | None = None) -> None:
        super().__init__(console=console, disable=True, get_time=get_time)
        self._unit = unit
        self._detail = detail
        self._interval = interval
        self._shown: dict[TaskID, tuple[float, tuple[Any, ...], tuple[Any, ...]]] = {}

    def add_task(self, description: str, start: bool = True, total: float | None = 100.0, completed: int = 0,
                 visible: bool = True, **fields: Any) -> TaskID:
        task_id = super().add_task(description, start=start, total=total, completed=completed, visible=visible,
                                   **fields)
        self._show(task_id)
        return task_id

    def update(self, task_id: TaskID, **changes: Any) -> None:  # type: ignore[override]
        super().update(task_id, **changes)
        self._show(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._show(task_id)

    def stop(self) -> None:
        """Write each task's last state, if it changed since its last line."""
        for task_id in self.task_ids:
            self._show(task_id, final=True)
        super().stop()

    def _show(self, task_id: TaskID, final: bool = False) -> None:
        with self._lock:
            task = self._tasks[task_id]
            if not task.visible:
                return
            phase = (task.description, task.fields.get("status"))
            detail = self._detail(task) if self._detail else ""
            state = (phase, task.completed, task.total, detail)
            now = self.get_time()
            last = self._shown.get(task_id)
            if last is not None:
                last_time, last_phase, last_state = last
                if state == last_state:
                    return
                if phase == last_phase and not final and now - last_time < self._interval:
                    return
            self._shown[task_id] = (now, phase, state)
            self.console.print(self._line(task, detail), markup=False, highlight=False, soft_wrap=True)

    def _line(self, task: Task, detail: str) -> str:
        text = clean(task.description.replace("\n", " "))
        if task.total is not None:
            text += f": {_number(task.completed)}/{_number(task.total)}" + (f" {self._unit}" if self._unit else "")
        if detail:
            text += f" ({detail})"
        status = task.fields.get("status")
        if status:
            text += f", {clean(str(status).replace(chr(10), ' '))}"
        text += f", {duration(task.elapsed or 0.0)} elapsed"
        remaining = task.time_remaining
        if task.total is not None and not task.finished and remaining is not None:
            text += f", ETA {duration(remaining)}"
        return text


def make(enabled: bool, *columns: ProgressColumn | str, unit: str | None = None, detail: Detail | None = None,
         transient: bool = True) -> Progress:
    """A rich bar with `columns` when stderr is a terminal; plain lines when it is not; nothing if not `enabled`."""
    if enabled and not err.is_terminal:
        return LineProgress(console=err, unit=unit, detail=detail)
    return Progress(*columns, console=err, transient=transient, disable=not enabled)
