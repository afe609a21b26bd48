"""End to end in a real browser: `kqv serve` in its own process, the page driven in Debian's Chromium by Playwright.

Never downloads a browser: Playwright launches the system binary (/usr/bin/chromium, or $KQV_CHROMIUM).
Without Playwright or Chromium the tests skip and say why, unless KQV_REQUIRE_BROWSER=1 (CI sets it),
where that is a failure.
"""

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.serve.conftest import missing

PIZZA = "The pizza came out of the oven and it tasted good"
LAYER, HEAD = 1, 2


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing(
            "Playwright for Python is not installed (pip install playwright; no browser download needed)",
            "KQV_REQUIRE_BROWSER",
        )
    executable = os.environ.get("KQV_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(executable).exists():
        missing(f"no Chromium at {executable} (apt-get install chromium, or set KQV_CHROMIUM)", "KQV_REQUIRE_BROWSER")
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"]  # fmt: skip
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=executable, args=args)
        yield launched
        launched.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    expected = "the server responded with a status of 422"  # the bad-input test asks for one
    page.on("console", lambda msg: msg.type == "error" and expected not in msg.text and errors.append(msg.text))
    page.goto(server + "/")
    page.wait_for_selector("#heatmap .cell")
    yield page
    context.close()
    assert not errors, errors


def api(server: str, path: str, **body):
    import httpx

    response = httpx.post(server + path, json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response


def look(page, text: str = PIZZA):
    page.fill("#text", text)
    page.evaluate("document.querySelector('#status').textContent = ''")  # the page writes "N ms" once it has drawn
    page.click("#look")
    page.wait_for_function("() => document.querySelector('#status').textContent.endsWith(' ms')")
    assert page.locator("#tokens .chip").count() == len(text)


def choose_head(page, layer: int, head: int):
    page.select_option("#layer", str(layer))
    page.select_option("#head", str(head))
    page.wait_for_selector(f'#grid .mini.selected[data-layer="{layer}"][data-head="{head}"]')


def cells(page) -> list:
    return page.eval_on_selector_all(
        "#heatmap .cell",
        "cs => cs.map(c => [Number(c.dataset.q), Number(c.dataset.k), Number(c.dataset.value),"
        " c.classList.contains('masked')])",
    )


def bars(page) -> list:
    return page.eval_on_selector_all(
        "#bars .bar-row", "rs => rs.map(r => [Number(r.dataset.token), Number(r.dataset.prob)])"
    )


def test_heatmap_cells_are_the_apis_numbers(page, server):
    look(page)
    choose_head(page, LAYER, HEAD)
    shown = cells(page)
    maps = api(server, "/api/attention", model="preset:default", text=PIZZA, layer=LAYER, head=HEAD).json()
    P = maps["attention"]["self"]["patterns"][0][0]
    T = len(PIZZA)
    assert len(shown) == T * T
    for q, k, value, masked in shown:
        assert value == P[q][k]
        assert masked == (k > q)  # causal: exactly the upper triangle is hidden
    for q in range(T):
        assert sum(v for qq, _, v, _ in shown if qq == q) == pytest.approx(1.0, abs=1e-5)
    # every small multiple is there, one per layer and head
    assert page.locator("#grid .mini").count() == 16


def test_hovering_a_token_shows_what_it_attends_to_and_what_attends_to_it(page, server):
    look(page)
    choose_head(page, LAYER, HEAD)
    it = PIZZA.index(" it ") + 2  # the "t" of "it"
    page.hover(f'#tokens .chip[data-index="{it}"]')
    page.wait_for_selector(f'#tokens .chip.hovered[data-index="{it}"]')
    P = api(server, "/api/attention", model="preset:default", text=PIZZA, layer=LAYER, head=HEAD).json()
    P = P["attention"]["self"]["patterns"][0][0]
    attn = page.eval_on_selector_all("#tokens .chip", "cs => cs.map(c => Number(c.dataset.attn))")
    by = page.eval_on_selector_all("#tokens .chip", "cs => cs.map(c => c.dataset.attendedBy)")
    assert attn == [P[it][j] for j in range(len(PIZZA))]  # its row: what it attends to (0 for the future)
    assert [float(b) for b in by] == [P[j][it] for j in range(len(PIZZA))]  # its column: what attends to it
    assert page.locator(f'#heatmap .qlabel.on[data-q="{it}"]').count() == 1
    assert page.locator(f'#heatmap .klabel.on[data-k="{it}"]').count() == 1
    assert "attends to" in page.inner_text("#hover-info")
    visible = page.eval_on_selector_all(
        "#lines line", "ls => ls.filter(l => Number(l.getAttribute('stroke-opacity')) > 0).map(l => l.dataset.q)"
    )
    assert visible and set(visible) <= {str(it)} | {str(q) for q in range(it, len(PIZZA))}
    page.mouse.move(0, 0)
    page.wait_for_selector("#tokens .chip.hovered", state="detached")


def test_temperature_and_top_k_change_the_bars_as_the_api_says(page, server):
    look(page)
    page.wait_for_selector("#bars .bar-row")
    before = bars(page)
    page.focus("#temperature")
    for _ in range(14):  # 1.00 -> 0.30, with the keyboard as a user would
        page.keyboard.press("ArrowLeft")
    page.wait_for_function("() => document.querySelector('#temperature-value').textContent === '0.30'")
    page.wait_for_selector("#bars[data-settings='[0.3,null,null]']")
    after = bars(page)
    expected = api(server, "/api/next-token", model="preset:default", text=PIZZA, temperature=0.3, show=15).json()
    assert after == [[t["id"], t["prob"]] for t in expected["tokens"]]
    assert after[0][1] > before[0][1]  # a lower temperature sharpens the distribution
    page.fill("#top-k", "3")
    page.wait_for_selector("#bars[data-settings='[0.3,3,null]']")
    assert page.locator("#bars .bar-row.dropped").count() == 12
    assert sum(p for _, p in bars(page)) == pytest.approx(1.0, abs=1e-6)


def test_generate_streams_the_apis_tokens_into_the_page(page, server):
    look(page, "ROMEO:")
    page.fill("#seed", "5")
    page.fill("#max-new", "40")
    page.focus("#temperature")
    for _ in range(4):
        page.keyboard.press("ArrowLeft")  # 0.80
    page.click("#generate")
    page.wait_for_function("() => document.querySelector('#generate-info').textContent.includes('tokens/s')")
    shown = "".join(page.eval_on_selector_all("#generated .new", "ss => ss.map(s => s.textContent)"))
    lines = api(server, "/api/generate", model="preset:default", text="ROMEO:", max_new_tokens=40, temperature=0.8,
                seed=5).text.splitlines()  # fmt: skip
    assert shown == json.loads(lines[-1])["text"] and len(lines) == 41
    assert page.inner_text("#generated").startswith("ROMEO:")


def test_a_translation_model_shows_encoder_decoder_and_cross_attention(page, server, tmp_path):
    page.select_option("#model", "preset:translate/tiny")
    page.wait_for_selector('#tokens .seq[data-seq="source"]')
    page.wait_for_selector('#tokens .seq[data-seq="target"]')
    kinds = page.eval_on_selector_all("#kind option", "os => os.map(o => o.value)")
    assert kinds == ["encoder", "decoder", "cross"]
    assert page.locator("#heatmap .cell.masked").count() == 0  # cross attention: nothing hidden
    page.select_option("#kind", "encoder")
    page.wait_for_selector("#heatmap .cell")
    assert page.locator("#heatmap .cell.masked").count() == 0  # PITFALL 16: no triangle for the encoder
    page.select_option("#kind", "decoder")
    masked = [(q, k) for q, k, _, m in cells(page) if m]
    assert masked and all(k > q for q, k in masked)
    assert page.locator("#target-row").is_visible()
    page.screenshot(path=str(tmp_path / "translation.png"), full_page=True)


def test_bad_input_shows_the_servers_message_and_a_screenshot_is_taken(page, server, tmp_path):
    page.fill("#text", "x" * 200)
    page.click("#look")
    page.wait_for_selector("#error:not([hidden])")
    assert "200 tokens but this model reads at most 128" in page.inner_text("#error")
    look(page)
    assert page.is_hidden("#error")
    page.hover('#tokens .chip[data-index="38"]')
    shot = tmp_path / "serve.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
    if os.environ.get("KQV_SCREENSHOTS"):
        Path(os.environ["KQV_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(os.environ["KQV_SCREENSHOTS"]) / "serve.png")


# --- the why views

IT = PIZZA.index(" it ") + 2  # the "t" of "it": the prediction explained is the space after it
CAKES = "pizza=cakes"  # the same number of characters: the char model's tokens line up


def ask_why(page, corrupt: str = "", target: str = "", query: int | None = IT) -> bool:
    """Press Why? with these inputs (the query by clicking its token); True once drawn, False on an error."""
    if query is not None:
        page.click(f'#tokens .chip[data-index="{query}"]')
        assert page.input_value("#why-query") == str(query)
    page.fill("#why-corrupt", corrupt)
    page.fill("#why-target", target)
    page.evaluate("document.querySelector('#why-status').textContent = ''")
    page.evaluate("document.querySelector('#why-error').textContent = ''")
    page.click("#why-go")
    page.wait_for_function(
        "() => document.querySelector('#why-status').textContent.endsWith(' ms')"
        " || document.querySelector('#why-error').textContent !== ''",
        timeout=90_000,
    )
    return page.is_hidden("#why-error")


def why_answer(server: str, **body) -> dict:
    return api(server, "/api/why", model="preset:default", text=PIZZA, **body).json()


def read_views(page) -> dict:
    """Every number the why views show, as the page's data attributes hold them."""
    return page.evaluate(
        """() => {
        const all = (sel, f) => [...document.querySelectorAll(sel)].map(f);
        const n = (x) => Number(x);
        return {
          lens: all('#why-lens-table td.lens-cell', c => [n(c.dataset.row), n(c.dataset.pos), n(c.dataset.value),
                                                           c.textContent, n(c.dataset.token), c.title]),
          resid: all('#why-patch-resid .pcell', c => [n(c.dataset.layer), n(c.dataset.pos), n(c.dataset.value),
                                                      c.title]),
          heads: all('#why-patch-heads .pcell', c => [n(c.dataset.layer), n(c.dataset.head), n(c.dataset.value)]),
          mlp: all('#why-patch-mlp .pcell', c => [n(c.dataset.layer), n(c.dataset.pos), n(c.dataset.value)]),
          dla: all('#why-dla-bars .dla-bar', b => [b.dataset.label, n(b.dataset.value), b.classList.contains('pos'),
                                                    b.title]),
          shading: Object.fromEntries(all('#why-shading .shade-row', r => [r.dataset.method,
            [...r.querySelectorAll('.shade-tok')].map(t => [n(t.dataset.index), n(t.dataset.value), t.textContent])])),
          answers: all('#why-answers li', l => [l.dataset.method, l.textContent]),
          agreement: document.querySelector('#why-agreement').textContent,
        };
    }"""
    )


def test_why_views_show_exactly_the_apis_numbers_and_a_screenshot_is_taken(page, server, tmp_path):
    from kqv.families import load_subject
    from kqv.inspect.attention import token_label, token_texts

    look(page)
    assert ask_why(page, CAKES)
    expected = why_answer(server, query_index=IT, corrupt=CAKES)
    r, T = expected["results"], len(PIZZA)
    shown = read_views(page)
    # one line per method, and the agreement
    assert shown["answers"] == [[a["method"], a["summary"].replace("*", "")] for a in expected["answers"]]
    assert expected["agreement"]["word"] in shown["agreement"]
    # the lens table: rows × positions, the top token written in each cell, P(target) its number
    lens = r["lens"]
    assert [(row, pos) for row, pos, *_ in shown["lens"]] == [
        (i, t) for i in range(len(lens["rows"])) for t in range(T)
    ]
    tokenizer = load_subject(preset="default", seed=0).tokenizer  # the same char vocabulary, independently
    for row, pos, value, text, token, title in shown["lens"]:
        assert value == lens["target_prob"][row][pos]
        assert token == lens["top_ids"][row][pos][0] and text == lens["top_tokens"][row][pos][0]
        assert text == token_label(token_texts(tokenizer, [token])[0])
        assert lens["rows"][row] in title
    # patching: layer × position (residual stream, MLP) and layer × head
    patch = r["patch"]
    assert [c[:3] for c in shown["resid"]] == [[i, t, patch["resid"][i][t]] for i in range(4) for t in range(T)]
    assert [c[:3] for c in shown["mlp"]] == [[i, t, patch["mlp"][i][t]] for i in range(4) for t in range(T)]
    assert shown["heads"] == [[i, h, patch["heads"][i][h]] for i in range(4) for h in range(4)]
    assert all(title for *_, title in shown["resid"])
    assert page.locator("#why-patch-note").count() == 0
    # DLA: one bar per part, coloured by sign
    dla = r["dla"]
    assert [(label, value, up) for label, value, up, _ in shown["dla"]] == [
        (label, value, value >= 0) for label, value in zip(dla["labels"], dla["values"], strict=True)
    ]
    # token shading: the rollout row of the query, grad×input, integrated gradients
    rows = {"rollout": r["rollout"]["final"][IT], "grad×input": r["grad"]["grad×input"]["scores"],
            "integrated gradients": r["grad"]["integrated gradients"]["scores"]}  # fmt: skip
    assert list(shown["shading"]) == list(rows)
    for method, scores in rows.items():
        assert shown["shading"][method] == [[i, scores[i], expected["tokens"][i]] for i in range(T)]
    shot = tmp_path / "serve-why.png"
    page.locator("#why-panel").screenshot(path=str(shot))
    assert shot.stat().st_size > 20_000
    if os.environ.get("KQV_SCREENSHOTS"):
        Path(os.environ["KQV_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(os.environ["KQV_SCREENSHOTS"]) / "serve-why.png")


def test_why_shows_the_servers_one_line_message_for_a_bad_input(page, server):
    import httpx

    look(page)
    for corrupt, target, says in [("pizza=cake", "", "the corrupted text is 48 tokens and the clean one 49"),
                                  ("", "tasted", "target 'tasted' is 6 tokens")]:  # fmt: skip
        assert not ask_why(page, corrupt, target)
        body = {"model": "preset:default", "text": PIZZA, "query_index": IT}
        body.update({k: v for k, v in (("corrupt", corrupt), ("target", target)) if v})
        message = httpx.post(server + "/api/why", json=body, timeout=60).json()["error"]
        assert says in message and page.inner_text("#why-error") == message
        assert page.is_hidden("#why-result")
    assert ask_why(page, query=None)  # no corruption: drawn, with a note that patching needs one
    assert page.is_visible("#why-patch-note") and "needs a corrupted text" in page.inner_text("#why-patch-note")
    assert page.locator("#why-patch-resid").count() == 0 and page.locator("#why-zero-ablation .pcell").count() == 16
    assert page.locator("#why-lens-table td.lens-cell").count() == 5 * len(PIZZA)
    assert page.is_hidden("#error")


def test_why_on_a_translation_model_shades_the_source(page, server):
    page.select_option("#model", "preset:translate/tiny")
    page.wait_for_selector('#tokens .seq[data-seq="target"]')
    assert ask_why(page, query=None)
    expected = api(server, "/api/why", model="preset:translate/tiny", text=PIZZA).json()
    source, t = expected["results"]["source"], expected["position"]
    shown = read_views(page)
    for method, key in [("cross-attention", "cross"), ("rollout", "rollout"), ("grad×input", "grad_x_input"),
                        ("integrated gradients", "integrated")]:  # fmt: skip
        assert [v for _, v, _ in shown["shading"][method]] == source[key][t]
    assert [text for *_, text in shown["shading"]["rollout"]] == expected["source_tokens"]
    assert len(shown["lens"]) == len(expected["results"]["lens"]["rows"]) * len(expected["target_tokens"])
    assert page.is_visible("#why-patch-note")  # no corruption given
