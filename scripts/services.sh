#!/usr/bin/env bash
# Make sure the services the tests talk to answer: Mosquitto (1883), Redis (6379),
# PostgreSQL (5432, database "test"). Starts what is installed but stopped; installs from
# Debian's packages what is missing. Fails loudly if a service still does not answer.
set -uo pipefail

answers() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
apt_ready=0
need_pkg() {  # need_pkg BINARY PACKAGE...
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ $apt_ready = 0 ]; then apt-get update -qq >/dev/null; apt_ready=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${@:2}" >/dev/null
}
wait_port() {  # wait_port PORT NAME
  for _ in $(seq 1 30); do answers "$1" && return 0; sleep 1; done
  echo "services: $2 does not answer on 127.0.0.1:$1" >&2
  return 1
}
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
failed=0

# Mosquitto (and its command-line clients, used by tests)
need_pkg mosquitto_pub mosquitto-clients
if ! answers 1883; then
  need_pkg mosquitto mosquitto
  $SUDO mosquitto -d -c /etc/mosquitto/mosquitto.conf 2>/dev/null || $SUDO mosquitto -d -p 1883
fi
wait_port 1883 mosquitto || failed=1

# Redis
if ! answers 6379; then
  need_pkg redis-server redis-server
  $SUDO mkdir -p /var/lib/redis /var/log/redis
  $SUDO redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
wait_port 6379 redis || failed=1

# PostgreSQL with a "test" database that user postgres can reach over TCP without password
if ! answers 5432; then
  need_pkg pg_ctlcluster postgresql
  ver=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
  if [ -n "$ver" ]; then
    conf=/etc/postgresql/$ver/main/pg_hba.conf
    grep -q "gridwatch-ci" "$conf" 2>/dev/null || \
      $SUDO sed -i '1i host all all 127.0.0.1/32 trust # gridwatch-ci' "$conf"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
  fi
fi
if wait_port 5432 postgresql; then
  if ! psql -h 127.0.0.1 -U postgres -d test -c 'select 1' >/dev/null 2>&1; then
    psql -h 127.0.0.1 -U postgres -c 'create database test' >/dev/null 2>&1 || \
      su postgres -c "psql -c 'create database test'" >/dev/null 2>&1 || true
  fi
  psql -h 127.0.0.1 -U postgres -d test -c 'select 1' >/dev/null 2>&1 || {
    echo "services: postgresql answers but database 'test' is not reachable as postgres" >&2
    failed=1; }
else
  failed=1
fi

# Real video for the detector tests: vtest.avi from Debian's opencv-doc
if ! ls /usr/share/doc/opencv-doc/examples/data/vtest.avi* >/dev/null 2>&1; then
  if [ $apt_ready = 0 ]; then apt-get update -qq >/dev/null; apt_ready=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq opencv-doc >/dev/null || failed=1
fi

# A real browser for the page tests (the console, /docs, /redoc): Debian's chromium,
# driven by Playwright through executable_path (`playwright install` would download one)
need_pkg chromium chromium || failed=1

if [ $failed != 0 ]; then
  echo "services: a required service is missing; the tests need it (see above)" >&2
  exit 1
fi
echo "services: mosquitto, redis and postgresql answer; chromium is installed"
