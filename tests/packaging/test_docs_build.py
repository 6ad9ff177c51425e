"""The manual builds and its links resolve.

- ``mkdocs build --strict`` of ``mkdocs.yml`` (docs/*.md and the API reference that
  mkdocstrings builds from the docstrings) succeeds with no warning, into a temporary folder:
  what ``make docs`` runs. Skipped, saying so, where mkdocs and mkdocstrings are not installed
  (``pip install -e ".[docs]"``).
- Always: every relative link or image of README.md and docs/*.md names a file or folder that
  exists (relative to the document, the ``#anchor`` left off; web addresses and in-page anchors
  are not checked), and every page of docs/ is in the nav of mkdocs.yml. mkdocs itself cannot
  check the links to the repository's files outside docs/ (records under bench/ and
  experiments/), so this is the check of those.
"""
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^[ \t]*(```|~~~)[^\n]*\n.*?^[ \t]*\1[ \t]*$", re.S | re.M)
CODE = re.compile(r"`[^`\n]*`")
NAV_PAGE = re.compile(r"^\s*-\s*(?:[^:\n]+:\s*)?([\w./-]+\.md)\s*$", re.M)


def documents():
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def relative_links(text):
    """The link targets of markdown ``text`` that are paths: not in code, not web addresses
    (``scheme:``), not in-page anchors."""
    text = CODE.sub("", FENCE.sub("", text))
    return [t for t in LINK.findall(text) if not re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", t)
            and not t.startswith("#")]


def broken_links(doc, text):
    return [t for t in relative_links(text)
            if not (doc.parent / t.split("#", 1)[0]).exists()]


def _mkdocs_missing():
    missing = []
    for module in ("mkdocs", "mkdocstrings", "mkdocstrings_handlers.python"):
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:
            found = False
        if not found:
            missing.append(module)
    return missing


def test_mkdocs_build_is_strict_clean(tmp_path):
    missing = _mkdocs_missing()
    if missing:
        pytest.skip(f"mkdocs build not run: {', '.join(missing)} not installed "
                    "(pip install -e \".[docs]\", or make docs)")
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
         str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"mkdocs build --strict failed:\n{out.stdout}{out.stderr}"
    assert (tmp_path / "site" / "api" / "index.html").is_file()


@pytest.mark.parametrize("doc", documents(), ids=lambda d: d.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(doc):
    broken = broken_links(doc, doc.read_text(encoding="utf-8"))
    assert not broken, f"{doc.relative_to(ROOT)} links to files that do not exist: {broken}"


def test_every_page_is_in_the_nav():
    nav = set(NAV_PAGE.findall((ROOT / "mkdocs.yml").read_text(encoding="utf-8")))
    pages = {p.name for p in DOCS.glob("*.md")}
    assert pages <= nav, f"docs pages missing from the nav of mkdocs.yml: {sorted(pages - nav)}"
    assert nav <= pages, f"mkdocs.yml's nav names pages that do not exist: {sorted(nav - pages)}"


def test_a_broken_link_is_caught():
    text = ("[ok](docs/design.md#1-notation-and-the-maths), ![plot](no/such.png), "
            "[web](https://example.org/x.md), [here](#top), `[code](nowhere.md)`, "
            "[gone](docs/nothing.md#x)\n```\n[fenced](nowhere.md)\n```\n")
    assert broken_links(ROOT / "README.md", text) == ["no/such.png", "docs/nothing.md#x"]
