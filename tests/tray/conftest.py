"""Fixtures for the tray app's end-to-end tests: the local test cluster, an
isolated home and state directory, an X server, a session bus, and the app
itself in a real WebKit window driven over WebDriver (tauri-driver in front of
WebKitWebDriver).

Nothing is skipped: a missing tool fails the test that needs it, naming it.
"""

import contextlib
import json
import os
import re
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.options import ArgOptions
from selenium.webdriver.remote.client_config import ClientConfig
from selenium.webdriver.remote.remote_connection import RemoteConnection

REPO = Path(__file__).resolve().parents[2]


def need_file(env_var: str) -> Path:
    value = os.environ.get(env_var)
    assert value, f"{env_var} is not set: run these tests through tests/tray/run"
    path = Path(value)
    assert path.is_file() and os.access(path, os.X_OK), f"{env_var}={path} is not an executable file"
    return path


def need_tool(name: str, hint: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} not found on PATH: {hint}"
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, check, timeout: float = 30.0, every: float = 0.2):
    """Polls `check` until it returns a truthy value; fails naming `what`."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as e:  # a not-yet-ready element or socket
            last_error = e
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_error})" if last_error else ""))


def port_is_free(port: int) -> bool:
    """Whether a server could listen on the port now. Like servers (and
    kubesocks) it sets SO_REUSEADDR: connections the proxy closed first
    linger in TIME_WAIT on the port, and keep no listener out."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def stop(proc: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 10.0):
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Relay:
    """A TCP relay in front of the API server that a test can cut off (every
    connection it holds reset, new ones reset as they come) and restore. One
    thread, so a reset is never held up by a read blocked elsewhere."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.cut = False
        self._reset_all = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    @staticmethod
    def _reset(sock):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    def _run(self):
        sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ)
        peers = {}
        while True:
            if self._reset_all.is_set():
                for sock in list(peers):
                    with contextlib.suppress(KeyError, ValueError):
                        sel.unregister(sock)
                    self._reset(sock)
                peers.clear()
                self._reset_all.clear()
            for key, _ in sel.select(timeout=0.05):
                sock = key.fileobj
                if sock is self.listener:
                    client, _ = sock.accept()
                    try:
                        if self.cut:
                            raise OSError("cut off")
                        server = socket.create_connection(self.upstream, timeout=5)
                    except OSError:
                        self._reset(client)
                        continue
                    peers[client], peers[server] = server, client
                    sel.register(client, selectors.EVENT_READ)
                    sel.register(server, selectors.EVENT_READ)
                    continue
                peer = peers.get(sock)
                try:
                    data = sock.recv(65536)
                    if data:
                        peer.sendall(data)
                        continue
                    peer.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                sel.unregister(sock)

    def cut_off(self):
        self.cut = True
        self._reset_all.set()

    def restore(self):
        self.cut = False


@pytest.fixture(scope="session")
def relay(cluster):
    """The relay every connection of the RELAYED context goes through."""
    server = re.search(r"server: https://([^\s:]+):(\d+)", cluster["admin"].read_text())
    return Relay((server.group(1), int(server.group(2))))


@pytest.fixture(scope="session")
def binaries():
    return {"tray": need_file("KUBESOCKS_TRAY_BIN"), "cli": need_file("KUBESOCKS_BIN")}


@pytest.fixture(scope="session")
def cluster():
    """The local test cluster with its demo workloads (started if needed, never stopped here)."""
    up = subprocess.run([REPO / "tests/cluster/up", "--demo"], stdout=subprocess.PIPE, text=True)
    assert up.returncode == 0, f"tests/cluster/up --demo failed ({up.returncode}); its log is above"
    admin = Path(up.stdout.strip().splitlines()[-1])
    env = {}
    for line in (admin.parent / "cluster.env").read_text().splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            env[key.strip()] = value.strip().strip("'\"")
    return {"admin": admin, "restricted": admin.with_name("restricted.kubeconfig"), "env": env}


@pytest.fixture(scope="session")
def home(cluster, relay, tmp_path_factory):
    """An isolated user: HOME, XDG dirs, state dir and a kubeconfig of four
    test contexts: admin, restricted, one whose API server does not answer
    and one that reaches it through a relay the tests can cut."""
    root = tmp_path_factory.mktemp("tray-home")
    dirs = {name: root / name for name in ("home", "config", "data", "state", "cache", "runtime", "kubesocks-state")}
    for d in dirs.values():
        d.mkdir(mode=0o700)
    kube = dirs["home"] / ".kube"
    kube.mkdir()
    admin = kube / "admin.kubeconfig"
    restricted = kube / "restricted.kubeconfig"
    shutil.copy(cluster["admin"], admin)
    shutil.copy(cluster["restricted"], restricted)
    # A third context whose API server does not answer: nothing listens on its port.
    unreachable = kube / "unreachable.kubeconfig"
    unreachable_port = free_port()
    text = cluster["admin"].read_text().replace("kubesocks-test", "kubesocks-unreachable")
    text = re.sub(r"server: https://[^\s]+", f"server: https://127.0.0.1:{unreachable_port}", text)
    unreachable.write_text(re.sub(r"(?m)^current-context:.*$", "", text))
    relayed = kube / "relayed.kubeconfig"
    text = cluster["admin"].read_text().replace("kubesocks-test", "kubesocks-relayed")
    text = re.sub(r"server: https://[^\s]+", f"server: https://127.0.0.1:{relay.port}", text)
    relayed.write_text(re.sub(r"(?m)^current-context:.*$", "", text))
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("XDG_", "KUBE", "DBUS_", "DISPLAY", "WAYLAND_", "GTK_", "GDK_"))
    }
    env.update(
        HOME=str(dirs["home"]),
        XDG_CONFIG_HOME=str(dirs["config"]),
        XDG_DATA_HOME=str(dirs["data"]),
        XDG_STATE_HOME=str(dirs["state"]),
        XDG_CACHE_HOME=str(dirs["cache"]),
        XDG_RUNTIME_DIR=str(dirs["runtime"]),
        KUBESOCKS_STATE_DIR=str(dirs["kubesocks-state"]),
        KUBECONFIG=f"{admin}:{restricted}:{unreachable}:{relayed}",
        SHELL="/bin/sh",
        NO_AT_BRIDGE="1",
        # Software rendering: there is no GPU under Xvfb.
        WEBKIT_DISABLE_COMPOSITING_MODE="1",
        LIBGL_ALWAYS_SOFTWARE="1",
        RUST_LOG="warn,kubesocks=info,kubesocks_tray=info",
    )
    return {"env": env, "dirs": dirs, "root": root, "unreachable_port": unreachable_port}


@pytest.fixture(scope="session")
def display(home):
    """A private X server; its number comes from Xvfb itself (-displayfd)."""
    xvfb = need_tool("Xvfb", "install Debian's xvfb (tests/setup does)")
    read, write = os.pipe()
    proc = subprocess.Popen(
        [xvfb, "-displayfd", str(write), "-screen", "0", "1280x900x24", "-nolisten", "tcp"],
        pass_fds=(write,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    with os.fdopen(read) as f:
        number = f.readline().strip()
    assert number, "Xvfb did not report a display number"
    yield f":{number}"
    stop(proc)


@pytest.fixture(scope="session")
def session_bus(home):
    """A private D-Bus session bus, for the tray item, single instance and notifications."""
    dbus_daemon = need_tool("dbus-daemon", "install Debian's dbus-daemon (tests/setup does)")
    proc = subprocess.Popen(
        [dbus_daemon, "--session", "--nofork", "--print-address=1"],
        stdout=subprocess.PIPE,
        text=True,
        env=home["env"],
    )
    address = proc.stdout.readline().strip()
    assert address, "dbus-daemon did not print its address"
    yield address
    stop(proc)


@pytest.fixture(scope="session")
def app_env(home, display, session_bus):
    env = dict(home["env"])
    env.update(DISPLAY=display, DBUS_SESSION_BUS_ADDRESS=session_bus)
    return env


@contextlib.contextmanager
def app_session(binaries, env, log_path):
    """The tray app in a WebKit window, driven through tauri-driver; it quits at the end."""
    tauri_driver = need_tool("tauri-driver", "tests/setup installs it into $KUBESOCKS_CACHE/tools/bin")
    need_tool("WebKitWebDriver", "install Debian's webkit2gtk-driver (tests/setup does)")
    port, native_port = free_port(), free_port()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [tauri_driver, "--port", str(port), "--native-port", str(native_port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:

            def driver_up():
                assert proc.poll() is None, f"tauri-driver exited ({proc.returncode}); see {log_path}"
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as r:
                    return r.status == 200

            wait_for("tauri-driver to answer", driver_up, timeout=30)
            options = ArgOptions()
            options.set_capability("browserName", "wry")
            options.set_capability("tauri:options", {"application": str(binaries["tray"])})
            # A bound on every WebDriver command, the session's start included: an app that
            # never shows its window (another instance still running) fails the test, not CI's clock.
            config = ClientConfig(remote_server_addr=f"http://127.0.0.1:{port}", timeout=120)
            connection = RemoteConnection(client_config=config)
            session = webdriver.Remote(command_executor=connection, options=options)
            session.implicitly_wait(0)
            try:
                yield session
            finally:
                try:
                    session.quit()
                except Exception:
                    pass  # the app may have quit already (a test asks it to)
        finally:
            stop(proc)


@pytest.fixture(scope="session")
def driver(binaries, app_env, home):
    with app_session(binaries, app_env, home["root"] / "tauri-driver.log") as session:
        yield session


def kubesocks(binaries, env, *args, timeout=60):
    """Runs the headless CLI with the app's environment (same state dir, same kubeconfig)."""
    return subprocess.run([binaries["cli"], *args], env=env, capture_output=True, text=True, timeout=timeout)


def status_json(binaries, env):
    out = kubesocks(binaries, env, "status", "-o", "json")
    assert out.returncode == 0, f"kubesocks status failed: {out.stderr}"
    return json.loads(out.stdout)


def curl(url: str, proxy: str, timeout: int = 20) -> str:
    out = subprocess.run(
        ["curl", "--silent", "--show-error", "--max-time", str(timeout), "--proxy", proxy, url],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, f"curl --proxy {proxy} {url} failed ({out.returncode}): {out.stderr}"
    return out.stdout
