// The image encoder on WebGPU in the page: headless Chromium with --enable-unsafe-webgpu gives a
// SwiftShader adapter (no GPU needed). The server holds a random TinyViT (MobileSAM-shaped)
// checkpoint; its own f32 embedding is the reference.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { startServer, launch, decodeRle, decodeWire, FIXTURES } from './harness.mjs';

const IMAGE = path.join(FIXTURES, 'tiny_vit_t/image.png');
const WEBGPU = ['--enable-unsafe-webgpu'];
// SwiftShader runs the shaders on the CPU: the first embedding compiles them too.
const EMBED_MS = 300_000;

const settled = (page) => page.waitForFunction(() => {
  const a = document.querySelector('.sg-app');
  return a && a.dataset.pending === '0' && a.dataset.ready === '1';
}, null, { timeout: EMBED_MS });

/** A <segany-segmenter> on a page of the server's origin, showing the test image; resolves when
 * it is ready. Its events are recorded in window.__events. */
async function widget(page, url, attrs, image) {
  await page.goto(`${url}/healthz`);
  await page.evaluate(async ([attrs, image]) => {
    await import('/segany-segmenter.js');
    window.__events = [];
    const el = document.createElement('segany-segmenter');
    el.id = 'w';
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    for (const type of ['ready', 'error', 'mask-change']) el.addEventListener(type, (e) => window.__events.push({ type, detail: e.detail }));
    document.body.append(el);
    await el.setImage(new Blob([new Uint8Array(image)], { type: 'image/png' }));
  }, [attrs, [...image]]);
  await readyCount(page, 1);
}

const readyCount = (page, n) => page.waitForFunction((n) => {
  const errors = window.__events.filter((e) => e.type === 'error');
  if (errors.length) throw new Error(errors.map((e) => e.detail.message).join('; '));
  return window.__events.filter((e) => e.type === 'ready').length >= n;
}, n, { timeout: EMBED_MS });

/** Clicks a point through the widget's API, keeps the best mask, returns it decoded. */
async function segment(page, [x, y]) {
  const before = await page.evaluate(() => window.__events.filter((e) => e.type === 'mask-change').length);
  await page.evaluate(([x, y]) => document.getElementById('w').addPoint(x, y, 1), [x, y]);
  await page.waitForFunction((n) => window.__events.filter((e) => e.type === 'mask-change').length > n, before, { timeout: 60_000 });
  const object = await page.evaluate(async () => {
    const w = document.getElementById('w');
    await w.commit('thing');
    const objects = await w.getObjects();
    return objects[objects.length - 1];
  });
  return decodeRle(object.segmentation);
}

const iou = (a, b) => {
  let inter = 0, union = 0;
  for (let i = 0; i < a.length; i++) { inter += a[i] & b[i]; union += a[i] | b[i]; }
  return union ? inter / union : 1;
};

describe('WebGPU in the page', () => {
  let server, image, reference;
  const requests = [];

  before(async () => {
    server = await startServer([], 'tiny_vit_t');
    image = await readFile(IMAGE);
    const r = await fetch(`${server.url}/api/v1/embeddings?dtype=f32`, { method: 'POST', body: image });
    assert.equal(r.status, 200);
    reference = decodeWire(await r.arrayBuffer());
  });

  after(async () => { await server?.stop(); });

  it('embeds on WebGPU by default, equal to the server\'s f32 embedding; a click gives the server embedding\'s mask', async () => {
    const browser = await launch(WEBGPU);
    try {
      const page = await browser.newPage();
      const errors = [];
      page.on('pageerror', (e) => errors.push(e.message));
      await widget(page, server.url, { precision: 'f32' }, image);
      const embeddedOn = () => page.evaluate(() =>
        document.getElementById('w').shadowRoot.querySelector('.sg-app').dataset.embeddedOn);
      assert.equal(await embeddedOn(), 'webgpu', 'Auto picks WebGPU when there is an adapter');
      const label = await page.evaluate(() => document.getElementById('w').shadowRoot.querySelector('[data-sg=embedding]').textContent);
      assert.match(label, /^Embedding: WebGPU .* s/);

      const got = decodeWire(await page.evaluate(async () => [...await document.getElementById('w').getEmbedding()]));
      assert.equal(got.header.encoder_digest, reference.header.encoder_digest);
      assert.deepEqual(got.header.shape, reference.header.shape);
      assert.deepEqual([got.header.original_size, got.header.input_size], [reference.header.original_size, reference.header.input_size]);
      assert.equal(got.header.image_sha256, reference.header.image_sha256);
      let scale = 0, worst = 0;
      for (let i = 0; i < got.values.length; i++) {
        scale = Math.max(scale, Math.abs(reference.values[i]));
        worst = Math.max(worst, Math.abs(got.values[i] - reference.values[i]));
      }
      assert.ok(worst <= 1e-3 * scale, `max |Δ| ${worst} > 1e-3 × ${scale}`);

      const [h, w] = reference.header.original_size;
      const points = [[0.4 * w, 0.5 * h], [0.7 * w, 0.3 * h]];
      const onGpu = [];
      for (const p of points) onGpu.push(await segment(page, p));
      // The same image and clicks with the server's embedding.
      await page.evaluate(async (image) => {
        const el = document.getElementById('w');
        await el.clear();
        await el.setEmbedOn('server');
        await el.setImage(new Blob([new Uint8Array(image)], { type: 'image/png' }));
      }, [...image]);
      await readyCount(page, 2);
      assert.equal(await embeddedOn(), 'server');
      for (const [i, p] of points.entries()) {
        const onServer = await segment(page, p);
        assert.ok(onServer.some((v) => v), 'a mask');
        assert.ok(iou(onGpu[i], onServer) >= 0.99, `click ${i}: IoU ${iou(onGpu[i], onServer)}`);
      }
      assert.deepEqual(errors, []);
    } finally {
      await browser.close();
    }
  });

  it('the page downloads the f16 weights once: a second visit takes them from the browser cache', async () => {
    const browser = await launch(WEBGPU);
    try {
      const context = await browser.newContext();
      const page = await context.newPage();
      page.on('request', (r) => requests.push(new URL(r.url()).pathname));
      await page.goto(server.url);
      await page.setInputFiles('[data-sg=file]', IMAGE);
      await settled(page);
      assert.equal(await page.locator('.sg-app').getAttribute('data-embedded-on'), 'webgpu');
      assert.match(await page.locator('[data-sg=embedding]').textContent(), /WebGPU/);
      const weights = () => requests.filter((p) => p.endsWith('/weights')).length;
      assert.equal(weights(), 1, 'the whole model, once');

      // The user switches to the server, and back.
      await page.selectOption('[data-sg=embed-on]', 'server');
      await page.waitForFunction(() => document.querySelector('.sg-app').dataset.embeddedOn === 'server', null, { timeout: 60_000 });
      await settled(page);
      assert.match(await page.locator('[data-sg=embedding]').textContent(), /server/);
      await page.selectOption('[data-sg=embed-on]', 'webgpu');
      await page.waitForFunction(() => document.querySelector('.sg-app').dataset.embeddedOn === 'webgpu', null, { timeout: EMBED_MS });
      await settled(page);
      assert.equal(weights(), 1, 'the weights stay in the worker');

      await page.reload();
      await page.setInputFiles('[data-sg=file]', IMAGE);
      await settled(page);
      assert.equal(await page.locator('.sg-app').getAttribute('data-embedded-on'), 'webgpu');
      assert.equal(weights(), 1, 'the second visit downloads nothing');
    } finally {
      await browser.close();
    }
  });

  it('without WebGPU the page embeds on the server and says why', async () => {
    const browser = await launch();
    try {
      const page = await browser.newPage();
      await page.goto(server.url);
      await page.setInputFiles('[data-sg=file]', IMAGE);
      await settled(page);
      assert.equal(await page.locator('.sg-app').getAttribute('data-embedded-on'), 'server');
      const label = await page.locator('[data-sg=embedding]').textContent();
      assert.match(label, /^Embedding: server .* — .*WebGPU/, label);
    } finally {
      await browser.close();
    }
  });
});
