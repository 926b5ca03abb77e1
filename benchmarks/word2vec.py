"""word2vec: analogy and similarity quality of the presets beside gensim and random vectors; training speed.

    python -m benchmarks.word2vec --out DIR [--phases quality,speed] [--presets text-word2vec,...] [--threads 1]

quality  each preset trained by `unigen.run.train` (DIR/runs/PRESET, reused when finished) and scored by
         `unigen.run.evaluate`; gensim 4.4.0's Word2Vec (1 worker) trained with the same settings on the same chunks
         of the same words, its vectors scored by the same metric code; random vectors (the metrics' own floor)
speed    words per second of one training update over the same 32 chunks, ours (`train_batch`) and gensim's
         (`Word2Vec.train`, 1 worker), timed alternately in this process after a warm-up (median of --repeats)

DIR/results.json holds the numbers; stdout a markdown table (benchmarks/word2vec.md adds the analysis).
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from benchmarks.harness import interleave, log, machine
from unigen.data import load as load_data
from unigen.data.words import analogy_questions, similarity_pairs
from unigen.families.word2vec.evaluate import analogy_metrics, similarity_metrics
from unigen.families.word2vec.task import TASK, train_batch
from unigen.registry import get_preset
from unigen.run import evaluate, read_config, train

PRESETS = ("text-word2vec", "text-word2vec-cbow", "text-word2vec-hs")
METRICS = ("analogy_add", "analogy_mul", "analogy_add_semantic", "analogy_add_syntactic", "ws353_spearman")


def gensim_model(cfg, sentences: list[list[str]], epochs: int):
    """gensim's Word2Vec with the preset's settings (1 worker, its own seed)."""
    from gensim.models import Word2Vec
    m = cfg.model
    return Word2Vec(sentences, vector_size=m.dim, window=m.window, min_count=cfg.data.min_count,
                    sg=int(m.arch == "skipgram"), hs=int(m.hs), negative=m.negative, sample=m.sample,
                    alpha=m.alpha0, min_alpha=m.alpha0 * 1e-4, cbow_mean=1, workers=1, epochs=epochs, seed=1)


def sentences_of(data) -> list[list[str]]:
    vocab = data.info["vocab"]
    return [[vocab[i] for i in row if i >= 0] for row in data.tensors["ids"].tolist()]


def gensim_metrics(model) -> dict[str, float]:
    keys = model.wv.index_to_key
    E, index = torch.from_numpy(model.wv.vectors.copy()), {w: i for i, w in enumerate(keys)}
    return {**analogy_metrics(E, index, analogy_questions()), **similarity_metrics(E, index, similarity_pairs())}


def quality(out: Path, presets: list[str]) -> dict:
    results = {}
    for name in presets:
        cfg, run = get_preset(name), out / "runs" / name
        t = time.perf_counter()
        if not (run / "model.safetensors").exists() or read_config(run).to_dict() != cfg.to_dict():
            log(f"training {name}")
            train(cfg, run, overwrite=run.exists())
        wall = time.perf_counter() - t
        ours = evaluate(run)
        data = load_data(cfg.data, "train")
        epochs = round(cfg.train.steps * cfg.train.batch_size / len(data))
        log(f"gensim {name}: {epochs} epochs")
        t = time.perf_counter()
        ref = gensim_model(cfg, sentences_of(data), epochs)
        results[name] = {"ours": ours, "ours_train_s": wall, "gensim": gensim_metrics(ref),
                         "gensim_train_s": time.perf_counter() - t, "epochs": epochs,
                         "train_words": data.info["train_words"]}
    return results


def speed(presets: list[str], repeats: int) -> dict:
    results = {}
    for name in presets:
        cfg = get_preset(name)
        data = load_data(cfg.data, "train")
        batch = data.batch(torch.arange(32))
        words = int((batch["ids"] >= 0).sum())
        model = TASK.build(cfg, data.info)
        ref = gensim_model(cfg, sentences_of(data), 1)
        chunk = sentences_of(data)[:32]
        ours = lambda: train_batch(model, batch, 0, alpha0=cfg.model.alpha0, steps=10**9)   # noqa: E731
        theirs = lambda: ref.train(chunk, total_words=words, epochs=1)                      # noqa: E731
        t_ours, t_ref = interleave(ours, theirs, repeats=repeats, warmup=1)
        results[name] = {"words": words, "ours_words_s": words / statistics.median(t_ours),
                         "gensim_words_s": words / statistics.median(t_ref)}
        log(f"{name}: {results[name]}")
    return results


def table(res: dict) -> str:
    lines = []
    if "quality" in res:
        lines += ["| preset | model | " + " | ".join(METRICS) + " | train s |", "|---" * (len(METRICS) + 3) + "|"]
        for name, r in res["quality"].items():
            for who in ("ours", "gensim"):
                lines.append(f"| {name} | {who} | " + " | ".join(f"{r[who].get(k, float('nan')):.3f}" for k in METRICS)
                             + f" | {r[who + '_train_s']:.0f} |")
            o = r["ours"]
            lines.append(f"| {name} | random vectors | {o['random_analogy_add']:.3f} | | | | "
                         f"{o['random_ws353_spearman']:.3f} | |")
    if "speed" in res:
        lines += ["", "| preset | ours words/s | gensim words/s | ratio |", "|---|---|---|---|"]
        for name, r in res["speed"].items():
            lines.append(f"| {name} | {r['ours_words_s']:.0f} | {r['gensim_words_s']:.0f} | "
                         f"{r['ours_words_s'] / r['gensim_words_s']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.word2vec", description=__doc__)
    p.add_argument("--out", required=True, help="folder for runs and results.json")
    p.add_argument("--phases", default="quality,speed", help="comma-separated: quality, speed")
    p.add_argument("--presets", default=",".join(PRESETS), help="comma-separated word2vec presets")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1, as gensim's 1 worker)")
    p.add_argument("--repeats", type=int, default=3, help="speed: timed calls per side")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out, presets = Path(args.out), args.presets.split(",")
    out.mkdir(parents=True, exist_ok=True)
    res = {"command": shlex.join(["python", "-m", "benchmarks.word2vec", *(argv or sys.argv[1:])]),
           "machine": machine()}
    if "quality" in args.phases:
        res["quality"] = quality(out, presets)
    if "speed" in args.phases:
        res["speed"] = speed(presets, args.repeats)
    (out / "results.json").write_text(json.dumps(res, indent=2))
    print(table(res))


if __name__ == "__main__":
    main()
