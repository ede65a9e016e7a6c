//! The decoder worker: owns one [`DecoderSession`] per model's decoder weights and the embedding of
//! each client (a page or widget on the stage), and answers the page's messages (see `protocol`).
//! Several widgets on one page share it, so the weights are in memory once. Decoding blocks this
//! worker's thread, never the page's.
//!
//! **Two shards.** On a machine with more than one core the worker starts a helper: a second
//! instance of itself, which holds the same weights and embedding and decodes the lower band of
//! the image's grid rows while this one decodes the upper band (`segany_model::cpu_decoder`).
//! Three times per decode they swap attention shares (`partial` messages). Then each upscales
//! the rows of the masks that its band of the low-resolution logits alone gives (all but a few
//! rows where the bands meet); the helper sends its band and its rows back (`band`), and this
//! worker joins them, makes the rows between, and answers.
//! Browsers give wasm no threads without cross-origin isolation, which an embeddable widget
//! cannot demand of its host page; two workers and messages need nothing.
//!
//! Messages are handled one at a time, in order, even while a decode waits for its helper: all
//! but `partial`, `band` and `cancel` go through one queue.
//!
//! **Cancel.** The page cancels a hover preview's decode when a click needs the worker. A queued
//! decode is dropped; the decode under way stops at its next exchange with the helper (and
//! tells the helper, which stops at its own); either way the page gets `cancelled`. A decode
//! that ends before it sees the cancel (one decoded alone never does) answers `decoded`.
//!
//! worker → helper: `{kind: "shard", index, count}` first, then `weights`, `embedding` (no
//! client: the helper holds one embedding per key) and `{kind: "decode_shard", key, prompt}`;
//! helper → worker: `ready`, `weights_loaded`, `partial`, `band` (`{masks, iou, rows: [start,
//! end], maskRows}`: its band of the low-resolution logits, and the image-size mask rows
//! `start..end` of each mask it made from them) or `error`.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::rc::Rc;

use js_sys::{Array, Float32Array, Function, Promise, Uint8Array};
use segany_wasm::{AttentionPartial, DecoderSession, Exchange, ShardMasks, partial_from_js, partial_to_js, prediction_to_js, prompt_from_js};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent, Worker};

use crate::protocol::{bytes_field, error_reply, get, kind, message, prediction_buffers, string_field};

#[derive(Default)]
struct State {
    /// Decoder weights by key (their URL).
    decoders: HashMap<String, DecoderSession>,
    /// Each client's embedding bytes (wire format) and the key of the decoder they belong to.
    embeddings: HashMap<u32, (String, Vec<u8>)>,
    /// Whose embedding each decoder holds now: switching clients re-reads theirs.
    holder: HashMap<String, u32>,
    /// In a helper: `(index, count)` of its shard, from the `shard` message.
    shard: Option<(usize, usize)>,
}

/// Messages arriving while a decode waits, in order, and a waiting taker. Each carries the `id`
/// of the decode it belongs to; a decode takes only its own and drops those of earlier decodes
/// (left over when a shard failed half-way). A later decode's message means the other side gave
/// up on this one: `take` then answers `undefined` and keeps it.
#[derive(Default)]
struct Mailbox {
    queue: RefCell<VecDeque<JsValue>>,
    waiting: RefCell<Option<Function>>,
}

impl Mailbox {
    fn put(&self, v: JsValue) {
        self.queue.borrow_mut().push_back(v);
        let wake = self.waiting.borrow_mut().take();
        if let Some(wake) = wake {
            let _ = wake.call0(&JsValue::NULL);
        }
    }

    async fn take(&self, id: f64) -> JsValue {
        loop {
            let next = self.queue.borrow_mut().pop_front();
            if let Some(v) = next {
                match get(&v, "id").as_f64() {
                    Some(i) if i == id => return v,
                    Some(i) if i > id => {
                        self.queue.borrow_mut().push_front(v);
                        return JsValue::UNDEFINED;
                    }
                    _ => continue,
                }
            }
            let ready = Promise::new(&mut |resolve, _| *self.waiting.borrow_mut() = Some(resolve));
            let _ = JsFuture::from(ready).await;
        }
    }
}

/// This worker's second shard.
struct Helper {
    worker: Worker,
    /// Messages posted before the helper said `ready` (a worker's first messages would be lost
    /// while its wasm loads).
    ready: Cell<bool>,
    early: RefCell<Vec<(JsValue, Array)>>,
    /// Keys whose weights the helper has loaded.
    loaded: RefCell<HashSet<String>>,
    /// The embedding (by the client whose it is) the helper holds for each key.
    holds: RefCell<HashMap<String, u32>>,
    /// Set when the helper failed: from then on this worker decodes alone.
    failed: Cell<bool>,
    /// The id of the sharded decode under way, to answer for the helper if it dies.
    in_flight: Cell<Option<f64>>,
    /// Ids for sharded decodes.
    next_id: Cell<f64>,
}

impl Helper {
    fn post(&self, msg: &JsValue, transfer: Array) {
        if self.ready.get() {
            if self.worker.post_message_with_transfer(msg, &transfer).is_err() {
                self.failed.set(true);
            }
        } else {
            self.early.borrow_mut().push((msg.clone(), transfer));
        }
    }

    fn usable(&self, key: &str) -> bool {
        self.ready.get() && !self.failed.get() && self.loaded.borrow().contains(key)
    }
}

struct Ctx {
    scope: DedicatedWorkerGlobalScope,
    state: RefCell<State>,
    jobs: RefCell<VecDeque<JsValue>>,
    busy: Cell<bool>,
    /// `(client, id)` of the page's decode under way, and whether it was cancelled.
    running: Cell<Option<(f64, f64)>>,
    cancel: Cell<bool>,
    /// Attention shares from the other shard.
    partials: Mailbox,
    /// The helper's answer to a `decode_shard`: `band` or `error`.
    bands: Mailbox,
    helper: RefCell<Option<Rc<Helper>>>,
}

pub fn start() {
    console_error_panic_hook::set_once();
    let scope: DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    let ctx = Rc::new(Ctx {
        scope: scope.clone(),
        state: RefCell::default(),
        jobs: RefCell::default(),
        busy: Cell::new(false),
        running: Cell::new(None),
        cancel: Cell::new(false),
        partials: Mailbox::default(),
        bands: Mailbox::default(),
        helper: RefCell::new(None),
    });
    let c = ctx.clone();
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
        let data = event.data();
        match kind(&data).as_str() {
            // From the coordinating worker, to the decode that waits for it.
            "partial" => c.partials.put(data),
            "cancel" => cancel(&c, &data),
            _ => enqueue(&c, data),
        }
    });
    scope.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    on_message.forget();
    let _ = scope.post_message(&message("ready", &[]));
}

/// Starts the helper when this is the page's worker (not a helper) on more than one core.
fn start_helper(ctx: &Rc<Ctx>) {
    let cores = ctx.scope.navigator().hardware_concurrency();
    if cores < 2.0 || ctx.scope.name() == "segany-decoder-alone" {
        return;
    }
    let href = ctx.scope.location().href();
    let options = web_sys::WorkerOptions::new();
    options.set_name("segany-decoder-helper");
    let Ok(worker) = Worker::new_with_options(&href, &options) else { return };
    let helper = Rc::new(Helper {
        worker,
        ready: Cell::new(false),
        early: RefCell::default(),
        loaded: RefCell::default(),
        holds: RefCell::default(),
        failed: Cell::new(false),
        in_flight: Cell::new(None),
        next_id: Cell::new(0.0),
    });
    let (c, h) = (ctx.clone(), Rc::downgrade(&helper));
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
        let data = event.data();
        let Some(h) = h.upgrade() else { return };
        match kind(&data).as_str() {
            "ready" => {
                h.ready.set(true);
                for (msg, transfer) in h.early.take() {
                    h.post(&msg, transfer);
                }
            }
            "partial" => c.partials.put(data),
            "band" => c.bands.put(data),
            "weights_loaded" => {
                if let Some(key) = get(&data, "key").as_string() {
                    h.loaded.borrow_mut().insert(key);
                }
            }
            "error" if get(&data, "stage").as_string().as_deref() == Some("decode_shard") => {
                // To the decode's exchange, which may wait for a share, and to its end.
                c.partials.put(data.clone());
                c.bands.put(data);
            }
            _ => {
                // Its weights or embedding failed where this worker's succeeded: go alone.
                h.failed.set(true);
            }
        }
    });
    helper.worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    on_message.forget();
    let (c, h) = (ctx.clone(), Rc::downgrade(&helper));
    let on_error = Closure::<dyn FnMut(web_sys::ErrorEvent)>::new(move |e: web_sys::ErrorEvent| {
        // The helper died (a panic, out of memory): answer for it, so a decode waiting on it ends.
        e.prevent_default();
        let Some(h) = h.upgrade() else { return };
        h.failed.set(true);
        h.worker.terminate();
        if let Some(id) = h.in_flight.take() {
            let answer = message("error", &[("id", id.into()), ("message", e.message().into())]);
            c.partials.put(answer.clone().into());
            c.bands.put(answer.into());
        }
    });
    helper.worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    on_error.forget();
    helper.post(&message("shard", &[("index", 1.into()), ("count", 2.into())]), Array::new());
    *ctx.helper.borrow_mut() = Some(helper);
}

/// A page's `cancel` of one of its decodes: dropped if queued, stopped if under way (see the
/// module's doc); nothing if it is done.
fn cancel(ctx: &Rc<Ctx>, data: &JsValue) {
    let (client, id) = (get(data, "client").as_f64(), get(data, "id").as_f64());
    let (Some(client), Some(id)) = (client, id) else { return };
    let this = |d: &JsValue| kind(d) == "decode" && get(d, "client").as_f64() == Some(client) && get(d, "id").as_f64() == Some(id);
    let queued = ctx.jobs.borrow().iter().position(this);
    if let Some(at) = queued {
        ctx.jobs.borrow_mut().remove(at);
        let _ = reply_cancelled(&ctx.scope, client.into(), id.into());
    } else if ctx.running.get() == Some((client, id)) {
        ctx.cancel.set(true);
    }
}

/// The page's decode `id` of `client` was cancelled: dropped or stopped.
fn reply_cancelled(scope: &DedicatedWorkerGlobalScope, client: JsValue, id: JsValue) -> Result<(), String> {
    post(scope, &message("cancelled", &[("client", client), ("id", id)]))
}

fn enqueue(ctx: &Rc<Ctx>, data: JsValue) {
    ctx.jobs.borrow_mut().push_back(data);
    if !ctx.busy.replace(true) {
        wasm_bindgen_futures::spawn_local(pump(ctx.clone()));
    }
}

/// Handles queued messages one after the other.
async fn pump(ctx: Rc<Ctx>) {
    loop {
        let next = ctx.jobs.borrow_mut().pop_front();
        let Some(data) = next else { break };
        if let Err(e) = handle(&ctx, &data).await {
            let _ = ctx.scope.post_message(&error_reply(&data, e));
        }
    }
    ctx.busy.set(false);
}

fn now(scope: &DedicatedWorkerGlobalScope) -> f64 {
    scope.performance().map_or(0.0, |p| p.now())
}

fn client(data: &JsValue) -> Result<u32, String> {
    get(data, "client").as_f64().map(|c| c as u32).ok_or_else(|| "message without client".to_string())
}

fn post(scope: &DedicatedWorkerGlobalScope, msg: &js_sys::Object) -> Result<(), String> {
    scope.post_message(msg).map_err(|e| format!("{e:?}"))
}

/// A copy of `bytes` as an ArrayBuffer to transfer.
fn buffer_of(bytes: &[u8]) -> JsValue {
    Uint8Array::from(bytes).buffer().into()
}

/// The other shard at the end of `post`, its shares arriving in `inbox`. When it fails (an
/// `error`, or a `partial` without a share) `broken` is set and the decode is abandoned; so it is
/// when `cancelled` says so, and the other shard must then be told (a share-less `partial`).
struct PeerExchange<'a> {
    post: &'a dyn Fn(&JsValue, &Array),
    inbox: &'a Mailbox,
    /// The decode's id.
    id: f64,
    index: usize,
    broken: bool,
    /// Whether the decode is no longer wanted: it stops at the next exchange.
    cancelled: &'a dyn Fn() -> bool,
}

impl Exchange for PeerExchange<'_> {
    fn exchange(&mut self, mine: AttentionPartial) -> impl Future<Output = Option<Vec<AttentionPartial>>> {
        // Posted now: the decoder works on while it travels.
        let go = !self.broken && !(self.cancelled)();
        if go {
            let msg = partial_to_js(&mine);
            js_sys::Reflect::set(&msg, &"kind".into(), &"partial".into()).expect("plain object");
            js_sys::Reflect::set(&msg, &"id".into(), &self.id.into()).expect("plain object");
            let transfer = Array::new();
            for k in ["max", "sum", "values"] {
                transfer.push(&get(&get(&msg, k), "buffer"));
            }
            (self.post)(&msg, &transfer);
        }
        async move {
            if !go {
                return None;
            }
            let Some(theirs) = partial_from_js(&self.inbox.take(self.id).await) else {
                self.broken = true;
                return None;
            };
            if (self.cancelled)() {
                return None;
            }
            Some(if self.index == 0 { vec![mine, theirs] } else { vec![theirs, mine] })
        }
    }
}

// The state stays borrowed while a decode awaits its exchanges: nothing else borrows it then,
// since messages are handled one at a time (`pump`) and those that arrive meanwhile only reach
// the mailboxes and the helper's fields.
#[allow(clippy::await_holding_refcell_ref)]
async fn handle(ctx: &Rc<Ctx>, data: &JsValue) -> Result<(), String> {
    let scope = &ctx.scope;
    match kind(data).as_str() {
        "shard" => {
            let field = |k: &str| get(data, k).as_f64().map(|v| v as usize).ok_or(format!("shard without {k}"));
            ctx.state.borrow_mut().shard = Some((field("index")?, field("count")?));
            Ok(())
        }
        "weights" => {
            let key = string_field(data, "key")?;
            let bytes = bytes_field(data)?;
            let shard = ctx.state.borrow().shard;
            if shard.is_none() && ctx.helper.borrow().is_none() {
                start_helper(ctx);
            }
            let helper = ctx.helper.borrow().clone();
            if let Some(h) = &helper {
                let msg = message("weights", &[("key", key.clone().into()), ("bytes", buffer_of(&bytes))]);
                h.post(&msg, Array::of1(&get(&msg, "bytes")));
            }
            let t = now(scope);
            let mut s = DecoderSession::from_weights(bytes)?;
            if let Some((index, count)) = shard {
                s.set_shard(index, count)?;
            }
            let digest = s.encoder_digest().to_string();
            let mut state = ctx.state.borrow_mut();
            state.decoders.insert(key.clone(), s);
            state.holder.remove(&key);
            if let Some(h) = &helper {
                h.holds.borrow_mut().remove(&key);
            }
            let ms = now(scope) - t;
            post(scope, &message("weights_loaded", &[("key", key.into()), ("digest", digest.into()), ("ms", ms.into())]))
        }
        "embedding" if ctx.state.borrow().shard.is_some() => {
            // A helper's: the coordinating worker's current embedding for this key.
            let key = string_field(data, "key")?;
            let bytes = bytes_field(data)?;
            let mut state = ctx.state.borrow_mut();
            let decoder = state.decoders.get_mut(&key).ok_or("no decoder weights for this embedding")?;
            decoder.set_embedding_bytes(&bytes)?;
            Ok(())
        }
        "embedding" => {
            let (client, key) = (client(data)?, string_field(data, "key")?);
            let bytes = bytes_field(data)?;
            let mut state = ctx.state.borrow_mut();
            let decoder = state.decoders.get_mut(&key).ok_or("no decoder weights for this embedding")?;
            let header = serde_wasm_bindgen::to_value(decoder.set_embedding_bytes(&bytes)?).map_err(|e| e.to_string())?;
            if let Some(h) = ctx.helper.borrow().as_ref() {
                h.holds.borrow_mut().remove(&key); // whichever client's it held may have changed
            }
            state.holder.insert(key.clone(), client);
            state.embeddings.insert(client, (key, bytes));
            post(scope, &message("embedding_set", &[("client", client.into()), ("header", header)]))
        }
        "decode_shard" => {
            // A helper's share of the coordinating worker's decode.
            let key = string_field(data, "key")?;
            let prompt = prompt_from_js(&get(data, "prompt"))?;
            let state = ctx.state.borrow();
            let decoder = state.decoders.get(&key).ok_or("no decoder weights yet")?;
            let index = state.shard.map_or(0, |s| s.0);
            let id = get(data, "id").as_f64().ok_or("decode_shard without id")?;
            let to_parent = |msg: &JsValue, transfer: &Array| {
                let _ = scope.post_message_with_transfer(msg, transfer);
            };
            let mut exchange = PeerExchange { post: &to_parent, inbox: &ctx.partials, id, index, broken: false, cancelled: &|| false };
            let Some((masks, iou)) = decoder.decode_shard(&prompt, &mut exchange).await? else {
                return Err("the coordinating worker abandoned the decode".into());
            };
            let made = decoder.shard_masks(&masks, iou.len())?;
            let (masks, iou) = (Float32Array::from(&masks[..]), Float32Array::from(&iou[..]));
            let rows = Array::of2(&(made.rows.start as f64).into(), &(made.rows.end as f64).into());
            let mask_rows = Uint8Array::from(&made.masks[..]);
            let transfer = Array::of3(&masks.buffer(), &iou.buffer(), &mask_rows.buffer());
            let fields = [("id", id.into()), ("masks", masks.into()), ("iou", iou.into()), ("rows", rows.into()), ("maskRows", mask_rows.into())];
            let msg = message("band", &fields);
            scope.post_message_with_transfer(&msg, &transfer).map_err(|e| format!("{e:?}"))
        }
        "decode" => {
            ctx.running.set(Some((get(data, "client").as_f64().unwrap_or(-1.0), get(data, "id").as_f64().unwrap_or(-1.0))));
            let done = decode(ctx, data).await;
            ctx.running.set(None);
            ctx.cancel.set(false);
            done
        }
        "release" => {
            let client = client(data)?;
            let mut state = ctx.state.borrow_mut();
            state.embeddings.remove(&client);
            state.holder.retain(|_, c| *c != client);
            Ok(())
        }
        other => Err(format!("unknown message kind '{other}'")),
    }
}

/// A page's decode: with the helper when it holds this model's weights, alone otherwise.
#[allow(clippy::await_holding_refcell_ref)] // as in `handle`
async fn decode(ctx: &Rc<Ctx>, data: &JsValue) -> Result<(), String> {
    let scope = &ctx.scope;
    let client = client(data)?;
    let prompt_js = get(data, "prompt");
    let prompt = prompt_from_js(&prompt_js)?;
    let helper = ctx.helper.borrow().clone().filter(|h| !h.failed.get());
    let key = {
        let mut state = ctx.state.borrow_mut();
        let state = &mut *state;
        let (key, bytes) = state.embeddings.get(&client).ok_or("no embedding yet")?;
        let decoder = state.decoders.get_mut(key).ok_or("no decoder weights yet")?;
        let sharded = helper.as_ref().is_some_and(|h| h.usable(key));
        decoder.set_shard(0, if sharded { 2 } else { 1 })?;
        if state.holder.get(key) != Some(&client) {
            decoder.set_embedding_bytes(bytes)?;
            state.holder.insert(key.clone(), client);
        }
        if let Some(h) = helper.as_ref().filter(|h| h.usable(key))
            && h.holds.borrow().get(key) != Some(&client)
        {
            let msg = message("embedding", &[("key", key.clone().into()), ("bytes", buffer_of(bytes))]);
            h.post(&msg, Array::of1(&get(&msg, "bytes")));
            h.holds.borrow_mut().insert(key.clone(), client);
        }
        key.clone()
    };
    let helper = helper.filter(|h| h.usable(&key));
    let state = ctx.state.borrow();
    let decoder = state.decoders.get(&key).ok_or("no decoder weights yet")?;
    let t = now(scope);
    let prediction = match &helper {
        None => decoder.predict(&prompt)?,
        Some(h) => {
            let id = h.next_id.get();
            h.next_id.set(id + 1.0);
            h.in_flight.set(Some(id));
            let fields = [("key", key.clone().into()), ("id", id.into()), ("prompt", prompt_js)];
            h.post(&message("decode_shard", &fields), Array::new());
            let to_helper = |msg: &JsValue, transfer: &Array| h.post(msg, transfer.clone());
            let cancelled = || ctx.cancel.get();
            let mut exchange = PeerExchange { post: &to_helper, inbox: &ctx.partials, id, index: 0, broken: false, cancelled: &cancelled };
            let mine = decoder.decode_shard(&prompt, &mut exchange).await;
            let wanted = !ctx.cancel.get();
            if !(wanted && matches!(mine, Ok(Some(_)))) && !exchange.broken {
                // Should the helper still wait for a share of ours: there is none (it stops).
                h.post(&message("partial", &[("id", id.into())]), Array::new());
            }
            // This band's mask rows while the helper makes its own.
            let mine = match mine {
                Ok(Some((masks, iou))) if wanted => decoder.shard_masks(&masks, iou.len()).map(|made| Some((made, masks, iou))),
                Ok(_) => Ok(None),
                Err(e) => Err(e),
            };
            // The helper answers every decode_shard (its band, or an error: it failed or stopped).
            let answer = ctx.bands.take(id).await;
            h.in_flight.set(None);
            if !wanted {
                return reply_cancelled(scope, client.into(), get(data, "id"));
            }
            let mine = mine?;
            let theirs = get(&answer, "masks").dyn_into::<Float32Array>().ok().map(|a| a.to_vec());
            match (mine, theirs) {
                (Some((made, masks, iou)), Some(band)) if !exchange.broken && kind(&answer) == "band" => {
                    let made = [Some(made), shard_masks_from_js(&answer)];
                    decoder.prediction_from_shards(&[&masks, &band], &made.into_iter().flatten().collect::<Vec<_>>(), iou)?
                }
                _ => {
                    // The helper failed mid-decode: decode alone from now on.
                    h.failed.set(true);
                    drop(state);
                    let mut state = ctx.state.borrow_mut();
                    let decoder = state.decoders.get_mut(&key).ok_or("no decoder weights yet")?;
                    decoder.set_shard(0, 1)?;
                    let p = decoder.predict(&prompt)?;
                    return reply_decoded(scope, client, data, (now(scope) - t, 1), &p);
                }
            }
        }
    };
    let workers = if helper.is_some() { 2 } else { 1 };
    reply_decoded(scope, client, data, (now(scope) - t, workers), &prediction)
}

/// The mask rows in a helper's `band` answer, if it has them.
fn shard_masks_from_js(answer: &JsValue) -> Option<ShardMasks> {
    let rows = get(answer, "rows").dyn_into::<Array>().ok()?;
    let (start, end) = (rows.get(0).as_f64()? as usize, rows.get(1).as_f64()? as usize);
    let masks = get(answer, "maskRows").dyn_into::<Uint8Array>().ok()?.to_vec();
    Some(ShardMasks { rows: start..end, masks })
}

/// `(ms, workers)`: how long the decode took and how many workers shared it.
fn reply_decoded(scope: &DedicatedWorkerGlobalScope, client: u32, data: &JsValue, (ms, workers): (f64, u32), prediction: &segany_predict::Prediction) -> Result<(), String> {
    let p = prediction_to_js(prediction);
    let transfer = prediction_buffers(&p);
    let fields = [("client", client.into()), ("id", get(data, "id")), ("ms", ms.into()), ("workers", workers.into()), ("prediction", p.into())];
    scope.post_message_with_transfer(&message("decoded", &fields), &transfer).map_err(|e| format!("{e:?}"))
}
