"""Generative perplexity vs NFE for every discrete sampler, and Fast-dLLM's KV cache against full recompute.

    python -m benchmarks.text_genppl --runs DIR --phases genppl,cache [--n 16] [--threads 1]
    python -m benchmarks.text_genppl --runs DIR --phases speed --lengths 256,1024 --rounds 3   # Fast-dLLM end to end
    python -m benchmarks.text_genppl --runs DIR --phases prompted --n 16 --thresholds 0.9,0.7,0.5   # its quality

DIR holds trained runs named after their presets (text-ar-judge, text-ar, text-mdlm, text-sedd, text-bd3-4), e.g.
from `unigen train PRESET --out DIR/PRESET`. Results go to DIR/genppl.json and are printed as markdown tables.
Everything goes through `unigen.run.load`, `Task.generate` and `genppl.generative_perplexity` (what `unigen eval
RUN --gen-ppl --judge JUDGE` runs).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import Tensor

from unigen.data import load as load_data
from unigen.families.discrete_diffusion.bd3 import bd3_token_nll
from unigen.families.discrete_diffusion.cache import cached_call, refresh_call
from unigen.families.discrete_diffusion.genppl import generative_perplexity, unigram_entropy
from unigen.registry import TASKS
from unigen.run import load, read_config

# (preset, sampler, steps, options): samples from scratch, 128 tokens, each sampler's knobs at the values named.
# The list was cut to what the shared 2-core CPU could run in the session (see text_quality.md, section 5).
ROWS = [("text-ar", "ar", 0, {})]
ROWS += [("text-mdlm", "mdlm", s, {}) for s in (32, 128)]
ROWS += [("text-mdlm", "llada", 128, {}), ("text-mdlm", "llada", 128, {"temperature": 0.0}),
         ("text-mdlm", "llada-random", 128, {})]
ROWS += [("text-mdlm", s, 0, {"threshold": th, "block_length": 32})
         for th in (0.9, 0.5) for s in ("fast-dllm", "fast-dllm-dual", "fast-dllm-prefix")]
ROWS += [("text-sedd", s, 128, {}) for s in ("sedd-euler", "sedd-analytic")]
ROWS += [("text-bd3-4", "bd3", 4, {}), ("text-bd3-4", "bd3-fh", 0, {}), ("text-bd3-4", "bd3", 2, {}),
         ("text-bd3-4", "bd3", 4, {"nucleus_p": 0.9}), ("text-bd3-4", "bd3", 4, {"first_hitting": True})]


def gen_row(models: dict, runs: Path, judge, preset: str, sampler: str, steps: int, opts: dict, n: int,
            length: int = 128, seed: int = 0) -> dict:
    cfg = read_config(runs / preset)
    lm = models.setdefault(preset, load(runs / preset))
    out, stats, seconds, steps = TASKS[cfg.task].generate(lm, [[]] * n, length, sampler=sampler, steps=steps,
                                                          seed=seed, **opts)
    m = generative_perplexity(judge, out, bos_id=judge.bos_id, mask_id=judge.mask_id)
    per_row = m["nll"] / out.shape[1]  # (n,) nats/token of each sample
    return {"preset": preset, "sampler": sampler, "steps": steps, "options": opts, "nfe": int(stats["nfe"]),
            "gen_ppl": m["gen_ppl"], "se_nats": float(per_row.std() / n ** 0.5), "entropy": m["entropy"], "seconds": round(seconds, 2), "n": n,
            "tokens": out.tolist()}


def heldout_row(runs: Path, judge) -> dict:
    """The judge's generative perplexity of the held-out windows (= its evaluation perplexity)."""
    test = load_data(read_config(runs / "text-ar-judge").data, "test")
    ids = test.batch(torch.arange(len(test)))["ids"]
    held = generative_perplexity(judge, ids, bos_id=judge.bos_id, mask_id=judge.mask_id)
    return {"gen_ppl": held["gen_ppl"], "entropy": held["entropy"], "n": len(ids)}


def phase_genppl(args, runs: Path, judge) -> dict:
    rows, models = [], {}
    for preset, sampler, steps, opts in ROWS:
        if (runs / preset / "model.safetensors").exists() and (not args.presets or preset in args.presets):
            rows.append(gen_row(models, runs, judge, preset, sampler, steps, opts, args.n))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "tokens"}), flush=True)
    return {"heldout": heldout_row(runs, judge), "rows": rows}


def phase_cache(args, runs: Path, judge) -> dict:
    """One after the other in one process (not interleaved: `percall` is): full recompute (LLaDA + threshold,
    `fast-dllm`), prefix and dual cache, at each generated length; batch 1, the first 16 test bytes as prompt,
    temperature 0 (greedy, as Fast-dLLM). Agreement: the share of generated tokens equal to the uncached run's."""
    lm = load(runs / "text-mdlm")
    task, cfg = TASKS["mdlm"], read_config(runs / "text-mdlm")
    prompt = load_data(cfg.data, "test").batch(torch.arange(1))["ids"][0, :16].tolist()
    out = []
    for length in args.lengths:
        got = {}
        for sampler in ("fast-dllm", "fast-dllm-prefix", "fast-dllm-dual"):
            bl = {} if sampler != "fast-dllm" else {"block_length": 32}
            x, stats, seconds, _ = task.generate(lm, [prompt], length, sampler=sampler, steps=0, seed=0,
                                                 temperature=0.0, threshold=args.threshold, **bl)
            m = generative_perplexity(judge, x[:, 16:], bos_id=judge.bos_id, mask_id=judge.mask_id)
            got[sampler] = x
            agree = float((x == got["fast-dllm"]).float()[:, 16:].mean())
            out.append({"length": length, "sampler": sampler, "seconds": round(seconds, 2), "nfe": int(stats["nfe"]),
                        "positions": int(stats.get("positions", stats["nfe"] * x.shape[1])),
                        "tokens_per_s": length / seconds, "agreement": agree, "gen_ppl": m["gen_ppl"],
                        "entropy": m["entropy"], "tokens": x[0, 16:].tolist()})
            print(json.dumps({k: v for k, v in out[-1].items() if k != "tokens"}), flush=True)
    return {"rows": out, "threshold": args.threshold}


CACHE_SAMPLERS = ("fast-dllm", "fast-dllm-prefix", "fast-dllm-dual")  # full recompute, prefix cache, dual cache


def phase_speed(args, runs: Path, judge) -> dict:
    """Fast-dLLM's speed-up end to end, interleaved: at each generated length, `--rounds` rounds of the three
    samplers of CACHE_SAMPLERS (the order rotated by one each round), one process, batch 1, the first 16 test bytes
    as prompt, blocks of 32, the same threshold, temperature 0 (greedy, as Fast-dLLM). Each cached run's tokens/s
    over the full-recompute run of its own round, the median over rounds; model calls. The first round's texts
    are kept for agreement with the uncached text, gen PPL and entropy (all rounds draw the same greedy text
    unless float ties differ)."""
    lm = load(runs / "text-mdlm")
    task, cfg = TASKS["mdlm"], read_config(runs / "text-mdlm")
    prompt = load_data(cfg.data, "test").batch(torch.arange(1))["ids"][0, :16].tolist()
    out = []
    for length in args.lengths:
        rounds = []
        for r in range(args.rounds):
            got = {}
            for k in range(len(CACHE_SAMPLERS)):
                sampler = CACHE_SAMPLERS[(k + r) % len(CACHE_SAMPLERS)]
                x, stats, seconds, _ = task.generate(lm, [prompt], length, sampler=sampler, steps=0, seed=0,
                                                     temperature=0.0, threshold=args.threshold, block_length=32)
                got[sampler] = {"seconds": seconds, "nfe": int(stats["nfe"]),
                                "positions": int(stats.get("positions", stats["nfe"] * x.shape[1])), "x": x}
                print(json.dumps({"length": length, "round": r, "sampler": sampler, "seconds": round(seconds, 2),
                                  "nfe": got[sampler]["nfe"]}), flush=True)
            rounds.append(got)
        for sampler in CACHE_SAMPLERS:
            ratios = [rd["fast-dllm"]["seconds"] / rd[sampler]["seconds"] for rd in rounds]
            first, base = rounds[0][sampler], rounds[0]["fast-dllm"]
            m = {"gen_ppl": float("nan"), "entropy": float(unigram_entropy(first["x"][:, 16:]).mean())}
            if judge is not None:  # without a judge in DIR, speed only
                m = generative_perplexity(judge, first["x"], bos_id=judge.bos_id, mask_id=judge.mask_id, prompt_len=16)
            out.append({"length": length, "sampler": sampler, "threshold": args.threshold,
                        "seconds": [round(rd[sampler]["seconds"], 2) for rd in rounds],
                        "nfe": [rd[sampler]["nfe"] for rd in rounds], "positions": first["positions"],
                        "speedup_rounds": ratios, "speedup_median": sorted(ratios)[len(ratios) // 2],
                        "agreement": float((first["x"] == base["x"]).float()[:, 16:].mean()),
                        "gen_ppl": m["gen_ppl"], "entropy": m["entropy"], "tokens": first["x"][0, 16:].tolist()})
            print(json.dumps({k: v for k, v in out[-1].items() if k != "tokens"}), flush=True)
    return {"rows": out, "threshold": args.threshold, "rounds": args.rounds}


def phase_prompted(args, runs: Path, judge) -> dict:
    """Fast-dLLM's quality cost where the model writes text: the continuations of `--n` held-out prompts (the
    first `--prompt-len` bytes of n test windows evenly spaced over the split (its first windows are all one
    whitespace table); the rest of each window, 96 bytes in blocks of 32, is generated), as Fast-dLLM evaluates on
    prompted tasks. Every temperature of `--temperatures` (Fast-dLLM: 0, greedy) and threshold of `--thresholds`:
    full recompute, prefix and dual cache; scored by the judge on the continuation given the
    prompt. Beside them: the held-out continuations themselves, text-ar's (one call per token, temperature 1 and
    0) and LLaDA's low-confidence remasking one token per step without a threshold (the uncached, unparallel
    reference). Agreement: share of continuation tokens equal to the uncached threshold run's."""
    cfg = read_config(runs / "text-mdlm")
    test = load_data(cfg.data, "test")
    ids = test.batch(torch.linspace(0, len(test) - 1, args.n).long())["ids"]  # (n, T), spread over the split
    P = args.prompt_len
    G = ids.shape[1] - P
    prompts = ids[:, :P].tolist()
    rows = []

    def add(name: str, sampler: str, x: Tensor, nfe: int, seconds: float, **extra) -> None:
        m = generative_perplexity(judge, x, bos_id=judge.bos_id, mask_id=judge.mask_id, prompt_len=P)
        se = float((m["nll"] / G).std() / len(x) ** 0.5)
        rows.append({"model": name, "sampler": sampler, "nfe": nfe, "gen_ppl": m["gen_ppl"], "se_nats": se,
                     "entropy": m["entropy"], "seconds": round(seconds, 2), **extra, "tokens": x[:, P:].tolist()})
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "tokens"}), flush=True)

    add("held-out text", "-", ids, 0, 0.0)
    if (runs / "text-ar" / "model.safetensors").exists():
        ar = load(runs / "text-ar")
        for temp in (1.0, 0.0):
            x, stats, sec, _ = TASKS["ar"].generate(ar, prompts, G, sampler="ar", steps=0, seed=0, temperature=temp)
            add("text-ar", "ar", x, int(stats["nfe"]), sec, temperature=temp)
    lm = load(runs / "text-mdlm")
    for temp in args.temperatures:
        x, stats, sec, _ = TASKS["mdlm"].generate(lm, prompts, G, sampler="llada", steps=G, seed=0,
                                                  temperature=temp, block_length=32)
        add("text-mdlm", "llada", x, int(stats["nfe"]), sec, temperature=temp, threshold=None)
        for th in args.thresholds:
            base = None
            for sampler in CACHE_SAMPLERS:
                x, stats, sec, _ = TASKS["mdlm"].generate(lm, prompts, G, sampler=sampler, steps=0, seed=0,
                                                          temperature=temp, threshold=th, block_length=32)
                base = x if base is None else base
                add("text-mdlm", sampler, x, int(stats["nfe"]), sec, temperature=temp, threshold=th,
                    agreement=float((x == base)[:, P:].float().mean()))
    return {"rows": rows, "n": args.n, "prompt_len": P, "generated": G}


def phase_rescore(args, runs: Path, judge) -> dict:
    """Generative perplexity of the samples already in DIR/genppl.json again, under the judge now in DIR (the
    other phases may have run while the judge was still training); also the held-out row."""
    res = json.loads((runs / "genppl.json").read_text())
    for phase in ("genppl", "cache"):
        for row in res.get(phase, {}).get("rows", []):
            ids = torch.tensor(row["tokens"])
            m = generative_perplexity(judge, ids if ids.dim() == 2 else ids[None], bos_id=judge.bos_id,
                                      mask_id=judge.mask_id)
            row.update(gen_ppl=m["gen_ppl"], entropy=m["entropy"])
            if ids.dim() == 2 and len(ids) > 1:
                row["se_nats"] = float((m["nll"] / ids.shape[1]).std() / len(ids) ** 0.5)
    if "genppl" in res:
        res["genppl"]["heldout"] = heldout_row(runs, judge)
    return res


def phase_weight(args, runs: Path, judge) -> dict:
    """bd3lms' loss weight for beta > 0.5 (1 instead of the NELBO's 1/t): the per-sequence estimates of both on
    the first 16 test windows, t ~ U[beta, omega] per sequence, text-mdlm as a one-block BD3 (its x_t half sees
    only x_t), 64 draws each. Reports each weight's mean and coefficient of variation (std / mean)."""
    lm = load(runs / "text-mdlm")
    test = load_data(read_config(runs / "text-mdlm").data, "test")
    x0 = test.batch(torch.arange(16))["ids"]  # (16, T)
    torch.manual_seed(0)
    out = {}
    for beta, omega in ((0.55, 0.95), (0.3, 0.8)):
        inv, one = [], []
        for _ in range(64):
            t = beta + (omega - beta) * torch.rand(x0.shape[0], 1)  # (16, 1)
            with torch.no_grad():
                nll = bd3_token_nll(lm, x0, t, block_size=x0.shape[1], mask_id=lm.mask_id).sum(dim=1)  # 1/t weight
            inv.append(nll / x0.shape[1])
            one.append(nll * t[:, 0] / x0.shape[1])
        inv, one = torch.cat(inv).double(), torch.cat(one).double()
        out[f"{beta}-{omega}"] = {"mean_inv_t": float(inv.mean()), "cv_inv_t": float(inv.std() / inv.mean()),
                                  "mean_one": float(one.mean()), "cv_one": float(one.std() / one.mean()),
                                  "draws": len(inv)}
        print(json.dumps(out), flush=True)
    return out


def phase_percall(args, runs: Path, judge) -> dict:
    """The cost of one model call of each kind at each generated length (batch 1, 16-token prompt, blocks of 32,
    the middle block), timed interleaved in one process (full, prefix, dual, full, ...; 5 rounds, median): a full
    forward (every step of the uncached sampler, and the refresh step of the cached ones), a prefix-cache call
    (block + suffix against the cached prefix) and a dual-cache call (the block alone). The cached samplers'
    expected speed-up at equal NFE, one refresh per block of 32, follows from these."""
    lm = load(runs / "text-mdlm")
    out = []
    for length in args.lengths:
        L = 16 + length
        x = torch.randint(0, lm.mask_id, (1, L))
        x[:, 16 + length // 2:] = lm.mask_id  # half generated
        lo, hi = 16 + length // 2, 16 + length // 2 + 32
        calls = {}
        with torch.no_grad():
            _, pre, order_p = refresh_call(lm, x, None, lo, hi, "prefix", None)
            _, dual, order_d = refresh_call(lm, x, None, lo, hi, "dual", None)
            fns = {"full": lambda: lm(x),
                   "prefix": lambda: cached_call(lm, x, None, lo, hi, "prefix", pre, order_p, None),
                   "dual": lambda: cached_call(lm, x, None, lo, hi, "dual", dual, order_d, None)}
            for f in fns.values():
                f()  # warm-up
            for _ in range(5):
                for k, f in fns.items():
                    t0 = time.perf_counter()
                    f()
                    calls.setdefault(k, []).append(time.perf_counter() - t0)
        med = {k: sorted(v)[len(v) // 2] for k, v in calls.items()}
        n_blocks = length // 32
        row = {"length": length, **{f"{k}_ms": 1000 * v for k, v in med.items()}}
        for k in ("prefix", "dual"):  # the prefix call's cost is taken at the middle block (its average)
            row[f"{k}_expected_speedup"] = length * med["full"] / (n_blocks * med["full"] + (length - n_blocks) * med[k])
        out.append(row)
        print(json.dumps(row), flush=True)
    return {"rows": out}


def report(res: dict) -> str:
    """The markdown tables of text_quality.md section 5 from DIR/genppl.json."""
    lines = ["| model | sampler | options | NFE | gen PPL (± se) | entropy (nats) | s |", "|---|---|---|---|---|---|---|"]
    if "genppl" in res:
        h = res["genppl"]["heldout"]
        lines.append(f"| held-out text ({h['n']} windows) | - | - | - | {h['gen_ppl']:.2f} | {h['entropy']:.2f} | - |")
    for r in res.get("genppl", {}).get("rows", []):
        opts = ", ".join(f"{k}={v}" for k, v in r["options"].items()) or "-"
        se = r["gen_ppl"] * r.get("se_nats", 0.0)  # delta method on exp(nats)
        lines.append(f"| {r['preset']} | {r['sampler']} | {opts} | {r['nfe']} | {r['gen_ppl']:.2f} ± {se:.2f} | "
                     f"{r['entropy']:.2f} | {r['seconds']:.0f} |")
    lines += report_speed(res) + report_prompted(res)
    if "cache" in res:
        lines += ["", "| generated | sampler | s | tokens/s | speed-up | NFE | positions | agreement | gen PPL | entropy |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
    base = {}
    for r in res.get("cache", {}).get("rows", []):
        base.setdefault(r["length"], r["tokens_per_s"])
        lines.append(f"| {r['length']} | {r['sampler']} | {r['seconds']:.1f} | {r['tokens_per_s']:.2f} | "
                     f"{r['tokens_per_s'] / base[r['length']]:.2f}x | {r['nfe']} | {r['positions']} | "
                     f"{r['agreement']:.3f} | {r['gen_ppl']:.2f} | {r['entropy']:.2f} |")
    return "\n".join(lines)


def report_speed(res: dict) -> list[str]:
    if "speed" not in res:
        return []
    lines = ["", "| generated | sampler | s per round | NFE | positions | speed-up per round | median | agreement | "
             "gen PPL | entropy |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["speed"]["rows"]:
        lines.append(f"| {r['length']} | {r['sampler']} | {' / '.join(f'{v:.1f}' for v in r['seconds'])} | "
                     f"{' / '.join(str(v) for v in r['nfe'])} | {r['positions']} | "
                     f"{' / '.join(f'{v:.2f}' for v in r['speedup_rounds'])} | {r['speedup_median']:.2f}x | "
                     f"{r['agreement']:.3f} | {r['gen_ppl']:.2f} | {r['entropy']:.2f} |")
    return lines


def report_prompted(res: dict) -> list[str]:
    if "prompted" not in res:
        return []
    lines = ["", "| model | sampler | temperature | threshold | NFE | gen PPL (± se) | entropy | agreement |",
             "|---|---|---|---|---|---|---|---|"]
    for r in res["prompted"]["rows"]:
        se = r["gen_ppl"] * r["se_nats"]
        agree = f"{r['agreement']:.3f}" if "agreement" in r else "-"
        lines.append(f"| {r['model']} | {r['sampler']} | {r.get('temperature', '-')} | {r.get('threshold', '-')} | "
                     f"{r['nfe']} | {r['gen_ppl']:.2f} ± {se:.2f} | {r['entropy']:.2f} | {agree} |")
    return lines


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.text_genppl", description=__doc__.split("\n")[0])
    p.add_argument("--runs", required=True, help="folder of trained runs named after their presets")
    p.add_argument("--phases", default="genppl,cache", help="comma-separated subset of genppl,cache,speed,prompted,weight,percall,rescore; or report")
    p.add_argument("--n", type=int, default=16, help="genppl: samples per row (default 16)")
    p.add_argument("--presets", default="", help="genppl: only the rows of these presets (comma-separated)")
    p.add_argument("--lengths", default="256,1024", help="cache: generated lengths (default 256,1024)")
    p.add_argument("--threshold", type=float, default=0.9, help="cache: Fast-dLLM's threshold (default 0.9)")
    p.add_argument("--rounds", type=int, default=3, help="speed: interleaved rounds per length (default 3)")
    p.add_argument("--prompt-len", type=int, default=32, help="prompted: prompt bytes of each test window (default 32)")
    p.add_argument("--thresholds", default="0.9,0.7,0.5", help="prompted: Fast-dLLM thresholds (default 0.9,0.7,0.5)")
    p.add_argument("--temperatures", default="0", help="prompted: sampling temperatures (default 0, Fast-dLLM's)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    args = p.parse_args(argv)
    args.lengths = [int(v) for v in args.lengths.split(",")]
    args.presets = [v for v in args.presets.split(",") if v]
    args.thresholds = [float(v) for v in args.thresholds.split(",")]
    args.temperatures = [float(v) for v in args.temperatures.split(",")]
    torch.set_num_threads(args.threads)
    runs = Path(args.runs)
    path = runs / "genppl.json"
    has_judge = (runs / "text-ar-judge" / "model.safetensors").exists()
    judge = load(runs / "text-ar-judge") if has_judge and args.phases != "report" else None
    res = json.loads(path.read_text()) if path.exists() else {}
    if args.phases == "report":
        print(report(json.loads(path.read_text())))
        return
    for phase in args.phases.split(","):
        t0 = time.time()
        if phase == "rescore":
            res = phase_rescore(args, runs, judge)
        else:
            res = json.loads(path.read_text()) if path.exists() else {}  # another process may have written
            fns = {"genppl": phase_genppl, "cache": phase_cache, "weight": phase_weight, "percall": phase_percall,
                   "speed": phase_speed, "prompted": phase_prompted}
            res[phase] = fns[phase](args, runs, judge)
        res[phase + "_wall_s"] = round(time.time() - t0, 1)
        path.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
