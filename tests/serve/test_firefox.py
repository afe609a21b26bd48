"""End to end in Firefox: `kqv serve` in its own process, the page driven in Debian's firefox-esr over Marionette.

Never downloads a browser: Firefox is /usr/bin/firefox-esr (or $KQV_FIREFOX), started headless with
`-marionette` on a fresh temporary profile and HOME, and driven by Mozilla's own client (pip install
marionette-driver). Without either the tests skip and say why, unless KQV_REQUIRE_FIREFOX=1, where that
is a failure. JavaScript errors are read from Firefox's own log ("JavaScript error: URL, line N: ...").
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.serve.conftest import missing

PIZZA = "The pizza came out of the oven and it tasted good"
LAYER, HEAD = 1, 2
IT = 38  # the first "t" of "tasted" (PIZZA.index(" it ") + 2 = 36 is the "t" of "it")
LEFT = "\ue012"  # WebDriver's ArrowLeft


def wait_for(condition, what: str, timeout: float = 30):
    """Poll `condition()` until it is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
    return value


@pytest.fixture(scope="module")
def firefox(tmp_path_factory):
    """A headless Firefox on a fresh profile, and the path of its log; always shut down, with its children."""
    try:
        from marionette_driver.marionette import Marionette
    except ImportError:
        missing("marionette-driver is not installed (pip install marionette-driver)", "KQV_REQUIRE_FIREFOX")
    executable = os.environ.get("KQV_FIREFOX") or shutil.which("firefox-esr") or "/usr/bin/firefox-esr"
    if not Path(executable).exists():
        missing(f"no Firefox at {executable} (apt-get install firefox-esr, or set KQV_FIREFOX)", "KQV_REQUIRE_FIREFOX")
    root = tmp_path_factory.mktemp("firefox")
    profile, home, log = root / "profile", root / "home", root / "firefox.log"
    profile.mkdir()
    home.mkdir()
    (profile / "user.js").write_text('user_pref("marionette.port", 0);\n')  # any free port, written to the profile
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home), "XDG_CACHE_HOME": str(home),
           "MOZ_CRASHREPORTER_DISABLE": "1"}  # fmt: skip
    command = [executable, "-marionette", "-headless", "-no-remote", "-profile", str(profile)]
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        port_file = profile / "MarionetteActivePort"
        wait_for(lambda: port_file.exists() or process.poll() is not None, "Marionette to listen")
        assert process.poll() is None, f"Firefox exited with {process.returncode}: {log.read_text()}"
        client = Marionette(host="127.0.0.1", port=int(port_file.read_text()))
        client.start_session()
        client.set_window_rect(width=1366, height=900)
        yield client, log
        client.delete_session()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)  # Firefox and its content processes: one process group
        try:
            process.wait(timeout=10)
            wait_for(lambda: subprocess.run(["pgrep", "-g", str(process.pid)]).returncode, "Firefox to exit", 10)
        except (subprocess.TimeoutExpired, AssertionError):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture
def page(firefox, server):
    """The page, loaded with its first heatmap drawn; afterwards, no JavaScript error may be in Firefox's log."""
    client, log = firefox
    start = log.stat().st_size
    client.navigate(server + "/")
    wait_for(lambda: count(client, "#heatmap .cell"), "the first heatmap")
    yield client
    with open(log, errors="replace") as f:
        f.seek(start)
        errors = [line for line in f if line.startswith("JavaScript error: " + server)]
    assert not errors, errors
    assert js(client, "return document.querySelector('#error').hidden") is True


def js(client, script: str, *args):
    return client.execute_script(script, script_args=list(args), sandbox=None)


def count(client, selector: str) -> int:
    return js(client, "return document.querySelectorAll(arguments[0]).length", selector)


def element(client, selector: str):
    return client.find_element("css selector", selector)


def api(server: str, path: str, **body):
    import httpx

    response = httpx.post(server + path, json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response


def pattern(server: str) -> list:
    maps = api(server, "/api/attention", model="preset:default", text=PIZZA, layer=LAYER, head=HEAD).json()
    return maps["attention"]["self"]["patterns"][0][0]


def look(client, text: str = PIZZA):
    box = element(client, "#text")
    box.clear()
    box.send_keys(text)
    js(client, "document.querySelector('#status').textContent = ''")  # the page sets "N ms" when it has drawn
    element(client, "#look").click()
    wait_for(lambda: js(client, "return document.querySelector('#status').textContent").endswith(" ms"), "the look")
    assert count(client, "#tokens .chip") == len(text)


def choose_head(client, layer: int, head: int):
    element(client, f'#layer option[value="{layer}"]').click()  # a real click on the option, as WebDriver does
    element(client, f'#head option[value="{head}"]').click()
    wait_for(lambda: count(client, f'#grid .mini.selected[data-layer="{layer}"][data-head="{head}"]'), "the head")


def test_heatmap_cells_are_the_apis_numbers(page, server):
    assert js(page, "return document.querySelector('#error').hidden") is True
    look(page)
    choose_head(page, LAYER, HEAD)
    shown = js(
        page,
        "return [...document.querySelectorAll('#heatmap .cell')].map(c => [Number(c.dataset.q), Number(c.dataset.k),"
        " Number(c.dataset.value), c.classList.contains('masked')])",
    )
    P, T = pattern(server), len(PIZZA)
    assert len(shown) == T * T
    for q, k, value, masked in shown:
        assert value == P[q][k]
        assert masked == (k > q)  # causal: exactly the upper triangle is hidden
    assert count(page, "#grid .mini") == 16


def test_hovering_a_token_shows_its_row(page, server):
    look(page)
    choose_head(page, LAYER, HEAD)
    chip = element(page, f'#tokens .chip[data-index="{IT}"]')
    page.actions.sequence("pointer", "mouse", {"pointerType": "mouse"}).pointer_move(0, 0, origin=chip).perform()
    wait_for(lambda: count(page, f'#tokens .chip.hovered[data-index="{IT}"]'), "the hovered chip")
    attn = js(page, "return [...document.querySelectorAll('#tokens .chip')].map(c => Number(c.dataset.attn))")
    assert attn == pattern(server)[IT]  # its row: what it attends to (0 for the future)
    page.actions.sequence("pointer", "mouse", {"pointerType": "mouse"}).pointer_move(0, 0).perform()
    wait_for(lambda: not count(page, "#tokens .chip.hovered"), "the hover to end")
    page.actions.release()


def test_temperature_changes_the_bars_as_the_api_says(page, server):
    look(page)
    js(page, "document.querySelector('#temperature').focus()")
    keys = page.actions.sequence("key", "keyboard")
    for _ in range(14):  # 1.00 -> 0.30, with the keyboard as a user would
        keys.key_down(LEFT).key_up(LEFT)
    keys.perform()
    wait_for(lambda: count(page, "#bars[data-settings='[0.3,null,null]']"), "bars at temperature 0.3")
    assert js(page, "return document.querySelector('#temperature-value').textContent") == "0.30"
    shown = js(
        page,
        "return [...document.querySelectorAll('#bars .bar-row')].map(r => [Number(r.dataset.token),"
        " Number(r.dataset.prob)])",
    )
    expected = api(server, "/api/next-token", model="preset:default", text=PIZZA, temperature=0.3, show=15).json()
    assert shown == [[t["id"], t["prob"]] for t in expected["tokens"]]


def test_generate_streams_the_apis_tokens_and_a_screenshot_is_taken(page, server, tmp_path):
    look(page)
    js(page, "const t = document.querySelector('#temperature'); t.value = '0.3';"
             " t.dispatchEvent(new Event('input', {bubbles: true}))")  # fmt: skip
    for selector, value in (("#seed", "5"), ("#max-new", "20")):
        box = element(page, selector)
        box.clear()
        box.send_keys(value)
    element(page, "#generate").click()
    wait_for(lambda: "tokens/s" in js(page, "return document.querySelector('#generate-info').textContent"), "tokens")
    shown = "".join(js(page, "return [...document.querySelectorAll('#generated .new')].map(s => s.textContent)"))
    lines = api(server, "/api/generate", model="preset:default", text=PIZZA, max_new_tokens=20, temperature=0.3,
                seed=5).text.splitlines()  # fmt: skip
    last = json.loads(lines[-1])
    assert last["done"] and shown == last["text"]
    shot = tmp_path / "serve-firefox.png"
    shot.write_bytes(page.screenshot(format="binary", full=True))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    if os.environ.get("KQV_SCREENSHOTS"):
        Path(os.environ["KQV_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(os.environ["KQV_SCREENSHOTS"]) / "serve-firefox.png")


# --- the why views

CAKES = "pizza=cakes"  # the same number of characters: the char model's tokens line up
VIEWS = """
const all = (sel, f) => [...document.querySelectorAll(sel)].map(f);
const n = (x) => Number(x);
return {
  lens: all('#why-lens-table td.lens-cell', c => [n(c.dataset.row), n(c.dataset.pos), n(c.dataset.value), c.textContent,
                                                   n(c.dataset.token)]),
  resid: all('#why-patch-resid .pcell', c => [n(c.dataset.layer), n(c.dataset.pos), n(c.dataset.value)]),
  heads: all('#why-patch-heads .pcell', c => [n(c.dataset.layer), n(c.dataset.head), n(c.dataset.value)]),
  dla: all('#why-dla-bars .dla-bar', b => [b.dataset.label, n(b.dataset.value)]),
  shading: Object.fromEntries(all('#why-shading .shade-row', r => [r.dataset.method,
    [...r.querySelectorAll('.shade-tok')].map(t => n(t.dataset.value))])),
  answers: all('#why-answers li', l => l.dataset.method),
  titles: all('#why-panel [data-value]', c => c.title).filter(t => !t).length,
};
"""


def type_into(client, selector: str, value: str):
    box = element(client, selector)
    box.clear()
    if value:
        box.send_keys(value)


def ask_why(client, corrupt: str = "", target: str = "") -> bool:
    """Click the query's token, type the inputs, press Why?; True once drawn, False on an error."""
    element(client, f'#tokens .chip[data-index="{IT}"]').click()
    assert js(client, "return document.querySelector('#why-query').value") == str(IT)
    type_into(client, "#why-corrupt", corrupt)
    type_into(client, "#why-target", target)
    js(client, "document.querySelector('#why-status').textContent = '';"
               " document.querySelector('#why-error').textContent = ''")  # fmt: skip
    element(client, "#why-go").click()
    done = "return document.querySelector('#why-status').textContent.endsWith(' ms') ? 'drawn'" \
           " : document.querySelector('#why-error').textContent !== '' ? 'error' : ''"  # fmt: skip
    return wait_for(lambda: js(client, done), "the why views", timeout=90) == "drawn"


def test_why_views_show_exactly_the_apis_numbers(page, server):
    look(page)
    assert ask_why(page, CAKES)
    shown = js(page, VIEWS)
    expected = api(server, "/api/why", model="preset:default", text=PIZZA, query_index=IT, corrupt=CAKES).json()
    r, T = expected["results"], len(PIZZA)
    assert shown["answers"] == [a["method"] for a in expected["answers"]]
    lens = r["lens"]
    assert len(shown["lens"]) == len(lens["rows"]) * T
    for row, pos, value, text, token in shown["lens"]:
        assert value == lens["target_prob"][row][pos]
        assert token == lens["top_ids"][row][pos][0] and text == lens["top_tokens"][row][pos][0]
    assert shown["resid"] == [[i, t, r["patch"]["resid"][i][t]] for i in range(4) for t in range(T)]
    assert shown["heads"] == [[i, h, r["patch"]["heads"][i][h]] for i in range(4) for h in range(4)]
    assert shown["dla"] == [list(bar) for bar in zip(r["dla"]["labels"], r["dla"]["values"], strict=True)]
    assert shown["shading"] == {"rollout": r["rollout"]["final"][IT], "grad×input": r["grad"]["grad×input"]["scores"],
                                "integrated gradients": r["grad"]["integrated gradients"]["scores"]}  # fmt: skip
    assert shown["titles"] == 0  # every number shown has a title for people


def test_why_shows_the_servers_one_line_message_for_a_bad_input(page, server):
    import httpx

    look(page)
    for corrupt, target, says in [("pizza=cake", "", "the corrupted text is 48 tokens and the clean one 49"),
                                  ("", "tasted", "target 'tasted' is 6 tokens")]:  # fmt: skip
        assert not ask_why(page, corrupt, target)
        body = {"model": "preset:default", "text": PIZZA, "query_index": IT}
        body.update({k: v for k, v in (("corrupt", corrupt), ("target", target)) if v})
        message = httpx.post(server + "/api/why", json=body, timeout=60).json()["error"]
        assert says in message
        assert js(page, "return document.querySelector('#why-error').textContent") == message
        assert js(page, "return document.querySelector('#why-result').hidden") is True
    assert ask_why(page)  # no corruption: drawn, with a note that patching needs one
    assert "needs a corrupted text" in js(page, "return document.querySelector('#why-patch-note').textContent")
    assert js(page, "return document.querySelector('#why-error').hidden") is True
