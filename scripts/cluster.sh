# shellcheck shell=bash
# Starts and stops a three-node berth cluster on loopback for the demo and
# the benchmark: three private engines, each in its own UTS and network
# namespace (node names berth-node-a, -b, -c), and a berth agent in front of
# each, joined by gossip. Source after scripts/engine.sh.

CLUSTER_NODES=(berth-node-a berth-node-b berth-node-c)

# A TCP port nothing listens on (gossip also needs its UDP twin; a port
# free for TCP on loopback is almost always free for UDP too).
cluster_free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 10000))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
  done
}

# cluster_start_engines DIR: the three engines; berth-node-a becomes a
# single-node swarm manager.
cluster_start_engines() {
  local dir=$1 node
  for node in "${CLUSTER_NODES[@]}"; do
    engine_start "$dir/$node" "$node" --bridge=none
    engine_import_busybox "$dir/$node"
  done
  engine_swarm_init "$dir/${CLUSTER_NODES[0]}"
}

# cluster_start_agents DIR BERTH_BINARY: the agents' API ports end up in
# DIR/<node>/api-port, their PIDs in DIR/<node>/berth.pid.
cluster_start_agents() {
  local dir=$1 berth=$2 node i
  local gossip=() seeds
  for node in "${CLUSTER_NODES[@]}"; do
    gossip+=("$(cluster_free_port)")
  done
  for i in 0 1 2; do
    node=${CLUSTER_NODES[$i]}
    seeds="127.0.0.1:${gossip[0]}"
    [ "$i" = 0 ] && seeds="127.0.0.1:${gossip[1]},127.0.0.1:${gossip[2]}"
    cluster_start_agent "$dir" "$berth" "$node" "${gossip[$i]}" "$seeds"
  done
}

# cluster_start_agent DIR BERTH_BINARY NODE GOSSIP_PORT SEEDS
cluster_start_agent() {
  local dir=$1 berth=$2 node=$3 gossip=$4 seeds=$5 port _
  echo "$gossip $seeds" >"$dir/$node/gossip"
  DOCKER_HOST="unix://$dir/$node/docker.sock" AGENT_HOST=127.0.0.1 AGENT_PORT=0 \
    AGENT_ADVERTISE_ADDR=127.0.0.1 AGENT_CLUSTER_PORT="$gossip" AGENT_CLUSTER_ADDR="$seeds" \
    AGENT_CLUSTER_PROBE_INTERVAL=200ms AGENT_CLUSTER_PROBE_TIMEOUT=100ms \
    LOG_MODE=NOCOLOR LOG_LEVEL="${BERTH_LOG_LEVEL:-INFO}" \
    "$berth" 2>"$dir/$node/berth.log" &
  echo $! >"$dir/$node/berth.pid"
  for _ in $(seq 1 100); do
    port=$(sed -n 's/.*server_port=\([0-9]*\).*/\1/p' "$dir/$node/berth.log" | head -1)
    [ -n "$port" ] && { echo "$port" >"$dir/$node/api-port"; return 0; }
    sleep 0.1
  done
  echo "berth for $node did not start:" >&2
  cat "$dir/$node/berth.log" >&2
  return 1
}

# Stops one agent by its PID: cluster_stop_agent DIR NODE [SIGNAL]
cluster_stop_agent() {
  local dir=$1 node=$2 signal=${3:-TERM} pid
  pid=$(cat "$dir/$node/berth.pid" 2>/dev/null) || return 0
  kill "-$signal" "$pid" 2>/dev/null && { wait "$pid" 2>/dev/null || true; }
  rm -f "$dir/$node/berth.pid"
}

cluster_stop() {
  local dir=$1 node
  for node in "${CLUSTER_NODES[@]}"; do cluster_stop_agent "$dir" "$node"; done
  for node in "${CLUSTER_NODES[@]}"; do engine_stop "$dir/$node"; done
}

# The signature headers of the test identity (fixtures/signatures), as
# curl arguments.
cluster_signature_headers() {
  local here=$1 key sig
  key=$(awk -F'\t' '$1=="p256-a-good" {print $2}' "$here/fixtures/signatures/vectors.tsv")
  sig=$(awk -F'\t' '$1=="p256-a-good" {print $3}' "$here/fixtures/signatures/vectors.tsv")
  echo "-H X-PortainerAgent-PublicKey:$key -H X-PortainerAgent-Signature:$sig"
}

# Waits until the first node's agent lists the three agents.
cluster_wait_formed() {
  local dir=$1 here=$2
  cluster_wait_agents "$here" "$(cat "$dir/${CLUSTER_NODES[0]}/api-port")" 3
}

# cluster_agents_listed HERE PORT: how many agents the agent on PORT lists.
cluster_agents_listed() {
  # shellcheck disable=SC2046
  curl -sk $(cluster_signature_headers "$1") "https://127.0.0.1:$2/agents" | grep -o NodeName | wc -l
}

# cluster_wait_agents HERE PORT COUNT: waits up to 2 minutes until the
# agent on PORT lists COUNT agents.
cluster_wait_agents() {
  local here=$1 port=$2 count=$3 _
  for _ in $(seq 1 600); do
    [ "$(cluster_agents_listed "$here" "$port")" = "$count" ] && return 0
    sleep 0.2
  done
  echo "the cluster did not form: $(cluster_agents_listed "$here" "$port") of $count agents listed" >&2
  return 1
}
