"""Check that built HTML pages load nothing from the network.

``make docs`` runs ``python docs/_ext/check_offline.py docs/_build/html`` after
Sphinx: every ``<script src>``, stylesheet/preload/icon ``<link href>``, ``<img
src>``, ``<iframe src>``, ``<source src>`` and ``<object data>`` of every page
must be a relative path that exists in the build (MathJax included: it is
served from ``_static/mathjax`` by sphinx-mathjax-offline), so the pages
render on a machine without internet. Hyperlinks (``<a href>``) may point
anywhere: following one is the reader's choice, not a load.

Exit status 0 when clean, 1 with one line per offending reference.
"""

from __future__ import annotations

import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

#: (tag, attribute) pairs that make the browser fetch something when the page loads
LOADED = {("script", "src"), ("img", "src"), ("iframe", "src"), ("source", "src"), ("object", "data"),
          ("embed", "src"), ("video", "src"), ("audio", "src")}
#: <link rel=...> values that load a resource
LOADING_RELS = {"stylesheet", "preload", "modulepreload", "icon", "shortcut", "apple-touch-icon", "manifest",
                "prefetch"}


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.refs: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for t, attr in LOADED:
            if tag == t and a.get(attr):
                self.refs.append((f"<{tag} {attr}>", a[attr]))
        if tag == "link" and a.get("href"):
            rels = set((a.get("rel") or "").lower().split())
            if rels & LOADING_RELS:
                self.refs.append(("<link href>", a["href"]))


def loaded_references(html: str) -> list[tuple[str, str]]:
    """(what, url) of every resource the page loads."""
    p = _Refs()
    p.feed(html)
    p.close()
    return p.refs


def problems(page: Path, root: Path) -> list[str]:
    """One message per reference of ``page`` that is external or missing from the build under ``root``."""
    out = []
    for what, url in loaded_references(page.read_text(encoding="utf-8", errors="replace")):
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob"):
            continue
        if parts.scheme or url.startswith("//"):
            out.append(f"{page.relative_to(root)}: {what} loads {url} from the network")
            continue
        if not parts.path:
            continue
        target = (page.parent / unquote(parts.path)).resolve()
        if not target.is_file():
            out.append(f"{page.relative_to(root)}: {what} {url} is not in the build")
    return out


def check(root: Path) -> list[str]:
    root = Path(root)
    # _static holds the theme's assets, among them Jinja templates named *.html that are not pages
    pages = sorted(p for p in root.rglob("*.html") if "_static" not in p.relative_to(root).parts)
    if not pages:
        return [f"no HTML pages under {root} (run make docs first)"]
    return [msg for page in pages for msg in problems(page, root)]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: check_offline.py BUILD_DIR", file=sys.stderr)
        return 2
    found = check(Path(argv[0]))
    for msg in found:
        print(msg, file=sys.stderr)
    if found:
        print(f"{len(found)} resource reference(s) would need the network or are missing", file=sys.stderr)
        return 1
    print(f"offline check: every page under {argv[0]} loads only files of the build")
    return 0


if __name__ == "__main__":
    sys.exit(main())
