"""The written-out RNN / LSTM / GRU against torch.nn (weights copied: outputs, final states and every gradient
equal in float64, packed / bidirectional / multi-layer), the cells against torch.nn.*Cell, gradcheck in float64,
the init options against their definitions, and the automatic choice of the fast path."""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from unigen.errors import UserError
from unigen.nn.recurrent import CELLS, GRU, LSTM, RNN, make_recurrent, scan

TORCH = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn_tanh": torch.nn.RNN, "rnn_relu": torch.nn.RNN}
EXACT = dict(rtol=0, atol=1e-12)  # float64 throughout: the two paths differ only by summation order


def pair(cell, I=3, H=5, **kw):
    """Ours forced onto the written-out cells, and a torch.nn module with our weights copied in."""
    ours = make_recurrent(cell, I, H, impl="cells", **kw).double()
    extra = {"nonlinearity": cell[4:]} if cell.startswith("rnn_") else {}
    ref = TORCH[cell](I, H, **extra, **kw).double()
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def states(h):
    return h if isinstance(h, tuple) else (h,)


def grads(m):
    return {n: p.grad.clone() for n, p in m.named_parameters()}


@pytest.mark.parametrize("cell", list(TORCH))
@pytest.mark.parametrize("bidirectional", [False, True])
def test_packed_multilayer_equals_torch(cell, bidirectional):
    torch.manual_seed(0)
    ours, ref = pair(cell, num_layers=2, bidirectional=bidirectional, batch_first=True)
    D = 2 if bidirectional else 1
    x = torch.randn(4, 7, 3, dtype=torch.float64)
    lengths = torch.tensor([3, 7, 1, 5])  # unsorted: exercises sorted_indices / unsorted_indices
    h0 = tuple(torch.randn(2 * D, 4, 5, dtype=torch.float64) for _ in range(2 if cell == "lstm" else 1))
    results = []
    for m in (ours, ref):
        xi = x.clone().requires_grad_(True)
        hi = tuple(h.clone().requires_grad_(True) for h in h0)
        packed = pack_padded_sequence(xi, lengths, batch_first=True, enforce_sorted=False)
        out, hn = m(packed, hi if cell == "lstm" else hi[0])
        padded, _ = pad_packed_sequence(out, batch_first=True)
        w = torch.linspace(-1, 1, padded.numel(), dtype=torch.float64).view_as(padded)
        loss = (padded * w).sum() + sum((s * s).sum() for s in states(hn))
        loss.backward()
        results.append((padded, states(hn), xi.grad, [h.grad for h in hi], grads(m)))
    (o1, s1, gx1, gh1, gw1), (o2, s2, gx2, gh2, gw2) = results
    torch.testing.assert_close(o1, o2, **EXACT)
    for a, b in zip(s1 + tuple(gh1), s2 + tuple(gh2)):
        torch.testing.assert_close(a, b, **EXACT)
    torch.testing.assert_close(gx1, gx2, **EXACT)
    assert gw1.keys() == gw2.keys()
    for n in gw1:
        torch.testing.assert_close(gw1[n], gw2[n], **EXACT, msg=n)


@pytest.mark.parametrize("cell", list(TORCH))
def test_padded_time_major_and_unbatched_equal_torch(cell):
    torch.manual_seed(1)
    ours, ref = pair(cell, num_layers=1)
    x = torch.randn(6, 2, 3, dtype=torch.float64)  # (T, B, I)
    for inp in (x, x[:, 0]):  # batched and unbatched (T, I)
        (o1, h1), (o2, h2) = ours(inp), ref(inp)
        torch.testing.assert_close(o1, o2, **EXACT)
        for a, b in zip(states(h1), states(h2)):
            torch.testing.assert_close(a, b, **EXACT)


@pytest.mark.parametrize("name,ref_cls", [("LSTM", torch.nn.LSTMCell), ("GRU", torch.nn.GRUCell),
                                          ("RNN_TANH", torch.nn.RNNCell), ("RNN_RELU", torch.nn.RNNCell)])
def test_cells_equal_torch_cells(name, ref_cls):
    torch.manual_seed(2)
    kw = {"nonlinearity": name[4:].lower()} if name.startswith("RNN") else {}
    ref = ref_cls(3, 4, **kw).double()
    x, h = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    gi = torch.nn.functional.linear(x, ref.weight_ih, ref.bias_ih)
    gh = torch.nn.functional.linear(h, ref.weight_hh, ref.bias_hh)
    if name == "LSTM":
        c = torch.randn(5, 4, dtype=torch.float64)
        for a, b in zip(CELLS[name](gi, gh, (h, c)), ref(x, (h, c))):
            torch.testing.assert_close(a, b, **EXACT)
    else:
        torch.testing.assert_close(CELLS[name](gi, gh, (h,))[0], ref(x, h), **EXACT)


@pytest.mark.parametrize("name", list(CELLS))
def test_cells_gradcheck_float64(name):
    torch.manual_seed(3)
    G = {"LSTM": 4, "GRU": 3}.get(name, 1)
    gi = torch.randn(2, 3 * G, dtype=torch.float64, requires_grad=True)
    gh = torch.randn(2, 3 * G, dtype=torch.float64, requires_grad=True)
    state = tuple(torch.randn(2, 3, dtype=torch.float64, requires_grad=True) for _ in range(2 if name == "LSTM" else 1))
    assert torch.autograd.gradcheck(lambda a, b, *s: CELLS[name](a, b, s), (gi, gh, *state))


def test_layer_gradcheck_float64_packed_bidirectional():
    torch.manual_seed(4)
    m = LSTM(2, 3, num_layers=2, bidirectional=True, impl="cells").double()
    x = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)
    packed = lambda v: pack_padded_sequence(v, torch.tensor([4, 2]))  # noqa: E731
    assert torch.autograd.gradcheck(lambda v: m(packed(v))[0].data, (x,))


def test_scan_reverse_joins_each_sequence_at_its_last_step():
    """Brute force: reverse-scanning packed rows equals running each sequence alone, backwards from its own end."""
    torch.manual_seed(5)
    m = GRU(2, 3, impl="cells").double()
    x, lengths = torch.randn(5, 3, 2, dtype=torch.float64), torch.tensor([5, 3, 1])
    p = pack_padded_sequence(x, lengths)
    h0 = torch.randn(3, 3, dtype=torch.float64)
    gi = torch.nn.functional.linear(p.data, m.weight_ih_l0, m.bias_ih_l0)
    out, (hT,) = scan(CELLS["GRU"], gi, p.batch_sizes.tolist(), (h0,), m.weight_hh_l0, m.bias_hh_l0, reverse=True)
    for b, n in enumerate(lengths.tolist()):
        h = h0[b:b + 1]
        for t in reversed(range(n)):
            gi_t = torch.nn.functional.linear(x[t, b:b + 1], m.weight_ih_l0, m.bias_ih_l0)
            (h,) = CELLS["GRU"](gi_t, torch.nn.functional.linear(h, m.weight_hh_l0, m.bias_hh_l0), (h,))
        torch.testing.assert_close(h[0], hT[b], **EXACT)


def test_forget_bias_and_orthogonal_init():
    m = LSTM(3, 4, num_layers=2, forget_bias=1.0, orthogonal=True)
    for name, p in m.named_parameters():
        if name.startswith("bias_ih"):
            assert torch.equal(p, torch.tensor([0.0] * 4 + [1.0] * 4 + [0.0] * 8))  # i f g o
        elif name.startswith("bias_hh"):
            assert torch.equal(p, torch.zeros(16))
        elif name.startswith("weight_hh"):
            for k in range(4):
                W = p[4 * k:4 * (k + 1)].detach()
                torch.testing.assert_close(W @ W.T, torch.eye(4), rtol=0, atol=1e-5)
    default = LSTM(3, 4)  # torch's init: every bias U(-1/2, 1/2), nothing forced to 1
    assert all(p.abs().max() <= 0.5 for n, p in default.named_parameters() if n.startswith("bias"))


def test_fast_path_selected_automatically():
    assert not LSTM(2, 3).uses_cells and not GRU(2, 3).train().uses_cells
    m = LSTM(2, 3, recurrent_dropout=0.5)
    assert m.train().uses_cells and not m.eval().uses_cells
    assert LSTM(2, 3, impl="cells").uses_cells


def test_auto_fast_path_equals_cells_in_float32():
    """The kernel torch picks on this machine (mkldnn / fused) against our cells, float32, same weights."""
    torch.manual_seed(6)
    m = LSTM(3, 8, num_layers=2, batch_first=True)
    x = torch.randn(2, 10, 3)
    fast, _ = m(x)
    m.impl = "cells"
    slow, _ = m(x)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)  # float32 rounding of different summation orders


def test_recurrent_dropout_is_one_mask_per_sequence():
    """h * m before W_hh == W_hh diag(m): a torch LSTM with W_hh's columns scaled by the same mask (batch of 1)."""
    torch.manual_seed(7)
    p = 0.5
    m = LSTM(2, 6, recurrent_dropout=p).double().train()
    x = torch.randn(9, 1, 2, dtype=torch.float64)
    torch.manual_seed(8)
    out, _ = m(x)
    torch.manual_seed(8)
    mask = torch.bernoulli(torch.full((1, 6), 1 - p, dtype=torch.float64)) / (1 - p)
    ref = torch.nn.LSTM(2, 6).double()
    ref.load_state_dict(m.state_dict())
    with torch.no_grad():
        ref.weight_hh_l0.mul_(mask)  # column j scaled by m_j
    torch.testing.assert_close(out, ref(x)[0], **EXACT)


def test_bad_options_are_user_errors():
    with pytest.raises(UserError, match="impl"):
        LSTM(2, 3, impl="cudnn")
    with pytest.raises(UserError, match="recurrent_dropout"):
        LSTM(2, 3, recurrent_dropout=0.1, impl="torch")
    with pytest.raises(UserError, match="forget_bias"):
        make_recurrent("gru", 2, 3, forget_bias=1.0)
    with pytest.raises(UserError, match="unknown recurrent cell"):
        make_recurrent("lstn", 2, 3)
    with pytest.raises(UserError, match="nonlinearity"):
        RNN(2, 3, nonlinearity="sigmoid")
    with pytest.raises(UserError, match="hidden state"):
        LSTM(2, 3, impl="cells")(torch.randn(4, 2, 2), (torch.zeros(1, 3, 3), torch.zeros(1, 3, 3)))
