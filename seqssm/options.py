"""One definition per option: a job's config field carries its command-line flag, default, help and check.

Every job takes one config dataclass (``PretrainConfig``, ``FinetuneConfig``, ...; see
``seqssm/pipelines/configs_*.py``), the same object for the Python API and the command line. Its fields
are made with :func:`option`, so each option is written once::

    @dataclass(kw_only=True)
    class PretrainConfig(Options):
        window: int = option(1024, help="Training window length in tokens.", check=positive)

``seqssm.cli_build`` turns the fields into the typer command's parameters (``--window``: the field's name
with ``_`` as ``-``; its default; its help), the command parses into the config, and the config's
``__post_init__`` (``Options.__post_init__``) runs every field's ``check`` with the flag's name, for the
command line and the Python API alike. Checks that join several fields stay in the config's own
``__post_init__`` (after ``super().__post_init__()``).

**Adding an option** is adding one field to the config: ``name: type = option(default, help=..., check=...)``.
Nothing else: no typer parameter, no constructor argument. Field metadata:

- ``help``: the ``--help`` text. ``flags``: explicit declarations, e.g. ``("--out", "-o")`` (default: the
  field's name; a bool then gets ``--x/--no-x``, while ``flags=("--x",)`` makes a plain switch).
- ``check``: ``(flag, value) -> None`` raising :class:`InputError`; the ones below skip ``None`` (not given).
- ``path``: the command line takes a path (typer's ``Path``), the config keeps ``str``.
- ``argument``: a positional argument instead of an option; ``position`` orders the arguments (default 0;
  equal positions keep declaration order), for a redeclared field that must come later.
- ``cli=False``: not on the command line (set by the command from other options, or Python only).
- ``cli_type`` / ``parse`` / ``show``: the command line takes another type (``parse(text) -> value``;
  ``show(default) -> text``, the command line's default), e.g. ``--split 0.8,0.1,0.1`` for a tuple.

Shared fields live in small base dataclasses (``InputSpec``, ``BackboneOptions``, ``TrainingOptions``) that
the job configs inherit; a job that needs another default redeclares the field with :func:`option` giving
only what differs (the rest, help and check included, is inherited: :func:`option_meta`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import MISSING
from typing import Any

from seqssm.errors import InputError, did_you_mean

Check = Callable[[str, Any], None]
_KEY = "seqssm.option"
_UNSET = object()


def option(default: Any = MISSING, *, help: str | None = None, flags: tuple[str, ...] | None = None,
           check: Check | None = None, path: bool | None = None, argument: bool | None = None,
           cli: bool | None = None, cli_type: Any = None, parse: Callable[[str], Any] | None = None,
           show: Callable[[Any], str] | None = None, position: int | None = None) -> Any:
    """A dataclass field with its option metadata (None: not given here, inherited or the default)."""
    given = {"help": help, "flags": flags, "check": check, "path": path, "argument": argument, "cli": cli,
             "cli_type": cli_type, "parse": parse, "show": show, "position": position}
    meta = {key: value for key, value in given.items() if value is not None}
    return dataclasses.field(default=default, metadata={_KEY: meta})


_DEFAULTS = {"help": "", "flags": None, "check": None, "path": False, "argument": False, "cli": True,
             "cli_type": None, "parse": None, "show": None, "position": 0}


def option_meta(cls: type, name: str) -> dict[str, Any]:
    """The merged metadata of field ``name`` of ``cls``: for each key, the nearest class in the MRO that
    gave it (so a redeclared field inherits its help and check), else the default."""
    merged: dict[str, Any] = {}
    for klass in cls.__mro__:
        f = getattr(klass, "__dataclass_fields__", {}).get(name)
        if f is None:
            continue
        for key, value in f.metadata.get(_KEY, {}).items():
            merged.setdefault(key, value)
    return {**_DEFAULTS, **merged}


def flag_of(cls: type, name: str) -> str:
    """The flag a message names for field ``name``: its first declaration, else ``--name-with-dashes``."""
    flags = option_meta(cls, name)["flags"]
    return flags[0] if flags else "--" + name.replace("_", "-")


@dataclasses.dataclass(kw_only=True)
class Options:
    """Base of every job config: runs each field's ``check`` on construction."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            check = option_meta(type(self), f.name)["check"]
            if check is not None:
                check(flag_of(type(self), f.name), getattr(self, f.name))


def config_fields(cls: type) -> dict[str, Any]:
    """Field name -> default (MISSING when required) of a config class, in declaration order."""
    return {f.name: f.default for f in dataclasses.fields(cls) if f.init}


def pick(cls: type, values_from: Any, /, **changes: Any) -> Any:
    """``cls`` built from the same-named fields of ``values_from`` (an object or a dict), with ``changes``."""
    get = values_from.get if isinstance(values_from, dict) else (lambda n, d: getattr(values_from, n, d))
    values = {n: get(n, _UNSET) for n in config_fields(cls)}
    values = {n: v for n, v in values.items() if v is not _UNSET}
    return cls(**{**values, **changes})


# ---------------------------------------------------------------------------------------------- checks
# Each takes (flag, value); None means "not given" and passes.

def positive(flag: str, value: float | None) -> None:
    if value is not None and not value > 0:
        raise InputError(f"{flag} must be positive, got {value:g}")


def zero_or_more(flag: str, value: float | None) -> None:
    if value is not None and not value >= 0:
        raise InputError(f"{flag} must be zero or more, got {value:g}")


def positive_int(flag: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise InputError(f"{flag} must be a positive integer, got {value!r}")


def seed_value(flag: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise InputError(f"{flag} must be a non-negative integer, got {value!r}")


def between_0_and_1(flag: str, value: float | None) -> None:
    if value is not None and not 0 < value < 1:
        raise InputError(f"{flag} must be between 0 and 1, got {value}")


def one_of(*choices: str) -> Check:
    """A check that the value is one of ``choices`` (with a did-you-mean suggestion)."""
    def check(flag: str, value: str | None) -> None:
        if value is not None and value not in choices:
            raise InputError(f"{flag} {value!r} is not one of {', '.join(choices)}{did_you_mean(value, choices)}")
    return check


def one_of_ints(*choices: int) -> Check:
    """A check that an integer option is one of ``choices``."""
    def check(flag: str, value: int | None) -> None:
        if value is not None and value not in choices:
            raise InputError(f"{flag} must be one of {', '.join(map(str, choices))}, got {value!r}")
    return check


def at_least(low: int) -> Check:
    """A check that the value is >= ``low``."""
    def check(flag: str, value: float | None) -> None:
        if value is not None and value < low:
            raise InputError(f"{flag} must be at least {low}, got {value}")
    return check


# ------------------------------------------------------------------------------------ fields of every job

def overwrite_option() -> Any:
    """The one --overwrite field, for every job that writes."""
    return option(False, flags=("--overwrite",), help=(
        "Replace outputs of an earlier run at --out (each only once its new version is complete); without it an "
        "existing output is an error. A file never replaces a folder (nor a folder a file), and no output ever "
        "replaces an input."))


def resume_option() -> Any:
    """The one --resume field, for the training jobs."""
    return option(False, flags=("--resume",), help=(
        "Continue the run in --out from its last saved training state (OUT/trainer_state: written with every "
        "checkpoint, and on SIGTERM or Ctrl-C) exactly as if it had not stopped; give the options it was "
        "started with. train_log.tsv is appended to."))


def device_option() -> Any:
    """The one --device field."""
    return option("auto", help="auto, cpu, cuda or cuda:N.")


def out_option(help: str, default: Any = MISSING) -> Any:
    """An --out / -o field (a path; required unless ``default``)."""
    return option(default, flags=("--out", "-o"), path=True, help=help)
