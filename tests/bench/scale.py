#!/usr/bin/env python3
"""What kubesocks costs as the cluster grows, beside kubectl port-forward.

Run by tests/bench/scale (which builds what it needs). In one run, on the
local test cluster:

1. an almost empty cluster: one namespace `scale-web` with Service `web`
   (two pods served by the cluster's `backend`);
2. the cluster filled, size after size (by default 5 000 and then 20 000
   pods: namespaces of 20 Services and 100 pods shaped like real ones: two
   containers, env, probes, resources, labels and annotations, about 9 KiB of
   JSON each with their status; the controller manager makes the
   EndpointSlices, the kubelet stub the pods' status);

and at each size, for kubesocks (`proxy-out`) and `kubectl port-forward
svc/web`, each started --starts times (medians): time from start to the
first answer (and for kubesocks, to the first answer by pod IP, and by the
IP of a pod behind no Service, which waits for the pods' list), RSS and CPU
once ready (every pod listed), the pages of lists the API server
served meanwhile (all clients); then the p50 of fresh connections (kubesocks
by Service name, pod IP and ClusterIP; kubectl through its one forward).
Then, at the largest size, the cost of looking a pod IP up on demand (a pod
list with a `status.podIP` field selector, the alternative to a pods cache)
beside a GET of one pod by name.

Prints a Markdown table and writes it, with the JSON, under --out-dir. The
filled namespaces are deleted at the end unless --keep.
"""

import argparse
import concurrent.futures
import json
import os
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench import ModeFailed, free_port, read_env, rss_mib, stop, tail  # noqa: E402

WEB_NS = "scale-web"
LABEL = "kubesocks.test/scale"
WEB_PODS = [("web-0", "127.0.4.1", "10.244.254.1"), ("web-1", "127.0.4.2", "10.244.254.2")]
# A pod behind no Service: kubesocks finds its IP only once every pod is listed.
LONE_POD = ("lone-0", "127.0.4.3", "10.244.254.3")
WEB_PORT = 8080


def log(msg):
    print(f"[scale] {msg}", file=sys.stderr, flush=True)


def realistic_pod(ns, i, services):
    """A pod as a Deployment's ReplicaSet makes it, about 3 KiB of JSON before its status."""
    app = f"svc-{i % services}"
    env = [{"name": f"SETTING_{k}", "value": f"value-{k}-for-{app}"} for k in range(8)]
    env.append({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    probe = {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 10, "timeoutSeconds": 2}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": f"{app}-7c9d8f6b5d-{i:05d}", "namespace": ns,
            "labels": {"app": app, "app.kubernetes.io/name": app, "app.kubernetes.io/part-of": "scale",
                       "app.kubernetes.io/version": "1.4.2", "pod-template-hash": "7c9d8f6b5d", "tier": "backend"},
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9090",
                            "kubectl.kubernetes.io/restartedAt": "2026-11-30T08:00:00Z",
                            "checksum/config": "9f2c1a7e4b3d" * 5},
        },
        "spec": {
            "nodeName": "node-spdy",
            "containers": [
                {"name": "app", "image": f"registry.example.com/team/{app}:1.4.2",
                 "ports": [{"name": "http", "containerPort": 8080}, {"name": "metrics", "containerPort": 9090}],
                 "env": env, "readinessProbe": probe, "livenessProbe": probe,
                 "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
                 "volumeMounts": [{"name": "config", "mountPath": "/etc/app"}]},
                {"name": "proxy", "image": "registry.example.com/mesh/proxy:1.22.0",
                 "args": ["proxy", "sidecar", "--concurrency", "2", "--log-level", "warn"],
                 "ports": [{"name": "mesh", "containerPort": 15001}],
                 "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}}},
            ],
            "volumes": [{"name": "config", "configMap": {"name": f"{app}-config"}}],
        },
    }


def service(ns, name, selector, port=80, target=8080):
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
            "spec": {"selector": {"app": selector},
                     "ports": [{"name": "http", "port": port, "targetPort": target}]}}


def namespace(name):
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {LABEL: "true"}}}


def p50(runs):
    ok = [r["ms"] for r in runs if "error" not in r]
    if len(ok) < len(runs):
        raise ModeFailed(f"{len(runs) - len(ok)} of {len(runs)} fresh connections failed: "
                         f"{next(r['error'] for r in runs if 'error' in r)}")
    return statistics.median(ok)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Scale:
    def __init__(self, args):
        self.args = args
        self.env = read_env(os.path.join(os.path.dirname(args.kubeconfig), "cluster.env"))
        self.tmp = tempfile.mkdtemp(prefix="kubesocks-scale.")
        self.ssl = ssl.create_default_context(cafile=self.env["KUBESOCKS_CA_FILE"])

    def kubectl(self, *args, input=None, check=True):
        p = subprocess.run([self.args.kubectl, "--kubeconfig", self.args.kubeconfig, *args],
                           input=input, capture_output=True, text=True)
        if check and p.returncode:
            raise ModeFailed(f"kubectl {' '.join(args[:3])}: {p.stderr.strip()}")
        return p.stdout

    def api_get(self, path):
        """A GET straight to the API server; returns (ms, body)."""
        req = urllib.request.Request(self.env["KUBESOCKS_APISERVER"] + path,
                                     headers={"Authorization": f"Bearer {self.env['KUBESOCKS_ADMIN_TOKEN']}"})
        started = time.perf_counter()
        with urllib.request.urlopen(req, context=self.ssl, timeout=60) as r:
            body = r.read()
        return (time.perf_counter() - started) * 1000, body

    def list_requests(self):
        """LIST requests (each page one) of pods, services and endpointslices the API server has
        served. (A watch is counted only when it ends, so watches are not.)"""
        _, text = self.api_get("/metrics")
        total = 0.0
        for line in text.decode().splitlines():
            if line.startswith("apiserver_request_total{") and any(
                    f'resource="{r}"' in line for r in ("pods", "services", "endpointslices")) \
                    and 'verb="LIST"' in line and 'subresource=""' in line:
                total += float(line.rsplit(" ", 1)[1])
        return total

    # ------------------------------------------------------------- the cluster

    def create_web(self):
        objects = [namespace(WEB_NS), service(WEB_NS, "web", "web", 80, WEB_PORT)]
        for name, backend, ip in [*WEB_PODS, LONE_POD]:
            objects.append({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": WEB_NS, "labels": {"app": name.split("-")[0]},
                             "annotations": {"kubesocks.test/backend": backend, "kubesocks.test/pod-ip": ip}},
                "spec": {"nodeName": "node-spdy",
                         "containers": [{"name": "web", "image": "web", "ports": [{"containerPort": WEB_PORT}]}]},
            })
        self.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
        self.backend = subprocess.Popen(
            [self.env["KUBESOCKS_BACKEND_BIN"], "--tag", "kubesocks-scale",
             *[f"--serve={name}={backend}:{WEB_PORT}" for name, backend, _ in [*WEB_PODS, LONE_POD]]],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.wait_running()
        self.cluster_ip = self.kubectl("-n", WEB_NS, "get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}").strip()

    def wait_running(self, timeout=1800):
        """Until no pod is short of Running (the kubelet stub sets them so at 100 status updates a second)."""
        deadline = time.time() + timeout
        while True:
            left = self.kubectl("get", "pods", "-A", "--field-selector", "status.phase!=Running",
                                "-o", "name", "--chunk-size", "2000").split()
            if not left:
                return
            if time.time() > deadline:
                raise ModeFailed(f"{len(left)} pods not Running after {timeout} s")
            time.sleep(5)

    def fill(self, namespaces):
        """Fills the cluster up to `namespaces` namespaces of filler."""
        a = self.args
        first = getattr(self, "filled", 0)
        self.filled = namespaces

        def create(n):
            ns = f"scale-{n:03d}"
            items = [namespace(ns)]
            items += [service(ns, f"svc-{j}", f"svc-{j}") for j in range(a.services)]
            items += [realistic_pod(ns, i, a.services) for i in range(a.pods)]
            body = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
            # Namespace first, so the rest of the list lands in it.
            self.kubectl("create", "-f", "-", input=body)
            return len(body) / len(items)

        started = time.time()
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            sizes = list(pool.map(create, range(first, namespaces)))
        log(f"created namespaces {first} to {namespaces - 1} in {time.time() - started:.0f} s; "
            f"waiting for every pod to run")
        self.wait_running()
        took = time.time() - started
        _, body = self.api_get(f"/api/v1/namespaces/scale-000/pods?limit=1")
        pod_json = len(json.dumps(json.loads(body)["items"][0], separators=(",", ":")))
        return {"fill_s": round(took), "pod_json_bytes": pod_json, "object_json_bytes_at_create": round(statistics.mean(sizes))}

    def clean(self):
        self.kubectl("delete", "namespace", "-l", LABEL, "--wait=false", check=False)

    # ------------------------------------------------------------- the tools

    def wait_answer(self, target, proc, log_path, started_ns):
        """Starts a bench_client waiting for `target`'s first answer; returns a function
        that gives the ms from `started_ns` to that answer."""
        waiter = subprocess.Popen([self.args.client, *target, "wait", "--within", str(self.args.startup_timeout)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        def result():
            while waiter.poll() is None:
                if proc.poll() is not None:
                    waiter.kill()
                    raise ModeFailed(f"{proc.args[0]} exited ({proc.returncode}); its output:\n{tail(log_path, 20)}")
                time.sleep(0.02)
            out, err = waiter.communicate()
            r = json.loads(out) if out.strip() else {}
            if "ok_unix_ns" not in r:
                raise ModeFailed(f"no answer from {target} within {self.args.startup_timeout} s "
                                 f"({r.get('last_error') or err.strip()}); output:\n{tail(log_path, 20)}")
            return (r["ok_unix_ns"] - started_ns) / 1e6
        return result

    def fresh(self, target):
        out = subprocess.run([self.args.client, *target, "seq", "--count", str(self.args.fresh)],
                             capture_output=True, text=True, timeout=900).stdout
        return p50(json.loads(out)["runs"])

    def run_tool(self, tool, label):
        """Starts `tool` --starts times; the medians of what each start measured, and the p50s
        of fresh connections through the last one."""
        starts = [self.start_tool(tool, label, k, fresh=k == self.args.starts - 1) for k in range(self.args.starts)]
        res = {key: statistics.median(r[key] for r in starts)
               for key in starts[0] if key != "fresh_p50_ms"}
        res["first_answer_ms_each"] = [round(r["first_answer_ms"]) for r in starts]
        res["fresh_p50_ms"] = starts[-1]["fresh_p50_ms"]
        log(f"{tool} on the {label} cluster: {json.dumps(res)}")
        return res

    def start_tool(self, tool, label, k, fresh):
        port = free_port()
        log_path = os.path.join(self.tmp, f"{tool}-{label}-{k}.log")
        env = dict(os.environ, KUBESOCKS_STATE_DIR=os.path.join(self.tmp, "state"))
        if tool == "kubesocks":
            cmd = [self.args.kubesocks, "--kubeconfig", self.args.kubeconfig, "proxy-out",
                   "--listen-socks", f"127.0.0.1:{port}"]
            socks = ["--connect", f"127.0.0.1:{port}", "--socks"]
            targets = {"name": socks + [f"web.{WEB_NS}.svc.cluster.local:80"],
                       "pod IP": socks + [f"{WEB_PODS[0][2]}:{WEB_PORT}"],
                       "lone pod IP": socks + [f"{LONE_POD[2]}:{WEB_PORT}"],
                       "ClusterIP": socks + [f"{self.cluster_ip}:80"]}
        else:
            cmd = [self.args.kubectl, "--kubeconfig", self.args.kubeconfig, "-n", WEB_NS, "port-forward",
                   "--address", "127.0.0.1", "svc/web", f"{port}:80"]
            targets = {"name": ["--connect", f"127.0.0.1:{port}"]}
        res = {}
        requests_before = self.list_requests()
        with open(log_path, "w") as out:
            started_ns = time.time_ns()
            proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
            try:
                waits = {what: self.wait_answer(t, proc, log_path, started_ns) for what, t in targets.items()
                         if what != "ClusterIP"}
                res["first_answer_ms"] = waits["name"]()
                if "pod IP" in waits:
                    res["first_pod_ip_answer_ms"] = waits["pod IP"]()
                    # Only once every pod is listed: what follows is measured with the caches full.
                    res["first_lone_pod_ip_answer_ms"] = waits["lone pod IP"]()
                # What start-up left running (the rest of a first list, a session) settles first.
                time.sleep(2)
                res["rss_mib"] = rss_mib(proc.pid)
                res["cpu_s"] = cpu_seconds(proc.pid)
                res["list_requests"] = self.list_requests() - requests_before
                if fresh:
                    res["fresh_p50_ms"] = {what: self.fresh(t) for what, t in targets.items() if what != "lone pod IP"}
            finally:
                stop(proc, signal.SIGINT if tool == "kubesocks" else signal.SIGTERM)
        return res

    def on_demand(self):
        """What a pod IP looked up on demand would cost, beside a GET by name."""
        ip = WEB_PODS[0][2]
        by_ip = [self.api_get(f"/api/v1/pods?fieldSelector=status.podIP%3D{ip}")[0] for _ in range(30)]
        by_name = [self.api_get(f"/api/v1/namespaces/{WEB_NS}/pods/{WEB_PODS[0][0]}")[0] for _ in range(30)]
        return {"pod_by_ip_selector_p50_ms": statistics.median(by_ip),
                "pod_by_name_get_p50_ms": statistics.median(by_name)}


def fmt(v):
    if v is None:
        return "–"
    return f"{v:.1f}" if isinstance(v, float) and v < 100 else f"{v:.0f}"


def markdown(report):
    a = report["args"]
    runs = [("empty", report["empty"])] + [(f"{int(n):,} pods".replace(",", " "), report["sizes"][n])
                                           for n in sorted(report["sizes"], key=int)]
    rows = [
        ("first answer by name (ms)", "first_answer_ms", None),
        ("first answer by pod IP (ms)", "first_pod_ip_answer_ms", None),
        ("first answer by the IP of a pod behind no Service (ms)", "first_lone_pod_ip_answer_ms", None),
        ("RSS once ready (MiB)", "rss_mib", None),
        ("CPU to ready (s)", "cpu_s", None),
        ("list requests (pages) at start", "list_requests", None),
        ("fresh p50 by name (ms)", "fresh_p50_ms", "name"),
        ("fresh p50 by pod IP (ms)", "fresh_p50_ms", "pod IP"),
        ("fresh p50 by ClusterIP (ms)", "fresh_p50_ms", "ClusterIP"),
    ]
    head = [f"{tool}, {label}" for tool in ("kubesocks", "kubectl") for label, _ in runs]
    lines = ["| | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for title, key, sub in rows:
        cells = []
        for tool in ("kubesocks", "kubectl"):
            for _, run in runs:
                v = run[tool].get(key)
                cells.append(fmt(v.get(sub) if sub and v else v))
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    each = "; ".join(f"{label} {run['kubesocks']['first_answer_ms_each']}" for label, run in runs)
    od = report["on_demand"]
    lines += ["", f"Medians of {a['starts']} starts each (kubesocks' first answers by name, ms: {each}). "
              f"Namespaces of {a['services']} Services and {a['pods']} pods; the pods' JSON as the API server "
              f"sends it: {report['fill']['pod_json_bytes']} bytes each.",
              f"On demand instead of a pods cache: a pod list by `status.podIP` field selector took "
              f"p50 {fmt(od['pod_by_ip_selector_p50_ms'])} ms at the largest size (a GET of one pod by name "
              f"{fmt(od['pod_by_name_get_p50_ms'])} ms)."]
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--kubectl", required=True)
    p.add_argument("--kubesocks", required=True)
    p.add_argument("--client", required=True, help="the bench_client example binary")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--sizes", default="5000,20000",
                   help="the cluster sizes to measure, in pods, comma-separated (each a multiple of --pods)")
    p.add_argument("--services", type=int, default=20, help="Services per namespace")
    p.add_argument("--pods", type=int, default=100, help="pods per namespace")
    p.add_argument("--starts", type=int, default=3, help="starts of each tool per size (medians are reported)")
    p.add_argument("--fresh", type=int, default=200, help="fresh connections per p50")
    p.add_argument("--startup-timeout", type=float, default=120)
    p.add_argument("--keep", action="store_true", help="leave the filled namespaces in the cluster")
    args = p.parse_args()

    s = Scale(args)
    report = {"args": vars(args)}
    try:
        if s.kubectl("get", "namespace", "-l", LABEL, "-o", "name").strip():
            raise ModeFailed(f"namespaces labelled {LABEL} are left from an earlier run (--keep?): "
                             f"delete them first (kubectl delete namespace -l {LABEL})")
        s.create_web()
        report["empty"] = {tool: s.run_tool(tool, "empty") for tool in ("kubesocks", "kubectl")}
        report["sizes"] = {}
        for size in sorted(int(n) for n in args.sizes.split(",")):
            namespaces = size // args.pods
            log(f"filling to {size} pods: {namespaces} namespaces of {args.services} Services and {args.pods} pods")
            report["fill"] = s.fill(namespaces)
            report["sizes"][str(size)] = {tool: s.run_tool(tool, f"{size}-pods") for tool in ("kubesocks", "kubectl")}
        report["on_demand"] = s.on_demand()
    except ModeFailed as e:
        log(f"error: {e}")
        return 1
    finally:
        if getattr(s, "backend", None):
            stop(s.backend, signal.SIGTERM)
        if not args.keep:
            s.clean()
    os.makedirs(args.out_dir, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    table = markdown(report)
    with open(os.path.join(args.out_dir, f"scale-{stamp}.json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(args.out_dir, f"scale-{stamp}.md"), "w") as f:
        f.write(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
