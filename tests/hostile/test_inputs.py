"""Hostile inputs through the CLI: each ends with exit 2 and one ``error:`` line naming the problem,
or succeeds with the bad tensor listed as skipped; none ends in a traceback."""

from __future__ import annotations

import copy
import json
import os

import numpy as np
import pytest
import torch

from . import factories as F
from .conftest import assert_one_error, invoke

# --------------------------------------------------------------------------- safetensors


@pytest.mark.parametrize("name", sorted(F.BAD_SAFETENSORS))
def test_bad_safetensors_header(tmp_path, name):
    header, data = F.BAD_SAFETENSORS[name]
    path = F.raw_safetensors(tmp_path / "bad.safetensors", header, data)
    line = assert_one_error(invoke("analyze", path))
    assert str(path) in line


@pytest.mark.parametrize("length, needle", [(2**40, "over the format's limit"), (10**6, "truncated")])
def test_header_length_beyond_file_or_limit(tmp_path, length, needle):
    path = F.raw_safetensors(tmp_path / "bad.safetensors", "{}", b"", length=length)
    assert_one_error(invoke("analyze", path), needle)


def test_too_many_tensors_is_refused_while_parsing(tmp_path, monkeypatch):
    import spectra.io.safetensors as st

    monkeypatch.setattr(st, "MAX_TENSORS", 100)
    for count in (101, 500):  # counted after parsing; parsing stops at the limit
        path = F.many_tensors_header(tmp_path / f"many{count}.safetensors", count)
        assert_one_error(invoke("analyze", path), "holds more than 100 tensors")
    ok = F.many_tensors_header(tmp_path / "fine.safetensors", 99)
    assert invoke("analyze", ok, "-q").exit_code == 0


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/passwd", "sub/../../outside.safetensors",
                                   "..\\outside.safetensors", ""])
def test_index_cannot_name_a_shard_outside_the_directory(tmp_path, shard):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(4, 4)}, str(tmp_path / "outside.safetensors"))
    model = F.shard_index(tmp_path / "model", shard)
    line = assert_one_error(invoke("analyze", model))
    assert "inside the checkpoint directory" in line or "outside the checkpoint directory" in line


def test_index_shard_symlinked_outside_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(4, 4)}, str(tmp_path / "outside.safetensors"))
    model = F.shard_index(tmp_path / "model", "link.safetensors")
    os.symlink(tmp_path / "outside.safetensors", model / "link.safetensors")
    assert_one_error(invoke("analyze", model), "outside the checkpoint directory")


def test_hugging_face_cache_snapshot_symlinks_are_followed(tmp_path):
    """The hub cache keeps a snapshot's files as symlinks into the repository's blobs/: allowed."""
    from safetensors.torch import save_file

    repo = tmp_path / "models--org--name"
    (repo / "blobs").mkdir(parents=True)
    save_file({"w": torch.randn(16, 8)}, str(repo / "blobs" / "abc123"))
    snapshot = repo / "snapshots" / "rev"
    snapshot.mkdir(parents=True)
    os.symlink("../../blobs/abc123", snapshot / "model-00001-of-00001.safetensors")
    (snapshot / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"w": "model-00001-of-00001.safetensors"}}))
    result = invoke("analyze", snapshot, "-q")
    assert result.exit_code == 0, result.output


# --------------------------------------------------------------------------- torch files


@pytest.mark.parametrize("build, needle", [
    (lambda p: F.deep_pt(p, 1000), "nested deeper than 32 levels"),
    (lambda p: F.deep_pt(p, 100_000), "nested deeper than 32 levels"),
    (F.self_referencing_pt, "contains itself"),
])
def test_pathological_pickles(tmp_path, build, needle):
    path = build(tmp_path / "bad.pt")
    assert_one_error(invoke("analyze", path), needle)


@pytest.mark.parametrize("build, reason", [
    (F.expanded_pt, "stride-0 or overlapping view"),
    (F.meta_pt, "meta tensor"),
    (F.sparse_pt, "sparse_coo tensor"),
])
def test_tensors_without_stored_data(tmp_path, build, reason):
    """analyze lists the tensor as skipped with the reason; diff, which needs the values, stops."""
    path = build(tmp_path / "bad.pt")
    out = tmp_path / "a.json"
    result = invoke("analyze", path, "-o", out, "-q")
    assert result.exit_code == 0, result.output
    rec = {r["param"]: r for r in json.loads(out.read_text())["layers"]}["w"]
    assert rec["status"] == "skipped" and reason in rec["reason"]
    assert_one_error(invoke("diff", path, path, "--no-alpha"), reason)


# --------------------------------------------------------------------------- spectra JSON files


def _layer_change(data, **fields):
    bad = copy.deepcopy(data)
    bad["layers"][1].update(fields)
    return bad


ANALYSIS_CASES = {
    "100k-deep": (lambda d: F.deep_json(), "nested deeper than 64 levels"),
    "5000-digit number": (lambda d: json.dumps(d).replace('"num_evals": 32', '"num_evals": ' + "9" * 5000, 1),
                          "integer with 5000 digits"),
    "1e400": (lambda d: json.dumps(d).replace('"num_evals": 32', '"num_evals": 1e400', 1), "out of range"),
    "NaN constant": (lambda d: json.dumps(d).replace('"num_evals": 32', '"num_evals": NaN', 1), "NaN is not a JSON"),
    "Infinity": (lambda d: json.dumps(d).replace('"num_evals": 32', '"num_evals": Infinity', 1), "Infinity"),
    "int-named layer": (lambda d: _layer_change(d, name=5), "name must be a string, got the number 5"),
    "string for a number": (lambda d: _layer_change(d, alpha="3.1"), "alpha must be a number or null, got a string"),
    "zero alpha": (lambda d: _layer_change(d, alpha=0.0), "alpha must be > 0, got 0.0"),
    "negative alpha": (lambda d: _layer_change(d, alpha=-1.5), "alpha must be > 0, got -1.5"),
    "alpha_ci of length 3": (lambda d: _layer_change(d, alpha_ci=[1.0, 2.0, 3.0]), "alpha_ci must be a list of 2 items"),
    "negative shape": (lambda d: _layer_change(d, shape=[-1, 3]), "shape[0] must be >= 0"),
    "unknown status": (lambda d: _layer_change(d, status="great"), "status must be one of"),
    "layers not a list": (lambda d: dict(d, layers={"a": 1}), "layers must be a list"),
    "missing layers": (lambda d: {k: v for k, v in d.items() if k != "layers"}, "layers is missing"),
    "duplicate key": (lambda d: json.dumps(d)[:-1] + ', "layers": []}', "duplicate key 'layers'"),
    "top-level list": (lambda d: "[1, 2]", "expected a JSON object"),
    "not UTF-8": (lambda d: "\udcff", None),
    "empty": (lambda d: "", "invalid JSON"),
    "other schema": (lambda d: dict(d, schema="spectra.lrmap/1"), "is a spectra.lrmap/1 file"),
    "schema not a string": (lambda d: dict(d, schema=1), "'schema' must be a string"),
}


@pytest.mark.parametrize("case", sorted(ANALYSIS_CASES))
@pytest.mark.parametrize("command", ["prescribe", "report"])
def test_bad_analysis_files(tmp_path, analysis_json, case, command):
    data, write = analysis_json
    build, needle = ANALYSIS_CASES[case]
    content = build(data)
    if case == "not UTF-8":
        path = tmp_path / "a.json"
        path.write_bytes(b'{"schema": "\xff"}')
        needle = "not a text file"
    else:
        path = write("a.json", content)
    args = ("prescribe", path, "-m", "tempbalance") if command == "prescribe" else ("report", path, "-o", tmp_path / "r.html")
    line = assert_one_error(invoke(*args), needle)
    assert str(path) in line
    assert not (tmp_path / "r.html").exists()


def _lrmap(data):
    from spectra.prescribe import prescribe
    from spectra.results import Analysis

    return prescribe(Analysis.from_dict(data), "tempbalance").to_dict()


def _noise():
    return {"schema": "spectra.noise/1", "source": "gradients", "summary": {},
            "layers": [{"name": "h.0.fc", "params": ["h.0.fc.weight"], "depth": 1, "b_simple": 2.0},
                       {"name": "h.1.fc", "params": ["h.1.fc.weight"], "depth": 2, "b_simple": 8.0}]}


def _diff():
    return {"schema": "spectra.diff/1", "a": "a", "b": "b",
            "layers": [{"name": "h.0.fc", "param": "h.0.fc.weight", "depth": 1, "kind": "linear", "rel_update": 1e-3},
                       {"name": "h.1.fc", "param": "h.1.fc.weight", "depth": 2, "kind": "linear", "rel_update": 4e-3}]}


SIDE_CASES = {
    "lrmap: string multiplier": ("lrmap", lambda d: dict(d, params={"h.0.fc.weight": "2"}), "params['h.0.fc.weight'] must be"),
    "lrmap: negative multiplier": ("lrmap", lambda d: dict(d, params={"h.0.fc.weight": -2}), "must be >= 0"),
    "lrmap: layer without multiplier": ("lrmap", lambda d: dict(d, layers=[{k: v for k, v in d["layers"][0].items()
                                                                           if k != "multiplier"}]), "multiplier is missing"),
    "lrmap: target": ("lrmap", lambda d: dict(d, target="momentum"), "target must be one of"),
    "noise: layers of numbers": ("noise", lambda d: dict(d, layers=[1, 2]), "layers[0] must be an object"),
    "noise: record without name": ("noise", lambda d: dict(d, layers=[{"params": []}]), "name is missing"),
    "noise: string depth": ("noise", lambda d: dict(d, layers=[dict(d["layers"][0], depth="1")]), "depth must be an integer"),
    "noise: params not a list": ("noise", lambda d: dict(d, layers=[dict(d["layers"][0], params="w")]), "params must be a list"),
    "diff: layers of strings": ("diff", lambda d: dict(d, layers=["x"]), "layers[0] must be an object"),
    "diff: shape of strings": ("diff", lambda d: dict(d, layers=[dict(d["layers"][0], shape=["a"])]), "shape[0] must be an integer"),
    "diff: summary a list": ("diff", lambda d: dict(d, summary=[1]), "summary must be an object"),
    "diff: mismatched of numbers": ("diff", lambda d: dict(d, mismatched=[{"param": 1}]), "must be a string"),
}


@pytest.mark.parametrize("case", sorted(SIDE_CASES))
def test_bad_side_files(tmp_path, analysis_json, case):
    data, write = analysis_json
    kind, change, needle = SIDE_CASES[case]
    base = {"lrmap": lambda: _lrmap(data), "noise": _noise, "diff": _diff}[kind]()
    bad = write(f"{kind}.json", change(base))
    analysis = write("a.json", data)
    report = invoke("report", analysis, f"--{kind}", bad, "-o", tmp_path / "r.html")
    assert_one_error(report, needle)
    if kind == "lrmap":
        retrain = invoke("retrain", "--task", "synthetic", "--lrmap", bad, "--epochs", "1", "--out", tmp_path / "run")
        assert_one_error(retrain, needle)
        assert not (tmp_path / "run").exists()
    else:
        method = "noise" if kind == "noise" else "update-ratio"
        assert_one_error(invoke("prescribe", f"--{kind}", bad, "-m", method), needle)


# --------------------------------------------------------------------------- eigenvalue files


@pytest.mark.parametrize("build, needle", [
    (lambda p: F.string_npz(p, "h.0.fc"), "holds <U1 values"),
    (lambda p: F.deflate_bomb_npz(p, members=2, each=200 << 20), "would inflate to"),
    (lambda p: np.savez(p, **{"h.0.fc": np.array([{"a": 1}], dtype=object)}), "holds object values"),
    (lambda p: np.savez(p, **{"h.0.fc": np.ones((3, 3))}), "1-D array"),
    (lambda p: p.write_bytes(b"PK\x03\x04 not really a zip"), "not a spectra eigenvalue file"),
])
def test_bad_eigenvalue_file_next_to_an_analysis(tmp_path, analysis_json, build, needle):
    data, write = analysis_json
    analysis = write("a.json", data)
    build(tmp_path / "a.esd.npz")
    assert_one_error(invoke("report", analysis, "-o", tmp_path / "r.html"), needle)


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize("args, needle", [
    (["analyze", "{ckpt}", "--bootstrap", "1000000000"], "bootstrap must be between 0 and 10,000"),
    (["analyze", "{ckpt}", "--seed", str(10**23)], "--seed"),
    (["analyze", "{ckpt}", "--bootstrap", "abc"], "Invalid value for '--bootstrap'"),
    (["analyze", "{ckpt}", "--min-evals", "1"], "min_evals must be >= 2"),
    (["analyze", "{ckpt}", "--nope"], "No such option: --nope"),
    (["analyze"], "Missing argument"),
    (["prescribe", "{ckpt}", "-m", "llr", "--set", "eigs_thresh=abc"], "eigs_thresh of rule 'llr' must be an integer"),
    (["prescribe", "{ckpt}", "-m", "layer-decay", "--set", "decay=[1,2]"], "decay of rule 'layer-decay' must be a finite"),
    (["prescribe", "{ckpt}", "-m", "layer-decay", "--set", "decay=1e400"], "must be a finite number"),
    (["prescribe", "{ckpt}", "-m", "llr", "--min-ratio", "nan"], "--min-ratio must be a finite number"),
    (["diff", "{ckpt}", "{ckpt}", "--topk", str(10**30)], "--topk"),
    (["retrain", "--task", "synthetic", "--lr", "inf", "--out", "{tmp}/run"], "--lr must be a finite number"),
    (["retrain", "--task", "synthetic", "--epochs", "abc"], "Invalid value for '--epochs'"),
    (["noise", "--task", "synthetic", "--batches", "-3"], "batches"),
])
def test_bad_option_values(tmp_path, small_ckpt, args, needle):
    args = [a.format(ckpt=small_ckpt, tmp=tmp_path) for a in args]
    assert_one_error(invoke(*args), needle)
    assert not (tmp_path / "run").exists()


def test_bare_command_prints_help_not_a_traceback():
    result = invoke()
    assert result.exit_code == 2 and "Usage" in result.output and "Traceback" not in result.output


def test_error_lines_escape_control_and_bidi_characters(tmp_path):
    name = "evil\x1b]0;TITLE\x07\u202eoops\nnext"
    path = F.raw_safetensors(tmp_path / "bad.safetensors", json.dumps({name: F.entry("F99")}), b"\0" * 8)
    line = assert_one_error(invoke("analyze", path))
    assert "\x1b" not in line and "\u202e" not in line and "\x07" not in line
    assert "\\x1b]0;TITLE" in line


def test_quiet_still_prints_warnings_that_change_the_result(tmp_path):
    from spectra.prescribe import LRMap

    lrmap = LRMap(method="m", params={"not.in.the.model.weight": 2.0}).save(tmp_path / "m.json")
    result = invoke("retrain", "--task", "synthetic", "--optimizer", "sgd", "--epochs", "1", "--lrmap", lrmap,
                    "--task-arg", "n_train=64", "--task-arg", "n_eval=64", "--out", tmp_path / "run", "--quiet")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "1 map entries match no parameter (not.in.the.model.weight)" in warnings[0]
