//! The page's decoder worker (built by trunk as a `no-modules` worker).
#[cfg(all(target_arch = "wasm32", feature = "worker"))]
fn main() {
    segany_web::worker::start();
}

#[cfg(not(all(target_arch = "wasm32", feature = "worker")))]
fn main() {
    eprintln!("segany-decoder-worker runs in the browser: build it with trunk (see README)");
}
