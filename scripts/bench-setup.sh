# shellcheck shell=bash
# What the benchmark scripts share. Source after scripts/engine.sh.
#
#   bench_tools TOOL...              installs (apt) those not on PATH
#   free_port                        a loopback TCP port nothing answers on
#   bench_engine_containers DIR      50 stopped containers on DIR's engine,
#                                    so a list has something to carry
#   cpu_ticks PID                    the CPU PID has spent (utime + stime),
#                                    in clock ticks (getconf CLK_TCK a second)
#   container_memory CLI NAME PID    "KiB_stats KiB_rss KiB_anon KiB_file" now:
#                                    the container's `docker stats` figure and
#                                    the resident set of its process PID
#   bench_agent_container CLI NAME IMAGE SOCKET PORT [DOCKER_RUN_ARGS...]
#                                    runs berth's IMAGE as container NAME on
#                                    the host's network, its API on PORT in
#                                    front of the engine at SOCKET; prints
#                                    its PID once it answers /ping
#   peak_memory_under_load CLI NAME PID LUA URL SECONDS [CONNECTIONS]
#                                    the peak of each of those while wrk runs
#                                    at 32 (or CONNECTIONS) connections with
#                                    the script LUA; wrk's report is left in
#                                    wrk.out beside LUA

bench_tools() {
  local tool missing=()
  for tool in "$@"; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
  [ ${#missing[@]} = 0 ] && return 0
  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
}

free_port() {
  local port
  while :; do
    port=$(shuf -i 20000-60000 -n 1)
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
  done
}

bench_engine_containers() {
  local cli i
  cli="$(engine_cli) -H unix://$1/docker.sock"
  for i in $(seq 1 50); do $cli create --name "bench-$i" berth-test/busybox sleep 1 >/dev/null 2>&1; done
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

container_memory() {
  local cli=$1 name=$2 pid=$3 usage stats
  usage=$($cli stats --no-stream --format '{{.MemUsage}}' "$name" | awk '{print $1}')
  stats=$(awk -v u="$usage" 'BEGIN {
    n = u; unit = u; sub(/[A-Za-z]+$/, "", n); sub(/^[0-9.]+/, "", unit)
    f = (unit == "GiB") ? 1048576 : (unit == "MiB") ? 1024 : (unit == "KiB") ? 1 : 1 / 1024
    printf "%d", n * f }')
  echo "$stats $(awk '$1 ~ /^(VmRSS|RssAnon|RssFile):$/ {printf "%s ", $2}' "/proc/$pid/status")"
}

peak_memory_under_load() {
  local cli=$1 name=$2 pid=$3 lua=$4 url=$5 seconds=$6 connections=${7:-32} peak="0 0 0 0" load
  wrk -t"$((connections < 2 ? 1 : 2))" -c"$connections" -d"${seconds}s" --timeout 30s -s "$lua" "$url" >"$(dirname "$lua")/wrk.out" &
  load=$!
  while kill -0 "$load" 2>/dev/null; do
    peak=$(paste -d' ' <(echo "$peak") <(container_memory "$cli" "$name" "$pid") |
      awk '{for (i = 1; i <= 4; i++) printf "%d ", ($i > $(i+4)) ? $i : $(i+4); print ""}')
    sleep 1
  done
  wait "$load"
  echo "$peak"
}

bench_agent_container() {
  local cli=$1 name=$2 image=$3 socket=$4 port=$5 i
  shift 5
  $cli run -d --name "$name" --network host -e AGENT_HOST=127.0.0.1 -e AGENT_PORT="$port" \
    -e LOG_LEVEL=WARN -v "$socket:/var/run/docker.sock" "$@" "$image" >/dev/null
  for i in $(seq 1 300); do
    if curl -sk -o /dev/null -w '%{http_code}' "https://127.0.0.1:$port/ping" 2>/dev/null | grep -q 204; then
      $cli inspect -f '{{.State.Pid}}' "$name"
      return 0
    fi
    $cli inspect -f '{{.State.Running}}' "$name" | grep -q true || break
    sleep 0.1
  done
  echo "the berth container $name did not answer /ping:" >&2
  $cli logs "$name" >&2
  return 1
}
