"""Choosing a format per layer (``compiler.auto_precision``, ``npu compile --precision auto``).

The chooser's own evaluation is checked against the compiled program it
describes (compiled independently, evaluated by the reference that the
simulator matches bit for bit, compared with onnxruntime), on real
photographs.
"""
import json

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from compiler.auto_precision import DEFAULT_CANDIDATES, choose_from, choose_precisions, measure_sensitivity
from compiler.compile import compile_model, layer_format_pair
from compiler.errors import CompileError
from compiler.models import nets
from compiler.models.photos import load_photos
from compiler.reference import reference_outputs
from npu.numerics.formats import get_format
from npu.npuz import load_program
from npu_toolkit.cli import AUTO_CANDIDATES, main

CONFIG = "tiny"
CANDIDATES = ("ms-fp8", "mxfp6", "bfp24")


def _cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def setting():
    model = nets.mobile_small()
    recipe = compile_model(model, CONFIG, "wide").program.metadata.preprocess
    photos = [recipe.array(img) for _, img in load_photos(["chelsea", "coffee", "astronaut"])]
    sens = measure_sensitivity(model, CONFIG, photos, candidates=CANDIDATES)
    return model, photos, sens


def _onnxruntime(model, x):
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0].ravel()       # graph optimisations on: not the chooser's


@pytest.mark.parametrize("target", [0.999, 0.99999])
def test_the_choice_compiled_on_its_own_keeps_the_target_it_reports(setting, target):
    model, photos, sens = setting
    choice = choose_from(sens, target)
    assert min(choice.cosines) >= target
    compiled = compile_model(model, CONFIG, choice.default, layer_formats=choice.layers)
    desc = compiled.program.inputs[0]
    for x, reported in zip(photos, choice.cosines):
        y = next(iter(reference_outputs(compiled, {desc.name: x}).values()))
        assert _cosine(y, _onnxruntime(model, x)) == pytest.approx(reported, abs=1e-7)
    recorded = compiled.program.metadata.layer_formats       # the program really multiplies in the chosen formats
    for layer in sens.layers:
        w, a = layer_format_pair(choice.precision_of(layer.name))
        assert recorded[layer.name] == {"weight": w, "activation": a}


def test_a_looser_target_costs_fewer_bits_and_moves_layers_off_the_safest(setting):
    _, _, sens = setting
    strict, loose = choose_from(sens, 0.9999999), choose_from(sens, 0.99)
    safest_bits = get_format("bfp24").bits_per_value(32)
    assert loose.bits_per_value < strict.bits_per_value <= safest_bits + 1e-9
    assert loose.bits_per_value < safest_bits - 4            # most of the network left the 16-bit format
    assert min(loose.cosines) >= 0.99


def test_every_layer_has_a_measured_loss_per_cheaper_candidate(setting):
    _, photos, sens = setting
    assert sens.candidates == ["ms-fp8", "mxfp6", "bfp24"] and len(sens.base) == len(photos)
    assert min(sens.base) > 0.9999                           # bfp24 everywhere is nearly exact
    for cost in sens.costs:
        assert set(cost.loss) == {"ms-fp8", "mxfp6"} and cost.weights > 0 and cost.activations > 0
        assert all(len(v) == len(photos) for v in cost.loss.values())
    # the 3-bit format loses more than the 6-bit one over the network as a whole
    total = {p: sum(max(c.loss[p]) for c in sens.costs) for p in ("ms-fp8", "mxfp6")}
    assert total["ms-fp8"] > total["mxfp6"] > 0


@pytest.mark.parametrize("kwargs, message", [
    ({"calibration": []}, "needs calibration inputs"),
    ({"candidates": ("mxint8", "nonsense")}, "'nonsense'"),
    ({"candidates": ("mxint8", "wide")}, "computes in fp32"),
    ({"target_cosine": 1.5}, "between 0 and 1"),
    ({"candidates": ("ms-fp8",), "target_cosine": 0.9999999}, "even ms-fp8 everywhere"),
])
def test_bad_requests_are_compile_errors(setting, kwargs, message):
    model, photos, _ = setting
    args = {"calibration": photos[:1], "candidates": CANDIDATES, "target_cosine": 0.99} | kwargs
    with pytest.raises(CompileError, match=message):
        choose_precisions(model, CONFIG, args.pop("calibration"), **args)


def test_the_command_line_candidates_are_the_library_defaults():
    assert tuple(AUTO_CANDIDATES) == tuple(DEFAULT_CANDIDATES)


def test_npu_compile_precision_auto_chooses_saves_and_reuses_the_choice(tmp_path, capsys):
    model = tmp_path / "mobile.onnx"
    model.write_bytes(nets.mobile_small().SerializeToString())
    out = tmp_path / "m.npuz"
    assert main(["compile", str(model), "--config", CONFIG, "--precision", "auto", "-o", str(out)]) == 2
    assert "--precision auto needs --calibration DIR" in capsys.readouterr().err
    cal = tmp_path / "cal"
    cal.mkdir()
    for name, img in load_photos(["chelsea", "coffee"]):
        Image.fromarray(img).save(cal / f"{name}.png")
    assert main(["compile", str(model), "--config", CONFIG, "--precision", "auto", "--target-cosine", "0.995",
                 "--candidates", ",".join(CANDIDATES), "--calibration", str(cal), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    saved = tmp_path / "m.precision.json"
    assert "bits/value" in err and str(saved) in err
    choice = json.loads(saved.read_text())
    first = load_program(out).metadata.layer_formats
    again = tmp_path / "again.npuz"
    assert main(["compile", str(model), "--config", CONFIG, "--precision", str(saved), "-o", str(again)]) == 0
    assert load_program(again).metadata.layer_formats == first
    assert set(choice["layers"]) <= set(first)
