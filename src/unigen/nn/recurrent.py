"""Recurrent networks written out as cells: Elman RNN (tanh / ReLU), LSTM and GRU; multi-layer, bidirectional, over
padded batches or packed variable-length sequences; PyTorch's gate order, biases and parameter layout, so each
module also runs on torch's fused kernel (the fast path) with the very same weights.

    LSTM (Hochreiter & Schmidhuber 1997, forget gate of Gers et al. 2000), exactly as torch.nn.LSTM:
        i = sigma(W_ii x + b_ii + W_hi h + b_hi)        f = sigma(W_if x + b_if + W_hf h + b_hf)
        g = tanh (W_ig x + b_ig + W_hg h + b_hg)        o = sigma(W_io x + b_io + W_ho h + b_ho)
        c' = f * c + i * g                              h' = o * tanh(c')
    GRU (Cho et al. 2014), exactly as torch.nn.GRU (and cuDNN): the reset gate multiplies the hidden projection,
    its bias included (Cho's paper applies r to h before the projection):
        r = sigma(W_ir x + b_ir + W_hr h + b_hr)        z = sigma(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh (W_in x + b_in + r * (W_hn h + b_hn))  h' = (1 - z) * n + z * h
    RNN (Elman 1990): h' = act(W_ih x + b_ih + W_hh h + b_hh), act = tanh | relu

Layout (torch's): weight_ih_l{k}[_reverse] (G H, I), weight_hh_l{k}[_reverse] (G H, H), bias_ih / bias_hh (G H,),
gate blocks stacked in the order above (G = 4: i f g o; G = 3: r z n; G = 1). Shapes: T time, B batch, I input,
H hidden, L layers, D directions. A packed sequence is time-major rows (sum_t B_t, I) with decreasing B_t.

Options beyond torch's constructor: `forget_bias` (LSTM; None = torch's init, U(-1/sqrt(H), 1/sqrt(H)) for every
bias; a number b = every bias 0 but the forget gate's b_if = b, b_hf = 0; b = 1 is Keras' default
`unit_forget_bias=True` (Jozefowicz et al. 2015), not PyTorch's), `orthogonal` (each H x H gate block of W_hh
orthogonal, Saxe et al. 2014; Keras orthogonalises the whole (H, G H) kernel instead), `recurrent_dropout`
(Gal & Ghahramani 2016: one dropout mask per sequence on h before W_hh, the same at every step; torch's kernel
has no such option) and `impl`: "auto" takes torch's kernel unless recurrent dropout is active, "cells" forces
the written-out cells, "torch" the kernel.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from unigen.errors import UserError

State = tuple[Tensor, ...]   # (h,) or (h, c)
IMPLS = ("auto", "cells", "torch")


# ------------------------------------------------------------------------------------------------------ the cells
def lstm_cell(gi: Tensor, gh: Tensor, state: State) -> State:
    """One LSTM step (torch.nn.LSTMCell's equations). gi = W_ih x + b_ih, gh = W_hh h + b_hh: (B, 4H) in i f g o
    order; state (h, c) (B, H) each -> (h', c')."""
    i, f, g, o = (gi + gh).chunk(4, dim=-1)  # (B, H) each
    c = torch.sigmoid(f) * state[1] + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def gru_cell(gi: Tensor, gh: Tensor, state: State) -> State:
    """One GRU step (torch.nn.GRUCell's): n = tanh(W_in x + b_in + r * (W_hn h + b_hn)). gi, gh (B, 3H) in r z n
    order; state (h,) -> (h',)."""
    i_r, i_z, i_n = gi.chunk(3, dim=-1)  # (B, H) each
    h_r, h_z, h_n = gh.chunk(3, dim=-1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return ((1 - z) * n + z * state[0],)


def rnn_tanh_cell(gi: Tensor, gh: Tensor, state: State) -> State:
    """One Elman step h' = tanh(W_ih x + b_ih + W_hh h + b_hh). (B, H)."""
    return (torch.tanh(gi + gh),)


def rnn_relu_cell(gi: Tensor, gh: Tensor, state: State) -> State:
    """One Elman step h' = relu(W_ih x + b_ih + W_hh h + b_hh). (B, H)."""
    return (torch.relu(gi + gh),)


CELLS = {"LSTM": lstm_cell, "GRU": gru_cell, "RNN_TANH": rnn_tanh_cell, "RNN_RELU": rnn_relu_cell}


# ------------------------------------------------------------------------------------------- one layer, one way
def scan(cell, gi: Tensor, batch_sizes: list[int], state0: State, w_hh: Tensor, b_hh: Tensor | None,
         reverse: bool = False, h_mask: Tensor | None = None) -> tuple[Tensor, State]:
    """Run `cell` over packed rows. gi (N, G H): the input projections of all steps, time-major, step t holding
    batch_sizes[t] rows (decreasing); state0 (B, H) each. Forward, a sequence leaves when its rows end (its final
    state is taken there); reverse, it joins at its last step with its state0. h_mask (B, H): recurrent dropout.
    Returns the outputs h (N, H) and the final state (B, H) each, in the batch's row order."""
    starts = [0]
    for bs in batch_sizes[:-1]:
        starts.append(starts[-1] + bs)
    outs: list[Tensor | None] = [None] * len(batch_sizes)
    finals: list[State] = []
    state: State = tuple(s[:batch_sizes[-1 if reverse else 0]] for s in state0)
    for t in (reversed(range(len(batch_sizes))) if reverse else range(len(batch_sizes))):
        bs, cur = batch_sizes[t], state[0].shape[0]
        if bs < cur:  # forward: rows bs..cur have ended
            finals.append(tuple(s[bs:] for s in state))
            state = tuple(s[:bs] for s in state)
        elif bs > cur:  # reverse: rows cur..bs start here
            state = tuple(torch.cat([s, s0[cur:bs]]) for s, s0 in zip(state, state0))
        h = state[0] if h_mask is None else state[0] * h_mask[:bs]
        state = cell(gi[starts[t]:starts[t] + bs], F.linear(h, w_hh, b_hh), state)
        outs[t] = state[0]
    finals.append(state)
    final = tuple(torch.cat([f[k] for f in reversed(finals)]) for k in range(len(state)))
    return torch.cat(outs), final  # (N, H), (B, H) each


# -------------------------------------------------------------------------------------------- the modules
class _WrittenOut:
    """The written-out forward shared by LSTM, GRU and RNN below (mixed into torch's classes, whose parameters
    and fused forward they keep)."""

    def _set_options(self, forget_bias, orthogonal, recurrent_dropout, impl) -> None:
        if impl not in IMPLS:
            raise UserError(f"impl must be one of {', '.join(IMPLS)}, got {impl!r}")
        if not 0 <= recurrent_dropout < 1:
            raise UserError(f"recurrent_dropout must be in [0, 1), got {recurrent_dropout}")
        if recurrent_dropout and impl == "torch":
            raise UserError("recurrent_dropout needs the written-out cells (impl=auto or cells); "
                            "torch's kernel has none")
        self.forget_bias, self.orthogonal = forget_bias, orthogonal
        self.recurrent_dropout, self.impl = recurrent_dropout, impl

    def reset_parameters(self) -> None:
        """torch's init (every weight and bias U(-1/sqrt(H), 1/sqrt(H))), then the options of the module docstring."""
        super().reset_parameters()
        if not hasattr(self, "impl"):  # called by torch's __init__, before the options are set
            return
        H, G = self.hidden_size, self.gate_count
        with torch.no_grad():
            for name, p in self.named_parameters():
                if self.orthogonal and name.startswith("weight_hh"):
                    for k in range(G):
                        nn.init.orthogonal_(p[k * H:(k + 1) * H])
                if self.forget_bias is not None and name.startswith("bias"):
                    p.zero_()
                    if name.startswith("bias_ih"):
                        p[H:2 * H] = self.forget_bias  # i f g o: the second block

    @property
    def gate_count(self) -> int:
        return {"LSTM": 4, "GRU": 3}.get(self.mode, 1)

    @property
    def uses_cells(self) -> bool:
        """Whether forward runs the written-out cells (else torch's fused kernel)."""
        return self.impl == "cells" or (self.impl == "auto" and self.training and self.recurrent_dropout > 0)

    def forward(self, input, hx=None):
        """As torch.nn.LSTM/GRU/RNN.forward: input (T, B, I), (B, T, I) with batch_first, (T, I), or a
        PackedSequence; hx (L D, B, H) (LSTM: a pair). Returns (output, h_n) (LSTM: (output, (h_n, c_n)))."""
        if not self.uses_cells:
            return super().forward(input, hx)
        packed = isinstance(input, PackedSequence)
        if packed:
            data, batch_sizes = input.data, input.batch_sizes.tolist()
            perm, unperm = input.sorted_indices, input.unsorted_indices
        else:
            if input.dim() not in (2, 3):
                raise UserError(f"{self.mode} input must be (T, B, I), (B, T, I) or (T, I), got {tuple(input.shape)}")
            x = input.unsqueeze(1) if input.dim() == 2 else (input.transpose(0, 1) if self.batch_first else input)
            T, B = x.shape[:2]
            data, batch_sizes, perm, unperm = x.reshape(T * B, -1), [B] * T, None, None
        state0 = self._initial_state(hx, batch_sizes[0], data, perm, unbatched=not packed and input.dim() == 2)
        out, final = self._layers(data, batch_sizes, state0)
        if unperm is not None:
            final = tuple(s.index_select(1, unperm) for s in final)
        if packed:
            output = PackedSequence(out, input.batch_sizes, perm, unperm)
        else:
            output = out.view(T, B, -1)
            output = output[:, 0] if input.dim() == 2 else (output.transpose(0, 1) if self.batch_first else output)
            if input.dim() == 2:
                final = tuple(s[:, 0] for s in final)
        return output, (final if self.mode == "LSTM" else final[0])

    def _initial_state(self, hx, B: int, data: Tensor, perm: Tensor | None, unbatched: bool) -> State:
        """hx as a tuple of (L D, B, H) tensors (zeros if None), permuted into the packed order."""
        n = self.num_layers * (2 if self.bidirectional else 1)
        if hx is None:
            zeros = data.new_zeros(n, B, self.hidden_size)
            return (zeros, zeros) if self.mode == "LSTM" else (zeros,)
        state = tuple(hx) if self.mode == "LSTM" else (hx,)
        if unbatched:
            state = tuple(s.unsqueeze(1) for s in state)
        for s in state:
            if tuple(s.shape) != (n, B, self.hidden_size):
                raise UserError(f"{self.mode} hidden state must be {(n, B, self.hidden_size)}, got {tuple(s.shape)}")
        return state if perm is None else tuple(s.index_select(1, perm) for s in state)

    def _layers(self, data: Tensor, batch_sizes: list[int], state0: State) -> tuple[Tensor, State]:
        """Every layer and direction over packed rows: outputs (N, D H) and final states (L D, B, H) each."""
        cell, D = CELLS[self.mode], 2 if self.bidirectional else 1
        finals = []
        for layer in range(self.num_layers):
            outs = []
            for d in range(D):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                w_ih, w_hh = getattr(self, "weight_ih" + sfx), getattr(self, "weight_hh" + sfx)
                b_ih = getattr(self, "bias_ih" + sfx) if self.bias else None
                b_hh = getattr(self, "bias_hh" + sfx) if self.bias else None
                s0 = tuple(s[layer * D + d] for s in state0)
                out, fin = scan(cell, F.linear(data, w_ih, b_ih), batch_sizes, s0, w_hh, b_hh, reverse=bool(d),
                                h_mask=self._recurrent_mask(s0[0]))
                outs.append(out)
                finals.append(fin)
            data = torch.cat(outs, dim=-1) if D == 2 else outs[0]  # (N, D H)
            if self.dropout and self.training and layer < self.num_layers - 1:
                data = F.dropout(data, self.dropout, training=True)
        return data, tuple(torch.stack([f[k] for f in finals]) for k in range(len(state0)))

    def _recurrent_mask(self, h0: Tensor) -> Tensor | None:
        """Gal & Ghahramani's variational mask on h, one per sequence and layer-direction (inverted dropout)."""
        p = self.recurrent_dropout
        if not (self.training and p > 0):
            return None
        return torch.bernoulli(torch.full_like(h0, 1 - p)) / (1 - p)  # (B, H)


class LSTM(_WrittenOut, nn.LSTM):
    """torch.nn.LSTM's parameters and results, with written-out cells and the options of the module docstring."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, *,
                 forget_bias: float | None = None, orthogonal: bool = False, recurrent_dropout: float = 0.0,
                 impl: str = "auto"):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional)
        self._set_options(forget_bias, orthogonal, recurrent_dropout, impl)
        if forget_bias is not None or orthogonal:
            self.reset_parameters()


class GRU(_WrittenOut, nn.GRU):
    """torch.nn.GRU's parameters and results, with written-out cells."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, *,
                 orthogonal: bool = False, recurrent_dropout: float = 0.0, impl: str = "auto"):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional)
        self._set_options(None, orthogonal, recurrent_dropout, impl)
        if orthogonal:
            self.reset_parameters()


class RNN(_WrittenOut, nn.RNN):
    """torch.nn.RNN's parameters and results (nonlinearity tanh | relu), with written-out cells."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, *,
                 orthogonal: bool = False, recurrent_dropout: float = 0.0, impl: str = "auto"):
        if nonlinearity not in ("tanh", "relu"):
            raise UserError(f"RNN nonlinearity must be tanh or relu, got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, num_layers, nonlinearity, bias, batch_first, dropout, bidirectional)
        self._set_options(None, orthogonal, recurrent_dropout, impl)
        if orthogonal:
            self.reset_parameters()


def make_recurrent(cell: str, input_size: int, hidden_size: int, num_layers: int = 1, **kw) -> nn.Module:
    """RECURRENT[cell](...): cell = lstm | gru | rnn_tanh | rnn_relu; `kw` as the classes take them (forget_bias
    is the LSTM's only)."""
    if cell not in RECURRENT:
        raise UserError(f"unknown recurrent cell {cell!r}; choose one of {', '.join(RECURRENT)}")
    if cell != "lstm" and kw.get("forget_bias") is not None:
        raise UserError(f"forget_bias applies to the LSTM only, not {cell!r}")
    if cell != "lstm":
        kw.pop("forget_bias", None)
    if cell.startswith("rnn_"):
        return RNN(input_size, hidden_size, num_layers, cell[4:], **kw)
    return RECURRENT[cell](input_size, hidden_size, num_layers, **kw)


RECURRENT = {"lstm": LSTM, "gru": GRU, "rnn_tanh": RNN, "rnn_relu": RNN}
