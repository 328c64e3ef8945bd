"""The `features` command: a thin layer over the pipeline steps and the apps.

:mod:`.parser` builds the arguments, :mod:`.commands` runs them. This is the one place that
turns errors into one line: the errors of :mod:`features.exceptions` (a parameter named in
one is shown as its flag) and the operating system's, exit status 2. Anything else is a
bug, and its traceback is shown (exit status 1).
"""
from __future__ import annotations

import re
import signal
import sys
import threading

from ..exceptions import FeaturesError, ParameterError
from .commands import EXIT_ERROR

__all__ = ["main", "build_parser"]


def build_parser():
    from .parser import build_parser as build
    return build()


def flag_of(param: str, parser) -> str | None:
    """The flag of ``parser`` (a command's) that sets parameter ``param``, if it has one."""
    flag = ("-" if len(param) == 1 else "--") + param.replace("_", "-")
    used = re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", parser.format_help())
    return flag if used else None


def message(error: BaseException, parser=None) -> str:
    """The one line shown for an error: a parameter's name as the flag that sets it."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    param = getattr(error, "param", None)
    if isinstance(error, ParameterError) and param and parser is not None \
            and text.startswith(param + " "):
        flag = flag_of(param, parser)
        if flag:
            text = flag + text[len(param):]
    return text


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the job is: it unwinds as Ctrl-C's KeyboardInterrupt does."""


def _on_sigterm(signum, frame):
    # once: a second SIGTERM must not interrupt the cleanup the first one started
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated


def main(argv=None):
    args = build_parser().parse_args(argv)
    # HDF5 handles that failed to write (a full disk) report "Exception ignored" when
    # garbage-collected; the failure itself is reported below as one line.
    sys.unraisablehook = lambda _: None
    # (signals can be handled in the main thread only: main() called from another thread
    # leaves SIGTERM as it is)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
    try:
        return args.func(args)
    except (FeaturesError, OSError) as e:
        # ours, or what the system refused (a full disk, a damaged file HDF5 or FAISS cannot
        # read): one line, never a traceback
        print(f"features: error: {message(e, args.parser)}", file=sys.stderr)
        return EXIT_ERROR
    except (Terminated, KeyboardInterrupt) as e:
        # what a rerun does depends on the command: the pipeline's steps resume, others
        # say what they do instead
        then = getattr(args, "on_interrupt", "rerun the same command to resume")
        if isinstance(e, Terminated):
            print(f"features: terminated; {then}", file=sys.stderr)
            return 128 + signal.SIGTERM
        print(f"features: interrupted; {then}", file=sys.stderr)
        return 128 + signal.SIGINT
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
