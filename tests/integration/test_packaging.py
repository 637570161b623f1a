"""The production package carries no development tools.

The Dockerfile installs `portex-pay` and its client from their pyproject files; this builds the
same server wheel and reads its file list. The fake Bot API, the embedded PostgreSQL and `make
run` live in `portex_pay_devtools`, a package of their own that only `make venv` installs.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_server_wheel_holds_no_devtools(tmp_path: Path) -> None:
    # Built from a copy: setuptools keeps a build/ directory in the source tree, and stale files
    # there would end up in the wheel.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "server",
        source / "server",
        ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"),
    )
    subprocess.run(
        [
            sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
            "--no-build-isolation", "--wheel-dir", str(tmp_path), str(source),
        ],
        check=True,
        timeout=120,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("portex_pay-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "portex_pay/app.py" in names
    assert "portex_pay/adapters/postgres/migrations/0001_initial.sql" in names
    assert not [name for name in names if "devtools" in name or "fake_bot_api" in name]
