"""Headless Chromium over the built book, served on localhost (Playwright driving Debian's Chromium): what a
reader without a network sees. Used by tests/test_chapters.py; run it by hand on a built book with
``python tests/browser.py _build/book-quick``."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
import urllib.parse
from contextlib import contextmanager
from pathlib import Path

FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--no-first-run", "--disable-sync", "--disable-quic"]
WIDTHS = (1280, 390)  # a laptop and a phone
SCHEMES = ("light", "dark")


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # no log line per request
        pass


@contextmanager
def serve(folder: Path):
    """Serve ``folder`` on 127.0.0.1 (a free port) for the duration; yields the base URL."""
    handler = functools.partial(_Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def inspect(book: Path, pages: list[str], shots: Path) -> dict[str, dict]:
    """Open every page at each width and theme; screenshot each view into ``shots``; return per page what the
    browser saw (requests to other hosts, typeset formulas, links, boxes, the scorecard's verdict column)."""
    from playwright.sync_api import sync_playwright

    shots.mkdir(parents=True, exist_ok=True)
    seen: dict[str, dict] = {}
    with serve(book) as base, sync_playwright() as pw:
        host = urllib.parse.urlparse(base).netloc
        browser = pw.chromium.launch(executable_path=chromium(), args=FLAGS)
        try:
            for rel in pages:
                for width in WIDTHS:
                    for scheme in SCHEMES:
                        ctx = browser.new_context(viewport={"width": width, "height": 900}, color_scheme=scheme)
                        ctx.add_init_script(f"localStorage.setItem('theme', '{scheme}'); "
                                            f"localStorage.setItem('mode', '{scheme}');")
                        page = ctx.new_page()
                        off_host, failed = [], []
                        page.on("request", lambda r: off_host.append(f"{r.resource_type} {r.url}")
                                if urllib.parse.urlparse(r.url).netloc not in (host, "") else None)
                        page.on("requestfailed", lambda r: failed.append(r.url))
                        main = width == WIDTHS[0] and scheme == SCHEMES[0]
                        # the main view waits for the network to fall quiet, so late requests are seen too
                        page.goto(base + rel, wait_until="networkidle" if main else "load")
                        has_math = page.locator("span.math, div.math").count() > 0
                        if has_math:
                            page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise",
                                                   timeout=20_000)
                            page.evaluate("() => MathJax.startup.promise")
                        view = {"off_host": off_host, "failed": failed, "has_math": has_math,
                                "theme": page.evaluate("() => document.documentElement.dataset.theme"),
                                "overflow_px": page.evaluate(
                                    "() => document.documentElement.scrollWidth - window.innerWidth")}
                        if main:
                            view.update(_details(page, base, rel))
                        seen.setdefault(rel, {})[f"{width}-{scheme}"] = view
                        name = rel.replace("/", "_").removesuffix(".html")
                        # the whole page in one tall viewport (a full-page capture repeats the sticky header)
                        height = page.evaluate("() => document.documentElement.scrollHeight")
                        page.set_viewport_size({"width": width, "height": min(height, 16_000)})
                        page.screenshot(path=str(shots / f"{name}-{width}-{scheme}.jpg"), type="jpeg", quality=75)
                        ctx.close()
        finally:
            browser.close()
    return seen


def _details(page, base: str, rel: str) -> dict:
    """What the checks read once per page (at the laptop width, light theme)."""
    out = {
        "typeset": page.locator("mjx-container").count(),
        "raw_tex": "\\(" in page.inner_text("article") or "\\[" in page.inner_text("article"),
        "colab": page.locator("a[href*='colab.research.google.com']").count(),
        "provenance": page.locator(".admonition.dropdown", has_text="Provenance").count(),
        "run_box": page.locator(".admonition", has_text="Run it yourself").count(),
        "tables": page.locator("p.dn-caption + div.dn-table-wrap table.dn-table").count(),
        "broken_images": page.evaluate("() => [...document.querySelectorAll('article img')]"
                                       ".filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"),
        "errors": page.locator(".output.error, .cell_output .traceback").count()
                  + ("Traceback (most recent call last)" in page.content()),
        "injected_visible": page.locator(".tag_injected-parameters:not(.tag_hide-input)").count(),
    }
    downloads = {}
    for a in page.locator("a[href$='.ipynb'], a[href$='full.json']").all():
        href = a.get_attribute("href")
        url = urllib.parse.urljoin(base + rel, href)
        if url in downloads or not url.startswith(base):  # the launch buttons' links leave the book
            continue
        resp = page.request.get(url)
        body = resp.body() if resp.ok else b""
        downloads[url] = {"status": resp.status, "outputs": _outputs(body) if url.endswith(".ipynb") else None,
                          "json": url.endswith(".json") and resp.ok and bool(json.loads(body))}
    out["downloads"] = downloads
    verdict = page.locator("th", has_text="verdict").first
    if verdict.count():
        verdict.scroll_into_view_if_needed()
        box = verdict.bounding_box()
        out["verdict_right_px"] = None if box is None else box["x"] + box["width"]
    return out


def _outputs(body: bytes) -> int:
    """The number of code cells with outputs in a downloaded notebook."""
    try:
        nb = json.loads(body)
    except ValueError:
        return 0
    return sum(1 for c in nb.get("cells", []) if c.get("cell_type") == "code" and c.get("outputs"))


if __name__ == "__main__":
    import sys

    book = Path(sys.argv[1])
    pages = sys.argv[2:] or sorted(str(p.relative_to(book)) for p in book.rglob("*.html")
                                   if "_static" not in p.parts and p.name not in ("search.html", "genindex.html"))
    print(json.dumps(inspect(book, pages, book.parent / "screenshots"), indent=1))
