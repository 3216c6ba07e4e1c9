"""Generate the two error pages from every `TunewizError(message, hint=...)` call in `tunewiz/`.

- `docs/tutorials/common-errors.md`, for users: the messages grouped by the situation a user is in
  (installing, typing a command, presets, data, the model, memory, a run, resuming, chat and export,
  the Hub), each situation with what its errors mean and what to do, each message with its `hint:`.
- `docs/reference/errors.md`, for developers: every message by source file, with the function that
  raises it, its exit code and how a hint computed at run time is built.

Run-time values are shown as `‹name›` placeholders. A message held in a variable is followed to its
assignments in the same function; messages built by a helper are listed in `MESSAGE_BUILDERS`.

A message's situation comes from the module that raises it (`MODULE_SITUATIONS`, longest prefix wins),
unless `OVERRIDES` names its function or `_by_content` recognises it (a missing package, out of memory).
`tests/test_docs.py` fails when a message has no entry on either page, or comes from a module no
situation covers (a new package: add its prefix to `MODULE_SITUATIONS`).
"""

from __future__ import annotations

import ast
import itertools
import re
from dataclasses import dataclass
from pathlib import Path

import error_advice

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tunewiz"
TARGET = ROOT / "docs" / "tutorials" / "common-errors.md"
REFERENCE = ROOT / "docs" / "reference" / "errors.md"
COMPUTED = "‹computed at run time›"  # a hint assigned outside the function that raises
# A part chosen at run time (`a if cond else b`) is kept between these markers in a template: the
# reference shows it as `[a | b]`, the user page as `a` (brackets would clash with `tunewiz[qlora]`).
OPTIONAL = ("⟦", "¦", "⟧")

# (file, function holding `TunewizError(name, ...)`) -> (helper returning (line, message, hint) tuples,
# index of the message in them, index of the hint). presets._explain turns pydantic errors into one.
MESSAGE_BUILDERS: dict[tuple[str, str], tuple[str, int, int]] = {
    ("tunewiz/preset/explain.py", "explain_validation_error"): ("_explain_one", 1, 2),
}


@dataclass(frozen=True)
class Situation:
    """One section of the user page: where the user is when these errors appear.

    Args:
        key: the name `MODULE_SITUATIONS` and `OVERRIDES` use.
        title: the section title.
        means: what the errors of this situation have in common.
        todo: what to do first, before reading the message's own hint.
    """

    key: str
    title: str
    means: str
    todo: str


# In reading order: the order a new user meets them.
SITUATIONS: tuple[Situation, ...] = (
    Situation(
        "install",
        "Installing: a feature needs an optional package",
        "The command asks for a feature whose library is an optional extra, and it is not installed in "
        "the Python environment `tunewiz` runs from.",
        "Install the extra the hint names (`pip install 'tunewiz[qlora]'`, `tunewiz[web]`, …) into the same "
        "environment, or drop the option that needs it. `tunewiz doctor` shows what is installed.",
    ),
    Situation(
        "command",
        "Typing a command",
        "An argument or option is missing, misspelt, or has a value it cannot take; nothing was started.",
        "Run the command with `--help` (every command shows an example), or follow the `did you mean` "
        "in the hint. Flags such as `--overwrite` take no value: write them alone to turn them on.",
    ),
    Situation(
        "preset",
        "Presets, `--set` and `tunewiz init`",
        "The preset file, a `--set key=value` override or an answer to the wizard is not a valid setting. "
        "The message names the file and line (or the override) and the key.",
        "`tunewiz presets show NAME --resolved` prints what tunewiz understood; "
        "[Preset fields](../reference/preset-fields.md) documents every key and its accepted values.",
    ),
    Situation(
        "data",
        "Your data",
        "The dataset cannot be read, is empty, or does not match `data.format`, `data.columns` or the "
        "prompt template. The message names the file and, where it can, the row.",
        "Open the file at the row it names. [Your dataset](your-dataset.md) shows the formats tunewiz "
        "reads and how to map your columns.",
    ),
    Situation(
        "model",
        "The model and its files",
        "The model name is not in the catalog and not on disk, or its directory does not hold what a "
        "Llama-family model needs (`config.json`, tokenizer files, `*.safetensors` whose names and shapes "
        "match), or an adapter does not match its base model.",
        "`tunewiz plan --list-models` lists the catalog; `tunewiz download NAME` fetches a Hub model whole. "
        "[Supported models](../reference/models.md) lists the architectures.",
    ),
    Situation(
        "memory",
        "Memory, GPUs and planning",
        "The run does not fit the memory of this machine, the GPUs asked for are not there, or the "
        "description of another machine given to the planner is incomplete.",
        "`tunewiz plan PRESET` says what fits and which saver to turn on; [Out of memory](out-of-memory.md) "
        "goes through them. `tunewiz doctor` shows the GPUs torch sees.",
    ),
    Situation(
        "run",
        "Starting, watching and stopping a run",
        "Checked before or while a run trains: the run directory, the lock that lets one trainer use it, "
        "the processes torchrun starts, several machines. Errors of the training processes also appear "
        "in the dashboard with the rank that failed.",
        "`tunewiz watch RUN` says what state a run is in; `runs/NAME/logs/torchrun.log` and the `error` "
        "events of `runs/NAME/events.jsonl` keep the traceback. See "
        "[A run's life](../concepts/run-lifecycle.md).",
    ),
    Situation(
        "resume",
        "Resuming",
        "`tunewiz resume` needs a run directory with a complete checkpoint, and may change only what does "
        "not define the trained weights or the data order.",
        "`ls runs/NAME/checkpoints` lists the checkpoints (complete ones hold a `COMPLETE` file); "
        "[Checkpoints and resume](../concepts/checkpoints.md) explains what may change.",
    ),
    Situation(
        "use",
        "Chat, evaluation and export",
        "`tunewiz chat`, `eval` and `export` load a run directory, a model directory or a cached Hub model; "
        "these say which part is missing or which options do not go together.",
        "Point them at a finished run (`runs/NAME`, with `final/`), or finish it first with "
        "`tunewiz resume runs/NAME`.",
    ),
    Situation(
        "hub",
        "Hugging Face Hub (`download`, `push`)",
        "The Hub could not be reached, refused the token, or the repository is gated, missing or "
        "incomplete. Tokens are never printed.",
        "`hf auth login` (or `HF_TOKEN`) for gated models and pushing; accept a gated model's licence on "
        "its Hub page. [Push to the Hub](../recipes/push.md) walks through a push.",
    ),
)

# Module path prefix -> situation key; the longest prefix that matches a file wins. A file under no prefix
# fails tests/test_docs.py: add its package here.
MODULE_SITUATIONS: dict[str, str] = {
    "tunewiz/cli/": "command",
    "tunewiz/cli/cache.py": "data",
    "tunewiz/cli/chat.py": "use",
    "tunewiz/cli/eval.py": "use",
    "tunewiz/cli/export.py": "use",
    "tunewiz/cli/download.py": "hub",
    "tunewiz/cli/push.py": "hub",
    "tunewiz/cli/resume.py": "resume",
    "tunewiz/cli/stop.py": "run",
    "tunewiz/cli/watch.py": "run",
    "tunewiz/preset/": "preset",
    "tunewiz/wizard/": "preset",
    "tunewiz/data/": "data",
    "tunewiz/text/": "data",
    "tunewiz/text/prompt.py": "use",  # a run's prompt.json, read when it is chatted with or exported
    "tunewiz/text/tokenizer.py": "model",
    "tunewiz/models/": "model",
    "tunewiz/models/kv_cache.py": "use",
    "tunewiz/lora/": "model",
    "tunewiz/plan/": "memory",
    "tunewiz/train/": "run",
    "tunewiz/train/distributed.py": "memory",
    "tunewiz/train/checkpoint.py": "resume",
    "tunewiz/train/resume.py": "resume",
    "tunewiz/run/": "run",
    "tunewiz/ui/": "run",
    "tunewiz/tracking/": "run",
    "tunewiz/inference/": "use",
    "tunewiz/export/": "use",
    "tunewiz/hub/": "hub",
}

# (file, function) -> situation key, for errors whose situation is not their module's.
OVERRIDES: dict[tuple[str, str], str] = {
    ("tunewiz/train/launcher.py", "preflight"): "data",  # the dataset file named by the preset is missing
    ("tunewiz/train/launcher.py", "check_mergeable"): "model",  # lm_head tied to the embeddings
    ("tunewiz/train/launcher.py", "check"): "command",  # --nproc-per-node, --nnodes, --node-rank values
    ("tunewiz/train/recipe.py", "__init__"): "data",  # fewer samples than one global batch
}


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
        # `{"is" if n == 1 else "are"}` is a choice like an `IfExp` outside the f-string.
        return "".join(
            template(v)
            if isinstance(v, ast.Constant)
            else template(v.value)
            if isinstance(v.value, ast.IfExp)
            else _placeholder(v.value)
            for v in node.values
        )
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return template(node.left) + template(node.right)
    if isinstance(node, ast.IfExp):
        # `" (details)" if cond else ""`: optional text, between markers (see `for_developers`).
        shown = [template(branch) for branch in (node.body, node.orelse)]
        shown = [s for s in shown if s]
        return OPTIONAL[0] + OPTIONAL[1].join(shown) + OPTIONAL[2] if shown else ""
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
                hint = template(before[-1].value) if before else COMPUTED
            else:
                hint = template(hint_node)
            found.append((template(node.value.elts[message_at]), hint))
    return found


def _resolve_hint(function: ast.AST, name: str) -> str | None:
    values = _assigned(function, name)
    return " / ".join(template(v) for v in values) if values else COMPUTED


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
        every_function = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        for function in sorted(every_function, key=lambda f: f.lineno):
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


def _by_content(entry: ErrorEntry) -> str | None:
    """A situation recognised from the words of the message: a missing package, out of memory."""
    hint = entry.hint or ""
    if "not installed" in entry.message or "not importable" in entry.message or "pip install" in hint:
        return "install"
    if "out of memory" in entry.message:
        return "memory"
    return None


def situation(entry: ErrorEntry) -> Situation:
    """The situation an error belongs to: `OVERRIDES`, then its words, then its module.

    Raises:
        LookupError: the file is under no prefix of `MODULE_SITUATIONS`; the message says what to add.
    """
    key = OVERRIDES.get((entry.file, entry.function)) or _by_content(entry)
    if key is None:
        prefixes = [p for p in MODULE_SITUATIONS if entry.file.startswith(p)]
        if not prefixes:
            raise LookupError(
                f"{entry.file} raises TunewizError but no situation covers it: add its package or file to "
                f"MODULE_SITUATIONS in scripts/gen_error_reference.py (one of "
                f"{', '.join(s.key for s in SITUATIONS)}), or the function to OVERRIDES, then run "
                "`python scripts/gen_docs.py`"
            )
        key = MODULE_SITUATIONS[max(prefixes, key=len)]
    return next(s for s in SITUATIONS if s.key == key)


def for_developers(text: str) -> str:
    """A template as the reference shows it: a part chosen at run time as `[a | b]`."""
    return text.replace(OPTIONAL[0], "[").replace(OPTIONAL[1], " | ").replace(OPTIONAL[2], "]")


def constants(package: Path = PACKAGE) -> dict[str, str]:
    """Module-level string and number constants of the package by name (`LOGIN_HINT`), those whose name
    has one value everywhere, so a placeholder naming one reads as its value on the user page."""
    values: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
                continue
            target, value = node.targets[0], node.value
            pairs = (  # `A = 1` and `A, B = 1, 2`
                zip(target.elts, value.elts, strict=False)
                if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple)
                else [(target, value)]
            )
            for name, constant in pairs:
                if (
                    isinstance(name, ast.Name)
                    and name.id.isupper()
                    and isinstance(constant, ast.Constant)
                    and isinstance(constant.value, (str, int, float))
                ):
                    values.setdefault(name.id, set()).add(str(constant.value))
    return {name: next(iter(found)) for name, found in values.items() if len(found) == 1}


def stand_ins(situation_key: str, message: str) -> dict[str, str]:
    """What each placeholder of a message reads as on the user page: `error_advice.CONTEXT_STAND_INS` for
    this message, then `SITUATION_STAND_INS` for its situation, then `STAND_INS`."""
    found = dict(error_advice.STAND_INS)
    found.update(error_advice.SITUATION_STAND_INS.get(situation_key, {}))
    for fragment, names in error_advice.CONTEXT_STAND_INS.items():
        if fragment in keyed(situation_key, message):
            found.update(names)
    return found


def keyed(situation_key: str, text: str) -> str:
    """`"data: ‹message›"`: what the fragments of `error_advice` are looked up in, so that a fragment may
    name the situation where one template is raised in two (`"use: ‹path› is not valid JSON"`)."""
    return f"{situation_key}: {text}"


def for_users(text: str, known: dict[str, str], names: dict[str, str]) -> str:
    """A template as the user page shows it: a part chosen at run time as its first choice, and each
    placeholder as its stand-in (`names`), a constant's value (`known`), or its name in capitals.

    Args:
        text: a message or hint template from `extract`.
        known: `constants()`.
        names: `stand_ins(...)` for the message.
    """
    choice = re.compile(f"{OPTIONAL[0]}([^{OPTIONAL[0]}{OPTIONAL[2]}]*){OPTIONAL[2]}")
    while choice.search(text):
        text = choice.sub(lambda m: m.group(1).split(OPTIONAL[1])[0], text)

    def stand_in(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in names:
            return names[name]
        return known.get(name, name.upper())

    return re.sub("‹([^›]+)›", stand_in, text)


def relayed(entry: ErrorEntry) -> bool:
    """Whether the entry passes on an error raised elsewhere (its message is one run-time value): the
    user page leaves it out, as that error has its own entry."""
    return re.fullmatch("‹[^›]+›", entry.message) is not None


def _fixed_by_hint(hint: str | None) -> bool:
    """Whether a hint template is an instruction a user can read: not computed, not only placeholders."""
    return bool(hint) and re.sub(f"‹[^›]*›|[{''.join(OPTIONAL)}]|\\s", "", hint) != ""


def advice(entry: ErrorEntry, known: dict[str, str], names: dict[str, str]) -> str:
    """The one line under a message on the user page: `error_advice.ADVICE` where a fragment of the
    message is there, else the hint in the user's terms, else a pointer to the section's advice."""
    for fragment, text in error_advice.ADVICE.items():
        if fragment in keyed(situation(entry).key, entry.message):
            return text
    if _fixed_by_hint(entry.hint):
        hint = for_users(entry.hint or "", known, names)
        return hint[:1].upper() + hint[1:]
    if entry.hint:
        return "The `hint:` line printed with it says what to do in your case."
    return "See **What to do** at the top of this section."


def user_message(entry: ErrorEntry, known: dict[str, str]) -> str:
    """The `error:` line of an entry as the user page shows it, with stand-ins for run-time values.

    Args:
        entry: from `extract`.
        known: `constants()`.
    """
    message = for_users(entry.message, known, stand_ins(situation(entry).key, entry.message))
    return f"error: {message}" if entry.exit_code else message


@dataclass(frozen=True)
class _Item:
    """One message on the user page: the lines shown, the advice under them, and where it sorts."""

    text: str
    shown: str
    advice: str


def _rank(situation_key: str, text: str) -> int:
    """Place of a message in its situation (`error_advice.ORDER`): its first fragment's, else `REST`'s."""
    order = error_advice.ORDER.get(situation_key, (error_advice.REST,))
    for i, fragment in enumerate(order):
        if fragment != error_advice.REST and fragment in text:
            return i
    return order.index(error_advice.REST) if error_advice.REST in order else len(order)


def user_items(entries: list[ErrorEntry]) -> dict[str, list[_Item]]:
    """The user page's messages by situation key, in the reviewed order (`error_advice.ORDER`), errors
    with a computed or no hint explained by `error_advice.ADVICE`, and the `PRINTED` messages added."""
    known = constants()
    items: dict[str, list[_Item]] = {s.key: [] for s in SITUATIONS}
    for entry in entries:
        if relayed(entry):
            continue
        key = situation(entry).key
        names = stand_ins(key, entry.message)
        shown = user_message(entry, known)
        items[key].append(_Item(entry.message, shown, advice(entry, known, names)))
    for printed in error_advice.PRINTED:
        items[printed.situation].append(_Item(printed.shown, printed.shown, printed.advice))
    return {key: sorted(group, key=lambda item: _rank(key, item.text)) for key, group in items.items()}


def _blocks(items: list[_Item]) -> list[str]:
    """Markdown for a situation's messages: consecutive ones with the same advice share a block."""
    lines: list[str] = []
    for text, group in itertools.groupby(items, key=lambda item: item.advice):
        shown = "\n\n".join(item.shown for item in group)
        lines += ["```text", *shown.splitlines(), "```", "", f"**To fix:** {text}", ""]
    return lines


_GENERATED = (
    "<!-- Generated by scripts/gen_error_reference.py from the TunewizError calls in tunewiz/ and "
    "scripts/error_advice.py; do not edit by hand. -->"
)


def render() -> str:
    """The user page, `docs/tutorials/common-errors.md`, as Markdown."""
    by_situation = user_items(extract())
    lines = [
        "# Common errors",
        "",
        _GENERATED,
        "",
        "When tunewiz knows what went wrong it prints an `error:` line that names the culprit (the key, "
        "the file and line, the value) and a `hint:` line with the fix or the next command to run, on "
        "stderr, and exits with code 2 for bad input or 1 for other failures. Find the situation you are "
        "in below: what its errors mean and what to do, then its `error:` lines, the most common first, "
        "each followed by how to fix it (mostly what its `hint:` line says, written out where the hint "
        "depends on your case). Your own values appear as examples (`data.csv`, `3`, `org/model`) or as "
        "a name in capitals (`COLUMN`, `PATH`).",
        "",
        "Anything else is a bug: tunewiz prints `error: unexpected TYPE: MESSAGE`; run the command again "
        "with `TUNEWIZ_DEBUG=1` for the full traceback and report it. Developers: "
        "[Error reference](../reference/errors.md) lists each message with the code that raises it.",
        "",
    ]
    lines += [f"- [{s.title}](#{_anchor(s.title)}): {len(by_situation[s.key])}" for s in SITUATIONS]
    lines.append("")
    for s in SITUATIONS:
        group = by_situation[s.key]
        if not group:
            continue
        lines += [f"## {s.title}", "", f"**What it means.** {s.means}", "", f"**What to do.** {s.todo}", ""]
        lines += _blocks(group)
    return "\n".join(lines)


def _anchor(title: str) -> str:
    """The anchor MkDocs gives a heading (Python-Markdown's ``toc.slugify``): punctuation dropped, lower
    case, each run of spaces and dashes one dash."""
    kept = re.sub(r"[^\w\s-]", "", title).strip().lower()
    return re.sub(r"[-\s]+", "-", kept)


def render_reference() -> str:
    """The developer page, `docs/reference/errors.md`, as Markdown."""
    entries = extract()
    lines = [
        "# Error reference",
        "",
        _GENERATED,
        "",
        f"Every `TunewizError` message in `tunewiz/` ({len(entries)}), by the file that raises it: the lines "
        "the CLI prints, the function, the exit code and the situation it is listed under in "
        "[Common errors](../tutorials/common-errors.md). `‹name›` is a run-time value, `[a | b]` a part "
        "chosen at run time, and `‹computed at run time›` a hint built outside the raising function.",
        "",
    ]
    for file in sorted({e.file for e in entries}):
        lines += [f"## `{file}`", ""]
        for entry in (e for e in entries if e.file == file):
            shown = [f"error: {entry.message}" if entry.exit_code else entry.message]
            shown += [f"hint: {entry.hint}"] if entry.hint else []
            lines += ["```text", *for_developers("\n".join(shown)).splitlines(), "```", ""]
            notice = ", a notice, not a failure" if entry.exit_code == 0 else ""
            lines += [
                f"`{entry.function}` · exit code {entry.exit_code}{notice} · {situation(entry).title}",
                "",
            ]
    lines += [
        "## Printed without `TunewizError`",
        "",
        "Listed on the user page from `scripts/error_advice.py` (`PRINTED`), with realistic values.",
        "",
    ]
    for printed in error_advice.PRINTED:
        lines += ["```text", *printed.shown.splitlines(), "```", ""]
        lines += [f"`{printed.file}` · {next(s.title for s in SITUATIONS if s.key == printed.situation)}", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    for path, make in ((TARGET, render), (REFERENCE, render_reference)):
        path.write_text(make(), encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")
