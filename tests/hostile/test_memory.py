"""Tiny files that used to cost gigabytes: peak RSS of the whole process stays under 1 GB.

Each case runs the CLI in a fresh interpreter and reads its own peak (``VmHWM`` of
``/proc/self/status``) at exit, so the number is the peak of that command alone (torch's import is
about a quarter of it). ``ru_maxrss`` would not do: Linux carries the parent's peak across
``fork``/``exec`` into it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")

from . import factories as F

LIMIT_MIB = 1024
ROOT = Path(__file__).resolve().parents[2]
_RUN = """
import json, re, sys
from spectra.cli import main
sys.argv = ["spectra"] + json.loads(sys.argv[1])
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else 1
with open({out!r}, "w") as fh:
    status = open("/proc/self/status").read()
    json.dump({{"code": code, "peak_kib": int(re.search(r"VmHWM:\\s+(\\d+)", status).group(1))}}, fh)
sys.exit(code)
"""


def measured(tmp_path: Path, *args) -> tuple[int, str, float]:
    """(exit code, stderr, peak RSS in MiB) of ``spectra *args`` in its own process."""
    out = tmp_path / "peak.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", _RUN.format(out=str(out)), json.dumps([str(a) for a in args])],
                          capture_output=True, text=True, env=env, timeout=300)
    peak = json.loads(out.read_text())
    assert peak["code"] == proc.returncode
    return proc.returncode, proc.stderr, peak["peak_kib"] / 1024


def one_error(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.mark.slow
def test_expanded_tensor_is_not_materialised(tmp_path):
    """1.6 KB on disk, 60000 x 60000 float32 (14 GB) if expanded: listed as skipped instead."""
    path = F.expanded_pt(tmp_path / "expand.pt", n=60_000)
    assert path.stat().st_size < 4096
    code, stderr, peak = measured(tmp_path, "analyze", path, "-o", tmp_path / "a.json", "-q")
    assert code == 0, stderr
    rec = {r["param"]: r for r in json.loads((tmp_path / "a.json").read_text())["layers"]}["w"]
    assert rec["status"] == "skipped" and "stride-0" in rec["reason"]
    assert peak < LIMIT_MIB, f"peak RSS {peak:.0f} MiB"


@pytest.mark.slow
def test_header_of_a_million_tiny_tensors(tmp_path):
    """A 90 MB header listing 1.3 M one-byte tensors (13 GB and minutes before): refused while parsing."""
    path = F.many_tensors_header(tmp_path / "many.safetensors", 1_300_000)
    code, stderr, peak = measured(tmp_path, "analyze", path)
    assert code == 2 and "holds more than 100,000 tensors" in one_error(stderr)
    assert peak < LIMIT_MIB, f"peak RSS {peak:.0f} MiB"


@pytest.mark.slow
def test_deflate_bombed_eigenvalues_next_to_an_analysis(tmp_path):
    """2 MB of zip that numpy would inflate to 2 GB, read by report: refused before inflating."""
    from spectra import analyze
    from safetensors.torch import save_file
    import torch

    ckpt = tmp_path / "m.safetensors"
    save_file({"fc.weight": torch.randn(32, 16)}, str(ckpt))
    analyze(ckpt).save(tmp_path / "a.json")
    bomb = F.deflate_bomb_npz(tmp_path / "a.esd.npz", members=2, each=1 << 30)
    assert bomb.stat().st_size < 4 << 20
    code, stderr, peak = measured(tmp_path, "report", tmp_path / "a.json", "-o", tmp_path / "r.html")
    assert code == 2 and "would inflate to" in one_error(stderr)
    assert peak < LIMIT_MIB, f"peak RSS {peak:.0f} MiB"


@pytest.mark.slow
def test_huge_bootstrap_is_refused_before_allocating(tmp_path):
    from safetensors.torch import save_file
    import torch

    ckpt = tmp_path / "m.safetensors"
    save_file({"fc.weight": torch.randn(64, 32)}, str(ckpt))
    code, stderr, peak = measured(tmp_path, "analyze", ckpt, "--bootstrap", "1000000000")
    assert code == 2 and "bootstrap" in one_error(stderr)
    assert peak < LIMIT_MIB
