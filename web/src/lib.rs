//! The segany page. Logic that needs no browser (the annotation session, exports, mask
//! rendering) is plain Rust, tested natively; `app` (the main thread's DOM and events) and
//! `worker` and `encoder_worker` (the decoder and the WebGPU encoder workers) are the wasm-only glue around it.

pub mod export;
pub mod render;
pub mod session;

#[cfg(target_arch = "wasm32")]
pub mod app;
#[cfg(target_arch = "wasm32")]
pub mod hub;
#[cfg(target_arch = "wasm32")]
pub mod protocol;
#[cfg(all(target_arch = "wasm32", feature = "worker"))]
pub mod worker;
#[cfg(all(target_arch = "wasm32", feature = "encoder"))]
pub mod encoder_worker;
