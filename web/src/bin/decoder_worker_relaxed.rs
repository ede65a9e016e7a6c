//! The page's decoder worker built with relaxed SIMD (fused multiply-adds in the decoder's GEMM),
//! started instead of `segany-decoder-worker` where the browser validates relaxed SIMD.
#[cfg(all(target_arch = "wasm32", feature = "relaxed-simd"))]
fn main() {
    segany_web::worker::start();
}

#[cfg(not(all(target_arch = "wasm32", feature = "relaxed-simd")))]
fn main() {
    eprintln!("segany-decoder-worker-relaxed runs in the browser: build it with trunk (see README)");
}
