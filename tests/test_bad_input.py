"""Every bad input is one line `error: ...` naming the problem, exit code 2, no traceback (CLI), or a UserError (API).

Most CLI cases run in process through `unigen.cli.main` (fast); a few run as real `python -m unigen` subprocesses
to check what a user's terminal shows. Each case states the words the message must contain.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import unigen
from unigen import cli
from unigen.config import DataConfig, apply_overrides, validate
from unigen.errors import UserError
from unigen.registry import get_preset

TINY = ["--train.steps=2", "--model.hidden=16", "--train.progress=false"]
TOY = ["--train.steps=2", "--train.batch_size=64", "--train.progress=false"]
TEXT = "text-mdlm"  # the text presets read --data.path


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, str]:
    """A trained tiny run, damaged copies of it, and bad data files."""
    root = tmp_path_factory.mktemp("bad")
    run, other = root / "run", root / "other"
    assert cli.run(["train", "mlp-digits", "--out", str(run), *TINY]) == 0
    assert cli.run(["train", "mlp-digits", "--out", str(other), *TINY, "--model.hidden=8"]) == 0
    assert cli.run(["train", "toy2d-edm", "--out", str(root / "toy"), *TOY]) == 0

    def variant(name: str, edit) -> str:
        d = root / name
        shutil.copytree(run, d)
        edit(d)
        return str(d)

    def config_edit(fn):
        def edit(d):
            cfg = json.loads((d / "config.json").read_text())
            fn(cfg)
            (d / "config.json").write_text(json.dumps(cfg))
        return edit

    def truncate(p: Path):
        p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])

    def truncate_ckpts(d):
        for c in (d / "checkpoints").iterdir():
            truncate(c / "model.safetensors")

    p = {
        "run": str(run),
        "tmp": str(root),
        "other_model": variant("other_model", lambda d: shutil.copy(other / "model.safetensors", d)),
        "trunc_model": variant("trunc_model", lambda d: truncate(d / "model.safetensors")),
        "empty_model": variant("empty_model", lambda d: (d / "model.safetensors").write_bytes(b"")),
        "no_weights": variant("no_weights", lambda d: (d / "model.safetensors").unlink()),
        "trunc_ckpt": variant("trunc_ckpt", truncate_ckpts),
        "cfg_corrupt": variant("cfg_corrupt", lambda d: (d / "config.json").write_text('{"task": "classify", ')),
        "cfg_binary": variant("cfg_binary", lambda d: (d / "config.json").write_bytes(b"\xff\xfe\x00\x01")),
        "cfg_list": variant("cfg_list", lambda d: (d / "config.json").write_text("[1, 2]")),
        "cfg_type": variant("cfg_type", config_edit(lambda c: c["train"].update(steps="abc"))),
        "cfg_key": variant("cfg_key", config_edit(lambda c: c["train"].update(stepz=3))),
        "cfg_task": variant("cfg_task", config_edit(lambda c: c.update(task="telepathy"))),
        "cfg_range": variant("cfg_range", config_edit(lambda c: c["train"].update(batch_size=-4))),
        "no_info": variant("no_info", lambda d: (d / "data_info.json").unlink()),
        "no_config": variant("no_config", lambda d: (d / "config.json").unlink()),
        "toy": str(root / "toy"),
    }
    swapped = root / "toy_swapped"  # a diffusion run whose weights come from the classifier
    shutil.copytree(root / "toy", swapped)
    for name in ("model.safetensors", "ema.safetensors"):
        shutil.copy(run / "model.safetensors", swapped / name)
    p["toy_swapped"] = str(swapped)
    files = {"empty.txt": b"", "latin1.txt": "caf\xe9 cr\xe8me".encode("latin-1") * 50,
             "binary.bin": bytes(range(256)) * 8, "blank.txt": b"   \n\n  \t\n"}
    for name, data in files.items():
        (root / name).write_bytes(data)
    (root / "not_a_run").mkdir()
    (root / "not_a_run" / "thesis.tex").write_text("precious")
    (root / "a_file").write_text("x")
    p.update({k.split(".")[0]: str(root / k) for k in files})
    p.update(not_a_run=str(root / "not_a_run"), a_file=str(root / "a_file"))
    return p


# (id, argv, words the one-line message must contain). {run}, {tmp}, ... are filled from `paths`;
# {out} is a fresh directory per case.
CASES = [
    # names
    ("unknown-preset", ["train", "mnist-gan", "--out", "{out}"], "unknown preset 'mnist-gan'"),
    ("unknown-command", ["fly"], "invalid choice: 'fly'"),
    ("no-command", [], "required: command"),
    ("train-no-preset", ["train"], "required: preset"),
    ("no-sampler-in-family", ["sample", "{run}", "--sampler", "ddim"], "has no samplers"),
    ("unknown-sampler", ["sample", "{toy}", "--sampler", "dpm-99"], "unknown sampler 'dpm-99' for diffusion; known:"),
    ("unknown-sampler-in-config", ["train", "toy2d-edm", "--sample.sampler=dpm-99", "--out", "{out}"],
     "sample.sampler='dpm-99' is not a sampler of diffusion"),
    ("sample-negative-steps", ["sample", "{toy}", "--steps=-3"], "--steps and --n must be >= 0"),
    ("sample-negative-guidance", ["sample", "{toy}", "--guidance=-1", "--n=2", "--steps=2"], "guidance -1.0"),
    ("sample-prompt-on-images", ["sample", "{toy}", "--prompt", "hi", "--n=2", "--steps=2"], "no option(s) prompt"),
    ("sample-weights-other-model", ["sample", "{toy_swapped}", "--n=2", "--steps=2"], "does not match this model"),
    ("extra-argument", ["eval", "{run}", "--bogus"], "unrecognised arguments: --bogus"),
    ("eval-unknown-option", ["eval", "{run}", "--nfe-sweep"], "has no option(s) nfe_sweep"),
    # overrides: keys, types, ranges
    ("unknown-key", ["train", "mlp-digits", "--train.stepz=3", "--out", "{out}"],
     "unknown key 'train.stepz': did you mean 'train.steps'?"),
    ("unknown-section", ["train", "mlp-digits", "--optim.lr=3", "--out", "{out}"], "unknown key 'optim.lr'"),
    ("key-below-leaf", ["train", "mlp-digits", "--model.hidden.x=3", "--out", "{out}"],
     "model.hidden has no sub-fields"),
    ("section-as-value", ["train", "mlp-digits", "--train", "5", "--out", "{out}"], "unrecognised argument '--train'"),
    ("override-no-value", ["train", "mlp-digits", "--train.steps"], "override --train.steps has no value"),
    ("stray-positional", ["train", "mlp-digits", "fast"], "unrecognised argument 'fast'"),
    ("int-type", ["train", "mlp-digits", "--train.steps=abc"], "train.steps expects an int, got 'abc'"),
    ("int-fraction", ["train", "mlp-digits", "--train.steps=2.5"], "train.steps expects an int, got '2.5'"),
    ("float-type", ["train", "mlp-digits", "--train.lr=fast"], "train.lr expects a float, got 'fast'"),
    ("float-nan", ["train", "mlp-digits", "--train.lr=nan"], "train.lr expects a finite float"),
    ("bool-type", ["train", "mlp-digits", "--train.progress=maybe"], "train.progress expects a bool"),
    ("negative-steps", ["train", "mlp-digits", "--train.steps=-5"], "train.steps must be > 0, got -5"),
    ("zero-batch", ["train", "mlp-digits", "--train.batch_size=0"], "train.batch_size must be > 0"),
    ("negative-lr", ["train", "mlp-digits", "--train.lr=-1e-3"], "train.lr must be >= 0"),
    ("negative-guidance", ["train", "mlp-digits", "--sample.guidance=-1"], "sample.guidance must be >= 0, got -1.0"),
    ("ema-out-of-range", ["train", "mlp-digits", "--train.ema_decay=1.5"], "train.ema_decay must be in [0, 1)"),
    ("negative-seed", ["train", "mlp-digits", "--train.seed=-1"], "train.seed must be in [0, 2147483647]"),
    ("bad-choice", ["train", "mlp-digits", "--train.precision=fp8"], "train.precision='fp8' is not one of: auto, fp32, bf16"),
    ("bad-nonfinite", ["train", "mlp-digits", "--train.nonfinite=ignore"], "train.nonfinite='ignore' is not one of"),
    ("unknown-dataset", ["train", "mlp-digits", "--data.name=imagenet"], "data.name='imagenet' is not one of"),
    ("bpe-vocab", ["train", TEXT, "--data.tokenizer=bpe", "--data.vocab_size=100"], "data.vocab_size must be >= 260"),
    ("block-not-dividing-length", ["train", "text-bd3-4", "--model.block_size=5", "--out", "{out}"],
     "model.block_size=5 must be positive and divide data.seq_len="),
    ("seq-len-too-long", ["train", TEXT, "--data.seq_len=100000", "--out", "{out}"], "too few for data.seq_len=100000"),
    ("image-size-vs-dit-patch", ["train", "mnist-edm", "--model.backbone=dit", "--data.name=digits", "--data.image_size=30",
      "--out", "{out}"],
     "is not divisible by model.patch="),
    ("image-size-vs-unet-levels", ["train", "mnist-edm", "--data.name=digits", "--data.image_size=30", "--out", "{out}"],
     "image size 30 cannot be halved 2 times"),
    ("negative-image-size", ["train", "mlp-digits", "--data.image_size=-8"], "data.image_size must be >= 0"),
    # model settings a family checks
    ("unknown-arch", ["train", "mlp-digits", "--model.arch=cnn", "--out", "{out}"], "model.arch='cnn' is not one of"),
    ("patch-not-dividing", ["train", "vit-mnist", "--data.name=digits", "--model.patch=3", "--out", "{out}"],
     "model.patch=3 does not divide the image size 8x8"),
    ("image-size-vs-patch", ["train", "vit-mnist", "--data.name=digits", "--data.image_size=30", "--out", "{out}"],
     "model.patch=4 does not divide the image size 30x30"),
    ("unknown-vit-size", ["train", "vit-mnist", "--data.name=digits", "--model.size=huge", "--out", "{out}"],
     "unknown ViT size 'huge'"),
    ("data-without-labels", ["train", "mlp-digits", "--data.name=toy2d", "--out", "{out}"], "has no labels"),
    ("batch-bigger-than-data", ["train", "mlp-digits", "--train.batch_size=100000", "--out", "{out}"],
     "fewer than one global batch"),
    # data files
    ("text-missing", ["train", TEXT, "--data.path={tmp}/nope.txt", "--out", "{out}"],
     "nope.txt does not exist"),
    ("text-empty", ["train", TEXT, "--data.path={empty}", "--out", "{out}"],
     "empty.txt is empty"),
    ("text-blank", ["train", TEXT, "--data.path={blank}", "--out", "{out}"],
     "blank.txt is empty (only whitespace)"),
    ("text-not-utf8", ["train", TEXT, "--data.path={latin1}", "--out", "{out}"],
     "latin1.txt is not valid UTF-8"),
    ("text-binary", ["train", TEXT, "--data.path={binary}", "--out", "{out}"],
     "binary.bin contains a NUL byte"),
    ("text-directory", ["train", TEXT, "--data.path={tmp}", "--out", "{out}"],
     "is not a regular file"),
    # run directories
    ("out-holds-run", ["train", "mlp-digits", "--out", "{run}"], "already holds a run; pass --resume"),
    ("overwrite-non-run", ["train", "mlp-digits", "--out", "{not_a_run}", "--overwrite"],
     "holds files but no unigen run (no config.json); refusing to delete them"),
    ("out-holds-files", ["train", "mlp-digits", "--out", "{not_a_run}"], "already holds files"),
    ("out-is-file", ["train", "mlp-digits", "--out", "{a_file}"], "exists and is not a directory"),
    ("out-under-file", ["train", "mlp-digits", "--out", "{a_file}/run", *TINY], "Not a directory"),
    ("resume-and-overwrite", ["train", "mlp-digits", "--out", "{run}", "--resume", "--overwrite"],
     "--resume and --overwrite exclude each other"),
    ("resume-missing", ["train", "mlp-digits", "--out", "{tmp}/never", "--resume"], "never does not exist"),
    ("resume-non-run", ["train", "mlp-digits", "--out", "{not_a_run}", "--resume"], "is not a run directory"),
    ("resume-other-preset", ["train", "vit-mnist", "--out", "{run}", "--resume"],
     "holds a run of preset 'mlp-digits', not 'vit-mnist'"),
    ("resume-other-model", ["train", "mlp-digits", "--out", "{run}", "--resume", "--model.hidden=64"],
     "with model.hidden=64: the run was trained with 16"),
    ("resume-truncated-ckpt", ["train", "mlp-digits", "--out", "{trunc_ckpt}", "--resume"],
     "no intact checkpoint"),
    ("eval-missing-dir", ["eval", "{tmp}/never"], "run directory"),
    ("sample-missing-dir", ["sample", "{tmp}/never"], "never does not exist"),
    ("eval-not-a-run", ["eval", "{not_a_run}"], "is not a run directory (no config.json)"),
    ("eval-no-config", ["eval", "{no_config}"], "no config.json"),
    ("eval-config-corrupt", ["eval", "{cfg_corrupt}"], "config.json is not valid JSON"),
    ("eval-config-binary", ["eval", "{cfg_binary}"], "config.json is not valid JSON"),
    ("eval-config-not-object", ["eval", "{cfg_list}"], "is not a unigen config"),
    ("eval-config-wrong-type", ["eval", "{cfg_type}"], "cfg_type/config.json: train.steps should be int, got 'abc'"),
    ("eval-config-unknown-key", ["eval", "{cfg_key}"], "cfg_key/config.json has an unknown key 'train.stepz'"),
    ("eval-config-unknown-task", ["eval", "{cfg_task}"], "unknown task 'telepathy'"),
    ("eval-config-out-of-range", ["eval", "{cfg_range}"], "cfg_range/config.json: train.batch_size must be > 0"),
    ("eval-no-data-info", ["eval", "{no_info}"], "data_info.json is missing or corrupt"),
    ("eval-weights-other-model", ["eval", "{other_model}"], "model.safetensors does not match this model"),
    ("eval-weights-truncated", ["eval", "{trunc_model}"], "model.safetensors is not a readable safetensors file"),
    ("eval-weights-empty", ["eval", "{empty_model}"], "model.safetensors is not a readable safetensors file"),
    ("eval-no-weights", ["eval", "{no_weights}"], "has no trained weights yet"),
]
# model settings each family validates in its build(): a one-line UserError naming the field
MODEL_SETTINGS = {
    "patch-zero": (["train", "vit-mnist", "--data.name=digits", "--model.patch=0", "--out", "{out}"], "model.patch"),
    "negative-hidden": (["train", "mlp-digits", "--model.hidden=-1", "--out", "{out}"], "model.hidden"),
    "dropout-above-one": (["train", "mlp-digits", "--model.dropout=2", "--out", "{out}"], "model.dropout"),
}


def fill(argv: list[str], paths: dict, out: Path) -> list[str]:
    return [a.format(out=out, **paths) for a in argv]


def check_error(code, err: str, words: str) -> None:
    assert code == 2, f"exit code {code}, stderr {err!r}"
    assert "Traceback" not in err
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line: {err!r}"
    assert err.startswith("error: ") and words in err, err


@pytest.mark.parametrize("argv,words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_cli(argv, words, paths, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(fill(argv, paths, tmp_path / "out"))
    check_error(e.value.code, capsys.readouterr().err, words)


@pytest.mark.parametrize("case", list(MODEL_SETTINGS))
def test_bad_model_settings(case, paths, tmp_path, capsys):
    argv, words = MODEL_SETTINGS[case]
    with pytest.raises(SystemExit) as e:
        cli.main(fill(argv, paths, tmp_path / "out"))
    check_error(e.value.code, capsys.readouterr().err, words)


def test_cases_are_many_and_distinct():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)


SUBPROCESS = ["unknown-key", "text-not-utf8", "eval-weights-truncated"]


def test_bad_input_real_subprocesses(paths, tmp_path):
    """What a terminal shows: run a few cases as `python -m unigen ...`, all at once."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    cases = {c[0]: c for c in CASES}
    procs = {name: subprocess.Popen([sys.executable, "-m", "unigen", *fill(cases[name][1], paths, tmp_path / name)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
             for name in SUBPROCESS}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        check_error(proc.returncode, err, cases[name][2])
        assert out == ""


# --- the Python API -------------------------------------------------------------------------------------

def test_api_errors(paths, tmp_path):
    run = paths["run"]
    with pytest.raises(UserError, match="unknown preset"):
        get_preset("nope")
    cfg = get_preset("mlp-digits")
    with pytest.raises(UserError, match="unknown key 'train.stepz'"):
        apply_overrides(cfg, ["train.stepz=1"])
    cfg.train.steps = -1
    with pytest.raises(UserError, match="train.steps must be > 0"):
        unigen.train(cfg, tmp_path / "a")
    cfg = get_preset("mlp-digits")
    cfg.train.lr = "0.1"  # a config built in Python with a wrong type
    with pytest.raises(UserError, match="train.lr should be float, got '0.1'"):
        validate(cfg)
    with pytest.raises(UserError, match="does not exist"):
        unigen.load(tmp_path / "missing")
    with pytest.raises(UserError, match="not a readable safetensors"):
        unigen.load(paths["trunc_model"])
    with pytest.raises(UserError, match="has no samplers"):
        unigen.sample(run, sampler="euler")
    with pytest.raises(UserError, match="has no option"):
        unigen.evaluate(run, fid=True)
    assert isinstance(unigen.load(run), torch.nn.Module)


@pytest.mark.parametrize("name,words", [("empty", "is empty"), ("latin1", "not valid UTF-8"),
                                        ("binary", "NUL byte"), ("blank", "only whitespace"), ("tmp", "regular file")])
def test_api_text_files(name, words, paths):
    with pytest.raises(UserError, match=words):
        unigen.data.load(DataConfig(name="text", path=paths[name]), "train")


def test_api_token_ids_out_of_vocabulary():
    from unigen.data import ByteTokenizer
    tok = ByteTokenizer()
    assert tok.decode(tok.encode("ok")) == "ok"
    for bad in ([300], [-1], [65, 259]):
        with pytest.raises(UserError, match="outside the byte tokenizer's vocabulary 0..258"):
            tok.decode(bad)


def test_text_model_forward_rejects_out_of_vocabulary_ids():
    from unigen.models.text import TextTransformer, text_config
    model = TextTransformer(text_config("tiny", vocab_size=11))
    assert model(torch.zeros(1, 4, dtype=torch.long)).shape == (1, 4, 11)  # in range: fine
    with pytest.raises(UserError, match="token id 11 is outside the model's vocabulary 0..10"):
        model(torch.tensor([[1, 2, 11, 3]]))
    with pytest.raises(UserError, match="token id -1"):
        model(torch.tensor([[1, -1]]))
