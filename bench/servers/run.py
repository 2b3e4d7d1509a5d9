#!/usr/bin/env python3
"""Servers benchmark: "the classic graph" (package -> config file -> service, restarted on a
config change) on H booted test hosts (systemd-nspawn, PID 1 systemd, sshd), mgmt-rs
(`mgmt run --remote`, sudo) beside Ansible (become) running the same play, cold, warm and
drift, in the same sitting. A benchmark that prints tables; never a test.

    python3 bench/servers/run.py --hosts 10 --runs 3

Needs root (the test bed). Reuses bench/fleet/run.py (imported as a module): `measure` (wait4
rusage, hosts' CPU, a cpuacct cgroup), the Ansible counting callback, `machine`. Results go to
bench/servers/results/latest/ (summary.md, summary.csv, runs.csv, results.json).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import csv
import datetime
import importlib.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
WORK = HERE / "work"
RESULTS = HERE / "results" / "latest"
TESTBED = ROOT / "target" / "debug" / "testbed"
USER = "mgmttest"
PKG = "mgmt-testd"
CONF = "/etc/mgmt-testd.conf"
CONTENT = "PORT=8081\n"
PORT = "8081"
PHASES = ("cold-nocache", "cold", "warm", "drift")
TOOLS = ("mgmt", "ansible")
DRIFT_SETTLE = 2.0  # seconds between the drift reset and the run
DRIFT_RELOAD = False  # --drift-reload: a daemon-reload after the drift stop (see README)
SCENARIO = "classic"  # --scenario: classic (pkg -> file -> svc) or accounts (service account)

spec = importlib.util.spec_from_file_location("fleet", ROOT / "bench" / "fleet" / "run.py")
fleet = importlib.util.module_from_spec(spec)
sys.modules["fleet"] = fleet
spec.loader.exec_module(fleet)
log, run, measure, clean_env = fleet.log, fleet.run, fleet.measure, fleet.clean_env


# ---------------------------------------------------------------------------------------------
# Tools


def ensure_venv(upgrade: bool) -> tuple[Path, dict]:
    """The fleet bench's venv if it exists, else our own (bench/servers/.venv) built the same
    way: the newest Python 3.12+ (pyenv versions resolved directly, not through its shims) and
    the latest ansible-core from PyPI."""
    for venv in (ROOT / "bench" / "fleet" / ".venv", HERE / ".venv"):
        if (venv / "bin" / "ansible-playbook").exists():
            break
    else:
        venv = HERE / ".venv"
        cands = sorted(Path.home().glob(".pyenv/versions/3.1[2-9].*/bin/python3"), reverse=True)
        base = str(cands[0]) if cands else (shutil.which("python3.13") or shutil.which("python3.12")
                                            or sys.executable)
        log(f"creating {venv} with {base}")
        run([base, "-m", "venv", str(venv)])
        upgrade = True
    py = venv / "bin" / "python"
    if upgrade:
        log("installing the latest ansible-core from PyPI")
        run([str(py), "-m", "pip", "install", "-q", "--upgrade", "pip", "ansible-core"])
    out = run([str(py), "-m", "pip", "list", "--format", "json"], capture_output=True, text=True).stdout
    versions = {p["name"].lower(): p["version"] for p in json.loads(out)}
    pyver = run([str(py), "-c", "import platform; print(platform.python_version())"],
                capture_output=True, text=True).stdout.strip()
    return venv, {"ansible-core": versions.get("ansible-core"), "venv-python": pyver}


def ensure_binaries(mgmt: str | None, build: bool = True) -> Path:
    if build or not TESTBED.exists():
        log("building the test bed")
        run(["flock", "/tmp/cargo-build.lock", "cargo", "build", "-q", "-p", "testbed", "--bin", "testbed"], cwd=ROOT)
    if mgmt:
        return Path(mgmt).resolve()
    log("building the static mgmt binary (scripts/build-static)")
    out = run(["flock", "/tmp/cargo-build.lock", "bash", "scripts/build-static"], cwd=ROOT,
              capture_output=True, text=True).stdout
    return (ROOT / out.strip().splitlines()[-1]).resolve()


# ---------------------------------------------------------------------------------------------
# The apt repository: mgmt-testd 1.0 exactly as crates/testbed/src/aptrepo.rs builds it


def testd_program(version: str) -> str:
    src = (ROOT / "crates" / "testbed" / "src" / "aptrepo.rs").read_text()
    m = re.search(r'const TESTD_PROGRAM: &str = r##"(.*?)"##;', src, re.S)
    return m.group(1).replace("@VERSION@", version).replace("@PORT@", "8080")


def build_repo(d: Path, version: str = "1.0") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o755)
    pool = d / "pool"
    shutil.rmtree(pool, ignore_errors=True)
    pool.mkdir(mode=0o755)
    stage = d / ".build"
    shutil.rmtree(stage, ignore_errors=True)
    unit = (f"[Unit]\nDescription=mgmt test daemon {version}\n\n"
            "[Service]\nType=notify\nExecStart=/usr/bin/mgmt-testd\nExecReload=/bin/kill -HUP $MAINPID\n"
            "RuntimeDirectory=mgmt-testd\n\n[Install]\nWantedBy=multi-user.target\n")
    files = [("/usr/bin/mgmt-testd", testd_program(version), 0o755),
             ("/etc/mgmt-testd.conf", "# mgmt-testd's port\nPORT=8080\n", 0o644),
             (f"/lib/systemd/system/{PKG}.service", unit, 0o644)]
    ctl = stage / "DEBIAN"
    ctl.mkdir(parents=True, mode=0o755)
    os.chmod(stage, 0o755)
    (ctl / "control").write_text(
        f"Package: {PKG}\nVersion: {version}\nArchitecture: all\n"
        "Maintainer: mgmt-rs test bed <mgmt-testbed@localhost.invalid>\nDepends: python3\n"
        f"Section: misc\nPriority: optional\nDescription: mgmt test package {PKG}\n")
    u = f"{PKG}.service"
    scripts = {
        "postinst": ("if [ -d /run/systemd/system ]; then\n  systemctl daemon-reload\n  "
                     f"if [ \"$1\" = configure ] && [ -n \"$2\" ]; then systemctl try-restart {u} || true; fi\nfi\n"),
        "prerm": f"if [ -d /run/systemd/system ] && [ \"$1\" = remove ]; then\n  systemctl stop {u} || true\nfi\n",
        "postrm": "if [ -d /run/systemd/system ]; then\n  systemctl daemon-reload || true\nfi\n",
    }
    for name, body in scripts.items():
        (ctl / name).write_text(f"#!/bin/sh\nset -e\n{body}")
        os.chmod(ctl / name, 0o755)
    conffiles = ""
    for path, text, mode in files:
        p = stage / path.lstrip("/")
        for parent in reversed([q for q in p.relative_to(stage).parents if str(q) != "."]):
            (stage / parent).mkdir(mode=0o755, exist_ok=True)
            os.chmod(stage / parent, 0o755)
        p.write_text(text)
        os.chmod(p, mode)
        if path.startswith("/etc"):
            conffiles += path + "\n"
    (ctl / "conffiles").write_text(conffiles)
    os.chmod(ctl / "control", 0o644)
    os.chmod(ctl / "conffiles", 0o644)
    run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(stage),
         str(pool / f"{PKG}_{version}_all.deb")], stdout=subprocess.DEVNULL)
    shutil.rmtree(stage)
    idx = run(["dpkg-scanpackages", "--multiversion", "pool", "/dev/null"], cwd=d,
              capture_output=True).stdout
    (d / ".Packages.tmp").write_bytes(idx)
    os.chmod(d / ".Packages.tmp", 0o644)
    os.replace(d / ".Packages.tmp", d / "Packages")
    return d


# ---------------------------------------------------------------------------------------------
# Booted test bed


@dataclass
class Host:
    name: str
    addr: str
    netns: str
    pid: int  # the container's init (systemd, PID 1 inside): /proc/PID/root is its file system

    def path(self, p: str) -> Path:
        return Path(f"/proc/{self.pid}/root") / p.lstrip("/")


class Bed(fleet.Bed):
    def counters(self) -> tuple[int, int]:
        try:
            return super().counters()
        except OSError:
            return 0, 0


def ppid_comm(pid: str) -> tuple[int, str]:
    stat = Path(f"/proc/{pid}/stat").read_text()
    comm = stat[stat.index("(") + 1:stat.rindex(")")]
    return int(stat.rsplit(")", 1)[1].split()[1]), comm


def leader_of(netns: str) -> int:
    """The container's systemd: the process of the host's network namespace whose parent is
    systemd-nspawn (the child of the systemd-nspawn process)."""
    target = os.stat(f"/run/netns/{netns}")
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{d}/ns/net")
            if (st.st_dev, st.st_ino) != (target.st_dev, target.st_ino):
                continue
            ppid, comm = ppid_comm(d)
            if comm == "systemd" and ppid_comm(str(ppid))[1].startswith("systemd-nspawn"):
                return int(d)
        except (OSError, ValueError):
            continue
    raise SystemExit(f"no container init found in netns {netns}")


def bed_up(n: int, repo: Path) -> tuple[Bed, float]:
    t0 = time.monotonic()
    p = subprocess.run([str(TESTBED), "up", str(n), "--booted", "--apt-repo", str(repo)],
                       capture_output=True, text=True)
    took = time.monotonic() - t0
    m = re.search(r"^dir (\S+)", p.stdout, re.M)
    if not m:
        # A half-built bed: remove it if it printed a dir at all.
        raise SystemExit(f"testbed up failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    d = Path(m.group(1))
    bed = Bed(d, [], "")
    try:
        netns = dict(re.findall(r"^\s+ssh -F \S+ (h\d+)\s+# \S+ in netns (\S+)", p.stdout, re.M))
        cfg = (d / "ssh_config").read_text()
        for name, addr in re.findall(r"^Host (\S+)\n\s+HostName (\S+)", cfg, re.M):
            bed.hosts.append(Host(name, addr, netns[name], leader_of(netns[name])))
        slot = re.search(r"mgmt-testbed-(\d{3})-", d.name)
        bed.bridge = f"mt{slot.group(1)}b" if slot else ""
    except BaseException:
        bed_down(bed)
        raise
    return bed, took


def bed_down(bed: Bed) -> None:
    run([str(TESTBED), "down", str(bed.dir)], check=False)


def host_sh(h: Host, script: str, check: bool = True) -> subprocess.CompletedProcess:
    """A root shell inside every namespace of the container (not measured)."""
    return subprocess.run(["nsenter", "-t", str(h.pid), "-m", "-u", "-i", "-n", "-p", "-C", "--",
                           "/bin/sh", "-c", script], capture_output=True, text=True, check=check,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LC_ALL": "C"})


def on_all(bed: Bed, fn) -> list:
    with cf.ThreadPoolExecutor(len(bed.hosts)) as ex:
        return list(ex.map(fn, bed.hosts))


# ---------------------------------------------------------------------------------------------
# Inputs: the same desired state for both tools


def mgmt_graph(h: Host) -> str:
    return f"""\
graph: classic
comment: pkg -> file -> svc, with a restart on config change
remote: ssh://{USER}@{h.addr}:22
sudo: true
resources:
  pkg:
  - name: {PKG}
    state: installed
  file:
  - name: testd-conf
    path: {CONF}
    content: {json.dumps(CONTENT)}
    mode: "0644"
    owner: root
    group: root
  svc:
  - name: {PKG}
    state: running
    startup: enabled
edges:
- name: the package before its config
  from: {{kind: pkg, name: {PKG}}}
  to: {{kind: file, name: testd-conf}}
- name: the config restarts the service
  from: {{kind: file, name: testd-conf}}
  to: {{kind: svc, name: {PKG}}}
  notify: true
"""


def gen_inputs(bed: Bed, work: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)
    (work / "mgmt").mkdir(parents=True)
    graph = accounts_graph if SCENARIO == "accounts" else mgmt_graph
    for h in bed.hosts:
        (work / "mgmt" / f"{h.name}.yaml").write_text(graph(h))
    d = work / "ansible"
    (d / "callback_plugins").mkdir(parents=True)
    (d / "callback_plugins" / "fleetcount.py").write_text(fleet.ANSIBLE_CALLBACK)
    n = len(bed.hosts)
    (d / "ansible.cfg").write_text(f"""\
[defaults]
inventory = inventory.ini
forks = {max(n, 5)}
host_key_checking = True
gathering = explicit
interpreter_python = /usr/bin/python3
callbacks_enabled = fleetcount
callback_plugins = ./callback_plugins
retry_files_enabled = False
local_tmp = {d}/tmp

[ssh_connection]
pipelining = True
ssh_args = -F {bed.ssh_config} -o ControlMaster=auto -o ControlPersist=60s
control_path_dir = {d}/cp
""")
    (d / "inventory.ini").write_text("[servers]\n" + "".join(
        f"{h.name} ansible_user={USER}\n" for h in bed.hosts))
    if SCENARIO == "accounts":
        (d / "site.yml").write_text(accounts_play())
        return
    (d / "site.yml").write_text(f"""\
- hosts: servers
  gather_facts: false
  become: true
  tasks:
  - name: package
    ansible.builtin.apt: {{name: {PKG}, state: present}}
  - name: config
    ansible.builtin.copy: {{content: {json.dumps(CONTENT)}, dest: {CONF}, mode: "0644", owner: root, group: root}}
    notify: restart
  - name: service
    ansible.builtin.systemd_service: {{name: {PKG}, state: started, enabled: true}}
  handlers:
  - name: restart
    ansible.builtin.systemd_service: {{name: {PKG}, state: restarted}}
""")


# ---------------------------------------------------------------------------------------------
# Running the tools


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run_mgmt(bed: Bed, work: Path, mgmt: Path) -> tuple[fleet.Sample, dict]:
    d = work / "mgmt"
    cmd = [str(mgmt), "run"]
    for h in bed.hosts:
        cmd += ["--remote", str(d / f"{h.name}.yaml")]
    cmd += ["--ssh-config", str(bed.ssh_config), "--known-hosts", str(bed.known_hosts),
            "--ssh-identity", str(bed.key), "--converged-timeout", "0",
            "--client-urls", "http://127.0.0.1:0", "--cconns", str(len(bed.hosts)), "--json"]
    s = measure(bed, cmd, d, clean_env())
    by_addr = {h.addr: h.name for h in bed.hosts}
    per: dict[str, dict] = {}
    for line in s.out.splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        host = ev.get("host")
        if not host:
            continue
        host = by_addr.get(host.split("@")[-1].split(":")[0], host)
        c = per.setdefault(host, {"changed": 0, "applied": [], "summary_changed": None,
                                  "failed": 0, "ok": False})
        if ev.get("event") == "host_output":
            m = re.search(r"(\w+\[[^\]]+\]): applied", ANSI.sub("", ev.get("line", "")))
            if m:
                c["changed"] += 1
                c["applied"].append(m.group(1))
        elif ev.get("event") == "host_failed":
            c["failed"] += 1
        elif ev.get("event") == "host_summary":
            c["ok"] = ev.get("status") == "ok"
            c["summary_changed"] = ev.get("changed")
    return s, per


def ansible_masters_close(work: Path) -> None:
    cp = work / "ansible" / "cp"
    if cp.is_dir():
        for sock in cp.iterdir():
            run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "x"], check=False,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_ansible(bed: Bed, work: Path, venv: Path) -> tuple[fleet.Sample, dict]:
    d = work / "ansible"
    count = d / ".count.json"
    count.unlink(missing_ok=True)
    env = clean_env()
    env.update(ANSIBLE_CONFIG=str(d / "ansible.cfg"), FLEET_COUNT_OUT=str(count), ANSIBLE_NOCOLOR="1")
    s = measure(bed, [str(venv / "bin" / "ansible-playbook"), "site.yml"], d, env)
    per = {h.name: {"changed": 0, "failed": 0, "ok": s.rc == 0} for h in bed.hosts}
    if count.exists():
        c = json.loads(count.read_text())
        for h, n in c["changed"].items():
            per[h]["changed"] = n
        for h, n in c["failed"].items():
            per[h]["failed"] = n
            per[h]["ok"] = False
    return s, per


# ---------------------------------------------------------------------------------------------
# Reset and check (as root inside the hosts; never measured)


def reset(bed: Bed, work: Path, phase: str) -> None:
    ansible_masters_close(work)  # every run opens its own connections, as mgmt's do
    if SCENARIO == "accounts":
        return accounts_reset(bed, phase)
    if phase.startswith("cold"):
        # disable first: a purge alone leaves the enablement symlink behind.
        script = (f"systemctl disable --now {PKG} >/dev/null 2>&1; "
                  f"DEBIAN_FRONTEND=noninteractive apt-get purge -y -q {PKG} >/dev/null; "
                  f"rm -f {CONF}; systemctl daemon-reload; systemctl reset-failed {PKG} 2>/dev/null; true")
        if phase == "cold-nocache":
            script += f"; rm -rf /home/{USER}/.cache/mgmt /home/{USER}/.ansible /root/.ansible"
        on_all(bed, lambda h: host_sh(h, script))
    elif phase == "drift":
        extra = "; systemctl daemon-reload" if DRIFT_RELOAD else ""
        on_all(bed, lambda h: host_sh(h, f"printf 'PORT=9999\\n' > {CONF}; systemctl stop {PKG}{extra}"))
        # Settle (not measured): a start within about a second of the stop can fail in these
        # containers with status 219/CGROUP ("Failed to attach to cgroup
        # /system.slice/mgmt-testd.service"): systemd is still removing the unit's cgroup. A
        # hand edit happens long before the tool runs; the bench must not time that race.
        time.sleep(DRIFT_SETTLE)


def starts_since(h: Host, since: float) -> int:
    out = host_sh(h, f"journalctl -q -u {PKG} --since @{since:.3f} -o cat", check=False).stdout
    return sum(1 for l in out.splitlines() if l.startswith("Started "))


def host_state(h: Host, since: float) -> dict:
    q = host_sh(h, f"dpkg-query -W -f='${{db:Status-Abbrev}}' {PKG} 2>/dev/null; echo; "
                   f"systemctl is-active {PKG}; systemctl is-enabled {PKG}", check=False).stdout.split("\n")
    try:
        st = os.stat(h.path(CONF))
        conf = h.path(CONF).read_text()
        mode = (st.st_mode & 0o7777, st.st_uid, st.st_gid)
    except OSError:
        conf, mode = None, None
    try:
        state = dict(l.split("=", 1) for l in h.path("/run/mgmt-testd/state").read_text().split())
    except OSError:
        state = {}
    return {"dpkg": q[0].strip() if q else "", "active": q[1].strip() if len(q) > 1 else "",
            "enabled": q[2].strip() if len(q) > 2 else "", "conf": conf, "mode": mode,
            "port": state.get("port"), "starts": starts_since(h, since)}


def check(bed: Bed, s: fleet.Sample, per: dict, since: float) -> tuple[list[str], dict]:
    problems = []
    if s.rc != 0:
        problems.append(f"exit {s.rc}")
    if SCENARIO == "accounts":
        return accounts_check(bed, per, problems)
    states = dict(zip([h.name for h in bed.hosts], on_all(bed, lambda h: host_state(h, since))))
    for name, st in states.items():
        bad = []
        if st["dpkg"] != "ii":
            bad.append(f"dpkg {st['dpkg']!r}")
        if st["conf"] != CONTENT:
            bad.append(f"conf {st['conf']!r}")
        if st["mode"] != (0o644, 0, 0):
            bad.append(f"mode {st['mode']}")
        if st["active"] != "active":
            bad.append(f"is-active {st['active']}")
        if st["enabled"] != "enabled":
            bad.append(f"is-enabled {st['enabled']}")
        if st["port"] != PORT:
            bad.append(f"port {st['port']}")
        if per.get(name, {}).get("failed"):
            bad.append("tool reported a failure")
        if bad:
            problems.append(f"{name}: " + ", ".join(bad))
    return problems, states


# ---------------------------------------------------------------------------------------------
# The service-account scenario (--scenario accounts): group -> user -> authorized_key -> a
# sudoers line, the same desired state for both tools.

SVC_USER = "deploy"
SVC_ID = 2001
SVC_COMMENT = "deploy service account"
SVC_SUDOERS = f"/etc/sudoers.d/{SVC_USER}"
SVC_SUDO_LINE = f"{SVC_USER} ALL=(root) NOPASSWD: /usr/bin/systemctl restart {PKG}"
SVC_KEY: str = ""  # set by accounts_key(): an ed25519 public key made for this run


def accounts_key(work: Path) -> str:
    global SVC_KEY
    key = work.parent / "deploy_ed25519"
    if not key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deploy@bench", "-f", str(key)])
    SVC_KEY = (key.with_suffix(".pub")).read_text().strip()
    return SVC_KEY


def accounts_graph(h: Host) -> str:
    return f"""\
graph: service-account
comment: group -> user -> authorized_key -> sudoers line
remote: ssh://{USER}@{h.addr}:22
sudo: true
resources:
  group:
  - name: {SVC_USER}
    gid: {SVC_ID}
  user:
  - name: {SVC_USER}
    uid: {SVC_ID}
    group: {SVC_USER}
    homedir: /home/{SVC_USER}
    shell: /bin/bash
    comment: {json.dumps(SVC_COMMENT)}
  authorized_key:
  - name: {SVC_USER}-key
    user: {SVC_USER}
    key: {json.dumps(SVC_KEY)}
  line:
  - name: {SVC_USER}-sudo
    path: {SVC_SUDOERS}
    line: {json.dumps(SVC_SUDO_LINE)}
    create: true
    mode: "0440"
edges:
- name: the account before its sudo rule
  from: {{kind: user, name: {SVC_USER}}}
  to: {{kind: line, name: {SVC_USER}-sudo}}
"""


def accounts_play() -> str:
    return f"""\
- hosts: servers
  gather_facts: false
  become: true
  tasks:
  - name: group
    ansible.builtin.group: {{name: {SVC_USER}, gid: {SVC_ID}}}
  - name: user
    ansible.builtin.user: {{name: {SVC_USER}, uid: {SVC_ID}, group: {SVC_USER}, home: /home/{SVC_USER}, shell: /bin/bash, comment: {json.dumps(SVC_COMMENT)}}}
  - name: key
    ansible.posix.authorized_key: {{user: {SVC_USER}, key: {json.dumps(SVC_KEY)}}}
  - name: sudo rule
    ansible.builtin.lineinfile: {{path: {SVC_SUDOERS}, line: {json.dumps(SVC_SUDO_LINE)}, create: true, mode: "0440"}}
"""


def ansible_posix(work: Path, venv: Path) -> Path:
    """ansible.posix (authorized_key) is not in ansible-core, and Galaxy is not reachable here:
    take the collection out of the `ansible` package's wheel on PyPI."""
    import zipfile
    dest = work.parent / "collections"
    if (dest / "ansible_collections" / "ansible" / "posix").is_dir():
        return dest
    dl = work.parent / "wheels"
    dl.mkdir(parents=True, exist_ok=True)
    log("fetching ansible.posix from the `ansible` wheel on PyPI")
    run([str(venv / "bin" / "python"), "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
         "-d", str(dl), "ansible"])
    wheel = sorted(dl.glob("ansible-*.whl"))[-1]
    prefix = "ansible_collections/ansible/posix/"
    with zipfile.ZipFile(wheel) as z:
        for m in z.namelist():
            if m.startswith(prefix):
                z.extract(m, dest)
    return dest


def accounts_reset(bed: Bed, phase: str) -> None:
    if phase.startswith("cold"):
        script = (f"userdel -r {SVC_USER} >/dev/null 2>&1; groupdel {SVC_USER} >/dev/null 2>&1; "
                  f"rm -f {SVC_SUDOERS}; true")
        if phase == "cold-nocache":
            script += f"; rm -rf /home/{USER}/.cache/mgmt /home/{USER}/.ansible /root/.ansible"
        on_all(bed, lambda h: host_sh(h, script))
    elif phase == "drift":
        on_all(bed, lambda h: host_sh(h, f"usermod -s /bin/sh {SVC_USER}; "
                                         f": > /home/{SVC_USER}/.ssh/authorized_keys; rm -f {SVC_SUDOERS}"))


def accounts_host_state(h: Host) -> dict:
    def stat(p):
        try:
            st = os.stat(h.path(p))
            return (st.st_mode & 0o7777, st.st_uid, st.st_gid)
        except OSError:
            return None

    def read(p):
        try:
            return h.path(p).read_text()
        except OSError:
            return None
    passwd = [l for l in (read("/etc/passwd") or "").splitlines() if l.startswith(SVC_USER + ":")]
    group = [l for l in (read("/etc/group") or "").splitlines() if l.startswith(SVC_USER + ":")]
    keys = read(f"/home/{SVC_USER}/.ssh/authorized_keys")
    return {"passwd": passwd, "group": group, "skel": h.path(f"/home/{SVC_USER}/.bashrc").exists(),
            "ssh_dir": stat(f"/home/{SVC_USER}/.ssh"), "keys_mode": stat(f"/home/{SVC_USER}/.ssh/authorized_keys"),
            "key_lines": [l for l in (keys or "").splitlines() if SVC_KEY.split()[1] in l],
            "sudoers": read(SVC_SUDOERS), "sudoers_mode": stat(SVC_SUDOERS), "starts": 0}


def accounts_check(bed: Bed, per: dict, problems: list[str]) -> tuple[list[str], dict]:
    states = dict(zip([h.name for h in bed.hosts], on_all(bed, accounts_host_state)))
    want_pw = f"{SVC_USER}:x:{SVC_ID}:{SVC_ID}:{SVC_COMMENT}:/home/{SVC_USER}:/bin/bash"
    for name, st in states.items():
        bad = []
        if st["passwd"] != [want_pw]:
            bad.append(f"passwd {st['passwd']!r}")
        if len(st["group"]) != 1 or not st["group"][0].startswith(f"{SVC_USER}:x:{SVC_ID}:"):
            bad.append(f"group {st['group']!r}")
        if not st["skel"]:
            bad.append("no home from skel")
        if st["ssh_dir"] != (0o700, SVC_ID, SVC_ID) or st["keys_mode"] != (0o600, SVC_ID, SVC_ID):
            bad.append(f"modes {st['ssh_dir']} {st['keys_mode']}")
        if len(st["key_lines"]) != 1:
            bad.append(f"{len(st['key_lines'])} key lines")
        if st["sudoers"] != SVC_SUDO_LINE + "\n" or st["sudoers_mode"] != (0o440, 0, 0):
            bad.append(f"sudoers {st['sudoers']!r} {st['sudoers_mode']}")
        if per.get(name, {}).get("failed"):
            bad.append("tool reported a failure")
        if bad:
            problems.append(f"{name}: " + ", ".join(bad))
    return problems, states


# ---------------------------------------------------------------------------------------------
# Report


def fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def spread(xs: list) -> str:
    xs = sorted(set(xs))
    return "-" if not xs else (str(xs[0]) if len(xs) == 1 else f"{xs[0]}–{xs[-1]}")


def summarize(tool: str, phase: str, runs: list[dict]) -> dict:
    def med(k):
        vals = [r[k] for r in runs if r.get(k) is not None]
        return statistics.median(vals) if vals else None
    walls = [r["wall"] for r in runs]
    return {"tool": tool, "phase": phase, "runs": len(runs), "wall_median": med("wall"),
            "wall_min": min(walls) if walls else None, "wall_max": max(walls) if walls else None,
            "cpu_median": med("cpu"), "cpu_tree_median": med("cpu_tree"), "rss_mb_median": med("maxrss_mb"),
            "hosts_cpu_median": med("hosts_cpu"), "tx_kb_median": med("tx_kb"),
            "changes_per_host": spread([c for r in runs for c in r["changed_per_host"].values()]),
            "starts_per_host": spread([c for r in runs for c in r["starts_per_host"].values()]),
            "ok": bool(runs) and all(not r["problems"] for r in runs),
            "problems": sorted({p for r in runs for p in r["problems"]})[:4]}


def table(rows: list[dict]) -> str:
    head = ("| tool | phase | runs | wall s median (min–max) | controller CPU s | incl. daemons | "
            "hosts' CPU s | peak RSS MB | sent KB | changes/host | svc starts/host | correct |\n"
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
    body = ""
    for r in rows:
        ok = "yes" if r["ok"] else ("NO: " + "; ".join(r["problems"]) if r["runs"] else "skipped")
        body += (f"| {r['tool']} | {r['phase']} | {r['runs']} | {fmt(r['wall_median'], '.2f')} "
                 f"({fmt(r['wall_min'], '.2f')}–{fmt(r['wall_max'], '.2f')}) | {fmt(r['cpu_median'], '.2f')} | "
                 f"{fmt(r['cpu_tree_median'], '.2f')} | {fmt(r['hosts_cpu_median'], '.2f')} | "
                 f"{fmt(r['rss_mb_median'], '.0f')} | {fmt(r['tx_kb_median'], '.0f')} | "
                 f"{r['changes_per_host']} | {r['starts_per_host']} | {ok} |\n")
    return head + body


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--phases", default=",".join(PHASES))
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--mgmt", help="a prebuilt mgmt binary (default: scripts/build-static)")
    ap.add_argument("--drift-reload", action="store_true",
                    help="daemon-reload after the drift reset's stop (works around 219/CGROUP, see README)")
    ap.add_argument("--scenario", choices=("classic", "accounts"), default="classic",
                    help="classic: pkg -> file -> svc; accounts: group -> user -> authorized_key -> sudoers line")
    ap.add_argument("--out", default=None, help="results/OUT (default latest, accounts: accounts)")
    ap.add_argument("--no-build", action="store_true", help="use target/debug/testbed as it is")
    ap.add_argument("--no-upgrade", action="store_true", help="do not pip install --upgrade")
    ap.add_argument("--max-minutes", type=float, default=25,
                    help="stop starting new runs after this long (0: no budget)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (the test bed)")
    global DRIFT_RELOAD, RESULTS, SCENARIO
    DRIFT_RELOAD = args.drift_reload
    SCENARIO = args.scenario
    RESULTS = HERE / "results" / (args.out or ("accounts" if SCENARIO == "accounts" else "latest"))
    phases = [p for p in args.phases.split(",") if p]
    tools = [t for t in args.tools.split(",") if t]
    start = time.monotonic()
    started_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    machine = fleet.machine()
    venv, versions = ensure_venv(not args.no_upgrade)
    mgmt = ensure_binaries(args.mgmt, not args.no_build)
    commit = run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                capture_output=True, text=True).stdout.strip() != ""
    versions.update(mgmt=f"{commit}{' (dirty tree)' if dirty else ''}",
                    mgmt_version=run([str(mgmt), "--version"], capture_output=True, text=True).stdout.strip())
    repo = build_repo(WORK / "repo")
    work = WORK / f"h{args.hosts}" / SCENARIO
    work.parent.mkdir(parents=True, exist_ok=True)
    if SCENARIO == "accounts":
        accounts_key(work)
        os.environ["ANSIBLE_COLLECTIONS_PATH"] = str(ansible_posix(work, venv))
    fleet.CG = fleet.CpuGroup()
    log(f"bringing up {args.hosts} booted hosts")
    bed, up_secs = bed_up(args.hosts, repo)
    log(f"up in {up_secs:.1f} s: {bed.dir}")
    all_runs: list[dict] = []
    rows: list[dict] = []
    try:
        gen_inputs(bed, work)
        for tool in tools:
            for phase in phases:
                runs = []
                for i in range(args.runs):
                    if args.max_minutes and time.monotonic() - start > args.max_minutes * 60:
                        log(f"budget reached: {tool} {phase} run {i + 1} skipped")
                        break
                    if phase == "warm" and not (all_runs and not all_runs[-1]["problems"]
                                                and all_runs[-1]["tool"] == tool):
                        # Converge first (not measured) so warm starts from the desired state.
                        run_mgmt(bed, work, mgmt) if tool == "mgmt" else run_ansible(bed, work, venv)
                    reset(bed, work, phase)
                    since = time.time()
                    s, per = run_mgmt(bed, work, mgmt) if tool == "mgmt" else run_ansible(bed, work, venv)
                    problems, states = check(bed, s, per, since)
                    r = {"tool": tool, "phase": phase, "run": i + 1, "wall": s.wall, "cpu": s.cpu,
                         "cpu_tree": s.cpu_tree, "maxrss_mb": s.maxrss_mb, "hosts_cpu": s.hosts_cpu,
                         "tx_kb": s.tx / 1024, "rc": s.rc,
                         "changed_per_host": {h.name: per.get(h.name, {}).get("changed", 0) for h in bed.hosts},
                         "starts_per_host": {n: st["starts"] for n, st in states.items()},
                         "problems": problems,
                         "mgmt_applied": {n: p.get("applied") for n, p in per.items()} if tool == "mgmt" else None,
                         "mgmt_summary_changed": {n: p.get("summary_changed") for n, p in per.items()} if tool == "mgmt" else None}
                    if problems:
                        keep = RESULTS / f"failed-{tool}-{phase}-{i + 1}"
                        keep.mkdir(parents=True, exist_ok=True)
                        (keep / "stdout").write_text(s.out)
                        (keep / "stderr").write_text(s.err)
                        (keep / "states.json").write_text(json.dumps(states, indent=1, default=str))
                    all_runs.append(r)
                    runs.append(r)
                    log(f"{tool} {phase} #{i + 1}: {s.wall:.2f} s, cpu {s.cpu:.2f}, hosts {s.hosts_cpu:.2f}, "
                        f"changed {spread(list(r['changed_per_host'].values()))}, "
                        f"starts {spread(list(r['starts_per_host'].values()))}"
                        + (f", PROBLEMS {problems[:3]}" if problems else ""))
                rows.append(summarize(tool, phase, runs))
    finally:
        ansible_masters_close(work)
        bed_down(bed)
        fleet.CG.remove()
    total = time.monotonic() - start
    RESULTS.mkdir(parents=True, exist_ok=True)
    tab = table(rows)
    what = ("the service-account graph" if SCENARIO == "accounts" else "the classic graph")
    md = (f"## Servers benchmark: {what} on {args.hosts} booted hosts\n\n"
          f"{started_at}, {args.runs} runs per tool and phase, total {total / 60:.1f} min.\n\n"
          + (f"group `{SVC_USER}` (gid {SVC_ID}) → user `{SVC_USER}` (uid {SVC_ID}, home from skel, "
             f"bash, comment) → its authorized key (~/.ssh 0700, file 0600) → `{SVC_SUDOERS}` 0440 with "
             f"one sudo rule (mgmt: group, user, authorized_key, line; Ansible: group, user, "
             f"ansible.posix.authorized_key, lineinfile). "
             if SCENARIO == "accounts" else
             f"package `{PKG}` → `{CONF}` (`PORT=8081`, 0644 root:root) → service `{PKG}` running and "
             f"enabled, restarted on a config change. ")
          + f"Login `{USER}`, root through sudo (mgmt `sudo: true`, "
          f"Ansible `become: true`).\n\n"
          f"Bringing up {args.hosts} booted hosts (`testbed up {args.hosts} --booted --apt-repo`, "
          f"root cached, incl. apt-get update): **{up_secs:.1f} s**.\n\n{tab}\n"
          f"Machine: {machine['nproc']} × {machine['cpu']}, {machine['mem_gib']} GiB, kernel {machine['kernel']}, "
          f"{machine['os']}, {machine['openssh']}, load at start {' '.join(machine['loadavg_start'])}.\n\n"
          + (f"Drift reset: shell changed by hand (`usermod -s /bin/sh`), authorized_keys emptied, "
             f"sudoers file removed.\n\n" if SCENARIO == "accounts" else
             f"Drift reset: conf edited, `systemctl stop`{', `daemon-reload`' if DRIFT_RELOAD else ''}, "
             f"{DRIFT_SETTLE:.0f} s settle.\n\n")
          +
          f"Versions: ansible-core {versions['ansible-core']} (Python {versions['venv-python']}), "
          f"mgmt {versions['mgmt']} ({versions['mgmt_version']}, static binary).\n")
    (RESULTS / "summary.md").write_text(md)
    with open(RESULTS / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[k for k in rows[0] if k != "problems"] + ["problems"]) if rows else None
        if w:
            w.writeheader()
            for r in rows:
                w.writerow({**r, "problems": "; ".join(r["problems"])})
    with open(RESULTS / "runs.csv", "w", newline="") as f:
        keys = ["tool", "phase", "run", "wall", "cpu", "cpu_tree", "maxrss_mb", "hosts_cpu", "tx_kb", "rc"]
        w = csv.writer(f)
        w.writerow(keys + ["changed_per_host", "starts_per_host", "problems"])
        for r in all_runs:
            w.writerow([r[k] for k in keys] + [json.dumps(r["changed_per_host"]),
                                               json.dumps(r["starts_per_host"]), "; ".join(r["problems"])])
    (RESULTS / "results.json").write_text(json.dumps(
        {"started": started_at, "hosts": args.hosts, "runs_per_group": args.runs, "bed_up_seconds": up_secs,
         "machine": machine, "versions": versions, "rows": rows, "runs": all_runs}, indent=1))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
