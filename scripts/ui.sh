#!/usr/bin/env bash
# `make ui`: the MLflow UI and Airflow's api-server, then, once the api-server answers, the
# scheduler, dag-processor and triggerer. A task handed out before the execution API listens
# would fail its first try with "Connection refused" (and burn a retry); waiting avoids that,
# also after a restart with tasks already queued.
#
# Every setting comes from the environment `make ui` exports: AIRFLOW_HOME, AIRFLOW__API__PORT,
# AIRFLOW__CORE__EXECUTION_API_SERVER_URL, FORESIGHT_MLFLOW_UI_URL and MLFLOW_PORT. Output of
# each process goes to the console with its name in front, and to $AIRFLOW_HOME/ui-logs/.
# Ctrl-C (or SIGTERM) stops them all.
set -euo pipefail

: "${AIRFLOW_HOME:?set by make ui}"
: "${AIRFLOW__API__PORT:?set by make ui}"
: "${MLFLOW_PORT:?set by make ui}"
API_WAIT_S="${FORESIGHT_UI_API_WAIT_S:-180}"
logs="$AIRFLOW_HOME/ui-logs"
mkdir -p "$logs"

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
start() {
    setsid bash -c 'exec "$@" 2>&1 | tee -a "$LOG" | sed -u "s/^/[$NAME] /"' _ "$@" \
        < /dev/null &
    pids+=("$!")
}
export LOG NAME

tracking_uri="$(python -c 'from foresight_lib.config import load_config; print(load_config().mlflow.tracking_uri)')"
LOG="$logs/mlflow.log" NAME=mlflow start mlflow ui --backend-store-uri "$tracking_uri" --port "$MLFLOW_PORT"
LOG="$logs/api-server.log" NAME=api-server start airflow api-server --port "$AIRFLOW__API__PORT"

health="http://localhost:$AIRFLOW__API__PORT/api/v2/monitor/health"
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
echo "make ui: the api-server answers on port $AIRFLOW__API__PORT; starting the scheduler, dag-processor and triggerer"

LOG="$logs/scheduler.log" NAME=scheduler start airflow scheduler
LOG="$logs/dag-processor.log" NAME=dag-processor start airflow dag-processor
LOG="$logs/triggerer.log" NAME=triggerer start airflow triggerer

# Stop everything when any one of them exits.
wait -n "${pids[@]}"
echo "make ui: a process exited; stopping the others (logs in $logs)" >&2
exit 1
