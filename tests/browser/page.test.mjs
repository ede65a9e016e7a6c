// The page against the real `segany serve` with a random tiny checkpoint, in headless Chromium.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { startServer, launch, decodeRle, FIXTURES, paintedLayer, runsOf, areaOf } from './harness.mjs';

const IMAGE = path.join(FIXTURES, 'tiny/image_large.png'); // 1031×683: odd-sized
const [W, H] = [1031, 683];

const painted = (page, layer) => paintedLayer(page, layer);
const area = ({ runs }) => areaOf(runs);

const app = (page) => page.locator('.sg-app');
const settled = (page) => page.waitForFunction(() => {
  const a = document.querySelector('.sg-app');
  return a.dataset.pending === '0' && a.dataset.ready === '1';
}, null, { timeout: 60_000 });

/** Clicks at a point given as fractions of the image, in image pixels scaled to the canvas' CSS box. */
async function at(page, fx, fy) {
  const box = await page.locator('[data-sg=ui]').boundingBox();
  return { x: box.x + fx * box.width, y: box.y + fy * box.height };
}

describe('the page', () => {
  let server, browser, page;
  const errors = [];

  before(async () => {
    server = await startServer();
    browser = await launch();
    page = await browser.newPage({ viewport: { width: 1280, height: 860 }, acceptDownloads: true });
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    await page.goto(server.url);
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  it('loads the decoder, then an image, and fetches its embedding from the server', async () => {
    await page.waitForFunction(() => /Decoder ready/.test(document.querySelector('[data-sg=status]').textContent), null, { timeout: 60_000 });
    await page.setInputFiles('[data-sg=file]', IMAGE);
    await settled(page);
    assert.match(await page.locator('[data-sg=embedding]').textContent(), /server/);
    const image = await painted(page, 'image');
    assert.deepEqual([image.width, image.height], [W, H]);
  });

  let afterClick;
  it('click: a mask is drawn and three scores are shown, the best preselected', async () => {
    const p = await at(page, 0.4, 0.5);
    await page.mouse.click(p.x, p.y);
    await settled(page);
    afterClick = await painted(page, 'mask');
    assert.ok(area(afterClick) > 0, 'the mask canvas has painted pixels');
    const scores = await page.locator('.sg-candidate .sg-score').allTextContents();
    assert.equal(scores.length, 3);
    const values = scores.map((s) => Number(s.replace(/^IoU\s*/, '')));
    for (const v of values) assert.ok(Number.isFinite(v), `score ${v} is a number`);
    const selected = Number(await app(page).getAttribute('data-selected'));
    assert.equal(selected, values.indexOf(Math.max(...values)));
    assert.match(await page.locator('[data-sg=decode]').textContent(), /\d+(\.\d+)? ms/);
  });

  let afterShift;
  it('Shift+click subtracts: the mask changes', async () => {
    const p = await at(page, 0.75, 0.3);
    await page.keyboard.down('Shift');
    await page.mouse.click(p.x, p.y);
    await page.keyboard.up('Shift');
    await settled(page);
    afterShift = await painted(page, 'mask');
    assert.notDeepEqual(afterShift.runs, afterClick.runs);
  });

  it('key 2 selects the second mask', async () => {
    const before = await app(page).getAttribute('data-selected');
    assert.notEqual(before, '1', 'the best mask is not the second one for this image and these clicks');
    await page.keyboard.press('2');
    await settled(page);
    assert.equal(await app(page).getAttribute('data-selected'), '1');
    assert.notDeepEqual((await painted(page, 'mask')).runs, afterShift.runs);
    assert.match(await page.locator('.sg-candidate[data-index="1"]').getAttribute('class'), /selected/);
  });

  it('undo restores the previous states, redo goes forward again', async () => {
    await page.keyboard.press('Control+z'); // the selection
    await settled(page);
    assert.deepEqual((await painted(page, 'mask')).runs, afterShift.runs);
    await page.keyboard.press('Control+z'); // the Shift+click
    await settled(page);
    assert.deepEqual((await painted(page, 'mask')).runs, afterClick.runs);
    await page.keyboard.press('Control+Shift+z');
    await settled(page);
    assert.deepEqual((await painted(page, 'mask')).runs, afterShift.runs);
  });

  it('Esc cancels; a box drag alone produces a mask', async () => {
    await page.keyboard.press('Escape');
    await settled(page);
    assert.equal(area(await painted(page, 'mask')), 0);
    const a = await at(page, 0.2, 0.2);
    const b = await at(page, 0.6, 0.7);
    await page.mouse.move(a.x, a.y);
    await page.mouse.down();
    await page.mouse.move(b.x, b.y, { steps: 8 });
    await page.mouse.up();
    await settled(page);
    assert.ok(area(await painted(page, 'mask')) > 0);
  });

  it('hover previews the mask under the pointer; clicking a candidate picks it', async () => {
    const p = await at(page, 0.3, 0.4);
    await page.mouse.move(p.x, p.y, { steps: 4 });
    await page.waitForFunction(() => {
      const c = document.querySelector('[data-sg=preview]');
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      for (let i = 3; i < d.length; i += 4) if (d[i]) return true;
      return false;
    }, null, { timeout: 30_000 });
    const other = (Number(await app(page).getAttribute('data-selected')) + 1) % 3;
    await page.locator(`.sg-candidate[data-index="${other}"]`).click();
    await settled(page);
    assert.equal(await app(page).getAttribute('data-selected'), String(other));
    await page.keyboard.press('Control+z');
    await settled(page);
  });

  it('export COCO: each RLE decodes to the drawn mask, pixel for pixel', async () => {
    const drawn = await painted(page, 'mask');
    const download = page.waitForEvent('download');
    await page.locator('[data-sg=export-coco]').click();
    const coco = JSON.parse(await readFile(await (await download).path(), 'utf8'));
    assert.equal(coco.images[0].width, W);
    assert.equal(coco.images[0].height, H);
    assert.equal(coco.annotations.length, 1);
    const mask = decodeRle(coco.annotations[0].segmentation);
    assert.deepEqual(runsOf(mask), drawn.runs);
    assert.equal(coco.annotations[0].area, area(drawn));
  });

  it('Enter keeps the object; its export matches the objects layer', async () => {
    await page.keyboard.press('Enter');
    await settled(page);
    assert.equal(await app(page).getAttribute('data-objects'), '1');
    assert.equal(area(await painted(page, 'mask')), 0, 'the draft is empty after commit');
    const p = await at(page, 0.8, 0.8);
    await page.mouse.click(p.x, p.y, { button: 'right' }); // a background point alone still decodes
    await settled(page);
    await page.keyboard.press('Enter');
    await settled(page);
    assert.equal(await app(page).getAttribute('data-objects'), '2');
    assert.equal(await page.locator('.sg-objects li').count(), 2);
    const download = page.waitForEvent('download');
    await page.locator('[data-sg=export-coco]').click();
    const coco = JSON.parse(await readFile(await (await download).path(), 'utf8'));
    assert.equal(coco.annotations.length, 2);
    const union = new Uint8Array(W * H);
    for (const ann of coco.annotations) decodeRle(ann.segmentation).forEach((v, i) => { union[i] |= v; });
    assert.deepEqual(runsOf(union), (await painted(page, 'objects')).runs);
  });

  it('Everything shows the masks the server finds; a click keeps one as an object; Esc leaves', async () => {
    // A random model fails the default thresholds everywhere: the test lowers them on the way.
    await page.route('**/api/v1/everything', async (route) => {
      const body = JSON.parse(route.request().postData());
      body.settings = { points_per_side: 4, pred_iou_thresh: 0, stability_score_thresh: 0, box_nms_thresh: 1 };
      await route.continue({ postData: JSON.stringify(body) });
    });
    const objects = Number(await app(page).getAttribute('data-objects'));
    await page.locator('button[data-sg=everything]').click();
    await page.waitForFunction(() => Number(document.querySelector('.sg-app').dataset.everything) > 0, null, { timeout: 120_000 });
    await settled(page);
    const shown = Number(await app(page).getAttribute('data-everything'));
    const layer = await painted(page, 'everything');
    assert.ok(area(layer) > 0);
    // Click well inside a painted area (a 7×7 block all painted), away from rounding at edges.
    const [x, y] = await page.evaluate(() => {
      const c = document.querySelector("canvas[data-sg=everything]");
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      const on = (x, y) => d[(y * c.width + x) * 4 + 3] > 0;
      for (let y = 3; y < c.height - 3; y++) {
        for (let x = 3; x < c.width - 3; x++) {
          let all = true;
          for (let dy = -3; dy <= 3 && all; dy++) for (let dx = -3; dx <= 3 && all; dx++) all = on(x + dx, y + dy);
          if (all) return [x + 0.5, y + 0.5];
        }
      }
      return null;
    });
    const box = await page.locator('[data-sg=ui]').boundingBox();
    await page.mouse.click(box.x + (x / W) * box.width, box.y + (y / H) * box.height);
    await settled(page);
    assert.equal(Number(await app(page).getAttribute('data-objects')), objects + 1);
    assert.equal(Number(await app(page).getAttribute('data-everything')), shown - 1);
    await page.keyboard.press('Escape');
    await settled(page);
    assert.equal(await app(page).getAttribute('data-everything'), '0');
    assert.equal(area(await painted(page, 'everything')), 0);
  });

  it('a click where the hover preview decoded that very prompt needs no second decode', async () => {
    await page.keyboard.press('Escape');
    await settled(page);
    // Count the page's decode requests to the worker.
    await page.evaluate(() => {
      window.sgDecodes = 0;
      const post = Worker.prototype.postMessage;
      Worker.prototype.postMessage = function (msg, ...rest) {
        if (msg && msg.kind === 'decode') window.sgDecodes += 1;
        return post.call(this, msg, ...rest);
      };
    });
    const decodes = () => page.evaluate(() => window.sgDecodes);
    // The pointer rests: its preview is on show; the click there takes the preview's masks.
    const p = await at(page, 0.45, 0.55);
    await page.mouse.move(p.x, p.y, { steps: 3 });
    await page.waitForFunction(() => {
      const c = document.querySelector('[data-sg=preview]');
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      for (let i = 3; i < d.length; i += 4) if (d[i]) return true;
      return false;
    }, null, { timeout: 30_000 });
    const preview = await painted(page, 'preview');
    const before = await decodes();
    await page.mouse.move(p.x, p.y); // the same spot again: no new preview decode either
    await page.mouse.down();
    await page.mouse.up();
    await settled(page);
    assert.equal(await decodes(), before, 'the click sent no decode');
    const mask = await painted(page, 'mask');
    assert.ok(area(mask) > 0, 'a mask is drawn');
    assert.deepEqual(bitmap(mask), bitmap(preview), 'the mask is the preview\'s');
    assert.equal((await page.locator('.sg-candidate .sg-score').allTextContents()).length, 3);
    // A click as the pointer arrives: the hover decode it starts answers the click too.
    const q = await at(page, 0.6, 0.35);
    const n = await decodes();
    await page.mouse.click(q.x, q.y);
    await settled(page);
    assert.equal(await decodes(), n + 1, 'one decode for the move and the click');
    assert.notDeepEqual(bitmap(await painted(page, 'mask')), bitmap(mask), 'the second point changed the mask');
    await page.mouse.move(0, 0);
    await page.keyboard.press('Escape');
    await settled(page);
  });

  it('logged no errors', () => {
    assert.deepEqual(errors, []);
  });
});

/** A 0/1 mask from paintedLayer's run lengths. */
function bitmap({ runs }) {
  const out = [];
  runs.forEach((n, i) => { for (let k = 0; k < n; k++) out.push(i % 2); });
  return out;
}

describe('the decoder worker with its helper', () => {
  let server, browser;
  const errors = [];

  before(async () => {
    server = await startServer();
    browser = await launch();
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  /** Opens the page at `query`, clicks, Shift+clicks → the masks, scores and worker counts. */
  async function session(query) {
    const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    const wasm = [];
    page.on('request', (r) => { if (r.url().endsWith('.wasm')) wasm.push(new URL(r.url()).pathname.slice(1)); });
    await page.goto(`${server.url}/${query}`);
    await page.waitForFunction(() => /Decoder ready/.test(document.querySelector('[data-sg=status]').textContent), null, { timeout: 60_000 });
    await page.setInputFiles('[data-sg=file]', IMAGE);
    await settled(page);
    const steps = [];
    for (const [fx, fy, shift] of [[0.4, 0.5, false], [0.75, 0.3, true], [0.3, 0.6, false]]) {
      const p = await at(page, fx, fy);
      if (shift) await page.keyboard.down('Shift');
      await page.mouse.click(p.x, p.y);
      if (shift) await page.keyboard.up('Shift');
      await settled(page);
      steps.push({
        mask: bitmap(await painted(page, 'mask')),
        scores: (await page.locator('.sg-candidate .sg-score').allTextContents()).map((s) => Number(s.replace(/^IoU\s*/, ''))),
        workers: await app(page).getAttribute('data-decode-workers'),
      });
      await page.mouse.move(0, 0); // off the canvas: no hover decode
    }
    const cores = await page.evaluate(() => navigator.hardwareConcurrency);
    await page.close();
    return { steps, cores, wasm };
  }

  /** Whether two sessions' masks and scores agree, up to pixels within rounding of the threshold. */
  function assertSameMasks(steps, others, what) {
    for (const [i, [a, b]] of steps.map((s, i) => [s, others[i]]).entries()) {
      const differ = a.mask.reduce((n, v, k) => n + (v !== b.mask[k]), 0);
      const area = a.mask.reduce((n, v) => n + v, 0);
      assert.ok(area > 0, `click ${i}: a mask`);
      // Float sums in another order may flip a pixel whose logit is within rounding of 0.
      assert.ok(differ <= Math.max(2, area / 1000), `${what}, click ${i}: ${differ} of ${area} mask pixels differ`);
      a.scores.forEach((s, k) => assert.ok(Math.abs(s - b.scores[k]) <= 0.002, `${what}, click ${i} score ${k}: ${s} vs ${b.scores[k]}`));
    }
  }

  it('gives the masks and scores the worker alone gives', async () => {
    const { steps: shared, cores } = await session('');
    const { steps: alone } = await session('?decoder_workers=1');
    for (const [i, [a, b]] of shared.map((s, i) => [s, alone[i]]).entries()) {
      // A helper only where there is a second core to run it.
      assert.equal(a.workers, cores >= 2 ? '2' : '1', `click ${i}: decoded by the worker and its helper`);
      assert.equal(b.workers, '1', `click ${i}: decoded by the worker alone`);
    }
    assertSameMasks(shared, alone, 'with and without the helper');
    assert.deepEqual(errors, []);
  });

  it('a click elsewhere cancels the hover decode in flight: the helper stops too, and the click gets its own masks', async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    // Every message between the page and its decoder worker, both ways, in order.
    await page.addInitScript(() => {
      window.sgLog = [];
      const log = (dir, m) => { if (m && ['decode', 'cancel', 'decoded', 'cancelled', 'error'].includes(m.kind)) window.sgLog.push([dir, m.kind, m.id]); };
      const post = Worker.prototype.postMessage;
      Worker.prototype.postMessage = function (msg, ...rest) { log('to', msg); return post.call(this, msg, ...rest); };
      window.Worker = class extends Worker {
        constructor(...args) { super(...args); this.addEventListener('message', (e) => log('from', e.data)); }
      };
    });
    await page.goto(server.url);
    await page.waitForFunction(() => /Decoder ready/.test(document.querySelector('[data-sg=status]').textContent), null, { timeout: 60_000 });
    await page.setInputFiles('[data-sg=file]', IMAGE);
    await settled(page);
    const cores = await page.evaluate(() => navigator.hardwareConcurrency);
    /** The mask a click at `p` gives on its own, from an empty draft. */
    const plainClick = async (p) => {
      await page.keyboard.press('Escape');
      await settled(page);
      await page.mouse.click(p.x, p.y);
      await settled(page);
      await page.mouse.move(0, 0);
      return bitmap(await painted(page, 'mask'));
    };
    /** From an empty draft, `steps` (['move' | 'click', point] or ['undo']) dispatched in one
     *  task, so all reach the page before the worker answers; resolves, once the page has
     *  settled and the worker has sent `answers` answers, to the messages logged meanwhile. */
    const inOneTask = async (steps, answers) => {
      await page.keyboard.press('Escape');
      await settled(page);
      const start = await page.evaluate(() => window.sgLog.length);
      await page.evaluate((steps) => {
        const ui = document.querySelector('[data-sg=ui]');
        const fire = (type, p, buttons) => ui.dispatchEvent(new PointerEvent(type, { clientX: p.x, clientY: p.y, button: 0, buttons, pointerId: 1, isPrimary: true, bubbles: true }));
        for (const [what, p] of steps) {
          if (what === 'move') fire('pointermove', p, 0);
          if (what === 'click') { fire('pointerdown', p, 1); fire('pointerup', p, 0); }
          if (what === 'undo') window.dispatchEvent(new KeyboardEvent('keydown', { key: 'z', ctrlKey: true, bubbles: true }));
        }
      }, steps);
      await settled(page);
      await page.waitForFunction(([n, answers]) => window.sgLog.slice(n).filter(([d, k]) => d === 'from' && (k === 'decoded' || k === 'cancelled')).length >= answers, [start, answers], { timeout: 30_000 });
      return page.evaluate((n) => window.sgLog.slice(n), start);
    };
    // The mask a click at B gives on its own, decoded by the worker and its helper.
    const [a, b] = [await at(page, 0.3, 0.35), await at(page, 0.7, 0.6)];
    const alone = await plainClick(b);
    assert.equal(await app(page).getAttribute('data-decode-workers'), cores >= 2 ? '2' : '1');
    // The pointer comes to A (a hover decode starts), then clicks at B in the same task: the
    // hover's prompt is not the click's, so its decode is cancelled and the click's follows.
    let cancelled = 0;
    for (let attempt = 0; attempt < 5 && cancelled === 0; attempt++) {
      const log = await inOneTask([['move', a], ['click', b]], 2);
      const to = log.filter(([d]) => d === 'to');
      assert.deepEqual(to.map(([, k]) => k), ['decode', 'cancel', 'decode'], JSON.stringify(log));
      const [hover, click] = [to[0][2], to[2][2]];
      assert.equal(to[1][2], hover, 'the cancel names the hover decode');
      const answers = (id) => log.filter(([d, , i]) => d === 'from' && i === id).map(([, k]) => k);
      // Stopped, or (when it ended before the worker saw the cancel) decoded: one answer.
      assert.ok(['cancelled', 'decoded'].includes(answers(hover).join()), JSON.stringify(log));
      assert.deepEqual(answers(click), ['decoded'], JSON.stringify(log));
      cancelled += answers(hover)[0] === 'cancelled';
      assert.deepEqual(bitmap(await painted(page, 'mask')), alone, 'the click\'s masks');
    }
    // A decode alone cannot stop half-way; with the helper, the worker stops at an exchange.
    if (cores >= 2) assert.ok(cancelled > 0, 'a hover decode was stopped');
    // Hover at A, click at B (the hover decode is cancelled), undo, click at A, all before the
    // worker answers: the click's prompt is the cancelled hover decode's, which must not be
    // taken to answer it.
    const atA = await plainClick(a);
    let undone = 0;
    for (let attempt = 0; attempt < 5 && undone === 0; attempt++) {
      const log = await inOneTask([['move', a], ['click', b], ['undo'], ['move', a], ['click', a]], 1);
      undone += log.some(([d, k]) => d === 'from' && k === 'cancelled');
      assert.deepEqual(bitmap(await painted(page, 'mask')), atA, `the click at A's masks: ${JSON.stringify(log)}`);
    }
    if (cores >= 2) assert.ok(undone > 0, 'a hover decode was stopped');
    // The helper is not taken for failed: the next click is decoded by both again.
    await page.keyboard.press('Escape');
    await settled(page);
    await page.mouse.click(b.x, b.y);
    await settled(page);
    assert.equal(await app(page).getAttribute('data-decode-workers'), cores >= 2 ? '2' : '1');
    assert.deepEqual(bitmap(await painted(page, 'mask')), alone);
    await page.close();
    assert.deepEqual(errors, []);
  });

  it('runs the relaxed-SIMD decoder build in this Chromium, and the plain build gives the same masks', async () => {
    const relaxed = await session('');
    const plain = await session('?decoder_simd=plain');
    // Chromium has relaxed SIMD: the page picks that build (the worker and its helper load it).
    assert.ok(relaxed.wasm.includes('segany-decoder-worker-relaxed_bg.wasm'), `wasm loaded: ${relaxed.wasm}`);
    assert.ok(!relaxed.wasm.includes('segany-decoder-worker_bg.wasm'), `wasm loaded: ${relaxed.wasm}`);
    assert.ok(plain.wasm.includes('segany-decoder-worker_bg.wasm'), `wasm loaded: ${plain.wasm}`);
    assert.ok(!plain.wasm.includes('segany-decoder-worker-relaxed_bg.wasm'), `wasm loaded: ${plain.wasm}`);
    assertSameMasks(relaxed.steps, plain.steps, 'relaxed vs plain SIMD');
    assert.deepEqual(errors, []);
  });
});
