//! The page's main thread (built by trunk from `www/index.html`), and the JavaScript API of the
//! `<segany-segmenter>` widget (`www/segany-segmenter.js` wraps it in a custom element).
#[cfg(target_arch = "wasm32")]
fn main() {
    segany_web::app::start();
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("segany-app runs in the browser: build it with trunk (see README)");
}

#[cfg(target_arch = "wasm32")]
mod widget {
    use segany_web::app::{EmbedOn, Options, Widget, mount};
    use wasm_bindgen::prelude::*;

    /// One segmenter mounted into a root node (the widget's shadow root).
    #[wasm_bindgen]
    pub struct Segmenter(Widget);

    #[wasm_bindgen]
    impl Segmenter {
        /// `root`: where the UI goes; `events`: the element that dispatches its events;
        /// `server`: base URL of the API ("" = this origin); `assets`: base URL of the worker's
        /// files, ending in `/`; `model`: a model id, or null for the server's default;
        /// `embed_on`: `auto` (default), `webgpu` or `server`; `precision`: `f16` (default) or
        /// `f32` weights.
        #[wasm_bindgen(constructor)]
        pub fn new(
            root: web_sys::Element,
            events: web_sys::EventTarget,
            server: String,
            assets: String,
            model: Option<String>,
            embed_on: Option<String>,
            precision: Option<String>,
        ) -> Result<Segmenter, JsValue> {
            console_error_panic_hook::set_once();
            let embed_on = match embed_on.as_deref() {
                None | Some("") => EmbedOn::Auto,
                Some(e) => EmbedOn::parse(e).ok_or_else(|| JsValue::from_str(&format!("embed-on '{e}' is not auto, webgpu or server")))?,
            };
            let options = Options {
                server: server.trim_end_matches('/').to_string(),
                assets,
                model,
                events: Some(events),
                embed_on,
                precision: precision.filter(|p| p == "f32").unwrap_or_else(|| "f16".into()),
            };
            mount(&root, options, false).map(Segmenter)
        }

        #[wasm_bindgen(js_name = setImageBlob)]
        pub fn set_image_blob(&self, blob: web_sys::Blob, name: String) {
            self.0.set_image(blob, name);
        }

        #[wasm_bindgen(js_name = addPoint)]
        pub fn add_point(&self, x: f64, y: f64, label: u8) {
            self.0.add_point(x, y, label);
        }

        #[wasm_bindgen(js_name = setBox)]
        pub fn set_box(&self, x0: f64, y0: f64, x1: f64, y1: f64) {
            self.0.set_box([x0, y0, x1, y1]);
        }

        #[wasm_bindgen(js_name = selectMask)]
        pub fn select_mask(&self, index: usize) {
            self.0.select_mask(index);
        }

        pub fn commit(&self, name: Option<String>) -> Option<u32> {
            self.0.commit(name)
        }

        pub fn undo(&self) {
            self.0.undo();
        }

        pub fn redo(&self) {
            self.0.redo();
        }

        pub fn cancel(&self) {
            self.0.cancel();
        }

        pub fn clear(&self) {
            self.0.clear();
        }

        #[wasm_bindgen(js_name = getObjects)]
        pub fn get_objects(&self) -> JsValue {
            self.0.objects()
        }

        #[wasm_bindgen(js_name = loadObjects)]
        pub fn load_objects(&self, objects: JsValue) -> Result<(), JsValue> {
            self.0.load_objects(objects)
        }

        /// The current image's embedding in segany's wire format (`SEGANYE1`), or null before it
        /// has come: a labeling tool may store it.
        #[wasm_bindgen(js_name = getEmbedding)]
        pub fn get_embedding(&self) -> Option<js_sys::Uint8Array> {
            self.0.embedding().map(|b| js_sys::Uint8Array::from(&b[..]))
        }

        /// `auto`, `webgpu` or `server`: where the next images are embedded.
        #[wasm_bindgen(js_name = setEmbedOn)]
        pub fn set_embed_on(&self, on: &str) -> Result<(), JsValue> {
            let on = EmbedOn::parse(on).ok_or_else(|| JsValue::from_str(&format!("'{on}' is not auto, webgpu or server")))?;
            self.0.set_embed_on(on);
            Ok(())
        }

        pub fn destroy(&self) {
            self.0.destroy();
        }
    }
}
