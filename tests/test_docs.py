"""The documentation cannot drift from the code.

- Generated pages (CLI reference, preset fields, common errors, API index, catalog tables) and the
  SVG screenshots equal what their generators in `scripts/` write now.
- Every `TunewizError` message raised in `tunewiz/` has an entry in the common-errors page (with readable
  stand-ins, a fix line, in the reviewed order) and in the error reference.
- Docstring coverage of the public API is at least 95%.
- The shell commands in README.md and docs/ marked `<!-- docs-test -->` run on the tiny model.
"""

from __future__ import annotations

import ast
import re
import shlex
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import error_advice  # noqa: E402
import gen_api_reference  # noqa: E402
import gen_docs  # noqa: E402
import gen_error_reference  # noqa: E402
import render_screenshots  # noqa: E402

from tunewiz.cli import app  # noqa: E402

MIN_DOCSTRING_COVERAGE = 0.95
MARKER = "<!-- docs-test -->"
QUICKSTART_COMMANDS = (
    "bash scripts/setup.sh && .venv/bin/tunewiz train presets/tiny-lora.yaml",
    "bash scripts/setup.sh --dev && .venv/bin/python -m pytest -q",
)
# The commands the docs show, counted when this test was written; the docs only grow.
MIN_DOC_COMMANDS = 20


# ---- generated files ---------------------------------------------------------------------------


@pytest.mark.parametrize("path,render", gen_docs.GENERATED, ids=lambda v: getattr(v, "name", ""))
def test_generated_file_is_up_to_date(path: Path, render) -> None:  # noqa: ANN001
    assert path.is_file(), f"{path} is missing; run `python scripts/gen_docs.py`"
    assert path.read_text(encoding="utf-8") == render(), f"{path} is stale; run `python scripts/gen_docs.py`"


@pytest.mark.parametrize("path,render", render_screenshots.SCREENSHOTS, ids=lambda v: getattr(v, "name", ""))
def test_screenshot_is_up_to_date(path: Path, render) -> None:  # noqa: ANN001
    assert path.read_text(encoding="utf-8") == render(), (
        f"{path} is stale; run `python scripts/render_screenshots.py`"
    )


def test_readme_keeps_the_quickstart_contract() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quickstart = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    for command in QUICKSTART_COMMANDS:
        assert f"```bash\n{command}\n```" in quickstart


# ---- errors ------------------------------------------------------------------------------------


def _tunewiz_error_calls() -> int:
    count = 0
    for path in (ROOT / "tunewiz").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", getattr(node.func, "attr", None)) == "TunewizError"
            ):
                count += 1
    return count


def test_every_tunewiz_error_has_an_entry_in_common_errors_and_the_reference() -> None:
    entries = gen_error_reference.extract()
    # Every call yields at least one entry (identical messages share one), so the pages cover them all.
    assert len(entries) >= 0.9 * _tunewiz_error_calls() > 100
    unplaced = []
    for entry in entries:
        try:
            gen_error_reference.situation(entry)
        except LookupError as exc:
            unplaced.append(str(exc))
    assert not unplaced, "\n".join(sorted(set(unplaced)))
    known = gen_error_reference.constants()
    shown = {  # each page's form of every message: stand-ins for users, raw templates for developers
        gen_error_reference.TARGET: lambda e: (
            "" if gen_error_reference.relayed(e) else gen_error_reference.user_message(e, known)
        ),
        gen_error_reference.REFERENCE: lambda e: gen_error_reference.for_developers(e.message),
    }
    for path, form in shown.items():
        page = path.read_text(encoding="utf-8")
        missing = [f"{e.file} ({e.function}): {e.message}" for e in entries if form(e) not in page]
        assert not missing, f"no entry in {path.relative_to(ROOT)} for:\n" + "\n".join(missing)


def test_common_errors_is_for_users_and_the_reference_for_developers() -> None:
    """The user page is grouped by situation, each with what it means and what to do, and leaves out
    the source locations and the hints it cannot show; the reference has both."""
    page = gen_error_reference.TARGET.read_text(encoding="utf-8")
    reference = gen_error_reference.REFERENCE.read_text(encoding="utf-8")
    sections = re.findall(r"^## (.+)$", page, flags=re.M)
    assert sections == [s.title for s in gen_error_reference.SITUATIONS]
    for s in gen_error_reference.SITUATIONS:
        body = page.split(f"## {s.title}\n", 1)[1].split("\n## ", 1)[0]
        assert "**What it means.**" in body and "**What to do.**" in body and "```text\nerror: " in body
    assert "Raised by" not in page and not re.search(r"`tunewiz/[\w/]+\.py`", page)
    assert gen_error_reference.COMPUTED not in page and gen_error_reference.COMPUTED in reference
    assert (
        "`tunewiz/train/launcher.py`" in reference
        and "reference/errors.md" in (ROOT / "mkdocs.yml").read_text()
    )


def _section(page: str, title: str) -> str:
    return page.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_common_errors_reads_as_a_user_meets_it() -> None:
    """No raw placeholder or run-time choice on the user page; every message block has its own fix line;
    each situation lists what users meet first before housekeeping; the messages that are not
    TunewizErrors are there, and still printed by the file named."""
    page = gen_error_reference.TARGET.read_text(encoding="utf-8")
    raw = [line for line in page.splitlines() if re.search(r"[‹›⟦⟧¦]", line)]
    assert not raw, "raw placeholders on the user page:\n" + "\n".join(raw)
    blocks = re.findall(r"^```text\n.*?^```\n\n([^\n]*)$", page, flags=re.M | re.S)
    assert page.count("```text\n") == page.count("**To fix:** ") > 200
    assert len(blocks) == page.count("```text\n") and all(line.startswith("**To fix:** ") for line in blocks)
    data = _section(page, next(s.title for s in gen_error_reference.SITUATIONS if s.key == "data"))
    firsts = ["data file `data.csv` does not exist", "is not UTF-8", "cannot tell the format", "--older-than"]
    assert [data.index(text) for text in firsts] == sorted(data.index(text) for text in firsts)
    for printed in error_advice.PRINTED:
        assert printed.source in (ROOT / printed.file).read_text(encoding="utf-8"), printed.file
        assert printed.shown in page and printed.shown in gen_error_reference.REFERENCE.read_text("utf-8")
    usage = _section(page, "Typing a command") + _section(page, "Presets, `--set` and `tunewiz init`")
    for text in ("error: missing option", "error: no such option", "did you mean", "a list of strings"):
        assert text in usage
    run = _section(page, "Starting, watching and stopping a run")
    assert "error: rank 0 failed" in run and "wrote no events" in run


def test_printed_messages_are_what_the_command_line_prints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The usage errors the user page shows with realistic values are the lines tunewiz prints for them
    (run in an empty directory: a command that no longer fails writes nothing into the checkout)."""
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for printed in (p for p in error_advice.PRINTED if p.argv):
        output = ""
        for argv in printed.argv:
            result = runner.invoke(app, list(argv), env={"NO_COLOR": "1", "COLUMNS": "100"})
            assert result.exit_code == 2, (argv, result.output)
            output += result.output
        missing = [line for line in printed.shown.splitlines() if line and line not in output.splitlines()]
        assert not missing, f"{printed.argv} does not print {missing}:\n{output}"


def test_error_page_tables_name_existing_messages() -> None:
    """Each fragment that orders, explains or fills in a message still occurs in one, so a reworded
    message is noticed instead of silently losing its place or its advice."""
    entries = gen_error_reference.extract()
    texts = [gen_error_reference.keyed(gen_error_reference.situation(e).key, e.message) for e in entries]
    texts += [gen_error_reference.keyed(p.situation, p.shown) for p in error_advice.PRINTED]
    fragments = [f for order in error_advice.ORDER.values() for f in order if f != error_advice.REST]
    fragments += [*error_advice.ADVICE, *error_advice.CONTEXT_STAND_INS]
    stale = [f for f in fragments if not any(f in text for text in texts)]
    assert not stale, "fragments in scripts/error_advice.py that match no message: " + ", ".join(stale)
    keys = {s.key for s in gen_error_reference.SITUATIONS}
    assert set(error_advice.ORDER) | set(error_advice.SITUATION_STAND_INS) <= keys
    assert {p.situation for p in error_advice.PRINTED} <= keys


def test_an_error_in_a_new_package_asks_for_its_situation() -> None:
    entry = gen_error_reference.ErrorEntry("tunewiz/newpkg/thing.py", "f", "bad thing", None, 2, 1)
    with pytest.raises(LookupError, match="add its package or file to MODULE_SITUATIONS"):
        gen_error_reference.situation(entry)
    install = gen_error_reference.ErrorEntry("tunewiz/newpkg/x.py", "f", "needs y", "`pip install y`", 2, 1)
    assert gen_error_reference.situation(install).key == "install"


def test_error_templates_show_placeholders() -> None:
    call = (
        ast.parse(
            'TunewizError(f"unknown model `{key}`{did_you_mean(key, names)}: x" + (" (more)" if n else ""), '
            'hint=f"run `tunewiz download {ctx.repo_id}`")'
        )
        .body[0]
        .value
    )
    message = gen_error_reference.template(call.args[0])
    assert gen_error_reference.for_developers(message) == "unknown model `‹key›`‹did_you_mean›: x[ (more)]"
    assert gen_error_reference.template(call.keywords[0].value) == "run `tunewiz download ‹repo_id›`"
    names = {"key": "llama-3-8", "did_you_mean": " (did you mean `llama-3.1-8b`?)"}
    assert (
        gen_error_reference.for_users(message, {}, names)
        == "unknown model `llama-3-8` (did you mean `llama-3.1-8b`?): x (more)"
    )
    plural = ast.parse("f\"{n} {'is' if n == 1 else 'are'} {LIMIT} {max_len}\"").body[0].value
    shown = gen_error_reference.for_users(gen_error_reference.template(plural), {"LIMIT": "8"}, {})
    assert shown == "N is 8 MAX_LEN"


# ---- docstrings --------------------------------------------------------------------------------


def _documentable(tree: ast.Module) -> list[tuple[str, bool]]:
    """(name, has docstring) for the module and its public classes, functions and methods."""
    found = [("<module>", ast.get_docstring(tree) is not None)]

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(
                node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
            ) and not node.name.startswith("_"):
                found.append((prefix + node.name, ast.get_docstring(node) is not None))
                if isinstance(node, ast.ClassDef):
                    visit(node.body, f"{prefix}{node.name}.")

    visit(tree.body, "")
    return found


def test_public_api_docstring_coverage() -> None:
    modules = gen_api_reference.public_modules()
    assert len(modules) >= 40 and "tunewiz.plan.memory" in modules
    results = []
    for name in modules:
        path = ROOT / Path(*name.split("."))
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        items = _documentable(ast.parse(path.read_text(encoding="utf-8")))
        if path.name == "__init__.py":
            items = items[1:] if not items[0][1] else items  # a package's own docstring is optional
        results += [(f"{name}.{item}", ok) for item, ok in items]
    coverage = sum(ok for _, ok in results) / len(results)
    undocumented = [name for name, ok in results if not ok]
    assert coverage >= MIN_DOCSTRING_COVERAGE, f"{coverage:.1%} documented; missing:\n" + "\n".join(
        undocumented
    )


def test_citation_metadata() -> None:
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert citation["cff-version"] == "1.2.0"
    assert citation["title"] == "tunewiz" and citation["license"] == "BSD-3-Clause"
    version = re.search(r'^version = "(.+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE).group(1)
    assert citation["version"] == version


# ---- commands shown in the docs ----------------------------------------------------------------


def doc_commands() -> list[tuple[str, list[str]]]:
    """(source file, argv after `tunewiz`) of every command in a marked block, first occurrence kept,
    README first, then docs/ pages in name order (so `init` comes before `plan` of its output)."""
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    commands: list[tuple[str, list[str]]] = []
    seen: set[str] = set()
    block = re.compile(re.escape(MARKER) + r"\s*```bash\n(.*?)```", re.DOTALL)
    for path in files:
        for body in block.findall(path.read_text(encoding="utf-8")):
            for line in body.replace("\\\n", " ").splitlines():
                if not line.startswith("tunewiz ") or line in seen:
                    continue
                seen.add(line)
                commands.append((path.relative_to(ROOT).as_posix(), shlex.split(line)[1:]))
    return commands


def cheap(argv: list[str]) -> list[str]:
    """The same command, made cheap: training only plans (`--dry-run`: the session fixture trained
    the run the docs use), evaluation looks at 4 documents per task."""
    if argv[0] == "train" and "--dry-run" not in argv:
        return [*argv, "--dry-run"]
    if argv[0] == "eval":
        if "--limit" in argv:
            at = argv.index("--limit")
            argv = argv[:at] + argv[at + 2 :]
        return [*argv, "--limit", "4"]
    return argv


@pytest.fixture(scope="module")
def docs_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working directory holding `presets/` and `runs/tiny-lora`, trained for two steps."""
    work = tmp_path_factory.mktemp("docs")
    (work / "presets").symlink_to(ROOT / "presets")
    result = _invoke(work, ["train", "presets/tiny-lora.yaml", "--set", "train.max_steps=2", "--no-tui"])
    assert result.exit_code == 0, result.output
    assert (work / "runs" / "tiny-lora" / "final" / "adapter").is_dir()
    return work


def _invoke(cwd: Path, argv: list[str]):  # noqa: ANN202 (typer.testing.Result)
    import os

    old = Path.cwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(app, argv, env={"NO_COLOR": "1", "COLUMNS": "100", "TQDM_DISABLE": "1"})
    finally:
        os.chdir(old)


def test_docs_show_commands() -> None:
    commands = doc_commands()
    assert len(commands) >= MIN_DOC_COMMANDS, commands
    assert {argv[0] for _, argv in commands} >= {
        "train",
        "plan",
        "presets",
        "doctor",
        "chat",
        "eval",
        "resume",
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    "source,argv", doc_commands(), ids=lambda v: " ".join(v) if isinstance(v, list) else v
)
def test_doc_command_runs(docs_workdir: Path, source: str, argv: list[str]) -> None:
    result = _invoke(docs_workdir, cheap(argv))
    assert result.exit_code == 0, (
        f"`tunewiz {shlex.join(argv)}` from {source} failed:\n{result.output}\n{result.exception!r}"
    )
