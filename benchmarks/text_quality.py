"""Discrete diffusion LMs against the AR baseline at equal compute: held-out perplexity, sampling speed, samples.

    python -m benchmarks.text_quality --out DIR [--steps 600] [--phases train,eval,speed,samples,bpe] ...

Everything goes through unigen's own API (`unigen.run.train / evaluate / load`, `Task.sample`), on the text presets
of `unigen.families.discrete_diffusion.presets` (byte-level Python docs, 128-token windows, the same 3.3M-parameter network, `--steps`
steps of `--batch` windows). Trained runs land in DIR/runs/PRESET and are reused when their config matches, and
held-out results are stored beside them, so a phase can be re-run alone (or side by side with another). Phases:

    train    train text-ar, text-mdlm, text-sedd, text-bd3-4, text-bd3-16; wall and CPU time per run
    eval     what `unigen.run.evaluate(RUN, mc=--mc)` computes, on every held-out window: ppl, nats/token,
             bits/byte, se, MC se; ratios to AR paired over the same windows
    speed    `--gen` generated tokens after a `--prompt`-byte prompt, batch `--batch-gen`, each sampler timed
             round-robin in one process (`--repeats` rounds after a warm-up round), medians
    samples  `--n-samples` texts per sampler at the presets' sampling defaults; space fraction, byte entropy, and
             the nats/byte the trained AR model gives them
    bpe      text-mdlm on a BPE tokenizer at the same budget, against the unigram cross-entropy of its tokens
             (why the presets use bytes)

DIR/results.json holds the raw numbers, DIR/text_quality.md the tables (benchmarks/text_quality.md adds the
analysis).
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch
from torch import Tensor

from benchmarks.harness import log, machine, quartiles, start, subset
from unigen import run as R
from unigen.data import load as load_data
from unigen.families.discrete_diffusion.ar import ar_token_nll
from unigen.families.discrete_diffusion.evaluate import SUMMARY
from unigen.families.discrete_diffusion.evaluate import heldout as heldout_metrics
from unigen.families.discrete_diffusion.network import unwrap, with_bos
from unigen.families.discrete_diffusion.task import METHODS
from unigen.registry import get_preset

PRESETS = ("text-ar", "text-mdlm", "text-sedd", "text-bd3-4", "text-bd3-16")
PHASES = ("train", "eval", "speed", "samples", "bpe")


# ------------------------------------------------------------------------------------------------------ training
def preset_config(name: str, args, **data):
    """The preset with the benchmark's budget (and optional data overrides)."""
    cfg = get_preset(name)
    cfg.train.steps, cfg.train.batch_size = args.steps, args.batch
    cfg.train.ckpt_every = args.steps
    for k, v in data.items():
        setattr(cfg.data, k, v)
    return cfg


def train_run(cfg, out: Path) -> dict:
    """Train cfg into `out` unless a finished run of the same config is there; returns {"seconds", "loss"}."""
    done = out / "train_time.json"
    if done.exists() and (out / "model.safetensors").exists() and R.read_config(out).to_dict() == cfg.to_dict():
        return json.loads(done.read_text())
    t0, c0 = time.perf_counter(), time.process_time()
    res = R.train(cfg, out, overwrite=True)
    info = {"seconds": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "loss": res.loss, "steps": res.step,
            "params": sum(p.numel() for p in R.load(out).parameters())}
    done.write_text(json.dumps(info))
    return info


def phase_train(args, runs: Path) -> dict:
    out = {}
    for p in PRESETS:
        out[p] = train_run(preset_config(p, args), runs / p)
        log(f"train {p}: {out[p]['seconds']:.0f} s, loss {out[p]['loss']:.3f}")
    return out



# ----------------------------------------------------------------------------------------------------- held-out
@torch.no_grad()
def heldout(run_dir: Path, mc: int, seqs: int, seed: int = 0, batch_size: int = 64) -> tuple[dict, Tensor]:
    """What `unigen.run.evaluate(run_dir, mc=mc, seqs=seqs, seed=seed)` computes (the same function), plus each
    window's nats/token (S,), so that two models can be compared on the same windows (paired errors)."""
    cfg, lm = R.read_config(run_dir), unwrap(R.load(run_dir))
    data = load_data(cfg.data, "test")
    method = METHODS[lm.method]
    m, nll = heldout_metrics(lm, method.bound, data, seqs=seqs or len(data), mc=mc, batch_size=batch_size,
                             seed=seed, exact=method.exact)
    out = {**{k: m[k] for k in SUMMARY}, "seqs": m["seqs"], "mc": m["mc_samples"], "tokens": m["tokens"]}
    return out, nll / (m["tokens"] // m["seqs"])


def eval_run(run_dir: Path, mc: int, seqs: int) -> tuple[dict, Tensor]:
    """`heldout` with its wall time, stored in run_dir (reused while the weights are unchanged)."""
    path = run_dir / f"heldout_mc{mc}_seqs{seqs}.json"
    stamp = (run_dir / "train_time.json").read_text()
    if path.exists() and (d := json.loads(path.read_text()))["train"] == stamp:
        return d["summary"], torch.tensor(d["rows"], dtype=torch.float64)
    t0 = time.perf_counter()
    summary, rows = heldout(run_dir, mc, seqs)
    summary["eval_s"] = time.perf_counter() - t0
    path.write_text(json.dumps({"train": stamp, "summary": summary, "rows": rows.tolist()}))
    return summary, rows


def paired_ratio(a: Tensor, b: Tensor) -> tuple[float, float]:
    """ppl_a / ppl_b = exp(mean(a - b)) over the same windows, and its standard error (delta method)."""
    d = (a - b).double()  # (S,) nats/token differences
    r = math.exp(float(d.mean()))
    return r, r * float(d.std()) / math.sqrt(d.numel())


def phase_eval(args, runs: Path) -> dict:
    out, rows = {}, {}
    for p in PRESETS:
        out[p], rows[p] = eval_run(runs / p, args.mc, args.seqs)
        log(f"eval {p}: ppl {out[p]['ppl']:.3f} se {out[p]['se']:.4f} ({out[p]['eval_s']:.0f} s)")
    cli = R.evaluate(runs / "text-ar", seqs=args.seqs)  # exact, no MC: must equal `unigen eval --json`
    out["check_ar_vs_unigen_eval"] = abs(cli["nats_per_token"] - out["text-ar"]["nats_per_token"])
    out["ratios"] = {f"{a}/{b}": paired_ratio(rows[a], rows[b]) for a, b in
                     [(p, "text-ar") for p in PRESETS[1:]] + [("text-mdlm", "text-bd3-16"),
                                                              ("text-bd3-16", "text-bd3-4"),
                                                              ("text-sedd", "text-mdlm")]}
    return out


# -------------------------------------------------------------------------------------------------------- speed
# (name, preset, sampler, use_cache): every row is `Task.sample` with its defaults (one token per step)
SPEED = [
    ("AR, KV cache", "text-ar", "ar", True),
    ("LLaDA low-confidence, full recompute", "text-mdlm", "llada", True),
    ("Fast-dLLM threshold 0.9, full recompute", "text-mdlm", "fast-dllm", True),
    ("BD3 blocks of 16, KV cache", "text-bd3-16", "bd3", True),
    ("BD3 blocks of 16, recompute prefix", "text-bd3-16", "bd3", False),
    ("BD3 blocks of 4, KV cache", "text-bd3-4", "bd3", True),
    ("BD3 blocks of 4, recompute prefix", "text-bd3-4", "bd3", False),
]
PROMPT = "Return the value"  # 16 bytes: one BD3 block of 16, four of 4


def _sample(models: dict, runs: Path, tmp: Path, preset: str, sampler: str, use_cache: bool, **kw) -> dict:
    model, cfg = models[preset]
    task = R.get_task(cfg.task)
    return task.sample(model, cfg, run_dir=runs / preset, out_dir=tmp, sampler=sampler, steps=0,
                       use_cache=use_cache, **kw)


def load_model(runs: Path, preset: str, untrained: list[str]):
    """(model, config) of a trained run; a preset in `untrained` gets its network at initialisation (seed 0)."""
    cfg = R.read_config(runs / preset)
    if preset not in untrained:
        return R.load(runs / preset), cfg
    info = json.loads((runs / preset / "data_info.json").read_text())
    torch.manual_seed(0)
    return R.get_task(cfg.task).build(cfg, info).eval(), cfg


def phase_speed(args, runs: Path) -> dict:
    """Every row once per round, round-robin (so load from other processes hits all alike); the time is the
    sampler's own (`Task.sample`'s "seconds": generation only, no file writing)."""
    models = {p: load_model(runs, p, args.untrained) for p in {row[1] for row in SPEED}}
    seen = [0]  # token positions through the network (per row), counted by a hook on every model
    for model, _ in models.values():
        model.register_forward_pre_hook(lambda m, a: seen.__setitem__(0, seen[0] + a[0].shape[1]))
    prompt = PROMPT[:args.prompt]
    times = {name: [] for name, *_ in SPEED}
    calls = {name: [] for name, *_ in SPEED}
    tokens = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats + 1):  # round 0: a short warm-up, untimed
            for name, preset, sampler, cache in SPEED:
                seen[0] = 0
                s = _sample(models, runs, Path(tmp), preset, sampler, cache, n=args.batch_gen, seed=r,
                            prompt=prompt, length=args.gen if r else 16)
                if r:
                    times[name].append(s["seconds"])
                    calls[name].append((s["nfe"], s["model_calls"], seen[0] / args.gen))
                    tokens[name, r] = json.loads(Path(s["json"]).read_text())["tokens"]
                    log(f"speed round {r} {name}: {s['seconds']:.2f} s, {s['model_calls']} calls")
    out = {}
    for name, *_ in SPEED:
        q1, med, q3 = quartiles(times[name])
        out[name] = {"seconds": times[name], "median_s": med, "q1": q1, "q3": q3,
                     "tokens_per_s": args.batch_gen * args.gen / med,
                     "nfe": statistics.median(c[0] for c in calls[name]),
                     "model_calls": statistics.median(c[1] for c in calls[name]),
                     "positions_per_token": statistics.median(c[2] for c in calls[name]), "calls": calls[name]}
    for name, *_ in SPEED:  # a cached sampler must give its recompute twin's tokens (same seed)
        twin = next((m for m, *_ in SPEED if m != name and m.startswith(name.split(",")[0]) and "recompute" in m
                     and "KV cache" in name), None)
        if twin:
            out[name]["same_tokens_as_recompute"] = all(tokens[name, r] == tokens[twin, r]
                                                        for r in range(1, args.repeats + 1))
    out["setup"] = {"batch": args.batch_gen, "gen": args.gen, "prompt": prompt, "repeats": args.repeats,
                    "untrained": args.untrained}
    return out



# ------------------------------------------------------------------------------------------------------ samples
SAMPLES = [("text-ar", "ar"), ("text-mdlm", "llada"), ("text-mdlm", "llada-random"), ("text-mdlm", "mdlm"),
           ("text-mdlm", "fast-dllm"), ("text-sedd", "sedd-analytic"), ("text-sedd", "sedd-euler"),
           ("text-bd3-4", "bd3"), ("text-bd3-16", "bd3")]
SPACE = 32


def byte_stats(rows: list[list[int]]) -> dict:
    """Fraction of space bytes, and the entropy (bits) of each row's byte histogram, averaged over rows."""
    flat = [b for r in rows for b in r]
    ent = []
    for r in rows:
        c, n = Counter(r), len(r)
        ent.append(-sum(k / n * math.log2(k / n) for k in c.values()))
    return {"space_frac": flat.count(SPACE) / max(len(flat), 1), "byte_entropy_bits": statistics.mean(ent)}


@torch.no_grad()
def ar_gen_nll(ar_lm, rows: list[list[int]]) -> float:
    """Nats per byte of the samples under the trained AR model ("generative perplexity" = exp of it)."""
    x = with_bos(torch.tensor(rows), ar_lm.bos_id)  # (n, T+1)
    return float(ar_token_nll(ar_lm, x, ar_lm.mask_id).mean())


def phase_samples(args, runs: Path) -> dict:
    """Each sampler at the presets' sampling defaults (from scratch, 128 tokens, one token per step)."""
    todo = [(p, s) for p, s in SAMPLES if not args.only or p in args.only]
    models = {p: (R.load(runs / p), R.read_config(runs / p)) for p in {p for p, _ in todo} | {"text-ar"}}
    ar_lm = unwrap(models["text-ar"][0])
    test = load_data(models["text-ar"][1].data, "test")
    ref_rows = test.batch(torch.arange(len(test)))["ids"].tolist()
    out = {"held-out text": {**byte_stats(ref_rows), "ar_nats_per_byte": ar_gen_nll(ar_lm, ref_rows[:64]),
                             "texts": [bytes(r).decode("utf-8", "replace") for r in ref_rows[:2]]}}
    with tempfile.TemporaryDirectory() as tmp:
        for preset, sampler in todo:
            s = _sample(models, runs, Path(tmp), preset, sampler, True, n=args.n_samples, seed=0)
            js = json.loads(Path(s["json"]).read_text())
            rows = js["tokens"]
            out[f"{preset} {sampler}"] = {**byte_stats(rows), "ar_nats_per_byte": ar_gen_nll(ar_lm, rows),
                                          "nfe": s["nfe"], "seconds": s["seconds"], "texts": js["texts"]}
            log(f"samples {preset} {sampler}: spaces {out[f'{preset} {sampler}']['space_frac']:.2f}")
    return out


# ---------------------------------------------------------------------------------------------------------- bpe
def unigram_ce(run_dir: Path, seqs: int) -> float:
    """Cross-entropy (nats/token) of the held-out windows under the training split's token frequencies (add-one):
    the NELBO of a masked model that ignores the context and predicts token frequencies."""
    cfg = R.read_config(run_dir)
    tr, te = load_data(cfg.data, "train"), load_data(cfg.data, "test")
    V = tr.info["vocab_size"]
    counts = torch.bincount(tr.batch(torch.arange(len(tr)))["ids"].flatten(), minlength=V).double() + 1
    logp = (counts / counts.sum()).log()
    x = te.batch(torch.arange(min(seqs or len(te), len(te))))["ids"].flatten()
    return float(-logp[x].mean())


def _loss_mean(run_dir: Path, lo: int, hi: int) -> float:
    """Mean of the logged training losses (each one step's batch) at steps lo..hi."""
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    vals = [m["loss"] for m in lines if "loss" in m and lo <= m.get("step", -1) <= hi]
    return statistics.mean(vals) if vals else float("nan")


def phase_bpe(args, runs: Path) -> dict:
    out = {}
    for name, data in [("text-mdlm", {}), ("text-mdlm-bpe1024", {"tokenizer": "bpe", "vocab_size": 1024})]:
        cfg = preset_config("text-mdlm", args, **data)
        info = train_run(cfg, runs / name)
        ev, _ = eval_run(runs / name, args.mc, args.seqs)
        ce = unigram_ce(runs / name, args.seqs)
        bytes_per_token = ev["nats_per_token"] / math.log(2) / ev["bits_per_byte"]
        out[name] = {"train_s": info["seconds"], **ev, "unigram_nats_per_token": ce,
                     "unigram_bits_per_byte": ce / math.log(2) / bytes_per_token,
                     "loss_early": _loss_mean(runs / name, 50, 150),
                     "loss_end": _loss_mean(runs / name, args.steps - 100, args.steps)}
        log(f"bpe {name}: nelbo {ev['nats_per_token']:.3f} vs unigram {ce:.3f} nats/token")
    return out



# ------------------------------------------------------------------------------------------------------- report
def _header(res: dict, phase: str) -> str:
    m = res["meta"][phase]
    return (f"`{m['command']}` ({m['date']}, {m['wall_s']:.0f} s for this phase; {m['machine']})\n\n")


def _clip(text: str, n: int = 90) -> str:
    text = text.replace("\n", "⏎").replace("|", "\\|")
    return "`" + (text[:n] + "…" if len(text) > n else text).replace("`", "'") + "`"


def _report_eval(res: dict) -> list[str]:
    parts = []
    ev, tr = res["eval"], res.get("train", {})
    parts += ["## Held-out likelihood\n", _header(res, "eval"),
              "| preset | bound | ppl | nats/token ± se | MC se | bits/byte | ppl / AR ppl (paired) | train s |"
              " train CPU s | eval s |\n|---|---|---|---|---|---|---|---|---|---|\n"]
    for p in PRESETS:
        e = ev[p]
        r = ev["ratios"].get(f"{p}/text-ar")
        ratio = f"{r[0]:.3f} ± {r[1]:.3f}" if r else "1"
        kind = "exact NLL" if p == "text-ar" else f"NELBO, mc {e['mc']}"
        parts.append(f"| {p} | {kind} | {e['ppl']:.3f} | {e['nats_per_token']:.4f} ± {e['se']:.4f} | "
                     f"{e['mc_se']:.4f} | {e['bits_per_byte']:.4f} | {ratio} | "
                     f"{tr.get(p, {}).get('seconds', float('nan')):.0f} | "
                     f"{tr.get(p, {}).get('cpu_s', float('nan')):.0f} | {e['eval_s']:.0f} |\n")
    parts.append("\nOther paired ratios: " + ", ".join(
        f"{k} = {v[0]:.3f} ± {v[1]:.3f}" for k, v in ev["ratios"].items() if not k.endswith("/text-ar")) +
        f". AR check against `unigen.run.evaluate`: |difference| = {ev['check_ar_vs_unigen_eval']:.2e} "
        "nats/token.\n\n")
    return parts


def _report_speed(res: dict) -> list[str]:
    parts = []
    sp = res["speed"]
    su = sp["setup"]
    base = sp["LLaDA low-confidence, full recompute"]["median_s"]
    parts += ["## Sampling speed\n", _header(res, "speed"),
              f"Batch {su['batch']}, prompt {su['prompt']!r} ({len(su['prompt'])} bytes), {su['gen']} generated "
              f"tokens, temperature 1, one token per step; {su['repeats']} round-robin rounds after a warm-up."
              + (f" Untrained (initial weights): {', '.join(su['untrained'])}." if su.get("untrained") else "")
              + "\n\n"
              "| sampler | median s [IQR] | tokens/s | NFE | model calls | positions / token |"
              " speed-up over LLaDA |\n"
              "|---|---|---|---|---|---|---|\n"]
    for name, *_ in SPEED:
        r = sp[name]
        parts.append(f"| {name} | {r['median_s']:.2f} [{r['q1']:.2f}, {r['q3']:.2f}] | {r['tokens_per_s']:.1f} | "
                     f"{r['nfe']:.0f} | {r['model_calls']:.0f} | {r['positions_per_token']:.0f} | "
                     f"{base / r['median_s']:.2f}x |\n")
    pairs = [("BD3 blocks of 16, recompute prefix", "BD3 blocks of 16, KV cache"),
             ("BD3 blocks of 4, recompute prefix", "BD3 blocks of 4, KV cache")]
    parts.append("\nKV cache over recompute (median ratio): " + ", ".join(
        f"{b.split(',')[0]} {sp[a]['median_s'] / sp[b]['median_s']:.2f}x" for a, b in pairs) +
        ". Cached and recompute runs gave the same tokens (same seed, every round): " + ", ".join(
        f"{b.split(',')[0]} {sp[b].get('same_tokens_as_recompute')}" for _, b in pairs) +
        ". Positions / token: token positions run through the network per generated token and row.\n\n")
    return parts


def _report_samples(res: dict) -> list[str]:
    parts = []
    sm = res["samples"]
    parts += ["## Samples\n", _header(res, "samples"),
              f"n = {res['samples_n']} from scratch, 128 tokens, each sampler's defaults (one token per step), "
              "seed 0. AR nats/byte: the samples scored by the trained text-ar model (exp of it = generative "
              "perplexity; low for repetitive text, so read it with the space fraction and byte entropy).\n\n"
              "| model, sampler | space bytes | byte entropy (bits) | AR nats/byte | NFE | first sample |\n"
              "|---|---|---|---|---|---|\n"]
    for k, v in sm.items():
        parts.append(f"| {k} | {v['space_frac']:.2f} | {v['byte_entropy_bits']:.2f} | {v['ar_nats_per_byte']:.2f}"
                     f" | {v.get('nfe', '-')} | {_clip(v['texts'][0])} |\n")
    parts.append("\n")
    return parts


def _report_bpe(res: dict) -> list[str]:
    parts = []
    b = res["bpe"]
    parts += ["## Bytes vs BPE for the masked model\n", _header(res, "bpe"),
              "| run | NELBO nats/token ± se | unigram CE nats/token | NELBO bits/byte | unigram bits/byte |"
              " train loss, steps 50-150 / last 100 |\n|---|---|---|---|---|---|\n"]
    for k, v in b.items():
        parts.append(f"| {k} | {v['nats_per_token']:.3f} ± {v['se']:.3f} | {v['unigram_nats_per_token']:.3f} | "
                     f"{v['bits_per_byte']:.3f} | {v['unigram_bits_per_byte']:.3f} | "
                     f"{v['loss_early']:.3f} / {v['loss_end']:.3f} |\n")
    parts.append("\n")
    return parts


def report(res: dict) -> str:
    parts = ["# Text quality: discrete diffusion LMs vs AR at equal compute (generated tables)\n"]
    for phase, section in (("eval", _report_eval), ("speed", _report_speed), ("samples", _report_samples),
                           ("bpe", _report_bpe)):
        if phase in res:
            parts += section(res)
    return "".join(parts)


# -------------------------------------------------------------------------------------------------------- main
def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.text_quality", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output folder: runs/, results.json, text_quality.md")
    p.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated subset of {','.join(PHASES)}")
    p.add_argument("--steps", type=int, default=600, help="training steps of every run (default 600, the presets')")
    p.add_argument("--batch", type=int, default=16, help="training batch of every run (default 16, the presets')")
    p.add_argument("--mc", type=int, default=16, help="eval: Monte-Carlo samples per held-out window (default 16)")
    p.add_argument("--seqs", type=int, default=0, help="eval: held-out windows (default 0 = all)")
    p.add_argument("--gen", type=int, default=256, help="speed: generated tokens (default 256)")
    p.add_argument("--prompt", type=int, default=16, help="speed: prompt bytes from the test split (default 16)")
    p.add_argument("--batch-gen", type=int, default=4, help="speed: sequences generated per call (default 4)")
    p.add_argument("--repeats", type=int, default=3, help="speed: timed rounds after one warm-up (default 3)")
    p.add_argument("--n-samples", type=int, default=4, help="samples: texts per sampler (default 4, the presets')")
    p.add_argument("--untrained", default="", help="speed: presets timed at initialisation instead of trained "
                   "(a BD3 / AR call costs the same; its NFE is set by the schedule, not the weights)")
    p.add_argument("--only", default="", help="samples: only these presets (comma-separated), merged into results")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    args = p.parse_args(argv)
    args.phases = subset(p, args.phases, PHASES, "phase(s)")
    args.untrained = [s for s in args.untrained.split(",") if s]
    args.only = [s for s in args.only.split(",") if s]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    out, command = start("benchmarks.text_quality", args.out, args.threads, argv)
    runs = out / "runs"
    runs.mkdir(exist_ok=True)
    path = out / "results.json"
    for phase in args.phases:
        t0 = time.perf_counter()
        res = globals()[f"phase_{phase}"](args, runs)
        results = json.loads(path.read_text()) if path.exists() else {}  # re-read: phases may run side by side
        results[phase] = {**results.get(phase, {}), **res} if phase == "samples" else res  # samples: by --only
        if phase == "samples":
            results["samples_n"] = args.n_samples
        results.setdefault("meta", {})[phase] = {
            "command": command, "date": datetime.datetime.now().isoformat(timespec="minutes"),
            "wall_s": round(time.perf_counter() - t0, 1), "machine": machine()}
        path.write_text(json.dumps(results, indent=1))
    (out / "text_quality.md").write_text(report(results), encoding="utf-8")
    log(f"results in {path} and {out / 'text_quality.md'}")


if __name__ == "__main__":
    main()
