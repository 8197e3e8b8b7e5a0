"""The repository's own promises: CI runs the README's test command, no file cites a document this repository
does not have, every relative link in the docs leads to a file that exists, and no module of the package reaches
400 lines.

Each check is a function that returns what is wrong (nothing: empty), run on the repository and on a planted
example of its fault, so each is seen to fail when it should. To watch one fail on the repository itself:
change one character of the command under "Install the test dependencies and run the tests" in README.md;
add a line naming one of the absent documents to any file (see ABSENT_DOCUMENTS); or add
``[x](docs/nothing.md)`` to README.md. The matching test then fails and names the fault.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

from tests.support.processes import ROOT
from tests.support.services import unavailable

TEST_COMMAND_INTRO = "Install the test dependencies and run the tests"

# Documents that are not in this repository, so nothing may send a reader to them. The names are built from
# parts, so that this file does not contain them: the scan covers every file, this one included.
ABSENT_DOCUMENTS = tuple(f"{name}.md" for name in ("DESIGN", "PITFALLS", "STYLE"))

MAX_MODULE_LINES = 400  # a module of the package that grows past this is split by what it owns
_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
_INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE_LINK = re.compile(r"^[ \t]{0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)", re.MULTILINE)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


# ---- the checks --------------------------------------------------------------------------------------


def readme_test_command(readme: str) -> str:
    """The command in the fenced block that follows the README's sentence introducing the tests."""
    intro = readme.find(TEST_COMMAND_INTRO)
    assert intro >= 0, f"README.md no longer says {TEST_COMMAND_INTRO!r}"
    block = _FENCE.search(readme, intro)
    assert block, "no fenced block after the README's test sentence"
    lines = [line.strip() for line in block.group(1).splitlines() if line.strip()]
    assert len(lines) == 1, f"the README's test block holds {len(lines)} lines, not one command: {lines}"
    return lines[0]


def runs_command(script: str, command: str) -> bool:
    """Whether ``script`` has ``command`` as a line of its own (a comment quoting it does not count)."""
    return any(line.strip() == command for line in script.splitlines())


def repo_files(root: Path) -> list[str]:
    """The repository's files: tracked, or new and not ignored (so a file not yet added is checked too)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=root,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        unavailable("git", f"cannot list the repository's files: {exc}")
    return sorted({name for name in listed.decode().split("\0") if name and (root / name).is_file()})


def citations(root: Path, files: list[str]) -> dict[str, int]:
    """How often each file names one of ABSENT_DOCUMENTS (any case); files that name none are left out."""
    names = [name.lower().encode() for name in ABSENT_DOCUMENTS]
    found = {}
    for name in files:
        text = (root / name).read_bytes().lower()
        count = sum(text.count(absent) for absent in names)
        if count:
            found[name] = count
    return found


def broken_links(root: Path, document: Path) -> list[str]:
    """The relative links of a Markdown ``document`` that lead to no file of the repository under ``root``.

    Links with a scheme (https:, mailto:) and links within the page (#...) are not files; code (fenced
    blocks, `spans`) holds no links.
    """
    text = document.read_text()
    text = _FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    text = re.sub(r"`[^`\n]*`", "", text)
    broken = []
    for match in [*_INLINE_LINK.finditer(text), *_REFERENCE_LINK.finditer(text)]:
        target = match.group(1).strip("<>")
        if not target or target.startswith("#") or target.startswith("//") or _SCHEME.match(target):
            continue
        path = unquote(re.split(r"[#?]", target, maxsplit=1)[0])
        resolved = (root / path.lstrip("/")) if path.startswith("/") else (document.parent / path)
        resolved = resolved.resolve()
        if not resolved.is_relative_to(root.resolve()) or not resolved.exists():
            line = text.count("\n", 0, match.start()) + 1
            broken.append(f"{document.relative_to(root)}:{line}: {target}")
    return broken


def long_modules(root: Path) -> list[str]:
    """The package's modules of ``MAX_MODULE_LINES`` lines or more, with their length."""
    found = []
    for path in sorted((root / "dynoclock").rglob("*.py")):
        lines = len(path.read_text().splitlines())
        if lines >= MAX_MODULE_LINES:
            found.append(f"{path.relative_to(root)}: {lines} lines")
    return found


def documents(root: Path) -> list[Path]:
    """README.md, docs/*.md and every other Markdown file of the repository."""
    return [root / name for name in repo_files(root) if name.endswith(".md")]


# ---- on the repository -------------------------------------------------------------------------------


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    command = readme_test_command((ROOT / "README.md").read_text())
    assert runs_command((ROOT / ".ci" / "run").read_text(), command), f".ci/run does not run {command!r}"


def test_no_file_cites_a_document_this_repo_does_not_have() -> None:
    found = citations(ROOT, repo_files(ROOT))
    assert found == {}, f"files citing {', '.join(ABSENT_DOCUMENTS)}, which are not in this repository"


def test_every_relative_link_in_the_docs_leads_to_a_file() -> None:
    docs = documents(ROOT)
    assert ROOT / "README.md" in docs
    assert [fault for doc in docs for fault in broken_links(ROOT, doc)] == []


def test_every_module_of_the_package_is_under_400_lines() -> None:
    assert long_modules(ROOT) == []


# ---- each check fails on its fault ---------------------------------------------------------------------


def test_the_command_check_fails_when_ci_runs_another_command() -> None:
    readme = f"{TEST_COMMAND_INTRO}:\n\n```sh\npython -m pytest -x\n```\n"
    assert readme_test_command(readme) == "python -m pytest -x"
    assert not runs_command("#!/bin/sh\npython -m pytest\n# python -m pytest -x\n", "python -m pytest -x")
    assert runs_command("#!/bin/sh\n  python -m pytest -x\n", "python -m pytest -x")


def test_the_citation_check_finds_a_planted_citation(tmp_path: Path) -> None:
    (tmp_path / "clean.py").write_text("# see README.md\n")
    (tmp_path / "cites.py").write_text(f"# see {ABSENT_DOCUMENTS[0]} and {ABSENT_DOCUMENTS[2].lower()}\n")
    assert citations(tmp_path, ["clean.py", "cites.py"]) == {"cites.py": 2}


def test_the_link_check_finds_a_broken_link(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "here.md").write_text("# here\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "See [here](docs/here.md#here), [the web](https://example.com), [above](#here), `[code](gone.md)`.\n"
        "```\n[fenced](gone.md)\n```\n"
        "But [gone](docs/gone.md) and ![picture](img/gone.png) are not there,\n"
        "[outside](../elsewhere.md) is not in the repository, and\n\n[ref]: docs/missing.md\n"
    )
    assert broken_links(tmp_path, readme) == [
        "README.md:5: docs/gone.md",
        "README.md:5: img/gone.png",
        "README.md:6: ../elsewhere.md",
        "README.md:8: docs/missing.md",
    ]


def test_the_module_size_check_finds_a_long_module(tmp_path: Path) -> None:
    (tmp_path / "dynoclock" / "run").mkdir(parents=True)
    (tmp_path / "dynoclock" / "short.py").write_text("x = 1\n" * (MAX_MODULE_LINES - 1))
    (tmp_path / "dynoclock" / "run" / "long.py").write_text("x = 1\n" * MAX_MODULE_LINES)
    assert long_modules(tmp_path) == [f"dynoclock/run/long.py: {MAX_MODULE_LINES} lines"]
