"""The sample district that ``gridwatch demo`` runs on, as package data.

``grid.geojson`` (about 350 cells in 4 towns), ``detections.jsonl`` (three weeks of
detections covering every case) and ``cameras/demo_camera.yaml``; regenerate them with
``python scripts/make_sample_data.py``. Nothing here is code.
"""
