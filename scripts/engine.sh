# shellcheck shell=bash
# Starts and stops a private Docker engine for berth's tests. Source this
# file, then call `engine_start DIR` and `engine_stop DIR`.
#
# The engine gets its own socket, data root, exec root and pid file under
# DIR, so it never touches a system engine, and is stopped by its own PID.
#
# Two engines: Debian 12's docker.io (20.10, API 1.41) from the machine,
# and, with ENGINE_ROOT naming a Debian 13 root (engine_root_install),
# that root's docker.io (26.1, API 1.45), run in mount and PID namespaces
# of its own with the root as its `/` (pivot_root; a plain chroot breaks
# `docker exec`), DIR bound in at the same path so its socket is where the
# caller looks.

engine_install() {
  local missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v ip >/dev/null 2>&1 || missing+=(iproute2)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  [ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx sh || missing+=(busybox-static)
  dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} from Debian" >&2
    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
  fi
}

# debian_mirror: the Debian archive this machine's apt fetches from (the
# first `URIs:` of a deb822 .sources file, or `deb` line of a one-line
# list, whose path ends in /debian), so debootstrap uses the same one.
debian_mirror() {
  local mirror
  mirror=$( {
    sed -n -E 's/^[[:space:]]*URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | tr ' ' '\n'
    sed -n -E 's/^[[:space:]]*deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+).*/\2/p' \
      /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null
  } | grep -E '^https?://[^[:space:]]+/debian/?$' | head -n 1)
  if [ -z "$mirror" ]; then
    echo "no Debian archive in apt's sources (/etc/apt/sources.list, /etc/apt/sources.list.d): debootstrap needs one" >&2
    return 1
  fi
  echo "${mirror%/}"
}

# engine_root_install ROOT: a Debian 13 (trixie) root holding docker.io and podman,
# made once with debootstrap from Debian's archive (about a minute) and
# reused while it is complete.
engine_root_install() {
  local root=$1
  [ -f "$root/.berth-engine-root" ] && return 0
  if ! command -v debootstrap >/dev/null 2>&1; then
    echo "installing debootstrap from Debian" >&2
    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
  fi
  local mirror
  mirror=$(debian_mirror) || return 1
  echo "making a Debian 13 root with docker.io in $root (debootstrap)" >&2
  rm -rf "$root"
  mkdir -p "$(dirname "$root")"
  if ! debootstrap --variant=minbase --include=docker.io,docker-compose,podman,nftables,ca-certificates trixie "$root" \
    "$mirror" >"$root.log" 2>&1; then
    echo "debootstrap failed; its log:" >&2
    tail -20 "$root.log" >&2
    return 1
  fi
  touch "$root/.berth-engine-root"
}

# The steps inside the new namespaces that make ROOT the engine's `/`,
# with /dev, /sys, a fresh /proc, /run and /tmp, and DIR at its own path.
# Arguments: ROOT DIR NODE_NAME DOCKERD_ARGS... (NODE_NAME may be empty).
# shellcheck disable=SC2016
ENGINE_IN_ROOT='set -e
root=$1 dir=$2 name=$3
shift 3
mount --make-rprivate /
mount --bind "$root" "$root"
mount --rbind /dev "$root/dev"
mount --rbind /sys "$root/sys"
mount -t proc proc "$root/proc"
mount -t tmpfs tmpfs "$root/run"
mount -t tmpfs tmpfs "$root/tmp"
mkdir -p "$root$dir"
mount --bind "$dir" "$root$dir"
if [ -n "$name" ]; then ip link set lo up; hostname "$name"; fi
cd "$root"
mkdir -p .host
pivot_root . .host
umount -l /.host
exec dockerd "$@"'

# The Debian client speaks API 1.41 like the engine; any other docker CLI
# on PATH (a newer one under /usr/local) may not.
engine_cli() {
  if [ -x /usr/bin/docker ]; then echo /usr/bin/docker; else command -v docker; fi
}

# engine_start DIR [NODE_NAME [DOCKERD_ARGS...]]: with a node name, the
# engine runs in its own UTS namespace with that host name, which becomes
# its node name, and in its own network namespace (only its unix socket is
# reached from outside), so its bridges and swarm ports cannot disturb
# another engine's; extra arguments go to dockerd. With ENGINE_NETNS set
# (a path such as /run/netns/NAME) and a node name, the engine runs in that
# existing network namespace instead: it survives restarts, with its links.
engine_start() {
  local dir=$1 name=${2:-}
  shift $(( $# > 2 ? 2 : $# ))
  mkdir -p "$dir"
  rm -f "$dir/made-docker0"
  # An engine in this network namespace makes the default bridge docker0
  # when there is none, and never removes it: engine_stop does, when this
  # engine made it and no engine here still uses it.
  [ -z "$name" ] && [ ! -e /sys/class/net/docker0 ] && touch "$dir/made-docker0"
  local args=(
    --host "unix://$dir/docker.sock"
    --data-root "$dir/data"
    --exec-root "$dir/exec"
    --pidfile "$dir/dockerd.pid"
    --iptables=false --ip-forward=false
    "$@"
  )
  if [ -n "${ENGINE_ROOT:-}" ]; then
    # unshare forks dockerd into the new PID namespace: the PID recorded
    # is its child's.
    local enter=(unshare --mount --pid --fork --kill-child=SIGTERM)
    if [ -n "$name" ]; then
      enter=(unshare --uts --net --mount --pid --fork --kill-child=SIGTERM)
      [ -n "${ENGINE_NETNS:-}" ] &&
        enter=(nsenter "--net=$ENGINE_NETNS" unshare --uts --mount --pid --fork --kill-child=SIGTERM)
    fi
    DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 setsid "${enter[@]}" \
      sh -c "$ENGINE_IN_ROOT" sh "$ENGINE_ROOT" "$dir" "$name" "${args[@]}" \
      >"$dir/dockerd.log" 2>&1 &
    namespace_child $! >"$dir/dockerd.started-pid"
  elif [ -n "$name" ]; then
    # unshare and sh exec into dockerd, so the PID recorded is dockerd's.
    local enter=(unshare --uts --net)
    [ -n "${ENGINE_NETNS:-}" ] && enter=(nsenter "--net=$ENGINE_NETNS" unshare --uts)
    DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 setsid "${enter[@]}" \
      sh -c 'ip link set lo up && hostname "$0" && exec dockerd "$@"' "$name" "${args[@]}" \
      >"$dir/dockerd.log" 2>&1 &
    echo $! >"$dir/dockerd.started-pid"
  else
    DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 setsid dockerd "${args[@]}" >"$dir/dockerd.log" 2>&1 &
    echo $! >"$dir/dockerd.started-pid"
  fi
  wait_for_api dockerd "$dir/docker.sock" "$dir/dockerd.started-pid" "$dir/dockerd.log"
}

# namespace_child UNSHARE_PID: the PID of the process `unshare --fork`
# started (unshare waits for it, ignoring SIGTERM itself), printed.
namespace_child() {
  local unshare_pid=$1 child="" i
  for i in $(seq 1 100); do
    child=$(pgrep -P "$unshare_pid" | head -1) && [ -n "$child" ] && break
    sleep 0.05
  done
  echo "${child:-$unshare_pid}"
}

# wait_for_api NAME SOCKET PID_FILE LOG: waits up to 30 s until the Docker
# API at SOCKET answers; fails, with the log's end, if the process in
# PID_FILE exits first or the time runs out.
wait_for_api() {
  local name=$1 socket=$2 pid_file=$3 log=$4 cli i
  cli=$(engine_cli)
  for i in $(seq 1 150); do
    if "$cli" -H "unix://$socket" version >/dev/null 2>&1; then
      return 0
    fi
    if ! kill -0 "$(cat "$pid_file")" 2>/dev/null; then
      echo "$name exited; its log:" >&2
      tail -20 "$log" >&2
      return 1
    fi
    sleep 0.2
  done
  echo "$name did not answer within 30s; its log:" >&2
  tail -20 "$log" >&2
  return 1
}

# Imports a tiny image (busybox and a few links) as berth-test/busybox.
engine_import_busybox() {
  local dir=$1 cli rootfs
  cli=$(engine_cli)
  rootfs=$(mktemp -d)
  mkdir -p "$rootfs/bin"
  cp /bin/busybox "$rootfs/bin/busybox"
  for applet in sh cat echo sleep ls true seq head wc; do ln -s busybox "$rootfs/bin/$applet"; done
  tar -C "$rootfs" -c . | "$cli" -H "unix://$dir/docker.sock" import -c 'CMD ["/bin/sh"]' - berth-test/busybox:latest >/dev/null
  rm -rf "$rootfs"
}

# Makes the engine in DIR a single-node swarm manager, its swarm API on the
# first free port of a small range.
engine_swarm_init() {
  local dir=$1 port cli
  cli=$(engine_cli)
  for port in $(seq 23770 23799); do
    "$cli" -H "unix://$dir/docker.sock" swarm init --advertise-addr 127.0.0.1 \
      --listen-addr "127.0.0.1:$port" >/dev/null 2>&1 && return 0
  done
  echo "cannot put the engine in $dir in swarm mode" >&2
  return 1
}

# Stops the engine in DIR by the PID it was started with. dockerd stops
# its containers first, which can take a while. It leaves the bridge
# interfaces of its own networks behind (they are for its next start); an
# engine in the host's network namespace never starts again with this data
# root, so they are deleted, else they pile up over runs until Docker finds
# no address pool that overlaps none of them.
engine_stop() {
  local dir=$1 bridges bridge
  bridges=$(engine_bridges "$dir")
  stop_by_pid_file "$dir/dockerd.started-pid" 30
  for bridge in $bridges; do
    ip link delete "$bridge" 2>/dev/null || true
  done
  if [ -e "$dir/made-docker0" ] && ! engine_running_here; then
    ip link delete docker0 2>/dev/null || true
  fi
  rm -f "$dir/made-docker0"
}

# engine_running_here: whether any dockerd runs in this network namespace
# (the default bridge is shared by every engine in it).
engine_running_here() {
  local own pid
  own=$(readlink /proc/self/ns/net)
  for pid in $(pgrep -x dockerd); do
    [ "$(readlink "/proc/$pid/ns/net" 2>/dev/null)" = "$own" ] && return 0
  done
  return 1
}

# engine_bridges DIR: the interface names (br-<network id>) of the
# user-defined bridge networks of the engine in DIR, if it answers. An
# engine in a network namespace of its own has them there, where these
# names never match a host interface.
engine_bridges() {
  local dir=$1 id
  [ -S "$dir/docker.sock" ] || return 0
  timeout 10 "$(engine_cli)" -H "unix://$dir/docker.sock" network ls -q --no-trunc \
    --filter driver=bridge 2>/dev/null | while read -r id; do
    [ -n "$id" ] && echo "br-${id:0:12}"
  done
  return 0
}

# stop_by_pid_file PID_FILE SECONDS: SIGTERM to the process, SIGKILL if it
# is still there after SECONDS; once: the PID file goes with it, so a later
# call never signals a reused PID.
stop_by_pid_file() {
  local pid_file=$1 seconds=$2 pid i
  pid=$(cat "$pid_file" 2>/dev/null) || return 0
  rm -f "$pid_file"
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 1 $((seconds * 10))); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null
}
