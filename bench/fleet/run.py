#!/usr/bin/env python3
"""Fleet benchmark: mgmt-rs (`mgmt run --remote`) against Ansible and pyinfra on the same
test-bed hosts (real sshd in network namespaces), with the floor (parallel `ssh true`, `scp` of
the mgmt binary) measured in the same run. A benchmark that prints tables; never a test.

    python3 bench/fleet/run.py --hosts 1,10,30 --runs 3

Needs root (the test bed). Installs what it needs: a venv in bench/fleet/.venv with the latest
ansible-core and pyinfra from PyPI, the static mgmt
binary (scripts/build-static) and the test-bed binary. Results go to bench/fleet/results/
(CSV, JSON, the table as text). It must never touch anything but its own test beds, its own
work dir and the processes it starts.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import hashlib
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
VENV = HERE / ".venv"
WORK = HERE / "work"
TREE = "/tmp/fleet"  # the desired state, hashed per host; identical for every tool
XDIR = "/tmp/fleet-x"  # mgmt only: the probe file the latency measurement edits
LINES = f"{XDIR}/lines"  # mgmt only: where each host collects every host's line file
NFILES = 20
FILE_SIZE = 1024
DRIFT_FILES = (3, 17)  # 10% of the 20 files
PHASES = ("cold", "cold-state", "warm", "drift")
TOOLS = ("mgmt", "ansible-linear", "ansible-free", "pyinfra")
# Pinned in every sshd: one key exchange all three clients implement (paramiko knows it only by
# its older name, the same algorithm).
KEX = "curve25519-sha256,curve25519-sha256@libssh.org"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(cmd, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("check", True)
    return subprocess.run(cmd, **kw)


# ---------------------------------------------------------------------------------------------
# Tools: venv, binaries


def newest_python() -> str:
    """ansible-core's latest releases want Python >= 3.12 on the controller: take the newest
    interpreter around (PATH, then pyenv), else this one."""
    cands = []
    for minor in (14, 13, 12):
        found = shutil.which(f"python3.{minor}")
        if found:
            cands.append(found)
        for p in sorted(Path.home().glob(f".pyenv/versions/3.{minor}.*/bin/python3")):
            cands.append(str(p))
    return cands[0] if cands else sys.executable


def ensure_venv(upgrade: bool) -> dict:
    py = VENV / "bin" / "python"
    if not py.exists():
        base = newest_python()
        log(f"creating {VENV} with {base}")
        run([base, "-m", "venv", str(VENV)])
        upgrade = True
    if upgrade:
        log("installing the latest ansible-core and pyinfra from PyPI")
        run([str(py), "-m", "pip", "install", "-q", "--upgrade", "pip"])
        run([str(py), "-m", "pip", "install", "-q", "--upgrade", "ansible-core", "pyinfra"])
    out = run([str(py), "-m", "pip", "list", "--format", "json"], capture_output=True, text=True).stdout
    versions = {p["name"].lower(): p["version"] for p in json.loads(out)}
    pyver = run([str(py), "-c", "import platform; print(platform.python_version())"],
                capture_output=True, text=True).stdout.strip()
    return {"ansible-core": versions.get("ansible-core"), "pyinfra": versions.get("pyinfra"),
            "paramiko": versions.get("paramiko"), "venv-python": pyver}


def ensure_binaries(mgmt: str | None) -> Path:
    log("building the test bed")
    run(["cargo", "build", "-q", "-p", "testbed", "--bin", "testbed"], cwd=ROOT)
    if mgmt:
        return Path(mgmt).resolve()
    log("building the static mgmt binary (scripts/build-static)")
    out = run(["bash", "scripts/build-static"], cwd=ROOT, capture_output=True, text=True).stdout
    return (ROOT / out.strip().splitlines()[-1]).resolve()


# ---------------------------------------------------------------------------------------------
# Test bed


@dataclass
class Host:
    name: str
    addr: str
    pid: int  # the host's sshd listener: /proc/PID/root is the host's file system

    def path(self, p: str) -> Path:
        return Path(f"/proc/{self.pid}/root") / p.lstrip("/")


@dataclass
class Bed:
    dir: Path
    hosts: list[Host]
    bridge: str

    @property
    def ssh_config(self) -> Path:
        return self.dir / "ssh_config"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def key(self) -> Path:
        return self.dir / "client_key"

    def hosts_cpu(self) -> float:
        """CPU seconds spent inside every host so far (sshd, the tools' remote processes): for
        each live process in a host's network namespace its own time plus that of the children
        it has reaped, so every process's time is counted once, in its nearest live ancestor."""
        nets = {os.readlink(f"/proc/{h.pid}/ns/net") for h in self.hosts}
        ticks = 0
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                if os.readlink(f"/proc/{d}/ns/net") not in nets:
                    continue
                f = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ticks += sum(int(x) for x in f[11:15])  # utime stime cutime cstime
        return ticks / os.sysconf("SC_CLK_TCK")

    def counters(self) -> tuple[int, int]:
        """Bytes the controller sent to / received from all hosts: the root side of the
        bridge (host-to-host traffic is forwarded by the bridge and never counted here)."""
        base = Path("/sys/class/net") / self.bridge / "statistics"
        return int((base / "tx_bytes").read_text()), int((base / "rx_bytes").read_text())


TESTBED = ROOT / "target" / "debug" / "testbed"


def bed_up(n: int) -> Bed:
    out = run([str(TESTBED), "up", str(n)], capture_output=True, text=True).stdout
    m = re.search(r"^dir (\S+)", out, re.M)
    if not m:
        raise SystemExit(f"testbed up printed no dir:\n{out}")
    d = Path(m.group(1))
    slot = re.search(r"mgmt-testbed-(\d{3})-", d.name).group(1)
    cfg = (d / "ssh_config").read_text()
    hosts = []
    for name, addr in re.findall(r"^Host (\S+)\n\s+HostName (\S+)", cfg, re.M):
        pid = int((d / name / "sshd.pid").read_text().split()[0])
        hosts.append(Host(name, addr, pid))
    bed = Bed(d, hosts, f"mt{slot}b")
    pin_kex(bed)
    return bed


def pin_kex(bed: Bed) -> None:
    """The same key exchange for every client: sshd takes the first value of a keyword, so the
    line goes first; SIGHUP makes the listener re-exec with it (same pid, same namespaces)."""
    before = {}
    for h in bed.hosts:
        conf = bed.dir / h.name / "sshd_config"
        text = conf.read_text()
        if not text.startswith("KexAlgorithms"):
            conf.write_text(f"KexAlgorithms {KEX}\n{text}")
        logf = bed.dir / h.name / "sshd.log"
        before[h.name] = logf.read_text(errors="replace").count("Server listening on")
        os.kill(h.pid, signal.SIGHUP)
    deadline = time.monotonic() + 20
    for h in bed.hosts:
        logf = bed.dir / h.name / "sshd.log"
        while logf.read_text(errors="replace").count("Server listening on") <= before[h.name]:
            if time.monotonic() > deadline:
                raise SystemExit(f"sshd of {h.name} did not come back after SIGHUP")
            time.sleep(0.02)


def bed_down(bed: Bed) -> None:
    run([str(TESTBED), "down", str(bed.dir)], check=False)


# ---------------------------------------------------------------------------------------------
# The desired state, identical for every tool


def file_content(i: int) -> str:
    """1 KiB of printable text (it sits inline in the mgmt YAML)."""
    head = f"fleet benchmark file {i:02d}\n"
    body = "".join(chr(ord("a") + (i + k) % 26) for k in range(FILE_SIZE - len(head) - 1))
    return head + body + "\n"


def line_of(h: Host) -> str:
    return f"{h.name} {h.addr}"


def all_lines(hosts: list[Host]) -> str:
    return "".join(line_of(h) + "\n" for h in sorted(hosts, key=lambda h: h.name))


def expected_tree(h: Host, hosts: list[Host]) -> dict[str, tuple[int, bytes | None]]:
    """relative path -> (mode, content or None for a directory)."""
    t: dict[str, tuple[int, bytes | None]] = {".": (0o755, None)}
    for i in range(1, NFILES + 1):
        t[f"f{i:02d}"] = (0o644, file_content(i).encode())
    t["marker"] = (0o644, b"ready\n")
    t["hostname"] = (0o644, f"{h.name}\n".encode())
    t["lines"] = (0o644, all_lines(hosts).encode())
    return t


def tree_hash_of(entries: dict[str, tuple[int, bytes | None]]) -> str:
    d = hashlib.sha256()
    for rel in sorted(entries):
        mode, content = entries[rel]
        kind = "d" if content is None else "f"
        digest = "" if content is None else hashlib.sha256(content).hexdigest()
        d.update(f"{rel}\0{kind}\0{mode:o}\0{digest}\n".encode())
    return d.hexdigest()


def read_tree(h: Host) -> dict[str, tuple[int, bytes | None]]:
    root = h.path(TREE)
    out: dict[str, tuple[int, bytes | None]] = {}
    if not root.is_dir():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        out[rel_dir] = (os.stat(dirpath).st_mode & 0o7777, None)
        for f in filenames:
            p = Path(dirpath) / f
            rel = os.path.normpath(os.path.join(rel_dir, f))
            out[rel] = (p.lstat().st_mode & 0o7777, p.read_bytes())
    return out


def write_tree(h: Host, entries: dict[str, tuple[int, bytes | None]]) -> None:
    root = h.path(TREE)
    for rel in sorted(entries):
        mode, content = entries[rel]
        p = root / rel
        if content is None:
            p.mkdir(parents=True, exist_ok=True)
        else:
            p.write_bytes(content)
        os.chmod(p, mode)
        os.chown(p, 0, 0)


# ---------------------------------------------------------------------------------------------
# Per-tool inputs


def gen_inputs(bed: Bed, work: Path) -> None:
    if work.exists():
        shutil.rmtree(work)
    files = work / "files"
    files.mkdir(parents=True)
    for i in range(1, NFILES + 1):
        (files / f"f{i:02d}").write_text(file_content(i))
    gen_mgmt(bed, work / "mgmt")
    gen_ansible(bed, work / "ansible", files)
    gen_pyinfra(bed, work / "pyinfra", files)


def yq(s: str) -> str:
    return json.dumps(s)  # a JSON string is a valid YAML double-quoted scalar


def mgmt_graph(h: Host, line: str, probe: str = "0") -> str:
    r = [f"graph: fleet\nremote: ssh://root@{h.name}:22\nresources:\n  file:\n"]
    r.append(f"  - name: tree\n    path: {TREE}/\n    mode: \"0755\"\n")
    for i in range(1, NFILES + 1):
        r.append(f"  - name: f{i:02d}\n    path: {TREE}/f{i:02d}\n    mode: \"0644\"\n"
                 f"    content: {yq(file_content(i))}\n")
    r.append(f"  - name: hostname\n    path: {TREE}/hostname\n    mode: \"0644\"\n"
             f"    content: {yq(h.name + chr(10))}\n")
    # Not part of the desired state: the latency measurement edits it.
    r.append(f"  - name: xdir\n    path: {XDIR}/\n    mode: \"0755\"\n")
    r.append(f"  - name: probe\n    path: {XDIR}/probe\n    mode: \"0644\"\n    content: {yq(probe + chr(10))}\n")
    # The exchange: every host exports its line as a small file; every host collects all of
    # them into LINES/, and the file `lines` is TREE/lines built from `fragments: [LINES/]`:
    # the directory's files in byte order of their names (the hosts' order, as the checker's
    # all_lines sorts them), concatenated, compared and written atomically in-process. No
    # process runs per export change (an exec took `sh` + `mv`, and `sh` for its guard), and
    # the collected files' own temp files (dotfiles) are never concatenated. Each collected
    # file notifies `lines`, and its watch follows LINES/ too. Applying the collected files and
    # `lines` is part of the collecting host's run, so a host is not converged before its file
    # is complete.
    r.append(f"  - name: linesdir\n    path: {LINES}/\n    mode: \"0755\"\n")
    r.append(f"  - name: \"@@line-{h.name}\"\n    path: /fleet-line/{h.name}\n    mode: \"0644\"\n"
             f"    content: {yq(line + chr(10))}\n")
    r.append(f"  - name: lines\n    path: {TREE}/lines\n    mode: \"0644\"\n    fragments: [{LINES}/]\n")
    r.append("  exec:\n")
    r.append(f"  - name: marker\n    cmd: echo ready > {TREE}/marker\n    shell: /bin/sh\n"
             f"    creates: {TREE}/marker\n")
    r.append("edges:\n")
    r.append("- name: tree-marker\n  from: {kind: file, name: tree}\n  to: {kind: exec, name: marker}\n")
    r.append("- name: tree-lines\n  from: {kind: file, name: tree}\n  to: {kind: file, name: lines}\n")
    r.append(f"collect:\n- kind: file\n  pattern: {LINES}/\n  notify:\n  - {{kind: file, name: lines}}\n")
    return "".join(r)


def gen_mgmt(bed: Bed, d: Path) -> None:
    d.mkdir(parents=True)
    for h in bed.hosts:
        (d / f"{h.name}.yaml").write_text(mgmt_graph(h, line_of(h)))


ANSIBLE_CALLBACK = '''\
"""Counts changed results per host, loop items one by one, and writes them as JSON."""
import json
import os

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "fleetcount"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.changed = {}
        self.failed = {}

    def _inc(self, d, result):
        name = result._host.get_name()
        d[name] = d.get(name, 0) + 1

    def v2_runner_on_ok(self, result):
        r = result._result
        if r.get("changed") and "results" not in r:
            self._inc(self.changed, result)

    def v2_runner_item_on_ok(self, result):
        if result._result.get("changed"):
            self._inc(self.changed, result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._inc(self.failed, result)

    def v2_runner_item_on_failed(self, result):
        self._inc(self.failed, result)

    def v2_runner_on_unreachable(self, result):
        self._inc(self.failed, result)

    def v2_playbook_on_stats(self, stats):
        with open(os.environ["FLEET_COUNT_OUT"], "w") as f:
            json.dump({"changed": self.changed, "failed": self.failed}, f)
'''


def gen_ansible(bed: Bed, d: Path, files: Path) -> None:
    (d / "callback_plugins").mkdir(parents=True)
    (d / "callback_plugins" / "fleetcount.py").write_text(ANSIBLE_CALLBACK)
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
    inv = "[fleet]\n" + "".join(f"{h.name} line={yq(line_of(h))}\n" for h in bed.hosts)
    (d / "inventory.ini").write_text(inv)
    items = ", ".join(f"f{i:02d}" for i in range(1, NFILES + 1))
    (d / "site.yml").write_text(f"""\
- hosts: fleet
  gather_facts: false
  tasks:
  - name: tree
    ansible.builtin.file: {{path: {TREE}, state: directory, mode: "0755"}}
  - name: files
    ansible.builtin.copy: {{src: "{files}/{{{{ item }}}}", dest: "{TREE}/{{{{ item }}}}", mode: "0644"}}
    loop: [{items}]
  - name: marker
    ansible.builtin.shell: echo ready > {TREE}/marker
    args: {{creates: {TREE}/marker}}
  - name: hostname
    ansible.builtin.copy: {{content: "{{{{ inventory_hostname }}}}\\n", dest: {TREE}/hostname, mode: "0644"}}
  - name: lines
    ansible.builtin.copy:
      dest: {TREE}/lines
      mode: "0644"
      content: "{{% for h in groups['fleet'] | sort %}}{{{{ hostvars[h]['line'] }}}}\\n{{% endfor %}}"
""")


def gen_pyinfra(bed: Bed, d: Path, files: Path) -> None:
    d.mkdir(parents=True)
    hosts = ",\n".join(
        f"    ({h.name!r}, {{'ssh_hostname': {h.addr!r}, 'line': {line_of(h)!r}}})" for h in bed.hosts)
    (d / "inventory.py").write_text(f"""\
fleet = [
{hosts},
]
""")
    (d / "group_data").mkdir()
    (d / "group_data" / "all.py").write_text(f"""\
ssh_user = "root"
ssh_key = {str(bed.key)!r}
ssh_known_hosts_file = {str(bed.known_hosts)!r}
ssh_strict_host_key_checking = "yes"
ssh_config_file = {str(bed.ssh_config)!r}
""")
    (d / "deploy.py").write_text(f"""\
from io import StringIO

from pyinfra import host, inventory
from pyinfra.facts.files import File
from pyinfra.operations import files, server

files.directory(name="tree", path={TREE!r}, mode="755")
for i in range(1, {NFILES + 1}):
    files.put(name=f"f{{i:02d}}", src=f"{files}/f{{i:02d}}", dest=f"{TREE}/f{{i:02d}}", mode="644")
# `creates`: the guard is a fact read before the operation is planned.
if not host.get_fact(File, path="{TREE}/marker"):
    server.shell(name="marker", commands=["echo ready > {TREE}/marker"])
files.put(name="hostname", src=StringIO(host.name + "\\n"), dest="{TREE}/hostname", mode="644")
lines = "".join(inventory.get_host(n).data.line + "\\n" for n in sorted(h.name for h in inventory))
files.put(name="lines", src=StringIO(lines), dest="{TREE}/lines", mode="644")
""")


# ---------------------------------------------------------------------------------------------
# Measuring one run of a tool


@dataclass
class Sample:
    wall: float
    cpu: float  # user+sys of the tool and every descendant it waited for (wait4 rusage)
    cpu_tree: float | None  # every process the tool started, daemons included (cpuacct cgroup)
    maxrss_mb: float  # the largest single process of the tool (wait4 rusage)
    hosts_cpu: float  # CPU spent inside the hosts (the same 2 cores serve them)
    tx: int  # bytes the controller sent to the hosts
    rx: int
    rc: int
    out: str
    err: str


class CpuGroup:
    """A cpuacct cgroup (v1) every measured command is started in, so CPU burnt by processes
    that leave their parent (Ansible's ControlPersist masters) is counted too. Optional: without
    it the column stays empty."""

    def __init__(self) -> None:
        base = Path("/sys/fs/cgroup/cpuacct")
        self.dir: Path | None = base / f"fleetbench-{os.getpid()}"
        try:
            self.dir.mkdir()
        except OSError:
            self.dir = None

    def usage(self) -> float | None:
        if self.dir is None:
            return None
        return int((self.dir / "cpuacct.usage").read_text()) / 1e9

    def join(self) -> None:  # runs in the child between fork and exec
        if self.dir is not None:
            (self.dir / "cgroup.procs").write_text(str(os.getpid()))

    def remove(self) -> None:
        if self.dir is None:
            return
        for _ in range(50):
            try:
                self.dir.rmdir()
                return
            except OSError:
                time.sleep(0.1)


CG: CpuGroup | None = None
MGMT_BIN: tuple[Path, str] | None = None  # the binary and its sha256 (the hosts' cache key)


def clean_env() -> dict:
    env = dict(os.environ)
    env.pop("SSH_AUTH_SOCK", None)  # every tool authenticates with the test bed's key only
    env["LC_ALL"] = "C.UTF-8"
    return env


def measure(bed: Bed, cmd: list[str], cwd: Path, env: dict, timeout: float = 900) -> Sample:
    outf = cwd / ".stdout"
    errf = cwd / ".stderr"
    cpu0 = CG.usage() if CG else None
    tx0, rx0 = bed.counters()
    hc0 = bed.hosts_cpu()
    t0 = time.monotonic()
    with open(outf, "w") as o, open(errf, "w") as e:
        p = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=o, stderr=e,
                             preexec_fn=CG.join if CG else None, start_new_session=True)
        deadline = t0 + timeout
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                os.killpg(p.pid, signal.SIGKILL)
            time.sleep(0.002)
    wall = time.monotonic() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    tx1, rx1 = bed.counters()
    hc1 = bed.hosts_cpu()
    cpu1 = CG.usage() if CG else None
    return Sample(
        wall=wall, cpu=ru.ru_utime + ru.ru_stime,
        cpu_tree=None if cpu0 is None else cpu1 - cpu0,
        maxrss_mb=ru.ru_maxrss / 1024, hosts_cpu=hc1 - hc0, tx=tx1 - tx0, rx=rx1 - rx0, rc=p.returncode,
        out=outf.read_text(errors="replace"), err=errf.read_text(errors="replace"))


# ---------------------------------------------------------------------------------------------
# Tools


ANSI = re.compile(r"\x1b\[[0-9;]*m")
# The desired state's resources but the exchange (H collected line files and the file `lines`
# built from them, which may change more than once while the other hosts' lines arrive).
CORE = ({f"file[f{i:02d}]" for i in range(1, NFILES + 1)}
        | {"file[tree]", "file[hostname]", "exec[marker]"})


def run_mgmt(bed: Bed, work: Path, mgmt: Path, timeout_flag: str = "0") -> tuple[Sample, dict]:
    d = work / "mgmt"
    cmd = [str(mgmt), "run"]
    for h in bed.hosts:
        cmd += ["--remote", str(d / f"{h.name}.yaml")]
    cmd += ["--ssh-config", str(bed.ssh_config), "--known-hosts", str(bed.known_hosts),
            "--ssh-identity", str(bed.key), "--converged-timeout", timeout_flag,
            "--client-urls", "http://127.0.0.1:0", "--cconns", str(len(bed.hosts)), "--json"]
    s = measure(bed, cmd, d, clean_env())
    return s, mgmt_counts(s.out)


def mgmt_counts(out: str) -> dict:
    """Per host: resources applied (the tool's own count, plumbing included), the core ones
    (the desired state every tool manages), and failures."""
    per: dict[str, dict] = {}
    for line in out.splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        host = ev.get("host")
        if not host:
            continue
        c = per.setdefault(host, {"changed": 0, "core": [], "lines": 0, "concat": 0, "failed": 0, "ok": False})
        if ev["event"] == "host_output":
            m = re.search(r"(\w+\[[^\]]+\]): applied", ANSI.sub("", ev["line"]))
            if m:
                c["changed"] += 1
                if m.group(1) in CORE:
                    c["core"].append(m.group(1))
                elif m.group(1).startswith("file[line-"):
                    c["lines"] += 1
                elif m.group(1) == "file[lines]":
                    c["concat"] += 1
        elif ev["event"] == "host_failed":
            c["failed"] += 1
        elif ev["event"] == "host_summary":
            c["ok"] = ev["status"] == "ok"
    return per


def ansible_masters_close(work: Path) -> None:
    cp = work / "ansible" / "cp"
    if not cp.is_dir():
        return
    for sock in cp.iterdir():
        run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "fleet"], check=False,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_ansible(bed: Bed, work: Path, strategy: str) -> tuple[Sample, dict]:
    d = work / "ansible"
    count = d / ".count.json"
    count.unlink(missing_ok=True)
    env = clean_env()
    env.update(ANSIBLE_CONFIG=str(d / "ansible.cfg"), ANSIBLE_STRATEGY=strategy,
               FLEET_COUNT_OUT=str(count), ANSIBLE_NOCOLOR="1")
    s = measure(bed, [str(VENV / "bin" / "ansible-playbook"), "site.yml"], d, env)
    per = {h.name: {"changed": 0, "failed": 0, "ok": s.rc == 0} for h in bed.hosts}
    if count.exists():
        c = json.loads(count.read_text())
        for h, n in c["changed"].items():
            per[h]["changed"] = n
        for h, n in c["failed"].items():
            per[h]["failed"] = n
            per[h]["ok"] = False
    return s, per


def run_pyinfra(bed: Bed, work: Path) -> tuple[Sample, dict]:
    d = work / "pyinfra"
    n = len(bed.hosts)
    env = clean_env()
    env["PYINFRA_PROGRESS"] = "off"
    s = measure(bed, [str(VENV / "bin" / "pyinfra"), "inventory.py", "deploy.py", "-y",
                      "--parallel", str(n), "--no-wait"], d, env)
    per = {h.name: {"changed": 0, "failed": 0, "ok": s.rc == 0} for h in bed.hosts}
    for host, what in re.findall(r"\[(h\d+)\]\s+(Success|No changes|Error)", ANSI.sub("", s.out + s.err)):
        if host in per:
            if what == "Success":
                per[host]["changed"] += 1
            elif what == "Error":
                per[host]["failed"] += 1
                per[host]["ok"] = False
    return s, per


def run_floor(bed: Bed, work: Path, which: str, mgmt: Path) -> Sample:
    d = work / "floor"
    d.mkdir(exist_ok=True)
    names = [h.name for h in bed.hosts]
    opts = f"-F {bed.ssh_config} -o ControlMaster=no -o ControlPath=none"
    if which == "ssh":
        one = f'ssh {opts} "$h" true || echo "FAIL $h"'
    else:
        one = f'scp -q {opts} {mgmt} "$h:/tmp/fleet-floor-mgmt" || echo "FAIL $h"'
    script = f'for h in "$@"; do {{ {one}; }} & done; wait'
    s = measure(bed, ["sh", "-c", script, "sh", *names], d, clean_env())
    if "FAIL" in s.out:
        s.rc = 1
    for h in bed.hosts:
        h.path("/tmp/fleet-floor-mgmt").unlink(missing_ok=True)
    return s


# ---------------------------------------------------------------------------------------------
# Phases: exact resets and checks


def drifted_hosts(bed: Bed) -> list[Host]:
    k = max(1, math.ceil(len(bed.hosts) * 0.2))
    step = len(bed.hosts) / k
    return [bed.hosts[int(i * step)] for i in range(k)]


def reset(bed: Bed, work: Path, phase: str) -> None:
    if phase == "cold":
        ansible_masters_close(work)
    for h in bed.hosts:
        for p in (TREE, XDIR):
            shutil.rmtree(h.path(p), ignore_errors=True)
        if phase == "cold":
            for p in ("/root/.cache/mgmt", "/root/.ansible"):
                shutil.rmtree(h.path(p), ignore_errors=True)
        if phase != "cold" and MGMT_BIN is not None:
            # Every phase but cold starts with mgmt's binary cached, whatever ran before.
            cached = h.path(f"/root/.cache/mgmt/bin/{MGMT_BIN[1]}/mgmt")
            if not cached.exists():
                cached.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(MGMT_BIN[0], cached)
                os.chmod(cached, 0o755)
        if phase in ("warm", "drift"):
            write_tree(h, expected_tree(h, bed.hosts))
            h.path(XDIR).mkdir()
            os.chmod(h.path(XDIR), 0o755)
            (h.path(XDIR) / "probe").write_text("0\n")
            os.chmod(h.path(XDIR) / "probe", 0o644)
            lines = h.path(LINES)
            lines.mkdir()
            os.chmod(lines, 0o755)
            for o in bed.hosts:
                (lines / o.name).write_text(line_of(o) + "\n")
                os.chmod(lines / o.name, 0o644)
    if phase == "drift":
        for h in drifted_hosts(bed):
            for i in DRIFT_FILES:
                (h.path(TREE) / f"f{i:02d}").write_text("drifted\n")


def expected_changes(bed: Bed, phase: str) -> dict[str, int]:
    """Changed items per host of the desired state (a loop item or file counts one)."""
    if phase in ("cold", "cold-state"):
        return {h.name: NFILES + 4 for h in bed.hosts}
    if phase == "warm":
        return {h.name: 0 for h in bed.hosts}
    drifted = {h.name for h in drifted_hosts(bed)}
    return {h.name: len(DRIFT_FILES) if h.name in drifted else 0 for h in bed.hosts}


def check(bed: Bed, tool: str, phase: str, s: Sample, per: dict) -> list[str]:
    problems = []
    if s.rc != 0:
        problems.append(f"exit code {s.rc}")
    want = expected_changes(bed, phase)
    for h in bed.hosts:
        exp = tree_hash_of(expected_tree(h, bed.hosts))
        got = tree_hash_of(read_tree(h))
        if got != exp:
            problems.append(f"{h.name}: tree hash differs")
        c = per.get(h.name)
        if c is None:
            problems.append(f"{h.name}: no result")
            continue
        if c.get("failed"):
            problems.append(f"{h.name}: {c['failed']} failed")
        if tool == "mgmt":
            if not c.get("ok"):
                problems.append(f"{h.name}: status not ok")
            if phase in ("warm", "drift"):
                if c["changed"] != want[h.name]:
                    problems.append(f"{h.name}: changed {c['changed']}, want {want[h.name]}")
            elif (len(set(c["core"])) != len(CORE) or len(c["core"]) != len(CORE)
                  or c["lines"] != len(bed.hosts) or c["concat"] < 1):
                problems.append(f"{h.name}: changed {len(c['core'])} files/commands (want {len(CORE)}), "
                                f"{c['lines']} collected lines (want {len(bed.hosts)}), "
                                f"concatenated {c['concat']} times (want at least 1)")
        elif c["changed"] != want[h.name]:
            problems.append(f"{h.name}: changed {c['changed']}, want {want[h.name]}")
    return problems


def total_changed(per: dict) -> int:
    return sum(c["changed"] for c in per.values())


# ---------------------------------------------------------------------------------------------
# Latency (mgmt only): a long-running `mgmt run --remote`, its graph files edited while it runs


def write_atomic(p: Path, text: str) -> None:
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, p)


def wait_for(cond, timeout: float) -> float | None:
    """Polls every millisecond; returns the monotonic time cond() first held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return time.monotonic()
        time.sleep(0.001)
    return None


def read_or_none(p: Path) -> str | None:
    try:
        return p.read_text()
    except OSError:
        return None


def latency(bed: Bed, work: Path, mgmt: Path, changes: int) -> dict:
    """Each change edits h1's graph once: its probe file (local) and its exported line.
    edit->applied: until h1 has the new probe (the initiator saw the save, copied the file, the
    child reloaded and applied it). edit->lines: until every other host has h1's new line in
    its lines file (propagation through the store). applied->lines: the difference. Then as many
    edits of the probe alone (the export unchanged, so no other host has anything to do):
    local edit->applied, the same path without the fan-out. The hosts' CPU per change is
    measured over each series (the fan-out of an export change is what costs the hosts)."""
    reset(bed, work, "warm")
    d = work / "mgmt"
    first, others = bed.hosts[0], bed.hosts[1:]
    cmd = [str(mgmt), "run"]
    for h in bed.hosts:
        cmd += ["--remote", str(d / f"{h.name}.yaml")]
    cmd += ["--ssh-config", str(bed.ssh_config), "--known-hosts", str(bed.known_hosts),
            "--ssh-identity", str(bed.key), "--client-urls", "http://127.0.0.1:0",
            "--cconns", str(len(bed.hosts)), "--json"]
    out = open(d / ".latency.out", "w")
    p = subprocess.Popen(cmd, cwd=d, env=clean_env(), stdin=subprocess.DEVNULL, stdout=out,
                         stderr=subprocess.STDOUT, start_new_session=True)
    res = {"edit_to_applied": [], "applied_to_lines": [], "edit_to_lines": [], "local_edit_to_applied": []}
    try:
        # Started: every child has swapped its first graph in (the state is already right, so
        # nothing on the hosts changes to show it).
        def started() -> bool:
            text = (d / ".latency.out").read_text(errors="replace")
            return len(set(re.findall(r'"host":"(h\d+)","line":"[^"]*graph swapped', text))) == len(bed.hosts)
        if wait_for(started, 120) is None:
            raise RuntimeError("mgmt did not start on every host")
        time.sleep(0.5)  # the other hosts' exports arriving: let those swaps pass first
        cpu0 = bed.hosts_cpu()
        for k in range(1, changes + 1):
            line = f"{line_of(first)} gen {k}"
            t0 = time.monotonic()
            write_atomic(d / f"{first.name}.yaml", mgmt_graph(first, line, probe=str(k)))
            t_app = wait_for(lambda: read_or_none(first.path(XDIR) / "probe") == f"{k}\n", 30)
            want = line + "\n"
            t_lines = wait_for(lambda: all(want in (read_or_none(o.path(TREE) / "lines") or "")
                                           for o in others), 30) if others else t_app
            if None in (t_app, t_lines):
                raise RuntimeError(f"change {k} did not arrive within 30s")
            res["edit_to_applied"].append(t_app - t0)
            if others:
                res["applied_to_lines"].append(max(0.0, t_lines - t_app))
                res["edit_to_lines"].append(t_lines - t0)
            time.sleep(0.05)
        time.sleep(0.5)  # the last change's exec and convergence flags, on every host
        cpu1 = bed.hosts_cpu()
        res["hosts_cpu_per_change"] = (cpu1 - cpu0) / changes
        for k in range(changes + 1, 2 * changes + 1):
            t0 = time.monotonic()
            write_atomic(d / f"{first.name}.yaml", mgmt_graph(first, line, probe=str(k)))
            t_app = wait_for(lambda: read_or_none(first.path(XDIR) / "probe") == f"{k}\n", 30)
            if t_app is None:
                raise RuntimeError(f"local change {k} did not arrive within 30s")
            res["local_edit_to_applied"].append(t_app - t0)
            time.sleep(0.05)
        res["hosts_cpu_per_local_change"] = (bed.hosts_cpu() - cpu1) / changes
    except RuntimeError as e:
        res["error"] = str(e)
        log(f"latency: {e}")
    finally:
        os.killpg(p.pid, signal.SIGINT)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        out.close()
        write_atomic(d / f"{first.name}.yaml", mgmt_graph(first, line_of(first)))
    return res


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]


# ---------------------------------------------------------------------------------------------
# Driver and report


def machine() -> dict:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    ssh_v = run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(),
            "os": platform.freedesktop_os_release().get("PRETTY_NAME", "") if hasattr(platform, "freedesktop_os_release") else "",
            "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "openssh": ssh_v,
            # Other work on the machine slows every tool; say how busy it was.
            "loadavg_start": Path("/proc/loadavg").read_text().split()[:3]}


def summarize(H: int, tool: str, phase: str, samples: list[Sample], changed: list[int],
              problems: list[list[str]]) -> dict:
    def med(f):
        vals = [f(s) for s in samples if f(s) is not None]
        return statistics.median(vals) if vals else None
    walls = [s.wall for s in samples]
    return {"hosts": H, "tool": tool, "phase": phase, "runs": len(samples),
            "wall_median": med(lambda s: s.wall), "wall_min": min(walls), "wall_max": max(walls),
            "cpu_median": med(lambda s: s.cpu), "cpu_tree_median": med(lambda s: s.cpu_tree),
            "rss_mb_median": med(lambda s: s.maxrss_mb), "hosts_cpu_median": med(lambda s: s.hosts_cpu),
            "tx_kb_median": med(lambda s: s.tx / 1024),
            "rx_kb_median": med(lambda s: s.rx / 1024),
            "changed": changed[-1] if changed else None,
            "ok": all(not p for p in problems), "problems": sorted({x for p in problems for x in p})[:5]}


def fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(rows: list[dict]) -> str:
    order = ["floor-ssh", "floor-scp", *TOOLS]
    rows = sorted(rows, key=lambda r: (r["hosts"], order.index(r["tool"]) if r["tool"] in order else 99,
                                       PHASES.index(r["phase"]) if r["phase"] in PHASES else -1))
    head = ("| H | tool | phase | runs | wall s median | min–max | CPU s | CPU s incl. daemons | "
            "peak RSS MB | hosts' CPU s | sent KB | changed | correct |\n"
            "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
    body = ""
    for r in rows:
        status = "yes" if r["ok"] else (r["problems"][0] if r["runs"] == 0 else "NO: " + "; ".join(r["problems"]))
        body += (f"| {r['hosts']} | {r['tool']} | {r['phase']} | {r['runs']} | {fmt(r['wall_median'], '.3f')} | "
                 f"{fmt(r['wall_min'], '.3f')}–{fmt(r['wall_max'], '.3f')} | {fmt(r['cpu_median'], '.2f')} | "
                 f"{fmt(r['cpu_tree_median'], '.2f')} | {fmt(r['rss_mb_median'], '.0f')} | "
                 f"{fmt(r['hosts_cpu_median'], '.2f')} | "
                 f"{fmt(r['tx_kb_median'], '.0f')} | {fmt(r['changed'], 'd')} | {status} |\n")
    return head + body


def targets(rows: list[dict], lat: dict) -> list[str]:
    def get(H, tool, phase):
        for r in rows:
            if r["hosts"] == H and r["tool"] == tool and r["phase"] == phase:
                return r["wall_median"]
        return None
    out = []
    for H in sorted({r["hosts"] for r in rows}):
        m = get(H, "mgmt", "warm")
        ans = [x for x in (get(H, "ansible-linear", "warm"), get(H, "ansible-free", "warm")) if x]
        py = get(H, "pyinfra", "warm")
        if m and ans:
            ratio = min(ans) / m
            out.append(f"H={H}: warm, fastest Ansible / mgmt = {ratio:.1f}x (target >= 10x): "
                       f"{'met' if ratio >= 10 else 'MISSED'}")
        if m and py:
            ratio = py / m
            out.append(f"H={H}: warm, pyinfra / mgmt = {ratio:.1f}x (target >= 3x): "
                       f"{'met' if ratio >= 3 else 'MISSED'}")
        c = get(H, "mgmt", "cold")
        scp = get(H, "floor-scp", "-")
        sshf = get(H, "floor-ssh", "-")
        if c and scp:
            out.append(f"H={H}: cold mgmt / floor (scp: login + copy) = {c / scp:.2f}x (target <= 2x): "
                       f"{'met' if c / scp <= 2 else 'MISSED'}"
                       + (f"; / (ssh true + scp) = {c / (scp + sshf):.2f}x" if sshf else ""))
        l = lat.get(str(H)) or {}
        p50 = pct(l.get("edit_to_lines", []), 0.5)
        if p50 is not None:
            out.append(f"H={H}: propagation p50 (graph edit on h1 -> its new line in the lines file of every other host) = "
                       f"{p50 * 1000:.0f} ms (target < 100 ms): {'met' if p50 < 0.1 else 'MISSED'}")
    return out


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def latency_table(lat: dict) -> str:
    s = ("| H | edit→applied p50 / p99 ms | applied on h1→line on all others p50 / p99 ms | "
         "edit→line on all others (propagation) p50 / p99 ms | changes | "
         "edit→applied, local change only p50 / p99 ms | hosts' CPU per change ms (export / local only) |"
         "\n|---:|---:|---:|---:|---:|---:|---:|\n")
    for H, l in sorted(lat.items(), key=lambda kv: int(kv[0])):
        def pp(key):
            xs = l.get(key, [])
            if not xs:
                return "-"
            return f"{pct(xs, 0.5) * 1000:.0f} / {pct(xs, 0.99) * 1000:.0f}"
        s += (f"| {H} | {pp('edit_to_applied')} | {pp('applied_to_lines')} | {pp('edit_to_lines')} | "
              f"{len(l.get('edit_to_applied', []))}{' (' + l['error'] + ')' if 'error' in l else ''} | "
              f"{pp('local_edit_to_applied')} | {ms(l.get('hosts_cpu_per_change'))} / "
              f"{ms(l.get('hosts_cpu_per_local_change'))} |\n")
    return s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", default="1,10", help="host counts, e.g. 1,10,30,50")
    ap.add_argument("--runs", type=int, default=1, help="runs per (H, tool, phase); median shown")
    ap.add_argument("--tools", default="floor," + ",".join(TOOLS))
    ap.add_argument("--phases", default=",".join(PHASES))
    ap.add_argument("--latency-changes", type=int, default=20, help="0: no latency measurement")
    ap.add_argument("--mgmt", help="the static mgmt binary (default: build it)")
    ap.add_argument("--no-upgrade", action="store_true", help="keep the venv's versions")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--max-minutes", type=float, default=20,
                    help="time budget of the tool runs, shared among the H values in proportion to H; "
                         "a group that no longer fits gets fewer runs or is skipped (0: no limit)")
    ap.add_argument("--setup-only", type=int, metavar="H",
                    help="bring up H hosts, write the inputs to work/hH, print the bed and exit")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("run.py: needs root (the test bed)", file=sys.stderr)
        return 1
    hosts = [int(x) for x in a.hosts.split(",")]
    tools = a.tools.split(",")
    phases = a.phases.split(",")
    versions = ensure_venv(upgrade=not a.no_upgrade)
    mgmt = ensure_binaries(a.mgmt)
    versions["mgmt"] = run([str(mgmt), "--version"], capture_output=True, text=True).stdout.strip()
    versions["mgmt_binary_bytes"] = mgmt.stat().st_size
    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine(),
            "versions": versions, "args": vars(a)}
    log(f"versions: {versions}")
    if a.setup_only:
        bed = bed_up(a.setup_only)
        gen_inputs(bed, WORK / f"h{a.setup_only}")
        print(f"test bed {bed.dir} (bridge {bed.bridge}); inputs in {WORK / f'h{a.setup_only}'}")
        print(f"remove with: {TESTBED} down {bed.dir}")
        return 0
    global CG, MGMT_BIN
    MGMT_BIN = (mgmt, hashlib.sha256(mgmt.read_bytes()).hexdigest())
    CG = CpuGroup()
    budget = Budget(a.max_minutes * 60, hosts)
    rows, raw, lat = [], [], {}
    try:
        for H in hosts:
            log(f"H={H}: bringing up the test bed")
            bed = bed_up(H)
            try:
                work = WORK / f"h{H}"
                gen_inputs(bed, work)
                if "floor" in tools:
                    for which in ("ssh", "scp"):
                        samples = [run_floor(bed, work, which, mgmt) for _ in range(a.runs)]
                        probs = [[f"exit {s.rc}"] if s.rc else [] for s in samples]
                        rows.append(summarize(H, f"floor-{which}", "-", samples, [], probs))
                        log(f"H={H} floor-{which}: {rows[-1]['wall_median']:.3f}s")
                        raw += [dict(hosts=H, tool=f"floor-{which}", phase="-", run=i, **sample_row(s))
                                for i, s in enumerate(samples)]
                groups = plan_groups([t for t in tools if t != "floor"], phases)
                h_deadline = time.monotonic() + budget.share(H)
                for gi, (tool, phase) in enumerate(groups):
                    est = budget.estimate(tool, H)
                    left = h_deadline - time.monotonic()
                    # The warm groups of the strategies share what is left, so every strategy
                    # gets a warm run before one gets three.
                    share = 1
                    if phase == "warm" and tool.startswith("ansible-"):
                        share = sum(1 for t, p in groups[gi:] if p == "warm" and t.startswith("ansible-"))
                    n = a.runs if est is None else min(a.runs, max(int(left // max(est, 0.001) // share),
                                                                    int(left >= est)))
                    if n < 1:
                        # A group never started keeps its row, saying why it has no numbers.
                        log(f"H={H} {tool} {phase}: skipped, the time budget is spent "
                            f"(one run ~{est:.0f}s, {max(left, 0):.0f}s left for H={H})")
                        rows.append(skipped_row(H, tool, phase, f"skipped: budget (~{est:.0f}s a run)"))
                        continue
                    samples, changed, probs = [], [], []
                    for i in range(n):
                        reset(bed, work, phase)
                        if tool == "mgmt":
                            s, per = run_mgmt(bed, work, mgmt)
                        elif tool.startswith("ansible-"):
                            s, per = run_ansible(bed, work, tool.split("-", 1)[1])
                        elif tool == "pyinfra":
                            s, per = run_pyinfra(bed, work)
                        else:
                            raise SystemExit(f"unknown tool {tool}")
                        budget.record(tool, H, s.wall)
                        pr = check(bed, tool, phase, s, per)
                        samples.append(s)
                        changed.append(total_changed(per))
                        probs.append(pr)
                        raw.append(dict(hosts=H, tool=tool, phase=phase, run=i,
                                        changed=changed[-1], problems="; ".join(pr), **sample_row(s)))
                        log(f"H={H} {tool} {phase} run {i + 1}/{n}: {s.wall:.3f}s "
                            f"cpu {s.cpu:.2f}s changed {changed[-1]} "
                            f"{'ok' if not pr else 'PROBLEMS: ' + '; '.join(pr[:4])}")
                        if pr:
                            keep = work / f"failed-{tool}-{phase}-{i}"
                            keep.mkdir(exist_ok=True)
                            (keep / "stdout").write_text(s.out)
                            (keep / "stderr").write_text(s.err)
                    rows.append(summarize(H, tool, phase, samples, changed, probs))
                ansible_masters_close(work)
                if "mgmt" in tools and a.latency_changes > 0:
                    log(f"H={H}: latency, {a.latency_changes} changes")
                    lat[str(H)] = latency(bed, work, mgmt, a.latency_changes)
            finally:
                ansible_masters_close(WORK / f"h{H}")
                bed_down(bed)
    finally:
        CG.remove()
    meta["machine"]["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    report = ("## Wall time, controller CPU, peak RSS, bytes sent\n\n" + table(rows) +
              "\n## Latency (mgmt, live run)\n\n" + latency_table(lat) +
              "\n## Targets\n\n" + "".join(f"- {t}\n" for t in targets(rows, lat)))
    print(report)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(f"{json.dumps(meta, indent=1)}\n\n{report}")
    (out / "results.json").write_text(json.dumps({"meta": meta, "summary": rows, "runs": raw,
                                                  "latency": lat}, indent=1))
    with open(out / "runs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(raw[0].keys()) if raw else ["hosts"], extrasaction="ignore")
        w.writeheader()
        w.writerows(raw)
    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()) if rows else ["hosts"])
        w.writeheader()
        w.writerows(rows)
    log(f"saved {out}/summary.md, summary.csv, runs.csv, results.json")
    return 0


def plan_groups(tools: list[str], phases: list[str]) -> list[tuple[str, str]]:
    """Cheap tools first, then Ansible's warm runs (a target), then its other phases: when the
    budget runs out, what is lost is the least important."""
    cheap = [(t, p) for t in tools if not t.startswith("ansible-") for p in phases]
    ans = [t for t in tools if t.startswith("ansible-")]
    first = [p for p in phases if p == "warm"]
    rest = [p for p in phases if p != "warm"]
    return cheap + [(t, p) for p in first for t in ans] + [(t, p) for p in rest for t in ans]


class Budget:
    def __init__(self, seconds: float, hosts: list[int]) -> None:
        self.seconds = seconds
        self.total_h = sum(hosts)
        self.seen: dict[tuple[str, int], float] = {}

    def share(self, H: int) -> float:
        return math.inf if self.seconds <= 0 else self.seconds * H / self.total_h

    def record(self, tool: str, H: int, wall: float) -> None:
        self.seen[(tool, H)] = max(wall, self.seen.get((tool, H), 0.0))

    def estimate(self, tool: str, H: int) -> float | None:
        """The slowest run of this tool at this H so far; else the nearest smaller H scaled
        linearly (pessimistic for the tools whose cost grows with H)."""
        if self.seconds <= 0:
            return None
        if (tool, H) in self.seen:
            return self.seen[(tool, H)]
        smaller = [h for (t, h) in self.seen if t == tool and h < H]
        if not smaller:
            return None
        h = max(smaller)
        return self.seen[(tool, h)] * H / h


def skipped_row(H: int, tool: str, phase: str, why: str) -> dict:
    return {"hosts": H, "tool": tool, "phase": phase, "runs": 0, "wall_median": None,
            "wall_min": None, "wall_max": None, "cpu_median": None, "cpu_tree_median": None,
            "rss_mb_median": None, "hosts_cpu_median": None, "tx_kb_median": None, "rx_kb_median": None, "changed": None,
            "ok": False, "problems": [why]}


def sample_row(s: Sample) -> dict:
    return {"wall": round(s.wall, 4), "cpu": round(s.cpu, 3),
            "cpu_tree": None if s.cpu_tree is None else round(s.cpu_tree, 3),
            "maxrss_mb": round(s.maxrss_mb, 1), "hosts_cpu": round(s.hosts_cpu, 3), "tx_bytes": s.tx, "rx_bytes": s.rx, "rc": s.rc}


if __name__ == "__main__":
    sys.exit(main())
