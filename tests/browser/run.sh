#!/usr/bin/env bash
# Real-browser tests: start JupyterLab (`python -m jupyterlab`) and Notebook 7 (`python -m notebook`) headless on
# 127.0.0.1 (free ports, one random token, config/settings/workspaces/runtime in a temporary folder, each server
# serving its own copy of the notebooks), wait until both answer, run the Playwright tests in tests/browser against
# them (every test once per front end), and always stop them. Screenshots and the server logs go to
# artifacts/browser/. FCB_FRONTENDS chooses the front ends (default "lab notebook"); extra arguments go to pytest.
# Needs Debian's chromium (CHROMIUM, default /usr/bin/chromium); never runs `playwright install`.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
PY=${PYTHON:-python}
FRONTENDS=${FCB_FRONTENDS:-lab notebook}
ART=$ROOT/artifacts/browser
mkdir -p "$ART"
rm -f "$ART"/*.png "$ART"/*.log

TMP=$(mktemp -d "${TMPDIR:-/tmp}/fcb-browser.XXXXXX")
PIDS=()
stop_servers() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  cp "$TMP"/*.log "$ART"/ 2>/dev/null || true
  rm -rf "$TMP"
}
trap stop_servers EXIT
trap 'exit 130' INT TERM

# Isolated settings, read by both front ends: no cell virtualisation (off-screen cells stay in the DOM), no news
# pop-up, fresh workspaces.
CFG=$TMP/cfg
mkdir -p "$CFG/lab-settings/@jupyterlab/notebook-extension" "$CFG/lab-settings/@jupyterlab/apputils-extension" \
         "$CFG/ws" "$CFG/rt" "$TMP/ipython"
echo '{ "windowingMode": "none" }' > "$CFG/lab-settings/@jupyterlab/notebook-extension/tracker.jupyterlab-settings"
echo '{ "fetchNews": "false", "checkForUpdates": false }' \
  > "$CFG/lab-settings/@jupyterlab/apputils-extension/notification.jupyterlab-settings"
export JUPYTER_CONFIG_DIR=$CFG JUPYTERLAB_SETTINGS_DIR=$CFG/lab-settings JUPYTERLAB_WORKSPACES_DIR=$CFG/ws \
       JUPYTER_RUNTIME_DIR=$CFG/rt IPYTHONDIR=$TMP/ipython
# The kernels import this checkout's package, whatever is installed.
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}

free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
TOKEN=$("$PY" -c 'import secrets; print(secrets.token_hex(16))')
export FCB_JUPYTER_TOKEN=$TOKEN FCB_ARTIFACTS=$ART

# start_server NAME: NAME is lab (JupyterLab) or notebook (Notebook 7). The notebooks are served from a copy per
# server, so that autosave never writes outputs into nbs/ and the two front ends never share a kernel.
start_server() {
  local name=$1 port root
  port=$(free_port)
  root=$TMP/root-$name
  mkdir -p "$root"
  cp "$ROOT/nbs/10_tutorial.ipynb" "$root/"
  case $name in
    lab)      set -- -m jupyterlab --LabApp.expose_app_in_browser=True ;;
    notebook) set -- -m notebook --JupyterNotebookApp.expose_app_in_browser=True ;;
    *) echo "unknown front end $name (FCB_FRONTENDS: lab, notebook)" >&2; exit 2 ;;
  esac
  "$PY" "$@" --no-browser --allow-root --ip=127.0.0.1 --port="$port" \
    --IdentityProvider.token="$TOKEN" --ServerApp.root_dir="$root" > "$TMP/$name.log" 2>&1 &
  PIDS+=($!)
  local upper
  upper=$(echo "$name" | tr '[:lower:]' '[:upper:]')
  export "FCB_${upper}_URL=http://127.0.0.1:$port" "FCB_${upper}_ROOT=$root"
  READY+=("$name $port $!")
}

READY=()
for name in $FRONTENDS; do start_server "$name"; done

# Ready when /api/status answers; give up after 60 s or when the server exits.
for entry in "${READY[@]}"; do
  read -r name port pid <<< "$entry"
  if ! "$PY" - "$port" "$TOKEN" "$pid" "$name" <<'PY'; then
import os, sys, time, urllib.request
port, token, pid, name = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try: os.kill(pid, 0)
    except OSError: sys.exit(f"the {name} server exited during start-up")
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2).read()
        sys.exit(0)
    except OSError: time.sleep(0.2)
sys.exit(f"the {name} server did not answer within 60 s")
PY
    echo "the $name server did not become ready on 127.0.0.1:$port; its log:" >&2
    tail -n 50 "$TMP/$name.log" >&2
    exit 1
  fi
  echo "$name server ready on 127.0.0.1:$port (pid $pid)"
done

set +e
"$PY" -m pytest "$ROOT/tests/browser" -q -p no:cacheprovider "$@"
rc=$?
set -e
if [ $rc -eq 5 ]; then echo "the browser suite ran no tests" >&2; rc=1; fi
exit $rc
