"""The check of a built book: every internal link, image, download and anchor of its HTML resolves
(`build_html` refuses a book that fails it)."""

from __future__ import annotations

import os
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit


class _LinkCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, val in attrs:
            if key in ("href", "src") and val:
                self.urls.append(val)


def broken_internal_links(html_dir: str | os.PathLike[str]) -> list[str]:
    """Every `page: url` of the built pages whose local target (page, image, download, anchor) is missing.

    The theme's own templates under `_static/` are not pages and are not checked."""
    root = Path(html_dir)
    broken = []
    ids_cache: dict[Path, set[str]] = {}
    for page in sorted(p for p in root.rglob("*.html") if "_static" not in p.relative_to(root).parts):
        collector = _LinkCollector()
        collector.feed(page.read_text(encoding="utf-8"))
        for url in collector.urls:
            parts = urlsplit(url)
            if parts.scheme or parts.netloc or url.startswith("mailto:"):
                continue
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page.resolve()
            if not target.exists():
                broken.append(f"{page.relative_to(root)}: {url}")
                continue
            if parts.fragment and target.suffix == ".html":
                if target not in ids_cache:
                    text = target.read_text(encoding="utf-8")
                    ids_cache[target] = set(re.findall(r'\bid="([^"]+)"', text))
                if unquote(parts.fragment) not in ids_cache[target]:
                    broken.append(f"{page.relative_to(root)}: {url} (no such anchor)")
    return broken
