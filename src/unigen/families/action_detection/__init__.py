"""Online temporal action detection (TRN, IDN, OadTR, single-frame and offline baselines) on procedural streams:
math in `ap.py` (mAP / cAP), `trn.py`, `idn.py`, `oadtr.py`, `baselines.py`, `windows.py`, `losses.py`; glue in
`network.py`, `task.py`, `evaluate.py`, `presets.py`."""
