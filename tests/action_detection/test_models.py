"""The online action detectors: causality (future frames never change past outputs), frame-by-frame streaming equal
to the clip computation with a state of constant size, IDN's weights all trained, the loss's label alignment,
the stream data's dynamics, and bad input."""
import numpy as np
import pytest
import torch

from unigen import run
from unigen.cli import main
from unigen.config import apply_overrides
from unigen.data import load
from unigen.data.stream import (BRIGHT, GROW, JITTER, MAX_PHASE, MIN_PHASE, PHASES, SIDE, WIDTH, StreamData,
                                labels_of, trajectory)
from unigen.errors import UserError
from unigen.families.action_detection.losses import IGNORE, detection_loss
from unigen.families.action_detection.network import OnlineDetector
from unigen.families.action_detection.task import TASK, crop
from unigen.families.action_detection.presets import PRESETS
from unigen.registry import get_preset

ONLINE = ("trn", "idn", "oadtr", "single")
INFO = {"shape": (1, 16, 16), "num_classes": 6, "stream_len": 400, "classes": ["bg", "a", "b", "c", "d", "e"]}


def small(arch: str) -> OnlineDetector:
    cfg = apply_overrides(get_preset("stream-trn"), [f"model.arch={arch}", "model.window=5", "model.clip_frames=4",
                                                     "model.anticipation=2", "model.hidden=16", "model.feature=8",
                                                     "model.channels=4", "model.enc_layers=1"])
    torch.manual_seed(0)
    return TASK.build(cfg, INFO).eval()


def frames(B=2, L=12, seed=0):
    return torch.randn(B, L, 1, 16, 16, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", ONLINE)
def test_future_frames_never_change_past_outputs(arch):
    net, x = small(arch), frames()
    y = x.clone()
    y[:, 7:] = torch.randn_like(y[:, 7:])                         # a different future from frame 7 on
    p, q = net.stream(x), net.stream(y)
    assert torch.equal(p[:, :7], q[:, :7]) and not torch.allclose(p[:, 7:], q[:, 7:])


def test_the_offline_model_does_see_the_future():
    """The same check on the bidirectional upper bound fails, as it must: the causality test has power."""
    net, x = small("bidirectional"), frames()
    y = x.clone()
    y[:, 7:] = torch.randn_like(y[:, 7:])
    assert not torch.allclose(net.stream(x)[:, :7], net.stream(y)[:, :7])
    with pytest.raises(UserError, match="streaming"):
        net.head.init_state(2, x)


@pytest.mark.parametrize("arch", ONLINE)
def test_streaming_equals_the_clip_computation(arch):
    """Frame by frame from a fresh state = the training-time computation over the whole prefix (zero-padded
    windows for IDN / OadTR, an LSTM from a zero state for TRN)."""
    net, x = small(arch), frames(L=10)
    with torch.no_grad():
        clip = torch.softmax(net(x, 10)["scores"], -1)
    torch.testing.assert_close(net.stream(x), clip, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", ("trn", "idn", "oadtr"))
def test_streaming_state_has_constant_size(arch):
    net = small(arch)
    state = net.head.init_state(2, torch.zeros(1, 8))
    sizes = [tuple(s.shape) for s in state]
    with torch.no_grad():
        for t in range(30):
            _, _, state = net.head.step(torch.randn(2, 8), state)
    assert [tuple(s.shape) for s in state] == sizes


def test_every_idn_weight_is_registered_and_trained():
    net = small("idn").train()
    names = {n for n, _ in net.head.named_parameters()}
    for w in ("W_hr", "W_x0r", "W_xtz", "W_x0z", "W_xh", "W_hh", "embed", "early"):
        assert f"idu.{w}.weight" in names
    batch = load(StreamData(train_streams=2, test_streams=1, stream_len=60), "train").batch(torch.arange(2))
    loss, logs = TASK.loss(net, batch)
    loss.backward()
    assert set(logs) == {"current", "frame", "early", "contrast"}
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_future_terms_are_aligned_with_the_labels_ahead():
    """Logits that put all mass on the label i+1 frames ahead give a ~zero loss; shifted by one they do not."""
    T, n, l_d, K = 3, 4, 2, 3
    y = torch.tensor([[0, 1, 2, 2, 1, 0, 1, 2, 0]])                      # T - 1 + n + l_d = 8 frames
    y = torch.cat([y[:, :8]], 1)
    amb = torch.zeros_like(y, dtype=torch.bool)
    big = 50.0

    def out(shift):
        cur = torch.nn.functional.one_hot(y[:, T - 1: T - 1 + n], K).float() * big
        fut = torch.stack([torch.nn.functional.one_hot(y[:, T + i + shift: T + i + shift + n], K)
                           for i in range(l_d)], 2).float() * big
        return {"scores": cur, "future": fut}
    assert detection_loss(out(0), y, amb, T, n, l_d)[0] < 1e-6
    assert detection_loss(out(-1), y, amb, T, n, l_d)[1]["future"] > 1
    amb[:, T - 1] = True                                               # an ambiguous scored frame carries no loss
    wrong = out(0)
    wrong["scores"][0, 0] = wrong["scores"][0, 0].roll(1)
    assert detection_loss(wrong, y, amb, T, n, l_d)[1]["current"] < 1e-6 and IGNORE < 0


def test_crop_takes_each_streams_own_window():
    t = torch.arange(20).reshape(2, 10)
    assert crop(t, torch.tensor([1, 6]), 3).tolist() == [[1, 2, 3], [16, 17, 18]]


def idu_type1_numpy(x, embed_w, embed_b, W):
    """The authors' IDU (hjeun/idu, keras `IDUCell.type1`, reset_after=False, no bias) transcribed in numpy with
    keras' row-vector convention (x @ kernel), the kernels being the transposes of torch's Linear weights."""
    sig = lambda a: 1 / (1 + np.exp(-a))                                  # noqa: E731
    emb = np.maximum(x @ embed_w.T + embed_b, 0)                          # the `embedding` dense + ReLU
    k = {name: w.T for name, w in W.items()}
    x0, h = emb[:, -1], np.zeros((x.shape[0], embed_w.shape[0]))
    for t in range(x.shape[1]):
        r_t = sig(h @ k["W_hr"] + x0 @ k["W_x0r"])                        # fc_n_add(h_r, h_r_kernel, inputs0_r, ...)
        z_t = sig(emb[:, t] @ k["W_xtz"] + x0 @ k["W_x0z"])
        h_h = r_t * h
        h_t = np.tanh(emb[:, t] @ k["W_xh"] + h_h @ k["W_hh"])
        h = (1 - z_t) * h + h_t * z_t
    return h


def test_idu_matches_the_authors_type1_cell():
    """Against an independent transcription of the reference cell; weights scaled up so that the gates are far
    from 1/2 (a swapped update convention or the reset applied after W_hh then changes the state a lot)."""
    net = small("idn")
    idu = net.head.idu
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name in ("W_hr", "W_x0r", "W_xtz", "W_x0z", "W_xh", "W_hh"):
            getattr(idu, name).weight.copy_(torch.randn(16, 16, generator=g))
    x = torch.randn(3, 5, 8, generator=g, dtype=torch.float64)
    W = {name: getattr(idu, name).weight.detach().double().numpy()
         for name in ("W_hr", "W_x0r", "W_xtz", "W_x0z", "W_xh", "W_hh")}
    want = idu_type1_numpy(x.numpy(), idu.embed.weight.detach().double().numpy(),
                           idu.embed.bias.detach().double().numpy(), W)
    got = idu.double()(x)["h"].detach().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_idu_accumulates_only_relevant_inputs():
    """z_t = 0 (every x_t judged irrelevant to x_0) leaves the state at h = 0 whatever the window holds; z_t = 1
    with W_hh = 0 makes the last state tanh(W_xh x~_0): the current frame's information alone."""
    idu = small("idn").head.idu.double()
    x = torch.randn(2, 5, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        idu.embed.bias.fill_(10.0)                                  # every x~ > 0
        idu.W_xtz.weight.zero_()
        idu.W_x0z.weight.copy_(-1e4 * torch.eye(16))                # z = sigmoid(-1e4 x~_0) = 0
    assert torch.all(idu(x)["h"] == 0)
    with torch.no_grad():
        idu.W_x0z.weight.copy_(1e4 * torch.eye(16))                 # z = 1
        idu.W_hh.weight.zero_()
    other = x.clone()
    other[:, :-1] = torch.randn(2, 4, 8, dtype=torch.float64)
    e0 = torch.relu(idu.embed(x[:, -1]))
    torch.testing.assert_close(idu(x)["h"], torch.tanh(idu.W_xh(e0)))
    torch.testing.assert_close(idu(other)["h"], torch.tanh(idu.W_xh(e0)))


def test_stream_classes_differ_only_in_the_order_of_their_phases():
    g = np.random.Generator(np.random.PCG64(0))
    y, motion, amb = labels_of(g, 4000)
    state = trajectory(g, y, motion, amb)
    step = (state[1:, :2] - state[:-1, :2] + SIDE / 2) % SIDE - SIDE / 2    # torus displacement per frame
    dw = np.diff(state[:, 3])
    change = np.r_[False, y[1:] != y[:-1]]
    assert (amb == change).all()                          # exactly the onsets and the first frames after an action
    starts = np.flatnonzero(change & (y > 0))
    for c, (first, second) in PHASES.items():
        seen = 0
        for s in starts[y[starts] == c]:
            if (y[s:] == c).all():
                continue                                                    # cut by the stream's end
            n = int(np.argmax(y[s:] != c))                                  # the action's length
            moves = np.c_[step, dw][s: s + n - 1]                           # frames s+1 .. s+n-1, from their previous
            h1 = next(i for i in range(n - 1) if not np.allclose(moves[i], first))
            assert MIN_PHASE <= h1 <= MAX_PHASE and MIN_PHASE <= n - 1 - h1 <= MAX_PHASE
            assert np.allclose(moves[:h1], first) and np.allclose(moves[h1:], second)
            seen += 1
        assert seen > 10
    # each primitive runs in both classes of its pair: the pair's frames show the same motions, in either order
    grow = [np.isclose(dw[y[1:] == c], GROW).mean() for c in (1, 2)]
    assert abs(grow[0] - grow[1]) < 0.03
    bg = (y[1:] == 0) & ~amb[1:]
    assert np.abs(step[bg]).max() <= JITTER and np.abs(dw[bg]).max() < 1e-12  # background only drifts
    assert state[:, 3].min() >= WIDTH[0] - 1e-9 and state[:, 3].max() <= WIDTH[1] + 1e-9
    assert state[:, 2].min() >= BRIGHT[0] and state[:, 2].max() <= BRIGHT[1]
    # within a pair, the width of the growing frames has (nearly) the same distribution in both classes
    widths = [state[1:, 3][(y[1:] == c) & np.isclose(dw, GROW)] for c in (1, 2)]
    assert abs(widths[0].mean() - widths[1].mean()) < 0.15


def test_bad_input_is_a_user_error():
    net = small("oadtr")
    with pytest.raises(UserError, match="shorter than the model's window"):
        net.stream(frames(L=3))
    cfg = apply_overrides(get_preset("stream-trn"), ["model.window=64"])
    with pytest.raises(UserError, match="shorter than the model's training clip"):
        TASK.build(cfg, dict(INFO, stream_len=60))
    batch = load(StreamData(train_streams=2, test_streams=1, stream_len=60), "train").batch(torch.arange(2))
    batch["y"][0, 3] = 9
    with pytest.raises(UserError, match=r"class ids in \[0, 6\)"):
        TASK.loss(small("trn"), batch)


@pytest.mark.parametrize("argv,words", [
    (["--model.window=64", "--data.stream_len=60"], "shorter than the model's training clip of 83"),
    (["--data.stream_len=30"], "data.stream_len must be >= 40 frames"),
    (["--model.arch=lstm"], "model.arch='lstm' is not one of"),
])
def test_bad_stream_options_exit_2_with_one_line(argv, words, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "stream-trn", "--out", str(tmp_path / "run"), "--data.train_streams=2",
              "--data.test_streams=1", *argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and words in err


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_trains_two_steps_and_evaluates(preset, tmp_path):
    cfg = apply_overrides(get_preset(preset), ["train.steps=2", "train.batch_size=2", "train.progress=false",
                                               "data.train_streams=2", "data.test_streams=1", "data.stream_len=60"])
    run.train(cfg, tmp_path / "run")
    metrics = TASK.evaluate(run.load(tmp_path / "run"), cfg, run_dir=tmp_path / "run", quick=True)
    assert 0 <= metrics["mAP"] <= 1 and 0 <= metrics["cAP"] <= 1 and metrics["frames_per_s"] > 0


def test_detect_returns_the_runs_of_predicted_actions():
    net = small("single")
    labels = torch.tensor([[0, 2, 2, 2, 0, 0, 5, 5], [1, 1, 0, 0, 0, 0, 0, 3]])
    probs = torch.nn.functional.one_hot(labels, 6).float() * 0.5 + 0.5 / 6        # argmax = labels
    net.stream = lambda x: probs[: len(x)]
    found = TASK.detect(net, None, {"x": frames(L=8)})
    assert [(d["stream"], d["start"], d["end"], d["class"]) for d in found] == \
        [(0, 1, 4, 2), (0, 6, 8, 5), (1, 0, 2, 1), (1, 7, 8, 3)]
    assert all(d["score"] == pytest.approx(0.5 + 0.5 / 6) for d in found)
