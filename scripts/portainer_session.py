"""A real Portainer server driven through its own API, for the scripts that
hold berth to it (scripts/record-portainer, scripts/portainer-check).

Portainer is built from a source tree the user cloned (nothing of it is
kept in berth) and run with its API only, its data in a folder of its own,
listening on loopback inside a network namespace the calling script made,
so nothing it does can leave the machine.
"""

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

ADMIN = "admin"
PASSWORD = "berth-check-password"


def stop_process(process, timeout=20):
    """Ends a process this script started: SIGTERM, then SIGKILL after
    `timeout` seconds; nothing when it already ended."""
    if process and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def build(source, out, package, name):
    """`go build` of `package` in the source tree `source`, into `out/name`;
    rebuilt only when the tree's go.sum or the binary is missing or newer."""
    binary = os.path.join(out, name)
    stamp = os.path.join(source, "go.sum")
    if os.path.exists(binary) and os.path.getmtime(binary) >= os.path.getmtime(stamp):
        return binary
    os.makedirs(out, exist_ok=True)
    print(f"building {package} from {source} (Go, a few minutes)", flush=True)
    subprocess.run(["go", "build", "-o", binary, package], cwd=source, check=True)
    return binary


class Answer:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body) if self.body.strip() else None


def call(url, method="GET", body=None, headers=None, timeout=30):
    """One HTTP request; every status is an answer, not an exception."""
    data = None
    headers = dict(headers or {})
    if isinstance(body, (dict, list)):
        data = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    elif isinstance(body, bytes):
        data = body
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Answer(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as error:
        return Answer(error.code, dict(error.headers), error.read())


def multipart(fields):
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        )
    parts.append(f"--{boundary}--\r\n")
    return "".join(parts).encode(), f"multipart/form-data; boundary={boundary}"


class Portainer:
    """A Portainer server on loopback: `start`, then the API as the admin
    user, and the Edge endpoints as an Edge agent calls them."""

    def __init__(self, binary, folder, port=9000, tunnel_port=8000):
        self.binary = binary
        self.folder = folder
        self.port = port
        self.tunnel_port = tunnel_port
        self.url = f"http://127.0.0.1:{port}"
        self.process = None
        self.token = None

    def start(self, assets):
        data = os.path.join(self.folder, "data")
        os.makedirs(data, exist_ok=True)
        log = open(os.path.join(self.folder, "portainer.log"), "ab")
        self.process = subprocess.Popen(
            [
                self.binary,
                "--data", data,
                "--assets", assets,
                "--bind", f"127.0.0.1:{self.port}",
                "--bind-https", f"127.0.0.1:{self.port + 443}",
                "--tunnel-addr", "127.0.0.1",
                "--tunnel-port", str(self.tunnel_port),
                "--edge-compute",
                "--log-level", "DEBUG",
                "--log-mode", "NOCOLOR",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"Portainer ended at start; see {log.name}")
            try:
                if call(self.url + "/api/system/status", timeout=2).status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("Portainer did not answer within 60 s")
            time.sleep(0.2)
        init = self.api("POST", "/api/users/admin/init",
                        {"Username": ADMIN, "Password": PASSWORD}, auth=False)
        if init.status != 200:
            raise SystemExit(f"admin init: {init.status} {init.body!r}")
        login = self.api("POST", "/api/auth", {"Username": ADMIN, "Password": PASSWORD}, auth=False)
        self.token = login.json()["jwt"]

    def stop(self):
        stop_process(self.process)

    def api(self, method, path, body=None, auth=True, headers=None, timeout=30):
        headers = dict(headers or {})
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        return call(self.url + path, method, body, headers, timeout)

    def ok(self, method, path, body=None, **kwargs):
        answer = self.api(method, path, body, **kwargs)
        if answer.status >= 300:
            raise SystemExit(f"{method} {path}: {answer.status} {answer.body!r}")
        return answer.json()

    def create_edge_environment(self, name):
        body, content_type = multipart({
            "Name": name,
            "EndpointCreationType": "4",
            "URL": self.url,
            "GroupID": "1",
            "CheckinInterval": "1",
        })
        return self.ok("POST", "/api/endpoints", body,
                       headers={"Content-Type": content_type})

    def create_edge_group(self, name, endpoints):
        return self.ok("POST", "/api/edge_groups",
                       {"Name": name, "Dynamic": False, "Endpoints": endpoints})

    def set_group_endpoints(self, group, name, endpoints):
        return self.ok("PUT", f"/api/edge_groups/{group}",
                       {"Name": name, "Dynamic": False, "Endpoints": endpoints})

    def create_edge_stack(self, name, content, groups, deployment_type=0):
        """An Edge stack: compose (0) or Kubernetes manifests (1)."""
        return self.ok("POST", "/api/edge_stacks/create/string",
                       {"Name": name, "StackFileContent": content,
                        "EdgeGroups": groups, "DeploymentType": deployment_type})

    def create_edge_job(self, name, script, endpoints):
        return self.ok("POST", "/api/edge_jobs/create/string",
                       {"Name": name, "CronExpression": "* * * * *", "Recurring": True,
                        "Endpoints": endpoints, "EdgeGroups": [], "FileContent": script})

    def stack_statuses(self, stack, endpoint):
        """The status types Portainer holds for `stack` on `endpoint`, in
        the order they came."""
        answer = self.ok("GET", f"/api/edge_stacks/{stack}")
        status = (answer.get("Status") or {}).get(str(endpoint)) or {}
        return [(s.get("Type"), s.get("Error", "")) for s in status.get("Status") or []]

    # The Edge endpoints, as an Edge agent calls them.
    def agent_call(self, method, path, edge_id, body=None, extra=None):
        headers = {"X-PortainerAgent-EdgeID": edge_id, "Portainer-Agent-Platform": "1",
                   "Portainer-Agent": "2.23.0"}
        headers.update(extra or {})
        return call(self.url + path, method, body, headers)


def docker_cli():
    """Debian's docker CLI, which speaks the engine's API 1.41 (a newer one
    elsewhere on PATH may not), as scripts/engine.sh's engine_cli picks."""
    return "/usr/bin/docker" if os.access("/usr/bin/docker", os.X_OK) else shutil.which("docker")


TRIXIE_ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "target/engine-root-trixie")


def compose_plugin():
    """A script running the Debian 13 root's compose v2, or None without
    that root (scripts/engine.sh's engine_root_install makes it)."""
    root = TRIXIE_ROOT
    binary = os.path.join(root, "usr/libexec/docker/cli-plugins/docker-compose")
    if not os.path.exists(os.path.join(root, ".berth-engine-root")) or not os.path.exists(binary):
        return None
    libraries = f"{root}/lib/x86_64-linux-gnu:{root}/usr/lib/x86_64-linux-gnu"
    return (f'#!/bin/sh\nexec "{root}/lib64/ld-linux-x86-64.so.2" --library-path "{libraries}" '
            f'"{binary}" "$@"\n')


def assets_folder(folder):
    """Portainer refuses to start, and the Go agent Edge mode, without a
    `docker-compose` in the assets folder: the machine's docker and compose
    CLIs, linked in."""
    assets = os.path.join(folder, "assets")
    os.makedirs(assets, exist_ok=True)
    compose_v2 = compose_plugin()
    if compose_v2:
        # Compose v2, which the Go agent needs (`ps --format json`), from
        # the Debian 13 root scripts/engine.sh makes, run with that root's
        # own libraries.
        wrapper = os.path.join(assets, "docker-compose")
        with open(wrapper, "w") as f:
            f.write(compose_v2)
        os.chmod(wrapper, 0o755)
    for tool in ("docker", "docker-compose"):
        found = docker_cli() if tool == "docker" else shutil.which(tool)
        if compose_v2 and tool == "docker-compose":
            continue
        if found is None:
            raise SystemExit(f"no {tool} on PATH: install Debian's docker.io and docker-compose")
        link = os.path.join(assets, tool)
        if not os.path.lexists(link):
            os.symlink(found, link)
    return assets


PRIVATE_FOLDERS = ("/host", "/var/lib/docker", "/tmp/edge_stacks")


def enter_network_namespace(argv):
    """Runs the calling script again in network and mount namespaces of its
    own, with only loopback up and a /run of its own, unless it is already
    there."""
    if os.environ.get("BERTH_CHECK_NETNS") == "1":
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        # The Go agent writes its jobs' cron file and scripts under /host
        # and its Edge stacks' files under /tmp/edge_stacks, and browses
        # volumes under /var/lib/docker/volumes, whatever it is told: tmpfs
        # there keeps it off the machine.
        for path in PRIVATE_FOLDERS:
            subprocess.run(["mount", "-t", "tmpfs", "tmpfs", path], check=True)
        return
    # Mount points for the namespace's own folders, made (and removed
    # afterwards) only where the machine has none.
    made = [path for path in PRIVATE_FOLDERS if not os.path.exists(path)]
    for path in made:
        os.makedirs(path)
    env = dict(os.environ, BERTH_CHECK_NETNS="1")
    try:
        code = subprocess.call(["unshare", "--net", "--mount", "--propagation", "private",
                                "--", *argv], env=env)
    finally:
        for path in reversed(made):
            os.rmdir(path)
    sys.exit(code)


def engine_at_default_paths(engine_dir):
    """The Go agent proxies to /var/run/docker.sock and browses
    /var/lib/docker/volumes whatever DOCKER_HOST says: inside this script's
    mount namespace, a /run of its own holds that socket path, pointing at
    the private engine, and its volumes are bound there."""
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run"], check=True)
    os.symlink(os.path.join(engine_dir, "docker.sock"), "/run/docker.sock")
    volumes = os.path.join(engine_dir, "data", "volumes")
    os.makedirs("/var/lib/docker/volumes", exist_ok=True)
    subprocess.run(["mount", "--bind", volumes, "/var/lib/docker/volumes"], check=True)


def multipart_file(fields, name, filename, content):
    """A multipart body with plain fields first, then one file."""
    body, content_type = multipart(fields)
    boundary = content_type.split("boundary=", 1)[1]
    head = body[: -len(f"--{boundary}--\r\n")]
    part = (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n')
    return head + part.encode() + content + f"\r\n--{boundary}--\r\n".encode(), content_type


class WebSocket:
    """A minimal WebSocket client (RFC 6455) for Portainer's console
    endpoints: the handshake, masked frames out, whole frames in, each as
    the server sent it, so the check can see what a browser would get."""

    def __init__(self, host, port, path, headers, timeout=30):
        import base64
        import socket

        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket",
                 "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
                 "Sec-WebSocket-Version: 13"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            received += chunk
        head, _, self.buffer = received.partition(b"\r\n\r\n")
        status_line = head.split(b"\r\n", 1)[0].split(b" ")
        self.status = int(status_line[1]) if len(status_line) > 1 else 0
        self.closed = None

    def send(self, data, opcode=1):
        mask = os.urandom(4)
        length = len(data)
        if length < 126:
            header = bytes([0x80 | opcode, 0x80 | length])
        elif length < 65536:
            header = bytes([0x80 | opcode, 0x80 | 126]) + length.to_bytes(2, "big")
        else:
            header = bytes([0x80 | opcode, 0x80 | 127]) + length.to_bytes(8, "big")
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        try:
            self.sock.sendall(header + mask + masked)
        except OSError as error:
            self.closed = self.closed or f"ended ({error.strerror})"

    def _read(self, count):
        while len(self.buffer) < count:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buffer += chunk
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def frame(self, timeout):
        """(opcode, payload) of the next frame; None when none came within
        `timeout` or the connection ended (then `closed` says how)."""
        import socket

        self.sock.settimeout(timeout)
        try:
            first, second = self._read(2)
            length = second & 0x7F
            if length == 126:
                length = int.from_bytes(self._read(2), "big")
            elif length == 127:
                length = int.from_bytes(self._read(8), "big")
            mask = self._read(4) if second & 0x80 else None
            payload = self._read(length)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        except socket.timeout:
            return None
        except (EOFError, OSError):
            self.closed = self.closed or "ended without a close frame"
            return None
        opcode = first & 0x0F
        if opcode == 8:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
            self.closed = f"close frame, code {code}"
        return opcode, payload

    def read_until(self, wanted, limit):
        """The data frames' payloads until `wanted` is among them, the
        connection ends, or `limit` seconds pass: (bytes, [frames])."""
        deadline = time.monotonic() + limit
        frames = []
        while time.monotonic() < deadline and self.closed is None:
            got = self.frame(max(0.1, deadline - time.monotonic()))
            if got is None:
                continue
            if got[0] in (1, 2):
                frames.append(got)
                if wanted and wanted in b"".join(p for _, p in frames):
                    break
        return b"".join(p for _, p in frames), frames

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
