"""unigen makes OpenMP threads sleep, not spin, when they wait (OMP_WAIT_POLICY=PASSIVE), unless the user chose.

OpenMP (torch's libgomp) reads the policy once, when torch loads it; OMP_DISPLAY_ENV=VERBOSE makes it print what it
read, so these tests see the policy the threads really run with: GOMP_SPINCOUNT 0 is passive, libgomp's default is
300000 spins before sleeping (benchmarks/contention.md measures what that costs on a busy CPU)."""
import os
import subprocess
import sys


def _openmp_settings(code: str, **env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    r = subprocess.run([sys.executable, "-c", code], env={**base, "OMP_DISPLAY_ENV": "VERBOSE", **env},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stderr


def test_the_cli_waits_passively_by_default():
    err = _openmp_settings("import sys; sys.argv = ['unigen', 'presets']; from unigen.cli import main; main()")
    assert "GOMP_SPINCOUNT = '0'" in err


def test_importing_unigen_before_torch_sets_the_policy():
    assert "GOMP_SPINCOUNT = '0'" in _openmp_settings("import unigen, torch; torch.ones(2) @ torch.ones(2)")


def test_the_users_choice_is_kept():
    err = _openmp_settings("import unigen, torch; torch.ones(2) @ torch.ones(2)", OMP_WAIT_POLICY="ACTIVE")
    assert "OMP_WAIT_POLICY = 'ACTIVE'" in err


def test_torch_loaded_first_keeps_openmps_default():
    """The documented limit: the policy cannot change once OpenMP has started (the check is not vacuous)."""
    assert "GOMP_SPINCOUNT = '300000'" in _openmp_settings("import torch, unigen; torch.ones(2) @ torch.ones(2)")
