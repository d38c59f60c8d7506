"""The owner's side of the CLI's fast path: a client's ``query`` answered in the owner.

``auditcore.launcher`` sends a ``query`` command line to the process that owns the embedded
engine (``serve``, ``project --follow``) so the client never imports the command modules.
Here the owner parses it with the real ``query`` command (its options, types and checks),
answers it with its own open store and engine through the same function the command runs
(``cli.answer_query``), and renders it as the client's terminal would (width, colour, tty).

Failure semantics: declines (None; the client then runs the command itself, with the full
program's messages) whenever its answer could differ from the command's own: a command line
that does not parse or asks for help, an option left to come from the owner's environment,
or an event store other than the owner's. An error of auditcore's while answering is the
command's own one-line error with exit status 2, as ``cli.main`` prints it.
"""

from __future__ import annotations

import io
import os
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from auditcore.clickhouse.owner import CommandHandler
from auditcore.errors import AuditcoreError

if TYPE_CHECKING:
    from auditcore.facade import AuditCore

ANSWERING: ContextVar[tuple[AuditCore, Console, Console] | None] = ContextVar(
    "answering", default=None
)
"""Set while the owner answers a client: the store and engine to use, and where to print."""


def command_handler(audit: AuditCore) -> CommandHandler:
    """Answers clients' ``query`` command lines with ``audit`` (this process's, open)."""

    def answer(request: dict[str, Any]) -> dict[str, Any] | None:
        return _answer(audit, request)

    return answer


def _answer(audit: AuditCore, request: dict[str, Any]) -> dict[str, Any] | None:
    from auditcore import cli  # noqa: PLC0415 - cli registers this module's handler

    argv = [str(argument) for argument in request["argv"]]
    if not argv or argv[0] != "query" or "--help" in argv:
        return None
    query = typer.main.get_command(cli.app).commands["query"]  # type: ignore[attr-defined]
    try:
        context = query.make_context("auditcore query", argv[1:])
    except Exception:  # a usage error: the full program words it
        return None
    params = context.params
    sources = [context.get_parameter_source(name) for name in params]
    if any(getattr(source, "name", "") == "ENVIRONMENT" for source in sources):
        return None  # the owner's environment is not the client's
    if not _same_store(audit, str(params["event_store"]), str(request["cwd"])):
        return None
    printed, warned = io.StringIO(), io.StringIO()
    out, err = _console(request, printed, stdout=True), _console(request, warned, stdout=False)
    status = 0
    answering = ANSWERING.set((audit, out, err))
    try:
        with context:
            query.invoke(context)  # typer's conversions, then cli.query, which sees ANSWERING
    except AuditcoreError as error:  # as cli.main prints it
        err.print(f"[bold red]error:[/bold red] {error}", highlight=False, soft_wrap=True)
        status = 2
    finally:
        ANSWERING.reset(answering)
    return {
        "status": status,
        "stdout": printed.getvalue(),
        "stderr": warned.getvalue(),
    }


def _same_store(audit: AuditCore, event_store: str, cwd: str) -> bool:
    """Whether the client's ``--event-store`` is this process's (a path as each resolves it)."""
    own = audit.settings.event_store
    if "://" in event_store or "://" in own:
        return event_store == own
    return os.path.realpath(os.path.join(cwd, event_store)) == os.path.realpath(own)


def _console(request: dict[str, Any], file: io.StringIO, *, stdout: bool) -> Console:
    """A console rendering as ``cli_options``' would in the client's terminal."""
    terminal = bool(request.get("stdout_tty" if stdout else "stderr_tty"))
    environ = {str(k): str(v) for k, v in dict(request.get("environ") or {}).items()}
    width: int | None = int(request.get("columns") or 80) if terminal else None
    if stdout and not terminal:
        width = 180  # cli_options: piped output is not squeezed into 80 columns
    return Console(file=file, width=width, force_terminal=terminal, _environ=environ)
