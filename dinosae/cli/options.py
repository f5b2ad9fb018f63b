"""What every command shares: one-line errors, JSON output, and the options whose names and
meaning are the same in every command (``--ckpt``, ``--preset``, ``--teacher-weights``, ...).

Nothing here imports torch: ``dinosae --help`` and option errors stay fast.
"""

from __future__ import annotations

import errno
import functools
import json
import math
import os
import sys
import zipfile
from pathlib import Path
from typing import Any, Callable

import click

from dinosae.config import preset_names
from dinosae.config.recipes import RECIPES
from dinosae.config.training import RESUME_MODES

# Failures of input or of the machine's storage (missing or corrupt files, wrong shapes or values, bad
# data, a NaN in a run, a full or read-only disk, another writer): one line, exit code 1. Anything else
# (out of memory, a bug) keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError,
    FloatingPointError, zipfile.BadZipFile, EOFError)
# What storage says when it cannot take a write: full, over quota, read-only, name too long.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ENAMETOOLONG, errno.EACCES, errno.EPERM})


def _user_errors() -> tuple[type[BaseException], ...]:
    # Classes of libraries that the command line does not import itself (so that it starts without
    # torch): a sphere_ops backend this machine lacks, a corrupt safetensors file.
    extra = []
    backends = sys.modules.get("sphere_ops.backends")
    if backends is not None:
        extra.append(backends.BackendUnavailable)
    safetensors = sys.modules.get("safetensors")
    if safetensors is not None:
        extra.append(safetensors.SafetensorError)
    return USER_ERRORS + tuple(extra)


def is_user_error(error: BaseException) -> bool:
    """Whether ``error`` is the input's or the storage's fault, so one line tells the user all they need.

    Example:
        >>> is_user_error(OSError(errno.ENOSPC, "No space left on device", "run/model.safetensors"))
        True
        >>> is_user_error(RuntimeError("CUDA out of memory"))
        False
    """
    return isinstance(error, _user_errors()) or (isinstance(error, OSError) and error.errno in STORAGE_ERRNOS)


def describe(error: BaseException) -> str:
    """One line for the user: the error's first line, with the file an ``OSError`` names."""
    if isinstance(error, OSError) and error.errno is not None and error.strerror:
        where = f": {error.filename}" if error.filename else ""
        return f"{error.strerror}{where}"
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def one_line_errors(command: Callable) -> Callable:
    """Turn the library's input errors into click's ``Error: <reason>`` and a non-zero exit, and a preempted
    run into its message and exit code 75 (``dinosae.train.preemption``).

    ``DINOSAE_DEBUG=1`` lets the original exception and its traceback through.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except click.ClickException:
            raise
        except Exception as error:
            preemption = sys.modules.get("dinosae.train.preemption")
            if preemption is not None and isinstance(error, preemption.RunPreempted):
                click.echo(str(error), err=True)
                sys.exit(preemption.PREEMPTED_EXIT_CODE)
            if not is_user_error(error) or os.environ.get("DINOSAE_DEBUG"):
                raise
            raise click.ClickException(describe(error)) from error

    return wrapper


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def emit(result: dict, as_json: bool, out_dir: Path | None = None) -> None:
    """Print ``result`` (a table, or one JSON object as the last line) and save it as ``metrics.json``.

    Under ``torchrun`` only rank 0 prints and writes: every rank holds the same gathered result.
    """
    if os.environ.get("RANK", "0") != "0":
        return
    result = _finite(result)
    if out_dir is not None:
        from dinosae.io.atomic import write_json

        write_json(out_dir / "metrics.json", result)
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
    else:
        width = max(len(k) for k in result) if result else 0
        for key, value in result.items():
            shown = f"{value:.4f}" if isinstance(value, float) else value
            click.echo(f"{key:<{width}}  {shown}")


class FiniteFloat(click.FloatRange):
    """A float option (within optional bounds, as ``click.FloatRange``) that refuses ``nan`` and ``inf``:
    one would train or sample silently into NaN.

    Example:
        >>> FiniteFloat(min=0).convert("0.5", None, None)
        0.5
    """

    name = "finite float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


FINITE_FLOAT = FiniteFloat()


def comma_separated(kind: Callable[[str], Any], what: str = "values", minimum: float | None = None) -> Callable:
    """An option callback reading ``"a,b,c"`` as ``[kind("a"), kind("b"), kind("c")]`` (None stays None);
    numbers must be finite and at least ``minimum``.

    Example:
        >>> comma_separated(int, "integers")(None, None, "1, 2,")
        [1, 2]
    """

    def parse(ctx: click.Context | None, param: click.Parameter | None, value: str | None) -> list | None:
        if value is None:
            return None
        try:
            values = [kind(v.strip()) for v in value.split(",") if v.strip()]
        except ValueError as error:
            raise click.BadParameter(f"expected comma-separated {what}, got {value!r}") from error
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise click.BadParameter(f"expected finite {what}, got {value!r}")
        if minimum is not None and any(v < minimum for v in values):
            raise click.BadParameter(f"expected {what} of at least {minimum}, got {value!r}")
        return values

    return parse


def report(result: dict, as_json: bool, text: str) -> None:
    """Print ``result`` as JSON with ``--json`` (as :func:`emit`), otherwise ``text``, made for people."""
    if as_json:
        emit(result, as_json)
    else:
        click.echo(text)


config_option = click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                             help="JSON or YAML file of config overrides (flags win over it).")
device_option = click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None,
                             help="Default: cuda when available.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object as the last line.")
metrics_out_option = click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
                                  help="Also write metrics.json here.")


def preset_option(kind: str, default: str, help: str | None = None, resolved: bool = False) -> Callable:
    """``--preset``, with the choices of the registry's presets of ``kind`` (``"ae"`` or ``"dit"``). With
    ``resolved`` (a training command) it is None when not given, so that the config's resolution knows
    whether it was named; the help shows ``default`` all the same."""
    if resolved:
        return click.option("--preset", type=click.Choice(preset_names(kind)), default=None,
                            help=f"{help + ' ' if help else ''}[default: {default}]")
    return click.option("--preset", type=click.Choice(preset_names(kind)), default=default, show_default=True,
                        help=help)


teacher_weights_option = click.option(
    "--teacher-weights", type=click.Path(path_type=Path), default=None,
    help="DINOv3 weights (.pth/.safetensors, timm or Meta names); overrides the file a checkpoint names. "
         "Without any: a random ViT, and the numbers are not DINO-SAE's.")
workers_option = click.option("--num-workers", type=click.IntRange(0), default=2, show_default=True,
                              help="Data loader processes.")


def folder_options(command: Callable) -> Callable:
    """``--data``, ``--batch-size`` and ``--limit``: the image folder that ``reconstruct`` and ``eval recon`` read."""
    for option in reversed((
            click.option("--data", required=True, type=click.Path(path_type=Path)),
            click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True),
            click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N images."))):
        command = option(command)
    return command


resume_option = click.option(
    "--resume", type=click.Choice([m for m in RESUME_MODES if m]), is_flag=False, flag_value="latest", default=None,
    help="Continue the run in --out from its latest complete checkpoint. 'auto': continue if it has one, else "
         "start it (one command for a job's first start and every requeue).")
print_config_option = click.option(
    "--print-config", is_flag=True,
    help="Print the resolved configuration, with where each field came from, and exit without training.")
grad_accum_option = click.option(
    "--grad-accum", type=click.IntRange(1), default=None,
    help="Micro-batches per step: --batch-size stays the global batch, memory is that of one micro-batch.")
tf32_option = click.option("--tf32/--no-tf32", default=None,
                           help="TF32 matmuls and convolutions on CUDA (default: on).")
override_option = click.option(
    "--override", is_flag=True,
    help="With --resume: continue with flags or data that differ from the run's (otherwise refused, listing them).")


def ckpt_option(help: str = "Autoencoder run directory, checkpoint, or official release file.") -> Callable:
    return click.option("--ckpt", required=True, type=click.Path(path_type=Path), help=help)


recipe_option = click.option(
    "--recipe", type=click.Choice(RECIPES), default=None,
    help="The paper version's settings (dinosae/config/recipes): dino-sae (v1 and the official release; this "
         "toolkit's defaults) or hae (v2). A --config file and flags override them. [default: dino-sae]")
