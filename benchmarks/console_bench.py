"""Console figures (a benchmark, not a test): time to first render of the map and to a
filtered re-render, in headless Chromium (Debian's ``chromium``), with 10,000 cells and
5,000 open tickets by default.

    python benchmarks/console_bench.py                       # 100 x 100 cells, 5,000 tickets
    python benchmarks/console_bench.py --cells-side 50 --tickets 1000 --repeat 5
    python benchmarks/console_bench.py --grid sample_data/grid.geojson --tickets 400 \\
        --screenshot docs/console.png                        # the picture in the docs

The app runs in this process (uvicorn in a thread) over a fresh SQLite store seeded with
open tickets (a mix of kinds, statuses, cards and hot spots); an operator signs in and
opens ``#/map``. *First render* is from navigation start until every cell is drawn and
shaded and the list of cells with tickets is filled (the page's own ``performance.now``);
*filtered re-render* is from choosing a kind in the map's filter until the frame after
the re-shaded one was painted. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
KINDS = [("smoke", "fire_rescue", "P1"), ("door_forced", "community_security", "P2"),
         ("door_held_open", "property_management", "P3"),
         ("helmetless_rider", "traffic_police", "P3"), ("wrong_way_ebike", "traffic_police", "P3")]
PASSWORD = "bench-password-123"


def synthetic_grid(side: int) -> dict[str, Any]:
    """``side`` x ``side`` cells of about 200 m near Foshan; 4 towns, 10 x 10-cell villages."""
    features = []
    d = 0.002
    for r in range(side):
        for c in range(side):
            x0, y0 = 113.0 + c * d, 23.0 + r * d
            town = f"Town-{'NS'[r < side // 2]}{'WE'[c >= side // 2]}"
            features.append({"type": "Feature", "properties": {
                "cell_id": f"B{r:04d}{c:04d}", "district": "Bench", "town": town,
                "village": f"{town}-{r // 10:02d}{c // 10:02d}"},
                "geometry": {"type": "Polygon", "coordinates": [[
                    [x0, y0], [x0 + d, y0], [x0 + d, y0 + d], [x0, y0 + d], [x0, y0]]]}})
    return {"type": "FeatureCollection", "features": features}


def seed(store: Any, grid: Any, n: int, now: datetime) -> None:
    from ticketing.models import (
        Escalation,
        Review,
        ReviewReason,
        Ticket,
        TicketStatus,
        ticket_id_for,
    )

    rng = random.Random(7)
    statuses = [TicketStatus.PENDING_REVIEW, TicketStatus.DISPATCHED, TicketStatus.ACCEPTED]
    # tickets cluster like real ones: a few busy cells, a long tail
    hot = rng.sample(grid.cells, k=max(1, len(grid.cells) // 50))
    batch = []
    for i in range(n):
        cell = rng.choice(hot) if rng.random() < 0.4 else rng.choice(grid.cells)
        kind, department, priority = rng.choice(KINDS)
        status = rng.choice(statuses)
        opened = now - timedelta(minutes=rng.randint(1, 60 * 48))
        due = opened + timedelta(hours=rng.choice([1, 2, 24, 72]))
        escalation = (Escalation.RED if due < now - timedelta(hours=2) else
                      Escalation.YELLOW if due < now else Escalation.NONE)
        hotspot = None
        if kind in ("helmetless_rider", "wrong_way_ebike"):
            expected = rng.uniform(0.5, 4)
            hotspot = {"window_start": opened - timedelta(hours=1), "window_end": opened,
                       "observed": int(expected * rng.uniform(2, 6)) + 1,
                       "expected": round(expected, 4), "p_value": 0.0001,
                       "member_cells": [cell.cell_id], "top_sources": [
                           {"source": "st-1/cam-1", "count": 5}],
                       "hourly_profile": [{"hour": h, "observed": rng.randint(0, 9),
                                           "expected": round(rng.uniform(0, 5), 4)}
                                          for h in range(24)]}
        lon, lat = cell.lon_lat
        batch.append((Ticket(
            ticket_id=ticket_id_for(kind, cell.cell_id, f"bench{i}"), kind=kind,
            cell_id=cell.cell_id, district=cell.district, town=cell.town,
            village=cell.village, level="town", unit=cell.town, department=department,
            status=status, review=Review.PENDING_REVIEW if status is TicketStatus.PENDING_REVIEW
            else Review.AUTO_DISPATCHED, priority=priority, opened_at=opened, due_at=due,
            updated_at=opened, lon=lon, lat=lat, max_confidence=round(rng.uniform(0.3, 1), 2),
            incident_count=1, detection_count=rng.randint(1, 5), event_ids=[f"bench-{i}"],
            source_ids=["st-1/cam-1"], hotspot=hotspot, escalation=escalation,
            received_at=opened, dispatched_at=None if status is TicketStatus.PENDING_REVIEW
            else opened, clock_started_at=opened,
            review_reason=ReviewReason.LOW_CONFIDENCE if status is TicketStatus.PENDING_REVIEW
            else None), []))
        if len(batch) == 500:
            store.save_many(batch)
            batch = []
    if batch:
        store.save_many(batch)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells-side", type=int, default=100, help="synthetic grid side")
    parser.add_argument("--grid", help="a grid GeoJSON instead of the synthetic one")
    parser.add_argument("--tickets", type=int, default=5000, help="open tickets seeded")
    parser.add_argument("--repeat", type=int, default=3, help="page loads measured")
    parser.add_argument("--screenshot", help="save a 1366x768 PNG of the map here")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args(argv)

    import uvicorn
    from playwright.sync_api import sync_playwright

    from geo.grid import Grid
    from gridwatch.config import load_config
    from ticketing.api.app import create_app
    from ticketing.auth import Principal, Role, TokenAuth
    from ticketing.store import SqliteTicketStore
    from ticketing.users import UserStore

    grid = Grid.from_file(args.grid) if args.grid else \
        Grid.from_geojson(synthetic_grid(args.cells_side))
    config = load_config(None)
    work = Path(tempfile.mkdtemp(prefix="console-bench-"))
    store = SqliteTicketStore(work / "tickets.db")
    now = datetime.now(UTC)
    seed(store, grid, args.tickets, now)
    UserStore(store, departments=config.ticketing.departments).add(
        username="bench.operator", password=PASSWORD, role="operator",
        display_name="Bench operator", now=now)
    app = create_app(store=store, settings=config.ticketing, policies=config.policies,
                     grid=grid, auth=TokenAuth.from_mapping(
                         {os.urandom(16).hex(): Principal("admin", Role.ADMIN)}))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    first: list[float] = []
    refilter: list[float] = []
    errors: list[str] = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            # bypass_csp: Playwright's polling predicates are evaluated strings
            context = browser.new_context(viewport={"width": 1366, "height": 768},
                                          locale="en-GB", bypass_csp=True)
            assert context.request.post(f"{base}/auth/login", data={
                "username": "bench.operator", "password": PASSWORD}).ok
            for _ in range(args.repeat):
                page = context.new_page()
                page.on("console", lambda m: errors.append(m.text) if m.type == "error"
                        else None)
                page.goto(f"{base}/#/map")
                page.wait_for_function(
                    f"document.querySelectorAll('.grid-map path[data-cell]').length"
                    f" === {len(grid)} && document.querySelector('#cell-list button')",
                    polling="raf", timeout=120_000)
                first.append(page.evaluate("performance.now()"))
                for kind in ("smoke", "", "helmetless_rider", ""):
                    refilter.append(page.evaluate("""async (kind) => {
                        const select = document.querySelector('#map-kind');
                        if (![...select.options].some((o) => o.value === kind)) return null;
                        const t0 = performance.now();
                        select.value = kind;
                        select.dispatchEvent(new Event('change'));
                        // two frames: the second starts after the first was painted
                        await new Promise((r) => requestAnimationFrame(
                            () => requestAnimationFrame(() => r())));
                        return performance.now() - t0;
                    }""", kind))
                if args.screenshot:
                    page.select_option("#map-kind", "")
                    page.click("#cell-list button")
                    page.locator("#cell-panel li").first.wait_for()
                    page.screenshot(path=args.screenshot)
                page.close()
            browser.close()
    finally:
        server.should_exit = True
        thread.join(10)
        shutil.rmtree(work, ignore_errors=True)
    timings = [r for r in refilter if r is not None]
    print(f"cells: {len(grid)}, open tickets: {args.tickets}, page loads: {args.repeat}, "
          f"console errors: {len(errors)}")
    print("| measure | median ms | max ms |")
    print("|---|---:|---:|")
    print(f"| first render of the map | {statistics.median(first):.0f} | {max(first):.0f} |")
    if timings:
        print(f"| filtered re-render (kind) | {statistics.median(timings):.0f} | "
              f"{max(timings):.0f} |")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
