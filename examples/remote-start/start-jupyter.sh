#!/usr/bin/env bash
# start-jupyter.sh COMMAND [ARGS...]: start a single-user server for JupyterHub on this host.
#
# Run by a batch job (or over ssh) with the environment a ForwardBaseSpawner gives its server:
# JUPYTERHUB_API_TOKEN, JUPYTERHUB_EVENTS_URL, JUPYTERHUB_SETUPTUNNEL_URL, JUPYTERHUB_API_URL,
# JUPYTERHUB_SERVICE_URL and, with a server → hub tunnel, JUPYTERHUB_HUB_TUNNEL_PORT.
# It posts progress events, starts COMMAND on a free port, waits until it listens, then calls
# SetupTunnel so that the Hub opens its forward to HOST:PORT. Needs bash, curl and python3.
#
#   FBS_LISTEN_HOST   the address the server listens on (default 0.0.0.0)
#   FBS_SERVICE_HOST  how the jump node reaches this host (default: hostname -f)
#
# The token never appears on a command line: curl reads its header from standard input.
set -euo pipefail
: "${JUPYTERHUB_API_TOKEN:?}" "${JUPYTERHUB_EVENTS_URL:?}" "${JUPYTERHUB_SETUPTUNNEL_URL:?}"
[ $# -gt 0 ] || { echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; }

# With a server → hub tunnel the Hub API is on this node's loopback, at JUPYTERHUB_HUB_TUNNEL_PORT.
hub_url() {
  if [ -n "${JUPYTERHUB_HUB_TUNNEL_PORT:-}" ]; then
    local rest="${1#*://}"
    printf 'http://127.0.0.1:%s/%s' "$JUPYTERHUB_HUB_TUNNEL_PORT" "${rest#*/}"
  else
    printf '%s' "$1"
  fi
}
EVENTS_URL=$(hub_url "$JUPYTERHUB_EVENTS_URL")
SETUPTUNNEL_URL=$(hub_url "$JUPYTERHUB_SETUPTUNNEL_URL")
JUPYTERHUB_API_URL=$(hub_url "${JUPYTERHUB_API_URL:-$JUPYTERHUB_EVENTS_URL}")
[ -z "${JUPYTERHUB_ACTIVITY_URL:-}" ] || JUPYTERHUB_ACTIVITY_URL=$(hub_url "$JUPYTERHUB_ACTIVITY_URL")
export JUPYTERHUB_API_URL JUPYTERHUB_ACTIVITY_URL

# post URL JSON: POST with the server's token; prints the HTTP status (000: no answer)
post() {
  printf 'header = "Authorization: token %s"\n' "$JUPYTERHUB_API_TOKEN" |
    curl --silent --output /dev/null --write-out '%{http_code}' --max-time 30 --config - \
         --header 'Content-Type: application/json' --data "$2" "$1" || true
}

server_pid=""
stop_server() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
}
trap 'stop_server; exit 143' TERM INT

# event PROGRESS MESSAGE [failed]: messages here are plain words, no JSON escaping needed
event() {
  local failed=""
  [ "${3:-}" = failed ] && failed=', "failed": true'
  local status
  status=$(post "$EVENTS_URL" "{\"progress\": $1, \"message\": \"$2\"$failed}")
  case "$status" in
    204) ;;
    409) echo "the Hub no longer waits for this server (cancelled or stopped)" >&2; stop_server; exit 0 ;;
    *) echo "event not stored: HTTP $status" >&2 ;;
  esac
}

event 20 "Preparing the server on $(hostname)"
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')
LISTEN_HOST="${FBS_LISTEN_HOST:-0.0.0.0}"
SERVICE_HOST="${FBS_SERVICE_HOST:-$(hostname -f)}"
prefix="${JUPYTERHUB_SERVICE_URL#*://*/}"
export JUPYTERHUB_SERVICE_URL="http://${LISTEN_HOST}:${PORT}/${prefix}"

event 40 "Starting the Jupyter server"
"$@" &
server_pid=$!
probe_host="$LISTEN_HOST"
[ "$probe_host" != 0.0.0.0 ] || probe_host=127.0.0.1
until (exec 3<>"/dev/tcp/${probe_host}/${PORT}") 2>/dev/null; do
  if ! kill -0 "$server_pid" 2>/dev/null; then
    wait "$server_pid" && code=0 || code=$?
    event 100 "The Jupyter server exited with code $code before it listened" failed
    exit 1
  fi
  sleep 0.2
done

event 70 "Jupyter listens on port $PORT; connecting it to the Hub"
status=$(post "$SETUPTUNNEL_URL" "{\"service\": \"${SERVICE_HOST}:${PORT}\"}")
case "$status" in
  204) event 90 "Connected; the Hub checks the server now" ;;
  409) echo "the Hub no longer waits for this server (cancelled or stopped)" >&2; stop_server; exit 0 ;;
  422) echo "the Hub could not open the tunnel; it has ended the start" >&2; stop_server; exit 1 ;;
  *) event 100 "SetupTunnel answered HTTP $status" failed; stop_server; exit 1 ;;
esac

wait "$server_pid" && code=0 || code=$?
exit "$code"
