//! Embeds the page that trunk built (`dist/`) into the `segany` binary, so that `segany serve`
//! is the whole product. Without `dist/` the binary serves a placeholder that says how to build
//! the page (`./run.sh` does it).

use std::fmt::Write as _;
use std::path::Path;

fn mime(name: &str) -> &'static str {
    match name.rsplit_once('.').map_or("", |(_, ext)| ext) {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "wasm" => "application/wasm",
        "json" => "application/json",
        "ts" => "text/plain; charset=utf-8",
        "txt" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "ico" => "image/x-icon",
        _ => "application/octet-stream",
    }
}

/// FNV-1a, for ETags: changes whenever the file does.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

fn main() {
    let root = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it");
    let dist = Path::new(&root).join("dist");
    println!("cargo:rerun-if-changed=dist");
    // Every file under dist/, subfolders included (the example host page's images), by path.
    let mut files = Vec::new();
    let mut dirs = vec![dist.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().filter_map(Result::ok) {
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if path.is_dir() {
                dirs.push(path);
            } else if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut code = String::from("/// The page built by trunk (`dist/`), or empty.\npub static PAGE: &[segany_server::StaticFile] = &[\n");
    if dist.join("index.html").is_file() {
        for path in &files {
            let name = path.strip_prefix(&dist).expect("under dist").to_string_lossy().replace('\\', "/");
            let bytes = std::fs::read(path).expect("readable dist file");
            writeln!(
                code,
                "    segany_server::StaticFile {{ path: {name:?}, bytes: include_bytes!({path:?}), mime: {mime:?}, etag: \"\\\"{hash:016x}\\\"\" }},",
                path = path.display().to_string(),
                mime = mime(&name),
                hash = fnv(&bytes),
            )
            .unwrap();
        }
    } else {
        println!("cargo:warning=dist/ is not built: `segany serve` will show a placeholder page (build it with `trunk build`, as ./run.sh does)");
    }
    code.push_str("];\n");
    let out = Path::new(&std::env::var("OUT_DIR").expect("cargo sets it")).join("page.rs");
    std::fs::write(out, code).expect("writable OUT_DIR");
}
