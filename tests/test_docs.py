"""The README and the documentation site link to pages that exist, and every page is in the nav."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS = REPO_ROOT / "docs"
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")


def local_links(text: str) -> list[str]:
    return [m.group(1) for m in LINK.finditer(text) if "://" not in m.group(1)]


def nav_pages(nav) -> set[str]:
    if isinstance(nav, str):
        return {nav}
    if isinstance(nav, dict):
        return set().union(*(nav_pages(v) for v in nav.values()))
    return set().union(*(nav_pages(v) for v in nav)) if nav else set()


def test_every_readme_link_into_docs_names_an_existing_page():
    links = [link for link in local_links((REPO_ROOT / "README.md").read_text()) if link.startswith("docs/")]
    assert links, "the README links into docs/"
    missing = [link for link in links if not (REPO_ROOT / link).is_file()]
    assert not missing, f"README links to pages that do not exist: {missing}"


def test_the_readme_stays_a_first_read():
    assert len((REPO_ROOT / "README.md").read_text().splitlines()) < 250


def test_every_page_is_in_the_nav_and_every_nav_entry_exists():
    config = yaml.safe_load((REPO_ROOT / "mkdocs.yml").read_text())
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    in_nav = nav_pages(config["nav"])
    assert in_nav == pages, f"not in the nav: {sorted(pages - in_nav)}; in the nav, no page: {sorted(in_nav - pages)}"


def test_links_between_pages_name_existing_files():
    for page in DOCS.rglob("*.md"):
        for link in local_links(page.read_text()):
            assert (page.parent / link).exists(), f"{page.relative_to(REPO_ROOT)} links to {link}, which does not exist"
