"""The package surface: public names, import cost, and the CLI shell."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

import mil_crcrs
from cli.main import COMMANDS, cli


def test_every_public_name_resolves():
    for name in mil_crcrs.__all__:
        assert getattr(mil_crcrs, name) is not None, name


def test_importing_the_package_leaves_torch_for_first_use():
    code = "import sys, mil_crcrs; print('torch' in sys.modules, 'sksurv' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_help_lists_every_command():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_name"):
        mil_crcrs.no_such_name  # noqa: B018
