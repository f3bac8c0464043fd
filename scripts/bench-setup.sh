# shellcheck shell=bash
# What the benchmark scripts share. Source after scripts/engine.sh.
#
#   bench_tools TOOL...              installs (apt) those not on PATH
#   free_port                        a loopback TCP port nothing answers on
#   bench_engine_containers DIR      50 stopped containers on DIR's engine,
#                                    so a list has something to carry
#   cpu_ticks PID                    the CPU PID has spent (utime + stime),
#                                    in clock ticks (getconf CLK_TCK a second)

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
