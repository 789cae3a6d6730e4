"""End-to-end tests of the kubesocks tray app and the binaries of its .deb.

The window tests drive the real app in a real WebKit window (Xvfb,
tauri-driver, WebKitWebDriver), with a kubeconfig of contexts of the local
test cluster, and check each step against the world outside the window: curl
through the shown URL, the CLI through the control socket, the listening
ports, the tray item on D-Bus. They share one app session, in file order;
each asks for what it needs (`configured`, `connected`), so each also runs on
its own (`tests/tray/run -k NAME`).
"""

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By

from conftest import app_session, curl, free_port, kubesocks, port_is_free, status_json, wait_for

ADMIN = "kubesocks-test"
RESTRICTED = "kubesocks-test-restricted"
UNREACHABLE = "kubesocks-unreachable"
RELAYED = "kubesocks-relayed"
ADDED = "kubesocks-added"
DEMO_URL = "http://productpage.default.svc.cluster.local:9080/"


# --- the package -------------------------------------------------------------


def test_the_deb_installs_the_tray_app_and_the_headless_cli():
    deb = os.environ.get("KUBESOCKS_DEB")
    assert deb and Path(deb).is_file(), f"KUBESOCKS_DEB={deb!r} is not a file: run through tests/tray/run"
    listing = subprocess.run(["dpkg-deb", "-c", deb], capture_output=True, text=True, check=True).stdout
    paths = {"/" + line.split()[-1].removeprefix("./") for line in listing.splitlines()}
    assert "/usr/bin/kubesocks-tray" in paths, listing
    assert "/usr/bin/kubesocks" in paths, listing
    assert any(p.startswith("/usr/share/applications/") and p.endswith(".desktop") for p in paths), listing
    assert any(p.startswith("/usr/share/icons/hicolor/") and p.endswith(".png") for p in paths), listing
    for extra in ("/usr/share/man/man1/kubesocks.1.gz", "/usr/share/bash-completion/completions/kubesocks",
                  "/usr/share/zsh/vendor-completions/_kubesocks", "/usr/share/fish/vendor_completions.d/kubesocks.fish"):
        assert extra in paths, f"{extra} not in the package:\n{listing}"
    fields = subprocess.run(["dpkg-deb", "-f", deb, "Package", "Depends"], capture_output=True, text=True, check=True)
    assert "Package: kubesocks" in fields.stdout
    assert "libwebkit2gtk-4.1" in fields.stdout, fields.stdout


def test_the_debs_man_page_and_completions_describe_the_cli(tmp_path):
    deb = os.environ["KUBESOCKS_DEB"]
    subprocess.run(["dpkg-deb", "-x", deb, str(tmp_path)], check=True)
    man = subprocess.run(["gzip", "-dc", str(tmp_path / "usr/share/man/man1/kubesocks.1.gz")],
                         capture_output=True, text=True, check=True).stdout
    assert man.startswith(".ie") and ".TH kubesocks 1" in man, man[:200]
    text = man.replace("\\-", "-")  # roff escapes hyphens
    for command in ("proxy-out", "connect", "connections", "failures"):
        assert f"kubesocks-{command}(1)" in text, f"{command} not in the man page"
    bash = (tmp_path / "usr/share/bash-completion/completions/kubesocks").read_text()
    # bash itself loads the completion and offers the subcommands.
    words = subprocess.run(
        ["bash", "-c", f"source {tmp_path}/usr/share/bash-completion/completions/kubesocks; "
                       "COMP_WORDS=(kubesocks conn); COMP_CWORD=1; _kubesocks kubesocks conn kubesocks; "
                       "echo ${COMPREPLY[@]}"],
        capture_output=True, text=True, check=True).stdout.split()
    assert {"connect", "connections"} <= set(words), words
    assert "complete" in bash
    assert "connections" in (tmp_path / "usr/share/fish/vendor_completions.d/kubesocks.fish").read_text()
    assert "#compdef kubesocks" in (tmp_path / "usr/share/zsh/vendor-completions/_kubesocks").read_text()


def test_the_headless_cli_in_the_deb_links_no_gui_library(binaries):
    libs = subprocess.run(["ldd", binaries["cli"]], capture_output=True, text=True, check=True).stdout
    for gui in ("libgtk", "libwebkit", "libgdk"):
        assert gui not in libs, f"{binaries['cli']} links {gui}:\n{libs}"


# --- headless mode of the tray binary -----------------------------------------


def test_the_tray_binary_runs_proxy_out_without_a_display(binaries, cluster, home):
    env = dict(home["env"])
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS"):
        env.pop(var, None)
    port = free_port()
    proc = subprocess.Popen(
        [binaries["tray"], "--kubeconfig", str(cluster["admin"]), "proxy-out", "--listen-socks", f"127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = wait_for("proxy-out to print its URL", lambda: _read_until(proc, "SOCKS5 proxy:"), timeout=60)
        assert f"socks5h://127.0.0.1:{port}" in line
        answer = curl(DEMO_URL, f"socks5h://127.0.0.1:{port}")
        assert answer.startswith("hello from productpage-v1-"), answer
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, proc.stderr.read()


def _read_until(proc, marker):
    assert proc.poll() is None, f"exited with {proc.returncode}: {proc.stderr.read()}"
    line = proc.stdout.readline()
    return line if marker in line else None


# --- the app on its own (no WebDriver) ---------------------------------------


@pytest.fixture
def own_session(home, display, tmp_path):
    """An environment of its own for one app: state dir, session bus and a
    dbus-monitor recording the notifications sent on it."""
    state_dir = tmp_path / "kubesocks-state"
    state_dir.mkdir(mode=0o700)
    env = dict(home["env"], DISPLAY=display, KUBESOCKS_STATE_DIR=str(state_dir))
    bus = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--print-address=1"], stdout=subprocess.PIPE, text=True, env=env)
    env["DBUS_SESSION_BUS_ADDRESS"] = bus.stdout.readline().strip()
    assert env["DBUS_SESSION_BUS_ADDRESS"], "dbus-daemon did not print its address"
    monitor_log = tmp_path / "dbus-monitor.log"
    with open(monitor_log, "w") as out:
        monitor = subprocess.Popen(
            ["dbus-monitor", "--session", "interface='org.freedesktop.Notifications'"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    # It prints its own NameAcquired signal once it listens.
    wait_for("dbus-monitor to start", lambda: monitor_log.stat().st_size > 0, timeout=10)
    procs = []
    yield {"env": env, "state": state_dir, "notifications": monitor_log, "procs": procs}
    for proc in [*procs, monitor, bus]:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_app_says_why_it_cannot_start_while_a_headless_daemon_runs(binaries, own_session):
    env, state_dir = own_session["env"], own_session["state"]
    daemon = subprocess.Popen([binaries["cli"], "daemon"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    own_session["procs"].append(daemon)
    wait_for("the headless daemon's socket", lambda: (state_dir / "control.sock").exists(), timeout=30)

    app = subprocess.run([binaries["tray"]], env=env, capture_output=True, text=True, timeout=90)
    assert app.returncode == 1, f"exit {app.returncode}: {app.stderr}"
    assert "already running" in app.stderr and "kubesocks quit" in app.stderr, app.stderr
    # A desktop notification says the same, for an app started from a launcher.
    sent = wait_for("the notification on the bus", lambda: "kubesocks cannot start" in (t := own_session["notifications"].read_text()) and t, timeout=10)
    assert "kubesocks quit" in sent, sent
    assert daemon.poll() is None, "the headless daemon keeps running"
    assert "already running" in (state_dir / "logs" / "tray.log").read_text(), "the reason is in the app's log too"


def test_sigterm_stops_the_app_and_its_proxies_and_leaves_no_credentials(binaries, own_session):
    env, state_dir = own_session["env"], own_session["state"]
    app = subprocess.Popen([binaries["tray"], "--background"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    own_session["procs"].append(app)
    wait_for("the app's control socket", lambda: (state_dir / "control.sock").exists(), timeout=60)
    out = kubesocks(binaries, env, "--context", ADMIN, "connect", "--socks", "--listen-socks", "127.0.0.1:0")
    assert out.returncode == 0, out.stderr
    [conn] = status_json(binaries, env)["connections"]
    assert Path(conn["kubeconfig"]).exists()
    port = int(conn["socks"].rsplit(":", 1)[1])

    app.send_signal(signal.SIGTERM)
    assert app.wait(30) == 0, app.stderr.read()
    assert not (state_dir / "control.sock").exists(), "the control socket is removed"
    assert not Path(conn["kubeconfig"]).exists(), "the connection's kubeconfig (credentials) is deleted"
    assert not list((state_dir / "connections").iterdir()), "no connection record is left"
    assert port_is_free(port), "the proxy port is free"


def test_a_failing_exec_plugin_leaks_no_secret_the_app_inherited(binaries, own_session, cluster, tmp_path):
    """The app started from a desktop session holds its cloud keys; an exec
    plugin it runs inherits them. When the plugin fails quoting one, the
    secret reaches no answer, status, log, file or notification."""
    env, state_dir = own_session["env"], own_session["state"]
    canary = "kubesocks-canary-tray-AKIA-3c9e1f"
    plugin = tmp_path / "kubesocks-test-failing-credential"
    plugin.write_text('#!/bin/sh\necho "login failed for key $AWS_SECRET_ACCESS_KEY" >&2\nenv >&2\nexit 1\n')
    plugin.chmod(0o755)
    admin = cluster["admin"].read_text()
    server = re.search(r"server: (https://\S+)", admin).group(1)
    ca = re.search(r"certificate-authority-data: (\S+)", admin).group(1)
    kubeconfig = tmp_path / "failing.kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "failing",
        "clusters": [{"name": "test", "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [{"name": "plugin", "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1", "command": str(plugin), "interactiveMode": "Never"}}}],
        "contexts": [{"name": "failing", "context": {"cluster": "test", "user": "plugin"}}],
    }))
    app_env = dict(env, AWS_SECRET_ACCESS_KEY=canary)
    app = subprocess.Popen([binaries["tray"], "--background"], env=app_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    own_session["procs"].append(app)
    wait_for("the app's control socket", lambda: (state_dir / "control.sock").exists(), timeout=60)
    client_env = {k: v for k, v in env.items() if k != "AWS_SECRET_ACCESS_KEY"}
    out = kubesocks(binaries, client_env, "--kubeconfig", str(kubeconfig), "connect", "--socks", "--listen-socks", "127.0.0.1:0")
    assert out.returncode != 0, "the plugin fails, so does connect"
    assert "login failed for key <redacted>" in out.stderr, f"the plugin had the secret: {out.stderr}"
    status = kubesocks(binaries, client_env, "status", "-o", "json")
    app.send_signal(signal.SIGTERM)
    app_stderr = app.communicate(timeout=30)[1]
    seen = {"connect": out.stdout + out.stderr, "status": status.stdout + status.stderr, "the app's stderr": app_stderr,
            "notifications": own_session["notifications"].read_text()}
    for path in state_dir.rglob("*"):
        if path.is_file():
            seen[str(path)] = path.read_text(errors="replace")
    assert any("logs" in name for name in seen), f"no log was looked at: {list(seen)}"
    for name, text in seen.items():
        assert canary not in text, f"the secret reached {name}:\n{text}"


# --- the window ----------------------------------------------------------------


def type_into(element, text):
    element.clear()
    element.send_keys(text)


def row(driver, context):
    return driver.find_element(By.CSS_SELECTOR, f'.row[data-context="{context}"]')


def field(driver, context, name):
    # Read in one script: the window re-renders a row whenever its state
    # changes (syncing to connected, a new count), which would leave an
    # element found in one call stale by the next.
    text = driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : null",
        f'.row[data-context="{context}"] [data-field="{name}"]',
    )
    assert text is not None, f"no field {name!r} in the row of {context}"
    return text.strip()


def click_switch(driver, context):
    # The checkbox is transparent over the drawn switch: click it as a user would.
    switch = row(driver, context).find_element(By.CSS_SELECTOR, 'input[data-action="toggle"]')
    driver.execute_script("arguments[0].click()", switch)


def row_classes(driver, context):
    """The row's classes, read in one script (see `field`)."""
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.className : ''",
        f'.row[data-context="{context}"]',
    )


def connected_state(driver, context):
    return "state-on" in row_classes(driver, context)


def switch_on(driver, context):
    """Connects `context` unless it is on or on its way (a context left on
    comes back on when the app starts)."""
    wait_for(f"the row of {context}", lambda: row_classes(driver, context), timeout=30)
    if re.search(r"\bstate-(off|failed)\b", row_classes(driver, context)):
        click_switch(driver, context)
    wait_for(f"{context} to connect", lambda: connected_state(driver, context), timeout=60)


def names(driver):
    """The contexts the window lists, in its order, read in one script (see `field`)."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('.row [data-field=\"name\"]'), e => e.textContent)"
    )


def outdated_notice(driver, context):
    """The row's notice that its kubeconfig entry changed, or None."""
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : null",
        f'.row[data-context="{context}"] [data-field="outdated"]',
    )


def test_the_window_lists_every_context_of_the_kubeconfig(driver, cluster):
    wait_for("the window to load", lambda: driver.find_element(By.CSS_SELECTOR, "body[data-ready=true]"), timeout=60)
    names = [e.text for e in driver.find_elements(By.CSS_SELECTOR, '.row [data-field="name"]')]
    assert names == [ADMIN, RESTRICTED, UNREACHABLE, RELAYED]
    server = cluster["env"]["KUBESOCKS_APISERVER"]
    assert field(driver, ADMIN, "server") == server
    assert field(driver, ADMIN, "namespace") == "default"
    assert field(driver, RESTRICTED, "namespace") == cluster["env"]["KUBESOCKS_RESTRICTED_NAMESPACE"]
    assert driver.find_element(By.ID, "headline").text == "Not connected"
    assert not connected_state(driver, ADMIN)
    # No shared port is open: no URL bar for it, and no buttons to copy one.
    for hidden in ("shared-port", "copy-shared-url", "copy-shared-pac", "banner"):
        assert not driver.find_element(By.ID, hidden).is_displayed(), f"#{hidden} is shown with nothing to show"

    background = driver.execute_script("return getComputedStyle(document.documentElement).backgroundColor")
    assert background == "rgb(244, 245, 247)", f"light palette expected, got {background}"


def configure(driver, home, state):
    """Sets every setting through the settings page and checks what was saved."""
    socks_port, http_port = free_port(), free_port()
    driver.find_element(By.ID, "open-settings").click()
    type_into(driver.find_element(By.ID, "socks-port"), str(socks_port))
    driver.execute_script("arguments[0].click()", driver.find_element(By.ID, "http-enabled"))
    type_into(driver.find_element(By.ID, "http-port"), str(http_port))
    driver.execute_script("arguments[0].click()", driver.find_element(By.ID, "passthrough"))
    dns_port = free_port()
    driver.execute_script("arguments[0].click()", driver.find_element(By.ID, "dns-enabled"))
    type_into(driver.find_element(By.ID, "dns-port"), str(dns_port))
    shared_port = free_port()
    driver.execute_script("arguments[0].click()", driver.find_element(By.ID, "shared-enabled"))
    type_into(driver.find_element(By.ID, "shared-port-number"), str(shared_port))
    type_into(driver.find_element(By.ID, "default-context"), ADMIN)
    alias = driver.find_element(By.CSS_SELECTOR, f'#aliases input[data-alias-for="{ADMIN}"]')
    assert alias.get_attribute("placeholder") == ADMIN, "the alias offered is the context's name made a label"
    type_into(alias, "Lab")
    driver.execute_script("arguments[0].click()", driver.find_element(By.ID, "start-at-login"))
    driver.find_element(By.ID, "save-settings").click()
    wait_for("the settings page to close", lambda: driver.find_element(By.ID, "settings-view").get_attribute("hidden") is not None)
    saved = home["dirs"]["config"] / "kubesocks" / "tray.json"
    assert f'"socks_port": {socks_port}' in saved.read_text()
    assert f'"http_port": {http_port}' in saved.read_text()
    assert '"passthrough": true' in saved.read_text()
    assert f'"shared_port": {shared_port}' in saved.read_text()
    assert f'"dns_port": {dns_port}' in saved.read_text()
    assert f'"default_context": "{ADMIN}"' in saved.read_text()
    assert json.loads(saved.read_text())["aliases"] == {ADMIN: "lab"}, "saved as a DNS label"
    # The autostart plugin writes ~/.config/autostart whatever XDG_CONFIG_HOME says.
    autostart = list((home["dirs"]["home"] / ".config" / "autostart").glob("*.desktop"))
    assert autostart, "start at login wrote no autostart entry"
    entry = autostart[0].read_text()
    assert "kubesocks-tray" in entry and "--background" in entry, entry
    state["socks_port"] = socks_port
    state["http_port"] = http_port
    state["shared_port"] = shared_port
    state["dns_port"] = dns_port



@pytest.fixture
def configured(driver, home, state):
    """The settings page has set the ports, the DNS helper, the shared port
    and its alias (once per module: later tests share them)."""
    wait_for("the window to load", lambda: driver.find_element(By.CSS_SELECTOR, "body[data-ready=true]"), timeout=60)
    if "socks_port" not in state:
        configure(driver, home, state)
    return state


@pytest.fixture
def connected(driver, configured):
    """The admin context is connected with the configured settings."""
    if not connected_state(driver, ADMIN):
        click_switch(driver, ADMIN)
        wait_for("a connection", lambda: connected_state(driver, ADMIN), timeout=60)
    configured["id"] = wait_for("a connection ID in the row", lambda: re.fullmatch(r"[0-9a-f]{8}", field(driver, ADMIN, "id")), timeout=30).group(0)
    return configured


def test_settings_set_the_ports_of_new_connections_and_start_at_login(driver, home, state):
    wait_for("the window to load", lambda: driver.find_element(By.CSS_SELECTOR, "body[data-ready=true]"), timeout=60)
    configure(driver, home, state)


def test_switching_a_context_on_connects_it(driver, configured):
    state = configured
    if connected_state(driver, ADMIN):
        click_switch(driver, ADMIN)
        wait_for("the row to switch off", lambda: "state-off" in row_classes(driver, ADMIN), timeout=15)
    click_switch(driver, ADMIN)
    conn_id = wait_for("a connection ID in the row", lambda: re.fullmatch(r"[0-9a-f]{8}", field(driver, ADMIN, "id")), timeout=60)
    state["id"] = conn_id.group(0)
    assert field(driver, ADMIN, "socks") == f"127.0.0.1:{state['socks_port']}"
    assert field(driver, ADMIN, "http") == f"127.0.0.1:{state['http_port']}"
    assert field(driver, ADMIN, "url") == f"socks5h://127.0.0.1:{state['socks_port']}"
    assert connected_state(driver, ADMIN)
    assert driver.find_element(By.ID, "headline").text.startswith("1 context connected")


def test_curl_through_the_shown_url_reaches_the_demo_pod_and_the_counters_move(driver, connected):
    url = field(driver, ADMIN, "url")
    before = int(field(driver, ADMIN, "total"))
    answer = curl(DEMO_URL, url)
    assert answer.startswith("hello from productpage-v1-"), answer
    # Pushed by the app about once a second; nothing here reloads the page.
    wait_for("the total to count the request", lambda: field(driver, ADMIN, "total") == str(before + 1), timeout=15)
    answer = curl(DEMO_URL, "http://" + field(driver, ADMIN, "http"))
    assert answer.startswith("hello from productpage-v1-"), answer
    wait_for("the total to count the HTTP request", lambda: field(driver, ADMIN, "total") == str(before + 2), timeout=15)
    received = wait_for("received bytes", lambda: (t := field(driver, ADMIN, "bytes-down")) != "0 B" and t, timeout=15)
    assert re.fullmatch(r"\d+(\.\d)? (B|KiB)", received), received


SLOW_URL = "http://productpage.default.svc.cluster.local:9080/slow"


def open_connections_view(driver, context):
    # Found and clicked in one script: the row may be redrawn between two calls (see `field`).
    driver.execute_script(
        "document.querySelector(arguments[0]).click()",
        f'.row[data-context="{context}"] button[data-action="connections"]',
    )
    wait_for("the Connections view", lambda: driver.find_element(By.ID, "connections-view").is_displayed(), timeout=10)


def close_connections_view(driver):
    driver.execute_script("document.getElementById('close-connections').click()")
    wait_for("the contexts again", lambda: driver.find_element(By.ID, "contexts-view").is_displayed(), timeout=10)


def listed_open(driver):
    """The Connections view's open connections as {conn: {field: text}}, read in one script."""
    return driver.execute_script(
        """
        const rows = {};
        for (const tr of document.querySelectorAll('#open-connections tr[data-conn]')) {
          const fields = {};
          for (const f of tr.querySelectorAll('[data-field]')) fields[f.dataset.field] = f.textContent;
          rows[tr.dataset.conn] = fields;
        }
        return rows;
        """
    )


def test_the_connections_view_shows_curls_download_and_its_close_button_resets_it(driver, connected):
    url = field(driver, ADMIN, "url")
    download = subprocess.Popen(
        ["curl", "--silent", "--show-error", "--output", "/dev/null", "--proxy", url, SLOW_URL],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            "the row's sparkline and Connections button",
            lambda: driver.execute_script(
                "return document.querySelector(arguments[0]) !== null",
                f'.row[data-context="{ADMIN}"] .activity-line .sparkline',
            ),
            timeout=15,
        )
        open_connections_view(driver, ADMIN)
        # Pushed by the app as the download goes: its program (found by the
        # engine from the socket), the pod it reached, bytes that grow.
        mine = f"curl ({download.pid})"
        conn, fields = wait_for(
            "curl's download in the list with bytes received",
            lambda: next(((c, f) for c, f in listed_open(driver).items()
                          if f.get("program") == mine and f.get("down") not in (None, "", "0 B")), None),
            timeout=20,
        )
        assert fields["asked"] == "productpage.default.svc.cluster.local:9080", fields
        assert re.fullmatch(r"default/productpage-v1-\S+:9080 on node-\S+", fields["destination"]), fields
        assert fields["state"] == "open", fields
        screenshot(driver, screenshot_path(connected, "-connections"))
        driver.execute_script(
            "document.querySelector(arguments[0]).click()",
            f'#open-connections tr[data-conn="{conn}"] button[data-action="close"]',
        )
        code = download.wait(timeout=10)
        assert code != 0, "curl saw its download cut"
        assert "reset" in download.stderr.read().lower() or code in (18, 56), f"curl exit {code}"
        wait_for("the closed connection to leave the list", lambda: conn not in listed_open(driver), timeout=10)
    finally:
        if download.poll() is None:
            download.kill()
        close_connections_view(driver)


def test_a_refused_name_shows_in_the_failures_with_its_reason(driver, connected):
    url = field(driver, ADMIN, "url")
    out = subprocess.run(["curl", "--silent", "--proxy", url, "http://nope.default.svc.cluster.local/"], capture_output=True)
    assert out.returncode != 0, "an unknown Service is refused"
    open_connections_view(driver, ADMIN)
    try:
        driver.execute_script("document.querySelector('#connections-view [data-tab=failures]').click()")
        failure = wait_for(
            "the refusal in the failures list",
            lambda: driver.execute_script(
                """
                for (const tr of document.querySelectorAll('#failed-connections tr')) {
                  const f = (name) => tr.querySelector(`[data-field="${name}"]`)?.textContent;
                  if (f('asked') === 'nope.default.svc.cluster.local:80') return {program: f('program'), reason: f('reason')};
                }
                return null;
                """
            ),
            timeout=15,
        )
        assert failure["reason"] == "no service nope in namespace default", failure
        assert failure["program"].startswith("curl ("), failure
        reasons = driver.find_element(By.ID, "failure-reasons").text
        assert "no service nope in namespace default" in reasons, reasons
        screenshot(driver, screenshot_path(connected, "-failures"))
    finally:
        close_connections_view(driver)
        # The refusal is the connection's last error for a minute: the tests
        # after this one want a connection without one, so it is made anew.
        click_switch(driver, ADMIN)
        wait_for("the row to switch off", lambda: "state-off" in row_classes(driver, ADMIN), timeout=15)
        click_switch(driver, ADMIN)
        wait_for("a fresh connection", lambda: connected_state(driver, ADMIN), timeout=60)


def test_the_shared_port_reaches_the_connected_context_by_its_alias(driver, binaries, app_env, connected):
    state = connected
    shared = f"socks5h://127.0.0.1:{state['shared_port']}"
    shown = wait_for("the shared port in the window", lambda: driver.find_element(By.ID, "shared-port").is_displayed(), timeout=10)
    assert shown and shared in driver.find_element(By.ID, "shared-port").text
    assert field(driver, ADMIN, "alias") == "lab"
    assert field(driver, ADMIN, "dns") == f"127.0.0.1:{state['dns_port']}"
    dig = subprocess.run(
        ["dig", "@127.0.0.1", "-p", str(state["dns_port"]), "+short", "+time=5", "productpage.default.svc.cluster.local"],
        capture_output=True, text=True, timeout=30,
    )
    assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+", dig.stdout.strip()), dig
    by_alias = curl("http://productpage.default.lab:9080/", shared)
    assert by_alias.startswith("hello from productpage-v1-"), by_alias
    by_default = curl(DEMO_URL, shared)
    assert by_default.startswith("hello from productpage-v1-"), by_default
    status = status_json(binaries, app_env)
    assert status["shared_port"]["socks_url"] == shared, status
    assert status["shared_port"]["default_context"] == ADMIN, status


def test_the_cli_lists_the_same_connection_through_the_socket(binaries, app_env, connected):
    state = connected
    assert curl(DEMO_URL, f"socks5h://127.0.0.1:{state['socks_port']}").startswith("hello from productpage-v1-")
    status = status_json(binaries, app_env)
    assert status["daemon"]["host"] == "kubesocks-tray", status["daemon"]
    [conn] = status["connections"]
    assert conn["id"] == state["id"]
    assert conn["context"] == ADMIN
    assert conn["socks"] == f"127.0.0.1:{state['socks_port']}"
    assert conn["http"] == f"127.0.0.1:{state['http_port']}"
    assert conn["total_connections"] >= 1
    # The passthrough setting reached the connection.
    assert conn["passthrough"] is True, conn
    assert conn["pac_url"] == f"http://127.0.0.1:{state['socks_port']}/proxy.pac", conn


def test_a_connection_started_from_the_terminal_shows_in_the_window(driver, binaries, app_env, cluster, connected):
    out = kubesocks(binaries, app_env, "--context", RESTRICTED, "connect", "--socks", "-o", "json")
    assert out.returncode == 0, out.stderr
    conn_id = re.search(r'"id": "([0-9a-f]{8})"', out.stdout).group(1)
    wait_for("the terminal's connection in the window", lambda: field(driver, RESTRICTED, "id") == conn_id, timeout=10)
    assert connected_state(driver, RESTRICTED)
    assert driver.find_element(By.ID, "headline").text == "2 contexts connected"
    out = kubesocks(binaries, app_env, "disconnect", conn_id)
    assert out.returncode == 0, out.stderr
    wait_for("the row to switch off", lambda: "state-off" in row_classes(driver, RESTRICTED), timeout=10)


def test_the_copy_button_puts_the_url_on_the_clipboard(driver, app_env, connected):
    state = connected
    row(driver, ADMIN).find_element(By.CSS_SELECTOR, '[data-action="copy"]').click()
    expected = f"socks5h://127.0.0.1:{state['socks_port']}"
    assert wait_for("the URL on the clipboard", lambda: clipboard(app_env) == expected, timeout=10)


def test_the_copy_pac_button_puts_a_live_pac_url_on_the_clipboard(driver, app_env, connected):
    state = connected
    expected = f"http://127.0.0.1:{state['socks_port']}/proxy.pac"
    assert field(driver, ADMIN, "pac-url") == expected
    row(driver, ADMIN).find_element(By.CSS_SELECTOR, '[data-action="copy-pac"]').click()
    assert wait_for("the PAC URL on the clipboard", lambda: clipboard(app_env) == expected, timeout=10)
    pac = subprocess.run(["curl", "-sS", "--max-time", "10", expected], capture_output=True, text=True)
    assert "FindProxyForURL" in pac.stdout and f"SOCKS5 127.0.0.1:{state['socks_port']}" in pac.stdout, pac


def test_the_tray_menu_offers_the_contexts_and_the_url(app_env, connected):
    state = connected
    menu = wait_for("the tray menu on the session bus", lambda: tray_menu(app_env), timeout=20)
    assert menu["items"][ADMIN]["toggle-state"] == "1", menu
    assert menu["items"][RESTRICTED]["toggle-state"] == "0", menu
    assert f"    Copy socks5h://127.0.0.1:{state['socks_port']}" in menu["items"], menu
    assert "    Copy PAC URL" in menu["items"], menu
    assert "Open kubesocks" in menu["items"] and "Quit" in menu["items"], menu
    assert menu["items"]["Connected: " + ADMIN]["enabled"] == "false", menu


def test_the_tray_menu_connects_and_disconnects_a_context(driver, app_env):
    tray_click(app_env, RESTRICTED)
    conn_id = wait_for("the tray's connection in the window", lambda: re.fullmatch(r"[0-9a-f]{8}", field(driver, RESTRICTED, "id")), timeout=30)
    assert wait_for("the tray item checked", lambda: tray_menu(app_env)["items"][RESTRICTED]["toggle-state"] == "1")
    assert conn_id
    tray_click(app_env, RESTRICTED)
    wait_for("the row to switch off", lambda: "state-off" in row_classes(driver, RESTRICTED), timeout=15)
    assert wait_for("the tray item unchecked", lambda: tray_menu(app_env)["items"][RESTRICTED]["toggle-state"] == "0")


def test_a_second_start_hands_over_to_the_running_app(binaries, app_env, driver, connected):
    pid = status_json(binaries, app_env)["daemon"]["pid"]
    second = subprocess.run([binaries["tray"]], env=app_env, capture_output=True, text=True, timeout=60)
    assert second.returncode == 0, second.stderr
    assert status_json(binaries, app_env)["daemon"]["pid"] == pid, "the first app still hosts the daemon"
    assert connected_state(driver, ADMIN)


def screenshot(driver, target: Path):
    """Saves the window (once no toast covers it) and checks it is a real picture of it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    wait_for("the toast to fade", lambda: driver.execute_script("return getComputedStyle(document.getElementById('toast')).opacity") == "0")
    png = driver.get_screenshot_as_png()
    assert png.startswith(b"\x89PNG"), "not a PNG"
    target.write_bytes(png)
    width = int.from_bytes(png[16:20], "big")
    height = int.from_bytes(png[20:24], "big")
    assert width >= 500 and height >= 350, (width, height)
    print(f"screenshot: {target}")


def screenshot_path(state, suffix=""):
    chosen = os.environ.get("KUBESOCKS_SCREENSHOT")
    base = Path(chosen) if chosen else Path(state["root"]) / "tray-window.png"
    return base.with_name(base.stem + suffix + base.suffix)


def test_the_window_screenshot_shows_a_connected_context(driver, connected):
    screenshot(driver, screenshot_path(connected))


def test_a_failed_connect_shows_its_reason_in_the_window_and_the_tray(driver, app_env, home, connected):
    click_switch(driver, UNREACHABLE)
    wait_for("the row to show the failure", lambda: "state-failed" in row_classes(driver, UNREACHABLE), timeout=30)
    error = row(driver, UNREACHABLE).find_element(By.CSS_SELECTOR, '[data-field="error"]').text
    assert f"127.0.0.1:{home['unreachable_port']}" in error, error
    assert field(driver, UNREACHABLE, "state") == "Could not connect"
    assert driver.find_element(By.ID, "headline").text == "1 context connected · 1 with errors"
    menu = wait_for("the tray to mark it", lambda: (m := tray_menu(app_env)) and UNREACHABLE + " (error)" in m["items"] and m)
    assert menu["items"][UNREACHABLE + " (error)"]["toggle-state"] == "0", menu


def tray_status(env):
    """The tray item's Status property: Active, or NeedsAttention beside the error icon."""
    out = gdbus_call(env, tray_item_name(env), "/StatusNotifierItem", "org.freedesktop.DBus.Properties.Get",
                     "org.kde.StatusNotifierItem", "Status")
    return re.search(r"'(\w+)'", out).group(1)


def test_an_api_server_out_of_reach_shows_as_reconnecting_in_the_window_and_the_tray(driver, app_env, relay, configured):
    click_switch(driver, RELAYED)
    wait_for("a connection", lambda: connected_state(driver, RELAYED), timeout=60)
    try:
        relay.cut_off()
        wait_for("the row to say reconnecting", lambda: "state-reconnecting" in row_classes(driver, RELAYED), timeout=10)
        assert field(driver, RELAYED, "state") == "Reconnecting to the API server…"
        error = row(driver, RELAYED).find_element(By.CSS_SELECTOR, '[data-field="error"]').text
        assert error.startswith("The API server is unreachable: "), error
        wait_for("the tray menu to mark it", lambda: RELAYED + " (reconnecting…)" in tray_menu(app_env)["items"], timeout=10)
        wait_for("the tray to ask for attention", lambda: tray_status(app_env) == "NeedsAttention", timeout=10)
    finally:
        relay.restore()
    wait_for("the row to be connected again", lambda: connected_state(driver, RELAYED), timeout=10)
    click_switch(driver, RELAYED)
    wait_for("the row to switch off", lambda: "state-off" in row_classes(driver, RELAYED), timeout=15)


def test_a_context_added_to_the_kubeconfig_shows_without_a_restart(driver, home):
    wait_for("the window to load", lambda: driver.find_element(By.CSS_SELECTOR, "body[data-ready=true]"), timeout=60)
    kubeconfig = home["dirs"]["home"] / ".kube" / "relayed.kubeconfig"
    original = kubeconfig.read_text()
    added = f"contexts:\n- name: {ADDED}\n  context:\n    cluster: {RELAYED}\n    user: {RELAYED}\n    namespace: shop\n"
    try:
        kubeconfig.write_text(original.replace("contexts:\n", added, 1))
        # Nothing here reloads: the app notices the file changed.
        wait_for("the added context in the window", lambda: ADDED in names(driver), timeout=10)
        assert names(driver) == [ADMIN, RESTRICTED, UNREACHABLE, ADDED, RELAYED]
        assert field(driver, ADDED, "namespace") == "shop"
        assert "state-off" in row_classes(driver, ADDED)
    finally:
        kubeconfig.write_text(original)
    wait_for("the removed context to go", lambda: names(driver) == [ADMIN, RESTRICTED, UNREACHABLE, RELAYED], timeout=10)


def test_a_changed_entry_of_a_connected_context_is_shown_and_reconnect_takes_it(driver, binaries, app_env, home, configured):
    switch_on(driver, RELAYED)
    old_id = field(driver, RELAYED, "id")
    assert outdated_notice(driver, RELAYED) is None, "nothing changed yet"
    kubeconfig = home["dirs"]["home"] / ".kube" / "relayed.kubeconfig"
    original = kubeconfig.read_text()
    assert "    namespace: default\n" in original, original
    try:
        kubeconfig.write_text(original.replace("    namespace: default\n", "    namespace: shop\n", 1))
        notice = wait_for("the row to say its entry changed", lambda: outdated_notice(driver, RELAYED), timeout=10)
        assert "The kubeconfig entry changed since it was connected" in notice, notice
        assert connected_state(driver, RELAYED), "still connected, not failing"
        [conn] = [c for c in status_json(binaries, app_env)["connections"] if c["context"] == RELAYED]
        assert conn["namespace"] == "default", "the connection keeps its entry until reconnected"

        row(driver, RELAYED).find_element(By.CSS_SELECTOR, '[data-action="reconnect"]').click()
        new_id = wait_for(
            "a new connection",
            lambda: connected_state(driver, RELAYED) and (i := field(driver, RELAYED, "id")) != old_id and i,
            timeout=60,
        )
        wait_for("the notice to go", lambda: outdated_notice(driver, RELAYED) is None, timeout=10)
        [conn] = [c for c in status_json(binaries, app_env)["connections"] if c["context"] == RELAYED]
        assert (conn["id"], conn["namespace"]) == (new_id, "shop"), conn
    finally:
        kubeconfig.write_text(original)
    wait_for("the entry put back to be noticed", lambda: outdated_notice(driver, RELAYED), timeout=10)
    click_switch(driver, RELAYED)
    wait_for("the row to switch off", lambda: "state-off" in row_classes(driver, RELAYED), timeout=15)


def test_switching_it_off_frees_the_port(driver, binaries, app_env, connected):
    state = connected
    click_switch(driver, ADMIN)
    wait_for("the row to switch off", lambda: "state-off" in row_classes(driver, ADMIN), timeout=15)
    assert port_is_free(state["socks_port"]), f"port {state['socks_port']} still taken"
    assert status_json(binaries, app_env)["connections"] == []
    failed = "state-failed" in row_classes(driver, UNREACHABLE)
    assert driver.find_element(By.ID, "headline").text == ("Not connected · a connect failed" if failed else "Not connected")


def test_kubesocks_quit_stops_the_app_and_its_proxies(driver, binaries, app_env, home, connected):
    port = int(field(driver, ADMIN, "socks").rsplit(":", 1)[1])
    pid = status_json(binaries, app_env)["daemon"]["pid"]
    assert Path(f"/proc/{pid}/exe").resolve() == binaries["tray"].resolve(), "the daemon is the tray app"
    out = kubesocks(binaries, app_env, "quit")
    assert out.returncode == 0, out.stderr
    socket_path = home["dirs"]["kubesocks-state"] / "control.sock"
    wait_for("the control socket to go", lambda: not socket_path.exists(), timeout=20)
    wait_for("the proxy port to be freed", lambda: port_is_free(port), timeout=10)
    wait_for("the app process to exit", lambda: not alive(pid), timeout=20)


def test_dark_mode_follows_the_desktop(binaries, app_env, home, state):
    env = dict(app_env, GTK_THEME="Adwaita:dark")
    with app_session(binaries, env, home["root"] / "tauri-driver-dark.log") as dark:
        wait_for("the window to load", lambda: dark.find_element(By.CSS_SELECTOR, "body[data-ready=true]"), timeout=60)
        assert dark.execute_script("return matchMedia('(prefers-color-scheme: dark)').matches") is True
        switch_on(dark, ADMIN)
        background = dark.execute_script("return getComputedStyle(document.documentElement).backgroundColor")
        assert background == "rgb(26, 28, 32)", background
        screenshot(dark, screenshot_path(state, "-dark"))
        url = field(dark, ADMIN, "url")
        download = subprocess.Popen(["curl", "-s", "-o", "/dev/null", "--proxy", url, SLOW_URL])
        try:
            open_connections_view(dark, ADMIN)
            wait_for("the download listed", lambda: any(f.get("program", "").startswith("curl (") for f in listed_open(dark).values()), timeout=20)
            screenshot(dark, screenshot_path(state, "-connections-dark"))
        finally:
            download.kill()
        out = kubesocks(binaries, app_env, "quit")
        assert out.returncode == 0, out.stderr


def test_contexts_left_on_come_back_on_at_the_next_start_and_those_switched_off_do_not(binaries, app_env, home):
    socket_path = home["dirs"]["kubesocks-state"] / "control.sock"
    # One instance only: the app of the window tests before goes first, if it still runs.
    running = status_json(binaries, app_env).get("daemon")
    if running:
        assert kubesocks(binaries, app_env, "quit").returncode == 0
        wait_for("the running app to exit", lambda: not alive(running["pid"]), timeout=20)
    with app_session(binaries, app_env, home["root"] / "tauri-driver-first.log") as first:
        wait_for("the window to load", lambda: first.find_element(By.CSS_SELECTOR, "body[data-ready=true]"), timeout=60)
        first.find_element(By.ID, "open-settings").click()
        assert first.find_element(By.ID, "reconnect-at-start").is_selected(), "on by default"
        first.find_element(By.ID, "close-settings").click()
        switch_on(first, ADMIN)
        switch_on(first, RESTRICTED)
        click_switch(first, RESTRICTED)
        wait_for("the row to switch off", lambda: "state-off" in row_classes(first, RESTRICTED), timeout=15)
        out = kubesocks(binaries, app_env, "quit")
        assert out.returncode == 0, out.stderr
        wait_for("the app to quit", lambda: not socket_path.exists(), timeout=20)

    with app_session(binaries, app_env, home["root"] / "tauri-driver-second.log") as second:
        wait_for("the window to load", lambda: second.find_element(By.CSS_SELECTOR, "body[data-ready=true]"), timeout=60)
        # Nothing here switches it on: the app does at start.
        wait_for("the context left on to be connected again", lambda: connected_state(second, ADMIN), timeout=60)
        assert "state-off" in row_classes(second, RESTRICTED), "the one switched off stays off"
        contexts = [c["context"] for c in status_json(binaries, app_env)["connections"]]
        assert ADMIN in contexts and RESTRICTED not in contexts, contexts
        out = kubesocks(binaries, app_env, "quit")
        assert out.returncode == 0, out.stderr
        wait_for("the app to quit", lambda: not socket_path.exists(), timeout=20)


def window_text(driver, element_id):
    return driver.execute_script(
        "const e = document.getElementById(arguments[0]); return e && !e.hidden ? e.innerText : null", element_id
    )


@pytest.mark.parametrize("kubeconfig", ["missing", "no-contexts"])
def test_the_window_says_what_is_missing_and_offers_nothing_that_does_not_exist(binaries, app_env, home, tmp_path, kubeconfig):
    running = status_json(binaries, app_env).get("daemon")
    if running:
        assert kubesocks(binaries, app_env, "quit").returncode == 0
        wait_for("the running app to exit", lambda: not alive(running["pid"]), timeout=20)
    path = tmp_path / "kubeconfig"
    if kubeconfig == "no-contexts":
        path.write_text("apiVersion: v1\nkind: Config\nclusters: []\nusers: []\ncontexts: []\n")
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700)
    env = dict(app_env, KUBECONFIG=str(path), KUBESOCKS_STATE_DIR=str(state_dir), XDG_CONFIG_HOME=str(tmp_path / "config"))
    with app_session(binaries, env, tmp_path / "tauri-driver.log") as empty:
        wait_for("the window to load", lambda: empty.find_element(By.CSS_SELECTOR, "body[data-ready=true]"), timeout=60)
        assert empty.find_elements(By.CSS_SELECTOR, ".row") == [], "no context rows"
        # No shared port is open: neither its URL bar nor its copy buttons show.
        assert window_text(empty, "shared-port") is None
        assert not empty.find_element(By.ID, "copy-shared-url").is_displayed()
        assert empty.find_element(By.ID, "headline").text == "No kube contexts"
        if kubeconfig == "missing":
            banner = window_text(empty, "banner")
            assert banner and str(path) in banner, f"the banner names the file it could not read: {banner!r}"
        else:
            assert window_text(empty, "banner") is None, "a kubeconfig without contexts is no error"
            assert empty.find_element(By.CSS_SELECTOR, "#contexts .empty").text == "The kubeconfig has no contexts."
        out = kubesocks(binaries, env, "quit")
        assert out.returncode == 0, out.stderr


# --- helpers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def state(home):
    """What one step of the window tests leaves for the next."""
    return {"root": str(home["root"])}


def gdbus_call(env, dest, path, method, *args):
    out = subprocess.run(
        ["gdbus", "call", "--session", "--dest", dest, "--object-path", path, "--method", method, "--", *args],
        env=env, capture_output=True, text=True,
    )
    assert out.returncode == 0, f"gdbus {method} failed: {out.stderr}"
    return out.stdout


def tray_item_name(env):
    names = gdbus_call(env, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus.ListNames")
    match = re.search(r"'(org\.kde\.StatusNotifierItem-\d+-\d+)'", names)
    return match.group(1) if match else None


def tray_menu(env):
    """The tray item's menu as dbusmenu serves it: {label: {property: value}} plus the item's bus name."""
    name = tray_item_name(env)
    if not name:
        return None
    layout = gdbus_call(env, name, "/MenuBar", "com.canonical.dbusmenu.GetLayout", "0", "-1", "[]")
    items = {}
    for item_id, props in re.findall(r"<\((\d+), \{([^}]*)\}", layout):
        fields = dict(re.findall(r"'([a-z-]+)': <'?([^'>]*)'?>", props))
        fields["id"] = item_id
        if "label" in fields:
            items[fields["label"]] = fields
    return {"name": name, "items": items}


def tray_click(env, label):
    menu = tray_menu(env)
    assert menu and label in menu["items"], f"no tray menu item {label!r}: {menu}"
    gdbus_call(env, menu["name"], "/MenuBar", "com.canonical.dbusmenu.Event", menu["items"][label]["id"], "clicked", '<"">', "0")


def clipboard(env):
    out = subprocess.run(["xclip", "-o", "-selection", "clipboard"], env=env, capture_output=True, text=True, timeout=5)
    return out.stdout if out.returncode == 0 else None


def alive(pid):
    """Running, not exited (an exited child stays a zombie until its parent reaps it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
