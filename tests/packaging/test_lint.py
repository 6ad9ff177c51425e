"""The repository passes its linter (ruff, configured in pyproject.toml; `make lint`)."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_ruff_is_clean():
    out = subprocess.run([sys.executable, "-m", "ruff", "check", str(REPO)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
