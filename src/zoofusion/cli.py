"""The command line every stage shares: `python -m zoofusion.<module> [--params FILE] [stage args]`.

Params are loaded and validated first; a bad params file, a missing input or a stage's own input error ends
the process with one line `<stage>: <what is wrong and how to fix it>` (exit 1), never a traceback.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable

from zoofusion.config import ConfigError, Params, load_params
from zoofusion.console import setup_logging
from zoofusion.executor import AddressError, TimeLimitReached
from zoofusion.tracking import check_tracking_uri, end_runs_of_this_process


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def stage_main(stage: str, run: Callable[[argparse.Namespace, Params], object], argv: list[str] | None, *,
               description: str, errors: tuple[type[BaseException], ...] = (),
               add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
               on_interrupt: str | None = None) -> None:
    """Parse `argv`, load params.yaml, call `run(args, params)`; expected errors become one line.

    `stage` may name parsed arguments (`"zoo@{domain}"`). `on_interrupt` says what survives a Ctrl-C.
    """
    ap = argparse.ArgumentParser(description=description)
    if add_arguments is not None:
        add_arguments(ap)
    ap.add_argument("--params", default="params.yaml", help="params file (DVC stages read params.yaml)")
    args = ap.parse_args(argv)
    name = stage.format(**vars(args))
    setup_logging()
    previous = signal.signal(signal.SIGTERM, _interrupt)  # `kill` ends MLflow runs KILLED, as Ctrl-C does
    try:
        params = load_params(args.params)
        check_tracking_uri()  # before any work: validate does not rerun when only the environment changes
        run(args, params)
    except (ConfigError, AddressError, FileNotFoundError, TimeLimitReached, *errors) as e:
        raise SystemExit(f"{name}: {e}") from None
    except KeyboardInterrupt:
        if "mlflow" in sys.modules:  # runs it opened end KILLED, not RUNNING forever or FAILED
            end_runs_of_this_process("KILLED")
        if on_interrupt is None:
            raise
        raise SystemExit(f"{name}: interrupted; {on_interrupt}") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
