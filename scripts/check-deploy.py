#!/usr/bin/env python3
"""Offline checks of deploy/ and k8s/ for machines without helm (make deploy-check / helm-lint).

- k8s/: every file parses as YAML; objects are well formed; selectors, named ports, ConfigMap /
  Secret references and keys agree; `kubectl kustomize k8s/` renders (when kubectl exists).
- deploy/helm/switchboard: Chart.yaml / values.yaml parse; template actions are balanced; every
  `include` names a defined template; every `.Values.x.y` path exists in values.yaml; the plain
  manifests agree with the chart's defaults on a few numbers that matter (grace period, ports).
- The chart rendered by scripts/render-chart.py (a Go-template stand-in for `helm template`)
  with the defaults and with each optional feature on parses as YAML, and with the defaults
  (plus ingress and serviceMonitor) equals k8s/ object for object, up to Helm's own labels,
  checksums, hook annotations and Secret values.
- deploy/dashboards/*.json: parses; every query uses a known switchboard_ metric.
"""
import glob
import json
import os
import re
import shutil
import subprocess
import sys

try:
    import yaml
except ImportError:
    sys.exit("check-deploy: needs PyYAML (apt-get install python3-yaml, or pip install pyyaml)")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHART = os.path.join(ROOT, "deploy/helm/switchboard")
errors = []


def err(where, msg):
    errors.append(f"{os.path.relpath(where, ROOT)}: {msg}")


def load_docs(path):
    with open(path) as f:
        try:
            return [d for d in yaml.safe_load_all(f) if d is not None]
        except yaml.YAMLError as e:
            err(path, f"YAML: {e}")
            return []


# ---------------------------------------------------------------- k8s/
def pod_spec(obj):
    kind = obj.get("kind")
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return obj["spec"]["template"]["spec"], obj["spec"]["template"]["metadata"].get("labels", {})
    return None, None


def check_k8s():
    files = sorted(glob.glob(os.path.join(ROOT, "k8s/*.yaml")) + glob.glob(os.path.join(ROOT, "k8s/optional/*.yaml")))
    objects = []
    for path in files:
        for doc in load_docs(path):
            if os.path.basename(path) == "kustomization.yaml":
                for res in doc.get("resources", []):
                    if not os.path.exists(os.path.join(ROOT, "k8s", res)):
                        err(path, f"resource {res} does not exist")
                continue
            for key in ("apiVersion", "kind", "metadata"):
                if key not in doc:
                    err(path, f"object without {key}")
            if doc.get("kind") != "Namespace" and doc.get("metadata", {}).get("namespace") != "switchboard":
                err(path, f"{doc.get('kind')} {doc['metadata'].get('name')} is not in namespace switchboard")
            objects.append((path, doc))

    by_kind = {}
    for path, o in objects:
        by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = (path, o)
    secret_keys = {n: set((o.get("stringData") or {}) | (o.get("data") or {})) for n, (_, o) in by_kind.get("Secret", {}).items()}
    configmaps = set(by_kind.get("ConfigMap", {}))

    workloads = []
    for path, o in objects:
        spec, labels = pod_spec(o)
        if spec is None:
            continue
        workloads.append((path, o, labels, spec))
        if o["kind"] == "Deployment":
            sel = o["spec"]["selector"]["matchLabels"]
            if any(labels.get(k) != v for k, v in sel.items()):
                err(path, f"{o['metadata']['name']}: selector {sel} does not match the pod labels")
        for c in spec.get("containers", []):
            ports = {p.get("name") for p in c.get("ports", [])}
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                p = c.get(probe)
                if not p:
                    continue
                for kind in ("httpGet", "tcpSocket"):
                    port = p.get(kind, {}).get("port")
                    if isinstance(port, str) and port not in ports:
                        err(path, f"{c['name']}.{probe} uses port {port!r}, not among {ports}")
            for e in c.get("env", []):
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref and ref["key"] not in secret_keys.get(ref["name"], set()):
                    err(path, f"{c['name']}: env {e['name']} wants key {ref['key']} of Secret {ref['name']}, which lacks it")
            for ef in c.get("envFrom", []):
                name = (ef.get("configMapRef") or {}).get("name")
                if name and name not in configmaps:
                    err(path, f"{c['name']}: envFrom ConfigMap {name} does not exist")
            if not c.get("resources", {}).get("requests"):
                err(path, f"{c['name']}: no resource requests")

    for name, (path, svc) in by_kind.get("Service", {}).items():
        sel = svc["spec"].get("selector", {})
        matches = [w for w in workloads if w[1]["kind"] == "Deployment" and all(w[2].get(k) == v for k, v in sel.items())]
        if not matches:
            err(path, f"Service {name} selects no Deployment")
            continue
        ports = {p.get("name") for c in matches[0][3]["containers"] for p in c.get("ports", [])}
        for p in svc["spec"]["ports"]:
            if isinstance(p.get("targetPort"), str) and p["targetPort"] not in ports:
                err(path, f"Service {name}: targetPort {p['targetPort']} is not a container port name")
    for name, (path, ing) in by_kind.get("Ingress", {}).items():
        for rule in ing["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                if p["backend"]["service"]["name"] not in by_kind.get("Service", {}):
                    err(path, f"Ingress {name} points at a missing Service")

    kubectl = shutil.which("kubectl")
    if kubectl:
        r = subprocess.run([kubectl, "kustomize", os.path.join(ROOT, "k8s")], capture_output=True, text=True)
        if r.returncode != 0:
            err(os.path.join(ROOT, "k8s"), f"kubectl kustomize failed: {r.stderr.strip()}")
        else:
            n = len([d for d in yaml.safe_load_all(r.stdout) if d])
            print(f"k8s: kubectl kustomize renders {n} objects")
    else:
        print("k8s: kubectl not found, kustomize rendering not checked")
    print(f"k8s: {len(objects)} objects in {len(files)} files checked")
    return by_kind


# ---------------------------------------------------------------- Helm chart
ACTION = re.compile(r"{{-?\s*(.*?)\s*-?}}", re.S)
OPENERS = ("if ", "range ", "with ", "define ", "block ")


def check_chart(k8s):
    chart = load_docs(os.path.join(CHART, "Chart.yaml"))
    values_docs = load_docs(os.path.join(CHART, "values.yaml"))
    if not chart or not values_docs:
        return
    for key in ("apiVersion", "name", "version"):
        if key not in chart[0]:
            err(os.path.join(CHART, "Chart.yaml"), f"missing {key}")
    values = values_docs[0]

    templates = sorted(glob.glob(os.path.join(CHART, "templates/*")))
    defined = set()
    for path in templates:
        defined |= set(re.findall(r'{{-?\s*define\s+"([^"]+)"', open(path).read()))

    def has_path(parts):
        node = values
        for p in parts:
            if isinstance(node, dict) and p in node:
                node = node[p]
            else:
                return False
        return True

    for path in templates:
        text = open(path).read()
        if text.count("{{") != text.count("}}"):
            err(path, f"{text.count('{{')} '{{{{' but {text.count('}}')} '}}}}'")
        depth = []
        for m in ACTION.finditer(text):
            body = m.group(1)
            if body.startswith("/*"):
                continue
            line = text.count("\n", 0, m.start()) + 1
            if body.startswith(OPENERS):
                depth.append((body.split()[0], line))
            elif body == "end":
                if not depth:
                    err(path, f"line {line}: 'end' without an opening action")
                else:
                    depth.pop()
            for name in re.findall(r'include\s+(?:\(print [^)]*\)|"([^"]+)")', body):
                if name and name not in defined:
                    err(path, f"line {line}: include of undefined template {name!r}")
            for ref in re.findall(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", body):
                if not has_path(ref.strip(".").split(".")):
                    err(path, f"line {line}: .Values{ref} is not in values.yaml")
        for kind, line in depth:
            err(path, f"line {line}: '{kind}' is never closed with 'end'")
        for m in re.finditer(r"print \.Template\.BasePath \"(/[^\"]+)\"", text):
            if not os.path.exists(os.path.join(CHART, "templates" + m.group(1))):
                err(path, f"checksum of missing template {m.group(1)}")
    print(f"chart: {len(templates)} templates checked, {len(defined)} named templates")

    # The plain manifests must match the chart's defaults where it matters.
    gw = values["gateway"]
    dep = k8s.get("Deployment", {}).get("switchboard-gateway")
    if dep:
        path, obj = dep
        spec = obj["spec"]["template"]["spec"]
        want = gw["preStopSleepSeconds"] + gw["drainGraceSeconds"] + 15
        if spec["terminationGracePeriodSeconds"] != want:
            err(path, f"terminationGracePeriodSeconds {spec['terminationGracePeriodSeconds']} != chart default {want}")
        if obj["spec"]["replicas"] != gw["replicas"]:
            err(path, "gateway replicas differ from the chart default")
        env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
        if env.get("SWITCHBOARD_DRAIN_GRACE_MS") != str(gw["drainGraceSeconds"] * 1000):
            err(path, "SWITCHBOARD_DRAIN_GRACE_MS differs from the chart default")
        pre = spec["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
        if pre[-1] != str(gw["preStopSleepSeconds"]):
            err(path, "preStop sleep differs from the chart default")
    for comp in ("membership", "messages", "presence"):
        dep = k8s.get("Deployment", {}).get(f"switchboard-{comp}")
        if not dep:
            err(os.path.join(ROOT, "k8s"), f"no Deployment switchboard-{comp}")
            continue
        port = dep[1]["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
        if port != values[comp]["port"]:
            err(dep[0], f"{comp} port {port} != chart default {values[comp]['port']}")


# ---------------------------------------------------------------- dashboards
KNOWN = {
    "switchboard_connections",
    "switchboard_events_in_total",
    "switchboard_events_out_total",
    "switchboard_errors_total",
    "switchboard_grpc_client_duration_seconds_bucket",
    "switchboard_grpc_client_duration_seconds_count",
    "switchboard_grpc_client_duration_seconds_sum",
    "switchboard_grpc_server_duration_seconds_bucket",
    "switchboard_grpc_server_duration_seconds_count",
    "switchboard_grpc_server_duration_seconds_sum",
    "switchboard_outbox_redelivered_total",
    "switchboard_send_stage_seconds_bucket",
}


def check_dashboards():
    files = sorted(glob.glob(os.path.join(ROOT, "deploy/dashboards/*.json")))
    for path in files:
        try:
            dash = json.load(open(path))
        except json.JSONDecodeError as e:
            err(path, f"JSON: {e}")
            continue
        panels = dash.get("panels", [])
        if not panels:
            err(path, "no panels")
        ids = [p.get("id") for p in panels]
        if len(ids) != len(set(ids)):
            err(path, "duplicate panel ids")
        for p in panels:
            for t in p.get("targets", []):
                for metric in re.findall(r"\bswitchboard_[a-z_]+", t.get("expr", "")):
                    if metric not in KNOWN:
                        err(path, f"panel {p.get('title')!r} uses unknown metric {metric}")
    print(f"dashboards: {len(files)} checked")


# ---------------------------------------------------------------- chart rendered vs k8s/
HELM_LABELS = {"helm.sh/chart", "app.kubernetes.io/version", "app.kubernetes.io/managed-by"}


def normalize(obj):
    """Drops what only Helm adds (or only the plain manifests have)."""
    def walk(node):
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                if k == "labels" and isinstance(v, dict):
                    v = {lk: lv for lk, lv in v.items() if lk not in HELM_LABELS}
                if k == "annotations" and isinstance(v, dict):
                    v = {ak: av for ak, av in v.items() if not ak.startswith(("checksum/", "helm.sh/"))}
                    if not v:
                        continue
                if k in ("namespace", "ttlSecondsAfterFinished"):
                    continue
                out[k] = walk(v)
            return out
        if isinstance(node, list):
            return [walk(x) for x in node]
        return node
    obj = walk(obj)
    if obj.get("kind") == "Secret":
        data = {**(obj.pop("data", None) or {}), **(obj.pop("stringData", None) or {})}
        obj["keys"] = sorted(data)
    return obj


def diff(a, b, path=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{path}.{k}: only in {'chart' if k in a else 'k8s/'}"
            d = diff(a[k], b[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} items in the chart, {len(b)} in k8s/"
        for i, (x, y) in enumerate(zip(a, b)):
            d = diff(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    return None if a == b else f"{path}: chart {a!r} != k8s/ {b!r}"


def check_rendered(k8s):
    import importlib.util
    spec = importlib.util.spec_from_file_location("render_chart", os.path.join(ROOT, "scripts/render-chart.py"))
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)

    variants = {
        "defaults": [],
        "autoscaling": ["gateway.autoscaling.enabled=true"],
        "ingress+tls": ["ingress.enabled=true", "ingress.tls=[{secretName: t, hosts: [chat.example.com]}]"],
        "serviceMonitor": ["serviceMonitor.enabled=true", "serviceMonitor.labels={release: prom}"],
        "existingSecret": ["existingSecret=my-secret"],
        "no migrate, no pdb": ["migrate.enabled=false", "gateway.podDisruptionBudget.enabled=false"],
        "extras": ["otlpEndpoint=http://otel:4317", "extraEnv={A: b}", "gateway.env={X: y}",
                   "imagePullSecrets=[{name: regcred}]", "gateway.nodeSelector={pool: gw}"],
    }
    rendered_default = None
    for name, sets in variants.items():
        try:
            docs = render.render(sets)
            objs = []
            for fname, text in docs.items():
                if fname == "NOTES.txt":
                    continue
                objs += [d for d in yaml.safe_load_all(text) if d]
        except Exception as e:  # noqa: BLE001 - report any failure of the stand-in renderer
            err(CHART, f"rendering with {name} ({' '.join(sets)}) failed: {type(e).__name__}: {e}")
            continue
        if name == "defaults":
            rendered_default = objs
        if name == "autoscaling" and not any(o["kind"] == "HorizontalPodAutoscaler" for o in objs):
            err(CHART, "autoscaling.enabled renders no HPA")
        if name == "existingSecret":
            for o in objs:
                if o["kind"] == "Secret":
                    err(CHART, f"existingSecret still renders Secret {o['metadata']['name']}")
        print(f"chart rendered ({name}): {len(objs)} objects")
        if name in ("ingress+tls", "serviceMonitor"):
            for o in [o for o in objs if o["kind"] in ("Ingress", "ServiceMonitor")]:
                want = {"Ingress": "switchboard", "ServiceMonitor": "switchboard-gateway"}[o["kind"]]
                plain = k8s.get(o["kind"], {}).get(want)
                if not plain:
                    err(os.path.join(ROOT, "k8s/optional"), f"no {o['kind']} {want}")
                    continue
                o = dict(o)
                if o["kind"] == "Ingress":
                    o["spec"] = {k: v for k, v in o["spec"].items() if k != "tls"}
                if o["kind"] == "ServiceMonitor":
                    o["metadata"]["labels"].pop("release", None)
                d = diff(normalize(o), normalize(plain[1]))
                if d:
                    err(plain[0], f"{o['kind']} differs from the chart: {d}")

    if rendered_default is None:
        return
    compared = 0
    for o in rendered_default:
        if o["kind"] == "Secret" and o["metadata"]["name"].endswith("-migrate"):
            continue  # hook-only Secret: the plain Job reads the main Secret
        plain = k8s.get(o["kind"], {}).get(o["metadata"]["name"])
        if not plain:
            err(os.path.join(ROOT, "k8s"), f"the chart renders {o['kind']} {o['metadata']['name']}, k8s/ lacks it")
            continue
        a = normalize(o)
        b = normalize(plain[1])
        if o["kind"] == "Job":
            # the hook Job reads the hook Secret; the plain one the main Secret
            for e in a["spec"]["template"]["spec"]["containers"][0]["env"]:
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    ref["name"] = "switchboard"
        d = diff(a, b)
        if d:
            err(plain[0], f"{o['kind']} {o['metadata']['name']} differs from the chart's default rendering: {d}")
        compared += 1
    print(f"k8s/ vs chart defaults: {compared} objects compared")


k8s_objects = check_k8s()
check_chart(k8s_objects)
check_rendered(k8s_objects)
check_dashboards()
if errors:
    print("\n".join(["FAILED:"] + errors), file=sys.stderr)
    sys.exit(1)
print("deploy checks passed")
