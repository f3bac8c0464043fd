"""A scripted Portainer for berth's async Edge tests.

It answers POST /api/endpoints/edge/async as Portainer does and keeps what a
Portainer keeps: the last acknowledged Docker snapshot, to which it applies
each JSON Patch with an implementation independent of berth's (the
`jsonpatch` package from PyPI) after checking the patch's base hash (FNV-1a
32 over the snapshot encoded as Go encodes it). A patch whose hash does not
match is not applied, and the answer asks for the whole snapshot.

The test drives it through /_test/ endpoints (intervals, commands to send,
refusals) and reads what it saw from GET /_test/state. It prints
"LISTEN <port>" when it listens on 127.0.0.1.
"""

import gzip
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jsonpatch

lock = threading.Lock()
state = {
    "intervals": {"ping": 0, "snapshot": 0, "command": 0},
    "endpoint_id": 1,
    "commands": [],
    "snapshot": None,
    "requests": [],
    "hash_mismatches": 0,
    "patches_applied": 0,
    "refuse": [],
    "need_full_next": False,
    "statuses": {},
    "job_logs": {},
    "config_states": {},
    "stack_logs": {},
}


def go_json(value):
    """Compact JSON as Go's encoding/json writes it: <, >, & escaped."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escaped)
    return text


def fnv1a_32(data):
    value = 0x811C9DC5
    for byte in data:
        value ^= byte
        value = (value * 0x01000193) & 0xFFFFFFFF
    return value


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        return raw

    def do_GET(self):
        if self.path == "/_test/state":
            with lock:
                self.reply(200, state)
        else:
            self.reply(404, {"message": "not found"})

    def do_POST(self):
        raw = self.body()
        if self.path.startswith("/_test/"):
            value = json.loads(raw or b"null")
            with lock:
                if self.path == "/_test/intervals":
                    state["intervals"] = value
                elif self.path == "/_test/commands":
                    state["commands"].extend(value)
                elif self.path == "/_test/refuse":
                    state["refuse"].extend(value)
                elif self.path == "/_test/need_full":
                    state["need_full_next"] = True
            self.reply(200, {})
            return
        if self.path != "/api/endpoints/edge/async":
            self.reply(404, {"message": "not found"})
            return
        gzipped = self.headers.get("Content-Encoding") == "gzip"
        plain = gzip.decompress(raw) if gzipped else raw
        request = json.loads(plain)
        with lock:
            self.answer(request, gzipped, len(raw), len(plain))

    def answer(self, request, gzipped, wire_size, plain_size):
        seen = {
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "gzipped": gzipped,
            "wire_size": wire_size,
            "plain_size": plain_size,
            "commandTimestamp": request.get("commandTimestamp"),
            "endpointId": request.get("endpointId"),
            "metaFields": request.get("metaFields"),
            "keys": list(request.keys()),
            "snapshot_keys": list((request.get("snapshot") or {}).keys()),
        }
        if state["refuse"]:
            status = state["refuse"].pop(0)
            seen["status"] = status
            state["requests"].append(seen)
            self.reply(status, {"message": "refused", "details": "test"})
            return
        need_full = False
        snapshot = request.get("snapshot")
        if snapshot is not None:
            if "docker" in snapshot:
                state["snapshot"] = snapshot["docker"]
                seen["patch_operations"] = None
            elif "dockerPatch" in snapshot:
                stored = state["snapshot"]
                expected = fnv1a_32(go_json(stored).encode()) if stored is not None else None
                seen["patch_operations"] = len(snapshot["dockerPatch"])
                seen["patch_paths"] = [op.get("path") for op in snapshot["dockerPatch"]]
                seen["patch_size"] = len(json.dumps(snapshot["dockerPatch"], separators=(",", ":")))
                if expected != snapshot.get("dockerHash"):
                    state["hash_mismatches"] += 1
                    need_full = True
                else:
                    state["snapshot"] = jsonpatch.apply_patch(stored, snapshot["dockerPatch"])
                    state["patches_applied"] += 1
            for stack, reports in (snapshot.get("stackStatusArray") or {}).items():
                state["statuses"].setdefault(stack, []).extend(reports)
            state["job_logs"].update(snapshot.get("jobsStatus") or {})
            state["config_states"].update(snapshot.get("edgeConfigStates") or {})
            for entry in snapshot.get("stackLogs") or []:
                state["stack_logs"][str(entry["edgeStackID"])] = entry["logs"]
            if state["need_full_next"]:
                state["need_full_next"] = False
                need_full = True
        commands = []
        timestamp = request.get("commandTimestamp")
        if timestamp is not None:
            commands = [c for c in state["commands"] if c["timestamp"] > timestamp]
        seen["commands_sent"] = [c["id"] for c in commands]
        seen["status"] = 200
        state["requests"].append(seen)
        intervals = state["intervals"]
        self.reply(
            200,
            {
                "pingInterval": intervals["ping"],
                "snapshotInterval": intervals["snapshot"],
                "commandInterval": intervals["command"],
                "endpointID": state["endpoint_id"],
                "commands": commands,
                "needFullSnapshot": need_full,
            },
        )


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print("LISTEN", server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
