"""Write sample_data/grid.geojson and sample_data/detections.jsonl (deterministic).

    python scripts/make_sample_data.py [--out sample_data]

The grid is a plausible district (an irregular outline with a lake cut out, about 350
cells of 500 m in four towns and their villages). The detections exercise every built-in
kind and every awkward case: multi-sensor fires, a second fire in the same cell, sensor
self-tests, low confidence, an unknown plug-in kind, re-sent duplicates, malformed lines,
points outside the district, events delivered late (within and beyond the tolerance), and
two weeks of camera traffic (the first week warms the hot-spot baselines up) with a burst
of wrong-way riders on the Lishui bridge on Friday of the second week (road works closed
one side). The demo camera (sample_data/cameras/demo_camera.yaml) watches that bridge
during the burst, so the demo's video detection joins the hot-spot ticket.
"""

from __future__ import annotations

import argparse
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from shapely.geometry import Point, Polygon

from geo.make import square_cells

DISTRICT = "Nanhai"
TOWNS = ("Guicheng", "Dali", "Lishui", "Shishan")  # by quadrant: SW, SE, NW, NE
OUTLINE = Polygon([
    (113.100, 23.004), (113.135, 23.000), (113.172, 23.003), (113.200, 23.012),
    (113.198, 23.050), (113.190, 23.080), (113.150, 23.078), (113.112, 23.074),
    (113.101, 23.040),
])
LAKE = Point(113.160, 23.030).buffer(0.006)  # a hole: no cell covers the lake
START = datetime(2026, 5, 4, 0, 0, tzinfo=UTC)  # a Monday, 08:00 in Foshan
DAYS = 21
BURST_DAY = 18  # Friday 22 May
TZ8 = timedelta(hours=8)


def make_grid() -> dict:
    area = OUTLINE.difference(LAKE)
    mid_lon, mid_lat = 113.15, 23.04
    features = []
    for cell_id, row, col, polygon in square_cells(area, size_m=500, prefix="NH"):
        c = polygon.representative_point()
        town = TOWNS[(c.y >= mid_lat) * 2 + (c.x >= mid_lon)]
        village = f"{town}-{(row // 4) % 5 + 1}{(col // 4) % 5 + 1}"
        features.append({
            "type": "Feature",
            "properties": {
                "cell_id": cell_id, "name": f"{town} grid {row:02d}-{col:02d}",
                "district": DISTRICT, "town": town, "village": village,
                "grid_worker": f"worker-{village}",
            },
            "geometry": json.loads(json.dumps(polygon.__geo_interface__)),
        })
    return {"type": "FeatureCollection", "features": features}


def rfc3339(at: datetime) -> str:
    return (at + TZ8).replace(tzinfo=None).isoformat() + "+08:00"


class Writer:
    def __init__(self) -> None:
        self.records: list[tuple[datetime, int, str]] = []  # (delivery time, seq, line)
        self.seq = 0

    def add(self, *, at: datetime, station: str, source: str, source_type: str, kind: str,
            confidence: float, lon: float, lat: float, delivered: datetime | None = None,
            event_id: str | None = None, **extra: object) -> str:
        self.seq += 1
        event_id = event_id or f"{station}:{source}:{self.seq:06d}"
        obj = {"schema": "gridwatch.detection/1", "event_id": event_id,
               "observed_at": rfc3339(at), "station_id": station, "source_id": source,
               "source_type": source_type, "kind": kind, "confidence": round(confidence, 3),
               "lon": round(lon, 6), "lat": round(lat, 6), **extra}
        self.raw(delivered or at, json.dumps(obj, ensure_ascii=False))
        return event_id

    def raw(self, delivered: datetime, line: str) -> None:
        self.seq += 1
        self.records.append((delivered, self.seq, line))

    def lines(self) -> list[str]:
        return [line for _, _, line in sorted(self.records)]


def make_detections(rng: random.Random) -> list[str]:
    w = Writer()
    # -- a fire in a Guicheng residential block: three detectors over ten minutes -----
    b = (113.1212, 23.0112)
    t0 = START + timedelta(hours=6, minutes=3)  # 14:03 local
    for i, (dt, sensor) in enumerate([(0, "smoke-3F"), (70, "smoke-4F"), (150, "smoke-2F"),
                                      (300, "smoke-3F"), (420, "smoke-4F"), (590, "smoke-3F")]):
        w.add(at=t0 + timedelta(seconds=dt), station="st-guicheng-01", source=sensor,
              source_type="smoke_sensor", kind="smoke", confidence=0.95 - 0.01 * i,
              lon=b[0] + 0.0001 * i, lat=b[1], attributes={"linkquality": 120})
    # a second fire in the same cell an hour later, while the first ticket is open
    for dt, sensor in [(0, "smoke-1F"), (45, "smoke-2F")]:
        w.add(at=t0 + timedelta(hours=1, seconds=dt), station="st-guicheng-01",
              source=sensor, source_type="smoke_sensor", kind="smoke", confidence=0.9,
              lon=b[0] + 0.0003, lat=b[1] + 0.0002)
    # a weekly self-test in Dali: counted, never ticketed
    w.add(at=START + timedelta(days=1, hours=2), station="st-dali-02", source="smoke-lobby",
          source_type="smoke_sensor", kind="smoke", confidence=1.0, lon=113.176, lat=23.018,
          attributes={"test": True})
    # a low-confidence smoke reading in Lishui: goes to operator review
    w.add(at=START + timedelta(days=2, hours=13), station="st-lishui-01", source="smoke-k2",
          source_type="smoke_sensor", kind="smoke", confidence=0.41, lon=113.118, lat=23.061)
    # -- doors: forced (with a chattering sensor), held open with re-affirmations ------
    for dt in (0, 5, 12, 20):  # within the cooldown: one detection counted
        w.add(at=START + timedelta(days=1, hours=15, seconds=dt), station="st-dali-02",
              source="door-east", source_type="access_control", kind="door_forced",
              confidence=0.88, lon=113.181, lat=23.021)
    for k in range(5):  # held open 40 minutes, re-affirmed every 10
        w.add(at=START + timedelta(days=3, hours=11, minutes=10 * k), station="st-shishan-01",
              source="firedoor-B2", source_type="access_control", kind="door_held_open",
              confidence=1.0, lon=113.171, lat=23.066, attributes={"open_s": 120 + 600 * k})
    # -- a plug-in's own kind nobody configured: operator review ------------------------
    w.add(at=START + timedelta(days=4, hours=3), station="st-guicheng-01",
          source="cam-gate", source_type="camera", kind="illegal_parking", confidence=0.93,
          lon=113.128, lat=23.016, track_id="t-77",
          evidence={"snapshot_url": "file:///var/lib/gridwatch/snap/t-77.jpg",
                    "bbox_xyxy": [412, 220, 610, 380]})
    # -- a week of camera traffic: helmetless riders and wrong-way e-bikes ---------------
    cameras = [  # (station, camera, lon, lat, helmetless per hour, wrong-way per hour)
        ("st-guicheng-01", "cam-guiping-rd", 113.1302, 23.0205, 1.6, 0.5),  # busy road
        ("st-guicheng-01", "cam-nanhai-ave", 113.1405, 23.0150, 0.4, 0.2),
        ("st-dali-02", "cam-dali-market", 113.1805, 23.0255, 0.8, 0.3),
        ("st-lishui-01", "cam-lishui-bridge", 113.1205, 23.0555, 0.3, 0.15),
        ("st-shishan-01", "cam-shishan-school", 113.1702, 23.0605, 0.5, 0.1),
    ]
    hourly = [0.1, 0.05, 0.05, 0.05, 0.1, 0.3, 0.8, 1.6, 2.0, 1.2, 0.9, 1.0,
              1.2, 1.0, 0.9, 1.0, 1.3, 1.9, 2.0, 1.4, 1.0, 0.7, 0.4, 0.2]
    track = 0
    for day in range(DAYS):
        for hour in range(24):
            base_t = START + timedelta(days=day, hours=hour) - TZ8  # local hour
            for station, cam, lon, lat, rate_h, rate_w in cameras:
                for kind, rate in (("helmetless_rider", rate_h), ("wrong_way_ebike", rate_w)):
                    scale = hourly[hour] * (0.7 if day % 7 >= 5 else 1.0)
                    if cam == "cam-lishui-bridge" and kind == "wrong_way_ebike" and \
                            day == BURST_DAY and 7 <= hour <= 19:
                        scale *= 8  # road works closed one side: riders go against traffic
                    n = _poisson(rng, rate * scale)
                    for _ in range(n):
                        track += 1
                        at = base_t + timedelta(seconds=rng.randrange(3600))
                        frames = 1 + (rng.random() < 0.3) * rng.randrange(2, 6)
                        for f in range(frames):
                            w.add(at=at + timedelta(seconds=f), station=station, source=cam,
                                  source_type="camera", kind=kind,
                                  confidence=0.6 + 0.39 * rng.random(),
                                  lon=lon + rng.uniform(-0.0003, 0.0003),
                                  lat=lat + rng.uniform(-0.0002, 0.0002),
                                  track_id=f"trk-{track}",
                                  evidence={"snapshot_url":
                                            f"file:///var/lib/gridwatch/snap/{cam}/{track}.jpg"})
    # -- awkward deliveries ----------------------------------------------------------
    # store-and-forward: a door event observed 5 minutes before it was delivered
    late_at = START + timedelta(days=2, hours=9)
    w.add(at=late_at, delivered=late_at + timedelta(minutes=5), station="st-dali-02",
          source="door-west", source_type="access_control", kind="door_forced",
          confidence=0.9, lon=113.1835, lat=23.0227)
    # an uplink outage: delivered two hours late, beyond the 10 minute tolerance
    w.add(at=late_at + timedelta(hours=1), delivered=late_at + timedelta(hours=3),
          station="st-shishan-01", source="door-gate", source_type="access_control",
          kind="door_forced", confidence=0.92, lon=113.1755, lat=23.0702)
    # re-sent duplicates (same event_id) after a reconnect
    dup = w.add(at=START + timedelta(days=3, hours=2), station="st-lishui-01",
                source="door-1", source_type="access_control", kind="door_forced",
                confidence=0.85, lon=113.1102, lat=23.0600)
    for k in range(2):
        w.add(at=START + timedelta(days=3, hours=2), delivered=START + timedelta(
              days=3, hours=2, minutes=1 + k), station="st-lishui-01", source="door-1",
              source_type="access_control", kind="door_forced", confidence=0.85,
              lon=113.1102, lat=23.0600, event_id=dup)
    # outside the district (a box misconfigured with another city's coordinates)
    for k in range(3):
        w.add(at=START + timedelta(days=2, hours=k), station="st-misconfigured",
              source="smoke-9", source_type="smoke_sensor", kind="smoke", confidence=0.97,
              lon=114.0579, lat=22.5431)
    # malformed lines: each must be rejected with its reason, none may stop the replay
    bad_at = START + timedelta(days=1, hours=1)
    good = json.loads(w.lines()[0])
    for line in [
        '{"schema": "gridwatch.detection/1", "event_id": "broken',  # truncated JSON
        json.dumps({**good, "event_id": "bad-naive", "observed_at": "2026-05-05T09:00:00"}),
        json.dumps({**good, "event_id": "bad-conf", "confidence": 1.7}),
        json.dumps({**good, "event_id": "bad-extra", "severity": "high"}),
        json.dumps({k: v for k, v in good.items() if k != "kind"} | {"event_id": "bad-miss"}),
        json.dumps({**good, "event_id": "bad-type", "lat": "23.01"}),
        json.dumps({**good, "event_id": "bad-schema", "schema": "gridwatch.detection/0"}),
        "[1, 2, 3]",
    ]:
        w.raw(bad_at, line)
    return w.lines()


def _poisson(rng: random.Random, lam: float) -> int:
    # Knuth; lam is small here
    import math

    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("sample_data"))
    parser.add_argument("--seed", type=int, default=20260504)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    grid = make_grid()
    (args.out / "grid.geojson").write_text(json.dumps(grid, ensure_ascii=False) + "\n",
                                           encoding="utf-8")
    lines = make_detections(random.Random(args.seed))
    (args.out / "detections.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(grid['features'])} cells and {len(lines)} detection lines to {args.out}")


if __name__ == "__main__":
    main()
