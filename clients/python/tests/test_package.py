"""The package as users get it: a source distribution and a wheel built
from it with hatchling, the wheel installed into a fresh virtual
environment and used against the real server; and source that Python 3.9
can read."""

from __future__ import annotations

import ast
import importlib.util
import os
import pathlib
import subprocess
import sys
import tarfile
import textwrap
import zipfile

HERE = pathlib.Path(__file__).resolve().parent
PACKAGE = HERE.parent


def test_source_reads_as_python_3_9() -> None:
    for path in sorted((PACKAGE / "src" / "tokenorchestrator").glob("*.py")):
        ast.parse(path.read_text(), filename=str(path), feature_version=(3, 9))


def test_package_license_is_the_repositorys() -> None:
    assert (PACKAGE / "LICENSE").read_text() == (PACKAGE.parent.parent / "LICENSE").read_text()


def test_wheel_installs_into_a_fresh_venv_and_claims(tmp_path: pathlib.Path, url: str, pool: str) -> None:
    dist = tmp_path / "dist"
    # Without --sdist or --wheel, build makes the source distribution and
    # then the wheel from it, as pip does when it installs from an sdist: a
    # file missing from the sdist breaks the wheel.
    # --no-isolation and --skip-dependency-check: hatchling and the build
    # tools come from the system (no package index here).
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--skip-dependency-check", "--outdir", str(dist), str(PACKAGE)],
        check=True,
        capture_output=True,
    )
    (sdist,) = dist.glob("tokenorchestrator-*.tar.gz")
    with tarfile.open(sdist) as t:
        members = {m.name.split("/", 1)[1] for m in t.getmembers() if "/" in m.name}
    assert {"LICENSE", "README.md", "pyproject.toml", "src/tokenorchestrator/py.typed"} <= members, members
    (wheel,) = dist.glob("tokenorchestrator-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        assert "tokenorchestrator/py.typed" in names
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in metadata
    assert "Requires-Python: >=3.9" in metadata
    assert any(n.endswith("/licenses/LICENSE") for n in names)

    venv = tmp_path / "venv"
    # The system's site packages give the venv httpx (no package index
    # here) and, where the system has it, pip: seconds quicker than a venv
    # of its own pip.
    no_pip = ["--without-pip"] if importlib.util.find_spec("pip") else []
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", *no_pip, str(venv)],
        check=True,
        capture_output=True,
    )
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
    )
    script = textwrap.dedent(
        """
        import sys, tokenorchestrator
        from tokenorchestrator import Client
        assert "site-packages" in tokenorchestrator.__file__, tokenorchestrator.__file__
        with Client(sys.argv[1]) as client:
            client.create_key(sys.argv[2])
            with client.claim(sys.argv[2]) as lease:
                print("claimed", lease.key_id)
            status = client.pool_status(sys.argv[2])
            print("released:", status.free, "of", status.keys, "free")
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [str(python), "-c", script, url, pool], check=True, capture_output=True, text=True, env=env, cwd=tmp_path
    )
    lines = out.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("claimed "), out.stdout
    assert lines[1] == "released: 1 of 1 free", out.stdout
