"""Typer commands generated from job configs: each option is the config field (``seqssm.options``).

``config_command(ConfigA[, ConfigB...], extra=...)`` decorates a body ``body(opts, **extra_values)`` and
returns the typer command function (registered with ``app.command(epilog=...)(fn)``). The command's
parameters are the CLI fields of the configs, arguments first, then ``out``, then the options in declaration
order (a field
several configs share must have one default, checked here; its help is the first one given), then the
``extra`` parameters: command-line-only switches, each documented where it is declared. ``opts`` is an
:class:`Opts` of the parsed field values (paths as ``str``); the body builds its config with
``opts.make(Config, **more)`` and calls the job. The typer function keeps the configs as ``__configs__``
and the extra names as ``__extra__``, which ``tests/test_cli_options.py`` reads to check that every option
is exactly one field, with the field's default.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from seqssm.options import option_meta, pick


class Opts(dict):
    """The parsed option values of one command line, by field name."""

    def make(self, cls: type, /, **changes: Any) -> Any:
        """``cls`` from the values of its fields here (fields not on the command line keep their default)."""
        return pick(cls, self, **changes)


def _optional(tp: Any) -> bool:
    return type(None) in typing.get_args(tp)


def cli_fields(*configs: type) -> dict[str, tuple[type, dataclasses.Field, Any, dict]]:
    """name -> (owning config, field, resolved type, metadata) of the command-line fields of ``configs``.

    Raises TypeError when two configs declare one name with different defaults (one flag, one default)."""
    out: dict[str, tuple[type, dataclasses.Field, Any, dict]] = {}
    for cls in configs:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            meta = option_meta(cls, f.name)
            if not f.init or not meta["cli"]:
                continue
            if f.name in out:
                first_cls, first, _, first_meta = out[f.name]
                if first.default != f.default:
                    raise TypeError(f"{f.name}: {first_cls.__name__} has default {first.default!r} but "
                                    f"{cls.__name__} {f.default!r}; one option has one default")
                if not first_meta["help"] and meta["help"]:
                    out[f.name] = (first_cls, first, out[f.name][2], {**first_meta, "help": meta["help"]})
                continue
            out[f.name] = (cls, f, hints[f.name], meta)
    return out


def _parameter(name: str, f: dataclasses.Field, tp: Any, meta: dict) -> tuple[inspect.Parameter, Any]:
    """The typer parameter of one field, and its annotation."""
    if meta["cli_type"] is not None:
        tp = meta["cli_type"]
    elif meta["path"]:
        tp = Path | None if _optional(tp) else Path
    default = f.default
    if default is dataclasses.MISSING:
        default = ...
    elif meta["show"] is not None:
        default = meta["show"](default)
    help_text = meta["help"] or None
    if meta["argument"]:
        info = typer.Argument(default, help=help_text)
    else:
        info = typer.Option(default, *(meta["flags"] or ()), help=help_text)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=tp), tp


def config_command(*configs: type, extra: dict[str, tuple[Any, Any]] | None = None) -> Callable:
    """Turn ``body`` into a typer command function whose options are the fields of ``configs`` (see the
    module doc); register it with ``app.command(epilog=...)(fn)``.

    ``extra``: command-line-only parameters, name -> (annotation, typer.Option/Argument), passed to the
    body as keyword arguments.
    """
    extra = dict(extra or {})

    def decorate(body: Callable) -> Callable:
        fields = cli_fields(*configs)
        clash = set(fields) & set(extra)
        if clash:
            raise TypeError(f"{body.__name__}: extra options {sorted(clash)} are also config fields")
        params, annotations, rank = [], {}, {}
        for field_name, (_, f, tp, meta) in fields.items():
            param, annotations[field_name] = _parameter(field_name, f, tp, meta)
            params.append(param)
            rank[field_name] = meta["position"]
        for extra_name, (tp, info) in extra.items():
            params.append(inspect.Parameter(extra_name, inspect.Parameter.KEYWORD_ONLY, default=info,
                                            annotation=tp))
            annotations[extra_name] = tp
        # Arguments first (click keeps their order), then --out, then the options in declaration order.
        params.sort(key=lambda p: (not isinstance(p.default, typer.models.ArgumentInfo), rank.get(p.name, 0),
                                   p.name != "out"))

        @functools.wraps(body)
        def command(**values: Any) -> Any:
            opts = Opts()
            for field_name, (_, _, _, meta) in fields.items():
                value = values.pop(field_name)
                if meta["parse"] is not None and isinstance(value, str):
                    value = meta["parse"](value)
                elif isinstance(value, Path):
                    value = str(value)
                opts[field_name] = value
            return body(opts, **values)

        command.__signature__ = inspect.Signature(params)
        command.__annotations__ = annotations
        del command.__wrapped__  # typer must read the generated signature, not the body's
        command.__configs__ = configs
        command.__extra__ = tuple(extra)
        return command

    return decorate
