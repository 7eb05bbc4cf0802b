"""One definition per option: every typer option of every command is exactly one config field with the
field's default, and every command-line field of the command's configs is an option (``seqssm.options``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest
import typer
import typer.main

from seqssm.cli import app
from seqssm.cli_build import cli_fields, config_command
from seqssm.errors import InputError
from seqssm.options import Options, option, option_meta, positive

# Commands written by hand (no config): their options are checked by tests/test_cli.py.
HAND_WRITTEN = {"info"}


def _commands():
    for info in app.registered_commands:
        name = info.name or info.callback.__name__.replace("_", "-")
        yield name, info.callback


def test_every_command_is_generated_from_configs():
    names = {name for name, fn in _commands() if hasattr(fn, "__configs__")}
    assert names | HAND_WRITTEN == {name for name, _ in _commands()}


@pytest.mark.parametrize("name", sorted({n for n, fn in _commands() if hasattr(fn, "__configs__")}))
def test_options_are_config_fields_with_their_defaults(name):
    fn = dict(_commands())[name]
    click_command = typer.main.get_command(app).commands[name]
    params = {p.name: p for p in click_command.params}
    fields = cli_fields(*fn.__configs__)
    assert set(params) == set(fields) | set(fn.__extra__), name
    for field_name, (_cls, f, _, meta) in fields.items():
        default = params[field_name].default
        if meta["parse"] is not None and isinstance(default, str):
            default = meta["parse"](default)
        if f.default is dataclasses.MISSING:
            assert params[field_name].required, field_name
        else:
            assert default == f.default or str(default) == str(f.default), (name, field_name, default, f.default)
        assert (params[field_name].help or "") == (meta["help"] or ""), (name, field_name)
    # Every field of the configs is an option or marked as not one (cli=False).
    for cls in fn.__configs__:
        for f in dataclasses.fields(cls):
            assert f.name in params or not option_meta(cls, f.name)["cli"], (name, f.name)


def test_shared_fields_are_defined_once():
    """Pretrain and finetune share their backbone and training fields through two base classes."""
    from seqssm.pipelines.configs_train import BackboneOptions, FinetuneConfig, PretrainConfig, TrainingOptions

    for base in (BackboneOptions, TrainingOptions):
        assert issubclass(PretrainConfig, base) and issubclass(FinetuneConfig, base)
    from seqssm.datasets.input_spec import InputSpec
    from seqssm.pipelines.configs_labelled import PredictConfig, ProbeConfig

    assert all(issubclass(c, InputSpec) for c in (FinetuneConfig, PredictConfig, ProbeConfig))


@dataclass(kw_only=True)
class _Base(Options):
    width: int = option(check=positive, help="Width.")


@dataclass(kw_only=True)
class _Job(_Base):
    out: str = option(flags=("--out", "-o"), path=True)
    width: int = option(3)  # a redeclared field keeps its base's help and check


def test_a_new_field_is_an_option_with_its_check():
    sub = typer.Typer()
    seen = {}

    @config_command(_Job)
    def job(opts):
        seen["config"] = opts.make(_Job)

    sub.command()(job)
    sub.command("other")(lambda: None)
    from typer.testing import CliRunner

    result = CliRunner().invoke(sub, ["job", "--out", "o", "--width", "5"])
    assert result.exit_code == 0, result.output
    assert seen["config"] == _Job(out="o", width=5)
    assert option_meta(_Job, "width")["help"] == "Width."
    with pytest.raises(InputError, match="--width must be positive, got 0"):
        _Job(out="o", width=0)


def test_configs_sharing_a_field_must_share_its_default():
    @dataclass(kw_only=True)
    class Other(Options):
        width: int = option(4)

    with pytest.raises(TypeError, match="one option has one default"):
        config_command(_Job, Other)(lambda opts: None)
