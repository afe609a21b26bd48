"""Screenshots of `kqv serve` for README: the page on a run, with the pointer on one token, then after a generation,
then the Why section (serve.png, serve-next.png, serve-why.png).

    .venv/bin/python scripts/serve_screenshot.py runs/kitchen --hover 8 --out docs/img
    .venv/bin/python scripts/serve_screenshot.py runs/kitchen --why-query it --corrupt pizza=cake

Needs Playwright for Python and Debian's chromium (never downloads a browser).
"""

import argparse
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

from kqv.commands.serve import load_explorers
from kqv.serve.app import create_app
from kqv.serve.server import serving_in_background

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--text", default="The pizza came out of the oven and it tasted good")
    parser.add_argument("--next-text", default="The pizza came out of the oven and it", help="text of the second shot")
    parser.add_argument("--hover", type=int, default=8, help="token index to put the pointer on")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generation shown")
    parser.add_argument(
        "--why-text", default="The pizza came out of the oven and it tasted good.", help="text of the why shot"
    )
    parser.add_argument("--why-query", default="it", help="the why shot's query: the last token that reads this word")
    parser.add_argument("--corrupt", default="pizza=cake", help="the why shot's corruption, WORD=WORD")
    parser.add_argument("--out", default="docs/img")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with serving_in_background(create_app(load_explorers(args.runs, []))) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=ARGS)
        page = browser.new_page(viewport={"width": 1366, "height": 1040})
        page.goto(url + "/")
        page.fill("#text", args.text)
        page.click("#look")
        page.wait_for_selector("#heatmap .cell")
        page.wait_for_selector("#bars .bar-row")
        page.hover(f'#tokens .chip[data-index="{args.hover}"]')
        page.wait_for_timeout(300)
        page.screenshot(path=str(out / "serve.png"))
        page.mouse.move(0, 0)
        page.fill("#text", args.next_text)
        before = page.locator("#tokens .chip").count()  # counted before the click: a short look may beat the count
        page.click("#look")
        page.wait_for_function("n => document.querySelectorAll('#tokens .chip').length < n", arg=before)
        page.focus("#temperature")
        for _ in range(10):
            page.keyboard.press("ArrowRight")  # temperature 1.5
        page.fill("#top-k", "5")
        page.wait_for_selector("#bars[data-settings='[1.5,5,null]']")
        page.fill("#seed", str(args.seed))
        page.fill("#max-new", "24")
        page.click("#generate")
        page.wait_for_function("() => document.querySelector('#generate-info').textContent.includes('tokens/s')")
        page.locator("#next-panel").scroll_into_view_if_needed()
        box_next, box_gen = page.locator("#next-panel").bounding_box(), page.locator("#generate-panel").bounding_box()
        top = min(box_next["y"], box_gen["y"])
        height = max(box_next["y"] + box_next["height"], box_gen["y"] + box_gen["height"]) - top
        page.screenshot(
            path=str(out / "serve-next.png"), clip={"x": 0, "y": top - 8, "width": 1366, "height": height + 16}
        )
        why_shot(page, args.why_text, args.why_query, args.corrupt, out / "serve-why.png")
        browser.close()
    print(f"wrote {out / 'serve.png'}, {out / 'serve-next.png'} and {out / 'serve-why.png'}")
    return 0


def why_shot(page, text: str, query: str, corrupt: str, path: Path) -> None:
    """The Why section after Why? with the query clicked in the token strip and a corruption."""
    page.fill("#text", text)
    page.evaluate("document.querySelector('#status').textContent = ''")
    page.click("#look")
    page.wait_for_function("() => document.querySelector('#status').textContent.endsWith(' ms')")
    index = page.evaluate(
        "w => [...document.querySelectorAll('#tokens .chip .tok')].map(t => t.textContent.replace(/␣/g, ' ').trim())"
        ".lastIndexOf(w)",
        query,
    )
    if index < 0:
        raise SystemExit(f"--why-query {query!r} is not a token of {text!r}")
    page.click(f'#tokens .chip[data-index="{index}"]')
    page.fill("#why-corrupt", corrupt)
    page.click("#why-go")
    page.wait_for_function(
        "() => document.querySelector('#why-status').textContent.endsWith(' ms')"
        " || !document.querySelector('#why-error').hidden",
        timeout=120_000,
    )
    if not page.is_hidden("#why-error"):
        raise SystemExit(f"why: {page.inner_text('#why-error')}")
    page.mouse.move(0, 0)
    page.locator("#why-panel").screenshot(path=str(path))


if __name__ == "__main__":
    sys.exit(main())
