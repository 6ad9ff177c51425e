"""bench/ and experiments/ each have a README that lists every file: a benchmark or an
experiment nobody can find from its README does not exist for a newcomer (docs/layout.md)."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SKIP = {"__init__.py", "README.md"}


def _files(folder):
    """The files a README of ``folder`` must name: its own files (not subfolders' contents),
    without ``__init__.py``, caches and the README itself."""
    return sorted(p.name for p in folder.iterdir()
                  if p.is_file() and p.name not in SKIP and not p.name.endswith(".pyc"))


def unlisted(readme, names):
    text = readme.read_text(encoding="utf-8")
    return [n for n in names if n not in text]


def test_bench_readme_lists_every_file():
    bench = ROOT / "bench"
    assert unlisted(bench / "README.md", _files(bench)) == []


def test_every_experiment_has_a_readme_listed_in_the_index():
    exp = ROOT / "experiments"
    folders = sorted(p for p in exp.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert [f.name for f in folders if not (f / "README.md").exists()] == []
    assert unlisted(exp / "README.md", [f"experiments/{f.name}/" for f in folders]) == []
    assert unlisted(exp / "README.md", _files(exp)) == []


def test_each_experiment_readme_lists_its_files():
    missing = {}
    for readme in sorted((ROOT / "experiments").glob("*/README.md")):
        names = unlisted(readme, _files(readme.parent))
        if names:
            missing[readme.parent.name] = names
    assert missing == {}


def test_a_missing_name_is_caught(tmp_path):
    (tmp_path / "README.md").write_text("`run.py` writes `report.md`.")
    for name in ("run.py", "report.md", "extra.csv", "__init__.py"):
        (tmp_path / name).write_text("")
    assert unlisted(tmp_path / "README.md", _files(tmp_path)) == ["extra.csv"]
