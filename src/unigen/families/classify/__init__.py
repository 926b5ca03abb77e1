"""Image classification (ViT, MLP): `task.py` (build / loss / evaluate) and `presets.py`."""
