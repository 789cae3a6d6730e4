#!/usr/bin/env python3
"""Runs the kubesocks benchmark: every workload against every mode, on the
local test cluster, and prints the figures as Markdown tables and JSON.

Called by tests/bench/run, which installs, builds and starts what this needs
(the cluster, the release binaries, kubectl); see docs/performance.md's
section. Standard library only.

Modes: direct (the client talks to nginx on loopback), kubectl-ws and
kubectl-spdy (`kubectl port-forward svc/...`), kube-rs-bare (the
`bare_forward` example: one kube-rs v4 port-forward per connection, nothing
else: the old data path's baseline), kubesocks (`proxy-out`, socks5h with
the Service's DNS name, `--portforward-protocol auto`) and kubesocks-tunnel,
kubesocks-spdy, kubesocks-websocket (the same, each protocol forced). Every
mode drives the same client (the `bench_client` example).

Two more workloads after the modes:
- remote: the API server 20 ms away (tests/bench/delay_relay.py in front of
  it, 10 ms each way): fresh-connection latency for --remote-modes;
- held: --held connections open at once through one proxy of each of
  --held-modes (kubesocks auto, and kubectl-ws for reference), half
  streaming a download nginx sends at a trickle, half idle in their request
  head (tests/bench/held.py), the proxy started with its soft RLIMIT_NOFILE
  at --held-nofile; if kubesocks keeps that limit and it is not enough,
  once more with the soft limit raised to the hard one.

Exit status 0 when every mode ran, whatever its figures; 1 when a mode could
not run (the reason is printed and kept in the JSON).
"""

import argparse
import base64
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

# kubesocks modes and the --portforward-protocol each forces. kubesocks-watched
# is kubesocks with its connections list read every second (`--stats 1`, what
# a tray window subscribed costs the engine); kubesocks-before is another
# build of kubesocks (--kubesocks-before, e.g. one without a change), for a
# before/after in one run.
KUBESOCKS_MODES = {"kubesocks": "auto", "kubesocks-tunnel": "tunnel", "kubesocks-spdy": "spdy",
                   "kubesocks-websocket": "websocket", "kubesocks-watched": "auto", "kubesocks-before": "auto"}
MODES = ["direct", "kubectl-ws", "kubectl-spdy", "kube-rs-bare", "kubesocks", "kubesocks-tunnel", "kubesocks-spdy",
         "kubesocks-websocket", "kubesocks-watched"]
ALL_MODES = [*MODES, "kubesocks-before"]
REMOTE_MODES = ["kubectl-ws", "kubectl-spdy", "kube-rs-bare", "kubesocks"]
REFERENCES = ["kubectl-ws", "direct"]
SERVICE = "bench"
BACKEND_PORT = 8080
SERVICE_PORT = 80
SMALL_BYTES = 100
MIB = 1024 * 1024
HERE = os.path.dirname(os.path.abspath(__file__))
# /hold is sent at full speed up to here, then at --held-rate-kib.
HOLD_BURST_KIB = 16


def hold_seconds(args):
    """How long a download of /hold takes."""
    return max(0, args.held_kib - HOLD_BURST_KIB) / args.held_rate_kib
GIB = 1024 * MIB
# Resources a port-forwarding proxy reads or opens, for the API cost.
API_RESOURCES = {"pods", "services", "endpointslices", "endpoints", "namespaces"}


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


class ModeFailed(Exception):
    """A mode could not run; the message says why."""


class Bench:
    def __init__(self, args):
        self.args = args
        self.ns = args.namespace
        self.kubeconfig = args.kubeconfig
        self.env = read_env(os.path.join(os.path.dirname(args.kubeconfig), "cluster.env"))
        self.tmp = tempfile.mkdtemp(prefix="kubesocks-bench-")
        self.backends = [f"{args.net}.1", f"{args.net}.2"]
        self.pods = [
            ("bench-0", self.env.get("KUBESOCKS_NODE_SPDY", "node-spdy"), self.backends[0]),
            ("bench-1", self.env.get("KUBESOCKS_NODE_WS", "node-ws"), self.backends[1]),
        ]
        self.nginx = None
        # The proxies' own identity: a ServiceAccount whose FlowSchema counts its requests.
        self.identity = f"{self.ns}-proxy"
        self.proxy_kubeconfig = os.path.join(self.tmp, "proxy.kubeconfig")
        self.kubectl_cache = os.path.join(self.tmp, "kubectl-cache")
        self.stub_log = os.path.join(self.env["KUBESOCKS_LOG_DIR"], "kubelet-stub.log")
        self.clk_tck = os.sysconf("SC_CLK_TCK")

    # ------------------------------------------------------------- helpers

    def kubectl(self, *args, stdin=None, check=True, timeout=120, as_proxy=False):
        cmd = [self.args.kubectl, *([] if as_proxy else ["--kubeconfig", self.kubeconfig]), *args]
        p = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise ModeFailed(f"`kubectl {' '.join(args)}` failed: {p.stderr.strip()}")
        return p.stdout

    def cluster_pid(self, name):
        try:
            with open(os.path.join(self.env["KUBESOCKS_PID_DIR"], f"{name}.pid")) as f:
                pid = int(f.read().strip())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def cpu_seconds(self, pid):
        """utime + stime of a process (all its threads), or None if it is gone."""
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / self.clk_tck

    def nginx_pids(self):
        if not self.nginx:
            return []
        pids = [self.nginx.pid]
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        if int(f.read().rsplit(")", 1)[1].split()[1]) == self.nginx.pid:
                            pids.append(int(entry))
                except (OSError, ValueError, IndexError):
                    pass
        return pids

    def cpu_snapshot(self, proxy):
        """CPU seconds so far of every process on the path of a request."""
        snap = {}
        if proxy:
            snap["proxy"] = self.cpu_seconds(proxy.pid)
        for name, key in (("kube-apiserver", "apiserver"), ("kubelet-stub", "kubelet")):
            pid = self.cluster_pid(name)
            snap[key] = self.cpu_seconds(pid) if pid else None
        snap["nginx"] = sum(self.cpu_seconds(p) or 0 for p in self.nginx_pids())
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        snap["client"] = usage.ru_utime + usage.ru_stime
        return snap

    def client(self, target, *command, timeout=900):
        """Runs bench_client; returns its JSON. Its CPU shows in RUSAGE_CHILDREN."""
        cmd = [self.args.client, *target, *command]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        try:
            return json.loads(p.stdout)
        except ValueError:
            raise ModeFailed(f"bench_client printed no result (exit {p.returncode}): {p.stderr.strip()}")

    def api_counts(self):
        """From one scrape of the API server's /metrics: the requests of the proxies'
        identity (its FlowSchema's dispatched requests), and apiserver_request_total
        of all clients summed by (resource, subresource, verb) for API_RESOURCES."""
        text = self.kubectl("get", "--raw", "/metrics")
        counts, own = {}, 0.0
        for line in text.splitlines():
            if line.startswith("apiserver_flowcontrol_dispatched_requests_total{"):
                if f'flow_schema="{self.identity}"' in line:
                    own += float(line.rsplit(" ", 1)[1])
                continue
            if not line.startswith("apiserver_request_total{"):
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
            if labels.get("resource") not in API_RESOURCES:
                continue
            key = (labels["resource"], labels.get("subresource", ""), labels.get("verb", ""))
            counts[key] = counts.get(key, 0) + float(line.rsplit(" ", 1)[1])
        return {"own": own, "cluster": counts}

    def stub_log_offset(self):
        try:
            return os.path.getsize(self.stub_log)
        except OSError:
            return 0

    def stub_sessions(self, offset):
        """Port-forward sessions and streams the stub kubelet served for our namespace since `offset`."""
        sessions, streams = {}, 0
        session_re = re.compile(rf"port-forward #\d+ {re.escape(self.ns)}/(\S+) via (\w+) \(node (\S+),")
        stream_re = re.compile(rf"port-forward #\d+\.\d+ {re.escape(self.ns)}/\S+ port \d+ via \w+: connected to")
        try:
            with open(self.stub_log, "rb") as f:
                f.seek(offset)
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return {}, 0
        for line in text.splitlines():
            m = session_re.search(line)
            if m:
                key = f"{m.group(1)} via {m.group(2)} ({m.group(3)})"
                sessions[key] = sessions.get(key, 0) + 1
            elif stream_re.search(line):
                streams += 1
        return sessions, streams

    # --------------------------------------------------------------- setup

    def start_nginx(self):
        www = os.path.join(self.tmp, "www")
        os.makedirs(www)
        os.makedirs(os.path.join(self.tmp, "temp"))
        with open(os.path.join(www, "small"), "wb") as f:
            f.write(b"kubesocks bench: the body of GET /small.\n".rjust(SMALL_BYTES, b"."))
        # Random bytes: nothing on the way can compress them.
        with open(os.path.join(www, "big"), "wb") as f:
            for _ in range(self.args.bulk_mib):
                f.write(os.urandom(MIB))
        with open(os.path.join(www, "hold"), "wb") as f:
            f.write(os.urandom(self.args.held_kib * 1024))
        user = ""
        if os.geteuid() == 0:
            # nginx started by root drops its workers to an unprivileged user; they must read www.
            os.chmod(self.tmp, 0o755)
            group = "nogroup" if group_exists("nogroup") else "nobody"
            user = f"user nobody {group};"
        temp = os.path.join(self.tmp, "temp")
        listen = "\n".join(f"        listen {ip}:{BACKEND_PORT};" for ip in self.backends)
        conf = os.path.join(self.tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""# kubesocks bench: the pods' servers, one per backend IP.
daemon off;
{user}
worker_processes auto;
# The held workload keeps a connection per client open: more than the usual 1024.
worker_rlimit_nofile 16384;
pid {self.tmp}/nginx.pid;
error_log {self.tmp}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    # The held workload's idle connections wait in their request head.
    client_header_timeout 300s;
    send_timeout 300s;
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    server {{
{listen}
        root {www};
        # The held workload's streaming connections: a download still running while all are held.
        location = /hold {{
            limit_rate_after {HOLD_BURST_KIB}k;
            limit_rate {self.args.held_rate_kib}k;
        }}
    }}
}}
""")
        err = os.path.join(self.tmp, "nginx-error.log")
        self.nginx = subprocess.Popen(
            [self.args.nginx, "-p", self.tmp, "-c", conf, "-e", err],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.tmp, "nginx.out"), "w"),
        )
        deadline = time.time() + 15
        while True:
            if self.nginx.poll() is not None:
                raise ModeFailed(
                    f"nginx exited ({self.nginx.returncode}): {tail(err)} {tail(os.path.join(self.tmp, 'nginx.out'))}"
                    f" (backend IPs {', '.join(self.backends)}; another benchmark running?"
                    " KUBESOCKS_BENCH_NET picks others)"
                )
            if all(can_connect(ip, BACKEND_PORT) for ip in self.backends):
                break
            if time.time() > deadline:
                raise ModeFailed(f"nginx does not accept on {self.backends} after 15 s: {tail(err)}")
            time.sleep(0.05)
        where = ", ".join(f"{ip}:{BACKEND_PORT}" for ip in self.backends)
        log(f"nginx serving /small ({SMALL_BYTES} B), /big ({self.args.bulk_mib} MiB) and "
            f"/hold ({self.args.held_kib} KiB at {self.args.held_rate_kib} KiB/s after {HOLD_BURST_KIB} KiB, "
            f"{hold_seconds(self.args):.0f} s) on {where}")

    def stop_nginx(self):
        if self.nginx and self.nginx.poll() is None:
            self.nginx.terminate()
            try:
                self.nginx.wait(10)
            except subprocess.TimeoutExpired:
                self.nginx.kill()
                self.nginx.wait()

    def create_workload(self):
        if self.kubectl("get", "namespace", self.ns, "--ignore-not-found", "-o", "name").strip():
            log(f"namespace {self.ns} is left over from an earlier run: deleting it")
            self.kubectl("delete", "namespace", self.ns, "--wait=true", "--timeout=120s")
        self.kubectl("create", "namespace", self.ns)
        # Pods need the namespace's default ServiceAccount, made by its controller.
        wait_until(f"ServiceAccount default in {self.ns}", lambda: self.kubectl(
            "-n", self.ns, "get", "serviceaccount", "default", "--ignore-not-found", "-o", "name").strip())
        items = [{
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": SERVICE, "namespace": self.ns},
            "spec": {"selector": {"app": SERVICE},
                     "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http"}]},
        }]
        for name, node, backend in self.pods:
            items.append({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": self.ns, "labels": {"app": SERVICE},
                             "annotations": {"kubesocks.test/backend": backend}},
                "spec": {"nodeName": node, "containers": [{
                    "name": "nginx", "image": "nginx",
                    "ports": [{"name": "http", "containerPort": BACKEND_PORT}]}]},
            })
        self.kubectl("create", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))

        def ready_endpoints():
            out = json.loads(self.kubectl("-n", self.ns, "get", "endpointslices", "-l",
                                          f"kubernetes.io/service-name={SERVICE}", "-o", "json"))
            ready = [e for s in out["items"] for e in s.get("endpoints") or []
                     if (e.get("conditions") or {}).get("ready")]
            return len(ready) == len(self.pods)

        wait_until(f"{len(self.pods)} ready endpoints of Service {self.ns}/{SERVICE}", ready_endpoints)
        log(f"Service {self.ns}/{SERVICE} :{SERVICE_PORT} -> " + ", ".join(
            f"{name} ({node}, backend {b}:{BACKEND_PORT})" for name, node, b in self.pods))
        self.create_identity()

    def create_identity(self):
        """The proxies run as ServiceAccount `proxy` with just the rights they need, so that
        a FlowSchema of its own counts exactly their requests on the shared cluster.
        Port-forwards are long-running and not counted by flow control: the stub
        kubelet's log counts those."""
        name = self.identity
        sa = {"kind": "ServiceAccount", "name": "proxy", "namespace": self.ns}
        objects = [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "proxy", "namespace": self.ns}},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
             "rules": [
                 {"apiGroups": [""], "resources": ["services", "endpoints", "pods", "namespaces"],
                  "verbs": ["get", "list", "watch"]},
                 {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                  "verbs": ["get", "list", "watch"]},
                 {"apiGroups": [""], "resources": ["pods/portforward"], "verbs": ["create", "get"]},
             ]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
             "subjects": [sa]},
            {"apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema", "metadata": {"name": name},
             "spec": {
                 # Before the catch-all service-accounts schema (9000); exempt like the admin, so not queued.
                 "matchingPrecedence": 1000,
                 "priorityLevelConfiguration": {"name": "exempt"},
                 "rules": [{
                     "subjects": [{"kind": "ServiceAccount",
                                   "serviceAccount": {"name": "proxy", "namespace": self.ns}}],
                     "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
                                        "clusterScope": True, "namespaces": ["*"]}],
                     "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                 }],
             }},
        ]
        self.kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
        self.token = self.kubectl("-n", self.ns, "create", "token", "proxy", "--duration", "6h").strip()
        self.write_kubeconfig(self.proxy_kubeconfig, self.env["KUBESOCKS_APISERVER"])

        # Until the FlowSchema is in force; also fills kubectl's discovery cache, as a user's would be.
        def counted():
            self.kubectl("--kubeconfig", self.proxy_kubeconfig, "--cache-dir", self.kubectl_cache,
                         "get", "services", "-o", "name", as_proxy=True)
            return self.api_counts()["own"] > 0

        wait_until(f"FlowSchema {name} counting the proxies' requests", counted)
        log(f"proxies run as ServiceAccount {self.ns}/proxy; FlowSchema {name} counts their API requests")

    def write_kubeconfig(self, path, server):
        """The proxies' kubeconfig: their ServiceAccount's token, the cluster's CA, `server`."""
        with open(self.env["KUBESOCKS_CA_FILE"], "rb") as f:
            ca = base64.b64encode(f.read()).decode()
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "bench",
            "clusters": [{"name": "bench", "cluster": {"server": server, "certificate-authority-data": ca}}],
            "users": [{"name": "proxy", "user": {"token": self.token}}],
            "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "proxy", "namespace": self.ns}}],
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(config, f)

    def cleanup(self, keep_logs):
        """Removes the temp dir; on failure keeps the logs there (not the big file)."""
        if keep_logs:
            shutil.rmtree(os.path.join(self.tmp, "www"), ignore_errors=True)
            log(f"logs of the proxies and nginx kept in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def delete_workload(self):
        for kind in ("flowschema", "clusterrolebinding", "clusterrole"):
            self.kubectl("delete", kind, self.identity, "--ignore-not-found", check=False)
        self.kubectl("delete", "namespace", self.ns, "--ignore-not-found", "--wait=true", "--timeout=60s",
                     check=False)

    # ---------------------------------------------------------------- modes

    def start_proxy(self, mode, port, logfile, kubeconfig=None, nofile=None):
        """Starts a mode's proxy on `port`, talking to the API server through
        `kubeconfig` (the proxies' own by default), with its soft RLIMIT_NOFILE
        at `nofile` if given."""
        kubeconfig = kubeconfig or self.proxy_kubeconfig
        env = dict(os.environ)
        if mode.startswith("kubectl-"):
            env["KUBECTL_PORT_FORWARD_WEBSOCKETS"] = "true" if mode == "kubectl-ws" else "false"
            cmd = [self.args.kubectl, "--kubeconfig", kubeconfig, "--cache-dir", self.kubectl_cache,
                   "-n", self.ns, "port-forward",
                   "--address", "127.0.0.1", f"svc/{SERVICE}", f"{port}:{SERVICE_PORT}"]
        elif mode == "kube-rs-bare":
            env["KUBECONFIG"] = kubeconfig
            cmd = [self.args.bare, "--listen", f"127.0.0.1:{port}", "--namespace", self.ns,
                   "--pod", self.pods[0][0], "--port", str(BACKEND_PORT)]
        elif mode in KUBESOCKS_MODES:
            env["KUBESOCKS_STATE_DIR"] = os.path.join(self.tmp, "kubesocks-state")
            binary = self.args.kubesocks_before if mode == "kubesocks-before" else self.args.kubesocks
            cmd = [binary, "--kubeconfig", kubeconfig, "proxy-out",
                   "--listen-socks", f"127.0.0.1:{port}", "--portforward-protocol", KUBESOCKS_MODES[mode]]
            if mode == "kubesocks-watched":
                cmd += ["--stats", "1"]
        else:
            raise AssertionError(mode)

        def limit():
            if nofile is not None:
                hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
                resource.setrlimit(resource.RLIMIT_NOFILE, (min(nofile, hard), hard))
        return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=logfile, stderr=subprocess.STDOUT,
                                preexec_fn=limit)

    def target(self, mode, port):
        if mode == "direct":
            return ["--connect", f"{self.backends[0]}:{BACKEND_PORT}"]
        if mode in KUBESOCKS_MODES:
            return ["--connect", f"127.0.0.1:{port}", "--socks", self.socks_name]
        return ["--connect", f"127.0.0.1:{port}"]

    @property
    def socks_name(self):
        return f"{SERVICE}.{self.ns}.svc.cluster.local:{SERVICE_PORT}"

    def spawn(self, mode, log_path, logfile, kubeconfig=None, nofile=None):
        """Starts `mode`'s proxy and waits for its first answer; returns
        (proxy or None, target, {"startup_ms", "startup_attempts", "command"})."""
        port = free_port()
        target = self.target(mode, port)
        info = {}
        proxy = None
        started_ns = time.time_ns()
        if mode != "direct":
            proxy = self.start_proxy(mode, port, logfile, kubeconfig, nofile)
            info["command"] = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(proxy.args))
        try:
            info["startup_ms"], info["startup_attempts"] = self.wait_first_success(proxy, target, started_ns,
                                                                                   log_path)
        except BaseException:
            if proxy:
                stop(proxy, signal.SIGKILL)
            raise
        if mode == "direct":
            info["startup_ms"] = None  # nothing to start
        return proxy, target, info

    def stop_proxy(self, mode, proxy):
        if proxy:
            stop(proxy, signal.SIGINT if mode in KUBESOCKS_MODES else signal.SIGTERM)

    def wait_first_success(self, proxy, target, started_ns, log_path):
        """Start-up: from spawning the proxy to the first complete proxied answer."""
        waiter = subprocess.Popen([self.args.client, *target, "wait", "--within", str(self.args.startup_timeout)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while waiter.poll() is None:
            if proxy and proxy.poll() is not None:
                waiter.kill()
                waiter.wait()
                raise ModeFailed(f"the proxy exited ({proxy.returncode}) before serving a request; "
                                 f"its output:\n{tail(log_path, 20)}")
            time.sleep(0.02)
        out, err = waiter.communicate()
        try:
            result = json.loads(out)
        except ValueError:
            raise ModeFailed(f"bench_client wait printed no result: {err.strip()}")
        if "ok_unix_ns" not in result:
            raise ModeFailed(f"no request succeeded within {self.args.startup_timeout} s; last error: "
                             f"{result.get('last_error')}; proxy output:\n{tail(log_path, 20)}")
        return (result["ok_unix_ns"] - started_ns) / 1e6, result["attempts"]

    def run_mode(self, mode):
        res = {"mode": mode}
        proxy = None
        log_path = os.path.join(self.tmp, f"{mode}.log")
        with open(log_path, "w") as logfile:
            try:
                api_spawn, stub_spawn = self.api_counts(), self.stub_log_offset()
                proxy, target, info = self.spawn(mode, log_path, logfile)
                res.update(info)
                # Let the start-up's own work (first session, cache fills) finish.
                time.sleep(1)
                res["rss_start_mib"] = rss_mib(proxy.pid) if proxy else None
                api0, stub0 = self.api_counts(), self.stub_log_offset()
                connections = 0

                cpu0 = self.cpu_snapshot(proxy)
                bulk = self.client(target + ["--path", "/big", "--timeout", "600"],
                                   "seq", "--count", str(self.args.bulk_runs))
                cpu1 = self.cpu_snapshot(proxy)
                connections += len(bulk["runs"])
                ok = [r for r in bulk["runs"] if "error" not in r]
                if not ok:
                    raise ModeFailed(f"every bulk download failed: {bulk['runs'][0]['error']}")
                moved = sum(r["bytes"] for r in ok)
                res["bulk"] = {
                    "runs_mib_s": [r["bytes"] / MIB / (r["ms"] / 1000) for r in ok],
                    "errors": [r["error"] for r in bulk["runs"] if "error" in r],
                    "bytes": moved,
                }
                res["bulk"]["median_mib_s"] = statistics.median(res["bulk"]["runs_mib_s"])
                res["bulk"]["cpu_s_per_gib"] = per_unit(cpu0, cpu1, moved / GIB)

                cpu0 = self.cpu_snapshot(proxy)
                fresh = self.client(target, "seq", "--count", str(self.args.fresh))
                cpu1 = self.cpu_snapshot(proxy)
                connections += len(fresh["runs"])
                res["fresh"] = latency_summary(fresh["runs"])
                if res["fresh"]["ok"] == 0:
                    raise ModeFailed(f"every fresh connection failed: {res['fresh']['first_error']}")
                res["fresh"]["cpu_ms_per_conn"] = per_unit(cpu0, cpu1, len(fresh["runs"]) / 1000)

                conc = self.client(target, "concurrent",
                                   "--clients", str(self.args.clients), "--each", str(self.args.each))
                connections += len(conc["runs"])
                res["concurrent"] = latency_summary(conc["runs"])
                res["concurrent"]["wall_s"] = conc["wall_s"]
                res["rss_after_mib"] = rss_mib(proxy.pid) if proxy else None
                if proxy and proxy.poll() is not None:
                    raise ModeFailed(f"the proxy exited ({proxy.returncode}) during the workloads:\n"
                                     f"{tail(log_path, 20)}")
            finally:
                self.stop_proxy(mode, proxy)
        if "concurrent" in res:
            # apiserver_request_total counts a port-forward when it ends: read after the proxy is gone.
            time.sleep(1)
            res.update(self.session_counts(stub_spawn, stub0, connections))
            res["api"] = api_cost(api_spawn, api0, self.api_counts(), res["kubelet"]["sessions_total"],
                                  res["kubelet"]["sessions_after_warmup"], connections)
            res["connections"] = connections
            res["log"] = proxy_log_facts(log_path)
        return res

    def session_counts(self, spawn_offset, window_offset, connections):
        """Port-forward sessions and streams the stub kubelet served: over the whole
        run (a session opened at start-up serves the workloads too) and after warm-up."""
        sessions, streams = self.stub_sessions(window_offset)
        all_sessions, all_streams = self.stub_sessions(spawn_offset)
        return {"kubelet": {
            "sessions": all_sessions, "streams": all_streams,
            "sessions_total": sum(all_sessions.values()),
            "sessions_after_warmup": sum(sessions.values()), "streams_after_warmup": streams,
            "sessions_per_conn": sum(sessions.values()) / connections if connections else None,
        }}

    # -------------------------------------------------------------- remote

    def start_relay(self):
        """The delay relay in front of the API server; writes the kubeconfig that goes through it."""
        url = self.env["KUBESOCKS_APISERVER"]
        host, port = url.split("://", 1)[1].rstrip("/").rsplit(":", 1)
        self.relay_log = os.path.join(self.tmp, "delay-relay.log")
        self.relay = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "delay_relay.py"), "--listen", "127.0.0.1:0",
             "--upstream", f"{host}:{port}", "--delay-ms", str(self.args.delay_ms)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=open(self.relay_log, "w"), text=True)
        line = self.relay.stdout.readline().split()
        if len(line) != 2 or line[0] != "listening":
            raise ModeFailed(f"the delay relay did not start: {tail(self.relay_log)}")
        self.relay_addr = line[1]
        # The serving certificate names 127.0.0.1: any port there verifies.
        self.remote_kubeconfig = os.path.join(self.tmp, "remote.kubeconfig")
        self.write_kubeconfig(self.remote_kubeconfig, f"https://{self.relay_addr}")
        rtt = {"direct_ms": tls_handshake_ms(host, int(port), self.env["KUBESOCKS_CA_FILE"]),
               "relay_ms": tls_handshake_ms(*parse_addr(self.relay_addr), self.env["KUBESOCKS_CA_FILE"])}
        log(f"delay relay {self.relay_addr} -> {host}:{port}, {self.args.delay_ms:g} ms each way; TLS handshake "
            f"(one round trip) {fmt(rtt['direct_ms'])} ms direct, {fmt(rtt['relay_ms'])} ms through it")
        return rtt

    def stop_relay(self):
        if getattr(self, "relay", None):
            stop(self.relay, signal.SIGTERM)

    def run_remote(self, mode):
        res = {"mode": mode}
        proxy = None
        log_path = os.path.join(self.tmp, f"remote-{mode}.log")
        with open(log_path, "w") as logfile:
            try:
                stub_spawn = self.stub_log_offset()
                proxy, target, info = self.spawn(mode, log_path, logfile, kubeconfig=self.remote_kubeconfig)
                res.update(info)
                time.sleep(1)
                stub0 = self.stub_log_offset()
                cpu0 = self.cpu_snapshot(proxy)
                fresh = self.client(target, "seq", "--count", str(self.args.remote_fresh))
                cpu1 = self.cpu_snapshot(proxy)
                res["fresh"] = latency_summary(fresh["runs"])
                if res["fresh"]["ok"] == 0:
                    raise ModeFailed(f"every fresh connection failed: {res['fresh']['first_error']}")
                res["fresh"]["cpu_ms_per_conn"] = per_unit(cpu0, cpu1, len(fresh["runs"]) / 1000)
            finally:
                self.stop_proxy(mode, proxy)
        time.sleep(0.5)
        res.update(self.session_counts(stub_spawn, stub0, len(fresh["runs"])))
        res["log"] = proxy_log_facts(log_path)
        return res

    # ---------------------------------------------------------------- held

    def run_held(self, mode, nofile):
        """`--held` connections held open at once through one proxy of `mode`
        whose soft RLIMIT_NOFILE starts at `nofile` (None: inherited)."""
        label = f"{mode}-nofile-{nofile}" if nofile else f"{mode}-nofile-inherited"
        res = {"mode": mode, "nofile_set": nofile}
        proxy = None
        log_path = os.path.join(self.tmp, f"held-{label}.log")
        with open(log_path, "w") as logfile:
            try:
                stub_spawn = self.stub_log_offset()
                proxy, target, info = self.spawn(mode, log_path, logfile, nofile=nofile)
                res.update(info)
                time.sleep(1)
                res["nofile_soft"], res["nofile_hard"] = nofile_limits(proxy.pid)
                res["rss_start_mib"] = rss_mib(proxy.pid)
                res["fds_start"] = fd_count(proxy.pid)
                stub0 = self.stub_log_offset()
                cmd = [sys.executable, os.path.join(HERE, "held.py"), "--connect", target[1],
                       *(["--socks", self.socks_name] if mode in KUBESOCKS_MODES else []),
                       "--count", str(self.args.held), "--path", "/hold", "--timeout", str(self.args.held_timeout)]
                client = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True)
                try:
                    first = client.stdout.readline()
                    try:
                        res["at_hold"] = json.loads(first)
                    except ValueError:
                        raise ModeFailed(f"held.py printed no result: {first!r} {client.stderr.read().strip()}")
                    # Everything is open (or failed): what the proxy holds now.
                    res["fds_at_hold"] = fd_count(proxy.pid)
                    res["rss_at_hold_mib"] = rss_mib(proxy.pid)
                    time.sleep(self.args.held_seconds)
                    res["fds_after_hold"] = fd_count(proxy.pid)
                    out, err = client.communicate("go\n", timeout=self.args.held_timeout * 3 + 60)
                except BaseException:
                    client.kill()
                    client.wait()
                    raise
                try:
                    res["held"] = json.loads(out.strip().splitlines()[-1])
                except (ValueError, IndexError):
                    raise ModeFailed(f"held.py printed no final result (exit {client.returncode}): {err.strip()}")
                time.sleep(0.5)
                res["rss_after_mib"] = rss_mib(proxy.pid)
                if proxy.poll() is not None:
                    raise ModeFailed(f"the proxy exited ({proxy.returncode}) while holding connections:\n"
                                     f"{tail(log_path, 20)}")
            finally:
                self.stop_proxy(mode, proxy)
        time.sleep(0.5)
        res.update(self.session_counts(stub_spawn, stub0, self.args.held))
        res["log"] = proxy_log_facts(log_path)
        return res


def api_cost(spawn, start, end, pf_all, pf_window, connections):
    """The proxy's API requests: at start-up (spawn to first success) and per connection
    in the workloads' window (first success + 1 s to the proxy's exit)."""
    requests = end["own"] - start["own"]
    cluster = {k: end["cluster"].get(k, 0) - start["cluster"].get(k, 0)
               for k in set(start["cluster"]) | set(end["cluster"])}
    return {
        "connections": connections,
        "startup_requests": start["own"] - spawn["own"],
        "startup_port_forwards": pf_all - pf_window,
        "requests": requests,
        "port_forwards": pf_window,
        "requests_per_conn": requests / connections,
        "port_forwards_per_conn": pf_window / connections,
        "per_conn": (requests + pf_window) / connections,
        # Every client of the shared cluster, for reference: the metric has no user label.
        "cluster_wide_by_kind": {f"{verb} {r}{'/' + sub if sub else ''}": v
                                 for (r, sub, verb), v in sorted(cluster.items()) if v},
    }


def per_unit(cpu0, cpu1, units):
    out = {}
    for key in cpu0:
        if cpu0[key] is not None and cpu1.get(key) is not None and units > 0:
            out[key] = (cpu1[key] - cpu0[key]) / units
    return out


def latency_summary(runs):
    ok = sorted(r["ms"] for r in runs if "error" not in r)
    errors = [r["error"] for r in runs if "error" in r]
    out = {"count": len(runs), "ok": len(ok), "errors": len(errors), "first_error": errors[0] if errors else None}
    if len(ok) >= 2:
        q = statistics.quantiles(ok, n=100, method="inclusive")
        out.update(p50_ms=q[49], p90_ms=q[89], p99_ms=q[98], max_ms=ok[-1], mean_ms=statistics.fmean(ok))
    elif ok:
        out.update(p50_ms=ok[0], p90_ms=ok[0], p99_ms=ok[0], max_ms=ok[0], mean_ms=ok[0])
    return out


# ------------------------------------------------------------------ report

def fmt(v, digits=None):
    if v is None:
        return "–"
    if digits is None:
        digits = 0 if abs(v) >= 100 else 1 if abs(v) >= 10 else 2 if abs(v) >= 0.1 else 3
    return f"{v:.{digits}f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def get(res, *path):
    for p in path:
        if not isinstance(res, dict) or res.get(p) is None:
            return None
        res = res[p]
    return res


# Figures compared across modes: (label, path into a mode's result).
KEY_FIGURES = [
    ("bulk MiB/s", ("bulk", "median_mib_s")),
    ("fresh p50", ("fresh", "p50_ms")),
    ("fresh p99", ("fresh", "p99_ms")),
    ("concurrency wall", ("concurrent", "wall_s")),
    ("proxy CPU/GiB", ("bulk", "cpu_s_per_gib", "proxy")),
    ("API-server CPU/conn", ("fresh", "cpu_ms_per_conn", "apiserver")),
    ("RSS after", ("rss_after_mib",)),
    ("start-up", ("startup_ms",)),
]


def cell_ratio(x):
    return "–" if x is None else f"{x:.2f}×" if x >= 0.1 else f"{x:.3f}×"


def markdown(report):
    results = {r["mode"]: r for r in report["results"]}
    a = report["workloads"]
    conc = f"{a['clients']}×{a['each']}"
    lines = []
    lines.append(f"| mode | start-up ms | bulk MiB/s (median of {a['bulk_runs']}) | proxy CPU s/GiB "
                 f"| fresh conn p50 / p90 / p99 ms | {conc} wall s | {conc} errors "
                 f"| RSS start → after MiB | API requests at start-up | API requests per connection |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for mode in report["modes"]:
        r = results.get(mode)
        if not r or "concurrent" not in r:
            lines.append(f"| {mode} | could not run: {(r or {}).get('error', 'not run').splitlines()[0]} ||||||||| ")
            continue
        f = r["fresh"]
        c = r["concurrent"]
        rss = "–" if r["rss_start_mib"] is None else f"{fmt(r['rss_start_mib'], 1)} → {fmt(r['rss_after_mib'], 1)}"
        api = r["api"]
        if mode == "direct":
            api_start = api_conn = "–"
        else:
            api_start = f"{api['startup_requests']:.0f} + {api['startup_port_forwards']} pf"
            api_conn = f"{api['requests_per_conn']:.3f} + {api['port_forwards_per_conn']:.3f} pf"
        lines.append(
            f"| {mode} | {fmt(r['startup_ms'], 0)} | {fmt(r['bulk']['median_mib_s'], 0)} "
            f"| {fmt(get(r, 'bulk', 'cpu_s_per_gib', 'proxy'))} "
            f"| {fmt(f.get('p50_ms'))} / {fmt(f.get('p90_ms'))} / {fmt(f.get('p99_ms'))} "
            f"| {fmt(c['wall_s'])} | {c['errors']} | {rss} "
            f"| {api_start} | {api_conn} |"
        )
    lines.append("")
    lines.append("Ratios, each cell *mode ÷ kubectl-ws* / *mode ÷ direct* "
                 "(MiB/s: higher is better; times, CPU, RSS: lower is better):")
    lines.append("")
    lines.append("| mode | " + " | ".join(label.replace("concurrency", conc) for label, _ in KEY_FIGURES) + " |")
    lines.append("|---|" + "---|" * len(KEY_FIGURES))
    for mode in report["modes"]:
        r = results.get(mode)
        if not r or "concurrent" not in r:
            continue
        cells = []
        for _, path in KEY_FIGURES:
            rs = [ratio(get(r, *path), get(results.get(ref, {}), *path)) for ref in REFERENCES]
            cells.append(" / ".join(cell_ratio(x) for x in rs))
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    lines.extend(bookkeeping(report, results, conc))
    lines.append("")
    lines.append("Where the CPU goes (bulk: CPU s per GiB moved; fresh: CPU ms per connection), per process "
                 "(the API server and the stub kubelet are shared: other clients' work lands there too):")
    lines.append("")
    parts = ["proxy", "apiserver", "kubelet", "nginx", "client"]
    lines.append("| mode | bulk: " + " / ".join(parts) + " | fresh: " + " / ".join(parts) + " |")
    lines.append("|---|---|---|")
    for mode in report["modes"]:
        r = results.get(mode)
        if not r or "concurrent" not in r:
            continue
        b = " / ".join(fmt(r["bulk"]["cpu_s_per_gib"].get(p)) for p in parts)
        fr = " / ".join(fmt(r["fresh"]["cpu_ms_per_conn"].get(p)) for p in parts)
        lines.append(f"| {mode} | {b} | {fr} |")
    lines.append("")
    lines.append("Port-forward sessions and streams at the stub kubelet (a stream: one forwarded connection; "
                 "*after warm-up*: from 1 s after the first answer to the proxy's exit):")
    lines.append("")
    lines.append("| mode | connections | sessions, whole run | sessions after warm-up | streams after warm-up "
                 "| sessions per connection after warm-up |")
    lines.append("|---|---|---|---|---|---|")
    for mode in report["modes"]:
        r = results.get(mode)
        if not r or "concurrent" not in r or mode == "direct":
            continue
        k = r["kubelet"]
        lines.append(f"| {mode} | {r['connections']} | {k['sessions_total']} | {k['sessions_after_warmup']} "
                     f"| {k['streams_after_warmup']} | {k['sessions_per_conn']:.3f} |")

    remote = {r["mode"]: r for r in report.get("remote", [])}
    if remote:
        rtt = report.get("remote_rtt") or {}
        lines.append("")
        lines.append(f"Remote: the API server behind the delay relay, {report['workloads']['delay_ms']:g} ms each "
                     f"way (TLS handshake with it {fmt(rtt.get('relay_ms'))} ms, direct "
                     f"{fmt(rtt.get('direct_ms'))} ms); {report['workloads']['remote_fresh']} sequential fresh "
                     "connections, ratios ÷ kubectl-ws there:")
        lines.append("")
        lines.append("| mode | start-up ms | fresh conn p50 / p90 / p99 ms | p50 ÷ kubectl-ws | p99 ÷ kubectl-ws "
                     "| errors | sessions after warm-up |")
        lines.append("|---|---|---|---|---|---|---|")
        ws = remote.get("kubectl-ws", {})
        for mode in report["remote_modes"]:
            r = remote.get(mode)
            if not r or "fresh" not in r:
                lines.append(f"| {mode} | could not run: {(r or {}).get('error', 'not run').splitlines()[0]} |||||| ")
                continue
            f = r["fresh"]
            lines.append(
                f"| {mode} | {fmt(r['startup_ms'], 0)} "
                f"| {fmt(f.get('p50_ms'))} / {fmt(f.get('p90_ms'))} / {fmt(f.get('p99_ms'))} "
                f"| {cell_ratio(ratio(f.get('p50_ms'), get(ws, 'fresh', 'p50_ms')))} "
                f"| {cell_ratio(ratio(f.get('p99_ms'), get(ws, 'fresh', 'p99_ms')))} "
                f"| {f['errors']} | {r['kubelet']['sessions_after_warmup']} |")

    held = report.get("held", [])
    if held:
        lines.append("")
        w = report["workloads"]
        lines.append(f"Held: {w['held']} connections open at once through one proxy, half streaming "
                     f"a {w['held_kib']} KiB download that nginx sends at {w['held_rate_kib']} KiB/s "
                     f"({w['hold_download_s']:.0f} s), half idle in their request head; all held "
                     f"{w['held_seconds']:g} s once open, then completed (the streaming ones run to their end):")
        lines.append("")
        lines.append("| mode | proxy's soft RLIMIT_NOFILE | held at once | errors | open p50 / p99 / max ms "
                     "| open, complete wall s | proxy fds at hold | proxy RSS start → hold → after MiB "
                     "| sessions (streams) |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for r in held:
            if "held" not in r:
                lines.append(f"| {r['mode']} | {held_limit(r)} | could not run: "
                             f"{r.get('error', '?').splitlines()[0]} ||||||| ")
                continue
            h = r["held"]
            k = r["kubelet"]
            lines.append(
                f"| {r['mode']} | {held_limit(r)} | {h['held']} of {h['count']}, {h['alive_after_hold']} after "
                f"the hold | {h['errors']} "
                f"| {fmt(get(h, 'open', 'p50_ms'))} / {fmt(get(h, 'open', 'p99_ms'))} / {fmt(get(h, 'open', 'max_ms'))} "
                f"| {fmt(h['open_wall_s'])}, {fmt(h['complete_wall_s'])} | {r['fds_at_hold']} "
                f"| {fmt(r['rss_start_mib'], 1)} → {fmt(r['rss_at_hold_mib'], 1)} → {fmt(r['rss_after_mib'], 1)} "
                f"| {k['sessions_after_warmup']} ({k['streams_after_warmup']}) |")
    return "\n".join(lines)


def held_limit(r):
    """The soft limit the held run's proxy ran with, and who set it."""
    set_, seen = r.get("nofile_set"), r.get("nofile_soft")
    if seen is None:
        return f"{set_} (set)"
    if set_ is not None and seen != set_:
        return f"{seen} (started at {set_}; the proxy raised it)"
    return f"{seen} (set by the benchmark)"


def bookkeeping(report, results, conc):
    """What the connections list costs: kubesocks against kubesocks-watched
    (its list read every second) and kubesocks-before (another build), if run."""
    base = results.get("kubesocks")
    others = [m for m in ("kubesocks-before", "kubesocks-watched") if "concurrent" in results.get(m, {})]
    if not base or "concurrent" not in base or not others:
        return []
    lines = ["", "What the connections list costs (each cell: the figure, and its ratio to kubesocks):", "",
             f"| mode | fresh p50 ms | fresh p99 ms | {conc} wall s | RSS after MiB |", "|---|---|---|---|---|"]
    paths = [("fresh", "p50_ms"), ("fresh", "p99_ms"), ("concurrent", "wall_s"), ("rss_after_mib",)]
    for mode in ["kubesocks", *others]:
        r = results[mode]
        cells = [f"{fmt(get(r, *p))} ({cell_ratio(ratio(get(r, *p), get(base, *p)))})" for p in paths]
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    return lines


def goals(report):
    """The issue's goals for kubesocks (auto) against kubectl-ws: (goal, met, figures)."""
    results = {r["mode"]: r for r in report["results"] if "concurrent" in r}
    ks, ws, spdy = results.get("kubesocks"), results.get("kubectl-ws"), results.get("kubectl-spdy")
    conc = f"{report['workloads']['clients']}×{report['workloads']['each']}"
    out = []

    def compare(goal, path, better, bound=1.0, digits=None, unit=""):
        a, b = get(ks, *path), get(ws, *path)
        if a is None or b is None or b == 0:
            out.append((goal, False, "no figure"))
            return
        x = a / b
        met = x >= bound if better == "higher" else x <= bound
        extra = ""
        if spdy and get(spdy, *path) is not None:
            extra = f"; kubectl-spdy {fmt(get(spdy, *path), digits)}{unit}"
        out.append((goal, met, f"{x:.2f}× ({fmt(a, digits)}{unit} vs {fmt(b, digits)}{unit}{extra})"))

    if ks and ws:
        compare("fresh p50 ≤ kubectl-ws", ("fresh", "p50_ms"), "lower", unit=" ms")
        compare("fresh p99 ≤ kubectl-ws", ("fresh", "p99_ms"), "lower", unit=" ms")
        compare(f"{conc} wall ≤ kubectl-ws", ("concurrent", "wall_s"), "lower", unit=" s")
        compare("API-server CPU per fresh connection ≤ kubectl-ws", ("fresh", "cpu_ms_per_conn", "apiserver"),
                "lower", unit=" ms")
        compare("bulk MiB/s ≥ kubectl-ws", ("bulk", "median_mib_s"), "higher", digits=0, unit=" MiB/s")
        compare("proxy CPU per GiB ≤ 0.5× kubectl-ws", ("bulk", "cpu_s_per_gib", "proxy"), "lower", bound=0.5,
                unit=" s")
        compare(f"RSS after {conc} ≤ kubectl-ws", ("rss_after_mib",), "lower", digits=1, unit=" MiB")
    if ks:
        k = ks["kubelet"]
        out.append(("port-forward sessions per connection ≈ 0 after warm-up (≤ 0.01)",
                    k["sessions_per_conn"] <= 0.01,
                    f"{k['sessions_after_warmup']} sessions for {ks['connections']} connections "
                    f"({k['sessions_per_conn']:.3f}/conn; {k['sessions_total']} in the whole run, "
                    f"start-up included)"))
    remote = {r["mode"]: r for r in report.get("remote", []) if "fresh" in r}
    rks, rws = remote.get("kubesocks"), remote.get("kubectl-ws")
    if rks and rws:
        a, b = rks["fresh"]["p50_ms"], rws["fresh"]["p50_ms"]
        out.append((f"remote ({report['workloads']['delay_ms'] * 2:g} ms away) fresh p50 ≤ 0.75× kubectl-ws",
                    a / b <= 0.75, f"{a / b:.2f}× ({fmt(a)} vs {fmt(b)} ms)"))
    elif report.get("remote_modes"):
        out.append(("remote fresh p50 ≤ 0.75× kubectl-ws", False, "no figure (a remote mode could not run)"))
    for r in report.get("held", []):
        if r["mode"] != "kubesocks":
            continue
        if "held" not in r:
            out.append((f"{report['workloads']['held']} held at once, 0 errors", False,
                        f"could not run: {r.get('error', '?').splitlines()[0]}"))
            continue
        h = r["held"]
        first = f" (first: {h['first_error']})" if h["errors"] else ""
        out.append((f"{h['count']} held at once, 0 errors, soft RLIMIT_NOFILE {held_limit(r)}",
                    h["errors"] == 0 and h["held"] == h["count"],
                    f"{h['held']} held at once, {h['errors']} errors{first}"))
    if ks:
        api = ks["api"]
        out.append(("0 list/get requests per connection after warm-up", api["requests"] == 0,
                    f"{api['requests']:.0f} requests other than port-forwards in {api['connections']} connections"))
        c = ks["concurrent"]
        out.append((f"0 errors at {conc}", c["errors"] == 0,
                    f"{c['errors']} errors" + (f" (first: {c['first_error']})" if c["errors"] else "")))
    return out


def notes(report):
    results = {r["mode"]: r for r in report["results"] if "concurrent" in r}
    out = []
    for mode, r in results.items():
        if mode != "direct" and r["kubelet"]["sessions"]:
            sess = ", ".join(f"{n}× {k}" for k, n in r["kubelet"]["sessions"].items())
            proto = f" (kubesocks logged: port-forwards use {r['log']['protocol']})" if r["log"]["protocol"] else ""
            out.append(f"{mode}: the stub kubelet served {sess}, {r['kubelet']['streams']} streams, "
                       f"for {r['connections']} connections and the start-up probe{proto}")
    for group, rs in (("remote", report.get("remote", [])), ("held", report.get("held", []))):
        for r in rs:
            if "kubelet" in r and r["kubelet"]["sessions"]:
                sess = ", ".join(f"{n}× {k}" for k, n in r["kubelet"]["sessions"].items())
                out.append(f"{group} {r['mode']}" + (f" at {held_limit(r)}" if group == "held" else "")
                           + f": the stub kubelet served {sess}, {r['kubelet']['streams']} streams")
    for group, rs in (("", report["results"]), ("remote ", report.get("remote", [])),
                      ("held ", report.get("held", []))):
        for r in rs:
            facts = r.get("log") or {}
            if facts.get("warnings") or facts.get("errors"):
                kinds = "; ".join(f"{n}× {k}" for k, n in facts["kinds"].items())
                at = f" at {held_limit(r)}" if group == "held " else ""
                out.append(f"{group}{r['mode']}{at}: the proxy logged {facts['errors']} errors and "
                           f"{facts['warnings']} warnings: {kinds}")
    for r in report.get("held", []):
        facts = r.get("log") or {}
        said = "; ".join(facts.get("nofile") or []) or "nothing"
        if r["mode"] in KUBESOCKS_MODES:
            out.append(f"held at {held_limit(r)}: kubesocks said about RLIMIT_NOFILE: {said}")
        h = r.get("held") or {}
        if h.get("errors"):
            out.append(f"held {r['mode']} at {held_limit(r)}, errors by kind: "
                       + "; ".join(f"{n}× {k}" for k, n in h["error_kinds"].items()))
    return out


# ------------------------------------------------------------------- utils

def read_env(path):
    env = {}
    with open(path) as f:
        for line in f:
            if "=" in line and not line.startswith("#"):
                k, v = line.strip().split("=", 1)
                env[k] = v.strip("'\"")
    return env


def group_exists(name):
    import grp
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def can_connect(ip, port):
    try:
        with socket.create_connection((ip, port), timeout=0.2):
            return True
    except OSError:
        return False


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what, probe, timeout=60):
    deadline = time.time() + timeout
    while not probe():
        if time.time() > deadline:
            raise ModeFailed(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def parse_addr(s):
    host, port = s.rsplit(":", 1)
    return host, int(port)


def tls_handshake_ms(host, port, ca_file, n=7):
    """Median time of a TLS handshake with the API server at host:port (one round
    trip with TLS 1.3, plus the server's crypto): the round trip a relay adds shows."""
    import ssl
    ctx = ssl.create_default_context(cafile=ca_file)
    times = []
    for _ in range(n):
        try:
            with socket.create_connection((host, port), timeout=5) as raw:
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                t = time.perf_counter()
                with ctx.wrap_socket(raw, server_hostname=host):
                    times.append((time.perf_counter() - t) * 1000)
        except OSError:
            pass
    return statistics.median(times) if times else None


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def proxy_log_facts(path):
    """From a proxy's output: the protocol kubesocks chose, its warnings and
    errors (counted, the first few kinds), and any word of RLIMIT_NOFILE."""
    facts = {"protocol": None, "warnings": 0, "errors": 0, "kinds": {}, "nofile": []}
    try:
        with open(path, errors="replace") as f:
            lines = [ANSI.sub("", line.rstrip("\n")) for line in f]
    except OSError:
        return facts
    for line in lines:
        m = re.search(r"port-forwards use (.+?)(?:\s+protocol=.*)?$", line)
        if m and facts["protocol"] is None:
            facts["protocol"] = m.group(1).strip()
        if re.search(r"rlimit|nofile|descriptor|open-file", line, re.I):
            facts["nofile"].append(line.strip()[:300])
        level = re.search(r"\s(WARN|ERROR)\s", line)
        if level:
            facts["warnings" if level.group(1) == "WARN" else "errors"] += 1
            # The message without time, IDs and addresses, so alike lines count together.
            kind = re.sub(r"^\S+\s+(WARN|ERROR)\s+", r"\1 ", line.strip())
            kind = re.sub(r"\b(id|conn|connection|client|peer)=\S+", r"\1=…", kind)
            kind = re.sub(r"\d+\.\d+\.\d+\.\d+:\d+", "ADDR", kind)[:240]
            facts["kinds"][kind] = facts["kinds"].get(kind, 0) + 1
    facts["kinds"] = dict(sorted(facts["kinds"].items(), key=lambda kv: -kv[1])[:5])
    facts["nofile"] = facts["nofile"][:3]
    return facts


def nofile_limits(pid):
    """The soft and hard RLIMIT_NOFILE a process runs with now."""
    try:
        with open(f"/proc/{pid}/limits") as f:
            for line in f:
                if line.startswith("Max open files"):
                    soft, hard = line.split()[3:5]
                    return int(soft), int(hard)
    except (OSError, ValueError):
        pass
    return None, None


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


def stop(proc, sig):
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def tail(path, n=5):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:]).strip()
    except OSError:
        return ""


def command_out(*cmd):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return (p.stdout + p.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown ({e})"


def machine():
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": command_out("sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"),
    }


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def versions(bench, args):
    kubectl = json.loads(bench.kubectl("version", "--client", "-o", "json"))["clientVersion"]["gitVersion"]
    server = json.loads(bench.kubectl("get", "--raw", "/version"))["gitVersion"]
    rev = command_out("git", "-C", args.repo, "describe", "--always", "--dirty", "--abbrev=12")
    return {
        "kubesocks": rev,
        "kubectl": kubectl,
        "apiserver": server,
        "nginx": command_out(args.nginx, "-v").replace("nginx version: ", ""),
        "rustc": command_out("rustc", "-V"),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--kubectl", required=True)
    p.add_argument("--kubesocks", required=True)
    p.add_argument("--bare", required=True, help="the bare_forward example binary")
    p.add_argument("--client", required=True, help="the bench_client example binary")
    p.add_argument("--nginx", default="nginx")
    p.add_argument("--repo", default=".")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--namespace", default="kubesocks-bench")
    p.add_argument("--net", default="127.0.3", help="/24 prefix of the two backend IPs")
    p.add_argument("--modes", default=None,
                   help=f"default: {','.join(MODES)}, and kubesocks-before with --kubesocks-before")
    p.add_argument("--kubesocks-before", default=None, help="another kubesocks binary, run as mode kubesocks-before")
    p.add_argument("--bulk-mib", type=int, default=256)
    p.add_argument("--bulk-runs", type=int, default=3)
    p.add_argument("--fresh", type=int, default=300)
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--each", type=int, default=20)
    p.add_argument("--startup-timeout", type=float, default=60)
    p.add_argument("--remote-modes", default=",".join(REMOTE_MODES),
                   help="modes measured with the API server behind the delay relay ('' for none)")
    p.add_argument("--remote-fresh", type=int, default=200, help="fresh connections per remote mode")
    p.add_argument("--delay-ms", type=float, default=10.0, help="the relay's delay, each way")
    p.add_argument("--held", type=int, default=1000, help="connections held open at once (0: skip)")
    p.add_argument("--held-modes", default="kubesocks,kubectl-ws",
                   help="proxies the held workload runs through (kubesocks first: the goal's)")
    p.add_argument("--held-nofile", type=int, default=1024, help="the held proxy's soft RLIMIT_NOFILE at start")
    p.add_argument("--held-kib", type=int, default=256, help="size of /hold, what the streaming held connections GET")
    p.add_argument("--held-rate-kib", type=int, default=8, help="KiB/s nginx sends /hold at, after its first 16 KiB")
    p.add_argument("--held-seconds", type=float, default=5.0, help="how long all are held at once")
    p.add_argument("--held-timeout", type=float, default=60.0, help="seconds each held connection may take to "
                                                                     "open, and to complete")
    args = p.parse_args()
    if args.modes is None:
        args.modes = ",".join(MODES + (["kubesocks-before"] if args.kubesocks_before else []))
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(ALL_MODES)
    if unknown:
        p.error(f"unknown modes {sorted(unknown)}; known: {ALL_MODES}")
    if "kubesocks-before" in modes and not args.kubesocks_before:
        p.error("mode kubesocks-before needs --kubesocks-before PATH")
    held_modes = [m for m in args.held_modes.split(",") if m]
    unknown = set(held_modes) - set(MODES) | {"direct"} & set(held_modes)
    if unknown:
        p.error(f"unknown held modes {sorted(unknown)}; known: {MODES[1:]}")
    remote_modes = [m for m in args.remote_modes.split(",") if m]
    unknown = set(remote_modes) - set(MODES) | {"direct"} & set(remote_modes)
    if unknown:
        p.error(f"unknown remote modes {sorted(unknown)}; known: {MODES[1:]}")

    bench = Bench(args)
    started = datetime.datetime.now().astimezone()
    report = {
        "date": started.isoformat(timespec="seconds"),
        "modes": modes,
        "remote_modes": remote_modes,
        "workloads": {"bulk_mib": args.bulk_mib, "bulk_runs": args.bulk_runs, "fresh": args.fresh,
                      "clients": args.clients, "each": args.each, "delay_ms": args.delay_ms,
                      "remote_fresh": args.remote_fresh, "held": args.held, "held_kib": args.held_kib,
                      "held_rate_kib": args.held_rate_kib, "hold_download_s": hold_seconds(args),
                      "held_seconds": args.held_seconds, "held_nofile": args.held_nofile},
        "machine": machine(),
        "load_before": loadavg(),
        "results": [],
        "remote": [],
        "held": [],
        "api_counted": ("the proxies run as a ServiceAccount of their own; its requests are those its FlowSchema "
                        "dispatched (apiserver_flowcontrol_dispatched_requests_total: gets, lists, watches, "
                        "access reviews, discovery), plus port-forward sessions (pf) for the bench's pods from the "
                        "stub kubelet's log, as flow control does not count long-running requests. Start-up: "
                        "from the spawn to 1 s after the first answer; per connection: from then until the proxy "
                        "has exited, over all workloads' connections. Other clients of the shared cluster are not "
                        "counted."),
    }
    failed = []
    try:
        report["versions"] = versions(bench, args)
        bench.start_nginx()
        bench.create_workload()
        for mode in modes:
            log(f"{mode}: running")
            try:
                res = bench.run_mode(mode)
            except (ModeFailed, subprocess.TimeoutExpired, OSError) as e:
                res = {"mode": mode, "error": str(e)}
                failed.append(mode)
                log(f"{mode}: COULD NOT RUN: {e}")
            else:
                log(f"{mode}: bulk {fmt(res['bulk']['median_mib_s'], 0)} MiB/s, fresh p50 "
                    f"{fmt(res['fresh'].get('p50_ms'))} ms, {args.clients}×{args.each} "
                    f"{fmt(res['concurrent']['wall_s'])} s "
                    f"({res['concurrent']['errors']} errors), start-up {fmt(res['startup_ms'], 0)} ms")
            report["results"].append(res)
        if remote_modes:
            report["remote_rtt"] = bench.start_relay()
            report["load_remote"] = loadavg()
            for mode in remote_modes:
                log(f"remote {mode}: running")
                try:
                    res = bench.run_remote(mode)
                except (ModeFailed, subprocess.TimeoutExpired, OSError) as e:
                    res = {"mode": mode, "error": str(e)}
                    failed.append(f"remote {mode}")
                    log(f"remote {mode}: COULD NOT RUN: {e}")
                else:
                    log(f"remote {mode}: fresh p50 {fmt(res['fresh']['p50_ms'])} ms, p99 "
                        f"{fmt(res['fresh']['p99_ms'])} ms ({res['fresh']['errors']} errors)")
                report["remote"].append(res)
            bench.stop_relay()
        if args.held:
            report["load_held"] = loadavg()
            runs = [(mode, args.held_nofile) for mode in held_modes]
            while runs:
                mode, nofile = runs.pop(0)
                log(f"held {mode}: {args.held} connections, the proxy's soft RLIMIT_NOFILE at {nofile}")
                try:
                    res = bench.run_held(mode, nofile)
                except (ModeFailed, subprocess.TimeoutExpired, OSError) as e:
                    res = {"mode": mode, "nofile_set": nofile, "error": str(e)}
                    failed.append(f"held {mode} at {nofile}")
                    log(f"held {mode}: COULD NOT RUN: {e}")
                else:
                    h = res["held"]
                    log(f"held {mode}: {h['held']} of {h['count']} held at once, {h['errors']} errors, soft limit "
                        f"{res['nofile_soft']}, {res['fds_at_hold']} fds at hold, RSS "
                        f"{fmt(res['rss_at_hold_mib'], 1)} MiB at hold")
                    # Not enough, and kubesocks kept the limit it was given: once more right after,
                    # with the hard limit, so what the data path itself does shows too.
                    if (mode == "kubesocks" and (h["errors"] or h["held"] < h["count"])
                            and res["nofile_soft"] == nofile and nofile == args.held_nofile
                            and res["nofile_hard"] and res["nofile_hard"] > nofile):
                        runs.insert(0, (mode, res["nofile_hard"]))
                report["held"].append(res)
    except ModeFailed as e:
        log(f"set-up failed: {e}")
        report["setup_error"] = str(e)
    finally:
        bench.stop_relay()
        bench.stop_nginx()
        bench.delete_workload()
        bench.cleanup(keep_logs=bool(failed) or "setup_error" in report)
    report["load_after"] = loadavg()
    report["goals"] = [{"goal": g, "met": m, "figures": f} for g, m, f in goals(report)]
    report["notes"] = notes(report)

    os.makedirs(args.out_dir, exist_ok=True)
    stamp = started.strftime("%Y%m%d-%H%M%S")
    json_path = os.path.join(args.out_dir, f"bench-{stamp}.json")
    md_path = os.path.join(args.out_dir, f"bench-{stamp}.md")
    m = report["machine"]
    v = report.get("versions", {})
    text = "\n".join([
        f"kubesocks benchmark, {report['date']}",
        "",
        markdown(report),
        "",
        "Goals for kubesocks ([x] met, [ ] not met):",
        *[f"- [{'x' if g['met'] else ' '}] {g['goal']}: {g['figures']}" for g in report["goals"]],
        "",
        "Notes:",
        *[f"- {n}" for n in report["notes"]],
        f"- API requests counted: {report['api_counted']}",
        f"- workloads: bulk {args.bulk_runs} × {args.bulk_mib} MiB; fresh {args.fresh} sequential connections, "
        f"GET /small ({SMALL_BYTES} B); concurrency {args.clients} clients × {args.each} sequential connections; "
        "every request on a new TCP connection, HTTP/1.0, read to the end; remote: "
        f"{args.remote_fresh} fresh connections per mode through tests/bench/delay_relay.py "
        f"({args.delay_ms:g} ms each way); held: tests/bench/held.py, {args.held} connections",
        "",
        f"Versions: kubesocks {v.get('kubesocks')}, kubectl {v.get('kubectl')}, kube-apiserver {v.get('apiserver')} "
        f"(stub kubelet), nginx {v.get('nginx')}, {v.get('rustc')}",
        f"Machine: {m['cores']} cores, {m['cpu']}, {m['ram_gib']} GiB RAM, {m['os']}, Linux {m['kernel']}; "
        f"load average {report['load_before']} before, "
        + (f"{report['load_remote']} before the remote modes, " if "load_remote" in report else "")
        + (f"{report['load_held']} before the held connections, " if "load_held" in report else "")
        + f"{report['load_after']} after",
    ])
    with open(json_path, "w") as f:
        json.dump(report, f, indent=2)
    with open(md_path, "w") as f:
        f.write(text + "\n")
    print(text)
    print(f"\nJSON: {json_path}\nMarkdown: {md_path}")
    if "setup_error" in report:
        print(f"\nFAILED: set-up: {report['setup_error']}", file=sys.stderr)
        return 1
    if failed:
        for group, rs in (("mode", report["results"]), ("remote mode", report["remote"]),
                          ("held workload of", report["held"])):
            for r in rs:
                if "error" in r:
                    print(f"\nFAILED: {group} {r['mode']} could not run: {r['error']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
