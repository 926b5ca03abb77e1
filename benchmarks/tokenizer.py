"""Our byte-level BPE (`unigen.data.bpe`) against HF `tokenizers` and `tiktoken`, and bytes vs BPE for the text LMs.

    python -m benchmarks.tokenizer --out DIR [--phases encode,train,lm] [--vocab 1024,8192] [--rounds 7] ...

Phases:
    encode  encoding throughput on one thread (MB/s of UTF-8 input) of the bundled corpus (Python's pydoc topics,
            465k characters), every encoder holding the same merges (their ids are checked equal first): ours with
            its chunk cache warm and emptied before each call, HF `tokenizers` (one string; and `encode_batch` of
            its lines), tiktoken's Rust encoder; timed round-robin in one process, medians; a cProfile of ours
    train   training time: our incremental trainer and HF's BpeTrainer (one thread), interleaved, medians; on a
            slice also our readable trainer and tiktoken's `_educational.bpe_train` (they recount every pair for
            every merge)
    lm      text-ar and text-mdlm on bytes and on our BPE (`--data.tokenizer=unigen-bpe`) at the presets' budget
            (same steps, windows of the same number of tokens): bits/byte on the held-out text that is in every
            run's test split, training and sampling tokens/s and bytes/s
    speed   the lm runs' training step (bf16 autocast forward + backward of one batch) and `unigen sample`, timed
            round-robin in one process: tokens/s and bytes/s free of the load drift between runs trained apart

DIR/results.json holds the numbers, DIR/tokenizer.md the tables (benchmarks/tokenizer.md adds the analysis).
"""
from __future__ import annotations

import os

os.environ.setdefault("RAYON_NUM_THREADS", "1")           # HF tokenizers: one thread (set before it is imported)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import cProfile  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import pstats  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from benchmarks.harness import log, machine, quartiles, start, subset  # noqa: E402
from benchmarks.text_quality import preset_config, train_run  # noqa: E402
from unigen import run as R  # noqa: E402
from unigen.data import load as load_data  # noqa: E402
from unigen.data.bpe import GPT2_SPLIT, BytePairEncoding, train, train_reference  # noqa: E402
from unigen.data.dataset import Dataset  # noqa: E402
from unigen.data.text import split_point, stdlib_corpus, windows  # noqa: E402
from unigen.families.discrete_diffusion.evaluate import heldout  # noqa: E402
from unigen.families.discrete_diffusion.network import unwrap  # noqa: E402
from unigen.families.discrete_diffusion.task import METHODS  # noqa: E402
from unigen.registry import TASKS  # noqa: E402

PHASES = ("encode", "train", "lm", "speed")


def round_robin(fns: dict, rounds: int) -> dict[str, list[float]]:
    """One warm-up call each, then `rounds` rounds calling every function once in turn; seconds per call."""
    for f in fns.values():
        f()
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            out[k].append(time.perf_counter() - t0)
    return out


def encoders(bpe: BytePairEncoding) -> dict:
    """HF `tokenizers` and tiktoken holding `bpe`'s merges."""
    import tiktoken
    from tokenizers import Tokenizer
    ranks = {token: i for i, token in enumerate(bpe.vocab)}
    return {"hf": Tokenizer.from_str(bpe.to_hf_json()),
            "tiktoken": tiktoken.Encoding("ours", pat_str=GPT2_SPLIT, mergeable_ranks=ranks, special_tokens={})}


def profile_cold(bpe: BytePairEncoding, text: str, top: int = 6) -> list[dict]:
    """Where a cold-cache encode of `text` spends its time: the `top` functions by own time."""
    bpe._cache.clear()
    prof = cProfile.Profile()
    prof.runcall(bpe.encode_ordinary, text)
    stats = pstats.Stats(prof)
    total = stats.total_tt
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    return [{"function": f"{Path(f).name}:{line}({name})", "calls": nc, "own_s": tt, "share": tt / total}
            for (f, line, name), (cc, nc, tt, ct, callers) in rows]


def phase_encode(args) -> dict:
    text = stdlib_corpus()
    n_bytes = len(text.encode("utf-8"))
    lines = text.splitlines(keepends=True)
    out = {"bytes": n_bytes}
    for V in args.vocab:
        bpe = BytePairEncoding(train(text, V - 256))
        ref = encoders(bpe)
        hf, tk = ref["hf"], ref["tiktoken"]
        ids = bpe.encode(text)
        assert hf.encode(text, add_special_tokens=False).ids == ids == tk.encode_ordinary(text)
        per_line = [bpe.encode_ordinary(line) for line in lines]   # lines split whitespace runs differently
        assert [e.ids for e in hf.encode_batch(lines, add_special_tokens=False)] == per_line
        fns = {"ours (warm cache)": lambda: bpe.encode_ordinary(text),
               "ours (cache emptied)": lambda: (bpe._cache.clear(), bpe.encode_ordinary(text)),
               "ours per line": lambda: [bpe.encode_ordinary(line) for line in lines],
               "HF tokenizers encode": lambda: hf.encode(text, add_special_tokens=False),
               "HF tokenizers encode_batch(lines)": lambda: hf.encode_batch(lines, add_special_tokens=False),
               "tiktoken encode_ordinary": lambda: tk.encode_ordinary(text)}
        times = round_robin(fns, args.rounds)
        out[str(V)] = {"tokens": len(ids), "times": times, "profile": profile_cold(bpe, text)}
        log(f"encode V={V}: " + ", ".join(f"{k} {n_bytes / quartiles(t)[1] / 1e6:.2f} MB/s" for k, t in times.items()))
    return out


def hf_train(text: str, vocab: int) -> None:
    """HF's BpeTrainer with its ByteLevel pre-tokenizer (GPT-2's split) on `text`."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator([text], trainers.BpeTrainer(vocab_size=vocab, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))


def phase_train(args) -> dict:
    """Medians of `--rounds` interleaved rounds on the whole corpus; one round of all four on the slice."""
    from tiktoken._educational import bpe_train
    text = stdlib_corpus()
    out = {"full": {}, "slice": {}}
    for V in args.vocab:
        times = round_robin({"ours": lambda: train(text, V - 256), "hf": lambda: hf_train(text, V)}, args.rounds)
        out["full"][str(V)] = {k: quartiles(t)[1] for k, t in times.items()}
        log(f"train V={V}: {out['full'][str(V)]}")
    piece, V = text[: args.slice_chars], 256 + args.slice_merges
    times = round_robin({"ours": lambda: train(piece, V - 256), "hf": lambda: hf_train(piece, V),
                         "ours_readable": lambda: train_reference(piece, V - 256),
                         "tiktoken_educational": lambda: bpe_train(piece, V, GPT2_SPLIT, visualise=None)}, 1)
    out["slice"] = {"chars": len(piece), "vocab": V, **{k: t[0] for k, t in times.items()}}
    log(f"train slice: {out['slice']}")
    return out


# ------------------------------------------------------------------------------------------------------------- lm
def lm_configs(args) -> dict:
    """Run name -> config: text-ar and text-mdlm on bytes and on our BPE, at the same budget."""
    out = {}
    for preset in ("text-ar", "text-mdlm"):
        out[preset] = preset_config(preset, args)
        out[f"{preset}-bpe{args.lm_vocab}"] = preset_config(preset, args, tokenizer="unigen-bpe",
                                                            vocab_size=args.lm_vocab)
    return out


def token_bytes(tok, ids: list[int]) -> bytes:
    """The exact bytes of `ids` (no U+FFFD for a window that starts or ends inside a character)."""
    return tok.bpe.decode_bytes(ids) if hasattr(tok, "bpe") else bytes(ids)


def encode_bytes(tok, data: bytes) -> list[int]:
    return tok.bpe.encode_bytes(data) if hasattr(tok, "bpe") else list(data)


def common_heldout(cfgs: dict) -> tuple[bytes, dict]:
    """The end of the corpus that lies in every run's test split (each holds out its last 5% of *tokens*, which
    start at different bytes), and each tokenizer's bytes per token on the whole corpus."""
    corpus = stdlib_corpus().encode("utf-8")
    start, per_token = 0, {}
    for name, cfg in cfgs.items():
        tok = load_data(cfg.data, "train").tokenizer
        ids = encode_bytes(tok, corpus)
        start = max(start, len(token_bytes(tok, ids[:split_point(len(ids))])))
        per_token[name] = len(corpus) / len(ids)
    return corpus[start:], per_token


def eval_common(run_dir: Path, text: bytes, mc: int) -> dict:
    """Held-out bound on `text` cut into the run's windows: nats/token and bits/byte = total nats / ln 2 / the
    exact bytes those windows hold (the AR bound is exact; MDLM's is its NELBO with `mc` draws per window)."""
    cfg, lm = R.read_config(run_dir), unwrap(R.load(run_dir))
    tok = load_data(cfg.data, "test").tokenizer
    ids = encode_bytes(tok, text)
    win = windows(torch.tensor(ids).numpy(), cfg.data.seq_len)                    # (S, T)
    data = Dataset({"ids": win}, {"name": "text", "split": "test"}, tokenizer=tok)
    method = METHODS[lm.method]
    t0 = time.perf_counter()
    m, nll = heldout(lm, method.bound, data, seqs=len(data), mc=mc, batch_size=64, seed=0, exact=method.exact)
    n_bytes = len(token_bytes(tok, win.flatten().tolist()))
    return {"nats_per_token": m["nats_per_token"], "se": m["se"], "mc_se": m["mc_se"], "windows": len(data),
            "tokens": int(win.numel()), "bytes": n_bytes, "bits_per_byte": float(nll.sum()) / math.log(2) / n_bytes,
            "bits_per_byte_decoded": m["bits_per_byte"], "eval_s": time.perf_counter() - t0}


def sample_speed(run_dir: Path, n: int, tmp: Path) -> dict:
    """`unigen sample` from scratch (n sequences, one window of tokens, the run's default sampler), twice: the
    second call is timed. Tokens/s and bytes/s of generated text."""
    R.sample(run_dir, n=n, seed=0, out_dir=tmp / "warm")
    s = R.sample(run_dir, n=n, seed=1, out_dir=tmp / "timed")
    tok = load_data(R.read_config(run_dir).data, "test").tokenizer
    rows = json.loads(Path(s["json"]).read_text())["tokens"]
    n_bytes = sum(len(token_bytes(tok, [i for i in r if i < tok.vocab_size and i not in tok.special_ids])) for r in rows)
    return {"sampler": s["sampler"], "seconds": s["seconds"], "tokens_per_s": s["tokens_per_s"],
            "bytes_per_s": n_bytes / s["seconds"]}


def phase_lm(args) -> dict:
    cfgs = lm_configs(args)
    text, per_token = common_heldout(cfgs)
    out = {"heldout_bytes": len(text), "runs": {}}
    runs = Path(args.out) / "runs"
    for name, cfg in cfgs.items():
        info = train_run(cfg, runs / name)
        tokens = cfg.train.steps * cfg.train.batch_size * cfg.data.seq_len
        res = {**info, "bytes_per_token": per_token[name], "train_tokens_per_s": tokens / info["seconds"],
               "train_bytes_per_s": tokens * per_token[name] / info["seconds"],
               "eval": eval_common(runs / name, text, args.mc),
               "sample": sample_speed(runs / name, args.n_sample, Path(args.out) / "samples" / name)}
        out["runs"][name] = res
        log(f"lm {name}: {res['eval']['bits_per_byte']:.3f} bits/byte, train {res['train_tokens_per_s']:.0f} tok/s, "
            f"sample {res['sample']['tokens_per_s']:.1f} tok/s")
    return out


def phase_speed(args) -> dict:
    steps, bpt = {}, {}
    for name, cfg in lm_configs(args).items():
        run_dir = Path(args.out) / "runs" / name
        model, task = R.load(run_dir).train(), TASKS[cfg.task]
        batch = load_data(cfg.data, "train").batch(torch.arange(cfg.train.batch_size))

        def step(model=model, task=task, batch=batch):
            model.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = task.loss(model, batch)
            (loss[0] if isinstance(loss, tuple) else loss).backward()
        steps[name] = step
        bpt[name] = json.loads((Path(args.out) / "results.json").read_text())["lm"]["runs"][name]["bytes_per_token"]
    times = round_robin(steps, args.rounds)
    tokens = {name: cfg.train.batch_size * cfg.data.seq_len for name, cfg in lm_configs(args).items()}
    out = {name: {"step_s": quartiles(t)[1], "tokens_per_s": tokens[name] / quartiles(t)[1],
                  "bytes_per_s": tokens[name] * bpt[name] / quartiles(t)[1]} for name, t in times.items()}
    gen: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(args.sample_rounds):   # `unigen sample` from scratch: its own timer (generation only)
        for name in steps:
            s = R.sample(Path(args.out) / "runs" / name, n=args.n_sample, seed=r, out_dir=Path(args.out) / "speed" / name)
            gen[name].append(s["seconds"] / (s["n"] * s["length"]))
    for name, t in gen.items():
        q1, med, q3 = quartiles(t)
        out[name].update(sample_tokens_per_s=1 / med, sample_iqr=(1 / q3, 1 / q1))
    return out


# --------------------------------------------------------------------------------------------------------- report
def _mbs(n_bytes: int, times: list[float]) -> str:
    q1, med, q3 = quartiles(times)
    return f"{n_bytes / med / 1e6:.2f} [{n_bytes / q3 / 1e6:.2f}, {n_bytes / q1 / 1e6:.2f}]"


def _report_encode(r: dict) -> list[str]:
    lines = ["## Encoding throughput, one thread\n",
             "| vocab | encoder | MB/s median [IQR] | time / HF encode |", "|---|---|---|---|"]
    for V, v in ((k, x) for k, x in r.items() if k != "bytes"):
        hf = quartiles(v["times"]["HF tokenizers encode"])[1]
        lines += [f"| {V} | {k} | {_mbs(r['bytes'], t)} | {quartiles(t)[1] / hf:.2f} |" for k, t in v["times"].items()]
    V, v = next((k, x) for k, x in r.items() if k != "bytes")
    lines += ["", f"cProfile of ours, cache emptied, vocab {V}:", "", "| function | calls | own s | share |",
              "|---|---|---|---|"]
    lines += [f"| `{p['function']}` | {p['calls']} | {p['own_s']:.3f} | {p['share']:.0%} |" for p in v["profile"]]
    return lines + [""]


def _report_train(r: dict) -> list[str]:
    lines = ["## Training time (s)\n", "| corpus | vocab | ours (incremental) | HF BpeTrainer (1 thread) | ours readable "
             "| tiktoken _educational |", "|---|---|---|---|---|---|"]
    lines += [f"| whole (465k chars) | {V} | {v['ours']:.2f} | {v['hf']:.2f} | - | - |" for V, v in r["full"].items()]
    s = r["slice"]
    lines += [f"| first {s['chars']} chars | {s['vocab']} | {s['ours']:.3f} | {s['hf']:.3f} | {s['ours_readable']:.2f} "
              f"| {s['tiktoken_educational']:.2f} |", ""]
    return lines


def _report_lm(r: dict) -> list[str]:
    lines = [f"## Bytes vs BPE for the text LMs (held-out text in every test split: {r['heldout_bytes']} bytes)\n",
             "| run | bytes/token | params | held-out nats/token ± se | bits/byte | train tokens/s (per CPU s) "
             "| train bytes/s | sample tokens/s | sample bytes/s |", "|---|---|---|---|---|---|---|---|---|"]
    for name, v in r["runs"].items():
        e, s = v["eval"], v["sample"]
        lines.append(f"| {name} | {v['bytes_per_token']:.2f} | {v['params']:,} | {e['nats_per_token']:.3f} ± "
                     f"{e['se']:.3f} | {e['bits_per_byte']:.3f} | {v['train_tokens_per_s']:.0f} "
                     f"({v['train_tokens_per_s'] * v['seconds'] / v['cpu_s']:.0f}) | "
                     f"{v['train_bytes_per_s']:.0f} | {s['tokens_per_s']:.1f} | {s['bytes_per_s']:.1f} |")
    return lines + [""]


def _report_speed(r: dict) -> list[str]:
    lines = ["## Training step and sampling, interleaved in one process\n",
             "| run | train step s (median) | train tokens/s | train bytes/s | sample tokens/s median [IQR] |",
             "|---|---|---|---|---|"]
    return lines + [f"| {k} | {v['step_s']:.3f} | {v['tokens_per_s']:.0f} | {v['bytes_per_s']:.0f} | "
                    f"{v['sample_tokens_per_s']:.1f} [{v['sample_iqr'][0]:.1f}, {v['sample_iqr'][1]:.1f}] |"
                    for k, v in r.items()] + [""]


def report(res: dict) -> str:
    parts = ["# Tokenizer benchmark (generated tables)\n", f"{res['machine']}\n", f"`{res['command']}`\n"]
    for phase, section in (("encode", _report_encode), ("train", _report_train), ("lm", _report_lm),
                           ("speed", _report_speed)):
        if phase in res:
            parts += section(res[phase])
    return "\n".join(parts)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.tokenizer", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output folder: results.json, tokenizer.md, runs/")
    p.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated subset of {','.join(PHASES)}")
    p.add_argument("--vocab", default="1024,8192", help="encode/train: vocabulary sizes (default 1024,8192)")
    p.add_argument("--rounds", type=int, default=7, help="encode, train: timed rounds (default 7)")
    p.add_argument("--slice-chars", type=int, default=20_000, help="train: chars for the slow trainers (20000)")
    p.add_argument("--slice-merges", type=int, default=100, help="train: merges on the slice (default 100)")
    p.add_argument("--steps", type=int, default=600, help="lm: training steps (default 600, the presets')")
    p.add_argument("--batch", type=int, default=16, help="lm: training windows per step (default 16, the presets')")
    p.add_argument("--lm-vocab", type=int, default=512, help="lm: BPE vocabulary with specials (default 512)")
    p.add_argument("--mc", type=int, default=4, help="lm: Monte-Carlo draws per window for MDLM (default 4)")
    p.add_argument("--n-sample", type=int, default=4, help="lm, speed: sequences per sampling call (default 4)")
    p.add_argument("--sample-rounds", type=int, default=3, help="speed: sampling rounds (default 3)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    args = p.parse_args(argv)
    args.phases = subset(p, args.phases, PHASES, "phase(s)")
    args.vocab = [int(v) for v in args.vocab.split(",") if v]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    out, command = start("benchmarks.tokenizer", args.out, args.threads, argv)
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results["command"] = command
    results["machine"] = machine()
    for phase in args.phases:
        results[phase] = globals()[f"phase_{phase}"](args)
        path.write_text(json.dumps(results, indent=1))
    (out / "tokenizer.md").write_text(report(results))
    print(report(results))


if __name__ == "__main__":
    main()
