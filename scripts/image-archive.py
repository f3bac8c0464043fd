#!/usr/bin/env python3
"""Writes a one-layer image of a folder as a docker-archive tar (the
format `docker save` writes and `ctr images import` reads), for engines
that cannot pull: the Kubernetes tests' busybox and sandbox images.

    scripts/image-archive.py ROOTFS NAME:TAG OUTPUT.tar [CMD...]
"""

import hashlib
import io
import json
import platform
import sys
import tarfile


def main():
    rootfs, reference, output, command = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.add(rootfs, arcname=".")
    layer_bytes = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps({
        "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(),
                                                                   platform.machine()),
        "os": "linux",
        "config": {"Cmd": command or ["/bin/sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "scripts/image-archive.py"}],
    }, sort_keys=True).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [reference],
                            "Layers": ["layer.tar"]}]).encode()
    with tarfile.open(output, mode="w") as out:
        for name, data in (("layer.tar", layer_bytes), (config_name, config),
                           ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))


if __name__ == "__main__":
    main()
