//! The page's WebGPU encoder worker (built by trunk as a `no-modules` worker).
#[cfg(all(target_arch = "wasm32", feature = "encoder"))]
fn main() {
    segany_web::encoder_worker::start();
}

#[cfg(not(all(target_arch = "wasm32", feature = "encoder")))]
fn main() {
    eprintln!("segany-encoder-worker runs in the browser: build it with trunk (see README)");
}
