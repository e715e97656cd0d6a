#!/usr/bin/env bash
# The main job: the daemon on a copy of tasks.example/, with the embedded defaults
# (SQLite state, no model, no API key). Ctrl-C stops it. Another DAYCARE_HOME runs beside it.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/daycare ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e .
fi
export DAYCARE_HOME="${DAYCARE_HOME:-$PWD/.demo-home}"
daycare=.venv/bin/daycare
if [ ! -d "$DAYCARE_HOME/tasks" ]; then
  mkdir -p "$DAYCARE_HOME/tasks"
  cp tasks.example/*.md "$DAYCARE_HOME/tasks/"
  # The one-off example means "tomorrow at noon": make it so.
  tomorrow=$(python3 -c 'import datetime; print((datetime.date.today() + datetime.timedelta(days=1)).isoformat())')
  $daycare task update dentist-reminder --at "${tomorrow}T12:00:00" >/dev/null
  # Webhooks on any free port, so that several demo homes run side by side.
  $daycare config set webhook.port 0 >/dev/null
fi
$daycare task ls
$daycare daemon run &
daemon=$!
trap 'kill -TERM "$daemon" 2>/dev/null; wait "$daemon"' INT TERM
# The URL is the real one once the daemon published it (port 0 is any free port).
for _ in $(seq 50); do
  [ -f "$DAYCARE_HOME/run/webhook.url" ] && break
  kill -0 "$daemon" 2>/dev/null || break
  sleep 0.1
done
echo "webhook of the git-status example: $($daycare webhook url git-status-webhook)"
wait "$daemon"
