"""Run by tests/detection/test_ddp.py under torchrun (2 processes, gloo) and once alone: `ddp_boxes_worker.py OUT`.

Six images with 5, 0, 1 | 0, 0, 1 target boxes (so the processes hold 6 and 1 boxes); each process takes its half
(all six when alone), computes DETR's box terms 5 L1 + 2 (1 - GIoU) normalised by `global_num_boxes`, and the
gradient of the predicted boxes is averaged over the processes as fit() does. Rank 0 saves it to OUT.
"""
import os
import sys

import torch
import torch.distributed as dist

from unigen.families.detection.losses import global_num_boxes, set_loss
from unigen.families.detection.matcher import hungarian_match


def main(out: str) -> None:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if world > 1 else 0
    g = torch.Generator().manual_seed(0)
    B, Q, K = 6, 7, 3
    logits = torch.randn(B, Q, K + 1, generator=g)
    boxes = (torch.rand(B, Q, 4, generator=g) * 0.4 + 0.3).requires_grad_()
    targets = [(torch.randint(0, K, (n,), generator=g), torch.rand(n, 4, generator=g) * 0.4 + 0.3)
               for n in (5, 0, 1, 0, 0, 1)]
    mine = slice(rank * B // world, (rank + 1) * B // world)
    local = targets[mine]
    matches = hungarian_match(logits[mine], boxes[mine].detach(), local)
    terms = set_loss(logits[mine], boxes[mine], local, matches, global_num_boxes(local))
    (5 * terms["loss_bbox"] + 2 * terms["loss_giou"]).backward()
    grad = boxes.grad
    if world > 1:
        dist.all_reduce(grad)
        grad /= world
    if rank == 0:
        torch.save(grad, out)
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
