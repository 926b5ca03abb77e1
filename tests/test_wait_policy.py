"""unigen makes waiting OpenMP threads spin 10000 iterations before they sleep (GOMP_SPINCOUNT), not libgomp's 300000,
unless the user chose (OMP_WAIT_POLICY or GOMP_SPINCOUNT).

OpenMP (torch's libgomp) reads it once, when torch loads it; OMP_DISPLAY_ENV=VERBOSE makes it print what it read,
so these tests see what the threads really run with (benchmarks/contention.md measures the choices, idle and busy)."""
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
    assert "GOMP_SPINCOUNT = '10000'" in err


def test_importing_unigen_before_torch_sets_the_policy():
    assert "GOMP_SPINCOUNT = '10000'" in _openmp_settings("import unigen, torch; torch.ones(2) @ torch.ones(2)")


def test_the_users_choice_is_kept():
    code = "import unigen, torch; torch.ones(2) @ torch.ones(2)"
    err = _openmp_settings(code, OMP_WAIT_POLICY="PASSIVE")
    assert "OMP_WAIT_POLICY = 'PASSIVE'" in err and "GOMP_SPINCOUNT = '0'" in err
    assert "GOMP_SPINCOUNT = '777'" in _openmp_settings(code, GOMP_SPINCOUNT="777")


def test_torch_loaded_first_keeps_openmps_default():
    """The documented limit: the policy cannot change once OpenMP has started (the check is not vacuous)."""
    assert "GOMP_SPINCOUNT = '300000'" in _openmp_settings("import torch, unigen; torch.ones(2) @ torch.ones(2)")
