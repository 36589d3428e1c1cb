"""The ``flue-models`` command line.

Every command connects the way :func:`flue_models.connect` does: ``--url``, then
``$REDIS_URL``, then the embedded server. Commands that print data take ``--json``.

Exit status: 0 success, 1 runtime error, 2 usage error, 3 not found, 130 interrupted
(Ctrl-C), 141 output pipe closed. Every error is one line on stderr, ``error: ...``;
``--debug`` (or ``FLUE_DEBUG=1``) adds the traceback. Warnings are one ``warning: ...``
line. Progress of long work is a line on stderr, shown only on a terminal.

One module per command group (``server``, ``migrations``, ``runs``, ``events``,
``sessions``, ``submissions``, ``maintenance``, ``demo``, ``dashboard``, ``bench``); the
parser (``parser``) names each command's handler, and only the module of the command that
runs is imported: ``flue-models --version`` and ``--help`` import neither redis-py nor
pydantic.
"""

from __future__ import annotations

# Ctrl-C stops the command from here on, even when it was started with SIGINT ignored
# (as background jobs of a non-interactive shell are). The handler and the hooks that keep
# an interrupted start-up quiet are in place before any import that reads a file: the
# three modules below are loaded at interpreter start-up (``_signal`` is the built-in
# behind ``signal``), and this runs before any import of the library (``import
# flue_models`` itself imports nothing, and a command's module is imported only when it
# runs). So the window in which a Ctrl-C could be lost is the interpreter's own start-up;
# one that lands during the imports below ends the process with status 130, quietly.
import _signal  # type: ignore[import-not-found,unused-ignore]
import os
import sys

_SIGINT_AT_START_UP: list[bool] = []


def _start_up_sigint(signum: int, frame: object) -> None:
    _SIGINT_AT_START_UP.append(True)  # remembered: the interrupt may come back disguised
    raise KeyboardInterrupt


def _quiet_interrupt(
    kind: type[BaseException], value: BaseException, tb: TracebackType | None
) -> None:
    # Python may wrap the KeyboardInterrupt (in a RuntimeError when it lands in a class
    # body's __set_name__, or turn it into a TypeError inside a C module's import, as
    # `import ssl` does): an error after a Ctrl-C arrived during the imports is that Ctrl-C.
    if _SIGINT_AT_START_UP or _interrupted(value):
        sys.stdout.flush()
        os._exit(130)  # interrupted while starting: exit as Ctrl-C does, quietly
    sys.__excepthook__(kind, value, tb)


def _interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` is, or was caused by, a Ctrl-C."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, KeyboardInterrupt):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _quiet_unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    # A Ctrl-C that lands in a finalizer or a weakref callback of the import machinery
    # (``_get_module_lock.<locals>.cb``) is swallowed there and printed as "Exception
    # ignored in": it was remembered (main() then exits 130), so nothing is printed.
    if isinstance(unraisable.exc_value, KeyboardInterrupt) or _SIGINT_AT_START_UP:
        return
    sys.__unraisablehook__(unraisable)


sys.excepthook = _quiet_interrupt
sys.unraisablehook = _quiet_unraisable
_signal.signal(_signal.SIGINT, _start_up_sigint)  # main() puts the default handler back

import argparse
import asyncio
import importlib
import signal  # (after the handler, on purpose: it reads a file)
import traceback
import warnings
from collections.abc import Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any, TextIO

from flue_models.cli.output import (
    FAILED,
    INTERRUPTED,
    NOT_FOUND,
    PIPE_CLOSED,
    USAGE,
    NotFound,
    UsageError,
)
from flue_models.cli.parser import DEBUG_ENV, build_parser
from flue_models.terminal import one_line

Handler = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]

#: While a command has not stopped after Ctrl-C, it is cancelled again this often (a
#: cancellation that lands while a reply arrives can be lost in the client library).
RECANCEL_SECONDS = 1.0

__all__ = ["build_parser", "main"]


def _handler(name: str) -> Handler:
    """The handler a command names (``"<module>:<function>"`` of this package), imported
    now: only the module of the command that runs is loaded."""
    module, _, function = name.partition(":")
    found: Handler = getattr(importlib.import_module(f"flue_models.cli.{module}"), function)
    return found


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    print(f"warning: {one_line(str(message))}", file=sys.stderr)


def _run(handler: Handler, args: argparse.Namespace) -> int:
    """Run ``handler`` in a fresh event loop; the first Ctrl-C cancels it, for sure.

    A cancellation that lands just as a reply arrives can be swallowed below us, so the
    command is cancelled again every second until it has stopped.
    """
    loop = asyncio.new_event_loop()
    task = loop.create_task(handler(args))
    interrupted = False

    def cancel_until_done() -> None:
        if not task.done():
            task.cancel()
            loop.call_later(RECANCEL_SECONDS, cancel_until_done)

    def on_sigint() -> None:
        nonlocal interrupted
        interrupted = True
        cancel_until_done()

    loop.add_signal_handler(signal.SIGINT, on_sigint)
    try:
        return loop.run_until_complete(task)
    except asyncio.CancelledError:
        if interrupted:
            raise KeyboardInterrupt from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


def _message(exc: BaseException) -> str:
    from redis.exceptions import RedisError

    from flue_models.errors import FlueModelsError

    if isinstance(exc, FlueModelsError | NotFound | UsageError):
        return one_line(str(exc))
    if isinstance(exc, RedisError):
        return one_line(f"the Redis server connection failed ({type(exc).__name__}: {exc})")
    return one_line(f"{type(exc).__name__}: {exc}") + " (this is a bug; --debug shows where)"


def _is_usage(exc: BaseException) -> bool:
    """An argument that cannot work, found after parsing: a cursor of another listing,
    an offset beyond the head, a URL option redis-py refuses (exit status 2)."""
    from flue_models.errors import InvalidURLError, QueryError

    return isinstance(exc, UsageError | QueryError | InvalidURLError)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``flue-models`` command line and return its exit status.

    Example:
        ```console
        $ flue-models check
        url: redis://127.0.0.1:41235/0 (embedded, data in /home/me/app/.flue/redis)
        ...
        ```
    """
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        parser = build_parser()
        args, unknown = parser.parse_known_args(argv)
        if args.handler == "bench:bench":  # its options are the harness's: all, in order
            given = list(sys.argv[1:] if argv is None else argv)
            args.bench_args = given[given.index("bench") + 1 :]
        elif unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        debug = debug or args.debug
        # The command's module (and the library) is imported here, still under the
        # start-up handler: a Ctrl-C that an import turns into another error, or that
        # Python swallows in a finalizer, is remembered and stops the command.
        handler = _handler(args.handler)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # main() may run again
        if _SIGINT_AT_START_UP:
            return INTERRUPTED
        warnings.showwarning = _show_warning
        return _run(handler, args)
    except KeyboardInterrupt:
        return INTERRUPTED
    except BrokenPipeError:  # e.g. `flue-models runs list | head -1`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return PIPE_CLOSED
    except Exception as exc:
        if _SIGINT_AT_START_UP or _interrupted(exc):
            return INTERRUPTED
        if debug:
            traceback.print_exc()
        print(f"error: {_message(exc)}", file=sys.stderr)
        if isinstance(exc, NotFound):
            return NOT_FOUND
        return USAGE if _is_usage(exc) else FAILED
