//! Static hosting: a table of files compiled into the binary. The page's bundle (a later
//! `build.rs` that embeds the built `www/`) plugs in as another table; until then a placeholder.

/// One file served at `/` + `path` (`index.html` is also served at `/`).
#[derive(Debug, Clone, Copy)]
pub struct StaticFile {
    pub path: &'static str,
    pub bytes: &'static [u8],
    pub mime: &'static str,
    /// A quoted entity tag that changes with the bytes.
    pub etag: &'static str,
}

/// The placeholder page until the browser page lands.
pub const PLACEHOLDER_PAGE: &[StaticFile] =
    &[StaticFile {
    path: "index.html",
    bytes: include_bytes!("placeholder.html"),
    mime: "text/html; charset=utf-8",
    etag: "\"placeholder-1\"",
}];

/// The file for a request path: `/` is `index.html`.
pub fn find(files: &'static [StaticFile], path: &str) -> Option<&'static StaticFile> {
    let path = path.trim_start_matches('/');
    let path = if path.is_empty() { "index.html" } else { path };
    files.iter().find(|f| f.path == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_index_html_and_unknown_paths_are_none() {
        assert_eq!(find(PLACEHOLDER_PAGE, "/").unwrap().path, "index.html");
        assert!(find(PLACEHOLDER_PAGE, "/index.html").is_some());
        assert!(find(PLACEHOLDER_PAGE, "/nope.js").is_none());
    }
}
