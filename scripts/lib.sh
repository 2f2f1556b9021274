# Shell helpers shared by scripts/demo.sh and scripts/bench.sh (sourced, not run).
# The caller sets PROG (its name, for messages) and keeps the PIDs it started in PIDS.

# stop_pids SECONDS: stops every PID in PIDS, in reverse start order, each by its PID:
# SIGTERM, then SIGKILL after SECONDS.
stop_pids() {
    local grace=$1 i pid
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        pid=${PIDS[i]}
        kill -0 "$pid" 2>/dev/null || continue
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq $((grace * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}

# A free TCP port on 127.0.0.1 (picked by the kernel).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# port_open PORT: something accepts connections on 127.0.0.1:PORT.
port_open() { python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$1"; }

# wait_for DESCRIPTION SECONDS COMMAND...: polls COMMAND every 0.1 s until it succeeds.
wait_for() {
    local what=$1 secs=$2
    shift 2
    local end=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= end)); then
            echo "$PROG: timed out after ${secs}s waiting for $what" >&2
            return 1
        fi
        sleep 0.1
    done
}
