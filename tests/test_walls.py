"""The walls of docs/architecture.md, checked in fresh interpreters (an import in this process would hide them).

- every module of ``lightning_modules/nets/`` and ``lightning_modules/core/`` loads neither Lightning, torchmetrics
  nor ``datamodules``: they are the plain-torch library;
- every module of ``datamodules`` loads no ``lightning_modules``;
- outside the entry points (``lightning_modules/analysis/``), ``lightning_modules`` loads no ``datamodules``.
"""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _modules(package: str) -> list[str]:
    """Every module of a package folder (the package itself included), by dotted name, without importing it."""
    folder = REPO / package.replace(".", "/")
    names = [package]
    for info in pkgutil.walk_packages([str(folder)], prefix=f"{package}."):
        names.append(info.name)
    return sorted(n for n in names if not n.endswith("__main__"))


# One subprocess per test: an interpreter that imports the allowed heavy dependencies once (torch, numpy, PIL:
# no wall concerns them), then forks a child per module, imports the module there alone and reports the
# top-level packages it loaded.
_PROBE = r"""
import json, os, sys
import importlib
for name in ["numpy", "PIL.Image", "torch", "torchvision"] + os.environ["PRELOAD"].split():
    importlib.import_module(name)  # allowed where this runs; preloaded once for speed
results = {}
for mod in sys.argv[1:]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            importlib.import_module(mod)
            msg = json.dumps(sorted({m.split('.')[0] for m in sys.modules}))
        except BaseException as err:
            msg = json.dumps({"error": repr(err)})
        os.write(write, msg.encode())
        os._exit(0)
    os.close(write)
    chunks = []
    while True:
        chunk = os.read(read, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.waitpid(pid, 0)
    results[mod] = json.loads(b"".join(chunks))
print(json.dumps(results))
"""


def _probe(modules: list[str], preload: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Import each module alone in a fresh interpreter: module -> the top-level packages loaded.
    ``preload``: packages imported once before the fork, where they are allowed (Lightning takes 3 s)."""
    env = {**os.environ, "PRELOAD": " ".join(preload)}
    done = subprocess.run([sys.executable, "-c", _PROBE, *modules], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    for mod, pkgs in out.items():
        assert not isinstance(pkgs, dict), f"importing {mod} failed: {pkgs['error']}"
    return out


PLAIN = ("lightning_modules.nets", "lightning_modules.core")
ENTRY_POINTS = ("lightning_modules.analysis",)


@pytest.fixture(scope="module")
def loaded() -> dict[str, list[str]]:
    """Module -> top-level packages it loads alone; two probe runs (without and with Lightning preloaded)."""
    plain = [m for package in PLAIN for m in _modules(package)]
    rest = [m for m in _modules("lightning_modules") if not m.startswith(PLAIN + ENTRY_POINTS)]
    rest += _modules("datamodules")
    out = _probe(plain)
    out.update(_probe(rest, preload=("pytorch_lightning", "torchmetrics")))
    return out


def _forbidden(loaded: dict[str, list[str]], prefix: str, forbidden: tuple[str, ...]) -> list[str]:
    return [f"{mod} loads {sorted(set(pkgs) & set(forbidden))}" for mod, pkgs in sorted(loaded.items())
            if mod.startswith(prefix) and set(pkgs) & set(forbidden)]


@pytest.mark.parametrize("package", PLAIN)
def test_plain_torch_library_loads_no_lightning_torchmetrics_or_datamodules(loaded, package):
    assert sum(m.startswith(package) for m in loaded) > 3  # the walk found the files
    assert not _forbidden(loaded, package, ("pytorch_lightning", "lightning", "torchmetrics", "datamodules"))


def test_datamodules_load_no_lightning_modules(loaded):
    assert "datamodules.places_audio" in loaded
    assert not _forbidden(loaded, "datamodules", ("lightning_modules",))


def test_lightning_modules_load_datamodules_only_in_entry_points(loaded):
    assert "lightning_modules.base" in loaded and "lightning_modules.convert" in loaded
    outside = {m: p for m, p in loaded.items() if m.startswith("lightning_modules") and not m.startswith(PLAIN)}
    assert not _forbidden(outside, "lightning_modules", ("datamodules",))
