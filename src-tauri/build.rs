fn main() {
    // The window embeds the built web UI; say how to build it rather than let
    // tauri's macro panic on a missing directory.
    let dist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ui/dist/index.html");
    println!("cargo:rerun-if-changed=../ui/dist");
    if !dist.exists() {
        panic!("{} is missing: build the web UI first (ui/build, or `npm ci && npm run build` in ui/)", dist.display());
    }
    tauri_build::build();
}
