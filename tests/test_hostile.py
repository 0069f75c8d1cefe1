"""Hostile input: any lab file or flag either works or gives one clear line on stderr and a
non-zero exit, never a traceback. Property-based (hypothesis), driving `dpulab.cli.main`
in-process; nothing is brought up: whatever would change the machine is replaced by a
stub that only records that the input got through. bench/reliability.py runs the same
property with many more examples."""

from __future__ import annotations

import atexit
import io
import os
import re
import shutil
import sys
import tempfile
from contextlib import ExitStack, redirect_stderr, redirect_stdout
from pathlib import Path
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dpulab.errors import DpulabError
from dpulab.spec import LAB_NAME_PATTERN

SRC = Path(__file__).resolve().parents[1] / "src" / "dpulab"


class Reached(DpulabError):
    """Raised by the stubs: the input got past parsing and validation."""

    exit_code = 99


def _reached(*_a, **_k):
    raise Reached("reached")


def _small_plan(real):
    """`plan` for real (it only reads the kernel), unless the lab exists or is large."""

    def plan_for(spec):
        if spec.pairs * spec.vfs > 256 or Path(f"/run/dpulab/{spec.name}").exists() or os.geteuid() != 0:
            raise Reached("reached")
        return real(spec)

    return plan_for


def run_inprocess(argv: list[str]) -> tuple[int, str, str]:
    """`dpulab <argv>` in this process: (exit code, stdout, stderr). Every entry point that
    would change the machine is stubbed, so the fuzz brings nothing up."""
    from dpulab import cli, lab

    out, err = io.StringIO(), io.StringIO()
    with ExitStack() as stack:
        for target in (
            "dpulab.lab.up", "dpulab.lab.down", "dpulab.lab.verify", "dpulab.lab.status",
            "dpulab.pods.add", "dpulab.pods.delete", "dpulab.pods.listing",
            "dpulab.gc.gc", "dpulab.representor.resolve",
        ):
            stack.enter_context(mock.patch(target, _reached))
        stack.enter_context(mock.patch("dpulab.lab.plan_for", _small_plan(lab.plan_for)))
        stack.enter_context(mock.patch.object(sys, "argv", ["dpulab", *argv]))
        stack.enter_context(redirect_stdout(out))
        stack.enter_context(redirect_stderr(err))
        try:
            cli.main()
            rc = 0
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return rc, out.getvalue(), err.getvalue()


def check_outcome(argv: list[str], rc: int, stdout: str, stderr: str) -> str:
    """The property; returns 'accepted' or 'refused' (raises AssertionError otherwise)."""
    assert "Traceback" not in stderr and "Traceback" not in stdout, (argv, stderr)
    assert rc != 70, f"internal error for {argv!r}: {stderr}"
    if rc in (0, 99):
        return "accepted"
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"{argv!r}: {len(lines)} lines on stderr: {stderr!r}"
    assert lines[0].startswith("dpulab: "), (argv, lines[0])
    return "refused"


# -- strategies --------------------------------------------------------------------------
# argv strings can hold anything but NUL
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)
NAMES = st.one_of(
    st.from_regex(LAB_NAME_PATTERN, fullmatch=True),
    TEXT,
    st.sampled_from(["..", "../../etc", "/", "", "a/b", "dpu\n", "x" * 25, "-a", "A", "lab\x1b[31m", "a b", "é"]),
)
NUMBERS = st.one_of(
    st.integers(-3, 80).map(str), st.integers().map(str),
    st.sampled_from(["many", "1e3", "0x10", "", " 2", "٣", "9" * 5000, "-0", "+4"]),
)
CHOICES = st.one_of(TEXT, st.sampled_from(["seed", "ovnk", "netns", "none", "ovn", "geneve", "auto", "peer"]))
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), TEXT)
KEYS = st.one_of(TEXT, st.sampled_from(
    ["name", "pairs", "vfs", "naming", "names", "engine", "dataplane", "cluster", "ovn", "containers", "impairments",
     "vf", "rep", "subnet", "mtu", "pod_cidr", "node_prefix", "pod_mtu", "encap", "mgmt_vf"]
))
VALUES = st.recursive(SCALARS, lambda c: st.lists(c, max_size=4) | st.dictionaries(KEYS, c, max_size=4), max_leaves=12)
SPEC_DICTS = st.dictionaries(KEYS, VALUES, max_size=6)
HOSTILE_FILES = st.sampled_from([
    b"pairs: [1, 2\n",
    b"- just\n- a list\n",
    b"\xff\xfe\x00garbage",
    b"a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b]\n"
    b"containers: {run_options: *c}\n",
    b"pairs: " + b"9" * 5000 + b"\n",
    b"names: " + b"[" * 3000 + b"\n",
    b"? [a, b]\n: 1\n",
    b"name: !!python/object/apply:os.system ['true']\n",
    b"\"a\\nb\": 1\n",
    b"pairs: 2\t# tab\n",
    b"",
])


@st.composite
def lab_files(draw) -> bytes:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(HOSTILE_FILES)
    if kind == 1:
        return draw(TEXT).encode()
    spec = draw(SPEC_DICTS)
    if kind == 3:  # mostly valid, one field hostile
        spec = {"name": draw(st.from_regex(LAB_NAME_PATTERN, fullmatch=True)), "pairs": 1, "vfs": 2, "dataplane": "none", **spec}
    return yaml.safe_dump(spec, allow_unicode=True).encode()


SPEC_FLAGS = st.lists(
    st.one_of(
        st.tuples(st.just("--name"), NAMES), st.tuples(st.just("--pairs"), NUMBERS), st.tuples(st.just("--vfs"), NUMBERS),
        st.tuples(st.just("--naming"), CHOICES), st.tuples(st.just("--engine"), CHOICES.filter(lambda v: v not in ("docker", "podman", "kind"))),
        st.tuples(st.just("--dataplane"), CHOICES), st.tuples(TEXT.filter(lambda v: v.startswith("-")), TEXT),
    ),
    max_size=5,
).map(lambda pairs: [x for p in pairs for x in p])


@st.composite
def argvs(draw, lab_file: Path) -> list[str]:
    """A command line: a real command with hostile flags, or garbage."""
    name = ["--name", draw(NAMES)] if draw(st.booleans()) else []
    cmd = draw(st.sampled_from(["up", "plan", "down", "verify", "status", "pod add", "pod del", "pod list", "rep resolve", "logs", "gc", "schema", "junk"]))
    if cmd in ("up", "plan"):
        argv = [cmd, *draw(SPEC_FLAGS)]
        if draw(st.booleans()):
            lab_file.write_bytes(draw(lab_files()))
            argv += ["-f", str(lab_file)]
        if cmd == "plan" and draw(st.booleans()):
            argv.append("--json")
        return argv
    if cmd in ("down", "verify", "status", "pod list"):
        return [*cmd.split(), *name, *draw(st.lists(st.sampled_from(["--json", "--traffic", "-q", "--bogus"]), max_size=2))]
    if cmd == "pod add":
        return ["pod", "add", draw(TEXT), draw(NAMES), "--vf", draw(NUMBERS), "--namespace", draw(NAMES), *name]
    if cmd == "pod del":
        return ["pod", "del", draw(NAMES), *name]
    if cmd == "rep resolve":
        return ["rep", "resolve", draw(TEXT), "--vf", draw(NUMBERS), "--pf", draw(NUMBERS), "--by", draw(CHOICES), *name]
    if cmd == "logs":
        return ["logs", draw(TEXT), draw(TEXT), "--lines", draw(NUMBERS), *name]
    if cmd == "gc":
        return ["gc", "--dry-run", *[x for n in draw(st.lists(NAMES, max_size=2)) for x in ("--lab", n)]]
    if cmd == "schema":
        return ["schema"]
    return draw(st.lists(TEXT, max_size=4))


_TMP = Path(tempfile.mkdtemp(prefix="dpulab-fuzz-"))  # hypothesis draws into one file, reused
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)
LAB_FILE = _TMP / "lab.yaml"


@settings(max_examples=int(os.environ.get("DPULAB_FUZZ_EXAMPLES", "120")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(data=st.data())
def test_any_command_line_works_or_fails_in_one_line(data):
    argv = data.draw(argvs(LAB_FILE))
    rc, stdout, stderr = run_inprocess(argv)
    check_outcome(argv, rc, stdout, stderr)


@settings(max_examples=int(os.environ.get("DPULAB_FUZZ_EXAMPLES", "120")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(content=lab_files())
def test_any_lab_file_loads_or_is_refused_in_one_line(content):
    from dpulab.errors import InputError
    from dpulab.spec import load_spec

    LAB_FILE.write_bytes(content)
    try:
        spec = load_spec(LAB_FILE)  # anything but InputError escaping is the bug this looks for
    except InputError:
        return
    assert re.fullmatch(LAB_NAME_PATTERN, spec.name)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["down", "--name", "../../etc"], "not a lab name"),
        (["verify", "--name", "a\nb"], "not a lab name"),
        (["up", "--name", "../x"], "not a lab name"),
        (["status", "--name", ""], "not a lab name"),
        (["gc", "--dry-run", "--lab", "/"], "not a lab name"),
        (["up", "-f", "/dev/zero"], "larger than"),
        (["up", "-f", "/"], "Is a directory"),
    ],
)
def test_hostile_names_and_files_refused_before_anything(argv, words):
    rc, _, stderr = run_inprocess(argv)
    assert rc == 2 and words in stderr and len(stderr.strip().splitlines()) == 1, stderr


def test_error_with_newline_in_it_is_one_line():
    f = _TMP / "nl.yaml"
    f.write_bytes(b'"a\\nb\\rc\\u2028d": 1\n')
    rc, _, stderr = run_inprocess(["plan", "-f", str(f)])
    assert rc == 2 and len(stderr.strip().splitlines()) == 1 and "a b" in stderr, stderr


def test_names_never_lead_outside_the_run_directory():
    from dpulab.errors import InputError
    from dpulab.state import run_dir

    for bad in ("..", "../etc", "a/b", "", "/", ".", "x\x00y", "A", "a" * 21):
        with pytest.raises(InputError):
            run_dir(bad)
    assert run_dir("ok-1").name == "ok-1"


def test_no_shell_anywhere_in_the_source():
    """Every subprocess is an argv list: no shell=True, os.system, os.popen, sh -c."""
    bad = re.compile(r"shell\s*=\s*True|os\.system\(|os\.popen\(|subprocess\.getoutput|subprocess\.getstatusoutput|"
                     r"[\"'](?:ba)?sh[\"']\s*,\s*[\"']-c[\"']")
    hits = []
    for path in sorted(SRC.rglob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if bad.search(line):
                hits.append(f"{path.relative_to(SRC)}:{n}: {line.strip()}")
    assert not hits, hits
