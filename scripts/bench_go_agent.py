#!/usr/bin/env python3
"""The driver of scripts/bench-go-agent: berth and the Go agent in front of
one engine, in paired rounds, each figure printed as berth / Go agent (and
the lists and `/_ping` at one connection also against the engine's own
rate, direct, and through nginx with and without TLS, in the same round).

Run by scripts/bench-go-agent, which builds both agents, starts the engine
and makes the signature pool; not meant to be run alone.

In a round each agent is started in turn (the order reversed every other
round), alone in front of the engine, and measured: start to the port
accepting, the first TLS handshake, start to the first signed 200, the
resident set idle (and its parts: the process's own memory, mapped files'
pages), `/_ping` with a fresh Portainer signature on every request at 1
and 32 connections (requests/s; at 32, the CPU per request of the agent
and of the engine from /proc, and of wrk), the container list at 1 and 32
connections (and its peak resident set at 32). Then, once per run, each agent alone and the
engine alone idle for the idle window: the agent's CPU, the engine's beyond
what it spends with no agent, and the requests the agent sent the engine
(counted by a relay in front of the engine's socket). Nothing leaves loopback; only the
processes this script started are stopped, by their own handles.
"""

import argparse
import json
import os
import re
import resource
import socket
import ssl
import statistics
import subprocess
import tempfile
import threading
import time
from collections import Counter

from portainer_session import stop_process

TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_ms(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / TICKS


def memory_kib(pid, field="VmRSS"):
    """A resident-set figure of /proc/PID/status: VmRSS, or its parts
    RssAnon (the process's own memory) and RssFile (mapped files' pages,
    its binary's mostly: clean, shared, reclaimable)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    return 0


def children_cpu_ms():
    """The CPU of this script's children that have ended (wrk's runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (usage.ru_utime + usage.ru_stime) * 1000


def load_average():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


class Signatures:
    """Fresh signatures from the pool's tail, one per start (wrk sends the
    pool's head)."""

    def __init__(self, pool, key):
        with open(pool) as f:
            self.lines = [line.strip() for line in f if line.strip()]
        self.key = key

    def take(self):
        return self.lines.pop()


class Agent:
    def __init__(self, name, binary, engine_socket, folder):
        self.name = name
        self.binary = binary
        self.engine_socket = engine_socket
        self.folder = os.path.join(folder, name)
        self.process = None
        self.port = None

    def start(self, signatures, context, engine_socket=None):
        """Starts the agent (in front of `engine_socket`, by default the
        engine's own); returns (accepting ms, first handshake ms, first
        signed 200 ms), each from the start."""
        engine_socket = engine_socket or self.engine_socket
        self.port = free_port()
        data = tempfile.mkdtemp(prefix="data.", dir=self.folder)
        env = {"PATH": os.environ.get("PATH", ""),
               "DOCKER_HOST": f"unix://{engine_socket}",
               "AGENT_HOST": "127.0.0.1", "AGENT_PORT": str(self.port),
               "AGENT_CLUSTER_PORT": str(free_port()), "DATA_PATH": data,
               "AGENT_CREDENTIALS_ADDR": "127.0.0.1:0", "LOG_LEVEL": "WARN"}
        log = open(os.path.join(self.folder, "agent.log"), "ab")
        started = time.perf_counter()
        # The Go agent proxies to /var/run/docker.sock whatever DOCKER_HOST
        # says: each agent runs in a mount namespace of its own whose /run
        # holds that path, pointing at this run's engine (sh execs the
        # agent, so the PID is the agent's).
        command = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                   'mount -t tmpfs tmpfs /run && ln -s "$0" /run/docker.sock && exec "$1"',
                   engine_socket, self.binary]
        self.process = subprocess.Popen(command, env=env, stdout=log,
                                        stderr=subprocess.STDOUT, cwd=self.folder)
        deadline = started + 30
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                break
            except OSError:
                if time.perf_counter() > deadline or self.process.poll() is not None:
                    raise SystemExit(f"{self.name} did not listen (see {self.folder}/agent.log)")
                time.sleep(0.0005)
        accepting = time.perf_counter()
        tls = context.wrap_socket(sock, server_hostname="localhost")
        handshake = time.perf_counter()
        first_200 = None
        while first_200 is None:
            if signed_ping(tls, signatures) == 200:
                first_200 = time.perf_counter()
                break
            tls.close()
            if time.perf_counter() > deadline:
                raise SystemExit(f"{self.name} never answered a signed /_ping with 200")
            time.sleep(0.001)
            tls = context.wrap_socket(socket.create_connection(("127.0.0.1", self.port), timeout=5),
                                      server_hostname="localhost")
        tls.close()
        return ((accepting - started) * 1000, (handshake - accepting) * 1000,
                (first_200 - started) * 1000)

    def stop(self):
        stop_process(self.process)
        self.process = None

    @property
    def pid(self):
        return self.process.pid

    def url(self, path):
        return f"https://127.0.0.1:{self.port}{path}"


def signed_ping(tls, signatures):
    request = ("GET /_ping HTTP/1.1\r\nHost: localhost\r\n"
               f"X-PortainerAgent-PublicKey: {signatures.key}\r\n"
               f"X-PortainerAgent-Signature: {signatures.take()}\r\n"
               "Connection: close\r\n\r\n")
    tls.sendall(request.encode())
    answer = b""
    while b"\r\n" not in answer:
        chunk = tls.recv(4096)
        if not chunk:
            break
        answer += chunk
    match = re.match(rb"HTTP/1\.[01] (\d{3})", answer)
    return int(match.group(1)) if match else 0


def wrk(url, connections, seconds, script, during=None):
    """Requests/s and requests of one wrk run; `during` is called every
    100 ms while it runs."""
    threads = 1 if connections < 2 else 2
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s",
               "-s", script, url]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if during:
        while process.poll() is None:
            during()
            time.sleep(0.1)
    out, _ = process.communicate()
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if not rate or not total:
        raise SystemExit(f"wrk against {url} gave no figure:\n{out}")
    if errors:
        raise SystemExit(f"wrk against {url}: {errors.group(1)} answers not 2xx:\n{out}")
    return float(rate.group(1)), int(total.group(1))


def measure_agent(agent, args, signatures, context):
    figures = {}
    figures["start_accepting_ms"], figures["first_handshake_ms"], figures["first_signed_200_ms"] = \
        agent.start(signatures, context)
    # The idle resident set once start-up's work has settled.
    time.sleep(2)
    for key, field in (("rss_idle_kib", "VmRSS"), ("rss_anon_idle_kib", "RssAnon"),
                       ("rss_file_idle_kib", "RssFile")):
        figures[key] = memory_kib(agent.pid, field)
    for connections in (1, 32):
        before = cpu_ms(agent.pid)
        engine_before = cpu_ms(args.dockerd_pid)
        wrk_before = children_cpu_ms()
        rate, total = wrk(agent.url("/_ping"), connections, args.seconds, args.fresh_lua)
        figures[f"ping_{connections}_rps"] = rate
        if connections == 32:
            # Two cores, shared by the agent, the engine and wrk: the rate
            # follows the three's CPU per request together.
            figures["ping_cpu_us_per_request"] = (cpu_ms(agent.pid) - before) * 1000 / total
            figures["ping_engine_cpu_us_per_request"] = \
                (cpu_ms(args.dockerd_pid) - engine_before) * 1000 / total
            figures["ping_wrk_cpu_us_per_request"] = (children_cpu_ms() - wrk_before) * 1000 / total
    peak = [0]

    def sample():
        peak[0] = max(peak[0], memory_kib(agent.pid))

    for connections in (1, 32):
        rate, _ = wrk(agent.url("/containers/json?all=1"), connections, args.seconds,
                      args.fresh_lua, sample if connections == 32 else None)
        figures[f"list_{connections}_rps"] = rate
    figures["rss_list_peak_kib"] = peak[0]
    agent.stop()
    return figures


def measure_direct(args):
    """The list (and `/_ping` at one connection) from the engine itself,
    and through nginx in front of its socket (a proxy that checks
    nothing): without TLS the second hop's cost alone, with TLS what any
    TLS proxy pays."""
    figures = {}
    for name, base in (("direct", f"http://127.0.0.1:{args.engine_port}"),
                       ("nginx_plain", f"http://127.0.0.1:{args.nginx_plain_port}"),
                       ("nginx_tls", f"https://127.0.0.1:{args.nginx_tls_port}")):
        figures[name] = {f"list_{c}_rps": wrk(f"{base}/containers/json?all=1", c, args.seconds,
                                              args.fresh_lua)[0] for c in (1, 32)}
        figures[name]["ping_1_rps"] = wrk(f"{base}/_ping", 1, args.seconds, args.fresh_lua)[0]
    return figures


REQUEST_LINE = re.compile(rb"(GET|HEAD|POST|PUT|DELETE) (/[^ ?]*)[^ ]* HTTP/1\.[01]\r\n")


class CountingRelay:
    """A socket in front of the engine's that counts the requests passing
    through it (method and path): what an idle agent asks of the engine,
    named, where the engine's CPU only says how much. Bytes are passed
    as they come."""

    def __init__(self, path, engine_socket):
        self.requests = Counter()
        self.engine_socket = engine_socket
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(path)
        self.listener.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            engine = socket.socket(socket.AF_UNIX)
            engine.connect(self.engine_socket)
            threading.Thread(target=self._pass, args=(client, engine, True), daemon=True).start()
            threading.Thread(target=self._pass, args=(engine, client, False), daemon=True).start()

    def _pass(self, source, sink, count):
        try:
            while chunk := source.recv(65536):
                if count:
                    # Idle requests are small: each arrives in one piece.
                    for method, path in REQUEST_LINE.findall(chunk):
                        self.requests[f"{method.decode()} {path.decode()}"] += 1
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.listener.close()


def idle_window(args, agent, signatures, context):
    """The agent's and the engine's CPU over the idle window (ms a minute),
    and the requests the agent sent the engine in it; no agent when
    `agent` is None."""
    relay = None
    if agent:
        relay_path = os.path.join(args.folder, f"idle-{agent.name}.sock")
        relay = CountingRelay(relay_path, agent.engine_socket)
        agent.start(signatures, context, engine_socket=relay_path)
        time.sleep(2)
    engine_before = cpu_ms(args.dockerd_pid)
    agent_before = cpu_ms(agent.pid) if agent else 0
    time.sleep(args.idle)
    minutes = args.idle / 60
    figures = {"engine_ms_per_min": (cpu_ms(args.dockerd_pid) - engine_before) / minutes}
    if agent:
        figures["agent_ms_per_min"] = (cpu_ms(agent.pid) - agent_before) / minutes
        figures["engine_requests"] = dict(relay.requests)
        agent.stop()
        relay.close()
    return figures


# (figure, label, whether more is better)
ROWS = [
    ("ping_1_rps", "`/_ping`, fresh signatures, 1 connection: requests/s", True),
    ("ping_32_rps", "`/_ping`, fresh signatures, 32 connections: requests/s", True),
    ("ping_cpu_us_per_request", "agent CPU per `/_ping` (32 connections), µs", False),
    ("ping_engine_cpu_us_per_request", "the engine's CPU per `/_ping` (32 connections), µs", False),
    ("ping_wrk_cpu_us_per_request", "wrk's CPU per `/_ping` (32 connections), µs", False),
    ("list_1_rps", "container list, 1 connection: requests/s", True),
    ("list_32_rps", "container list, 32 connections: requests/s", True),
    ("rss_idle_kib", "resident set idle, KiB", False),
    ("rss_anon_idle_kib", "of which the process's own (RssAnon), KiB", False),
    ("rss_file_idle_kib", "of which mapped files' pages (RssFile), KiB", False),
    ("rss_list_peak_kib", "resident set, peak of the 32-connection list, KiB", False),
    ("start_accepting_ms", "start to the port accepting, ms", False),
    ("first_handshake_ms", "the first TLS handshake, ms", False),
    ("first_signed_200_ms", "start to the first signed 200, ms", False),
]


def spread(values):
    return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--berth", required=True)
    parser.add_argument("--go-agent", required=True)
    parser.add_argument("--engine-socket", required=True)
    parser.add_argument("--engine-port", type=int, required=True)
    parser.add_argument("--dockerd-pid", type=int, required=True)
    parser.add_argument("--nginx-tls-port", type=int, required=True)
    parser.add_argument("--nginx-plain-port", type=int, required=True)
    parser.add_argument("--pool", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--fresh-lua", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--idle", type=int, default=60)
    parser.add_argument("--folder", required=True)
    parser.add_argument("--json", required=True)
    args = parser.parse_args()

    signatures = Signatures(args.pool, args.key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    agents = {}
    for name, binary in (("berth", args.berth), ("go", args.go_agent)):
        os.makedirs(os.path.join(args.folder, name), exist_ok=True)
        agents[name] = Agent(name, binary, args.engine_socket, args.folder)

    rounds = []
    try:
        for number in range(args.rounds):
            order = ["berth", "go"] if number % 2 == 0 else ["go", "berth"]
            result = {"load_average": load_average(), "order": order}
            for name in order:
                result[name] = measure_agent(agents[name], args, signatures, context)
            result.update(measure_direct(args))
            rounds.append(result)
            print(f"round {number + 1}/{args.rounds} done (load {result['load_average']:.2f})",
                  flush=True)
        idle = {}
        for name in (["berth", "go", None] if args.rounds % 2 == 0 else ["go", "berth", None]):
            idle[name or "none"] = idle_window(args, agents[name] if name else None,
                                               signatures, context)
    finally:
        for agent in agents.values():
            agent.stop()

    with open(args.json, "w") as f:
        json.dump({"rounds": rounds, "idle": idle}, f, indent=1)

    print()
    print(f"{args.rounds} rounds, {args.seconds} s per wrk run; load average at each round's start: "
          + ", ".join(f"{r['load_average']:.2f}" for r in rounds))
    print()
    print("| figure | berth, median | Go agent, median | berth / Go, median of rounds (min–max) |")
    print("|---|---|---|---|")
    for key, label, _ in ROWS:
        berth = [r["berth"][key] for r in rounds]
        go = [r["go"][key] for r in rounds]
        ratios = [b / g for b, g in zip(berth, go) if g]
        print(f"| {label} | {statistics.median(berth):.1f} | {statistics.median(go):.1f} | "
              f"{spread(ratios)} |")
    print()
    # With every core busy, requests/s is the cores over the CPU of a
    # request, the agent's, the engine's and wrk's together.
    whole = {name: statistics.median(r[name]["ping_cpu_us_per_request"]
                                     + r[name]["ping_engine_cpu_us_per_request"]
                                     + r[name]["ping_wrk_cpu_us_per_request"] for r in rounds)
             for name in ("berth", "go")}
    shared = statistics.median(r["berth"]["ping_engine_cpu_us_per_request"]
                               + r["berth"]["ping_wrk_cpu_us_per_request"] for r in rounds)
    print(f"`/_ping` at 32 connections, CPU of a request, agent + engine + wrk: berth "
          f"{whole['berth']:.1f} µs, Go agent {whole['go']:.1f} µs: ratio bound "
          f"{whole['go'] / whole['berth']:.2f}; 2.5× the Go agent would need berth's own CPU "
          f"at most {whole['go'] / 2.5 - shared:.1f} µs a request")
    print()
    print("| `/_ping` at 1 connection against the engine direct | berth / direct | Go / direct "
          "| nginx, TLS / direct | nginx, no TLS / direct |")
    print("|---|---|---|---|---|")
    print("| fresh signatures (nginx checks none) | " + " | ".join(
        spread([r[name]["ping_1_rps"] / r["direct"]["ping_1_rps"] for r in rounds])
        for name in ("berth", "go", "nginx_tls", "nginx_plain")) + " |")
    print()
    print("| the list against the engine direct | berth / direct | Go / direct "
          "| nginx, TLS / direct | nginx, no TLS / direct |")
    print("|---|---|---|---|---|")
    for connections in (1, 32):
        key = f"list_{connections}_rps"
        print(f"| {connections} connection{'s' if connections > 1 else ''} | " + " | ".join(
            spread([r[name][key] / r["direct"][key] for r in rounds])
            for name in ("berth", "go", "nginx_tls", "nginx_plain")) + " |")
    print()
    engine_alone = idle["none"]["engine_ms_per_min"]
    print(f"Idle, {args.idle} s each, CPU ms a minute (engine alone: {engine_alone:.1f}):")
    print()
    print("| agent | agent CPU | engine CPU | engine CPU beyond the engine alone |")
    print("|---|---|---|---|")
    for name in ("berth", "go"):
        figures = idle[name]
        print(f"| {name} | {figures['agent_ms_per_min']:.1f} | {figures['engine_ms_per_min']:.1f} | "
              f"{figures['engine_ms_per_min'] - engine_alone:+.1f} |")
    print()
    print(f"Requests each agent sent the engine from its start through the idle window "
          f"({args.idle} s; a stream held open counts once):")
    print()
    for name in ("berth", "go"):
        asked = idle[name]["engine_requests"]
        print(f"- {name}: " + (", ".join(f"{request} ×{count}" for request, count
                                          in sorted(asked.items())) or "none"))


if __name__ == "__main__":
    main()
