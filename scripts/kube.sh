# shellcheck shell=bash
# A real Kubernetes control plane for the tests, on loopback: Debian's etcd,
# kube-apiserver and kube-controller-manager 1.34 (built from Go modules by
# scripts/build-test-peers), with RBAC, static tokens and service-account
# keys of its own. The controller manager does what Portainer waits for
# (service-account token secrets, aggregated roles such as `view`). Started
# and stopped by PID files, like scripts/engine.sh's engines.
#
#   . scripts/kube.sh
#   kube_start DIR KUBE_BIN_DIR [API_PORT]  # writes DIR/{ca.crt,admin-token,address,kubeconfig}
#   kube_stop DIR
#
# The tests find it through BERTH_TEST_KUBE=DIR.

# kube_free_port: a TCP port nobody listens on now.
kube_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# kube_certificates DIR: a CA, the API server's certificate (for loopback
# and the in-cluster names and service address a pod would use) and the
# service-account signing key.
kube_certificates() {
  local dir=$1
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=berth-test-kubernetes-ca" -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=kube-apiserver" -keyout "$dir/apiserver.key" -out "$dir/apiserver.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\n' \
    >"$dir/apiserver.ext"
  openssl x509 -req -in "$dir/apiserver.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
    -CAcreateserial -days 2 -extfile "$dir/apiserver.ext" -out "$dir/apiserver.crt" 2>/dev/null
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/sa.key" 2>/dev/null
  openssl pkey -in "$dir/sa.key" -pubout -out "$dir/sa.pub" 2>/dev/null
}

kube_start() {
  local dir=$1 bin=$2 etcd_port peer_port api_port token i
  mkdir -p "$dir/etcd"
  kube_certificates "$dir"
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
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --tls-cert-file "$dir/apiserver.crt" --tls-private-key-file "$dir/apiserver.key" \
    --client-ca-file "$dir/ca.crt" \
    --token-auth-file "$dir/tokens.csv" --authorization-mode RBAC \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$dir/sa.pub" --service-account-signing-key-file "$dir/sa.key" \
    --service-cluster-ip-range 10.96.0.0/24 --endpoint-reconciler-type none \
    --allow-privileged --profiling=false --cert-dir "$dir/certs" \
    >"$dir/apiserver.log" 2>&1 &
  echo $! >"$dir/apiserver.pid"
  printf '127.0.0.1:%s\n' "$api_port" >"$dir/address"
  cat >"$dir/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: berth-test
  cluster:
    server: https://127.0.0.1:$api_port
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
      "https://127.0.0.1:$api_port/readyz" >/dev/null 2>&1; then
      echo "Kubernetes API server at https://127.0.0.1:$api_port" >&2
      kube_start_controllers "$dir" "$bin"
      return
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

# kube_start_controllers DIR KUBE_BIN_DIR: the controller manager, as the
# administrator, without serving or leader election; ready once it has
# published the cluster's CA into the default namespace.
kube_start_controllers() {
  local dir=$1 bin=$2 i
  "$bin/kube-controller-manager" \
    --kubeconfig "$dir/kubeconfig" --leader-elect=false --secure-port 0 \
    --service-account-private-key-file "$dir/sa.key" --root-ca-file "$dir/ca.crt" \
    --use-service-account-credentials=false --controllers '*' --profiling=false \
    >"$dir/controller-manager.log" 2>&1 &
  echo $! >"$dir/controller-manager.pid"
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

# kube_stop DIR: ends the controller manager, the API server, then etcd,
# by their PIDs.
kube_stop() {
  local dir=$1 name pid i
  for name in controller-manager apiserver etcd; do
    [ -f "$dir/$name.pid" ] || continue
    pid=$(cat "$dir/$name.pid")
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/$name.pid"
  done
}
