"""`mmrag --threads N`: the global option that keeps torch/faiss from oversubscribing a small machine."""

from __future__ import annotations

import os
import subprocess
import sys

from typer.testing import CliRunner

from mmrag_rft.cli import app


def test_threads_option_sets_openmp_env_for_lazy_imports(monkeypatch) -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    r = CliRunner().invoke(app, ["--threads", "3", "version"])
    assert r.exit_code == 0, r.output
    assert os.environ["OMP_NUM_THREADS"] == "3" and os.environ["MKL_NUM_THREADS"] == "3"


def test_threads_option_rejects_zero() -> None:
    r = CliRunner().invoke(app, ["--threads", "0", "version"])
    assert r.exit_code == 2


def test_threads_reaches_torch_in_a_fresh_process() -> None:
    code = ("import sys, torch; from mmrag_rft.cli import app; "
            "from typer.testing import CliRunner; r = CliRunner().invoke(app, ['--threads', '1', 'version']); "
            "print(torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")})
    assert out.stdout.strip().splitlines()[-1] == "1"
