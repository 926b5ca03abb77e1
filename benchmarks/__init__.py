"""unigen benchmarks: each unigen component timed side by side with its reference library (diffusers, transformers).

    python -m benchmarks [groups...] [--repeats N] [--quick] [--threads T] [--out FILE]

Groups (`GROUPS`, each a function quick -> list of `harness.Case`):
    train     training step of DiT / UNet / ViT / text transformer vs diffusers / transformers, fp32 and bf16,
              with FLOP/s against the measured matmul peak (train.py)
    overhead  sampler loop cost per step vs diffusers' schedulers on a trivial denoiser (sampling.py)
    e2e       sampling wall time per image with a DiT at each sampler's NFE vs diffusers (sampling.py)
    textgen   tokens/s of AR (KV cache) vs HF generate, LLaDA, Fast-dLLM threshold, BD3 (textgen.py)
    kernels   the kernel choices behind our speed decisions: matmul vs fused attention, fused AdamW,
              channels_last GroupNorm (kernels.py)
    compile   torch.compile vs eager for our DiT step (compiled.py; not run by default: minutes of compiling)
Each case runs ours and the reference interleaved in one process (harness.py); report.py prints the tables.
Diffusers and transformers are needed here and in tests only, never by the unigen package.

OMP_WAIT_POLICY defaults to PASSIVE here (set before torch loads OpenMP): on a CPU shared with other processes,
OpenMP's default spin-waiting made a 2-thread DiT step 4-5x slower than one thread and distorted the ratios
(more synchronisation points paid more); with passive waiting the ratios match single-thread ones.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from benchmarks import compiled, kernels, sampling, textgen, train  # noqa: E402

GROUPS = {
    "train": train.cases,
    "overhead": sampling.overhead_cases,
    "e2e": sampling.e2e_cases,
    "textgen": textgen.cases,
    "kernels": kernels.cases,
    "compile": compiled.cases,
}
DEFAULT = ("train", "overhead", "e2e", "textgen", "kernels")
