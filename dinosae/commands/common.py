"""What every command shares: one-line errors, JSON output, config overrides."""

from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path
from typing import Any, Callable

import click

# Failures of input (missing files, wrong shapes, bad data): one line, exit code 1.
USER_ERRORS = (ValueError, FileNotFoundError, KeyError, ImportError, RuntimeError)


def one_line_errors(command: Callable) -> Callable:
    """Turn the library's input errors into click's ``Error: <reason>`` and a non-zero exit.

    ``DINOSAE_DEBUG=1`` lets the original exception and its traceback through.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except click.ClickException:
            raise
        except USER_ERRORS as error:
            if os.environ.get("DINOSAE_DEBUG"):
                raise
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise click.ClickException(message) from error

    return wrapper


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def emit(result: dict, as_json: bool, out_dir: Path | None = None) -> None:
    """Print ``result`` (a table, or one JSON object as the last line) and save it as ``metrics.json``."""
    result = _finite(result)
    if out_dir is not None:
        from dinosae.train.common import write_json

        write_json(out_dir / "metrics.json", result)
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
    else:
        width = max(len(k) for k in result) if result else 0
        for key, value in result.items():
            shown = f"{value:.4f}" if isinstance(value, float) else value
            click.echo(f"{key:<{width}}  {shown}")


config_option = click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                             help="JSON or YAML file of config overrides (flags win over it).")
device_option = click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None,
                             help="Default: cuda when available.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object as the last line.")
