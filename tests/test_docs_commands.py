"""The README stays short, its links and the docs' links resolve, and the documented commands parse.

Commands checked: every line of a ```bash block in README.md and docs/*.md that starts with
``python train.py``, ``python test.py`` or ``python scripts/...`` (backslash continuations joined,
trailing ``# comments`` dropped).

* ``train.py`` / ``test.py``: the option parser alone (``TrainOptions().parse`` /
  ``TestOptions().parse``) on the command's arguments, with ``--checkpoints_dir`` set to a temporary
  folder and ``--gpu_ids -1`` appended (argparse keeps the last value). Nothing is trained and no
  data are read: the parser does not open ``--dataroot``, so a dataroot that does not exist here is
  no reason to skip. The all-capitals placeholders the docs use as values (``NAME``, ``DIR``, ``N``,
  ...) are replaced by ``PLACEHOLDER_VALUES``; any other placeholder form (``<...>``, ``...``,
  ``[optional flags]``, ``$VAR``) makes the command skipped, and every skipped command must be in
  ``SKIPPED_COMMANDS`` with its reason (the list is checked both ways and kept short). A test.py
  command reads the ``opt.json`` written from the documented train.py command of the same
  ``--name`` (as test.py does by default after a real training run); the train.py commands are parsed first.
* ``scripts/X.py``: ``python scripts/X.py --help`` exits 0, each distinct script once (their
  arguments hold paths to official code and data that exist only elsewhere).
"""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC_FILES = [REPO / "README.md"] + sorted((REPO / "docs").glob("*.md"))
README_MAX_LINES = 200

# Values substituted for the docs' all-capitals placeholders ({tmp}: an empty temporary folder).
PLACEHOLDER_VALUES = {
    "NAME": "docs_check",
    "N": "13",
    "DIR": "{tmp}",
    "PHOTOS": "{tmp}",
    "TEST_PHOTOS": "{tmp}",
}

# (file, start of the command, why it is not parsed). Kept explicit: a new command with a placeholder
# the parser cannot take fails test_skipped_commands_are_listed until it is listed here.
SKIPPED_COMMANDS: List[Tuple[str, str, str]] = [
    ("README.md", "python test.py --name NAME --which_epoch latest [",
     "[optional flags] and the MODE placeholder"),
    ("README.md", "python train.py --name NAME --gpu_ids 0,1,2,3 --batchSize 16 ...",
     "'...' stands for the run's other options"),
    ("docs/clusters.md", "python train.py --name NAME --gpu_ids 0,1,2,3 --batchSize 16 ...",
     "'...' stands for the run's other options"),
    ("docs/models.md", "python train.py --name city_hd --preset pix2pixhd --dataset_mode cityscapes",
     "'...' stands for the run's other options"),
    ("docs/pix2pix.md", "python test.py --name facades_pix2pix --dataroot",
     "[--eval] is optional"),
    ("docs/reliability.md", "python train.py --name NAME ... --continue_train [",
     "'...' and [optional flags]"),
    ("docs/sims.md", "python test.py --gpu_ids -1 --name sims_quick --how_many 50 [",
     "[optional flags]"),
]
MAX_SKIPPED = 10

_FENCE = re.compile(r"^```bash[ \t]*\n(.*?)^```", re.S | re.M)
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_CODE_BLOCK = re.compile(r"^```.*?^```", re.S | re.M)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_PLACEHOLDER_TOKEN = re.compile(r"^[A-Z][A-Z_]*$")


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def documented_commands() -> List[Tuple[str, str]]:
    """(file, command) for every python train.py / test.py / scripts/ line of a ```bash block."""
    found = []
    for path in DOC_FILES:
        for block in _FENCE.findall(path.read_text()):
            joined = re.sub(r"\\\n[ \t]*", " ", block)
            for line in joined.split("\n"):
                line = " ".join(line.split())
                if line.startswith(("python train.py", "python test.py", "python scripts/")):
                    # drop a trailing comment ("  # ..."), keep '#' inside arguments
                    line = re.sub(r"\s+#\s.*$", "", line).strip()
                    found.append((_rel(path), line))
    return found


def skip_reason(command: str) -> str:
    """Why a train.py / test.py command cannot be parsed as written ('' if it can)."""
    reasons = []
    if "<" in command:
        reasons.append("<placeholder>")
    if "..." in command:
        reasons.append("'...'")
    if "[" in command:
        reasons.append("[optional flags]")
    if "$" in command:
        reasons.append("environment variable")
    return ", ".join(reasons)


def _entry_point_commands() -> List[Tuple[str, str]]:
    return [(f, c) for f, c in documented_commands()
            if c.startswith(("python train.py", "python test.py"))]


def _listed(file: str, command: str) -> bool:
    return any(file == f and command.startswith(start) for f, start, _ in SKIPPED_COMMANDS)


# --------------------------------------------------------------------------------------------------
# README length and links


def test_readme_is_short():
    lines = (REPO / "README.md").read_text().split("\n")
    count = len(lines) - (1 if lines[-1] == "" else 0)
    assert count < README_MAX_LINES, f"README.md has {count} lines; move detail into docs/"


def _heading_slugs(path: Path) -> set:
    """GitHub's anchors for a markdown file's headings (outside code blocks)."""
    text = _CODE_BLOCK.sub("", path.read_text())
    slugs = set()
    for heading in re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        slugs.add(slug)
    return slugs


def relative_links() -> List[Tuple[Path, str]]:
    links = []
    for path in DOC_FILES:
        text = _INLINE_CODE.sub("", _CODE_BLOCK.sub("", path.read_text()))
        for target in _LINK.findall(text):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            links.append((path, target))
    return links


def test_relative_links_resolve():
    links = relative_links()
    # the README links to the moved topic pages and the screenshots: the check has work to do
    readme_targets = {t for p, t in links if p.name == "README.md"}
    assert {"docs/evaluation.md", "docs/datasets.md", "docs/clusters.md",
            "docs/images/training_page.png", "docs/images/test_page.png"} <= readme_targets
    broken = []
    for path, target in links:
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{_rel(path)}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in _heading_slugs(dest):
            broken.append(f"{_rel(path)}: {target} (no heading with that anchor)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_every_doc_page_is_linked():
    """Each docs/*.md page is reachable from the README or another doc page."""
    linked = {(p.parent / t.partition("#")[0]).resolve() for p, t in relative_links()}
    orphans = [_rel(p) for p in DOC_FILES[1:] if p.resolve() not in linked]
    assert not orphans, f"doc pages no page links to: {orphans}"


# --------------------------------------------------------------------------------------------------
# Commands


def test_commands_are_found():
    commands = documented_commands()
    files = {f for f, _ in commands}
    assert {"README.md", "docs/sims.md", "docs/udgan_depth.md", "docs/models.md"} <= files
    assert any(c.startswith("python train.py --name quickstart") for _, c in commands)
    assert any(c.startswith("python scripts/evaluate.py") for _, c in commands)


def test_skipped_commands_are_listed():
    """Exactly the commands the rules skip are in SKIPPED_COMMANDS, and that list stays short."""
    assert len(SKIPPED_COMMANDS) <= MAX_SKIPPED
    skipped = [(f, c) for f, c in _entry_point_commands() if skip_reason(c)]
    unlisted = [f"{f}: {c}  ({skip_reason(c)})" for f, c in skipped if not _listed(f, c)]
    assert not unlisted, "skipped but not in SKIPPED_COMMANDS:\n" + "\n".join(unlisted)
    stale = [(f, s) for f, s, _ in SKIPPED_COMMANDS
             if not any(f == sf and c.startswith(s) for sf, c in skipped)]
    assert not stale, f"SKIPPED_COMMANDS entries that match no skipped command: {stale}"
    parseable = [(f, c) for f, c in _entry_point_commands() if not skip_reason(c)]
    assert len(parseable) >= 10  # most commands are really parsed


def _arguments(command: str, tmp: Path) -> List[str]:
    args = shlex.split(command)[2:]  # drop "python train.py"
    out = []
    for i, arg in enumerate(args):
        if _PLACEHOLDER_TOKEN.match(arg) and i > 0 and args[i - 1].startswith("--"):
            assert arg in PLACEHOLDER_VALUES, f"unknown placeholder {arg!r} in: {command}"
            arg = PLACEHOLDER_VALUES[arg].format(tmp=tmp)
        out.append(arg)
    return out + ["--checkpoints_dir", str(tmp / "checkpoints"), "--gpu_ids", "-1"]


def test_train_and_test_commands_parse(tmp_path):
    from options.base_options import save_options
    from options.test_options import TestOptions
    from options.train_options import TrainOptions

    commands = [(f, c) for f, c in _entry_point_commands() if not skip_reason(c)]
    # train.py first: their opt.json is what a documented test.py of the same --name reads
    commands.sort(key=lambda fc: not fc[1].startswith("python train.py"))
    failures = []
    parsed = 0
    for file, command in commands:
        args = _arguments(command, tmp_path)
        is_train = command.startswith("python train.py")
        try:
            opt = (TrainOptions() if is_train else TestOptions()).parse(args)
        except SystemExit as e:  # argparse: unknown flag, bad value
            failures.append(f"{file}: {command}\n    argparse exit {e.code}")
            continue
        except Exception as e:  # noqa: BLE001 - report every command, not just the first
            failures.append(f"{file}: {command}\n    {type(e).__name__}: {e}")
            continue
        parsed += 1
        assert opt.isTrain == is_train and opt.gpu_ids == []
        if is_train:
            save_options(opt)  # what train.py writes once its checks passed
    assert not failures, "documented commands that do not parse:\n" + "\n".join(failures)
    assert parsed == len(commands)


def _documented_scripts() -> Dict[str, str]:
    scripts = {}
    for file, command in documented_commands():
        if command.startswith("python scripts/"):
            scripts.setdefault(shlex.split(command)[1], file)
    return scripts


def test_documented_scripts_exist_and_show_help():
    scripts = _documented_scripts()
    assert "scripts/evaluate.py" in scripts and len(scripts) >= 5
    missing = [s for s in scripts if not (REPO / s).is_file()]
    assert not missing, f"documented scripts that do not exist: {missing}"
    procs = {s: subprocess.Popen([sys.executable, s, "--help"], cwd=REPO, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
             for s in scripts}
    failures = []
    for script, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            failures.append(f"{script}: --help did not finish in 120 s")
            continue
        if proc.returncode != 0 or "usage" not in out.lower():
            failures.append(f"{script} (documented in {scripts[script]}): exit {proc.returncode}\n"
                            f"{err.strip()[-600:]}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("sentence", [
    "python -m pytest -q tests",
    "minutes on 2 cores (",
])
def test_readme_keeps_the_test_command(sentence):
    assert sentence in (REPO / "README.md").read_text()
