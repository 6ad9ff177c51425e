"""Every repository path that the documentation cites exists: README.md, docs/*.md,
bench/README.md and experiments/**/README.md.

Checked: the target of every markdown link or image (relative to the document's folder; web
addresses and anchors are not paths); every word inside backticks that starts with one of the
repository's own folders (``bench/``, ``experiments/``, ``docs/``, ...; relative to the root);
every module after ``python -m`` that lives in ``bench`` or ``experiments``; and, in
bench/README.md, experiments/README.md and each experiment's own README.md, every bare file name
ending in .py, .md, .csv or .png (in the README's folder or a folder below it). Paths under
scratch folders (``runs/``, ``/tmp``, ``~``, ``../shared``), placeholders in capitals, the
example op ``foo`` of docs/adding_an_op.md and patterns with ``*``, ``<...>`` or ``{...}`` are
not checked.
"""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TRACKED = ("bench", "experiments", "docs", "tests", "fastair", "kernels", "csrc")
EXTENSIONS = (".py", ".md", ".csv", ".png")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^[ \t]*(```|~~~)[^\n]*\n(.*?)^[ \t]*\1[ \t]*$", re.S | re.M)
CODE = re.compile(r"`([^`]+)`")
WORD = re.compile(r"^[A-Za-z0-9_.\-/]+$")
MODULE = re.compile(r"python -m\s+((?:bench|experiments)(?:\.[A-Za-z0-9_]+)+)")
PLACEHOLDERS = {"foo"}  # the example op of docs/adding_an_op.md


def documents():
    docs = [ROOT / "README.md", ROOT / "bench" / "README.md"]
    docs += sorted((ROOT / "docs").glob("*.md"))
    docs += sorted((ROOT / "experiments").rglob("README.md"))
    return [d for d in docs if d.is_file()]


def _module_file(module):
    parts = module.split(".")
    return ROOT.joinpath(*parts[:-1]) / f"{parts[-1]}.py"


def _below(folder, name):
    """``folder/name``, or the first file of that name in a folder below it."""
    here = folder / name
    return here if here.exists() else next(folder.rglob(name), here)


def cited_paths(doc, text):
    """``[(what the document says, the path it must exist at)]`` for ``text`` read from
    ``doc``."""
    out = []
    # the READMEs that list their folder's files by bare name
    strict_names = doc.parent in (ROOT / "bench", ROOT / "experiments") or (
        doc.parent.parent == ROOT / "experiments")
    fenced = [body for _, body in FENCE.findall(text)]
    text = FENCE.sub("", text)
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = target.split("#", 1)[0]
        out.append((target, (doc.parent / path) if path else doc))
    for span in fenced + CODE.findall(text):
        for module in MODULE.findall(" ".join(span.split())):
            if not module.split(".")[-1].isupper():  # python -m bench.NAME
                out.append((f"python -m {module}", _module_file(module)))
        for word in span.split():
            word = word.strip(",;:()'\"")
            if not word or not WORD.match(word) or word.startswith((".", "-")):
                continue
            if PLACEHOLDERS & {part.split(".")[0] for part in word.split("/")}:
                continue
            if "/" in word:
                if word.split("/", 1)[0] in TRACKED:
                    out.append((word, ROOT / word))
            elif strict_names and word.endswith(EXTENSIONS) and not word.split(".")[0].isupper():
                out.append((word, _below(doc.parent, word)))
    return out


def missing_paths(doc, text):
    return [cited for cited, path in cited_paths(doc, text) if not path.exists()]


@pytest.mark.parametrize("doc", documents(), ids=lambda d: d.relative_to(ROOT).as_posix())
def test_every_cited_path_exists(doc):
    missing = missing_paths(doc, doc.read_text(encoding="utf-8"))
    assert not missing, f"{doc.relative_to(ROOT)} cites paths that do not exist: {missing}"


def test_the_documents_are_found():
    names = {d.relative_to(ROOT).as_posix() for d in documents()}
    assert {"README.md", "bench/README.md", "docs/design.md", "experiments/README.md"} <= names
    # the manual's pages (docs/index.md links them all)
    assert {f"docs/{page}.md" for page in (
        "index", "install", "loss", "training", "reproduce", "evaluation", "ops", "data", "gpu",
        "distributed", "layout", "adding_an_op", "api")} <= names


def test_a_made_up_path_is_caught():
    readme = ROOT / "README.md"
    text = ("See `bench/results/no_such_record/report.md`, [it](experiments/nowhere.md), "
            "`python -m bench.no_such_benchmark --quick` and `docs/design.md`; not "
            "`runs/scratch/x.csv`, `OUT_DIR/FILE.md` or [a site](https://example.org/x.md).")
    assert sorted(missing_paths(readme, text)) == ["bench/results/no_such_record/report.md",
                                                   "experiments/nowhere.md",
                                                   "python -m bench.no_such_benchmark"]
    experiment = ROOT / "experiments" / "table3_ais" / "README.md"
    assert missing_paths(experiment, "`run.py` writes `report.md` and `nothing.csv`") == [
        "nothing.csv"]
