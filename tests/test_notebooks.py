"""The notebooks run headless on tiny settings (nbclient, this interpreter's ipykernel) and are committed without
large outputs.

Each notebook has one code cell tagged ``parameters``; the tests add a cell after it that overrides those values
(as papermill does), and a last cell that prints the notebook's ``RESULTS`` as JSON for the assertions.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
RESULTS_MARK = "RESULTS_JSON="


def _kernel_manager(tmp_path: Path):
    """A kernel manager whose kernel is this very interpreter (the project's venv), not whatever "python3"
    kernelspec Jupyter would find first on this machine."""
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    spec_dir = tmp_path / "kernels" / "vgs-test"
    spec_dir.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec_dir / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "vgs-test", "language": "python"}))
    specs = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")])
    return KernelManager(kernel_name="vgs-test", kernel_spec_manager=specs)


def run_notebook(name: str, params: dict, tmp_path: Path, timeout: int = 240) -> tuple[dict, object]:
    """Execute notebooks/<name> with `params` injected after its parameters cell, from the notebooks folder (as
    Jupyter would); returns the notebook's RESULTS and the executed notebook."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{name}: expected one cell tagged 'parameters', found {len(tagged)}"
    names = {line.split("=")[0].strip() for line in nb.cells[tagged[0]].source.splitlines()
             if "=" in line and not line.startswith((" ", "#"))}
    assert set(params) <= names, f"{name}: parameters {set(params) - names} are not in its parameters cell"
    injected = "\n".join(f"{k} = {v!r}" for k, v in params.items())
    check = f"import sys\nassert sys.executable == {sys.executable!r}, sys.executable"
    nb.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell(injected + "\n" + check,
                                                             metadata={"tags": ["injected-parameters"]}))
    report = f"import json\nprint({RESULTS_MARK!r} + json.dumps(RESULTS, default=str))"
    nb.cells.append(nbformat.v4.new_code_cell(report))
    client = nbclient.NotebookClient(nb, timeout=timeout, km=_kernel_manager(tmp_path),
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.get("output_type") == "stream")
    line = next(x for x in text.splitlines() if x.startswith(RESULTS_MARK))
    return json.loads(line[len(RESULTS_MARK):]), nb


def _is_png(path: str | Path) -> bool:
    data = Path(path).read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


@pytest.mark.slow
def test_model_comparison_notebook(tmp_path):
    results, nb = run_notebook("model_comparison.ipynb", {"FULL_SIZE": False, "FIG_DIR": str(tmp_path / "figs")},
                               tmp_path)
    labels = {"NIPS2016", "ACL2017", "DAVEnet", "ResDAVEnet", "ResDAVEnet (released widths)", "Place classifier"}
    assert labels <= set(results["params"])
    for p in results["params"].values():
        assert p["total"] == p["audio"] + p["image"] + p["head"] and p["trainable"] + p["frozen"] == p["total"]
        assert p["audio"] > 0
    # NIPS2016 freezes its VGG16 backbone (and nothing else); DAVEnet trains everything
    assert results["params"]["NIPS2016"]["frozen"] == results["params"]["NIPS2016"]["image frozen"] > 0
    assert results["params"]["DAVEnet"]["frozen"] == 0
    # frame-level nets downsample by 16; pooled nets give one vector per caption, whatever the length
    assert results["audio_out"]["DAVEnet"]["2048"][-1] == 128 and results["audio_out"]["DAVEnet"]["1024"][-1] == 64
    assert len(results["audio_out"]["ACL2017"]["2048"]) == 2
    assert results["differences"]["similarity"]["DAVEnet"] == "MISA"
    assert results["differences"]["similarity"]["ResDAVEnet"] == "SISA"
    # the seed's fixed 64-frame classifier head gives two predictions per 2048-frame caption and fails on 1000
    # frames; ours gives one per caption for any length (batches of two captions)
    seed = results["seed_classifier"]
    assert seed["1024"] == [2, 205] and seed["2048"] == [2, 2, 205] and seed["1000"].startswith("RuntimeError")
    assert results["our_classifier"] == {"1000": [2, 205], "1024": [2, 205], "2048": [2, 205]}
    # the seed's extra ReLU makes every residual branch non-negative; the official block's is signed
    assert results["residual_negative_fraction"]["seed order"] == 0.0
    assert results["residual_negative_fraction"]["official order"] > 0.2
    assert _is_png(results["figure"])
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
    assert not errors


@pytest.mark.slow
def test_grounding_notebook_trains_a_tiny_model_and_measures_localisation(tmp_path):
    results, nb = run_notebook("grounding.ipynb", {"QUICK": True, "WORK_DIR": str(tmp_path / "work"),
                                                   "TRAIN_SECONDS": 6, "BATCH_SIZE": 8, "VQ_TRAIN_SECONDS": 3},
                               tmp_path)
    assert Path(results["checkpoint"]).is_file() and str(tmp_path) in results["checkpoint"]
    assert results["n_test"] == 16
    for word in ("shape", "name"):
        loc = results["localization"][word]
        assert 0.0 <= loc["accuracy"] <= 1.0 and 0.0 < loc["chance"] < 0.5 and loc["n_words"] > 10
    assert 0.0 <= results["retrieval"]["a2i_R@5"] <= 1.0
    assert len(results["top5_images"]) == 5 and len(results["top5_captions"]) == 5
    assert len(results["figures"]) == 5 and all(_is_png(f) for f in results["figures"])
    # the units section: a small ResDAVEnet-VQ {2,3} model's codes of the example caption, 20 and 40 ms per code
    units = results["units"]
    assert units["layers"] == [2, 3] and Path(units["checkpoint"]).is_file()
    for k, per_code in ((2, 2), (3, 4)):
        assert len(units["codes"][str(k)]) == math.ceil(units["frames"] / per_code)
        assert 1 <= units["segments"][str(k)] <= len(units["codes"][str(k)])


@pytest.mark.slow
def test_units_notebook_runs_every_analysis(tmp_path):
    results, nb = run_notebook("units.ipynb", {"QUICK": True, "WORK_DIR": str(tmp_path / "work"), "MAX_ITEMS": 200,
                                               "KMEANS": 16}, tmp_path)
    assert results["n_captions"] == 12 and results["alignment_ok"] and 30 < results["phone_median_ms"] < 150
    assert 0 <= results["words"]["detected"] <= results["words"]["n_words"] and results["words"]["top"]
    # QUICK's model is a ResDAVEnet-VQ {3}: its codes are the units, scored in ABX beside every stage
    assert results["model"] == "ResDAVEnetVQ" and results["units"]["source"] == "VQ codes of position 3"
    assert results["units"]["seconds_per_frame"] == 0.04 and 1 <= results["units"]["codes_used"] <= 32
    assert set(results["abx"]) == {"input", "conv1", "layer1", "layer2", "layer3", "layer4", "vq3"}
    assert all(0 <= v["across"] <= 1 for v in results["abx"].values())
    assert len(results["boundaries"]) == 2 and all(0 <= v["f1"] <= 1 for v in results["boundaries"].values())
    assert len(results["figures"]) == 1 and _is_png(results["figures"][0])
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
    assert not errors


@pytest.mark.parametrize("name", ["model_comparison.ipynb", "grounding.ipynb", "units.ipynb"])
def test_committed_notebooks_have_no_large_outputs(name):
    path = NOTEBOOKS / name
    assert path.stat().st_size < 100_000, f"{path} is {path.stat().st_size} bytes: strip its outputs"
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    sizes = [len(json.dumps(o)) for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert sum(sizes) < 5_000, f"{name}: {sum(sizes)} bytes of outputs are committed; strip them"
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert not images, f"{name}: committed with images in its outputs"
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code"
