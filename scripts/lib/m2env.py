"""A real Mongrel2 plus handler processes for the scripts (autobahn, soak): free ports,
a private chroot, binaries found through cargo, and every process stopped on exit."""
import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVER_UUID = "2f62bd5a-1d9c-4a3e-8a9b-5d7c0e6f1a42"
_children = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cargo_executables(cargo_args):
    """Builds with cargo and returns {target name: executable path}, so callers name
    targets, never paths under target/ (they move when crates do)."""
    out = subprocess.run(["cargo", "build", "--message-format=json-render-diagnostics", *cargo_args],
                         cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True).stdout
    found = {}
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg.get("executable"):
            found[msg["target"]["name"]] = msg["executable"]
    return found


def _stop_all():
    for proc in reversed(_children):
        stop(proc)


def _on_signal(signum, _frame):
    _stop_all()
    sys.exit(128 + signum)


atexit.register(_stop_all)
signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGINT, _on_signal)
signal.signal(signal.SIGHUP, _on_signal)


def spawn(args, log_path, env=None, cwd=None):
    log = open(log_path, "ab")
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True)
    _children.append(proc)
    return proc


def stop(proc, timeout=10):
    """SIGTERM, then SIGKILL; returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def rss_kib(proc):
    try:
        with open(f"/proc/{proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class Handler:
    """One Mongrel2 handler route: the endpoints a handler process connects to."""

    def __init__(self, name, route, ident):
        self.name, self.route, self.ident = name, route, ident
        self.send_spec = f"tcp://127.0.0.1:{free_port()}"
        self.recv_spec = f"tcp://127.0.0.1:{free_port()}"
        self.control = f"tcp://127.0.0.1:{free_port()}"


class Mongrel2:
    def __init__(self, handlers, settings=None, keep_dir=None):
        self.handlers = handlers
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="m2-script-")
        self.keep_dir = keep_dir
        self.proc = None
        for sub in ("run", "logs", "tmp"):
            os.makedirs(os.path.join(self.dir, sub))
        routes = ",\n".join(f"    '{h.route}': {h.name}" for h in handlers)
        defs = "\n".join(
            f"{h.name} = Handler(send_spec='{h.send_spec}', send_ident='{h.ident}',\n"
            f"    recv_spec='{h.recv_spec}', recv_ident='', protocol='tnetstring')" for h in handlers)
        settings = {"zeromq.threads": 1, "server.daemonize": 0, **(settings or {})}
        sets = ",\n".join(f'    "{k}": {json.dumps(v)}' for k, v in settings.items())
        conf = f"""{defs}
main = Server(uuid="{SERVER_UUID}", name="main", bind_addr="127.0.0.1", port={self.port},
    chroot="./", access_log="/logs/access.log", error_log="/logs/error.log",
    pid_file="/run/mongrel2.pid", default_host="localhost",
    hosts=[Host(name="localhost", routes={{
{routes}
    }})])
servers = [main]
settings = {{
{sets}
}}
"""
        with open(os.path.join(self.dir, "mongrel2.conf"), "w") as f:
            f.write(conf)
        subprocess.run(["m2sh", "load", "-config", "mongrel2.conf", "-db", "config.sqlite"],
                       cwd=self.dir, check=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        atexit.register(self.cleanup)

    def start(self):
        pid_file = os.path.join(self.dir, "run", "mongrel2.pid")
        if os.path.exists(pid_file):
            os.unlink(pid_file)
        self.proc = spawn(["mongrel2", "config.sqlite", SERVER_UUID],
                          os.path.join(self.dir, "mongrel2.log"), cwd=self.dir)
        deadline = time.time() + 20
        while not self.answers():
            if self.proc.poll() is not None:
                raise RuntimeError(f"mongrel2 exited ({self.proc.returncode}):\n{self.log_tail()}")
            if time.time() > deadline:
                raise RuntimeError(f"mongrel2 does not answer on {self.port}:\n{self.log_tail()}")
            time.sleep(0.1)

    def answers(self):
        # Mongrel2 accepts before its event loop runs: only an answer proves it serves.
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"BOGUS\r\n\r\n")
                return bool(s.recv(16))
        except OSError:
            return False

    def stop(self):
        if self.proc is not None:
            stop(self.proc)
            _children.remove(self.proc)
            self.proc = None

    def log_tail(self, n=30):
        lines = []
        for name in ("mongrel2.log", "logs/error.log"):
            try:
                with open(os.path.join(self.dir, name), errors="replace") as f:
                    lines += f.readlines()[-n:]
            except OSError:
                pass
        return "".join(lines)

    def cleanup(self):
        self.stop()
        if self.keep_dir:
            os.makedirs(self.keep_dir, exist_ok=True)
            for name in ("mongrel2.log", "logs/error.log", "logs/access.log", "mongrel2.conf"):
                src = os.path.join(self.dir, name)
                if os.path.exists(src):
                    shutil.copy(src, os.path.join(self.keep_dir, "mongrel2-" + os.path.basename(name)))
        shutil.rmtree(self.dir, ignore_errors=True)
