// <segany-segmenter>: SAM click-to-segment as a custom element, for labeling tools.
//
//   <script type="module" src="https://your-segany-server/segany-segmenter.js"></script>
//   <segany-segmenter src="image.jpg" server="https://your-segany-server" model="vit_t"></segany-segmenter>
//
// Attributes: src, server, model, embed-on ("auto": WebGPU when the browser has it, else the
// server; "webgpu"; "server"), precision ("f16" weights, or "f32").
//
// The element is sized by the host (CSS width/height), themed with the custom properties
// --segany-bg, --segany-fg, --segany-panel, --segany-border, --segany-accent, --segany-font,
// --segany-radius, and keeps its markup and styles in a shadow root. Every widget on a page
// shares one decoder worker and one copy of the decoder weights. Types: segany-segmenter.d.ts.
import init, { Segmenter } from './segany-app.js';

const ASSETS = new URL('./', import.meta.url).href;
let wasmReady = null;
const loadWasm = () => (wasmReady ??= init({ module_or_path: new URL('segany-app_bg.wasm', import.meta.url) }));

/** Bytes of an image source: a URL string, a Blob/File, or an ImageBitmap / canvas / <img>. */
async function toBlob(source) {
  if (source instanceof Blob) return [source, source.name || 'image'];
  if (typeof source === 'string' || source instanceof URL) {
    const url = new URL(source, document.baseURI);
    const response = await fetch(url);
    if (!response.ok) throw new Error(`cannot fetch ${url}: HTTP ${response.status}`);
    return [await response.blob(), url.pathname.split('/').pop() || 'image'];
  }
  // Anything drawable: re-encode losslessly.
  const width = source.width ?? source.naturalWidth, height = source.height ?? source.naturalHeight;
  const canvas = new OffscreenCanvas(width, height);
  canvas.getContext('2d').drawImage(source, 0, 0);
  return [await canvas.convertToBlob({ type: 'image/png' }), 'image.png'];
}

export class SeganySegmenter extends HTMLElement {
  static observedAttributes = ['src'];

  #segmenter = null;
  #mounted = null;

  constructor() {
    super();
    const shadow = this.attachShadow({ mode: 'open' });
    shadow.innerHTML = '<style>:host{display:block;position:relative;width:100%;height:480px;contain:content}'
      + ':host([hidden]){display:none}.root{width:100%;height:100%}</style><div class="root" part="root"></div>';
  }

  connectedCallback() {
    this.#mounted ??= loadWasm().then(() => {
      const root = this.shadowRoot.querySelector('.root');
      const server = this.getAttribute('server') ?? new URL('.', import.meta.url).href;
      this.#segmenter = new Segmenter(root, this, server.replace(/\/$/, ''), ASSETS, this.getAttribute('model'),
        this.getAttribute('embed-on'), this.getAttribute('precision'));
      const src = this.getAttribute('src');
      if (src) return this.#show(src);
    }).catch((e) => this.#fail(e));
  }

  disconnectedCallback() {
    // Kept: a widget moved in the DOM keeps its state. destroy() frees it for good.
  }

  attributeChangedCallback(name, old, value) {
    if (name === 'src' && value && old !== value && this.#segmenter) this.setImage(value);
  }

  async #show(source) {
    const [blob, name] = await toBlob(source);
    this.#segmenter.setImageBlob(blob, name);
  }

  #fail(e) {
    this.dispatchEvent(new CustomEvent('error', { detail: { message: String(e?.message ?? e) }, bubbles: true, composed: true }));
  }

  async #ready() {
    await this.#mounted;
    if (!this.#segmenter) throw new Error('segany-segmenter is not connected to a document');
    return this.#segmenter;
  }

  /** Shows an image (URL, Blob/File, ImageBitmap, canvas or <img>) and fetches its embedding;
   * `ready` fires when it can be segmented. */
  async setImage(source) {
    try {
      await this.#ready();
      await this.#show(source);
    } catch (e) {
      this.#fail(e);
      throw e;
    }
  }

  /** A point in image pixels; label 1 = foreground (default), 0 = background. */
  async addPoint(x, y, label = 1) { (await this.#ready()).addPoint(x, y, label); }
  /** A box in image pixels. */
  async setBox(x0, y0, x1, y1) { (await this.#ready()).setBox(x0, y0, x1, y1); }
  /** 0 = whole, 1 = part, 2 = subpart. */
  async selectMask(index) { (await this.#ready()).selectMask(index); }
  /** Keeps the chosen mask as an object named `name`; resolves to its id (undefined if none). */
  async commit(name) { return (await this.#ready()).commit(name ?? undefined); }
  async undo() { (await this.#ready()).undo(); }
  async redo() { (await this.#ready()).redo(); }
  /** Drops the current points and box. */
  async cancel() { (await this.#ready()).cancel(); }
  /** Drops the current points, box and every object. */
  async clear() { (await this.#ready()).clear(); }
  /** The kept objects: {id, name, visible, score, area, bbox, segmentation (COCO RLE), polygons}. */
  async getObjects() { return (await this.#ready()).getObjects(); }
  /** Shows objects saved earlier ({name, score, segmentation}) on the current image. */
  async loadObjects(objects) { (await this.#ready()).loadObjects(objects); }
  /** The current image's embedding (segany's SEGANYE1 wire format), or null before it has come. */
  async getEmbedding() { return (await this.#ready()).getEmbedding() ?? null; }
  /** "auto", "webgpu" or "server": where the next images are embedded. */
  async setEmbedOn(where) { (await this.#ready()).setEmbedOn(where); }
  /** Frees this widget's share of the worker. */
  async destroy() { (await this.#ready()).destroy(); }
}

if (!customElements.get('segany-segmenter')) customElements.define('segany-segmenter', SeganySegmenter);
