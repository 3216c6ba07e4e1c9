"""`tunewiz chat RUN --web` end to end: the real CLI serves the page, a real headless browser
(Debian's chromium, driven by playwright) types into it, and the answers are compared with the
terminal chat's (`tunewiz chat RUN --prompt … --temperature 0`) on a trained demo run."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runs import TUNEWIZ, build_tiny_model

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
STORY = "Dan has a white rug. Lena has a pink doll. Ravi put the red chair in the office."
QUESTION = f"Answer the question about the story.\n\n{STORY}\nWho put the red chair in the office?"
ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT / "docs" / "images" / "web-chat.png"

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(tmp: Path) -> dict[str, str]:
    return {
        **os.environ,
        "TMPDIR": str(tmp),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "NO_COLOR": "1",
    }


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The README's demo run (shipped tiny model, story-QA), shortened to 60 steps."""
    work = tmp_path_factory.mktemp("web")
    args = ["train", str(ROOT / "presets" / "tiny-lora.yaml"), "--run-dir", str(work / "run"), "--no-tui"]
    args += ["--set", "train.max_steps=60", "--set", "checkpoint.every_n_steps=1000"]
    result = subprocess.run([*TUNEWIZ, *args], cwd=work, env=_env(work), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return work / "run"


def _run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)


def _terminal_answer(run: Path, prompt: str, *extra: str) -> str:
    args = ["chat", str(run), "--prompt", prompt, "--temperature", "0", "--max-new-tokens", "24", *extra]
    result = subprocess.run([*TUNEWIZ, *args], env=_env(run.parent), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@contextlib.contextmanager
def _serve(target: Path, env: dict[str, str]) -> Iterator[str]:
    """`tunewiz chat TARGET --web` in its own process group; yields the page's URL."""
    port = _free_port()
    proc = subprocess.Popen(
        [*TUNEWIZ, "chat", str(target), "--web", "--port", str(port)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    url, lines = None, []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and url is None:
        line = proc.stderr.readline()
        lines.append(line)
        if "chat page: " in line:
            url = line.split("chat page: ", 1)[1].split()[0]
        if not line and proc.poll() is not None:
            break
    try:
        assert url, "".join(lines)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def server(demo_run: Path) -> Iterator[str]:
    with _serve(demo_run, _env(demo_run.parent)) as url:
        yield url


@contextlib.contextmanager
def _browser_page(url: str) -> Iterator:
    if CHROMIUM is None:
        if os.environ.get("TUNEWIZ_REQUIRE_BROWSER"):
            pytest.fail("chromium is missing: .ci/run installs Debian's chromium")
        pytest.skip("no chromium on this machine (`apt-get install chromium`)")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 1400, "height": 1000})
        tab.goto(url)
        tab.wait_for_selector("#prompt textarea", timeout=60_000)
        yield tab
        browser.close()


@pytest.fixture()
def page(server: str) -> Iterator:
    with _browser_page(server) as tab:
        yield tab


def _fill_slider(page, elem_id: str, value: float) -> None:  # noqa: ANN001
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def _set_max_tokens(page, n: int) -> None:  # noqa: ANN001
    page.get_by_text("Generation settings").click()
    _fill_slider(page, "max-new-tokens", n)


def _send(page, text: str) -> None:  # noqa: ANN001
    page.fill("#prompt textarea", text)
    page.click("#send")


def _ask(page, text: str | None = None, button: str = "#send") -> int:  # noqa: ANN001
    """Send ``text`` (or press ``button``) and wait for the whole reply; return the prompt's token count.

    The page numbers its replies in ``#prompt-info`` (``reply K: prompt N tokens · done``)."""
    info = page.inner_text("#prompt-info")
    k = int(info.split()[1].rstrip(":")) + 1 if info.startswith("reply") else 1
    if text is not None:
        page.fill("#prompt textarea", text)
    page.click(button)
    page.wait_for_function(
        f"() => (document.querySelector('#prompt-info')?.innerText || '').startsWith('reply {k}:')"
        " && document.querySelector('#prompt-info').innerText.includes('done')",
        timeout=180_000,
    )
    return int(page.inner_text("#prompt-info").split()[3])


def _bot_texts(page, chat: str = "#tuned-chat") -> list[str]:  # noqa: ANN001
    return [t.strip() for t in page.locator(f"{chat} .bot").all_inner_texts()]


def test_answer_equals_the_terminal_chat_and_turns_build_on_each_other(page, demo_run: Path) -> None:  # noqa: ANN001
    _set_max_tokens(page, 24)
    without_system = _ask(page, QUESTION)
    first = _bot_texts(page)
    assert first and first[-1] == _terminal_answer(demo_run, QUESTION)

    # A second turn is answered after the first: its prompt is longer than the same message alone.
    two_turns = _ask(page, "And who has the pink doll?")
    assert len(_bot_texts(page)) == 2
    page.click("#clear")
    page.wait_for_function("() => document.querySelectorAll('#tuned-chat .bot').length == 0")
    alone = _ask(page, "And who has the pink doll?")
    assert two_turns > alone

    # The system prompt changes the prompt ids as the template says (the tiny model's template
    # writes the system text before the instruction): more tokens, and the terminal chat agrees.
    page.click("#clear")
    page.fill("#system textarea", "You answer in one word.")
    assert _ask(page, QUESTION) > without_system
    with_system = _bot_texts(page)[-1]
    assert with_system == _terminal_answer(demo_run, QUESTION, "--system", "You answer in one word.")

    # Undo removes the last turn and gives its message back for editing.
    page.click("#undo")
    page.wait_for_timeout(500)
    assert _bot_texts(page) == []
    assert page.input_value("#prompt textarea") == QUESTION


def test_retry_with_the_same_seed_gives_the_same_answer(page) -> None:  # noqa: ANN001
    _set_max_tokens(page, 16)
    _ask(page, QUESTION)
    before = _bot_texts(page)
    _ask(page, button="#retry")
    assert _bot_texts(page) == before and len(before) == 1


def test_stop_ends_a_long_generation(tmp_path: Path) -> None:
    # A random-weight model decoding greedily cycles through ordinary tokens and never picks its
    # end-of-sequence token (checked first with the terminal chat): a reply that only stop can end.
    model = build_tiny_model(tmp_path / "random-model")
    config = json.loads((model / "config.json").read_text())
    config["max_position_embeddings"] = 8192  # RoPE has no learned positions: room for a 2048-token reply
    (model / "config.json").write_text(json.dumps(config))
    env = _env(tmp_path)
    args = [*TUNEWIZ, "chat", str(model), "--prompt", "Tell me a story.", "--max-new-tokens", "200"]
    assert len(_run(args, env).stdout) > 150
    with _serve(model, env) as url, _browser_page(url) as page:
        _set_max_tokens(page, 2048)
        _send(page, "Tell me a story.")
        page.wait_for_function(
            "() => (document.querySelector('#prompt-info')?.innerText || '').includes('generating')",
            timeout=60_000,
        )
        page.click("#stop")
        page.wait_for_timeout(1500)
        stopped = _bot_texts(page)[-1]
        page.wait_for_timeout(2000)
        assert _bot_texts(page)[-1] == stopped  # nothing more arrives after stop
        assert page.inner_text("#prompt-info").endswith("· stopped")
        # The model is free again: the next message is answered at once, after the kept partial reply.
        _fill_slider(page, "max-new-tokens", 4)
        _ask(page, "Hello")
        assert len(_bot_texts(page)) == 2 and _bot_texts(page)[0] == stopped


def test_compare_mode_shows_base_and_tuned_side_by_side(page, demo_run: Path) -> None:  # noqa: ANN001
    _set_max_tokens(page, 24)
    page.get_by_label("Compare with the base model").check()
    page.wait_for_selector("#base-chat", state="visible")
    _ask(page, QUESTION)
    tuned, base = _bot_texts(page)[-1], _bot_texts(page, "#base-chat")[-1]
    assert tuned == _terminal_answer(demo_run, QUESTION)
    assert base and base != tuned
    if os.environ.get("TUNEWIZ_SCREENSHOTS"):  # refresh docs/images/web-chat.png
        page.screenshot(path=str(SCREENSHOT), full_page=True)


def test_bad_input_gives_error_and_hint(demo_run: Path, tmp_path: Path) -> None:
    env = _env(tmp_path)
    # A run without final weights.
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(demo_run / "config.yaml", unfinished / "config.yaml")
    result = subprocess.run(
        [*TUNEWIZ, "chat", str(unfinished), "--web"], env=env, capture_output=True, text=True
    )
    assert result.returncode != 0 and "error:" in result.stderr and "hint:" in result.stderr
    assert "Traceback" not in result.stderr
    # A port in use.
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [*TUNEWIZ, "chat", str(demo_run), "--web", "--port", str(port)],
            env=env,
            capture_output=True,
            text=True,
        )
    assert result.returncode != 0
    assert (
        f"error: cannot listen on 127.0.0.1:{port}" in result.stderr
        and "hint: pick another port" in result.stderr
    )
    # gradio not installed: a Python whose import of gradio fails.
    shadow = tmp_path / "shadow"
    (shadow / "gradio").mkdir(parents=True)
    (shadow / "gradio" / "__init__.py").write_text("raise ModuleNotFoundError('no gradio', name='gradio')\n")
    env_shadow = {**env, "PYTHONPATH": os.pathsep.join([str(shadow), env.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "tunewiz", "chat", str(demo_run), "--web"],
        env=env_shadow,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "error: `--web` needs gradio" in result.stderr and "pip install 'tunewiz[web]'" in result.stderr
