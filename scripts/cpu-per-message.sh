#!/usr/bin/env bash
# Measures the gateway's CPU per message (issue 10) with three processes on
# this machine: the broker (streamgate devbroker), one gateway node
# (streamgate serve, no cluster) and the load driver (cmd/sgload). COUNT
# messages of 1 KiB incompressible bytes, 8 shards, four phases in order:
#   produce-direct  franz-go producer straight to the broker (acks all)
#   publish         through the gateway (raw Publish streams, batches of 100)
#   consume-direct  franz-go consumer of what produce-direct wrote, commits every 1000
#   subscribe       through the gateway, what publish wrote, acking each batch
# The gateway's and the broker's CPU (utime+stime from /proc/PID/stat) are
# read before and after each phase; the driver reports its own CPU for the
# timed part only. Prints a markdown table.
#   scripts/cpu-per-message.sh [COUNT]        (default 200000)
# Environment: STREAMS (parallel publish streams, default 1), BATCH (100),
# SIZE (1024), PHASE_TIMEOUT (seconds per phase, default 600).
set -euo pipefail
cd "$(dirname "$0")/.."

count=${1:-200000}
streams=${STREAMS:-1}
batch=${BATCH:-100}
size=${SIZE:-1024}
phase_timeout=${PHASE_TIMEOUT:-600}
partitions=8
direct_topic=sgload-direct
gateway_topic=sgload-gateway

[[ $count =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [COUNT]" >&2; exit 2; }

work=$(mktemp -d)
pids=()       # broker, gateway: stopped by cleanup, the gateway first
driver_pid="" # the running phase's driver, until it is waited for
cleanup() {
  local rc=$? pid stop=()
  [[ -n $driver_pid ]] && stop+=("$driver_pid")
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop+=("${pids[i]}"); done
  for pid in "${stop[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${stop[@]}"; do
    # Up to 10 s for a clean stop, then SIGKILL.
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [[ $rc -ne 0 ]]; then
    for f in "$work"/*.log; do [[ -f $f ]] && { echo "--- $f (last 20 lines)" >&2; tail -n 20 "$f" >&2; }; done
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "building into $work" >&2
go build -o "$work/streamgate" ./cmd/streamgate
go build -o "$work/sgload" ./cmd/sgload

# free_port prints a loopback port nobody listens on now.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# cpu_ticks PID prints the process's utime+stime in clock ticks. The command
# name in field 2 may hold spaces, so fields are counted after its ")".
cpu_ticks() {
  local stat
  stat=$(<"/proc/$1/stat")
  stat=${stat##*) }
  # shellcheck disable=SC2086
  set -- $stat
  echo $(( ${12} + ${13} ))
}
hz=$(getconf CLK_TCK)

# wait_for DESC SECONDS CMD...: retries CMD every 0.1 s until it succeeds.
wait_for() {
  local desc=$1 secs=$2; shift 2
  for _ in $(seq $((secs * 10))); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "timed out after ${secs}s waiting for $desc" >&2
  return 1
}

broker_addr=127.0.0.1:$(free_port)
grpc_addr=127.0.0.1:$(free_port)
http_addr=127.0.0.1:$(free_port)

"$work/streamgate" devbroker --addr "$broker_addr" --partitions "$partitions" \
  --topics "$direct_topic,$gateway_topic" --log-level warn 2>"$work/devbroker.log" &
broker_pid=$!
pids+=("$broker_pid")
wait_for "the devbroker on $broker_addr" 30 bash -c "exec 3<>/dev/tcp/${broker_addr%:*}/${broker_addr#*:}"

"$work/streamgate" serve --brokers "$broker_addr" --gossip-addr "" --grpc-addr "$grpc_addr" \
  --http-addr "$http_addr" --log-level warn 2>"$work/serve.log" &
gateway_pid=$!
pids+=("$gateway_pid")
wait_for "the gateway's /readyz on $http_addr" 60 curl -fsS --max-time 2 "http://$http_addr/readyz"

echo "broker $broker_addr (pid $broker_pid), gateway $grpc_addr (pid $gateway_pid); $count messages of $size bytes, $partitions shards, CLK_TCK $hz" >&2

rows=()
# phase NAME USES_GATEWAY SGLOAD-ARGS...: runs one phase and adds its row.
phase() {
  local name=$1 uses_gateway=$2; shift 2
  local g0 b0 g1 b1 out rate driver gw br
  g0=$(cpu_ticks "$gateway_pid"); b0=$(cpu_ticks "$broker_pid")
  # In the background and waited for, so that a signal to this script
  # ends it at once (the trap kills the driver too; timeout passes SIGTERM on,
  # and SIGKILL 5 s later, before cleanup gives up on it).
  timeout -k 5 "$phase_timeout" "$work/sgload" "$name" --count "$count" --timeout "${phase_timeout}s" "$@" \
    >"$work/sgload-$name.out" 2>"$work/sgload-$name.log" &
  driver_pid=$!
  local rc=0
  wait "$driver_pid" || rc=$?
  driver_pid="" # reaped: its pid may be reused, never signal it again
  if [[ $rc -ne 0 ]]; then
    echo "phase $name failed (exit $rc)" >&2
    return 1
  fi
  out=$(<"$work/sgload-$name.out")
  g1=$(cpu_ticks "$gateway_pid"); b1=$(cpu_ticks "$broker_pid")
  cat "$work/sgload-$name.log" >&2
  echo "$out" >&2
  rate=$(sed -n 's/.*msgs_per_s=\([0-9.]*\).*/\1/p' <<<"$out")
  driver=$(sed -n 's/.*cpu_us_per_msg=\([0-9.]*\).*/\1/p' <<<"$out")
  us_per_msg() { awk -v t="$1" -v hz="$hz" -v n="$count" 'BEGIN { printf "%.1f", t * 1e6 / hz / n }'; }
  br=$(us_per_msg $((b1 - b0)))
  if [[ $uses_gateway == yes ]]; then
    gw=$(us_per_msg $((g1 - g0)))
  else
    gw="– (idle: $(us_per_msg $((g1 - g0))))"
  fi
  rows+=("| $name | $rate | $gw | $driver | $br |")
}

phase produce-direct no  --brokers "$broker_addr" --topic "$direct_topic" --size "$size"
phase publish        yes --addr "$grpc_addr" --topic "$gateway_topic" --size "$size" --streams "$streams" --batch "$batch"
phase consume-direct no  --brokers "$broker_addr" --topic "$direct_topic"
phase subscribe      yes --addr "$grpc_addr" --topic "$gateway_topic"

echo
echo "$count messages of $size bytes, $partitions shards, $(nproc) CPUs; publish: $streams stream(s), batches of $batch"
echo
echo "| phase | msgs/s | gateway CPU us/msg | driver CPU us/msg | broker CPU us/msg |"
echo "|---|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
