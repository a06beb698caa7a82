"""The land-cover walkthrough of docs/landcover.md, run as written: scene, train, batch, map.

A small scene (4 x 4 chips of 224 px) keeps it to about a minute: the ImageNet-trained EfficientNet-Lite0 is
compiled headless, featurizes the training scene's chips on a local Dask cluster, a logistic head is trained on
them and scores the other scene's chips; the map must carry the source's georeference and match the label
raster on most chips (the textures are distinct; the measured accuracy is in the docs).
"""
import json
import re
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio

from npu_toolkit.cli import main
from runtime.heads import MlpHead, load_head
from runtime.scenes import CLASSES

pytestmark = pytest.mark.slow


def _walkthrough_commands() -> list[list[str]]:
    """The four commands in docs/landcover.md's walkthrough block, as argument lists."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "landcover.md").read_text()
    block = text.split("```sh", 1)[1].split("```", 1)[0]
    return [line.split("#")[0].split()[1:] for line in block.strip().splitlines() if line.startswith("npu ")]


def test_the_docs_walkthrough_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    commands = _walkthrough_commands()
    assert [c[:2] for c in commands] == [["landcover", "scene"], ["landcover", "train"], ["batch", "lc/featurizer.npuz"],
                                         ["landcover", "map"]]
    scene = commands[0] + ["--size", "896"]                  # the docs' scene is 2240 px; 896 px keeps this short
    assert main(scene) == 0
    assert main(commands[1]) == 0
    out = capsys.readouterr().out
    assert re.search(r"validation accuracy \d\.\d+ on \d+ chips", out)
    head = load_head("lc/head.npz")
    assert head.labels == list(CLASSES) and not isinstance(head, MlpHead)
    features = pq.read_table("lc/features/parts")
    assert len(features) == 16 and len(features.column("output")[0]) == 1280
    assert main(commands[2]) == 0
    out = capsys.readouterr().out
    assert "images/s per device" in out and "~381" in out
    assert main(commands[3]) == 0
    out = capsys.readouterr().out
    accuracy = float(re.search(r"accuracy against \S+: (\d\.\d+) over 16 chips", out).group(1))
    assert accuracy >= 0.6                                     # 5 classes: chance is 0.2
    with rasterio.open("data/area.tif") as src, rasterio.open("lc/area_map.tif") as m:
        assert m.crs == src.crs and (m.width, m.height) == (4, 4)
        assert m.transform.a == pytest.approx(src.transform.a * 224) and m.transform.c == src.transform.c
        classes = m.read(1)
    assert set(np.unique(classes)) <= set(range(len(CLASSES)))
    assert (tmp_path / "lc" / "area_map.png").stat().st_size > 5_000
    assert json.loads((tmp_path / "lc" / "train_report.json").read_text())["classes"] == list(CLASSES)
    shutil.rmtree(tmp_path / "lc" / "area" / "parts")        # a rerun of the batch rescoring everything agrees
    assert main(commands[2]) == 0 and main(commands[3]) == 0
    assert float(re.search(r"accuracy against \S+: (\d\.\d+)", capsys.readouterr().out).group(1)) == accuracy
