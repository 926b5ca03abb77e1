"""The `unigen` command. It only parses arguments and calls importable functions (unigen.run, unigen.experiments.demo);
`COMMANDS` maps each subcommand to its handler.

    unigen presets
    unigen train PRESET [--section.key=value ...] [--out DIR] [--resume | --overwrite] [--dry-run]
    unigen sample RUN_DIR [--sampler NAME] [--steps N] [--n N] [--seed S] [--guidance W] [--temperature T]
                          [--prompt TEXT] [--json]
    unigen eval RUN_DIR [--json] [--full] [--nfe-sweep [--samplers A,B] [--budgets 5,10] [--n N] [--seeds 0,1]]
                        [--likelihood vlb|ode] [--query Q] [--gen-ppl --judge JUDGE_RUN] [--clip-search]
    unigen demo [--out DIR]
    unigen serve [ROOT or RUN_DIR ...] [--host 127.0.0.1] [--port 8000] [--workers 1]
    unigen detect RUN_DIR --image FILE [--threshold P] [--out FILE]
    unigen rf RUN_DIR [--erf]
    unigen tokenizer train FILE --vocab-size N --out DIR | unigen tokenizer encode DIR TEXT

A user error (or a file-system refusal: permissions, disk full) prints one line `error: ...` on stderr and exits
with code 2. `train --resume` continues with the run's saved config.json; overrides given with it change that config
(training settings only: a different model or data is refused).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from unigen.config import apply_overrides, validate
from unigen.data.text import read_text_file
from unigen.data.tokenizer import OwnBPETokenizer, load_tokenizer
from unigen.errors import UserError
from unigen.experiments.demo import run_demo
from unigen.experiments.receptive_field import rf_report
from unigen.registry import PRESETS, describe, get_preset
from unigen.run import detect, evaluate, read_config, sample, train
from unigen.serve.app import serve
from unigen.train.distributed import close_process_group, exit_now


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit code 2, like every other user error
        raise UserError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="unigen", description="Generative models: train, sample and evaluate from presets.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sub.add_parser("presets", help="list the presets with a one-line description each")

    t = sub.add_parser("train", help="train a preset into a run directory",
                       epilog="Any config field can be overridden as --section.key=value, e.g. --train.steps=200 "
                              "--model.size=small --data.path=my.txt (see --dry-run for all fields).")
    t.add_argument("preset", help="preset name (see `unigen presets`)")
    t.add_argument("--out", help="run directory (default: runs/PRESET)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    t.add_argument("--dry-run", action="store_true", help="print the resolved config as JSON and exit")

    _add_sample(sub)
    _add_eval(sub)
    d = sub.add_parser("demo", help="the `make demo` job: train small image and text models, sample, plot")
    d.add_argument("--out", default="outputs/demo", help="output folder (default: outputs/demo)")

    _add_serve(sub)
    _add_detect(sub)
    _add_rf(sub)
    _add_tokenizer(sub)
    return p


def _add_sample(sub) -> None:
    s = sub.add_parser("sample", help="sample from a trained run")
    s.add_argument("run_dir", help="run directory written by `unigen train`")
    s.add_argument("--sampler", default="", help="sampler name (default: the run's default sampler)")
    s.add_argument("--steps", type=int, default=0, help="sampler steps (0 = the sampler's default)")
    s.add_argument("--n", type=int, default=0, help="number of samples (0 = the run's sample.n)")
    s.add_argument("--seed", type=int, default=None, help="random seed (default: the run's sample.seed)")
    s.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (conditional models)")
    s.add_argument("--temperature", type=float, default=None,
                   help="normalizing flows: scale of the prior's spread (default: the run's model.temperature)")
    s.add_argument("--prompt", default=None, help="text prompt to continue (text models)")
    s.add_argument("--watch", action="store_true", help="text models: show the generation unmasking step by step")
    s.add_argument("--out", default=None, help="output folder (default: RUN/samples/<sampler>-<steps>-seed<seed>)")
    s.add_argument("--json", action="store_true", help="print the JSON summary (files, sampler, NFE) instead of the "
                                                      "generated text or the image grid's path")


def _add_eval(sub) -> None:
    e = sub.add_parser("eval", help="evaluate a trained run")
    e.add_argument("run_dir", help="run directory written by `unigen train`")
    e.add_argument("--json", action="store_true", help="print one JSON object of metrics on stdout")
    e.add_argument("--full", action="store_true",
                   help="the full measurement (the family's paper-sized sample counts, minutes; written to "
                        "RUN/eval.json); without it a quick one of seconds on a toy run (RUN/eval_quick.json)")
    e.add_argument("--nfe-sweep", action="store_true",
                   help="image diffusion: quality against number of function evaluations for every sampler")
    e.add_argument("--samplers", default="", help="--nfe-sweep: comma-separated samplers (default: the method's)")
    e.add_argument("--budgets", default="", help="--nfe-sweep: comma-separated NFE budgets (default 5,10,...,1000)")
    e.add_argument("--n", type=int, default=0, help="--nfe-sweep: samples per score; --likelihood: test images (0 = the default)")
    e.add_argument("--seeds", default="", help="--nfe-sweep: comma-separated noise seeds, scores averaged")
    e.add_argument("--query", default="", help="word2vec: nearest words to a word or to 'king - man + woman'")
    e.add_argument("--gen-ppl", action="store_true",
                   help="text: generative perplexity of --n samples (--samplers A, --budgets STEPS) under --judge")
    e.add_argument("--judge", default="", help="--gen-ppl: run directory of an autoregressive judge (text-ar-judge)")
    e.add_argument("--clip-search", action="store_true",
                   help="BD3-LM: the clipped mask-rate range [beta, omega] of lowest loss variance on --n test batches "
                        "(bd3lms' grid, or --intervals B:O,...); writes RUN/clip_search.json")
    e.add_argument("--intervals", default="", help="--clip-search: comma-separated BETA:OMEGA candidates")
    e.add_argument("--likelihood", default="", choices=("", "vlb", "ode"),
                   help="diffusion: bits/dim of the first --n 8-bit test images, DDPM's variational bound (vlb) or "
                        "the probability-flow ODE (ode)")


def _add_tokenizer(sub) -> None:
    k = sub.add_parser("tokenizer", help="train our byte-level BPE on a text file, or encode text with a tokenizer")
    ks = k.add_subparsers(dest="action", required=True, parser_class=_Parser)
    kt = ks.add_parser("train", help="learn GPT-2-style byte-level BPE merges; write DIR/tokenizer.json (HF format)")
    kt.add_argument("file", help="UTF-8 text file to train on")
    kt.add_argument("--vocab-size", type=int, required=True, help="256 bytes + merges + 3 special tokens (>= 260)")
    kt.add_argument("--out", required=True, help="folder to write tokenizer.json into")
    ke = ks.add_parser("encode", help="print the token ids of TEXT as a JSON list")
    ke.add_argument("dir", help="folder holding tokenizer.json (a run directory of a text model works too)")
    ke.add_argument("text", help="the text to encode")


def _add_serve(sub) -> None:
    v = sub.add_parser("serve", help="a local web page that shows generations of trained runs step by step")
    v.add_argument("paths", nargs="*", default=["runs"],
                   help="run directories or folders holding them (default: runs); nothing outside is readable")
    v.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    v.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    v.add_argument("--workers", type=int, default=1, help="generations run at once; more wait in a queue (default 1)")


def _add_rf(sub) -> None:
    r = sub.add_parser("rf", help="receptive field of each conv stack of a trained run, layer by layer")
    r.add_argument("run_dir", help="run directory written by `unigen train`")
    r.add_argument("--erf", action="store_true", help="also draw the effective receptive field: RUN/figures/erf.png")


def _add_detect(sub) -> None:
    dt = sub.add_parser("detect", help="detection runs: find objects in an image file and draw labelled boxes")
    dt.add_argument("run_dir", help="run directory written by `unigen train` (a detection preset)")
    dt.add_argument("--image", required=True, help="PNG/JPEG image of the size the run was trained on")
    dt.add_argument("--threshold", type=float, default=0.5, help="smallest score of a box that is kept (0-1)")
    dt.add_argument("--out", default=None, help="output PNG (default: RUN/detections/<image name>.png)")


def parse_overrides(extra: list[str]) -> list[str]:
    """`--a.b=1` and `--a.b 1` both become 'a.b=1'; anything else is an error."""
    out, i = [], 0
    while i < len(extra):
        tok = extra[i]
        if not tok.startswith("--") or "." not in tok.split("=", 1)[0]:
            raise UserError(f"unrecognised argument {tok!r}; overrides look like --section.key=value")
        if "=" in tok:
            out.append(tok[2:])
            i += 1
        elif i + 1 < len(extra) and not extra[i + 1].startswith("--"):
            out.append(f"{tok[2:]}={extra[i + 1]}")
            i += 2
        else:
            raise UserError(f"override {tok} has no value")
    return out


def _presets(args, extra) -> None:
    width = max(map(len, PRESETS))
    for name in sorted(PRESETS):
        print(f"{name:<{width}}  {describe(name)}")


def _train(args, extra) -> None:
    out = args.out or f"runs/{args.preset}"
    base = get_preset(args.preset)
    if args.resume and not args.overwrite:  # continue with the saved config; overrides change it
        base = read_config(out)
        if base.preset != args.preset:
            raise UserError(f"{out} holds a run of preset {base.preset!r}, not {args.preset!r}")
    cfg = apply_overrides(base, parse_overrides(extra))
    validate(cfg)
    if args.dry_run:
        print(cfg.to_json())
        return
    result = train(cfg, out, resume=args.resume, overwrite=args.overwrite)
    loss = f" (loss {result.loss:.4f})" if math.isfinite(result.loss) else ""  # nan: nothing left to train
    print(f"trained {result.step} steps{loss}; run directory: {out}")


def _sample(args, extra) -> None:
    kw = {k: v for k, v in (("guidance", args.guidance), ("prompt", args.prompt), ("temperature", args.temperature))
          if v is not None}
    if args.watch:
        kw["watch"] = True
    summary = sample(args.run_dir, sampler=args.sampler, steps=args.steps, n=args.n, seed=args.seed,
                     out_dir=args.out, **kw)
    print(json.dumps(summary, indent=2, default=str) if args.json else describe_samples(summary))


def describe_samples(summary: dict) -> str:
    """What `unigen sample` prints for a person: the generated texts themselves (the family's samples.txt), or the
    path of the picture, then one line of how they were made and where every file is."""
    files = {k: str(v) for k, v in summary.items() if isinstance(v, str) and Path(v).suffix}
    text = next((f for f in files.values() if f.endswith(".txt")), None)
    picture = next((f for f in files.values() if f.endswith(".png")), None)
    how = ", ".join(f"{k} {summary[k]}" for k in ("n", "sampler", "steps", "nfe", "guidance", "temperature")
                    if k in summary)
    lines = [Path(text).read_text(encoding="utf-8").rstrip("\n")] if text and not picture else []
    if picture:
        lines.append(f"image grid: {picture}")
    lines.append(f"({how}; files: {', '.join(files.values())})")
    return "\n".join(lines)


def _eval(args, extra) -> None:
    lists = (("samplers", args.samplers), ("budgets", args.budgets), ("seeds", args.seeds))
    kw = {k: v.split(",") for k, v in lists if v}
    kw.update({"n": args.n} if args.n else {})
    kw.update({"query": args.query} if args.query else {})
    kw.update({"likelihood": args.likelihood} if args.likelihood else {})
    kw.update({"gen_ppl": True} if args.gen_ppl else {})
    kw.update({"judge": args.judge} if args.judge else {})
    kw.update({"clip_search": True} if args.clip_search else {})
    kw.update({"intervals": args.intervals.split(",")} if args.intervals else {})
    metrics = evaluate(args.run_dir, quick=not args.full, **({"nfe_sweep": True} if args.nfe_sweep else {}), **kw)
    if args.json:
        print(json.dumps(metrics))
        return
    for k, v in metrics.items():
        print(f"{k}: {v}")
    if not args.full and not args.query:
        print("(a quick measurement on a small sample; `--full` for the full one)", file=sys.stderr)


def _detect(args, extra) -> None:
    print(json.dumps(detect(args.run_dir, args.image, out=args.out, threshold=args.threshold), indent=2))


def _rf(args, extra) -> None:
    print(rf_report(args.run_dir, erf=args.erf))


def _demo(args, extra) -> None:
    run_demo(args.out)


def _serve(args, extra) -> None:
    serve(args.paths, host=args.host, port=args.port, workers=args.workers, max_jobs=max(16, args.workers))


def _tokenizer(args, extra) -> None:
    if args.action == "train":
        tok = OwnBPETokenizer.train(read_text_file(args.file), args.vocab_size)
        print(f"{len(tok.bpe.merges)} merges, vocabulary {tok.vocab_size}; wrote {tok.save(args.out)}")
    else:
        print(json.dumps(load_tokenizer(args.dir).encode(args.text)))


COMMANDS = {"presets": _presets, "train": _train, "sample": _sample, "eval": _eval, "demo": _demo,
            "tokenizer": _tokenizer, "serve": _serve, "detect": _detect, "rf": _rf}


def run(argv: list[str]) -> int:
    args, extra = build_parser().parse_known_args(argv)
    if extra and args.command != "train":
        raise UserError(f"unrecognised arguments: {' '.join(extra)}")
    COMMANDS[args.command](args, extra)
    return 0


def one_line(msg: str) -> str:
    """Error messages are one line on the terminal, whatever a library put in them."""
    return " ".join(msg.split()) or "unknown error"


def main(argv: list[str] | None = None) -> None:
    code = 1
    try:
        code = run(sys.argv[1:] if argv is None else argv)
    except UserError as e:
        print(f"error: {one_line(str(e))}", file=sys.stderr)
        code = 2
    except OSError as e:  # the file system refused (permissions, a file where a folder should be, disk full)
        what = f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")
        print(f"error: {one_line(what)}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        code = 130
    finally:
        distributed = close_process_group(wait_for_others=code == 0)
    if distributed:        # a torchrun rank: leave without interpreter teardown (gloo's threads can abort it)
        exit_now(code)
    sys.exit(code)
