# shellcheck shell=bash
# A real Kubernetes cluster for the tests: Debian's etcd, kube-apiserver,
# kube-controller-manager and kube-scheduler 1.34 (built from Go modules by
# scripts/build-test-peers), with RBAC, static tokens and service-account
# keys of its own. The controller manager does what Portainer waits for
# (service-account token secrets, aggregated roles such as `view`).
# Started and stopped by PID files, like scripts/engine.sh's engines.
#
#   . scripts/kube.sh
#   kube_start DIR KUBE_BIN_DIR [API_PORT] [node]
#   kube_stop DIR
#
# kube_start writes DIR/{ca.crt,ca.key,admin-token,address,kubeconfig}.
# Without `node` the control plane listens on 127.0.0.1. With it (as root),
# a real node joins: Debian's containerd and runc and the kubelet 1.34, in a
# network namespace of its own (node address 10.250.0.2: the kubelet
# refuses a loopback one) joined to this one by a veth pair whose near end,
# 10.250.0.1, is where the API server then listens. The busybox image and a
# sandbox image of the tests' own are imported into containerd (nothing is
# pulled); pods get addresses in 10.251.0.0/24 on a bridge inside the
# node's namespace.
#
# The tests find it through BERTH_TEST_KUBE=DIR.

# kube_free_port: a TCP port nobody listens on now.
kube_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# kube_issue DIR NAME SUBJECT [EXTENSION]: DIR/NAME.{crt,key}, signed by
# the CA.
kube_issue() {
  local dir=$1 name=$2 subject=$3 extension=${4:-basicConstraints=CA:FALSE}
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "$subject" -keyout "$dir/$name.key" -out "$dir/$name.csr" 2>/dev/null
  printf '%s\n' "$extension" >"$dir/$name.ext"
  openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
    -CAcreateserial -days 2 -extfile "$dir/$name.ext" -out "$dir/$name.crt" 2>/dev/null
}

# kube_certificates DIR ADDRESS: a CA; the API server's certificate (for
# ADDRESS and the in-cluster names and service address a pod would use);
# its client certificate for kubelets (exec, logs); the kubelet's serving
# certificate; the service-account signing key.
kube_certificates() {
  local dir=$1 address=$2
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=berth-test-kubernetes-ca" -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
  kube_issue "$dir" apiserver "/CN=kube-apiserver" \
    "subjectAltName=IP:$address,IP:10.96.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
  kube_issue "$dir" apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
  kube_issue "$dir" kubelet "/CN=berth-test-node" "subjectAltName=IP:10.250.0.2"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/sa.key" 2>/dev/null
  openssl pkey -in "$dir/sa.key" -pubout -out "$dir/sa.pub" 2>/dev/null
}

kube_start() {
  local dir=$1 bin=$2 etcd_port peer_port api_port token i address=127.0.0.1
  mkdir -p "$dir/etcd"
  if [ "${4:-}" = node ]; then
    kube_node_network "$dir" || return 1
    address=10.250.0.1
  fi
  kube_certificates "$dir" "$address"
  token=$(openssl rand -hex 24)
  printf '%s\n' "$token" >"$dir/admin-token"
  # The administrator (system:masters) the tests set their cluster up with.
  printf '%s,berth-test-admin,berth-test-admin,"system:masters"\n' "$token" >"$dir/tokens.csv"
  etcd_port=$(kube_free_port)
  peer_port=$(kube_free_port)
  etcd --name berth-test --data-dir "$dir/etcd/data" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "berth-test=http://127.0.0.1:$peer_port" \
    >"$dir/etcd.log" 2>&1 &
  echo $! >"$dir/etcd.pid"
  api_port=${3:-$(kube_free_port)}
  # --endpoint-reconciler-type=none: the `kubernetes` service's endpoints
  # would name the loopback address, which the API server itself refuses.
  "$bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address "$address" --advertise-address "$address" --secure-port "$api_port" \
    --tls-cert-file "$dir/apiserver.crt" --tls-private-key-file "$dir/apiserver.key" \
    --client-ca-file "$dir/ca.crt" \
    --kubelet-client-certificate "$dir/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$dir/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$dir/ca.crt" --kubelet-preferred-address-types InternalIP \
    --token-auth-file "$dir/tokens.csv" --authorization-mode RBAC \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$dir/sa.pub" --service-account-signing-key-file "$dir/sa.key" \
    --service-cluster-ip-range 10.96.0.0/24 --endpoint-reconciler-type none \
    --allow-privileged --profiling=false --cert-dir "$dir/certs" \
    >"$dir/apiserver.log" 2>&1 &
  echo $! >"$dir/apiserver.pid"
  printf '%s:%s\n' "$address" "$api_port" >"$dir/address"
  cat >"$dir/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: berth-test
  cluster:
    server: https://$address:$api_port
    certificate-authority: $dir/ca.crt
users:
- name: admin
  user:
    token: $token
contexts:
- name: berth-test
  context: {cluster: berth-test, user: admin}
current-context: berth-test
EOF
  for i in $(seq 1 600); do
    if curl -fsS --cacert "$dir/ca.crt" -H "Authorization: Bearer $token" \
      "https://$address:$api_port/readyz" >/dev/null 2>&1; then
      echo "Kubernetes API server at https://$address:$api_port" >&2
      kube_start_controllers "$dir" "$bin" || return 1
      if [ "${4:-}" = node ]; then
        kube_start_node "$dir" "$bin" || {
          kube_stop "$dir"
          return 1
        }
      fi
      return 0
    fi
    if ! kill -0 "$(cat "$dir/apiserver.pid")" 2>/dev/null; then
      tail -20 "$dir/apiserver.log" >&2
      echo "the Kubernetes API server stopped while starting (log: $dir/apiserver.log)" >&2
      kube_stop "$dir"
      return 1
    fi
    sleep 0.1
  done
  tail -20 "$dir/apiserver.log" >&2
  echo "the Kubernetes API server was not ready within 60 s (log: $dir/apiserver.log)" >&2
  kube_stop "$dir"
  return 1
}

# kube_start_controllers DIR KUBE_BIN_DIR: the controller manager and the
# scheduler, as the administrator, without serving or leader election;
# ready once the controller manager has published the cluster's CA into
# the default namespace.
kube_start_controllers() {
  local dir=$1 bin=$2 i
  "$bin/kube-controller-manager" \
    --kubeconfig "$dir/kubeconfig" --leader-elect=false --secure-port 0 \
    --service-account-private-key-file "$dir/sa.key" --root-ca-file "$dir/ca.crt" \
    --use-service-account-credentials=false --controllers '*' --profiling=false \
    >"$dir/controller-manager.log" 2>&1 &
  echo $! >"$dir/controller-manager.pid"
  "$bin/kube-scheduler" --kubeconfig "$dir/kubeconfig" --leader-elect=false --secure-port 0 \
    --profiling=false >"$dir/scheduler.log" 2>&1 &
  echo $! >"$dir/scheduler.pid"
  for i in $(seq 1 600); do
    if "$bin/kubectl" --kubeconfig "$dir/kubeconfig" get configmap kube-root-ca.crt >/dev/null 2>&1; then
      return 0
    fi
    if ! kill -0 "$(cat "$dir/controller-manager.pid")" 2>/dev/null; then
      tail -20 "$dir/controller-manager.log" >&2
      echo "the controller manager stopped while starting (log: $dir/controller-manager.log)" >&2
      kube_stop "$dir"
      return 1
    fi
    sleep 0.1
  done
  tail -20 "$dir/controller-manager.log" >&2
  echo "the controller manager did its first work not within 60 s (log: $dir/controller-manager.log)" >&2
  kube_stop "$dir"
  return 1
}

# kube_end DIR NAME [SIGNAL]: ends the process in DIR/NAME.pid, by that
# PID: SIGNAL (TERM), then KILL after 10 s.
kube_end() {
  local dir=$1 name=$2 signal=${3:-TERM} pid i
  [ -f "$dir/$name.pid" ] || return 0
  pid=$(cat "$dir/$name.pid")
  # Out of this shell's jobs (when it started it): bash reports no kill.
  disown "$pid" 2>/dev/null || true
  kill -s "$signal" "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$dir/$name.pid"
}

# kube_stop DIR: ends the node (if any), the scheduler, the controller
# manager, the API server, then etcd, by their PIDs.
kube_stop() {
  local dir=$1 name
  kube_stop_node "$dir"
  for name in scheduler controller-manager; do
    kube_end "$dir" "$name"
  done
  # The API server's graceful stop waits out open watches (10 s and more);
  # its data goes with the run.
  kube_end "$dir" apiserver KILL
  kube_end "$dir" etcd
}

# kube_node_network DIR: the node's network namespace and the veth pair.
kube_node_network() {
  local dir=$1 netns="berth-kube-$$"
  if ip -o addr show | grep -q ' 10\.250\.0\.1/'; then
    echo "10.250.0.1 is taken on this machine: is another test node running?" >&2
    return 1
  fi
  ip netns add "$netns"
  echo "$netns" >"$dir/netns"
  ip link add "bk$$h" type veth peer name "bk$$n"
  ip link set "bk$$n" netns "$netns"
  ip addr add 10.250.0.1/30 dev "bk$$h"
  ip link set "bk$$h" up
  ip -n "$netns" addr add 10.250.0.2/30 dev "bk$$n"
  ip -n "$netns" link set "bk$$n" up
  ip -n "$netns" link set lo up
  ip -n "$netns" route add default via 10.250.0.1
  # Pods reach the API server at 10.250.0.1 (berth run as a pod): the
  # node forwards their packets, and the answers come back by this route,
  # which goes when the veth pair does.
  ip route add 10.251.0.0/24 via 10.250.0.2 dev "bk$$h"
  ip netns exec "$netns" sysctl -q -w net.ipv4.ip_forward=1
}

# kube_in_node DIR COMMAND...: runs COMMAND in the node's network namespace
# (nsenter, not `ip netns exec`, which would mount a /sys without cgroups),
# in place of the shell that calls it, so that a background call's $! is
# COMMAND's own PID.
kube_in_node() {
  local dir=$1
  shift
  exec nsenter --net="/run/netns/$(cat "$dir/netns")" -- "$@"
}

# kube_node_images DIR: the busybox image (as scripts/engine.sh makes it)
# and the sandbox image (busybox, sleeping) imported into the node's
# containerd.
kube_node_images() {
  local dir=$1 rootfs applet image here
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  rootfs=$dir/node/rootfs
  mkdir -p "$rootfs/bin"
  cp /bin/busybox "$rootfs/bin/busybox"
  for applet in sh cat echo sleep ls true seq head wc env nc; do
    ln -sf busybox "$rootfs/bin/$applet"
  done
  python3 "$here/scripts/image-archive.py" "$rootfs" berth-test/busybox:latest \
    "$dir/node/busybox.tar" /bin/sh
  python3 "$here/scripts/image-archive.py" "$rootfs" berth-test/pause:1 \
    "$dir/node/pause.tar" /bin/sleep 2147483647
  for image in busybox pause; do
    ctr --address "$dir/node/containerd.sock" -n k8s.io images import "$dir/node/$image.tar" >/dev/null ||
      return 1
  done
}

# kube_node_configuration DIR: containerd's, the CNI network's and the
# kubelet's configuration files.
kube_node_configuration() {
  local dir=$1 node=$1/node
  cat >"$node/containerd.toml" <<TOML
version = 2
root = "$node/containerd/root"
state = "$node/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$node/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "berth-test/pause:1"
  # The sandbox's negative OOM score needs CAP_SYS_RESOURCE, which root
  # may lack on a test machine: runc then fails to start any pod.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$node/cni"
TOML
  # Pods have a route to the node's link only (the API server, the tests'
  # own servers at 10.250.0.1), none beyond it.
  cat >"$node/cni/10-berth-test.conflist" <<JSON
{"cniVersion": "0.4.0", "name": "berth-test", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.251.0.0/24"}]],
            "routes": [{"dst": "10.250.0.0/30"}],
            "dataDir": "$node/cni-ipam"}}]}
JSON
  cat >"$node/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 10.250.0.2
port: 10250
readOnlyPort: 0
healthzPort: 0
tlsCertFile: $dir/kubelet.crt
tlsPrivateKeyFile: $dir/kubelet.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $dir/ca.crt}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$node/containerd.sock
podLogsDirectory: $node/logs
resolvConf: ""
evictionHard: {memory.available: "0%", nodefs.available: "0%", imagefs.available: "0%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
YAML
}

# kube_start_node DIR KUBE_BIN_DIR: containerd and the kubelet in the
# node's namespace; ready once the node is Ready.
kube_start_node() {
  local dir=$1 bin=$2 node=$1/node i
  mkdir -p "$node/cni" "$node/cni-ipam" "$node/logs" "$node/kubelet"
  kube_node_configuration "$dir"
  kube_in_node "$dir" containerd --config "$node/containerd.toml" >"$node/containerd.log" 2>&1 &
  echo $! >"$dir/containerd.pid"
  for i in $(seq 1 300); do
    ctr --address "$node/containerd.sock" version >/dev/null 2>&1 && break
    sleep 0.1
  done
  kube_node_images "$dir" || {
    tail -20 "$node/containerd.log" >&2
    echo "containerd did not take the test images (log: $node/containerd.log)" >&2
    return 1
  }
  kube_in_node "$dir" "$bin/kubelet" --config "$node/kubelet.yaml" --kubeconfig "$dir/kubeconfig" \
    --root-dir "$node/kubelet" --cert-dir "$node/kubelet/pki" \
    --hostname-override berth-test-node --node-ip 10.250.0.2 \
    >"$node/kubelet.log" 2>&1 &
  echo $! >"$dir/kubelet.pid"
  for i in $(seq 1 600); do
    if [ "$("$bin/kubectl" --kubeconfig "$dir/kubeconfig" get node berth-test-node \
      -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]; then
      echo "Kubernetes node berth-test-node Ready at 10.250.0.2" >&2
      return 0
    fi
    if ! kill -0 "$(cat "$dir/kubelet.pid")" 2>/dev/null; then
      tail -20 "$node/kubelet.log" >&2
      echo "the kubelet stopped while starting (log: $node/kubelet.log)" >&2
      return 1
    fi
    sleep 0.1
  done
  tail -20 "$node/kubelet.log" >&2
  echo "the node was not Ready within 60 s (log: $node/kubelet.log)" >&2
  return 1
}

# kube_sandbox_netns DIR: the network namespaces containerd made for the
# node's pods (bind mounts under /run/netns), read from its containers.
kube_sandbox_netns() {
  local dir=$1 id
  for id in $(ctr --address "$dir/node/containerd.sock" -n k8s.io containers ls -q 2>/dev/null); do
    ctr --address "$dir/node/containerd.sock" -n k8s.io containers info "$id" 2>/dev/null |
      python3 -c 'import json, sys
for ns in json.load(sys.stdin).get("Spec", {}).get("linux", {}).get("namespaces", []):
    path = ns.get("path", "").replace("/var/run/", "/run/", 1)
    if ns.get("type") == "network" and path.startswith("/run/netns/"):
        print(path)'
  done | sort -u
}

# kube_stop_node DIR: the kubelet ended by its PID; every container of the
# node killed and deleted through containerd; containerd ended by its PID,
# and any shim that outlives it by its own (found by containerd's socket,
# which is this node's alone); the pods' network namespaces, the mounts
# under the node's folder, the kubelet's cgroups and the node's network
# namespace removed.
kube_stop_node() {
  local dir=$1 node=$1/node pid task shims mount sandboxes i
  [ -f "$dir/netns" ] || return 0
  sandboxes=$(kube_sandbox_netns "$dir")
  kube_end "$dir" kubelet
  for task in $(ctr --address "$node/containerd.sock" -n k8s.io tasks ls -q 2>/dev/null); do
    ctr --address "$node/containerd.sock" -n k8s.io tasks kill -s KILL "$task" >/dev/null 2>&1 || true
  done
  for i in $(seq 1 100); do
    ctr --address "$node/containerd.sock" -n k8s.io tasks ls 2>/dev/null | grep -q RUNNING || break
    sleep 0.1
  done
  for task in $(ctr --address "$node/containerd.sock" -n k8s.io tasks ls -q 2>/dev/null); do
    ctr --address "$node/containerd.sock" -n k8s.io tasks delete "$task" >/dev/null 2>&1 || true
  done
  shims=$(pgrep -f -- "-address $node/containerd.sock" || true)
  kube_end "$dir" containerd
  for pid in $shims; do
    kill -9 "$pid" 2>/dev/null || true
  done
  for mount in $sandboxes; do
    umount "$mount" 2>/dev/null || true
    rm -f "$mount"
  done
  grep -F "$node/" /proc/mounts | awk '{print $2}' | sort -r | while read -r mount; do
    umount -l "$mount" 2>/dev/null || true
  done
  find /sys/fs/cgroup/*/kubepods -depth -type d -exec rmdir {} \; 2>/dev/null || true
  ip netns del "$(cat "$dir/netns")" 2>/dev/null || true
  rm -f "$dir/netns"
}
