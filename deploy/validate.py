"""Validate deploy/, helm/ and terraform/ with the tools their users run.

Usage: validate.py PORTCULLIS_BINARY. Exits non-zero, naming each failure. Run by
tests/tests/deploy.rs with the tools scripts/test.sh installs into .venv-deploy.

- the chart: linted and rendered by the Helm library (helm-python-sdk, Helm v4) with the default
  values and ci/production-values.yaml; its values.schema.json accepts both and refuses values
  that would break the gateway; the manifests validated against the Kubernetes schemas
  (kubernetes-validate);
- checkov over the rendered manifests, the Dockerfile and the Terraform module, no failed check;
  hadolint over the Dockerfile;
- the systemd unit: `systemd-analyze verify`, and `systemd-analyze security` exposure <= 2.0;
- the compose file's hardening, read as data (checkov has no compose framework);
- the Terraform parsed (python-hcl2): every variable typed, documented and used, every output
  documented;
- the configs the chart renders and the compose and systemd samples load in the real binary and
  pass `portcullis check`; a gateway started on the chart's config answers its probe paths.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import hcl2
import helm_python as helm
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "portcullis"
K8S_VERSION = "1.33"
FAILURES: list[str] = []


def fail(what: str) -> None:
    FAILURES.append(what)
    print(f"FAIL {what}", flush=True)


def ok(what: str) -> None:
    print(f"ok   {what}", flush=True)


def render(values: dict) -> list[dict]:
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(values)
        out = chart.render(values, name="portcullis", namespace="portcullis")
    docs = []
    for name, text in sorted(out.items()):
        if not name.endswith(".yaml"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def chart_checks(tmp: Path) -> dict[str, list[dict]]:
    lint = helm.lint(str(CHART))
    # Severities: 1 information (e.g. "icon is recommended"), 2 warning, 3 error.
    serious = [m for m in lint.get("messages", []) if m.get("severity", 3) >= 2]
    if lint.get("errors") or serious:
        fail(f"helm lint: {json.dumps(lint, default=str)}")
    else:
        ok(f"helm lint ({len(lint.get('messages', []))} informational)")
    sets = {
        "default": {},
        "production": yaml.safe_load((CHART / "ci" / "production-values.yaml").read_text()),
    }
    rendered = {}
    for label, values in sets.items():
        try:
            docs = render(values)
        except Exception as e:  # a template or schema error
            fail(f"helm template ({label}): {e}")
            continue
        rendered[label] = docs
        kinds = sorted(d["kind"] for d in docs)
        ok(f"helm template ({label}): {', '.join(kinds)}")
        for d in docs:
            if d["kind"] == "ServiceMonitor":
                # A CRD of the Prometheus operator, not in the Kubernetes schemas.
                continue
            try:
                kubernetes_validate.validate(d, K8S_VERSION, strict=True)
            except Exception as e:
                fail(f"kubernetes-validate ({label}) {d['kind']}/{d['metadata']['name']}: {e}")
        ok(f"kubernetes-validate ({label}, Kubernetes {K8S_VERSION})")
        (tmp / f"{label}.yaml").write_text(yaml.safe_dump_all(docs))
    # The schema and the templates refuse what would break the gateway.
    secret = {"name": "db", "key": "password"}
    refused = {
        "a store URL with a password": (
            {"store": {"postgres": {"enabled": True, "url": "postgres://u:pw@h/d", "passwordSecret": secret}}},
            "url",
        ),
        "config that overrides the store": ({"config": {"store": "sqlite:///tmp/x.db"}}, "config"),
        "an unknown value": ({"replicas": 3}, "replicas"),
        "several replicas on SQLite": ({"replicaCount": 2}, "shared store"),
        "PostgreSQL without its password Secret": (
            {"store": {"postgres": {"enabled": True, "url": "postgres://u@h/d"}}},
            "passwordSecret",
        ),
        "a secret mount on the chart's own path": ({"extraSecretMounts": [{"name": "db"}]}, "name"),
        "a ServiceMonitor Prometheus cannot reach": (
            {"serviceMonitor": {"enabled": True, "keySecret": {"name": "m", "key": "key"}}},
            "allowedNamespaces",
        ),
    }
    for why, (values, says) in refused.items():
        try:
            render(values)
            fail(f"the chart accepted {why}")
        except Exception as e:
            # Refused for the reason meant, not any error.
            (ok if says in str(e) else fail)(f"the chart refuses {why}: {str(e)[:200]}")
    prod = rendered.get("production", [])
    deployment = next((d for d in prod if d["kind"] == "Deployment"), None)
    if deployment:
        spec = deployment["spec"]["template"]["spec"]
        c = spec["containers"][0]
        expect = {
            "no service account token": spec.get("automountServiceAccountToken") is False,
            "non-root": spec["securityContext"].get("runAsNonRoot") is True,
            "read-only root": c["securityContext"].get("readOnlyRootFilesystem") is True,
            "no privilege escalation": c["securityContext"].get("allowPrivilegeEscalation") is False,
            "every capability dropped": c["securityContext"]["capabilities"]["drop"] == ["ALL"],
            "seccomp RuntimeDefault": spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault",
            "liveness on /healthz": c["livenessProbe"]["httpGet"]["path"] == "/healthz",
            "readiness on /readyz": c["readinessProbe"]["httpGet"]["path"] == "/readyz",
            "config checksum": "checksum/config" in deployment["spec"]["template"]["metadata"]["annotations"],
            "resources": bool(c["resources"]["limits"]) and bool(c["resources"]["requests"]),
        }
        for what, held in expect.items():
            (ok if held else fail)(f"deployment: {what}")
        kinds = {d["kind"] for d in prod}
        for k in ["PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy", "Service", "Ingress", "ServiceAccount", "ServiceMonitor", "ConfigMap"]:
            (ok if k in kinds else fail)(f"production render has a {k}")
    return rendered


def checkov(tmp: Path) -> None:
    exe = Path(sys.executable).parent / "checkov"
    targets = [
        ("rendered chart (default)", ["-f", str(tmp / "default.yaml"), "--framework", "kubernetes"]),
        ("rendered chart (production)", ["-f", str(tmp / "production.yaml"), "--framework", "kubernetes"]),
        ("Dockerfile", ["-f", str(ROOT / "deploy" / "Dockerfile"), "--framework", "dockerfile"]),
        ("Terraform module", ["-d", str(ROOT / "terraform"), "--framework", "terraform"]),
    ]
    for label, args in targets:
        r = subprocess.run(
            [str(exe), *args, "--quiet", "--compact", "--output", "json", "--skip-download"],
            capture_output=True, text=True, timeout=600,
        )
        try:
            report = json.loads(r.stdout or "{}")
        except json.JSONDecodeError:
            fail(f"checkov {label}: no report ({r.stderr[-2000:]})")
            continue
        reports = report if isinstance(report, list) else [report]
        if r.returncode not in (0, 1) or not reports or not report:
            fail(f"checkov {label}: exit {r.returncode}, no report ({r.stderr[-2000:]})")
            continue
        failed = []
        for rep in reports:
            for check in rep.get("results", {}).get("failed_checks", []):
                failed.append(f"{check['check_id']} {check.get('resource')}: {check.get('check_name')}")
        passed = sum(rep.get("summary", {}).get("passed", 0) for rep in reports)
        if failed:
            fail(f"checkov {label}: " + "; ".join(failed))
        elif passed == 0 and label != "Terraform module":
            # Every check skipped or none run: not a pass. (No checkov check applies to a
            # helm_release, so the module's report is empty by nature.)
            fail(f"checkov {label}: no check passed")
        else:
            ok(f"checkov {label}: {passed} passed, none failed")


def hadolint() -> None:
    exe = Path(sys.executable).parent / "hadolint"
    r = subprocess.run([str(exe), str(ROOT / "deploy" / "Dockerfile")], capture_output=True, text=True)
    (ok if r.returncode == 0 else fail)(f"hadolint Dockerfile {r.stdout.strip()}")


def systemd(binary: Path, tmp: Path) -> None:
    unit = ROOT / "deploy" / "systemd" / "portcullis.service"
    # Verified as written but for the binary's path: the one built here, not yet installed.
    copy = tmp / unit.name
    copy.write_text(unit.read_text().replace("/usr/local/bin/portcullis", str(binary)))
    r = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True)
    noise = [l for l in (r.stdout + r.stderr).splitlines() if l.strip() and "portcullis" in l]
    (ok if r.returncode == 0 and not noise else fail)(f"systemd-analyze verify {' '.join(noise)}")
    r = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(unit)],
        capture_output=True, text=True,
    )
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout + r.stderr)
    level = float(m.group(1)) if m else 99.0
    (ok if level <= 2.0 else fail)(f"systemd-analyze security: exposure {level} (at most 2.0)")


def compose() -> None:
    spec = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    for name, svc in spec["services"].items():
        expect = {
            "read_only": svc.get("read_only") is True,
            "cap_drop ALL": svc.get("cap_drop") == ["ALL"],
            "no-new-privileges": "no-new-privileges:true" in svc.get("security_opt", []),
            "memory and cpu limits": "mem_limit" in svc and "cpus" in svc,
            "pids limit": "pids_limit" in svc,
        }
        if name != "otel-collector":  # its image has no shell or client to check itself with
            expect["healthcheck"] = "healthcheck" in svc
        for what, held in expect.items():
            (ok if held else fail)(f"compose {name}: {what}")
    gw = spec["services"]["portcullis"]
    admin = [p for p in gw["ports"] if p.endswith(":8081")]
    (ok if admin and all(p.startswith("127.0.0.1:") for p in admin) else fail)(
        "compose: the admin listener is published on loopback only"
    )
    files = all("file" in s for s in spec.get("secrets", {}).values())
    (ok if files and gw.get("secrets") else fail)("compose: secrets are files")


def terraform() -> None:
    tf = ROOT / "terraform"
    def load(path: Path) -> dict:
        with open(path) as f:
            return hcl2.load(f)
    variables = {}
    for block in load(tf / "variables.tf").get("variable", []):
        variables.update(block)
    used_text = "".join((tf / f).read_text() for f in ["main.tf", "outputs.tf"])
    for name, body in variables.items():
        name = name.strip('"')
        for field in ["description", "type"]:
            (ok if body.get(field) else fail)(f"terraform variable {name}: {field}")
        (ok if f"var.{name}" in used_text else fail)(f"terraform variable {name} is used")
    for block in load(tf / "outputs.tf").get("output", []):
        for name, body in block.items():
            (ok if body.get("description") else fail)(f"terraform output {name.strip(chr(34))}: description")
    example = load(tf / "examples" / "basic" / "main.tf")
    modules = {k.strip('"'): v for b in example.get("module", []) for k, v in b.items()}
    given = {k for k in modules.get("portcullis", {}) if not k.startswith("__")} - {"source"}
    required = {n.strip('"') for n, b in variables.items() if "default" not in b}
    missing = required - given
    unknown = given - {n.strip('"') for n in variables}
    (ok if not missing and not unknown else fail)(
        f"terraform example sets every required variable (missing {sorted(missing)}, unknown {sorted(unknown)})"
    )


def gateway_configs(binary: Path, rendered: dict[str, list[dict]], tmp: Path) -> None:
    configs = {}
    for label, docs in rendered.items():
        cm = next(d for d in docs if d["kind"] == "ConfigMap")
        configs[f"chart ({label})"] = cm["data"]["portcullis.yaml"]
    configs["compose sample"] = (ROOT / "deploy" / "compose" / "portcullis.yaml").read_text()
    configs["systemd sample"] = (ROOT / "deploy" / "systemd" / "portcullis.yaml").read_text()
    for label, text in configs.items():
        path = tmp / (re.sub(r"\W+", "-", label) + ".yaml")
        path.write_text(text)
        r = subprocess.run([str(binary), "check", "--config", str(path)], capture_output=True, text=True)
        (ok if r.returncode == 0 else fail)(f"portcullis check on the {label} config: {r.stdout}{r.stderr}".strip())
    # The chart's default config, as the pod runs it, with its volume at a temporary path.
    state = tmp / "state"
    state.mkdir()
    cfg = yaml.safe_load(configs["chart (default)"])
    text = json.dumps(cfg).replace("/var/lib/portcullis", str(state))
    cfg = json.loads(text)
    cfg["listen"] = "127.0.0.1:0"
    cfg["admin_listen"] = "127.0.0.1:0"
    path = tmp / "pod.yaml"
    path.write_text(yaml.safe_dump(cfg))
    # The environment the pod gives it.
    deployment = next(d for d in rendered["default"] if d["kind"] == "Deployment")
    env = {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    key = subprocess.run(
        [str(binary), "keys", "create", "--config", str(path), "--name", "auditor", "--role", "auditor"],
        capture_output=True, text=True,
    )
    auditor = next((l.split(": ", 1)[1] for l in key.stdout.splitlines() if l.startswith("key: ")), None)
    proc = subprocess.Popen(
        [str(binary), "serve", "--config", str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, **env, "PORTCULLIS_LOG": "warn"},
    )
    try:
        base = admin = None
        deadline = time.time() + 30
        while time.time() < deadline and (base is None or admin is None):
            # The listeners are announced on stdout.
            line = proc.stdout.readline()
            if not line:
                break
            m = re.search(r"mcp listening on (http://\S+)/mcp", line)
            if m:
                base = m.group(1)
            m = re.search(r"admin listening on (http://\S+)/ui/", line)
            if m:
                admin = m.group(1)
        # Whatever it logs from now on is read and dropped, so a full pipe never stops it.
        threading.Thread(target=lambda: proc.stdout.read(), daemon=True).start()
        if base is None or admin is None:
            fail("a gateway on the chart's config did not start")
            return
        for probe in ["/healthz", "/readyz"]:
            status = 0
            for _ in range(100):
                try:
                    with urllib.request.urlopen(base + probe, timeout=2) as resp:
                        status = resp.status
                except Exception:
                    status = 0
                if status == 200:
                    break
                time.sleep(0.1)
            (ok if status == 200 else fail)(f"a gateway on the chart's config answers {probe}: {status}")
        r = subprocess.run(
            [str(binary), "health", "--url", base + "/readyz"], capture_output=True, text=True
        )
        (ok if r.returncode == 0 else fail)(f"the image's HEALTHCHECK command against it: {r.stdout}{r.stderr}".strip())
        # The self-audit cites the chart that started it, with the confinement seen.
        req = urllib.request.Request(
            admin + "/admin/self-audit?format=json", headers={"Authorization": f"Bearer {auditor}"}
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            report = json.load(resp)
        rows = [e for e in report.get("evidence", []) if e.get("source") == "probe: deployment"]
        want = f"started by `{env['PORTCULLIS_DEPLOYMENT']}`"
        cited = any(want in str(e.get("observed")) for e in rows)
        (ok if cited else fail)(f"the self-audit cites the chart as the deployment: {rows}")
    finally:
        proc.kill()
        proc.wait()


def main(binary: str) -> None:
    binary_path = Path(binary).resolve()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rendered = chart_checks(tmp)
        checkov(tmp)
        hadolint()
        systemd(binary_path, tmp)
        compose()
        terraform()
        gateway_configs(binary_path, rendered, tmp)
    if FAILURES:
        print(f"\n{len(FAILURES)} failure(s)")
        sys.exit(1)
    print("\nall deploy checks passed")


if __name__ == "__main__":
    main(sys.argv[1])
