"""Set-prediction object detection (DETR, Carion et al. 2020): boxes, Hungarian matching, the set loss, the network,
`task.py` (build / loss / evaluate / detect) and `presets.py` (`shapes-detr`)."""
