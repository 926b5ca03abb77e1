"""Mutation testing of the math: `python benchmarks/mutation.py [MODULE.py ...] [--label L] [--rev REV]`.

Runs mutmut 3.8.1 on the given source modules with the tests that cover them and writes a dated table
(killed / survived / timed out / no tests per module, and every surviving mutant as a diff) into
benchmarks/mutation.md, below the hand-written part. `make mutation MODULES="..."` calls this.

Tests per module: `src/unigen/families/<family>/...` -> `tests/<family>/` (so a new family needs nothing here);
other folders from TESTS below; `--tests` overrides. Modules that share a test selection are mutated in one mutmut
run (one stats collection), and mutmut runs, for each mutant, only the tests that call the mutated function.
`--rev REV` measures the code and tests of a git revision (from `git archive`, in a temp folder, with today's
[tool.mutmut] settings): a "before" score.
Score = (killed + timed out) / mutants checked; "no tests" counts against it. `--max-minutes` stops a long run
and reports the mutants checked so far (mutmut checks the ones with the fastest tests first, so say so).
`--recheck` continues the last run of the same modules and tests (its mutants/ folder) after tests were added:
mutmut reuses its timings, measures only the new tests, and runs only the mutants that were not killed or not
checked; a killed mutant stays killed (the code is unchanged, and added tests cannot revive it).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "mutation.md"
MARKER = "<!-- results: benchmarks/mutation.py inserts new runs below this line -->"
FAM = "src/unigen/families/"
CD = FAM + "continuous_diffusion/"
DD = FAM + "discrete_diffusion/"
DEFAULT = [DD + m for m in ("masked.py", "noise.py", "bd3.py", "sedd.py", "categorical.py", "likelihood.py",
                            "samplers.py", "llada.py", "ar.py")] + [
    "src/unigen/nn/position.py", "src/unigen/nn/attention.py", "src/unigen/nn/relative_bias.py",
    "src/unigen/train/checkpoint.py"] + [
    CD + m for m in ("schedules.py", "grids.py", "precond.py", "losses.py", "samplers*.py", "guidance.py",
                     "likelihood.py")]
# test selection for modules outside families/ (families/<f>/ -> tests/<f>/ by rule)
TESTS = {
    "src/unigen/nn/": ["tests/nn", "tests/models/test_text.py"],
    # not tests/test_resume_kill.py: its runs are subprocesses, which import the installed (unmutated) package
    "src/unigen/train/checkpoint.py": ["tests/train/test_checkpoint_reader.py", "tests/test_fit.py",
                                       "tests/test_security.py"],
    "src/unigen/train/": ["tests/train", "tests/test_fit.py"],
}
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", 36: "timeout",
          -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout", -11: "segfault", -9: "segfault",
          None: "not checked"}
COLUMNS = ("killed", "timeout", "survived", "no tests", "not checked")


def tests_for(module: str) -> list[str]:
    if module.startswith(FAM):
        return ["tests/" + module[len(FAM):].split("/")[0]]
    for prefix in sorted(TESTS, key=len, reverse=True):
        if module.startswith(prefix):
            return TESTS[prefix]
    raise SystemExit(f"no tests known for {module}: pass --tests, or add its folder to TESTS in {__file__}")


def child(spec: dict) -> None:
    """Inside the work folder: mutmut's config from pyproject.toml with our modules and tests, then mutmut run."""
    import mutmut.configuration as mc
    cfg = mc._load_config()
    mc._config = dataclasses.replace(cfg, only_mutate=spec["modules"],
                                     pytest_add_cli_args_test_selection=spec["tests"])
    from mutmut.__main__ import _run
    _run(tuple(spec.get("names", ())), spec["max_children"])


def survivors_diffs(work: Path, names: list[str], path: str) -> dict[str, str]:
    code = ("import sys, json\nfrom mutmut.mutation.diff_apply import get_diff_for_mutant\n"
            "names, path = json.loads(sys.argv[1])\n"
            "print(json.dumps({n: '# ' + n + chr(10) + get_diff_for_mutant(n, path=path) for n in names}))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps([names, path])], cwd=work, capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out)


def not_killed(work: Path) -> list[str]:
    """Mutants of the last run in work/mutants that survived, had no tests or were not checked (for --recheck)."""
    names = []
    for meta in sorted((work / "mutants").rglob("*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        names += [k for k, v in codes.items() if STATUS.get(v, "suspicious") not in ("killed", "timeout")]
    return names


def run_group(work: Path, modules: list[str], tests: list[str], max_children: int,
              minutes: float = 0, recheck: bool = False) -> dict[str, dict]:
    names = not_killed(work) if recheck else []
    if recheck and not names:
        raise SystemExit("--recheck: no earlier run of these modules in mutants/ left anything to check")
    if not recheck:
        shutil.rmtree(work / "mutants", ignore_errors=True)
    spec = {"modules": modules, "tests": tests, "max_children": max_children, "names": names}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    env.pop("PYTHONPATH", None)   # mutmut puts mutants/src first and removes src/ from the path
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)], cwd=work,
                            env=env, start_new_session=True)
    try:
        if proc.wait(timeout=minutes * 60 if minutes else None):
            raise SystemExit(f"mutmut failed on {modules} (exit {proc.returncode})")
    except subprocess.TimeoutExpired:  # out of time: stop mutmut and its workers, report what was checked
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
    print(f"[{time.time() - t0:.0f} s] {' '.join(modules)}", file=sys.stderr, flush=True)
    results = {}
    for meta in sorted((work / "mutants").rglob("*.py.meta")):
        path = str(meta.relative_to(work / "mutants"))[:-len(".meta")]
        try:
            codes = json.loads(meta.read_text())["exit_code_by_key"]
        except json.JSONDecodeError:  # cut while being written when a run is stopped
            print(f"unreadable {meta}: left out", file=sys.stderr)
            continue
        status = {k: STATUS.get(v, "suspicious") for k, v in codes.items()}
        alive = sorted(k for k, s in status.items() if s in ("survived", "no tests", "suspicious"))
        results[path] = {"counts": dict(Counter(status.values())),
                         "survivors": survivors_diffs(work, alive, path) if alive else {}}
    return results


def score(c: dict) -> str:
    n = sum(c.values()) - c.get("not checked", 0)  # a run stopped by --max-minutes leaves mutants not checked
    return f"{100 * (c.get('killed', 0) + c.get('timeout', 0)) / n:.1f}%" if n else "-"


def report(results: dict[str, dict], label: str, command: str, seconds: float, rev: str) -> str:
    lines = [f"### {label}: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}", "",
             f"- command: `{command}`", f"- code and tests: {rev}",
             f"- machine: {platform.machine()}, {os.cpu_count()} CPUs (shared); wall time {seconds / 60:.0f} min", "",
             "| module | mutants | " + " | ".join(COLUMNS) + " | other | score |",
             "|---|---:|" + "---:|" * (len(COLUMNS) + 2)]
    total = Counter()
    for path, r in results.items():
        c = r["counts"]
        total.update(c)
        other = sum(v for k, v in c.items() if k not in COLUMNS)
        lines.append(f"| {path.removeprefix('src/unigen/')} | {sum(c.values())} | "
                     + " | ".join(str(c.get(k, 0)) for k in COLUMNS) + f" | {other} | {score(c)} |")
    lines.append(f"| **all** | {sum(total.values())} | " + " | ".join(str(total.get(k, 0)) for k in COLUMNS)
                 + f" | {sum(v for k, v in total.items() if k not in COLUMNS)} | {score(total)} |")
    diffs = [d for r in results.values() for d in r["survivors"].values()]
    if diffs:
        lines += ["", f"<details><summary>{len(diffs)} mutants not killed</summary>", "", "```diff"]
        lines += [d for d in diffs] + ["```", "</details>"]
    return "\n".join(lines) + "\n"


def write(section: str) -> None:
    text = OUT.read_text() if OUT.exists() else f"# Mutation testing\n\n{MARKER}\n"
    if MARKER not in text:
        text += f"\n{MARKER}\n"
    head, tail = text.split(MARKER, 1)
    OUT.write_text(f"{head}{MARKER}\n\n{section}{tail}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python benchmarks/mutation.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("modules", nargs="*", help="source files (globs allowed) to mutate; default: the math set")
    p.add_argument("--tests", nargs="*", help="tests to run for all given modules (default: per module)")
    p.add_argument("--label", default="run", help="heading of the table, e.g. before / after")
    p.add_argument("--rev", default="", help="measure this git revision's src/ and tests/ instead of the tree")
    p.add_argument("--max-children", type=int, default=1, help="parallel mutant workers (default 1)")
    p.add_argument("--max-minutes", type=float, default=0,
                   help="stop each mutmut run after this long and report the mutants checked so far (default: none)")
    p.add_argument("--recheck", action="store_true",
                   help="continue the last run of the same modules and tests: check only what it did not kill")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(json.loads(args.child))
    command = "python benchmarks/mutation.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    # the revision when the run starts: mutmut copies src/ and tests/ then, so later commits are not measured
    rev = f"git revision {args.rev}" if args.rev else "working tree at " + subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="unigen-mutation-") as tmp:
        work = ROOT
        if args.rev:
            work = Path(tmp)
            tar = subprocess.run(["git", "-C", str(ROOT), "archive", args.rev, "src", "tests"],
                                 capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", tmp], input=tar, check=True)
            shutil.copy2(ROOT / "pyproject.toml", work)   # today's [tool.mutmut] settings
        modules = sorted({str(m.relative_to(work)) for pat in (args.modules or DEFAULT) for m in work.glob(pat)})
        if not modules:
            raise SystemExit(f"no modules match {args.modules or DEFAULT}")
        groups: dict[tuple, list[str]] = {}
        for m in modules:
            groups.setdefault(tuple(args.tests or tests_for(m)), []).append(m)
        results = {}
        for tests, mods in groups.items():
            results.update(run_group(work, mods, [t for t in tests if (work / t).exists()], args.max_children,
                                     args.max_minutes, args.recheck))
    section = report(results, args.label, command, time.time() - t0, rev)
    write(section)
    print(section)


if __name__ == "__main__":
    main()
