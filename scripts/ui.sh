#!/usr/bin/env bash
# `make ui`: the MLflow UI and Airflow's api-server, then, once the api-server answers, the
# scheduler, dag-processor and triggerer. A task handed out before the execution API listens
# would fail its first try with "Connection refused" (and burn a retry); waiting avoids that,
# also after a restart with tasks already queued.
#
# Every setting comes from the environment `make ui` exports: AIRFLOW_HOME, AIRFLOW__API__PORT,
# AIRFLOW__CORE__EXECUTION_API_SERVER_URL, FORESIGHT_MLFLOW_UI_URL, MLFLOW_PORT and
# FORESIGHT_UI_HOST (the address both UIs listen on: 127.0.0.1 unless told otherwise). Output
# of each process goes to the console with its name in front, and to $AIRFLOW_HOME/ui-logs/.
# Ctrl-C (or SIGTERM) stops them all.
#
# What these processes write is their user's alone (umask 077): the logs, and the passwords
# the simple auth manager generates on first start, which are kept only in that file (their
# line in the api-server's output is replaced by the file's name).
set -euo pipefail

: "${AIRFLOW_HOME:?set by make ui}"
: "${AIRFLOW__API__PORT:?set by make ui}"
: "${MLFLOW_PORT:?set by make ui}"
UI_HOST="${FORESIGHT_UI_HOST:-127.0.0.1}"
API_WAIT_S="${FORESIGHT_UI_API_WAIT_S:-180}"
logs="$AIRFLOW_HOME/ui-logs"
passwords="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:-$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated}"
umask 077
mkdir -p "$logs"
chmod 700 "$logs"
chmod 600 "$logs"/*.log "$passwords" 2> /dev/null || true

STOP_GRACE_S="${FORESIGHT_UI_STOP_GRACE_S:-30}"
pids=()
# Each process has a group of its own (setsid): TERM every group, and KILL what is left of
# them after STOP_GRACE_S (a scheduler may wait on its task processes), so nothing outlives us.
stop() {
    trap - INT TERM EXIT
    for pid in "${pids[@]}"; do
        kill -TERM -- "-$pid" 2> /dev/null || kill -TERM "$pid" 2> /dev/null || true
    done
    local deadline=$(( SECONDS + STOP_GRACE_S )) alive
    while (( SECONDS < deadline )); do
        alive=0
        for pid in "${pids[@]}"; do
            kill -0 -- "-$pid" 2> /dev/null && alive=1
        done
        (( alive )) || break
        sleep 1
    done
    for pid in "${pids[@]}"; do
        kill -KILL -- "-$pid" 2> /dev/null || true
    done
    wait 2> /dev/null || true
}
trap stop INT TERM EXIT

# LOG=file NAME=label start COMMAND...: in its own process group (so that stop ends its children too).
# A generated password's line never reaches the console or the log.
start() {
    setsid bash -c 'exec "$@" 2>&1 | sed -u -E "s|(Password for user [^:]*:).*|\1 (kept in $PASSWORDS)|" \
        | tee -a "$LOG" | sed -u "s/^/[$NAME] /"' _ "$@" < /dev/null &
    pids+=("$!")
}
PASSWORDS="$passwords"
export LOG NAME PASSWORDS

tracking_uri="$(python -c 'from foresight_lib.config import load_config; print(load_config().mlflow.tracking_uri)')"
# MLflow answers only the Host names it allows (localhost and private addresses by default):
# listening on every interface, it also allows the name the links use (FORESIGHT_UI_URL_HOST).
mlflow_hosts=()
case "$UI_HOST" in
    127.0.0.1 | localhost | ::1) ;;
    *) url_host="${FORESIGHT_UI_URL_HOST:-$(hostname)}"
       mlflow_hosts=(--allowed-hosts "$url_host,$url_host:$MLFLOW_PORT,localhost,localhost:$MLFLOW_PORT,127.0.0.1,127.0.0.1:$MLFLOW_PORT") ;;
esac
LOG="$logs/mlflow.log" NAME=mlflow start mlflow ui --backend-store-uri "$tracking_uri" --host "$UI_HOST" \
    --port "$MLFLOW_PORT" "${mlflow_hosts[@]}"
LOG="$logs/api-server.log" NAME=api-server start airflow api-server --host "$UI_HOST" --port "$AIRFLOW__API__PORT"

case "$UI_HOST" in
    0.0.0.0 | :: | "[::]") local_host=127.0.0.1 ;;
    \[*) local_host="$UI_HOST" ;;
    *:*) local_host="[$UI_HOST]" ;;  # an IPv6 address in a URL
    *) local_host="$UI_HOST" ;;
esac
health="http://$local_host:$AIRFLOW__API__PORT/api/v2/monitor/health"
deadline=$(( SECONDS + API_WAIT_S ))
until python -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)' "$health" 2> /dev/null; do
    if ! kill -0 "${pids[1]}" 2> /dev/null; then
        echo "make ui: the api-server exited; its log: $logs/api-server.log" >&2
        exit 1
    fi
    if (( SECONDS > deadline )); then
        echo "make ui: the api-server did not answer on $health within ${API_WAIT_S} s; its log: $logs/api-server.log" >&2
        exit 1
    fi
    sleep 1
done
chmod 600 "$passwords" 2> /dev/null || true
echo "make ui: the api-server answers on $UI_HOST:$AIRFLOW__API__PORT; starting the scheduler, dag-processor and triggerer"

LOG="$logs/scheduler.log" NAME=scheduler start airflow scheduler
LOG="$logs/dag-processor.log" NAME=dag-processor start airflow dag-processor
LOG="$logs/triggerer.log" NAME=triggerer start airflow triggerer

# Stop everything when any one of them exits.
wait -n "${pids[@]}"
echo "make ui: a process exited; stopping the others (logs in $logs)" >&2
exit 1
