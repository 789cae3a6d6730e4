//! The tray binary started with arguments is the headless CLI: it answers
//! without a display, a session bus or GTK, as on a server over SSH.
//!
//! (This test also makes `cargo test --workspace` build `kubesocks-tray`
//! itself, which `src-tauri/bundle-deb --debug` then packages as it is.)

use std::process::Command;

fn tray(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kubesocks-tray"))
        .args(args)
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .output()
        .expect("the tray binary starts")
}

#[test]
fn with_arguments_the_tray_binary_is_the_cli_and_needs_no_display() {
    let help = tray(&["--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success(), "--help failed: {help:?}");
    assert!(text.contains("proxy-out"), "--help does not list proxy-out:\n{text}");

    let version = tray(&["--version"]);
    assert!(version.status.success(), "--version failed: {version:?}");
    assert!(String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")), "{version:?}");
}

#[test]
fn a_cli_error_is_the_clis_message_not_a_display_error() {
    let out = tray(&["proxy-out", "--kubeconfig", "/nonexistent/kubeconfig"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a missing kubeconfig must fail: {out:?}");
    assert!(stderr.contains("/nonexistent/kubeconfig"), "the error names the file:\n{stderr}");
    for gui in ["Gtk", "display", "DISPLAY"] {
        assert!(!stderr.contains(gui), "the CLI touched the GUI ({gui}):\n{stderr}");
    }
}
