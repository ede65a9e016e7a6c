//! The page's main thread: builds the UI into a root node, turns pointer and key events into
//! [`Session`] edits, sends prompts to the decoder worker (at most one decode in flight; later
//! edits and hovers wait, only the newest of each kind kept), fetches decoder weights (Cache API),
//! gets each picture's embedding from the WebGPU encoder worker or the server (see
//! [`EmbedOn`]), and draws the layers.

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Array, Uint8Array};
use segany_predict::{Point, Prediction, Prompt};
use serde::Serialize as _;
use wasm_bindgen::prelude::*;
use wasm_bindgen::{Clamped, JsCast};
use wasm_bindgen_futures::{JsFuture, spawn_local};
use web_sys::{
    Blob, BlobPropertyBag, CanvasRenderingContext2d, Document, Element, HtmlCanvasElement, HtmlElement,
    HtmlInputElement, HtmlProgressElement, HtmlSelectElement, ImageBitmap, ImageData, KeyboardEvent,
    PointerEvent, Request, RequestInit, Response, Url,
};

use crate::export;
use crate::hub;
use crate::protocol::{get, kind, message, prediction_from_js, prompt_to_js};
use crate::render::{CANDIDATE_COLORS, object_color, overlay, paint, thumbnail_overlay};
use crate::session::{DecodeRequest, Session, best_index};

const TEMPLATE: &str = include_str!("ui.html");
const STYLE: &str = include_str!("ui.css");
/// The Cache API bucket for decoder weights (immutable: their URL carries their SHA-256).
const WEIGHTS_CACHE: &str = "segany-weights-v1";

/// Where the page finds its server and its worker's files.
#[derive(Debug, Clone)]
pub struct Options {
    /// Base URL of the HTTP API ("" = this origin).
    pub server: String,
    /// Base URL of `segany-decoder-worker.js` / `_bg.wasm`, ending in `/`.
    pub assets: String,
    /// Model id to use instead of the server's default.
    pub model: Option<String>,
    /// Where `ready`, `mask-change`, `object-commit` and `error` events go (the widget's element);
    /// none for the page.
    pub events: Option<web_sys::EventTarget>,
    /// Where embeddings are computed at first (the user can switch).
    pub embed_on: EmbedOn,
    /// Weights to download: `f16` (half the bytes) or `f32` (the checkpoint's values).
    pub precision: String,
}

/// Where the image embedding is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbedOn {
    /// WebGPU when the browser has an adapter that can hold the model, else the server.
    Auto,
    /// The page's WebGPU encoder worker (the server if that fails, saying so).
    WebGpu,
    Server,
}

impl EmbedOn {
    pub fn parse(s: &str) -> Option<EmbedOn> {
        match s {
            "auto" => Some(EmbedOn::Auto),
            "webgpu" => Some(EmbedOn::WebGpu),
            "server" => Some(EmbedOn::Server),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            EmbedOn::Auto => "auto",
            EmbedOn::WebGpu => "webgpu",
            EmbedOn::Server => "server",
        }
    }
}

/// Entry point of the page: mounts the UI into `#segany`.
pub fn start() {
    console_error_panic_hook::set_once();
    let document = web_sys::window().and_then(|w| w.document()).expect("a document");
    // Loaded by the widget's module instead, there is no `#segany`: widgets mount themselves.
    let Some(root) = document.get_element_by_id("segany") else { return };
    let base = document.base_uri().ok().flatten().unwrap_or_default();
    let assets = base.rsplit_once('/').map_or(String::new(), |(dir, _)| format!("{dir}/"));
    // `?embed=webgpu|server|auto`, `?precision=f32|f16`, `?model=ID`.
    let params = web_sys::window()
        .and_then(|w| w.location().search().ok())
        .and_then(|q| web_sys::UrlSearchParams::new_with_str(&q).ok());
    let param = |k: &str| params.as_ref().and_then(|p| p.get(k));
    let options = Options {
        server: String::new(),
        assets,
        model: param("model"),
        events: None,
        embed_on: param("embed").and_then(|e| EmbedOn::parse(&e)).unwrap_or(EmbedOn::Auto),
        precision: param("precision").filter(|p| p == "f32").unwrap_or_else(|| "f16".into()),
    };
    if let Err(e) = mount(&root, options, true) {
        web_sys::console::error_1(&e);
    }
}

/// Every element the app touches, found once.
struct Ui {
    app: HtmlElement,
    file: HtmlInputElement,
    model: HtmlSelectElement,
    embed_on: HtmlSelectElement,
    drop: HtmlElement,
    layers: HtmlElement,
    image: HtmlCanvasElement,
    objects: HtmlCanvasElement,
    mask: HtmlCanvasElement,
    preview: HtmlCanvasElement,
    /// Segment-everything masks, each clickable.
    everything: HtmlCanvasElement,
    ui: HtmlCanvasElement,
    scratch: HtmlCanvasElement,
    candidates: Vec<HtmlElement>,
    objects_list: HtmlElement,
    progress: HtmlProgressElement,
    status: HtmlElement,
    embedding: HtmlElement,
    decode: HtmlElement,
    buttons: Vec<(String, HtmlElement)>,
}

fn find<T: JsCast>(root: &Element, name: &str) -> Result<T, JsValue> {
    root.query_selector(&format!("[data-sg=\"{name}\"]"))?
        .ok_or_else(|| JsValue::from_str(&format!("UI element {name} is missing")))?
        .dyn_into::<T>()
        .map_err(|_| JsValue::from_str(&format!("UI element {name} has the wrong type")))
}

impl Ui {
    fn build(root: &Element) -> Result<Ui, JsValue> {
        let document = root.owner_document().expect("an element has a document");
        let holder = document.create_element("div")?;
        holder.set_inner_html(&format!("<style>{STYLE}</style>{TEMPLATE}"));
        while let Some(child) = holder.first_child() {
            root.append_child(&child)?;
        }
        let app: HtmlElement = root.query_selector(".sg-app")?.expect("template root").dyn_into()?;
        let candidates = (0..3)
            .map(|i| {
                app.query_selector(&format!(".sg-candidate[data-index=\"{i}\"]"))
                    .ok()
                    .flatten()
                    .expect("three candidates")
                    .dyn_into::<HtmlElement>()
                    .expect("element")
            })
            .collect();
        let buttons = ["undo", "redo", "commit", "cancel", "clear", "everything", "export-png", "export-coco", "export-polygons"]
            .iter()
            .map(|n| {
                let button = app.query_selector(&format!("button[data-sg=\"{n}\"]"))?.ok_or_else(|| format!("no {n} button"))?;
                Ok((n.to_string(), button.dyn_into::<HtmlElement>()?))
            })
            .collect::<Result<_, JsValue>>()?;
        Ok(Ui {
            file: find(&app, "file")?,
            model: find(&app, "model")?,
            embed_on: find(&app, "embed-on")?,
            drop: find(&app, "drop")?,
            layers: find(&app, "layers")?,
            image: find(&app, "image")?,
            objects: find(&app, "objects")?,
            mask: find(&app, "mask")?,
            preview: find(&app, "preview")?,
            everything: app.query_selector("canvas[data-sg=\"everything\"]")?.ok_or("no everything layer")?.dyn_into()?,
            ui: find(&app, "ui")?,
            scratch: find(&app, "scratch")?,
            candidates,
            objects_list: find(&app, "objects-list")?,
            progress: find(&app, "progress")?,
            status: find(&app, "status")?,
            embedding: find(&app, "embedding")?,
            decode: find(&app, "decode")?,
            buttons,
            app,
        })
    }
}

fn ctx(canvas: &HtmlCanvasElement) -> CanvasRenderingContext2d {
    canvas.get_context("2d").ok().flatten().expect("2d context").dyn_into().expect("2d context")
}

/// A model the server offers.
#[derive(Debug, Clone, serde::Deserialize)]
struct ModelInfo {
    id: String,
    variant: Option<String>,
    decoder: std::collections::BTreeMap<String, DecoderFile>,
    /// The whole model, for the WebGPU encoder.
    #[serde(default)]
    weights: std::collections::BTreeMap<String, DecoderFile>,
}

impl ModelInfo {
    /// The largest buffer the encoder needs on the GPU, in bytes: ViT's global attention holds
    /// `heads × 4096 × 4096` f32 logits at once; TinyViT's windows need far less.
    fn encoder_buffer_bytes(&self) -> f64 {
        let heads = match self.variant.as_deref() {
            Some("vit_b") => 12.0,
            Some("vit_l") | Some("vit_h") => 16.0,
            _ => 0.0,
        };
        heads * 4096.0 * 4096.0 * 4.0
    }
}

/// What the browser's WebGPU adapter offers (asked once per app).
#[derive(Debug, Clone)]
enum Gpu {
    Unknown,
    Missing(String),
    Adapter { name: String, max_buffer: f64 },
}

#[derive(Debug, Clone, serde::Deserialize)]
struct DecoderFile {
    url: String,
}

#[derive(Debug, serde::Deserialize)]
struct ModelList {
    default: Option<String>,
    models: Vec<ModelInfo>,
}

/// What a decode in flight was for.
#[derive(Debug, Clone)]
enum Job {
    /// An edit of the draft at this revision.
    Edit(u64),
    /// A hover preview at this revision and point, of this prompt.
    Hover(u64, Point, Rc<Prompt>),
    /// A hover preview this app cancelled (see `pump`): its answer is dropped.
    Cancelled,
}

/// A pointer press not released yet.
#[derive(Debug, Clone, Copy)]
struct Press {
    start: [f64; 2],
    now: [f64; 2],
    /// Screen pixels moved so far (a drag beyond a few is a box, not a click).
    moved: f64,
    background: bool,
}

/// The image on the stage.
struct Picture {
    bitmap: ImageBitmap,
    name: String,
    /// `(h, w)`
    size: [usize; 2],
}

/// What has been drawn, to redraw a layer only when its content changed.
#[derive(Default)]
struct Drawn {
    objects: Vec<(u32, bool, usize)>,
    mask: Option<(usize, usize)>,
    candidates: Option<usize>,
    /// The prediction on show as the hover preview, held so that its address cannot be reused.
    preview: Option<Rc<Prediction>>,
    /// The marks drawn: the scale, then each box and point.
    marks: Vec<u64>,
    list: Vec<(u32, bool, String)>,
}

struct App {
    ui: Ui,
    options: Options,
    /// This app's id with the shared decoder worker (`hub`).
    client: u32,
    /// The current model's decoder weights (their URL: the worker's key for them).
    weights_key: Option<String>,
    /// Waiting for the worker to load `weights_key`.
    awaiting_weights: bool,
    /// The picture (generation) and model of the embedding last asked for.
    embedding_for: Option<(u64, String)>,
    /// An image opened before the model list came: embedded once a model is chosen.
    deferred_image: Option<(Vec<u8>, u64)>,
    /// The server's content hash of the picture (from the embedding's metadata).
    image_sha256: Option<String>,
    /// Segment-everything masks on show, smallest first, with their predicted IoU.
    everything: Option<Vec<(Rc<Vec<u8>>, f32)>>,
    everything_drawn: bool,
    weights_digest: Option<String>,
    models: Vec<ModelInfo>,
    model: Option<String>,
    picture: Option<Picture>,
    /// The current picture's embedding (`embedding_bytes`) waits for the worker to have the decoder.
    embedding_unsent: bool,
    embedding_ready: bool,
    session: Option<Session>,
    next_id: u32,
    in_flight: Option<(u32, Job)>,
    queued_edit: Option<DecodeRequest>,
    queued_hover: Option<(u64, Point)>,
    hover: Option<Point>,
    /// The last hover preview: revision, point, prompt and prediction.
    preview: Option<(u64, Point, Rc<Prompt>, Rc<Prediction>)>,
    press: Option<Press>,
    /// Background network work (weights, embedding) under way.
    loading: u32,
    drawn: Drawn,
    /// Generation of the current picture, to drop answers about an earlier one.
    picture_generation: u64,
    embed_on: EmbedOn,
    gpu: Gpu,
    /// Set when WebGPU failed in this app: Auto embeds on the server from then on.
    webgpu_failed: Option<String>,
    /// Futures waiting for the encoder worker, by what they wait for (`w:KEY` for weights,
    /// `e:ID` for an embedding).
    encoder_waits: Vec<(String, Box<dyn FnOnce(JsValue)>)>,
    /// The current picture's embedding as it came (wire format), for `getEmbedding()`.
    embedding_bytes: Option<Rc<Vec<u8>>>,
    /// The current picture's encoded bytes when it was embedded in the page: the server needs
    /// them for Everything, having no embedding of its own.
    image_bytes: Option<Rc<Vec<u8>>>,
}

type Shared = Rc<RefCell<App>>;

/// Builds the UI into `root` and starts it. `global_keys`: listen for keys on the window (the
/// page) rather than on the UI only (a widget among others).
pub fn mount(root: &Element, options: Options, global_keys: bool) -> Result<Widget, JsValue> {
    let ui = Ui::build(root)?;
    ui.embed_on.set_value(options.embed_on.name());
    let assets = options.assets.clone();
    let embed_on = options.embed_on;
    let app = Rc::new(RefCell::new(App {
        ui,
        options,
        client: 0,
        weights_key: None,
        awaiting_weights: false,
        embedding_for: None,
        deferred_image: None,
        image_sha256: None,
        everything: None,
        everything_drawn: true,
        weights_digest: None,
        models: Vec::new(),
        model: None,
        picture: None,
        embedding_unsent: false,
        embedding_ready: false,
        session: None,
        next_id: 1,
        in_flight: None,
        queued_edit: None,
        queued_hover: None,
        hover: None,
        preview: None,
        press: None,
        loading: 0,
        drawn: Drawn::default(),
        picture_generation: 0,
        embed_on,
        gpu: Gpu::Unknown,
        webgpu_failed: None,
        encoder_waits: Vec::new(),
        embedding_bytes: None,
        image_bytes: None,
    }));
    let weak = Rc::downgrade(&app);
    app.borrow_mut().client = hub::register(&assets, move |data| {
        if let Some(a) = weak.upgrade() {
            a.borrow_mut().on_worker(data);
        }
    })?;
    wire_events(&app, global_keys)?;
    app.borrow_mut().render();
    let a = app.clone();
    spawn_local(async move {
        if let Err(e) = load_models(&a).await {
            a.borrow_mut().error(&format!("cannot load the models: {}", describe(&e)));
        }
    });
    Ok(Widget(app))
}

/// A mounted app, driven from JavaScript (the `<segany-segmenter>` element's methods).
pub struct Widget(Shared);

impl Widget {
    /// Shows an image (encoded bytes, as a Blob) and fetches its embedding.
    pub fn set_image(&self, blob: Blob, name: String) {
        open_file(&self.0, blob, name);
    }

    /// Adds a point in image pixels (label 1 foreground, 0 background) and decodes.
    pub fn add_point(&self, x: f64, y: f64, label: u8) {
        let mut app = self.0.borrow_mut();
        let Some(session) = &mut app.session else { return };
        let request = session.add_point(Point { x, y, label: label.min(1) as i32 });
        app.request(request);
        app.render();
    }

    /// Sets the box (image pixels, any two opposite corners) and decodes.
    pub fn set_box(&self, bbox: [f64; 4]) {
        let mut app = self.0.borrow_mut();
        let Some(session) = &mut app.session else { return };
        let request = session.set_box(bbox);
        app.request(request);
        app.render();
    }

    /// Picks candidate `i` (0 whole, 1 part, 2 subpart).
    pub fn select_mask(&self, i: usize) {
        self.0.borrow_mut().edit(|s| s.select(i));
    }

    /// Keeps the chosen mask as an object; returns its id.
    pub fn commit(&self, name: Option<String>) -> Option<u32> {
        self.0.borrow_mut().commit(name)
    }

    pub fn undo(&self) {
        self.0.borrow_mut().edit(Session::undo);
    }

    pub fn redo(&self) {
        self.0.borrow_mut().edit(Session::redo);
    }

    /// Drops the draft (Esc).
    pub fn cancel(&self) {
        self.0.borrow_mut().edit(Session::cancel);
    }

    /// Drops the draft and every object.
    pub fn clear(&self) {
        self.0.borrow_mut().edit(Session::clear);
    }

    /// The committed objects (see `export::object_json`).
    pub fn objects(&self) -> JsValue {
        let app = self.0.borrow();
        let Some(session) = &app.session else { return js_sys::Array::new().into() };
        let list: Vec<serde_json::Value> = session.objects().iter().map(|o| export::object_json(o, session.size)).collect();
        json_to_js(&serde_json::Value::Array(list))
    }

    /// Adds objects saved earlier (COCO RLE masks of this image's size) so that they show again.
    pub fn load_objects(&self, objects: JsValue) -> Result<(), JsValue> {
        let list: Vec<SavedObject> = serde_wasm_bindgen::from_value(objects)?;
        let mut app = self.0.borrow_mut();
        let Some(session) = &mut app.session else { return Err("no image yet".into()) };
        for o in list {
            if o.segmentation.size != session.size {
                return Err(format!("object '{}' is {:?}, the image {:?}", o.name, o.segmentation.size, session.size).into());
            }
            let mask = o.segmentation.decode().map_err(|e| JsValue::from_str(&e.to_string()))?;
            session.restore_object(mask, o.score, o.name);
        }
        app.render();
        Ok(())
    }

    /// The current picture's embedding (wire format), once it has come.
    pub fn embedding(&self) -> Option<Vec<u8>> {
        self.0.borrow().embedding_bytes.as_deref().cloned()
    }

    /// Where embeddings are computed from now on (the current picture keeps its embedding).
    pub fn set_embed_on(&self, on: EmbedOn) {
        let mut a = self.0.borrow_mut();
        a.embed_on = on;
        a.ui.embed_on.set_value(on.name());
    }

    /// Frees this widget's embedding in the shared worker.
    pub fn destroy(&self) {
        hub::unregister(self.0.borrow().client);
    }
}

#[derive(serde::Deserialize)]
struct SavedObject {
    #[serde(default)]
    name: String,
    #[serde(default)]
    score: f32,
    segmentation: segany_predict::masks::Rle,
}

fn json_to_js(v: &serde_json::Value) -> JsValue {
    v.serialize(&serde_wasm_bindgen::Serializer::json_compatible()).unwrap_or(JsValue::NULL)
}

fn describe(e: &JsValue) -> String {
    e.as_string()
        .or_else(|| e.dyn_ref::<js_sys::Error>().map(|e| String::from(e.message())))
        .unwrap_or_else(|| format!("{e:?}"))
}

fn listen<E: wasm_bindgen::convert::FromWasmAbi + 'static>(target: &web_sys::EventTarget, event: &str, f: impl FnMut(E) + 'static) -> Result<(), JsValue> {
    let closure = Closure::<dyn FnMut(E)>::new(f);
    target.add_event_listener_with_callback(event, closure.as_ref().unchecked_ref())?;
    closure.forget();
    Ok(())
}

fn wire_events(app: &Shared, global_keys: bool) -> Result<(), JsValue> {
    let ui = {
        let a = app.borrow();
        (
            a.ui.file.clone(),
            a.ui.model.clone(),
            a.ui.ui.clone(),
            a.ui.app.clone(),
            a.ui.candidates.clone(),
            a.ui.objects_list.clone(),
            a.ui.buttons.clone(),
        )
    };
    let (file, model, canvas, root, candidates, list, buttons) = ui;


    let a = app.clone();
    let input = file.clone();
    listen(&file, "change", move |_: web_sys::Event| {
        if let Some(f) = input.files().and_then(|l| l.get(0)) {
            open_file(&a, f.clone().into(), f.name());
        }
        input.set_value("");
    })?;
    let a = app.clone();
    listen(&model, "change", move |_: web_sys::Event| {
        let id = a.borrow().ui.model.value();
        select_model(&a, id);
    })?;
    let a = app.clone();
    let embed_select = app.borrow().ui.embed_on.clone();
    listen(&embed_select, "change", move |_: web_sys::Event| {
        let on = EmbedOn::parse(&a.borrow().ui.embed_on.value()).unwrap_or(EmbedOn::Auto);
        let again = {
            let mut app = a.borrow_mut();
            app.embed_on = on;
            app.webgpu_failed = None;
            app.picture.is_some()
        };
        // The picture on the stage is embedded again where the user asked.
        if again {
            let a = a.clone();
            spawn_local(async move {
                let generation = a.borrow().picture_generation;
                if let Some(bytes) = current_bytes(&a).await {
                    embed_shown(&a, bytes, generation).await;
                }
            });
        }
    })?;

    // Drop and paste.
    let stage: HtmlElement = find(&root, "stage")?;
    let s = stage.clone();
    listen(&stage, "dragover", move |e: web_sys::DragEvent| {
        e.prevent_default();
        let _ = s.class_list().add_1("sg-dragover");
    })?;
    let s = stage.clone();
    listen(&stage, "dragleave", move |_: web_sys::DragEvent| {
        let _ = s.class_list().remove_1("sg-dragover");
    })?;
    let a = app.clone();
    let s = stage.clone();
    listen(&stage, "drop", move |e: web_sys::DragEvent| {
        e.prevent_default();
        let _ = s.class_list().remove_1("sg-dragover");
        if let Some(f) = e.data_transfer().and_then(|d| d.files()).and_then(|l| l.get(0)) {
            open_file(&a, f.clone().into(), f.name());
        }
    })?;
    let a = app.clone();
    let paste_target: web_sys::EventTarget = if global_keys { web_sys::window().expect("window").into() } else { root.clone().into() };
    listen(&paste_target, "paste", move |e: web_sys::ClipboardEvent| {
        if let Some(f) = e.clipboard_data().and_then(|d| d.files()).and_then(|l| l.get(0)) {
            e.prevent_default();
            open_file(&a, f.clone().into(), if f.name().is_empty() { "pasted.png".into() } else { f.name() });
        }
    })?;

    // Pointer: click = point, drag = box, move = hover preview.
    let a = app.clone();
    listen(&canvas, "pointerdown", move |e: PointerEvent| {
        e.prevent_default();
        let _ = a.borrow().ui.ui.focus();
        let _ = a.borrow().ui.ui.set_pointer_capture(e.pointer_id());
        let mut app = a.borrow_mut();
        if app.session.is_none() || (e.button() != 0 && e.button() != 2) {
            return;
        }
        let p = app.image_point(&e);
        app.press = Some(Press { start: p, now: p, moved: 0.0, background: e.button() == 2 || e.shift_key() });
        app.render();
    })?;
    let a = app.clone();
    listen(&canvas, "pointermove", move |e: PointerEvent| {
        let mut app = a.borrow_mut();
        let p = app.image_point(&e);
        if let Some(press) = &mut app.press {
            press.now = p;
            press.moved += (e.movement_x() as f64).hypot(e.movement_y() as f64);
        } else {
            app.hover_at(p, e.shift_key());
        }
        app.render();
    })?;
    let a = app.clone();
    listen(&canvas, "pointerup", move |e: PointerEvent| {
        let mut app = a.borrow_mut();
        let Some(press) = app.press.take() else { return };
        let p = app.image_point(&e);
        app.release(press, p);
        app.render();
    })?;
    let a = app.clone();
    listen(&canvas, "pointerleave", move |_: PointerEvent| {
        let mut app = a.borrow_mut();
        app.hover = None;
        app.queued_hover = None;
        app.render();
    })?;
    listen(&canvas, "contextmenu", move |e: web_sys::MouseEvent| e.prevent_default())?;

    // Keys.
    let a = app.clone();
    let key_target: web_sys::EventTarget = if global_keys { web_sys::window().expect("window").into() } else { root.clone().into() };
    listen(&key_target, "keydown", move |e: KeyboardEvent| {
        let typing = e.target().and_then(|t| t.dyn_into::<HtmlInputElement>().ok()).is_some_and(|i| i.type_() == "text");
        if typing {
            return;
        }
        if a.borrow_mut().on_key(&e) {
            e.prevent_default();
        }
    })?;

    // Candidates and the object list: one listener each, by delegation.
    for (i, c) in candidates.iter().enumerate() {
        let a = app.clone();
        listen(c, "click", move |_: web_sys::MouseEvent| a.borrow_mut().edit(|s| s.select(i)))?;
    }
    let a = app.clone();
    listen(&list, "click", move |e: web_sys::MouseEvent| {
        let Some(target) = e.target().and_then(|t| t.dyn_into::<Element>().ok()) else { return };
        let (Some(action), Some(id)) = (target.get_attribute("data-action"), target.get_attribute("data-id")) else { return };
        let Ok(id) = id.parse::<u32>() else { return };
        let mut app = a.borrow_mut();
        match action.as_str() {
            "toggle" => app.edit(|s| s.toggle_visible(id)),
            "delete" => app.edit(|s| s.delete(id)),
            _ => {}
        }
    })?;
    let a = app.clone();
    listen(&list, "change", move |e: web_sys::Event| {
        let Some(input) = e.target().and_then(|t| t.dyn_into::<HtmlInputElement>().ok()) else { return };
        let Some(id) = input.get_attribute("data-id").and_then(|v| v.parse::<u32>().ok()) else { return };
        let name = input.value();
        a.borrow_mut().edit(|s| s.rename(id, name.trim()));
    })?;

    for (name, button) in buttons {
        let a = app.clone();
        listen(&button, "click", move |_: web_sys::MouseEvent| {
            let mut app = a.borrow_mut();
            match name.as_str() {
                "undo" => app.edit(Session::undo),
                "redo" => app.edit(Session::redo),
                "commit" => drop(app.commit(None)),
                "cancel" => app.edit(Session::cancel),
                "clear" => app.edit(Session::clear),
                "everything" => {
                    if app.everything.is_some() {
                        app.set_everything(None);
                    } else {
                        drop(app);
                        segment_everything(&a);
                    }
                }
                "export-png" => app.export("png"),
                "export-coco" => app.export("coco"),
                "export-polygons" => app.export("polygons"),
                _ => {}
            }
        })?;
    }
    Ok(())
}

/// Loads an image file: shows it, then asks the server for its embedding.
fn open_file(app: &Shared, blob: Blob, name: String) {
    let a = app.clone();
    spawn_local(async move {
        let generation = {
            let mut app = a.borrow_mut();
            app.picture_generation += 1;
            app.loading += 1;
            app.set_status("Opening the image…");
            app.render();
            app.picture_generation
        };
        let result = open_blob(&a, blob, name, generation).await;
        let mut app = a.borrow_mut();
        app.loading -= 1;
        if let Err(e) = result {
            app.error(&describe(&e));
        }
        app.render();
    });
}

async fn open_blob(app: &Shared, blob: Blob, name: String, generation: u64) -> Result<(), JsValue> {
    let window = web_sys::window().expect("window");
    let bitmap: ImageBitmap = JsFuture::from(window.create_image_bitmap_with_blob(&blob)?)
        .await
        .map_err(|_| JsValue::from_str(&format!("{name} is not an image this browser can show")))?
        .dyn_into()?;
    let size = [bitmap.height() as usize, bitmap.width() as usize];
    // The bytes are read before the picture is shown: between showing it and `embed` (which
    // notes the embedding as under way) nothing may await, or a model selection finishing in
    // that gap would embed the picture a second time.
    let bytes = Uint8Array::new(&JsFuture::from(blob.array_buffer()).await?).to_vec();
    {
        let mut a = app.borrow_mut();
        if a.picture_generation != generation {
            return Ok(());
        }
        a.show_picture(Picture { bitmap, name, size });
    }
    embed(app, bytes, generation).await
}

/// Asks the server to segment everything in the current picture (by its hash: the server has
/// its embedding) and shows the masks.
fn segment_everything(app: &Shared) {
    let a = app.clone();
    spawn_local(async move {
        let request = {
            let mut app = a.borrow_mut();
            let Some(model) = app.model.clone() else { return };
            // By hash when the server made the embedding (it has it cached), else the image itself.
            let image = match (app.image_sha256.clone(), app.image_bytes.clone()) {
                (Some(sha), _) => ImageRef::Sha(sha),
                (None, Some(bytes)) => ImageRef::Bytes(bytes),
                (None, None) => return,
            };
            app.loading += 1;
            app.set_status("Segmenting everything on the server…");
            app.render();
            (app.options.server.clone(), model, image, app.picture_generation)
        };
        let (server, model, image, generation) = request;
        let t = web_sys::window().and_then(|w| w.performance()).map_or(0.0, |p| p.now());
        let result = everything_request(&server, &model, &image).await;
        let ms = web_sys::window().and_then(|w| w.performance()).map_or(0.0, |p| p.now()) - t;
        let mut app = a.borrow_mut();
        app.loading -= 1;
        if app.picture_generation != generation {
            return app.render();
        }
        match result {
            Ok(masks) => {
                app.set_status(&format!(
                    "Everything: {} masks in {:.1} s — click one to keep it, Esc to leave",
                    masks.len(),
                    ms / 1000.0
                ));
                app.set_everything(Some(masks));
            }
            Err(e) => app.error(&format!("segment everything failed: {}", describe(&e))),
        }
        app.render();
    });
}

/// How a request names its image to the server.
enum ImageRef {
    /// The SHA-256 of an image the server has embedded.
    Sha(String),
    /// The image file itself.
    Bytes(Rc<Vec<u8>>),
}

async fn everything_request(server: &str, model: &str, image: &ImageRef) -> Result<Vec<(Rc<Vec<u8>>, f32)>, JsValue> {
    let init = RequestInit::new();
    init.set_method("POST");
    let headers = web_sys::Headers::new()?;
    let url = match image {
        ImageRef::Sha(sha) => {
            let body = serde_json::json!({"model": model, "image_sha256": sha}).to_string();
            init.set_body(&JsValue::from_str(&body));
            headers.set("content-type", "application/json")?;
            format!("{server}/api/v1/everything")
        }
        ImageRef::Bytes(bytes) => {
            init.set_body(&Uint8Array::from(&bytes[..]));
            headers.set("content-type", "application/octet-stream")?;
            format!("{server}/api/v1/everything?model={}", js_sys::encode_uri_component(model))
        }
    };
    init.set_headers(&headers);
    let response = fetch(&Request::new_with_str_and_init(&url, &init)?).await?;
    if !response.ok() {
        return Err(error_text(&response).await.into());
    }
    let text = JsFuture::from(response.text()?).await?.as_string().unwrap_or_default();
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| JsValue::from_str(&format!("bad answer: {e}")))?;
    let mut masks = Vec::new();
    for record in value["masks"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let rle: segany_predict::masks::Rle =
            serde_json::from_value(record["segmentation"].clone()).map_err(|e| JsValue::from_str(&format!("bad mask: {e}")))?;
        let mask = rle.decode().map_err(|e| JsValue::from_str(&e.to_string()))?;
        masks.push((Rc::new(mask), record["predicted_iou"].as_f64().unwrap_or(0.0) as f32));
    }
    masks.sort_by_key(|(m, _)| m.iter().filter(|&&v| v != 0).count());
    Ok(masks)
}

/// Gets the embedding of the current picture, on WebGPU or from the server (see [`EmbedOn`]),
/// then hands it to the decoder worker. WebGPU that is missing, too small for the model or
/// failing falls back to the server, and the status line says so.
async fn embed(app: &Shared, bytes: Vec<u8>, generation: u64) -> Result<(), JsValue> {
    let Some(model) = app.borrow().model.clone() else {
        // The model list is not in yet: the model's selection embeds these bytes.
        app.borrow_mut().deferred_image = Some((bytes, generation));
        return Ok(());
    };
    app.borrow_mut().embedding_for = Some((generation, model.clone()));
    let fallback = match webgpu_plan(app, &model).await {
        Ok(url) => match embed_on_webgpu(app, &bytes, generation, &model, &url).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                app.borrow_mut().webgpu_failed = Some(e.clone());
                Some(format!("WebGPU failed ({e})"))
            }
        },
        Err(reason) => reason,
    };
    {
        let a = app.borrow();
        if a.picture_generation != generation || a.model.as_deref() != Some(&model) {
            return Ok(());
        }
    }
    embed_on_server(app, bytes, generation, &model, fallback).await
}

/// The URL of the whole model's weights when this picture is to be embedded on WebGPU; else why
/// not (`None`: the user chose the server).
async fn webgpu_plan(app: &Shared, model: &str) -> Result<String, Option<String>> {
    let (on, failed, info, precision) = {
        let a = app.borrow();
        let info = a.models.iter().find(|m| m.id == model).cloned();
        (a.embed_on, a.webgpu_failed.clone(), info, a.options.precision.clone())
    };
    if on == EmbedOn::Server {
        return Err(None);
    }
    if let (EmbedOn::Auto, Some(e)) = (on, failed) {
        return Err(Some(format!("WebGPU failed earlier ({e})")));
    }
    let info = info.ok_or_else(|| Some(format!("unknown model {model}")))?;
    let Some(file) = info.weights.get(&precision).or(info.weights.get("f16")) else {
        return Err(Some("the server offers no weights for WebGPU".into()));
    };
    let gpu = { app.borrow().gpu.clone() };
    let gpu = match gpu {
        Gpu::Unknown => {
            let probed = probe_webgpu().await;
            app.borrow_mut().gpu = probed.clone();
            probed
        }
        known => known,
    };
    match gpu {
        Gpu::Missing(why) => Err(Some(why)),
        Gpu::Adapter { max_buffer, .. } if info.encoder_buffer_bytes() > max_buffer => Err(Some(format!(
            "{model} needs {:.0} MB GPU buffers, this adapter allows {:.0} MB",
            info.encoder_buffer_bytes() / 1e6,
            max_buffer / 1e6
        ))),
        _ => Ok(format!("{}{}", app.borrow().options.server, file.url)),
    }
}

/// Asks `navigator.gpu` for an adapter (on the main thread too: only to decide, never to compute).
async fn probe_webgpu() -> Gpu {
    use js_sys::{Function, Promise, Reflect};
    let Some(window) = web_sys::window() else { return Gpu::Missing("no window".into()) };
    let gpu = Reflect::get(&window.navigator(), &"gpu".into()).unwrap_or(JsValue::UNDEFINED);
    if gpu.is_undefined() || gpu.is_null() {
        return Gpu::Missing("this browser has no WebGPU".into());
    }
    let request = Reflect::get(&gpu, &"requestAdapter".into()).ok().and_then(|f| f.dyn_into::<Function>().ok());
    let Some(promise) = request.and_then(|f| f.call0(&gpu).ok()).and_then(|p| p.dyn_into::<Promise>().ok()) else {
        return Gpu::Missing("navigator.gpu.requestAdapter failed".into());
    };
    let adapter = match JsFuture::from(promise).await {
        Ok(a) if !a.is_null() && !a.is_undefined() => a,
        Ok(_) => return Gpu::Missing("WebGPU has no adapter here".into()),
        Err(e) => return Gpu::Missing(format!("WebGPU adapter request failed: {}", describe(&e))),
    };
    let field = |o: &JsValue, k: &str| Reflect::get(o, &k.into()).unwrap_or(JsValue::UNDEFINED);
    let limits = field(&adapter, "limits");
    let max_buffer = ["maxStorageBufferBindingSize", "maxBufferSize"]
        .iter()
        .filter_map(|k| field(&limits, k).as_f64())
        .fold(f64::INFINITY, f64::min);
    let info = field(&adapter, "info");
    let name = ["description", "architecture", "vendor"]
        .iter()
        .filter_map(|k| field(&info, k).as_string())
        .find(|v| !v.is_empty())
        .unwrap_or_else(|| "WebGPU".into());
    Gpu::Adapter { name, max_buffer }
}

/// A promise for the encoder worker's next message about `tag` (see `App::encoder_waits`).
fn encoder_wait(app: &Shared, tag: String) -> JsFuture {
    let (tx, rx) = futures_channel();
    app.borrow_mut().encoder_waits.push((tag, Box::new(tx)));
    rx
}

/// Embeds the picture in the encoder worker, loading the model's weights there first (downloaded
/// once for every client, cached by the browser).
async fn embed_on_webgpu(app: &Shared, bytes: &[u8], generation: u64, model: &str, url: &str) -> Result<(), String> {
    let (client, adapter) = {
        let a = app.borrow();
        let adapter = match &a.gpu {
            Gpu::Adapter { name, .. } => name.clone(),
            _ => "WebGPU".into(),
        };
        (a.client, adapter)
    };
    let t = web_sys::window().and_then(|w| w.performance()).map_or(0.0, |p| p.now());
    match hub::want_weights(client, url, hub::Role::Encoder) {
        hub::WeightsNeed::Fetch => {
            let wait = encoder_wait(app, format!("w:{url}"));
            app.borrow_mut().set_status(&format!("Downloading {model} for WebGPU…"));
            match fetch_weights(app, url).await {
                Ok(weights) => hub::weights_fetched(url, weights),
                Err(e) => hub::weights_failed(url, &describe(&e)),
            }
            app.borrow_mut().set_status(&format!("Loading {model} onto the GPU…"));
            expect_kind(wait.await, "weights_loaded")?;
        }
        hub::WeightsNeed::Wait => {
            app.borrow_mut().set_status(&format!("Loading {model} onto the GPU…"));
            expect_kind(encoder_wait(app, format!("w:{url}")).await, "weights_loaded")?;
        }
        hub::WeightsNeed::Loaded(_) => {}
    }
    let id = {
        let mut a = app.borrow_mut();
        if a.picture_generation != generation || a.model.as_deref() != Some(model) {
            return Ok(());
        }
        a.set_status(&format!("Computing the embedding ({model}) on WebGPU ({adapter})…"));
        a.next_id += 1;
        a.next_id
    };
    let wait = encoder_wait(app, format!("e:{id}"));
    let buffer = Uint8Array::from(bytes).buffer();
    let fields = [
        ("client", client.into()),
        ("key", url.into()),
        ("id", id.into()),
        ("model", model.into()),
        ("bytes", buffer.clone().into()),
    ];
    hub::post_to(hub::Role::Encoder, message("encode", &fields), Array::of1(&buffer));
    let reply = expect_kind(wait.await, "encoded")?;
    let data = Uint8Array::new(&get(&reply, "bytes")).to_vec();
    let ms = web_sys::window().and_then(|w| w.performance()).map_or(0.0, |p| p.now()) - t;
    let gpu_ms = get(&reply, "ms").as_f64().unwrap_or(0.0);
    let mut a = app.borrow_mut();
    if a.picture_generation != generation || a.model.as_deref() != Some(model) {
        return Ok(());
    }
    a.ui.embedding.set_text_content(Some(&format!(
        "Embedding: WebGPU ({adapter}) · {model} · {:.2} s ({:.2} s with loading)",
        gpu_ms / 1000.0,
        ms / 1000.0
    )));
    a.ui.app.set_attribute("data-embedded-on", "webgpu").ok();
    a.ui.app.set_attribute("data-embed-ms", &format!("{gpu_ms:.1}")).ok();
    a.image_sha256 = None;
    a.image_bytes = Some(Rc::new(bytes.to_vec()));
    a.embedding_bytes = Some(Rc::new(data));
    a.embedding_unsent = true;
    a.send_embedding();
    Ok(())
}

/// The encoder worker's answer, or its error as a message.
fn expect_kind(reply: Result<JsValue, JsValue>, want: &str) -> Result<JsValue, String> {
    let reply = reply.map_err(|e| describe(&e))?;
    match kind(&reply).as_str() {
        k if k == want => Ok(reply),
        "error" => Err(get(&reply, "message").as_string().unwrap_or_else(|| "the encoder worker failed".into())),
        other => Err(format!("unexpected answer '{other}' from the encoder worker")),
    }
}

/// Asks the server for the embedding of the current picture, then hands it to the worker.
/// `fallback`: why WebGPU was not used, when it was meant to be.
async fn embed_on_server(app: &Shared, bytes: Vec<u8>, generation: u64, model: &str, fallback: Option<String>) -> Result<(), JsValue> {
    let model = model.to_string();
    let url = format!("{}/api/v1/embeddings?model={}", app.borrow().options.server, js_sys::encode_uri_component(&model));
    let note = fallback.as_ref().map(|f| format!("{f}: ")).unwrap_or_default();
    app.borrow_mut().set_status(&format!("{note}computing the embedding ({model}) on the server…"));
    let perf = web_sys::window().and_then(|w| w.performance());
    let t = perf.as_ref().map_or(0.0, |p| p.now());
    let init = RequestInit::new();
    init.set_method("POST");
    let body = Uint8Array::from(&bytes[..]);
    init.set_body(&body);
    let response = fetch(&Request::new_with_str_and_init(&url, &init)?).await?;
    if !response.ok() {
        return Err(error_text(&response).await.into());
    }
    let cache = response.headers().get("x-segany-cache").ok().flatten().unwrap_or_default();
    let sha = response
        .headers()
        .get("x-segany-meta")
        .ok()
        .flatten()
        .and_then(|m| serde_json::from_str::<serde_json::Value>(&m).ok())
        .and_then(|m| m["image_sha256"].as_str().map(str::to_string));
    let data = JsFuture::from(response.array_buffer()?).await?;
    let data = Uint8Array::new(&data).to_vec();
    let ms = perf.as_ref().map_or(0.0, |p| p.now()) - t;
    let mut a = app.borrow_mut();
    if a.picture_generation != generation || a.model.as_deref() != Some(&model) {
        return Ok(());
    }
    let how = if cache == "hit" { "cached" } else { "computed" };
    let why = fallback.map(|f| format!(" — {f}")).unwrap_or_default();
    a.ui.embedding.set_text_content(Some(&format!("Embedding: server · {model} · {:.2} s ({how}){why}", ms / 1000.0)));
    a.ui.app.set_attribute("data-embedded-on", "server").ok();
    a.ui.app.set_attribute("data-embed-ms", &format!("{ms:.1}")).ok();
    a.image_sha256 = sha;
    a.image_bytes = None;
    a.embedding_bytes = Some(Rc::new(data));
    a.embedding_unsent = true;
    a.send_embedding();
    Ok(())
}

async fn fetch(request: &Request) -> Result<Response, JsValue> {
    let window = web_sys::window().expect("window");
    JsFuture::from(window.fetch_with_request(request))
        .await
        .map_err(|e| JsValue::from_str(&format!("cannot reach the server: {}", describe(&e))))?
        .dyn_into()
}

/// The server's JSON error message, or the status line.
async fn error_text(response: &Response) -> String {
    let status = format!("HTTP {} {}", response.status(), response.status_text());
    let Ok(promise) = response.text() else { return status };
    let Ok(text) = JsFuture::from(promise).await else { return status };
    let text = text.as_string().unwrap_or_default();
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["error"].as_str().map(|e| format!("{status}: {e}")))
        .unwrap_or(status)
}

async fn load_models(app: &Shared) -> Result<(), JsValue> {
    let url = format!("{}/api/v1/models", app.borrow().options.server);
    let response = fetch(&Request::new_with_str(&url)?).await?;
    if !response.ok() {
        return Err(error_text(&response).await.into());
    }
    let json = JsFuture::from(response.text()?).await?.as_string().unwrap_or_default();
    let list: ModelList = serde_json::from_str(&json).map_err(|e| JsValue::from_str(&format!("bad model list: {e}")))?;
    let chosen = {
        let mut a = app.borrow_mut();
        let document = a.ui.app.owner_document().expect("document");
        for m in &list.models {
            let option = document.create_element("option")?;
            option.set_attribute("value", &m.id)?;
            let label = match &m.variant {
                Some(v) if v != &m.id => format!("{} ({v})", m.id),
                _ => m.id.clone(),
            };
            option.set_text_content(Some(&label));
            a.ui.model.append_child(&option)?;
        }
        let wanted = a.options.model.clone().or(list.default.clone());
        a.models = list.models;
        wanted.filter(|id| a.models.iter().any(|m| &m.id == id)).or_else(|| a.models.first().map(|m| m.id.clone()))
    };
    match chosen {
        Some(id) => {
            select_model(app, id);
            Ok(())
        }
        None => Err("the server offers no model".into()),
    }
}

/// Switches to a model: its decoder weights, and a new embedding of the current picture.
fn select_model(app: &Shared, id: String) {
    let a = app.clone();
    spawn_local(async move {
        let url = {
            let mut app = a.borrow_mut();
            app.ui.model.set_value(&id);
            app.model = Some(id.clone());
            app.weights_digest = None;
            app.embedding_ready = false;
            app.in_flight = None;
            let info = app.models.iter().find(|m| m.id == id).cloned();
            let server = app.options.server.clone();
            let url = info.and_then(|m| m.decoder.get("f16").or(m.decoder.get("f32")).map(|d| format!("{server}{}", d.url)));
            app.weights_key = url.clone();
            app.awaiting_weights = url.is_some();
            app.render();
            url
        };
        let Some(url) = url else {
            a.borrow_mut().error(&format!("model {id} has no decoder weights"));
            return;
        };
        let client = a.borrow().client;
        match hub::want_weights(client, &url, hub::Role::Decoder) {
            hub::WeightsNeed::Fetch => {
                a.borrow_mut().loading += 1;
                let result = fetch_weights(&a, &url).await;
                a.borrow_mut().loading -= 1;
                match result {
                    Ok(bytes) => hub::weights_fetched(&url, bytes),
                    Err(e) => hub::weights_failed(&url, &describe(&e)),
                }
            }
            hub::WeightsNeed::Wait => {}
            hub::WeightsNeed::Loaded(digest) => a.borrow_mut().weights_loaded(&url, digest),
        }
        a.borrow_mut().render();
        // A picture already shown needs this model's embedding, unless it is being fetched.
        let (generation, needed, deferred) = {
            let mut app = a.borrow_mut();
            let generation = app.picture_generation;
            let needed = app.picture.is_some() && app.embedding_for != Some((generation, id.clone()));
            (generation, needed, app.deferred_image.take().filter(|(_, g)| *g == generation).map(|(b, _)| b))
        };
        if needed {
            let bytes = match deferred {
                Some(bytes) => Some(bytes),
                None => current_bytes(&a).await,
            };
            if let Some(bytes) = bytes {
                embed_shown(&a, bytes, generation).await;
            }
        }
    });
}

/// Embeds the picture on the stage again (another model, or another place to embed it), with the
/// page showing the work under way and any error.
async fn embed_shown(app: &Shared, bytes: Vec<u8>, generation: u64) {
    app.borrow_mut().loading += 1;
    let r = embed(app, bytes, generation).await;
    let mut a = app.borrow_mut();
    a.loading -= 1;
    if let Err(e) = r {
        a.error(&describe(&e));
    }
    a.render();
}

/// The encoded bytes of the picture on the stage, to embed it again for another model.
async fn current_bytes(app: &Shared) -> Option<Vec<u8>> {
    let bitmap = app.borrow().picture.as_ref().map(|p| p.bitmap.clone())?;
    let canvas: HtmlCanvasElement = app.borrow().ui.scratch.clone();
    canvas.set_width(bitmap.width());
    canvas.set_height(bitmap.height());
    ctx(&canvas).draw_image_with_image_bitmap(&bitmap, 0.0, 0.0).ok()?;
    // PNG keeps the pixels: the new embedding is of the same image.
    let (tx, rx) = futures_channel();
    let cb = Closure::once_into_js(move |blob: JsValue| tx(blob));
    canvas.to_blob_with_type(cb.unchecked_ref(), "image/png").ok()?;
    let blob: Blob = rx.await.ok()?.dyn_into().ok()?;
    Some(Uint8Array::new(&JsFuture::from(blob.array_buffer()).await.ok()?).to_vec())
}

/// A one-shot callback and the promise it resolves.
fn futures_channel() -> (impl FnOnce(JsValue), JsFuture) {
    let mut resolve_fn: Option<js_sys::Function> = None;
    let promise = js_sys::Promise::new(&mut |resolve, _| resolve_fn = Some(resolve));
    let resolve = resolve_fn.expect("the executor runs at once");
    (move |v: JsValue| drop(resolve.call1(&JsValue::NULL, &v)), JsFuture::from(promise))
}

/// Decoder weights from the Cache API, or from the server with a progress bar (then cached).
async fn fetch_weights(app: &Shared, url: &str) -> Result<Vec<u8>, JsValue> {
    let window = web_sys::window().expect("window");
    let cache: Option<web_sys::Cache> = match window.caches() {
        Ok(caches) => JsFuture::from(caches.open(WEIGHTS_CACHE)).await.ok().and_then(|c| c.dyn_into().ok()),
        Err(_) => None, // not a secure context
    };
    if let Some(cache) = &cache {
        let hit = JsFuture::from(cache.match_with_str(url)).await?;
        if let Ok(response) = hit.dyn_into::<Response>() {
            let bytes = JsFuture::from(response.array_buffer()?).await?;
            app.borrow_mut().set_status("Decoder weights loaded from the browser cache");
            return Ok(Uint8Array::new(&bytes).to_vec());
        }
    }
    app.borrow_mut().set_status("Downloading the decoder weights…");
    let response = fetch(&Request::new_with_str(url)?).await?;
    if !response.ok() {
        return Err(error_text(&response).await.into());
    }
    let total = response.headers().get("content-length").ok().flatten().and_then(|v| v.parse::<f64>().ok());
    let body = response.body().ok_or("empty response")?;
    let reader: web_sys::ReadableStreamDefaultReader = body.get_reader().dyn_into()?;
    let mut bytes = Vec::with_capacity(total.unwrap_or(0.0) as usize);
    loop {
        let chunk = JsFuture::from(reader.read()).await?;
        if get(&chunk, "done").as_bool().unwrap_or(true) {
            break;
        }
        bytes.extend(Uint8Array::new(&get(&chunk, "value")).to_vec());
        if let Some(total) = total {
            let a = app.borrow();
            a.ui.progress.set_hidden(false);
            a.ui.progress.set_value(bytes.len() as f64 / total);
        }
    }
    app.borrow().ui.progress.set_hidden(true);
    if let Some(cache) = &cache {
        let stored = Response::new_with_opt_u8_array(Some(&mut bytes.clone()))?;
        let _ = JsFuture::from(cache.put_with_str(url, &stored)).await;
    }
    Ok(bytes)
}

impl App {
    fn set_status(&mut self, text: &str) {
        self.ui.status.set_class_name("");
        self.ui.status.set_text_content(Some(text));
    }

    fn error(&mut self, text: &str) {
        self.ui.status.set_class_name("sg-error");
        self.ui.status.set_text_content(Some(text));
        self.emit("error", &serde_json::json!({"message": text}));
    }

    fn send_embedding(&mut self) {
        if self.weights_digest.is_none() {
            return; // sent once the decoder is loaded
        }
        if let (true, Some(bytes)) = (std::mem::take(&mut self.embedding_unsent), &self.embedding_bytes) {
            let array = Uint8Array::from(&bytes[..]);
            let buffer = array.buffer();
            let key = self.weights_key.clone().unwrap_or_default();
            let msg = message("embedding", &[("client", self.client.into()), ("key", key.into()), ("bytes", buffer.clone().into())]);
            self.loading += 1;
            hub::post(msg, Array::of1(&buffer));
        }
    }

    /// Sends a DOM event to the widget's element (the page has none).
    fn emit(&self, name: &str, detail: &serde_json::Value) {
        let Some(target) = &self.options.events else { return };
        let init = web_sys::CustomEventInit::new();
        init.set_detail(&json_to_js(detail));
        init.set_bubbles(true);
        init.set_composed(true);
        if let Ok(event) = web_sys::CustomEvent::new_with_event_init_dict(name, &init) {
            let _ = target.dispatch_event(&event);
        }
    }

    /// Keeps the draft's chosen mask as an object; tells the widget's host.
    fn commit(&mut self, name: Option<String>) -> Option<u32> {
        let mut id = None;
        self.edit(|s| {
            id = s.commit_named(name);
            id.is_some()
        });
        let session = self.session.as_ref()?;
        let o = session.objects().iter().find(|o| Some(o.id) == id)?;
        self.emit("object-commit", &export::object_json(o, session.size));
        id
    }

    /// The worker has the decoder weights `key` (maybe loaded for another widget).
    fn weights_loaded(&mut self, key: &str, digest: String) {
        if self.weights_key.as_deref() != Some(key) {
            return; // another model was chosen meanwhile
        }
        self.awaiting_weights = false;
        self.weights_digest = Some(digest);
        self.set_status("Decoder ready");
        self.send_embedding();
        self.render();
    }

    /// An encoder worker message: resolves what waits for it (every wait when the worker died).
    fn on_encoder(&mut self, data: JsValue) {
        let kind = kind(&data);
        let key = get(&data, "key").as_string();
        let id = get(&data, "id").as_f64().map(|i| i as u32);
        let tag = match (kind.as_str(), id, key) {
            ("encoded" | "error", Some(id), _) => Some(format!("e:{id}")),
            ("weights_loaded" | "error", None, Some(key)) => Some(format!("w:{key}")),
            _ => None,
        };
        let waits = std::mem::take(&mut self.encoder_waits);
        let (hit, rest): (Vec<_>, Vec<_>) = waits.into_iter().partition(|(t, _)| tag.is_none() || tag.as_ref() == Some(t));
        self.encoder_waits = rest;
        for (_, tx) in hit {
            tx(data.clone());
        }
    }

    fn on_worker(&mut self, data: JsValue) {
        if get(&data, "worker").as_string().as_deref() == Some("encoder") {
            return self.on_encoder(data);
        }
        match kind(&data).as_str() {
            "weights_loaded" => {
                let key = get(&data, "key").as_string().unwrap_or_default();
                self.weights_loaded(&key, get(&data, "digest").as_string().unwrap_or_default());
            }
            "embedding_set" => {
                self.loading -= 1;
                self.embedding_ready = true;
                self.set_status("Ready: click to segment");
                if let Some(s) = &self.session {
                    let [h, w] = s.size;
                    self.emit("ready", &serde_json::json!({"width": w, "height": h, "model": self.model}));
                }
                self.pump();
            }
            "cancelled" => {
                // The worker dropped or stopped the hover decode this app cancelled.
                let id = get(&data, "id").as_f64().map(|v| v as u32);
                if self.in_flight.as_ref().is_some_and(|(e, _)| Some(*e) == id) {
                    self.in_flight = None;
                }
                self.pump();
            }
            "decoded" => {
                let id = get(&data, "id").as_f64().unwrap_or(-1.0) as u32;
                if self.in_flight.as_ref().is_none_or(|(e, _)| *e != id) {
                    return; // an answer to a decode this app gave up (another image, model)
                }
                let Some((_, job)) = self.in_flight.take() else { return };
                // A hover preview that no longer answers the draft (a click came meanwhile) is
                // not even read: its masks are megabytes.
                let stale = match job {
                    Job::Hover(revision, at, _) => {
                        self.session.as_ref().is_none_or(|s| s.revision() != revision) || self.hover.is_none_or(|h| (h.x, h.y) != (at.x, at.y))
                    }
                    Job::Cancelled => true,
                    Job::Edit(_) => false,
                };
                if stale {
                    self.show_decode_time(&data);
                } else {
                    match prediction_from_js(&get(&data, "prediction")) {
                        Ok(p) => {
                            self.show_decode_time(&data);
                            match job {
                                Job::Edit(revision) => {
                                    if let Some(s) = &mut self.session {
                                        s.apply_prediction(revision, p);
                                    }
                                }
                                Job::Hover(revision, point, prompt) => self.preview = Some((revision, point, prompt, Rc::new(p))),
                                Job::Cancelled => {}
                            }
                        }
                        Err(e) => self.error(&e),
                    }
                }
                self.pump();
            }
            "error" => {
                let stage = get(&data, "stage").as_string().unwrap_or_default();
                let text = get(&data, "message").as_string().unwrap_or_default();
                match stage.as_str() {
                    "decode" => {
                        self.in_flight = None;
                        self.pump();
                    }
                    "weights" => {
                        if get(&data, "key").as_string() == self.weights_key {
                            self.awaiting_weights = false;
                        }
                    }
                    "embedding" => self.loading = self.loading.saturating_sub(1),
                    _ => {}
                }
                self.error(&format!("{stage}: {text}"));
            }
            _ => {}
        }
        self.render();
    }

    /// The status line's decode time, from a `decoded` message.
    fn show_decode_time(&self, data: &JsValue) {
        let ms = get(data, "ms").as_f64().unwrap_or(0.0);
        let workers = get(data, "workers").as_f64().unwrap_or(1.0);
        let on = if workers > 1.0 { format!(" · {workers} workers") } else { String::new() };
        self.ui.decode.set_text_content(Some(&format!("Decode: {ms:.0} ms{on}")));
        self.ui.app.set_attribute("data-decode-ms", &format!("{ms:.3}")).ok();
        self.ui.app.set_attribute("data-decode-workers", &workers.to_string()).ok();
    }

    /// Sends the next decode if none is in flight: an edit first, else the newest hover. An edit
    /// waiting behind a hover preview's decode cancels it: the preview would be of the draft
    /// before the edit, and the edit's decode starts as soon as the worker has stopped it (at
    /// its next exchange with its helper: a fraction of a decode).
    fn pump(&mut self) {
        if let Some((id, job @ Job::Hover(..))) = &mut self.in_flight
            && self.queued_edit.is_some()
        {
            hub::post(message("cancel", &[("client", self.client.into()), ("id", (*id).into())]), Array::new());
            *job = Job::Cancelled;
        }
        if self.in_flight.is_some() || !self.embedding_ready {
            return;
        }
        let Some(session) = &self.session else { return };
        let (prompt, job) = if let Some(req) = self.queued_edit.take() {
            if req.revision != session.revision() {
                return self.pump_hover();
            }
            (req.prompt, Job::Edit(req.revision))
        } else {
            return self.pump_hover();
        };
        self.send_decode(&prompt, job);
    }

    fn pump_hover(&mut self) {
        let Some(session) = &self.session else { return };
        let Some((revision, point)) = self.queued_hover.take() else { return };
        if revision != session.revision() || self.press.is_some() {
            return;
        }
        // The preview of this very point is on show already (the pointer moved without moving).
        if self.preview.as_ref().is_some_and(|(r, at, ..)| *r == revision && *at == point) {
            return;
        }
        let prompt = Rc::new(session.prompt_with(Some(point)));
        self.send_decode(&prompt, Job::Hover(revision, point, prompt.clone()));
    }

    fn send_decode(&mut self, prompt: &Prompt, job: Job) {
        let id = self.next_id;
        self.next_id += 1;
        let msg = message("decode", &[("client", self.client.into()), ("id", id.into()), ("prompt", prompt_to_js(prompt))]);
        hub::post(msg, Array::new());
        self.in_flight = Some((id, job));
    }

    /// Applies an edit to the session; if it changed the draft's prompt, asks for a decode.
    fn edit(&mut self, f: impl FnOnce(&mut Session) -> bool) {
        let Some(session) = &mut self.session else { return };
        let before = session.revision();
        if f(session) && session.revision() != before && !session.draft().is_empty() && session.draft().prediction.is_none() {
            // Undo/redo to a draft whose masks are known needs no decode; one without does.
            self.queued_edit = Some(DecodeRequest { revision: session.revision(), prompt: session.prompt() });
        }
        self.preview = None;
        self.pump();
        self.render();
    }

    fn request(&mut self, request: Option<DecodeRequest>) {
        if let Some(r) = request {
            self.answer_or_queue(r);
            self.preview = None;
            self.pump();
        }
    }

    /// Queues the decode of an edit, unless the hover preview decodes or decoded that very prompt
    /// (a click where the pointer rested: the same points, mask input and label): that decode
    /// answers the edit, at once or when it ends, instead of a second one after it (not one this
    /// app cancelled: that is a `Job::Cancelled`).
    fn answer_or_queue(&mut self, req: DecodeRequest) {
        if let Some((.., prompt, p)) = &self.preview
            && **prompt == req.prompt
        {
            let p = p.clone();
            self.queued_edit = None;
            if let Some(s) = &mut self.session {
                s.apply_prediction(req.revision, p);
            }
            return;
        }
        if let Some((id, Job::Hover(.., prompt))) = &self.in_flight
            && **prompt == req.prompt
        {
            self.in_flight = Some((*id, Job::Edit(req.revision)));
            self.queued_edit = None;
            return;
        }
        self.queued_edit = Some(req);
    }

    /// Image pixel under a pointer event.
    fn image_point(&self, e: &web_sys::MouseEvent) -> [f64; 2] {
        let c = &self.ui.ui;
        let (cw, ch) = (c.client_width().max(1) as f64, c.client_height().max(1) as f64);
        let x = e.offset_x() as f64 * c.width() as f64 / cw;
        let y = e.offset_y() as f64 * c.height() as f64 / ch;
        [x.clamp(0.0, c.width() as f64), y.clamp(0.0, c.height() as f64)]
    }

    fn hover_at(&mut self, [x, y]: [f64; 2], background: bool) {
        let Some(session) = &self.session else { return };
        let point = Point { x, y, label: if background { 0 } else { 1 } };
        self.hover = Some(point);
        self.queued_hover = Some((session.revision(), point));
        self.pump();
    }

    fn release(&mut self, press: Press, [x, y]: [f64; 2]) {
        if self.everything.is_some() {
            // Everything mode: a click keeps the smallest mask under it as an object.
            if press.moved <= 5.0 {
                self.keep_everything_mask(press.start);
            }
            return;
        }
        let Some(session) = &mut self.session else { return };
        let request = if press.moved > 5.0 {
            session.set_box([press.start[0], press.start[1], x, y])
        } else {
            let [x, y] = press.start;
            session.add_point(Point { x, y, label: if press.background { 0 } else { 1 } })
        };
        self.request(request);
    }

    fn on_key(&mut self, e: &KeyboardEvent) -> bool {
        let ctrl = e.ctrl_key() || e.meta_key();
        match (e.key().as_str(), ctrl, e.shift_key()) {
            ("z" | "Z", true, false) => self.edit(Session::undo),
            ("z" | "Z", true, true) | ("y" | "Y", true, _) => self.edit(Session::redo),
            ("1" | "2" | "3", false, _) => {
                let i = e.key().parse::<usize>().expect("digit") - 1;
                self.edit(|s| s.select(i));
            }
            ("Enter", false, _) => drop(self.commit(None)),
            ("Escape", false, _) if self.everything.is_some() => self.set_everything(None),
            ("Escape", false, _) => self.edit(Session::cancel),
            _ => return false,
        }
        true
    }

    fn show_picture(&mut self, picture: Picture) {
        let [h, w] = picture.size;
        for c in [&self.ui.image, &self.ui.objects, &self.ui.everything, &self.ui.mask, &self.ui.preview, &self.ui.ui] {
            c.set_width(w as u32);
            c.set_height(h as u32);
        }
        // Resizing emptied the overlays: hidden until drawn (see `put`).
        for c in [&self.ui.objects, &self.ui.everything, &self.ui.mask, &self.ui.preview] {
            c.set_hidden(true);
        }
        ctx(&self.ui.image).draw_image_with_image_bitmap(&picture.bitmap, 0.0, 0.0).ok();
        self.ui.layers.set_hidden(false);
        self.ui.drop.set_hidden(true);
        self.session = Some(Session::new(picture.size));
        self.everything = None;
        self.everything_drawn = false;
        self.image_sha256 = None;
        self.picture = Some(picture);
        self.embedding_ready = false;
        self.embedding_unsent = false;
        self.embedding_bytes = None;
        self.image_bytes = None;
        self.ui.app.remove_attribute("data-embedded-on").ok();
        self.in_flight = None;
        self.queued_edit = None;
        self.queued_hover = None;
        self.preview = None;
        self.drawn = Drawn::default();
        self.ui.decode.set_text_content(None);
        self.ui.embedding.set_text_content(None);
    }

    /// Draws an overlay layer, or empties it. An empty layer is hidden: the browser then has
    /// one layer fewer to composite whenever another changes.
    fn put(&self, canvas: &HtmlCanvasElement, rgba: Option<&[u8]>) {
        let c = ctx(canvas);
        let (w, h) = (canvas.width(), canvas.height());
        c.clear_rect(0.0, 0.0, w as f64, h as f64);
        canvas.set_hidden(rgba.is_none());
        if let Some(rgba) = rgba
            && let Ok(data) = ImageData::new_with_u8_clamped_array_and_sh(Clamped(rgba), w, h)
        {
            c.put_image_data(&data, 0.0, 0.0).ok();
        }
    }

    fn render(&mut self) {
        let pending = self.loading + self.awaiting_weights as u32 + self.in_flight.as_ref().map_or(0, |(_, j)| matches!(j, Job::Edit(_)) as u32) + self.queued_edit.is_some() as u32;
        self.ui.app.set_attribute("data-pending", &pending.to_string()).ok();
        self.ui.app.set_attribute("data-ready", if self.embedding_ready { "1" } else { "0" }).ok();
        if self.session.is_some() {
            self.render_objects();
            self.render_everything();
            self.render_mask();
            self.render_candidates();
            self.render_preview();
            self.render_marks();
            self.render_list();
        }
        self.update_buttons();
    }

    /// The committed objects, each in its colour.
    fn render_objects(&mut self) {
        let Some(session) = &self.session else { return };
        let size = session.size;
        self.ui.app.set_attribute("data-objects", &session.objects().len().to_string()).ok();
        let sig: Vec<(u32, bool, usize)> =
            session.objects().iter().map(|o| (o.id, o.visible, Rc::as_ptr(&o.mask) as usize)).collect();
        if sig == self.drawn.objects {
            return;
        }
        let mut rgba = vec![0u8; size[0] * size[1] * 4];
        for o in session.objects().iter().filter(|o| o.visible) {
            paint(&mut rgba, &o.mask, size, object_color(o.id), 110);
        }
        self.put(&self.ui.objects, Some(&rgba));
        self.drawn.objects = sig;
    }

    /// The segment-everything masks, each in its colour.
    fn render_everything(&mut self) {
        if self.everything_drawn {
            return;
        }
        let Some(session) = &self.session else { return };
        let rgba = self.everything.as_ref().map(|masks| {
            let mut rgba = vec![0u8; session.size[0] * session.size[1] * 4];
            // Largest first, so that smaller masks stay visible on top.
            for (i, (m, _)) in masks.iter().enumerate().rev() {
                paint(&mut rgba, m, session.size, object_color(i as u32 + 1), 90);
            }
            rgba
        });
        self.put(&self.ui.everything, rgba.as_deref());
        let n = self.everything.as_ref().map_or(0, Vec::len);
        self.ui.app.set_attribute("data-everything", &n.to_string()).ok();
        self.everything_drawn = true;
    }

    fn set_everything(&mut self, masks: Option<Vec<(Rc<Vec<u8>>, f32)>>) {
        self.everything = masks;
        self.everything_drawn = false;
        self.render();
    }

    /// Keeps the smallest segment-everything mask under `point` as an object.
    fn keep_everything_mask(&mut self, [x, y]: [f64; 2]) {
        let (Some(session), Some(masks)) = (&mut self.session, &mut self.everything) else { return };
        let [h, w] = session.size;
        let (px, py) = ((x as usize).min(w - 1), (y as usize).min(h - 1));
        let Some(i) = masks.iter().position(|(m, _)| m[py * w + px] != 0) else { return };
        let (mask, score) = masks.remove(i);
        let id = session.add_object(mask.to_vec(), score);
        self.everything_drawn = false;
        if let Some(o) = session.objects().iter().find(|o| o.id == id) {
            let detail = export::object_json(o, session.size);
            self.emit("object-commit", &detail);
        }
        self.render();
    }

    /// The chosen candidate of the draft.
    fn render_mask(&mut self) {
        let Some(session) = &self.session else { return };
        let draft = session.draft();
        let sig = draft.prediction.as_ref().map(|p| (Rc::as_ptr(p) as usize, draft.selected));
        if sig == self.drawn.mask {
            return;
        }
        let rgba = draft.mask().map(|m| overlay(m, session.size, CANDIDATE_COLORS[draft.selected % 3], 120));
        self.put(&self.ui.mask, rgba.as_deref());
        self.ui.app.set_attribute("data-selected", &draft.selected.to_string()).ok();
        self.drawn.mask = sig;
        let detail = match (&draft.prediction, draft.mask()) {
            (Some(p), Some(m)) => {
                let rle = segany_predict::masks::Rle::encode(m, session.size);
                serde_json::json!({
                    "scores": p.iou_predictions, "selected": draft.selected,
                    "area": rle.area().unwrap_or(0), "bbox": rle.bbox().unwrap_or([0; 4]),
                })
            }
            _ => serde_json::json!({"scores": [], "selected": null, "area": 0, "bbox": null}),
        };
        self.emit("mask-change", &detail);
    }

    /// The hover preview, only while it still answers the current draft and pointer.
    fn render_preview(&mut self) {
        let Some(session) = &self.session else { return };
        let current = match (&self.preview, self.hover) {
            (Some((rev, at, _, p)), Some(hover))
                if *rev == session.revision() && self.press.is_none() && at.x == hover.x && at.y == hover.y =>
            {
                Some(p)
            }
            _ => None,
        };
        if current.map(Rc::as_ptr) == self.drawn.preview.as_ref().map(Rc::as_ptr) {
            return;
        }
        let rgba = current.map(|p| overlay(p.mask(best_index(&p.iou_predictions)), session.size, [255, 255, 255], 70));
        self.put(&self.ui.preview, rgba.as_deref());
        self.drawn.preview = current.cloned();
    }

    /// Points, the box and the box being dragged.
    fn render_marks(&mut self) {
        let Some(session) = &self.session else { return };
        let canvas = &self.ui.ui;
        let scale = canvas.width() as f64 / canvas.client_width().max(1) as f64;
        let draft = session.draft();
        let dragged = self.press.filter(|p| p.moved > 5.0).map(|p| [p.start[0], p.start[1], p.now[0], p.now[1]]);
        let mut sig = vec![scale.to_bits()];
        for b in [draft.bbox, dragged].into_iter().flatten() {
            sig.push(1);
            sig.extend(b.map(f64::to_bits));
        }
        for p in &draft.points {
            sig.extend([2 + p.label as u64, p.x.to_bits(), p.y.to_bits()]);
        }
        if sig == self.drawn.marks {
            return;
        }
        self.drawn.marks = sig;
        let c = ctx(canvas);
        c.clear_rect(0.0, 0.0, canvas.width() as f64, canvas.height() as f64);
        c.set_line_width(2.0 * scale);
        let rect = |b: [f64; 4], dash: bool| {
            let dashes = Array::new();
            if dash {
                dashes.push(&(6.0 * scale).into());
                dashes.push(&(4.0 * scale).into());
            }
            c.set_line_dash(&dashes).ok();
            c.set_stroke_style_str("#ffd400");
            c.stroke_rect(b[0].min(b[2]), b[1].min(b[3]), (b[2] - b[0]).abs(), (b[3] - b[1]).abs());
        };
        if let Some(b) = draft.bbox {
            rect(b, false);
        }
        if let Some(b) = dragged {
            rect(b, true);
        }
        c.set_line_dash(&Array::new()).ok();
        for p in &draft.points {
            c.begin_path();
            c.arc(p.x, p.y, 5.0 * scale, 0.0, std::f64::consts::TAU).ok();
            c.set_fill_style_str(if p.label == 1 { "#22c55e" } else { "#ef4444" });
            c.fill();
            c.set_stroke_style_str("#ffffff");
            c.stroke();
        }
    }

    /// The three candidates: thumbnails, scores, the chosen one.
    fn render_candidates(&mut self) {
        let Some(session) = &self.session else { return };
        let draft = session.draft();
        let sig = draft.prediction.as_ref().map(|p| Rc::as_ptr(p) as usize);
        for (i, c) in self.ui.candidates.iter().enumerate() {
            let selected = draft.prediction.is_some() && i == draft.selected;
            let _ = c.class_list().toggle_with_force("sg-selected", selected);
        }
        if sig == self.drawn.candidates {
            return;
        }
        self.drawn.candidates = sig;
        let (Some(p), Some(picture)) = (&draft.prediction, &self.picture) else {
            for c in &self.ui.candidates {
                c.set_attribute("disabled", "").ok();
                if let Some(s) = c.query_selector(".sg-score").ok().flatten() {
                    s.set_text_content(Some("–"));
                }
            }
            return;
        };
        let [h, w] = picture.size;
        let (tw, th) = (128u32, (128.0 * h as f64 / w as f64).round().max(1.0) as u32);
        let scratch = &self.ui.scratch;
        scratch.set_width(tw);
        scratch.set_height(th);
        for (i, c) in self.ui.candidates.iter().enumerate() {
            let present = i < p.num_masks;
            if present {
                c.remove_attribute("disabled").ok();
            } else {
                c.set_attribute("disabled", "").ok();
            }
            if let Some(s) = c.query_selector(".sg-score").ok().flatten() {
                s.set_text_content(Some(&if present { format!("IoU {:.3}", p.iou_predictions[i]) } else { "–".into() }));
            }
            let Some(thumb) = c.query_selector("canvas").ok().flatten().and_then(|t| t.dyn_into::<HtmlCanvasElement>().ok()) else {
                continue;
            };
            thumb.set_width(tw);
            thumb.set_height(th);
            let t = ctx(&thumb);
            t.draw_image_with_image_bitmap_and_dw_and_dh(&picture.bitmap, 0.0, 0.0, tw as f64, th as f64).ok();
            if present {
                // The mask made small here: a full-size overlay scaled by the canvas would cost
                // megabytes per candidate on every click.
                let small = thumbnail_overlay(p.mask(i), [h, w], [th as usize, tw as usize], CANDIDATE_COLORS[i], 160);
                if let Ok(data) = ImageData::new_with_u8_clamped_array_and_sh(Clamped(&small), tw, th) {
                    ctx(scratch).put_image_data(&data, 0.0, 0.0).ok();
                    t.draw_image_with_html_canvas_element(scratch, 0.0, 0.0).ok();
                }
            }
        }
    }

    /// The object list: colour, editable name, show/hide, delete.
    fn render_list(&mut self) {
        let Some(session) = &self.session else { return };
        let sig: Vec<(u32, bool, String)> = session.objects().iter().map(|o| (o.id, o.visible, o.name.clone())).collect();
        if sig == self.drawn.list {
            return;
        }
        let document: Document = self.ui.app.owner_document().expect("document");
        self.ui.objects_list.set_inner_html("");
        for o in session.objects() {
            let Ok(li) = document.create_element("li") else { continue };
            let [r, g, b] = object_color(o.id);
            let name = html_escape(&o.name);
            li.set_inner_html(&format!(
                "<span class=\"sg-swatch\" style=\"background: rgb({r},{g},{b})\"></span>\
                 <input type=\"text\" data-id=\"{id}\" value=\"{name}\" aria-label=\"name\">\
                 <button type=\"button\" data-action=\"toggle\" data-id=\"{id}\" title=\"Show or hide\">{eye}</button>\
                 <button type=\"button\" data-action=\"delete\" data-id=\"{id}\" title=\"Delete\">✕</button>",
                id = o.id,
                eye = if o.visible { "Hide" } else { "Show" },
            ));
            li.set_attribute("data-object-id", &o.id.to_string()).ok();
            self.ui.objects_list.append_child(&li).ok();
        }
        self.drawn.list = sig;
    }

    fn update_buttons(&self) {
        let s = self.session.as_ref();
        let has_mask = s.is_some_and(|s| s.draft().prediction.is_some());
        let exportable = s.is_some_and(|s| !s.objects().is_empty()) || has_mask;
        for (name, b) in &self.ui.buttons {
            let enabled = match name.as_str() {
                "undo" => s.is_some_and(Session::can_undo),
                "redo" => s.is_some_and(Session::can_redo),
                "commit" => has_mask,
                "cancel" => s.is_some_and(|s| !s.draft().is_empty()),
                "clear" => s.is_some_and(|s| !s.draft().is_empty() || !s.objects().is_empty()),
                "everything" => {
                    self.everything.is_some() || (self.embedding_ready && (self.image_sha256.is_some() || self.image_bytes.is_some()))
                }
                _ => exportable,
            };
            if enabled {
                b.remove_attribute("disabled").ok();
            } else {
                b.set_attribute("disabled", "").ok();
            }
        }
    }

    /// Downloads the committed objects (or, with none, the chosen mask) in a format.
    fn export(&mut self, format: &str) {
        let (Some(session), Some(picture)) = (&self.session, &self.picture) else { return };
        let draft_object;
        let mut objects: Vec<&crate::session::Object> = session.objects().iter().collect();
        if objects.is_empty() {
            let Some(mask) = session.draft().mask() else { return };
            let p = session.draft().prediction.as_ref().expect("a mask implies a prediction");
            draft_object = crate::session::Object {
                id: 0,
                name: "object".into(),
                visible: true,
                mask: Rc::new(mask.to_vec()),
                score: p.iou_predictions[session.draft().selected],
            };
            objects.push(&draft_object);
        }
        let stem = picture.name.rsplit_once('.').map_or(picture.name.as_str(), |(s, _)| s).to_string();
        let size = session.size;
        let (bytes, name, mime) = match format {
            "png" => (export::label_png(&objects, size), format!("{stem}_masks.png"), "image/png"),
            "coco" => (
                serde_json::to_vec_pretty(&export::coco(&objects, size, &picture.name)).expect("json"),
                format!("{stem}_coco.json"),
                "application/json",
            ),
            _ => (
                serde_json::to_vec_pretty(&export::polygons_json(&objects, size, &picture.name)).expect("json"),
                format!("{stem}_polygons.json"),
                "application/json",
            ),
        };
        if let Err(e) = download(&self.ui.app, &bytes, &name, mime) {
            self.error(&format!("export failed: {}", describe(&e)));
        }
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;")
}

fn download(near: &HtmlElement, bytes: &[u8], name: &str, mime: &str) -> Result<(), JsValue> {
    let options = BlobPropertyBag::new();
    options.set_type(mime);
    let blob = Blob::new_with_u8_array_sequence_and_options(&Array::of1(&Uint8Array::from(bytes)), &options)?;
    let url = Url::create_object_url_with_blob(&blob)?;
    let document = near.owner_document().expect("document");
    let a: web_sys::HtmlAnchorElement = document.create_element("a")?.dyn_into()?;
    a.set_href(&url);
    a.set_download(name);
    a.set_hidden(true);
    near.append_child(&a)?;
    a.click();
    near.remove_child(&a)?;
    // Revoke later: the download reads the URL after this returns.
    let revoke = Closure::once_into_js(move || drop(Url::revoke_object_url(&url)));
    web_sys::window().expect("window").set_timeout_with_callback_and_timeout_and_arguments_0(revoke.unchecked_ref(), 60_000)?;
    Ok(())
}
