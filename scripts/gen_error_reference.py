"""Generate `docs/tutorials/common-errors.md`: one entry for every `TunewizError` the code raises.

Each `TunewizError(message, hint=...)` call in `tunewiz/` becomes an entry showing the `error:` and
`hint:` lines as the CLI prints them, with the run-time values shown as `‹name›` placeholders. A
message held in a variable is followed to its assignments in the same function; messages built by a
helper are listed in `MESSAGE_BUILDERS`. `tests/test_docs.py` fails when a message in the code has no
entry in the page, so a new error cannot ship undocumented.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tunewiz"
TARGET = ROOT / "docs" / "tutorials" / "common-errors.md"

# (file, function holding `TunewizError(name, ...)`) -> (helper returning (line, message, hint) tuples,
# index of the message in them, index of the hint). presets._explain turns pydantic errors into one.
MESSAGE_BUILDERS: dict[tuple[str, str], tuple[str, int, int]] = {
    ("tunewiz/preset/explain.py", "explain_validation_error"): ("_explain_one", 1, 2),
}

# One section per topic, in reading order: module path prefix -> (title, what these errors have in common).
TOPICS: tuple[tuple[str, str, str], ...] = (
    (
        "tunewiz/preset/files.py",
        "Presets and `--set`",
        "The preset file or a `--set key=value` override is wrong. The message names the file and "
        "line (or the override); `tunewiz presets show NAME --resolved` prints what tunewiz understood, and "
        "[Preset fields](../reference/preset-fields.md) documents every key.",
    ),
    ("tunewiz/preset/explain.py", "Presets and `--set`", ""),
    ("tunewiz/preset/schema.py", "Preset schema", "A value breaks a rule of the schema."),
    (
        "tunewiz/models/catalog.py",
        "Choosing a model",
        "The model name is not in the catalog and not on disk: "
        "`tunewiz plan --list-models` lists the catalog.",
    ),
    ("tunewiz/models/kv_cache.py", "Generation", "The KV cache is full."),
    (
        "tunewiz/models/",
        "Model files",
        "The model directory or checkpoint does not hold what a Llama-family "
        "model needs (`config.json`, `*.safetensors` whose names and shapes match it).",
    ),
    ("tunewiz/text/tokenizer.py", "Tokenizers", "The model's tokenizer files are missing or unreadable."),
    (
        "tunewiz/text/templates.py",
        "Chat templates",
        "The prompt template cannot be applied to the data or model.",
    ),
    (
        "tunewiz/data/",
        "Data",
        "The dataset cannot be read or does not match `data.format`. The message names the file and the row.",
    ),
    (
        "tunewiz/lora/",
        "LoRA adapters",
        "An adapter does not match the model it is applied to, or its files are incomplete.",
    ),
    (
        "tunewiz/models/nf4.py",
        "QLoRA",
        "The 4-bit (NF4) base needs `torchao` (`pip install 'tunewiz[qlora]'`) "
        "and layers whose sizes it can quantize.",
    ),
    ("tunewiz/plan/", "Planning", "The hardware or run description given to the planner is incomplete."),
    ("tunewiz/plan/hardware.py", "Hardware", "What tunewiz could not find out about this machine."),
    (
        "tunewiz/wizard/flow.py",
        "The wizard (`tunewiz init`)",
        "An answer or flag of the wizard is not usable. "
        "Without a terminal every question needs its flag (`tunewiz init --help`).",
    ),
    (
        "tunewiz/train/launcher.py",
        "Launching a run",
        "Checked before torchrun starts: the run directory, the "
        "topology and the preflight of model and data.",
    ),
    (
        "tunewiz/train/distributed.py",
        "Devices and processes",
        "The device or process group asked for is not available.",
    ),
    (
        "tunewiz/train/",
        "During training",
        "Raised by the training processes; the dashboard shows them with the rank that failed.",
    ),
    ("tunewiz/train/checkpoint.py", "Checkpoints", "A checkpoint cannot be written or read."),
    (
        "tunewiz/run/lock.py",
        "A run that is still training",
        "One trainer per run directory: `train`, `resume`, `chat`, `eval` and `push` refuse a run whose "
        "trainer is alive, and say who holds it (see the run lifecycle guide).",
    ),
    (
        "tunewiz/train/resume.py",
        "Resuming",
        "`tunewiz resume` checks the run directory and what `--set` may change on a resumed run.",
    ),
    ("tunewiz/cli/", "Command line", "A combination of flags that cannot work."),
    ("tunewiz/inference/generate.py", "Generation", "Sampling settings or prompt length out of range."),
    (
        "tunewiz/inference/load.py",
        "Chat and inference",
        "`tunewiz chat` and `tunewiz eval` load a run, a model "
        "directory or a cached Hub model; these say which part is missing.",
    ),
    (
        "tunewiz/inference/evaluate.py",
        "Evaluation (`tunewiz eval`)",
        "lm-eval is missing, or a task cannot be found or run offline.",
    ),
    ("tunewiz/inference/lm_eval_adapter.py", "Evaluation (`tunewiz eval`)", ""),
    (
        "tunewiz/hub/",
        "Hugging Face Hub (`download`, `push`)",
        "The Hub could not be reached, refused the "
        "token, or the repository is gated, missing or incomplete. Tokens are never printed.",
    ),
    ("tunewiz/hub/modelcard.py", "Model card", "The model card cannot be written from the run."),
    ("tunewiz/", "Other", "Errors of modules not listed above."),
)


@dataclass(frozen=True)
class ErrorEntry:
    """One documented error: where it is raised and the lines the CLI prints.

    Args:
        file: source file relative to the repository root.
        function: the function that raises it (`<module>` at module level).
        message: the message with run-time values as `‹name›` placeholders.
        hint: the hint in the same form, or None.
        exit_code: the process exit code (0 means it is a notice, not a failure).
        line: line of the raising call (for ordering; not shown, so edits elsewhere do not churn the page).
    """

    file: str
    function: str
    message: str
    hint: str | None
    exit_code: int
    line: int


def _placeholder(node: ast.expr) -> str:
    """`‹repo_id›` for `{ctx.repo_id}`, `‹did_you_mean›` for `{did_you_mean(...)}`, `‹…›` otherwise."""
    while isinstance(node, ast.Subscript):
        node = node.value
    if isinstance(node, ast.Call):
        node = node.func
        if isinstance(node, ast.Attribute) and node.attr == "join":
            return "‹…›"
    if isinstance(node, ast.Attribute):
        return f"‹{node.attr.lstrip('_')}›"
    if isinstance(node, ast.Name):
        return f"‹{node.id.lstrip('_')}›"
    return "‹…›"


def template(node: ast.expr) -> str:
    """The text a string expression produces, with every run-time part as a placeholder.

    Args:
        node: a string constant, f-string, `+` of them, or a conditional expression between them.
    """
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            template(v) if isinstance(v, ast.Constant) else _placeholder(v.value) for v in node.values
        )
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return template(node.left) + template(node.right)
    if isinstance(node, ast.IfExp):
        # `" (details)" if cond else ""`: optional text, shown in brackets.
        shown = [template(branch) for branch in (node.body, node.orelse)]
        shown = [s for s in shown if s]
        return "[" + " | ".join(shown) + "]" if shown else ""
    return _placeholder(node)


def _call_name(call: ast.Call) -> str | None:
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def _keyword(call: ast.Call, name: str, position: int) -> ast.expr | None:
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return call.args[position] if len(call.args) > position else None


def _assignments(function: ast.AST, name: str) -> list[ast.Assign]:
    """Every plain assignment to ``name`` in a function, in line order."""
    found = [
        node
        for node in ast.walk(function)
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
    ]
    return sorted(found, key=lambda node: node.lineno)


def _assigned(function: ast.AST, name: str) -> list[ast.expr]:
    """The expressions assigned to ``name`` in a function, in line order."""
    return [node.value for node in _assignments(function, name)]


def _functions(tree: ast.Module) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    return {n.name: n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def _builder_entries(
    functions: dict[str, ast.AST], builder: tuple[str, int, int]
) -> list[tuple[str, str | None]]:
    helper, message_at, hint_at = functions[builder[0]], builder[1], builder[2]
    found = []
    for node in ast.walk(helper):
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple):
            hint_node = node.value.elts[hint_at]
            if isinstance(hint_node, ast.Name):
                # The assignment that reaches this return: the last one above it.
                before = [a for a in _assignments(helper, hint_node.id) if a.lineno < node.lineno]
                hint = template(before[-1].value) if before else "‹computed at run time›"
            else:
                hint = template(hint_node)
            found.append((template(node.value.elts[message_at]), hint))
    return found


def _resolve_hint(function: ast.AST, name: str) -> str | None:
    values = _assigned(function, name)
    return " / ".join(template(v) for v in values) if values else "‹computed at run time›"


def _entries_of_call(
    call: ast.Call, function: ast.AST | None, file: str, functions: dict[str, ast.AST], function_name: str
) -> list[tuple[str, str | None]]:
    message = _keyword(call, "message", 0)
    hint_node = _keyword(call, "hint", 1)
    hint: str | None
    if hint_node is None or (isinstance(hint_node, ast.Constant) and hint_node.value is None):
        hint = None
    elif isinstance(hint_node, ast.Name) and function is not None:
        hint = _resolve_hint(function, hint_node.id)
    else:
        hint = template(hint_node)
    if isinstance(message, ast.Name):
        builder = MESSAGE_BUILDERS.get((file, function_name))
        if builder is not None:
            return _builder_entries(functions, builder)
        values = _assigned(function, message.id) if function is not None else []
        if not values:
            raise ValueError(
                f"{file}:{call.lineno}: cannot follow the message `{message.id}` of a TunewizError; "
                "assign it in the same function or add its builder to MESSAGE_BUILDERS"
            )
        return [(template(v), hint) for v in values]
    return [(template(message), hint)] if message is not None else []


def extract(package: Path = PACKAGE) -> list[ErrorEntry]:
    """Every distinct TunewizError message raised in the package, in file order.

    Args:
        package: the `tunewiz` package directory.
    """
    entries: list[ErrorEntry] = []
    seen: set[tuple[str, str | None]] = set()
    for path in sorted(package.rglob("*.py")):
        file = path.relative_to(package.parent).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        functions = _functions(tree)
        # Innermost function of each call: walk functions, deepest last, so inner ones overwrite.
        owner: dict[int, tuple[str, ast.AST]] = {}
        for function in sorted(functions.values(), key=lambda f: f.lineno):
            for node in ast.walk(function):
                owner[id(node)] = (function.name, function)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and _call_name(node) == "TunewizError"):
                continue
            name, function = owner.get(id(node), ("<module>", None))
            exit_node = _keyword(node, "exit_code", 2)
            exit_code = exit_node.value if isinstance(exit_node, ast.Constant) else 2
            for message, hint in _entries_of_call(node, function, file, functions, name):
                if (message, hint) in seen:
                    continue
                seen.add((message, hint))
                entries.append(ErrorEntry(file, name, message, hint, exit_code, node.lineno))
    return sorted(entries, key=lambda e: (e.file, e.line))


def _topic(file: str) -> str:
    return next(title for prefix, title, _ in TOPICS if file.startswith(prefix))


def render() -> str:
    """The common-errors page as Markdown."""
    entries = extract()
    lines = [
        "# Common errors",
        "",
        "<!-- Generated by scripts/gen_error_reference.py from the TunewizError calls in tunewiz/; "
        "do not edit by hand. -->",
        "",
        "When tunewiz knows what went wrong it prints one `error:` line that names the culprit (the key, "
        "the file and line, the value) and a `hint:` line with the fix or the next command, on stderr, and "
        "exits with code 2 for bad input or 1 for other failures. Find your message below: every message "
        "the code can raise is listed, with `‹name›` where the real value goes, `[...]` around parts that "
        "appear only sometimes, and the function that raises it.",
        "",
        "Anything else is a bug: the CLI prints `error: unexpected ‹ExceptionType›: ‹message›`; run the "
        "command again with `TUNEWIZ_DEBUG=1` for the full traceback and report it. During training, the "
        "dashboard shows the failing rank's error, and `runs/NAME/events.jsonl` (`error` events) and "
        "`runs/NAME/logs/torchrun.log` keep the traceback.",
        "",
        f"{len(entries)} messages.",
        "",
    ]
    titles: list[str] = []
    for _, title, _ in TOPICS:
        if title not in titles:
            titles.append(title)
    for title in titles:
        group = [e for e in entries if _topic(e.file) == title]
        if not group:
            continue
        about = next(text for _, t, text in TOPICS if t == title)
        lines += [f"## {title}", "", about, ""]
        for entry in group:
            shown = [f"error: {entry.message}" if entry.exit_code else entry.message]
            if entry.hint:
                shown.append(f"hint: {entry.hint}")
            code = " (exit code 0: a notice, not a failure)" if entry.exit_code == 0 else ""
            lines += [
                "```text",
                *("\n".join(shown).splitlines()),
                "```",
                "",
                f"Raised by `{entry.function}` in `{entry.file}`{code}.",
                "",
            ]
    return "\n".join(lines)


if __name__ == "__main__":
    TARGET.write_text(render(), encoding="utf-8")
    print(f"wrote {TARGET.relative_to(ROOT)}")
