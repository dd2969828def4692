"""The three rings: spectra.core is pure math and imports no plotting, frame or CLI library."""

import subprocess
import sys

import pytest

FORBIDDEN = ("matplotlib", "pandas", "seaborn", "typer", "rich", "jinja2", "click")


@pytest.mark.parametrize("module", ["spectra.core.esd", "spectra.core.powerlaw", "spectra.core.rmt",
                                    "spectra.core.noise", "spectra.core.geometry", "spectra.analysis"])
def test_core_imports_no_rendering_libraries(module):
    code = (
        f"import sys, importlib; importlib.import_module({module!r}); "
        f"bad = [m for m in {FORBIDDEN!r} if m in sys.modules]; print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"{module} pulled in {out.stdout.strip()}"
