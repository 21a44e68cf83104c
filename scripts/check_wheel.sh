#!/usr/bin/env bash
# The built wheel, installed with only the base dependencies into a fresh virtualenv
# outside the checkout, must behave like the checkout: the packaged default config and
# sample data are found, `gridwatch replay` of the sample gives byte-identical tickets,
# the demo runs, and a command that needs an extra says which one (exit 2, no traceback).
# Usage: bash scripts/check_wheel.sh [CHECKOUT_PYTHON]   (CI: make wheel-check)
set -euo pipefail
cd "$(dirname "$0")/.."
checkout_python=${1:-.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "wheel-check: building the wheel"
"$checkout_python" -m pip wheel --no-deps --wheel-dir "$work/dist" . > "$work/build.log" 2>&1 \
    || { echo "wheel-check: FAILED: the wheel does not build:"; cat "$work/build.log"; exit 1; }
if grep -q "Warning:" "$work/build.log"; then
    echo "wheel-check: FAILED: building the wheel warns:"; grep -A3 "Warning:" "$work/build.log"; exit 1
fi
wheel=$(ls "$work"/dist/gridwatch-*.whl)
# every file of the runtime packages in the checkout is in the wheel, and nothing else
"$checkout_python" - "$wheel" <<'PY'
import subprocess, sys, zipfile
packages = ("gridwatch/", "edge/", "stream/", "detectors/", "ticketing/", "geo/", "configs/",
            "sample_data/")
listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard",
                         *packages], capture_output=True, text=True, check=True).stdout
checkout = {p for p in listed.split("\n") if p and not p.endswith(".pyc")}
wheel = {n for n in zipfile.ZipFile(sys.argv[1]).namelist() if ".dist-info/" not in n}
if checkout != wheel:
    print(f"wheel-check: FAILED: not in the wheel: {sorted(checkout - wheel)}; "
          f"only in the wheel: {sorted(wheel - checkout)}")
    sys.exit(1)
print(f"wheel-check: the wheel carries the checkout's {len(wheel)} package files")
PY
echo "wheel-check: installing $(basename "$wheel") (base install, no extras) into a fresh venv"
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet "$wheel" 2>&1 | grep -v '^WARNING: Location' || true
gw="$work/venv/bin/gridwatch"

# the checkout's tickets for the sample (its editable install reads the same files)
"$checkout_python" -m gridwatch replay sample_data/detections.jsonl \
    --grid sample_data/grid.geojson --tickets-out "$work/checkout.jsonl" >/dev/null

cd "$work"  # nothing of the checkout is reachable from here
sample=$("$work/venv/bin/python" -c 'import sample_data, os; print(os.path.dirname(sample_data.__file__))')
case "$sample" in "$work"/venv/*) ;; *) echo "wheel-check: sample_data came from $sample"; exit 1;; esac
"$gw" replay "$sample/detections.jsonl" --grid "$sample/grid.geojson" \
    --tickets-out "$work/wheel.jsonl" >/dev/null
if ! cmp -s "$work/checkout.jsonl" "$work/wheel.jsonl"; then
    echo "wheel-check: FAILED: the installed wheel's replay differs from the checkout's"
    diff <(head -c 2000 "$work/checkout.jsonl") <(head -c 2000 "$work/wheel.jsonl") || true
    exit 1
fi
echo "wheel-check: replay of the sample: $(wc -l < "$work/wheel.jsonl") tickets, identical to the checkout's"

"$gw" demo --once --data-dir "$work/demo" > "$work/demo.out"
grep -q "video: skipped (cv2 is not installed; pip install 'gridwatch\[vision\]')" "$work/demo.out" \
    || { echo "wheel-check: FAILED: demo without the vision extra:"; cat "$work/demo.out"; exit 1; }
grep -Eq '^[0-9]+ tickets in ' "$work/demo.out" \
    || { echo "wheel-check: FAILED: demo printed no tickets:"; cat "$work/demo.out"; exit 1; }
echo "wheel-check: demo --once runs without the vision extra"

set +e
"$gw" detect none.mp4 --camera "$sample/cameras/demo_camera.yaml" --out det.jsonl \
    2> "$work/detect.err"
rc=$?
set -e
if [ "$rc" -ne 2 ] || ! grep -q "pip install 'gridwatch\[vision\]'" "$work/detect.err"; then
    echo "wheel-check: FAILED: detect without the vision extra (exit $rc):"; cat "$work/detect.err"; exit 1
fi
echo "wheel-check: detect without the vision extra names the extra (exit 2)"
# the console's page and assets ship inside the wheel (base install: no test client, so
# the files are checked where the app serves them from)
"$work/venv/bin/python" - <<'PY'
from ticketing.api.app import create_app
from ticketing.auth import Principal, Role, TokenAuth
from ticketing.console import static_dir
from ticketing.store import SqliteTicketStore

create_app(store=SqliteTicketStore(":memory:"), auth=TokenAuth.from_mapping({"wheel-check": Principal("admin", Role.ADMIN)}))
folder = static_dir()
assert "/venv/" in str(folder), folder
for name in ("index.html", "app.js", "api.js", "map.js", "i18n.js", "console.css"):
    assert (folder / name).stat().st_size > 0, folder / name
PY
echo "wheel-check: the console is served from the installed package"
echo "wheel-check: ok"
