# shellcheck shell=bash
# Starts and stops a private Podman service (its Docker-compatible API) for
# berth's tests. Source this file (after scripts/engine.sh), then call
# `podman_start DIR` and `podman_stop DIR`.
#
# Two Podmans: Debian 12's (4.3) from the machine, and, with PODMAN_ROOT
# naming a Debian 13 root that holds podman (engine_root_install), that
# root's (5.4), run with the root as its `/` as engine.sh runs dockerd.
# Either has its own storage, run and temporary folders under DIR
# (CONTAINERS_STORAGE_CONF, CONTAINERS_CONF), and runs in mount and PID
# namespaces of its own, with a private /run and, for the machine's
# podman, /var seen through an overlay whose upper layer is under DIR
# (podman keeps a blob cache in /var/lib/containers whatever its storage
# folders), so it never writes to the machine's /var/lib/containers or
# /run. Its socket is DIR/podman.sock, its volumes
# DIR/storage/volumes/<name>/_data.

podman_install() {
  command -v podman >/dev/null 2>&1 && return 0
  echo "installing podman from Debian" >&2
  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman >/dev/null
}

# The service's configuration. Root here lacks CAP_SYS_RESOURCE, and podman
# fills every ulimit a container does not name at 1048576, beyond the hard
# limits: containers could not start. The defaults are capped at the
# current hard limits instead.
podman_configure() {
  local dir=$1 nofile nproc
  nofile=$(ulimit -Hn)
  nproc=$(ulimit -Hu)
  [ "$nofile" = unlimited ] && nofile=1048576
  [ "$nproc" = unlimited ] && nproc=1048576
  [ "$nofile" -gt 1024 ] && nofile=1024
  [ "$nproc" -gt 4096 ] && nproc=4096
  mkdir -p "$dir/storage" "$dir/run" "$dir/tmp" "$dir/networks" "$dir/var/upper" "$dir/var/work"
  cat >"$dir/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$dir/storage"
runroot = "$dir/run"
EOF
  cat >"$dir/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
tmp_dir = "$dir/tmp"
image_copy_tmp_dir = "$dir/tmp"
# No systemd here; and crun (podman 5's default) refuses this machine's
# hybrid cgroup layout, runc does not.
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"

[network]
network_config_dir = "$dir/networks"
EOF
}

# podman_start DIR [NODE_NAME]: the service, ready when its socket answers.
podman_start() {
  local dir=$1 name=${2:-berth-podman}
  mkdir -p "$dir"
  podman_configure "$dir"
  # Both run in PID and mount namespaces of their own, so stopping the
  # service (PID 1 there) ends every container process with it, and in UTS
  # and network namespaces of their own, so the firewall rules podman's
  # netavark writes for its bridge stay there (only the unix socket is
  # reached from outside).
  local enter=(unshare --uts --net --mount --pid --fork --kill-child=SIGTERM) setup
  if [ -n "${PODMAN_ROOT:-}" ]; then
    # The root's podman finds its configuration at the same paths: DIR is
    # bound in where it is outside.
    setup=${ENGINE_IN_ROOT/exec dockerd/exec podman system service}
    CONTAINERS_CONF="$dir/containers.conf" CONTAINERS_STORAGE_CONF="$dir/storage.conf" \
      setsid "${enter[@]}" sh -c "$setup" sh "$PODMAN_ROOT" "$dir" "$name" \
      --time=0 "unix://$dir/podman.sock" >"$dir/podman.log" 2>&1 &
  else
    # shellcheck disable=SC2016
    setup='set -e
      ip link set lo up
      hostname "$1"
      shift
      mount --make-rprivate /
      mount -t proc proc /proc
      mount -t tmpfs tmpfs /run
      mount -t overlay overlay -o "lowerdir=/var,upperdir=$0/var/upper,workdir=$0/var/work" /var
      exec "$@"'
    CONTAINERS_CONF="$dir/containers.conf" CONTAINERS_STORAGE_CONF="$dir/storage.conf" \
      setsid "${enter[@]}" sh -c "$setup" "$dir" "$name" \
      podman system service --time=0 "unix://$dir/podman.sock" >"$dir/podman.log" 2>&1 &
  fi
  namespace_child $! >"$dir/podman.started-pid"
  wait_for_api podman "$dir/podman.sock" "$dir/podman.started-pid" "$dir/podman.log"
}

# Imports the tests' busybox image into the Podman in DIR.
podman_import_busybox() {
  local dir=$1
  ln -sf podman.sock "$dir/docker.sock"
  engine_import_busybox "$dir"
}

# Stops the service in DIR by its PID; its containers' processes go with
# its PID namespace.
podman_stop() {
  stop_by_pid_file "$1/podman.started-pid" 10
}
