# shellcheck shell=bash
# Starts and stops a private Docker engine for berth's tests. Source this
# file, then call `engine_start DIR` and `engine_stop DIR`.
#
# The engine gets its own socket, data root, exec root and pid file under
# DIR, so it never touches a system engine, and is stopped by its own PID.

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
  local args=(
    --host "unix://$dir/docker.sock"
    --data-root "$dir/data"
    --exec-root "$dir/exec"
    --pidfile "$dir/dockerd.pid"
    --iptables=false --ip-forward=false
    "$@"
  )
  if [ -n "$name" ]; then
    # unshare and sh exec into dockerd, so the PID recorded is dockerd's.
    local enter=(unshare --uts --net)
    [ -n "${ENGINE_NETNS:-}" ] && enter=(nsenter "--net=$ENGINE_NETNS" unshare --uts)
    DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 setsid "${enter[@]}" \
      sh -c 'ip link set lo up && hostname "$0" && exec dockerd "$@"' "$name" "${args[@]}" \
      >"$dir/dockerd.log" 2>&1 &
  else
    DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 setsid dockerd "${args[@]}" >"$dir/dockerd.log" 2>&1 &
  fi
  echo $! >"$dir/dockerd.started-pid"
  local cli i
  cli=$(engine_cli)
  for i in $(seq 1 150); do
    if "$cli" -H "unix://$dir/docker.sock" version >/dev/null 2>&1; then
      return 0
    fi
    if ! kill -0 "$(cat "$dir/dockerd.started-pid")" 2>/dev/null; then
      echo "dockerd exited; its log:" >&2
      tail -20 "$dir/dockerd.log" >&2
      return 1
    fi
    sleep 0.2
  done
  echo "dockerd did not answer within 30s; its log:" >&2
  tail -20 "$dir/dockerd.log" >&2
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

engine_stop() {
  local dir=$1 pid i
  pid=$(cat "$dir/dockerd.started-pid" 2>/dev/null) || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  # dockerd stops its containers first, which can take a while.
  for i in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null
}
