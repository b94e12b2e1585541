"""`resnets predict` on folders and on exported files: order, batches, formats, metadata, errors."""

from __future__ import annotations

import csv
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_clean_error, run_cli
from PIL import Image

from resnets import __version__
from resnets.deploy import find_images
from resnets.errors import ResnetsError

TINY = ["--model", "resnet20", "--dataset", "digits", "--train-subset", "256", "--epochs", "1",
        "--batch-size", "32", "--precision", "fp32", "--quiet"]  # fmt: skip
# Deliberately out of order, nested, of several formats; the walk must list them in this order.
IMAGES = ["a/0.png", "a/3.bmp", "a/x/1.png", "a/x/y/6.webp", "b/2.png", "c.jpg", "d/5.gif"]
FORMATS = ["onnx", "pt2", "torchscript"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("predict") / "run"
    proc = run_cli("train", *TINY, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Digits in nested folders, beside files a walk must pass over (text, hidden)."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("images")
    digits = load_digits().images
    hidden = [".hidden.png", ".cache/7.png"]  # tool litter, such as macOS or git leave
    for i, name in enumerate([*reversed(IMAGES), *hidden]):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray((digits[i] * 15.9).astype(np.uint8), "L")
        image.resize((24, 24)).convert("RGB" if path.suffix == ".jpg" else "L").save(path)
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module", params=FORMATS)
def exported(request: pytest.FixtureRequest, run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("exported") / f"model.{request.param}"
    proc = run_cli("export", "--run", str(run), "--format", request.param, "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


def _predict_json(*args: str) -> list[dict]:
    proc = run_cli("predict", *args, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _resolved(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())["resolved"]


def test_a_folder_is_walked_for_images_in_sorted_order(tree: Path) -> None:
    assert find_images([tree]) == [tree / name for name in IMAGES]
    # A named file is taken whatever its suffix; folders and files mix, in the order given.
    assert find_images([tree / "notes.txt", tree / "b"]) == [tree / "notes.txt", tree / "b/2.png"]


def test_an_empty_or_missing_input_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "readme.txt").write_text("no images here")
    with pytest.raises(ResnetsError, match="no image files"):
        find_images([tmp_path / "empty"])
    with pytest.raises(ResnetsError, match="not found"):
        find_images([tmp_path / "nothing"])


@pytest.mark.slow
def test_a_folder_gives_one_row_per_image_in_sorted_order(run: Path, tree: Path) -> None:
    results = _predict_json("--run", str(run), str(tree), "--top-k", "3")
    assert [r["file"] for r in results] == [str(tree / name) for name in IMAGES]
    for r in results:
        probs = [t["probability"] for t in r["top"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True)
    text = run_cli("predict", "--run", str(run), str(tree))  # text stays the default
    assert text.returncode == 0, text.stderr
    assert [line.split(": ")[0] for line in text.stdout.splitlines()] == [r["file"] for r in results]


@pytest.mark.slow
def test_small_batches_give_the_same_results_as_one(run: Path, tree: Path) -> None:
    common = ["--run", str(run), str(tree), "--precision", "fp32"]
    whole = _predict_json(*common, "--batch-size", "64")
    pieces = _predict_json(*common, "--batch-size", "3")  # 7 images: batches of 3, 3 and 1
    assert [r["file"] for r in pieces] == [r["file"] for r in whole]
    for a, b in zip(pieces, whole, strict=True):
        assert [t["class"] for t in a["top"]] == [t["class"] for t in b["top"]]
        got, want = ([t["probability"] for t in r["top"]] for r in (a, b))
        assert got == pytest.approx(want, abs=1e-5)


@pytest.mark.slow
def test_csv_written_to_a_file_parses_and_has_a_header(run: Path, tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "predictions.csv"
    proc = run_cli("predict", "--run", str(run), str(tree), "--top-k", "2", "--format", "csv",
                   "--output", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"wrote {len(IMAGES)} predictions to {out}"
    rows = list(csv.reader(io.StringIO(out.read_text())))
    assert rows[0] == ["file", "class_1", "probability_1", "class_2", "probability_2"]
    assert [row[0] for row in rows[1:]] == [str(tree / name) for name in IMAGES]
    classes = set(_resolved(run)["classes"])
    for row in rows[1:]:
        assert row[1] in classes and row[3] in classes and float(row[2]) >= float(row[4]) > 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["predictions.csv"]  # no temporary left


@pytest.mark.slow
def test_an_export_carries_the_runs_metadata(run: Path, exported: Path) -> None:
    props = _metadata(exported)
    resolved = _resolved(run)
    assert props["model"] == "resnet20" and props["dataset"] == "digits"
    assert props["resnets_version"] == __version__ and props["resize"] == "stretch"
    assert json.loads(props["input_shape"]) == resolved["image_shape"]
    assert json.loads(props["classes"]) == resolved["classes"]
    assert json.loads(props["mean"]) == pytest.approx(resolved["mean"])
    assert json.loads(props["std"]) == pytest.approx(resolved["std"])


def _metadata(path: Path) -> dict[str, str]:
    """The metadata read back by each format's own library, not by resnets."""
    if path.suffix == ".onnx":
        import onnx

        return {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    extra = {"resnets.json": ""}
    if path.suffix == ".pt2":
        torch.export.load(str(path), extra_files=extra)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.load(str(path), _extra_files=extra)
    return json.loads(extra["resnets.json"])


@pytest.mark.slow
def test_predict_on_an_exported_file_matches_the_run(run: Path, exported: Path, tree: Path) -> None:
    want = _predict_json("--run", str(run), str(tree), "--precision", "fp32", "--top-k", "10")
    got = _predict_json("--run", str(exported), str(tree), "--top-k", "10", "--batch-size", "4")
    assert [r["file"] for r in got] == [r["file"] for r in want]
    for g, w in zip(got, want, strict=True):
        assert g["top"][0]["class"] == w["top"][0]["class"]
        by_class = {t["class"]: t["probability"] for t in w["top"]}
        for t in g["top"]:
            assert t["probability"] == pytest.approx(by_class[t["class"]], abs=1e-4)


@pytest.mark.slow
def test_an_onnx_file_without_metadata_is_refused(run: Path, tree: Path, tmp_path: Path) -> None:
    import onnx

    out = tmp_path / "model.onnx"
    assert run_cli("export", "--run", str(run), "--format", "onnx", "--output", str(out)).returncode == 0
    model = onnx.load(str(out))
    del model.metadata_props[:]  # as a file exported by another tool, or an older resnets, would be
    onnx.save(model, str(out))
    assert_clean_error(run_cli("predict", "--run", str(out), str(tree)), "carries no resnets metadata")
    # Without onnxruntime the ONNX file is refused in one line that says what to install.
    site = tmp_path / "no-onnxruntime"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import sys\nsys.modules['onnxruntime'] = None\n")
    paths = [str(site), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in paths if p))
    assert_clean_error(run_cli("predict", "--run", str(out), str(tree), env=env),
                       "needs onnxruntime", "pip install 'resnets[export]'")  # fmt: skip


@pytest.mark.slow
def test_bad_inputs_are_one_line_errors(run: Path, tree: Path, tmp_path: Path) -> None:
    bad = tmp_path / "pictures" / "broken.png"
    bad.parent.mkdir()
    bad.write_bytes(b"not an image")
    (tmp_path / "empty").mkdir()
    not_a_model = tmp_path / "model.onnx"
    not_a_model.write_text("hello")
    checkpoint = next((run / "checkpoint").iterdir())
    predict = ["predict", "--run", str(run)]
    for args, needle in [
        ([*predict, str(tmp_path / "pictures")], "broken.png: not a readable image"),
        ([*predict, str(tmp_path / "empty")], "no image files"),
        ([*predict, str(tmp_path / "missing.png")], "not found"),
        ([*predict, str(tree), "--format", "xml"], "invalid choice"),
        ([*predict, str(tree), "--batch-size", "0"], "--batch-size must be a positive integer"),
        (["predict", "--run", str(not_a_model), str(tree)], "is not an exported model"),
        (["predict", "--run", str(checkpoint), str(tree)], "pass its run directory"),
        (["predict", "--run", str(tmp_path / "norun"), str(tree)], "does not exist"),
    ]:
        assert_clean_error(run_cli(*args), needle)


@pytest.mark.slow
def test_skip_bad_leaves_out_unreadable_images_and_names_them(run: Path, tree: Path, tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    proc = run_cli("predict", "--run", str(run), str(bad), str(tree / "c.jpg"), "--skip-bad", "--json")
    assert proc.returncode == 0, proc.stderr
    assert [r["file"] for r in json.loads(proc.stdout)] == [str(tree / "c.jpg")]
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"resnets: skipped {bad}: not a readable image"), err
    nothing = run_cli("predict", "--run", str(run), str(bad), "--skip-bad")  # the warning, then the error
    assert nothing.returncode == 2 and "Traceback" not in nothing.stderr, nothing.stderr
    assert nothing.stderr.strip().splitlines()[-1] == "resnets: error: none of the 1 images could be read"
