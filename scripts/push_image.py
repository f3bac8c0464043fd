#!/usr/bin/env python3
"""Pushes berth's image for several architectures to a registry, with an
index (a Docker manifest list) naming them, without an engine: each image
is the Dockerfile's scratch image put together here, so no architecture
is emulated and nothing is pulled.

    scripts/push_image.py REF ARCH=BINARY [ARCH=BINARY ...]

REF is HOST[:PORT]/NAME[:TAG] (TAG defaults to latest); ARCH is amd64 or
arm64, BINARY that architecture's static berth (scripts/build-release).
scripts/build-image --platforms runs this.

The Dockerfile stays the one description of the image: its COPY lines
give the files (`berth` is the architecture's binary, the CA bundle is the
machine's), its ENTRYPOINT, EXPOSE, LABEL and HEALTHCHECK the
configuration. Only FROM scratch and those instructions are accepted.

Registries on loopback are spoken to over plain HTTP (as engines do), any
other over HTTPS. Credentials, when the registry asks: the docker CLI's
configuration (`docker login`: $DOCKER_CONFIG/config.json or
~/.docker/config.json, its "auth" for the host), else REGISTRY_USER and
REGISTRY_PASSWORD; HTTP Basic or a registry's token service (Bearer).
"""

import base64
import datetime
import gzip
import hashlib
import io
import ipaddress
import json
import os
import shlex
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG = "application/vnd.docker.container.image.v1+json"
LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
PLATFORMS = {"amd64": {"architecture": "amd64", "os": "linux"},
             "arm64": {"architecture": "arm64", "os": "linux", "variant": "v8"}}
# The time every file and the image say they were made: the same inputs
# make the same digests.
EPOCH = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))


def fail(message):
    sys.exit(f"push_image: {message}")


def duration(text):
    units = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000,
             "h": 3_600_000_000_000}
    for unit in sorted(units, key=len, reverse=True):
        if text.endswith(unit) and text[: -len(unit)].isdigit():
            return int(text[: -len(unit)]) * units[unit]
    fail(f"cannot read the duration {text!r}")


def dockerfile(path):
    """(files, config): the COPY sources and destinations, and the image
    configuration, from the Dockerfile's instructions."""
    text = open(path).read().replace("\\\n", " ")
    files, config = [], {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            if rest.strip() != "scratch":
                fail(f"only FROM scratch can be put together without an engine, not {rest!r}")
        elif instruction == "COPY":
            source, destination = shlex.split(rest)
            files.append((source, destination))
        elif instruction == "ENTRYPOINT":
            config["Entrypoint"] = json.loads(rest)
        elif instruction == "EXPOSE":
            config["ExposedPorts"] = {
                (port if "/" in port else f"{port}/tcp"): {} for port in rest.split()}
        elif instruction == "LABEL":
            labels = config.setdefault("Labels", {})
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                labels[key] = value
        elif instruction == "HEALTHCHECK":
            words = rest.split()
            check = {}
            while words and words[0].startswith("--"):
                flag, _, value = words.pop(0)[2:].partition("=")
                key = {"interval": "Interval", "timeout": "Timeout",
                       "start-period": "StartPeriod", "retries": "Retries"}.get(flag)
                if key is None:
                    fail(f"HEALTHCHECK --{flag} is not understood here")
                check[key] = int(value) if key == "Retries" else duration(value)
            if not words or words.pop(0) != "CMD":
                fail("HEALTHCHECK must be CMD [...]")
            check["Test"] = ["CMD", *json.loads(" ".join(words))]
            config["Healthcheck"] = check
        else:
            fail(f"the Dockerfile's {instruction} cannot be put together without an engine")
    return files, config


def layer(files, binary):
    """The image's one layer: the Dockerfile's files, with the folders
    above them, as an uncompressed tar."""
    sources = {"berth": binary, "ca-certificates.crt": CA_BUNDLE}
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        folders = set()
        for source, destination in files:
            if source not in sources:
                fail(f"COPY {source}: only berth and ca-certificates.crt are known")
            parts = destination.strip("/").split("/")
            for depth in range(1, len(parts)):
                folder = "/".join(parts[:depth])
                if folder not in folders:
                    folders.add(folder)
                    info = tarfile.TarInfo(folder + "/")
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, EPOCH
                    tar.addfile(info)
            data = open(sources[source], "rb").read()
            info = tarfile.TarInfo("/".join(parts))
            info.size, info.mtime = len(data), EPOCH
            info.mode = 0o755 if source == "berth" else 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Registry:
    def __init__(self, host, name):
        self.host, self.name = host, name
        hostname = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:host.index("]")]
        try:
            loopback = hostname == "localhost" or ipaddress.ip_address(hostname).is_loopback
        except ValueError:
            loopback = False
        self.base = f"{'http' if loopback else 'https'}://{host}"
        self.authorization = None

    def credentials(self):
        folder = os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker")
        try:
            auths = json.load(open(os.path.join(folder, "config.json"))).get("auths", {})
        except (OSError, ValueError):
            auths = {}
        for key, entry in auths.items():
            if key.split("://")[-1].rstrip("/") == self.host and entry.get("auth"):
                return base64.b64decode(entry["auth"]).decode().split(":", 1)
        user, password = os.environ.get("REGISTRY_USER"), os.environ.get("REGISTRY_PASSWORD")
        return (user, password) if user else None

    def authorize(self, challenge):
        """Answers the registry's WWW-Authenticate challenge once."""
        scheme, _, params = challenge.partition(" ")
        found = self.credentials()
        basic = base64.b64encode(":".join(found).encode()).decode() if found else None
        if scheme.lower() == "basic":
            if not basic:
                fail(f"{self.host} asks for credentials: docker login {self.host}, "
                     f"or set REGISTRY_USER and REGISTRY_PASSWORD")
            self.authorization = f"Basic {basic}"
            return
        if scheme.lower() != "bearer":
            fail(f"{self.host} asks for {scheme} authentication, which is not supported")
        fields = dict(part.split("=", 1) for part in shlex.split(params.replace(",", " ")))
        query = {"service": fields.get("service", ""),
                 "scope": f"repository:{self.name}:pull,push"}
        request = urllib.request.Request(f"{fields['realm']}?{urllib.parse.urlencode(query)}")
        if basic:
            request.add_header("Authorization", f"Basic {basic}")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                answer = json.load(response)
        except urllib.error.HTTPError as error:
            fail(f"{self.host}'s token service refused: {error.code} {error.read()[:200]!r}")
        self.authorization = f"Bearer {answer.get('token') or answer.get('access_token')}"

    def call(self, method, path, body=None, headers=None, retried=False):
        url = path if path.startswith("http") else self.base + path
        request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
        if self.authorization:
            request.add_header("Authorization", self.authorization)
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            if error.code == 401 and not retried:
                self.authorize(error.headers.get("WWW-Authenticate", ""))
                return self.call(method, path, body, headers, retried=True)
            return error.code, dict(error.headers), error.read()
        except urllib.error.URLError as error:
            fail(f"cannot reach {url}: {error.reason}")

    def blob(self, data, media_type):
        """Uploads a blob unless the registry has it; its descriptor."""
        name = digest(data)
        if self.call("HEAD", f"/v2/{self.name}/blobs/{name}")[0] != 200:
            status, headers, body = self.call("POST", f"/v2/{self.name}/blobs/uploads/", b"")
            if status != 202:
                fail(f"starting an upload: {status} {body[:300]!r}")
            location = headers["Location"]
            if not location.startswith("http"):
                location = self.base + location
            joiner = "&" if "?" in location else "?"
            status, _, body = self.call("PUT", f"{location}{joiner}digest={name}", data,
                                        {"Content-Type": "application/octet-stream"})
            if status != 201:
                fail(f"uploading {name}: {status} {body[:300]!r}")
        return {"mediaType": media_type, "size": len(data), "digest": name}

    def manifest(self, reference, data, media_type):
        status, _, body = self.call("PUT", f"/v2/{self.name}/manifests/{reference}", data,
                                    {"Content-Type": media_type})
        if status != 201:
            fail(f"putting the manifest {reference}: {status} {body[:300]!r}")
        return {"mediaType": media_type, "size": len(data), "digest": digest(data)}


def main():
    if len(sys.argv) < 3:
        fail("usage: scripts/push_image.py REF ARCH=BINARY [ARCH=BINARY ...]")
    reference = sys.argv[1]
    host, _, repository = reference.partition("/")
    if not repository:
        fail(f"{reference!r} names no registry host: HOST[:PORT]/NAME[:TAG]")
    name, _, tag = repository.partition(":")
    tag = tag or "latest"
    binaries = dict(argument.split("=", 1) for argument in sys.argv[2:])
    for arch, binary in binaries.items():
        if arch not in PLATFORMS:
            fail(f"unknown architecture {arch} (amd64, arm64)")
        if not os.path.isfile(binary):
            fail(f"no binary at {binary}: scripts/build-release {arch}")
    files, config = dockerfile(os.path.join(HERE, "Dockerfile"))
    registry = Registry(host, name)
    entries = []
    for arch, binary in binaries.items():
        tar = layer(files, binary)
        compressed = gzip.compress(tar, compresslevel=9, mtime=EPOCH)
        image = {
            **PLATFORMS[arch],
            "created": datetime.datetime.fromtimestamp(EPOCH, datetime.timezone.utc)
            .strftime("%Y-%m-%dT%H:%M:%SZ"),
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": [digest(tar)]},
            "history": [{"created_by": "scripts/push_image.py: the Dockerfile's files"}],
        }
        config_blob = json.dumps(image, sort_keys=True).encode()
        manifest = {
            "schemaVersion": 2, "mediaType": MANIFEST,
            "config": registry.blob(config_blob, CONFIG),
            "layers": [registry.blob(compressed, LAYER)],
        }
        body = json.dumps(manifest, sort_keys=True).encode()
        descriptor = registry.manifest(digest(body), body, MANIFEST)
        descriptor["platform"] = PLATFORMS[arch]
        entries.append(descriptor)
        print(f"{reference} linux/{arch}: {descriptor['digest']}, layer {len(compressed)} bytes "
              f"compressed, {len(tar)} uncompressed", file=sys.stderr)
    index = json.dumps({"schemaVersion": 2, "mediaType": LIST, "manifests": entries},
                       sort_keys=True).encode()
    pushed = registry.manifest(tag, index, LIST)
    print(f"{reference}: index {pushed['digest']} ({', '.join('linux/' + a for a in binaries)})",
          file=sys.stderr)
    print(f"{host}/{name}@{pushed['digest']}")


if __name__ == "__main__":
    main()
