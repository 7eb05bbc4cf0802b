"""Shared by the test files that run the CLI in this process: ``seqssm ARGS`` through the console script's
entry point (``seqssm.cli.main``), minus the seconds of imports a subprocess costs."""

from __future__ import annotations

import sys

import pytest


def run_cli(args: list, capsys, monkeypatch) -> tuple[int, str]:
    """(exit code, stderr) of ``seqssm ARGS``."""
    from seqssm import cli

    monkeypatch.setattr(sys, "argv", ["seqssm", *map(str, args)])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    return exit_.value.code, capsys.readouterr().err
