"""The documentation: the README's links reach docs/ pages, every page is in the site's nav, and
the site builds with strict link and anchor checks (what CI runs)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def test_readme_links_resolve_and_readme_stays_short() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [l for l in links if not re.match(r"[a-z]+://", l)]
    assert any(l.startswith("docs/") for l in local)
    for link in local:
        assert (REPO / link).exists(), link
    assert len(text.splitlines()) <= 260


def test_every_page_is_in_the_nav() -> None:
    cfg = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))
    nav = {next(iter(item.values())) for item in cfg["nav"]}
    pages = {p.name for p in (REPO / "docs").glob("*.md")}
    assert pages == nav, (pages ^ nav)


def test_site_builds_strict(tmp_path: Path) -> None:
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent))
    if mkdocs is None:
        pytest.skip("mkdocs is not installed (the docs extra)")
    r = subprocess.run([mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "site" / "index.html").is_file()
