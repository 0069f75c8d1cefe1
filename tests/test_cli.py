"""The CLI as a user meets it: help, schema, and bad input as one line with a non-zero exit."""

from __future__ import annotations

import json

import pytest

from .conftest import run_cli


def test_help_lists_commands():
    res = run_cli("--help")
    assert res.returncode == 0
    for cmd in ("up", "down", "verify", "status", "plan", "schema"):
        assert cmd in res.stdout


def test_schema_is_json():
    res = run_cli("schema")
    assert res.returncode == 0
    schema = json.loads(res.stdout)
    assert schema["title"] == "LabSpec"


@pytest.mark.parametrize(
    "args",
    [
        ["up", "--pairs", "0"],
        ["up", "--vfs", "-3"],
        ["up", "--name", "UPPER"],
        ["up", "--name", "a" * 40],
        ["up", "--naming", "weird"],
        ["up", "--engine", "vmware"],
        ["up", "--dataplane", "magic"],
        ["up", "--pairs", "many"],
        ["up", "--no-such-flag"],
        ["up", "-f", "/nonexistent/lab.yaml"],
        ["frobnicate"],
    ],
)
def test_bad_input_one_line_nonzero(args):
    res = run_cli(*args)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.strip().splitlines() if line]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("dpulab: error:")


def test_malformed_yaml(tmp_path):
    f = tmp_path / "lab.yaml"
    f.write_text("pairs: [1, 2\n")
    res = run_cli("up", "-f", str(f))
    assert res.returncode == 2 and "not valid YAML" in res.stderr
    f.write_text("pairs: 2\nunknown_key: 1\n")
    res = run_cli("up", "-f", str(f))
    assert res.returncode == 2 and "unknown_key" in res.stderr


def test_not_root_is_one_line():
    """As an unprivileged user `up` refuses in one line (and creates nothing)."""
    import os
    import shutil
    import sys

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root to drop to another user (setpriv)")
    import subprocess

    res = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "dpulab",
         "up", "--name", "nonroot"],
        capture_output=True, text=True, env={**os.environ, "DPULAB_RUN_DIR": "/tmp/dpulab-nonroot-test"},
    )
    assert res.returncode == 2, res.stderr
    assert "needs root" in res.stderr and len(res.stderr.strip().splitlines()) == 1
