"""Terminal output in one place: whether to colour (``--color``, ``NO_COLOR``, ``FORCE_COLOR``)
and how wide to lay out text that does not go to a terminal.

Colour follows no-color.org and force-color.org: ``--color always|never`` wins (a per-run
argument overrides the environment); with ``--color auto`` (the default) ``NO_COLOR`` set and
not empty means no colour, else ``FORCE_COLOR`` set and not empty means colour even into a pipe
or file, else colour only on a terminal. Colour is all these decide: whether output is *a
terminal* (redrawn live views, progress bars) stays what the stream is, so ``FORCE_COLOR`` on a
pipe colours ``host watch``'s lines but does not redraw them in place.

rich is imported only when a console is made: a capture command that prints no rich text does
not pay for it at start-up.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import ProgressColumn

COLOR_CHOICES = ("auto", "always", "never")
REPORT_WIDTH = 100
"""analyze's and flow's text off a terminal: prose, read at a comfortable line length."""
TABLE_WIDTH = 120
"""host's tables off a terminal (pipes, logs): wide enough that addresses and process names do
not wrap."""

_choice = "auto"


def set_color(choice: str | None) -> None:
    """The ``--color`` of this run (None: not given, ``auto``)."""
    global _choice
    if choice not in (None, *COLOR_CHOICES):
        raise ValueError(f"--color {choice}: expected one of {', '.join(COLOR_CHOICES)}")
    _choice = choice or "auto"


def color_wanted(tty: bool, environ: Mapping[str, str] | None = None) -> bool:
    """Whether output to a stream (a terminal or not) is coloured in this run."""
    env = os.environ if environ is None else environ
    if _choice != "auto":
        return _choice == "always"
    if env.get("NO_COLOR", ""):
        return False
    if env.get("FORCE_COLOR", ""):
        return True
    return tty


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a file
        return False


def make_console(
    file: IO[str] | None = None,
    *,
    stderr: bool = False,
    tty: bool | None = None,
    width: int | None = None,
    pipe_width: int | None = None,
    **options: Any,
) -> Console:
    """A rich Console on ``file`` (default stdout, or stderr) with this run's colour decision.

    ``tty`` overrides what the stream says (text rendered into a buffer for a terminal);
    ``width`` fixes the width; ``pipe_width`` sets it only off a terminal and when ``COLUMNS``
    does not (rich's own default there is 80)."""
    from rich.console import Console

    stream = file if file is not None else (sys.stderr if stderr else sys.stdout)
    is_tty = _isatty(stream) if tty is None else tty
    color = color_wanted(is_tty)
    if width is None and pipe_width and not is_tty and "COLUMNS" not in os.environ:
        width = pipe_width
    return Console(
        file=file,
        stderr=stderr,
        force_terminal=is_tty,
        no_color=not color,
        # off a terminal rich detects no colours at all: name the 16 standard ones
        color_system=("auto" if is_tty else "standard") if color else None,
        width=width,
        **options,
    )


@contextmanager
def step_progress(on: bool) -> Iterator[Callable[[str, int | None, int | None], None] | None]:
    """``analyze``'s progress bar on stderr (bytes read of the captures, then the diagnosis
    step), transient, when `on`; else nothing is drawn. The command asks for it on a
    terminal, the API when called with ``progress=True``."""
    if not on:
        yield None
        return
    from rich.progress import BarColumn, SpinnerColumn, TaskProgressColumn, TextColumn

    columns = (
        SpinnerColumn(),
        TextColumn("tcpwhy: {task.description}"),
        BarColumn(),
        TaskProgressColumn(),
    )
    with stderr_progress("starting", *columns) as bar:

        def update(step: str, done: int | None, total: int | None) -> None:
            bar(description=step, completed=done or 0, total=total)

        yield update


@contextmanager
def stderr_progress(description: str, *columns: ProgressColumn) -> Iterator[Callable[..., None]]:
    """A transient rich progress bar on stderr of one task, its total not yet known: how
    ``analyze``'s steps and a fleet's capture points are drawn. Yields the task's update
    (`Progress.update`'s keywords: ``completed``, ``total``, ``description``)."""
    from rich.progress import Progress

    console = make_console(stderr=True)
    if not (console.is_terminal or console.is_jupyter):
        # nowhere to redraw a bar: rich's transient bar left an empty line per reading in a
        # script's log, and a bar drawn once at the end tells nothing
        yield lambda **fields: None
        return
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(description, total=None)
        yield lambda **fields: bar.update(task, **fields)
