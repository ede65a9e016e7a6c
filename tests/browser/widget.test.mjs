// The <segany-segmenter> widget in the example labeling tool (www/label.html), two widgets on one
// page, against the real `segany serve` with a random tiny checkpoint, in headless Chromium.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, decodeRle, paintedLayer, runsOf, areaOf } from './harness.mjs';

const painted = async (page, widget, layer) => (await paintedLayer(page, layer, widget)).runs;
const area = areaOf;

/** Events of both widgets, recorded from the start (they bubble out of the shadow roots). */
const RECORD = () => {
  window.__events = [];
  for (const type of ['ready', 'mask-change', 'object-commit', 'error']) {
    document.addEventListener(type, (e) => {
      if (e.target?.localName === 'segany-segmenter') window.__events.push({ type, widget: e.target.id, detail: e.detail });
    });
  }
};
const events = (page, type, widget) => page.evaluate(([type, widget]) =>
  window.__events.filter((e) => e.type === type && (!widget || e.widget === widget)), [type, widget]);
const waitEvents = (page, type, widget, count) => page.waitForFunction(([type, widget, count]) =>
  window.__events.filter((e) => e.type === type && e.widget === widget).length >= count, [type, widget, count], { timeout: 60_000 });
const settled = (page, widget) => page.waitForFunction((widget) => {
  const a = document.getElementById(widget).shadowRoot.querySelector('.sg-app');
  return a && a.dataset.pending === '0' && a.dataset.ready === '1';
}, widget, { timeout: 60_000 });

describe('the widget in the example labeling tool', () => {
  let server, browser, context, page;
  const errors = [];
  const requests = [];

  before(async () => {
    server = await startServer();
    browser = await launch();
    context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
    page = await context.newPage();
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    page.on('request', (r) => requests.push(new URL(r.url()).pathname));
    await page.addInitScript(RECORD);
    await page.goto(`${server.url}/label.html`);
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  it('both widgets load their image and fire ready with its size', async () => {
    await waitEvents(page, 'ready', 'left', 1);
    await waitEvents(page, 'ready', 'right', 1);
    const [left] = await events(page, 'ready', 'left');
    assert.deepEqual({ width: left.detail.width, height: left.detail.height }, { width: 480, height: 320 });
    assert.equal(typeof left.detail.model, 'string');
    await settled(page, 'left');
    await settled(page, 'right');
    // One decoder worker (and its helper, on 2+ cores, which loads the same wasm: the
    // relaxed-SIMD build, as Chromium has relaxed SIMD) and one download of the decoder weights
    // for both widgets.
    const cores = await page.evaluate(() => navigator.hardwareConcurrency);
    assert.equal(requests.filter((p) => p.endsWith('segany-decoder-worker-relaxed_bg.wasm')).length, cores >= 2 ? 2 : 1);
    assert.equal(requests.filter((p) => /\/api\/v1\/models\/[^/]+\/decoder$/.test(p)).length, 1);
    assert.equal(requests.filter((p) => p === '/api/v1/embeddings').length, 2);
  });

  let leftMask;
  it('a click in one widget changes its mask only, with the documented mask-change payload', async () => {
    const rightBefore = await painted(page, 'right', 'mask');
    const box = await page.locator('#left [data-sg=ui]').boundingBox();
    await page.mouse.click(box.x + box.width * 0.5, box.y + box.height * 0.55);
    await waitEvents(page, 'mask-change', 'left', 1);
    await settled(page, 'left');
    const change = (await events(page, 'mask-change', 'left')).at(-1).detail;
    assert.equal(change.scores.length, 3);
    assert.ok(change.scores.every(Number.isFinite));
    assert.ok([0, 1, 2].includes(change.selected));
    leftMask = await painted(page, 'left', 'mask');
    assert.equal(change.area, area(leftMask));
    assert.equal(change.bbox.length, 4);
    assert.equal((await events(page, 'mask-change', 'right')).length, 0, 'the other widget heard nothing');
    assert.deepEqual(await painted(page, 'right', 'mask'), rightBefore);
  });

  it('the other widget works on its own image through the JS API, and leaves the first alone', async () => {
    await page.evaluate(() => document.getElementById('right').addPoint(240, 160));
    await waitEvents(page, 'mask-change', 'right', 1);
    await settled(page, 'right');
    assert.ok(area(await painted(page, 'right', 'mask')) > 0);
    const right = (await events(page, 'mask-change', 'right')).at(-1).detail;
    const other = (right.selected + 1) % 3;
    await page.evaluate((i) => document.getElementById('right').selectMask(i), other);
    await settled(page, 'right');
    assert.equal((await events(page, 'mask-change', 'right')).at(-1).detail.selected, other);
    await page.evaluate(() => document.getElementById('right').undo());
    await settled(page, 'right');
    assert.equal((await events(page, 'mask-change', 'right')).at(-1).detail.selected, right.selected);
    assert.deepEqual(await painted(page, 'left', 'mask'), leftMask, 'the first widget is unchanged');
  });

  let committed;
  it('commit fires object-commit; its RLE decodes to the drawn mask, pixel for pixel', async () => {
    await page.selectOption('#class', 'animal');
    await page.locator('.pane[data-pane="0"] > h3').click(); // focus the left pane
    await page.locator('#add').click();
    await waitEvents(page, 'object-commit', 'left', 1);
    committed = (await events(page, 'object-commit', 'left'))[0].detail;
    assert.equal(committed.name, 'animal');
    assert.deepEqual(committed.segmentation.size, [320, 480]);
    assert.equal(typeof committed.segmentation.counts, 'string');
    for (const k of ['id', 'score', 'area']) assert.equal(typeof committed[k], 'number', k);
    assert.equal(committed.bbox.length, 4);
    assert.ok(Array.isArray(committed.polygons) && committed.polygons.length > 0);
    const mask = decodeRle(committed.segmentation);
    assert.deepEqual(runsOf(mask), leftMask, 'the committed object is the mask that was drawn');
    assert.deepEqual(runsOf(mask), await painted(page, 'left', 'objects'));
    const objects = await page.evaluate(() => document.getElementById('left').getObjects());
    assert.deepEqual(objects, [committed]);
    assert.deepEqual(await page.evaluate(() => document.getElementById('right').getObjects()), []);
  });

  it("the host's CSS does not reach into the widget, and the widget's does not reach out", async () => {
    const inside = await page.evaluate(() => {
      const root = document.getElementById('left').shadowRoot;
      const s = (el) => getComputedStyle(el);
      const button = root.querySelector('[data-sg=undo]');
      return {
        toolbar: s(root.querySelector('.sg-toolbar')).display,
        app: s(root.querySelector('.sg-app')).display,
        buttonTransform: s(button).textTransform,
        buttonFont: s(button).fontFamily,
        appLetterSpacing: s(root.querySelector('.sg-app')).letterSpacing,
        canvasOutline: s(root.querySelector('[data-sg=ui]')).outlineStyle,
        accent: s(root.querySelector('.sg-app')).getPropertyValue('--sg-accent').trim(),
      };
    });
    assert.equal(inside.toolbar, 'flex');
    assert.equal(inside.app, 'flex');
    assert.equal(inside.buttonTransform, 'none');
    assert.doesNotMatch(inside.buttonFont, /Georgia/);
    assert.equal(inside.appLetterSpacing, 'normal');
    assert.equal(inside.canvasOutline, 'none');
    assert.equal(inside.accent, '#a86b00', 'themed through --segany-accent');
    const outside = await page.evaluate(() => {
      const s = (el) => getComputedStyle(el);
      return {
        button: s(document.getElementById('add')).textTransform,
        buttonBg: s(document.getElementById('add')).backgroundColor,
        body: s(document.body).fontFamily,
        bodyDisplay: s(document.body).display,
      };
    });
    assert.deepEqual(outside, { button: 'uppercase', buttonBg: 'rgb(255, 233, 176)', body: 'Georgia, serif', bodyDisplay: 'grid' });
  });

  it('annotations are saved as COCO and shown again after a reload', async () => {
    await page.waitForFunction(() => JSON.parse(localStorage.getItem('segany-example-coco') ?? 'null')?.annotations?.length === 1);
    const coco = await page.evaluate(() => JSON.parse(localStorage.getItem('segany-example-coco')));
    assert.equal(coco.images.find((i) => i.id === coco.annotations[0].image_id).file_name, 'examples/dog.jpg');
    assert.equal(coco.categories.find((c) => c.id === coco.annotations[0].category_id).name, 'animal');
    assert.deepEqual(coco.annotations[0].segmentation, committed.segmentation);
    await page.reload();
    await waitEvents(page, 'ready', 'left', 1);
    await page.waitForFunction(() => document.getElementById('left').shadowRoot.querySelector('.sg-app').dataset.objects === '1');
    assert.deepEqual(await painted(page, 'left', 'objects'), runsOf(decodeRle(committed.segmentation)));
    const [restored] = await page.evaluate(() => document.getElementById('left').getObjects());
    assert.equal(restored.name, 'animal');
    assert.deepEqual(restored.segmentation, committed.segmentation);
  });

  it('logged no errors', async () => {
    assert.deepEqual(await events(page, 'error'), []);
    assert.deepEqual(errors, []);
  });
});
