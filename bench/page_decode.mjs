// Per-click decode time in the page (our wasm decoder in its Web Worker) against onnxruntime-web
// running the official ONNX decoder export, in the same headless Chromium run.
//
//   node bench/page_decode.mjs --checkpoint CKPT --onnx DECODER.onnx [--image IMG] [--clicks 30] [--rounds 1]
//
// Needs: target/release/segany (with the page: ./run.sh --help builds it), bench/web's npm
// packages (bench/page_decode.sh installs them), and the exported decoder
// (`bench/export_onnx.py --part decoder` prints its path; pass it with --onnx). Results go to stdout and to
// bench/results/page-decode-<date>.json.
//
// Both sides decode the same sequences: each click adds a foreground point and refines with the
// previous chosen low-res mask (the page's behaviour), and both upscale the three masks to the
// image's size. Two scenarios, each `--clicks` clicks after `--warmup`:
//   objects — a labeling session: objects of 1–5 clicks each (Esc starts the next object, no mask
//             input on its first click), so prompts hold 1–5 points;
//   long    — one object refined click after click, prompts growing to warmup + clicks points.
// The page runs three times: as users get it (the decoder worker with its helper on 2+ cores, in
// its relaxed-SIMD build where the browser has relaxed SIMD, as this Chromium has), with
// `?decoder_simd=plain` (the build browsers without relaxed SIMD get), and with
// `?decoder_workers=1` (the worker alone). Each round starts with a paired run: the page and
// onnxruntime-web on 1 thread open side by side, every click made on both in turn (the order
// alternating), so that a slow spell of the machine falls on both sides of a pair; it reports
// the ratio of the medians and the median of the click-by-click ratios. `--rounds N` repeats all
// of it N times, onnxruntime-web first in every other round, and reports each round's ratios.
// The page's figure is the worker's own timing of one decode (data-decode-ms), from prompt to
// masks at image size; onnxruntime-web's is session.run on the same inputs. The pointer rests on
// each spot until its hover preview is decoded, then clicks: the click takes that decode's masks.
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import os from 'node:os';
import path from 'node:path';
import { launch, serve, ROOT } from '../tests/browser/harness.mjs';
import { ortServer, onnxruntimeWebVersion } from './ort_server.mjs';

const { values: opt } = parseArgs({
  options: {
    checkpoint: { type: 'string' },
    config: { type: 'string' },
    onnx: { type: 'string' },
    image: { type: 'string', default: path.join(ROOT, 'fixtures-large/vit_t/image.png') },
    clicks: { type: 'string', default: '30' },
    warmup: { type: 'string', default: '3' },
    rounds: { type: 'string', default: '1' },
    bin: { type: 'string', default: path.join(ROOT, 'target/release/segany') },
  },
});
if (!opt.checkpoint || !opt.onnx) {
  console.error('usage: node bench/page_decode.mjs --checkpoint CKPT --onnx DECODER.onnx [--image IMG] [--clicks N] [--rounds N]');
  process.exit(2);
}
const CLICKS = Number(opt.clicks);
const ROUNDS = Math.max(1, Number(opt.rounds));
const WARMUP = Number(opt.warmup);
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
// The clicks: a fixed walk over the image, in fractions of width and height, and after which
// clicks a new object starts (scenario `objects`: 5 clicks an object).
const walk = Array.from({ length: WARMUP + CLICKS }, (_, i) => [0.15 + 0.7 * ((i * 0.618) % 1), 0.15 + 0.7 * ((i * 0.382) % 1)]);
const PER_OBJECT = 5;
const SCENARIOS = { objects: (i) => i > 0 && i % PER_OBJECT === 0, long: () => false };

function startSegany() {
  return serve(['--checkpoint', opt.checkpoint, ...(opt.config ? ['--config', opt.config] : [])], opt.bin);
}

/** Waits until `page` has drawn what the last click changed and its main thread is idle, so
 *  that the drawing is not timed on the next click (of the other side, in a paired run). No
 *  longer: after 100 ms more of idling, every figure of a run grew (the page's 2-worker decode
 *  by ~30%, onnxruntime-web's by ~10%; `…T140255.json`). */
const quiet = (page) => page.evaluate(() => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(() =>
  requestIdleCallback(resolve, { timeout: 1000 })))));

/** The page at `url` with the image open: `click(scenario, i)` makes click `i` of a scenario's
 *  walk and resolves to its decode time (ms). */
async function ourClicks(browser, url) {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await page.goto(url);
  await page.waitForFunction(() => /Decoder ready/.test(document.querySelector('[data-sg=status]').textContent), null, { timeout: 300_000 });
  await page.setInputFiles('[data-sg=file]', opt.image);
  // Polled on a timer, not in requestAnimationFrame (Playwright's default): polling by frames
  // makes the page draw 60 frames a second while a click decodes, which an idle page does not,
  // and those frames take the cores the decoder's workers run on.
  const settled = () => page.waitForFunction(() => {
    const a = document.querySelector('.sg-app');
    return a.dataset.pending === '0' && a.dataset.ready === '1';
  }, null, { timeout: 300_000, polling: 25 });
  await settled();
  const size = await page.evaluate(() => { const c = document.querySelector('[data-sg=image]'); return [c.height, c.width]; });
  const box = await page.locator('[data-sg=ui]').boundingBox();
  const click = async (scenario, i) => {
    if (i === 0 || SCENARIOS[scenario](i)) await page.keyboard.press('Escape');
    const [fx, fy] = walk[i];
    // The pointer comes to rest on the spot and its hover preview is decoded; then the click,
    // which takes that decode's masks (the same prompt) without a decode of its own. So each
    // decode is timed alone, as a user resting before clicking gets it: clicking as the
    // pointer arrives would time the decode while the page handles the click beside it.
    await page.evaluate(() => {
      window.sgDecoded = new Promise((resolve) => new MutationObserver((_, o) => { o.disconnect(); resolve(); })
        .observe(document.querySelector('.sg-app'), { attributes: true, attributeFilter: ['data-decode-ms'] }));
    });
    const [x, y] = [box.x + fx * box.width, box.y + fy * box.height];
    await page.mouse.move(x, y);
    await page.evaluate(() => window.sgDecoded);
    await page.mouse.down();
    await page.mouse.up();
    await settled();
    const ms = Number(await page.locator('.sg-app').getAttribute('data-decode-ms'));
    await page.mouse.move(box.x + box.width + 50, box.y); // off the canvas: no hover decodes between clicks
    await quiet(page);
    return ms;
  };
  return { page, size, click };
}

/** onnxruntime-web on `threads` threads in a page of its own: `click(scenario, i)` runs the
 *  official decoder on click `i`'s prompt (the points so far, the previous best mask) and
 *  resolves to session.run's time (ms). */
async function ortClicks(browser, url, [h, w], threads) {
  const page = await browser.newPage();
  await page.goto(url);
  await page.waitForFunction(() => typeof ort !== 'undefined');
  const isolated = await page.evaluate(async ({ h, w, threads }) => {
    ort.env.wasm.wasmPaths = '/ort/';
    ort.env.wasm.numThreads = threads;
    const session = await ort.InferenceSession.create('/model.onnx', { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
    // Any embedding times the same; a fixed pseudo-random one.
    const embedding = new Float32Array(256 * 64 * 64);
    let s = 1;
    for (let i = 0; i < embedding.length; i++) { s = (s * 1103515245 + 12345) % 2147483648; embedding[i] = s / 2147483648 - 0.5; }
    const scale = 1024 / Math.max(h, w);
    const state = { points: [], mask: new Float32Array(256 * 256), hasMask: 0 };
    window.sgRun = async (restart, [fx, fy]) => {
      if (restart) Object.assign(state, { points: [], mask: new Float32Array(256 * 256), hasMask: 0 });
      state.points.push([fx * w * scale, fy * h * scale]);
      // No box: the official demo pads one (0, 0) point with label -1.
      const coords = new Float32Array([...state.points.flat(), 0, 0]);
      const labels = new Float32Array([...state.points.map(() => 1), -1]);
      const n = state.points.length + 1;
      const feeds = {
        image_embeddings: new ort.Tensor('float32', embedding, [1, 256, 64, 64]),
        point_coords: new ort.Tensor('float32', coords, [1, n, 2]),
        point_labels: new ort.Tensor('float32', labels, [1, n]),
        mask_input: new ort.Tensor('float32', state.mask, [1, 1, 256, 256]),
        has_mask_input: new ort.Tensor('float32', new Float32Array([state.hasMask]), [1]),
        orig_im_size: new ort.Tensor('float32', new Float32Array([h, w]), [2]),
      };
      const t0 = performance.now();
      const out = await session.run(feeds);
      const ms = performance.now() - t0;
      const iou = out.iou_predictions.data;
      const best = iou.indexOf(Math.max(...iou));
      state.mask = out.low_res_masks.data.slice(best * 65536, (best + 1) * 65536);
      state.hasMask = 1;
      return ms;
    };
    return self.crossOriginIsolated;
  }, { h, w, threads });
  const click = async (scenario, i) => {
    const ms = await page.evaluate(([restart, at]) => window.sgRun(restart, at), [i === 0 || SCENARIOS[scenario](i), walk[i]]);
    await quiet(page);
    return ms;
  };
  return { page, isolated, click };
}

/** Every scenario's walk through `clicks` (several sides: each click made on every side in
 *  turn, the order alternating click by click) → per side, per scenario, the times after the
 *  warm-up. */
async function walkAll(clicks) {
  const times = clicks.map(() => ({}));
  for (const scenario of Object.keys(SCENARIOS)) {
    times.forEach((t) => { t[scenario] = []; });
    for (let i = 0; i < walk.length; i++) {
      const order = i % 2 ? [...clicks.keys()].reverse() : [...clicks.keys()];
      for (const k of order) {
        const ms = await clicks[k].click(scenario, i);
        if (i >= WARMUP) times[k][scenario].push(ms);
      }
    }
  }
  return times;
}

async function ourPage(browser, url) {
  const ours = await ourClicks(browser, url);
  const [times] = await walkAll([ours]);
  await ours.page.close();
  return { size: ours.size, times };
}

async function ortPage(browser, url, size, threads) {
  const o = await ortClicks(browser, url, size, threads);
  const [times] = await walkAll([o]);
  await o.page.close();
  return { times, isolated: o.isolated };
}

/** The page and onnxruntime-web (1 thread) open side by side, each click made on both in
 *  turn: a slow spell of the machine falls on both sides of a pair. */
async function pairedRun(browser, seganyUrl, ortUrl) {
  const ours = await ourClicks(browser, seganyUrl);
  const o = await ortClicks(browser, ortUrl, ours.size, 1);
  const [a, b] = await walkAll([ours, o]);
  await ours.page.close();
  await o.page.close();
  return { ours: a, ort1: b };
}

const segany = await startSegany();
const ort = await ortServer(await readFile(opt.onnx));
const browser = await launch();
try {
  const version = browser.version();
  // Rounds: the five runs again, onnxruntime-web first in every other round, so that a slow
  // spell of the machine does not fall on one side only. Each round's ratios are reported; the
  // medians pool the clicks of all rounds.
  const rounds = [];
  for (let k = 0; k < ROUNDS; k++) {
    const round = {};
    // The image's size, for onnxruntime-web's inputs, from the first round's page (which runs
    // before onnxruntime-web in round 1).
    const ortRuns = async () => {
      const size = (rounds[0] ?? round).ours.size;
      round.ort1 = await ortPage(browser, ort.url, size, 1);
      round.ort2 = await ortPage(browser, ort.url, size, 2);
    };
    round.paired = await pairedRun(browser, segany.url, ort.url);
    if (k % 2) await ortRuns();
    round.ours = await ourPage(browser, segany.url);
    round.plain = await ourPage(browser, `${segany.url}/?decoder_simd=plain`);
    round.alone = await ourPage(browser, `${segany.url}/?decoder_workers=1`);
    if (!(k % 2)) await ortRuns();
    rounds.push(round);
  }
  const pool = (name) => ({
    size: rounds[0][name].size,
    isolated: rounds[0][name].isolated,
    times: Object.fromEntries(Object.keys(SCENARIOS).map((s) => [s, rounds.flatMap((r) => r[name].times[s])])),
  });
  const [ours, plain, alone, ort1, ort2] = ['ours', 'plain', 'alone', 'ort1', 'ort2'].map(pool);
  const ortVersion = await onnxruntimeWebVersion();
  const r = {
    date: new Date().toISOString(),
    cpu: os.cpus()[0]?.model, cores: os.cpus().length,
    chromium: version, onnxruntime_web: ortVersion,
    checkpoint: opt.checkpoint, onnx: opt.onnx, image: opt.image, image_size_hw: ours.size,
    clicks: CLICKS, warmup: WARMUP, clicks_per_object: PER_OBJECT,
    ort_cross_origin_isolated: ort2.isolated,
    rounds: ROUNDS,
    round_ratios_vs_ort_1t: rounds.map((rd) => Object.fromEntries(Object.keys(SCENARIOS).map((s) => [s, median(rd.ours.times[s]) / median(rd.ort1.times[s])]))),
    paired: {},
    scenarios: {},
  };
  // The paired runs: per scenario, the ratio of the medians and the median of the click-by-click
  // ratios, pooled and per round.
  const pairRatios = (rds, s) => rds.flatMap((rd) => rd.paired.ours[s].map((a, i) => a / rd.paired.ort1[s][i]));
  const pairSummary = (rds, s) => ({
    ratio_of_medians: median(rds.flatMap((rd) => rd.paired.ours[s])) / median(rds.flatMap((rd) => rd.paired.ort1[s])),
    median_click_ratio: median(pairRatios(rds, s)),
  });
  for (const s of Object.keys(SCENARIOS)) {
    r.paired[s] = {
      ...pairSummary(rounds, s),
      rounds: rounds.map((rd) => pairSummary([rd], s)),
      segany_page_runs_ms: rounds.flatMap((rd) => rd.paired.ours[s]),
      ort_web_1t_runs_ms: rounds.flatMap((rd) => rd.paired.ort1[s]),
    };
  }
  for (const s of Object.keys(SCENARIOS)) {
    const e = {
      segany_page_ms: median(ours.times[s]), segany_page_runs_ms: ours.times[s],
      segany_page_plain_simd_ms: median(plain.times[s]), segany_page_plain_simd_runs_ms: plain.times[s],
      segany_page_1_worker_ms: median(alone.times[s]), segany_page_1_worker_runs_ms: alone.times[s],
      ort_web_1t_ms: median(ort1.times[s]), ort_web_1t_runs_ms: ort1.times[s],
      ort_web_2t_ms: median(ort2.times[s]), ort_web_2t_runs_ms: ort2.times[s],
    };
    e.ratio_vs_ort_1t = e.segany_page_ms / e.ort_web_1t_ms;
    e.ratio_vs_ort_2t = e.segany_page_ms / e.ort_web_2t_ms;
    e.ratio_vs_1_worker = e.segany_page_ms / e.segany_page_1_worker_ms;
    e.ratio_vs_plain_simd = e.segany_page_ms / e.segany_page_plain_simd_ms;
    e.plain_simd_ratio_vs_ort_1t = e.segany_page_plain_simd_ms / e.ort_web_1t_ms;
    r.scenarios[s] = e;
  }
  const dir = path.join(ROOT, 'bench/results');
  await mkdir(dir, { recursive: true });
  const file = path.join(dir, `page-decode-${r.date.replace(/[-:]/g, '').slice(0, 15)}.json`);
  await writeFile(file, JSON.stringify(r, null, 2) + '\n');
  const f = (x) => x.toFixed(1);
  const o = r.scenarios.objects, l = r.scenarios.long;
  console.log(`| decoder, per click (median of ${CLICKS * ROUNDS}${ROUNDS > 1 ? ` (${ROUNDS} rounds)` : ''}, ${ours.size[1]}×${ours.size[0]} image) | objects of 1–${PER_OBJECT} clicks, ms | segany ÷ this | one object, ${WARMUP + 1}–${WARMUP + CLICKS} points, ms | segany ÷ this |`);
  console.log('|---|---:|---:|---:|---:|');
  console.log(`| segany page (wasm, decoder worker + helper: 2 threads) | ${f(o.segany_page_ms)} | 1.00 | ${f(l.segany_page_ms)} | 1.00 |`);
  console.log(`| segany page, plain SIMD build (?decoder_simd=plain, 2 threads) | ${f(o.segany_page_plain_simd_ms)} | ${o.ratio_vs_plain_simd.toFixed(2)} | ${f(l.segany_page_plain_simd_ms)} | ${l.ratio_vs_plain_simd.toFixed(2)} |`);
  console.log(`| segany page, decoder worker alone (?decoder_workers=1: 1 thread) | ${f(o.segany_page_1_worker_ms)} | ${o.ratio_vs_1_worker.toFixed(2)} | ${f(l.segany_page_1_worker_ms)} | ${l.ratio_vs_1_worker.toFixed(2)} |`);
  console.log(`| onnxruntime-web ${ortVersion} wasm, 1 thread | ${f(o.ort_web_1t_ms)} | ${o.ratio_vs_ort_1t.toFixed(2)} | ${f(l.ort_web_1t_ms)} | ${l.ratio_vs_ort_1t.toFixed(2)} |`);
  console.log(`| onnxruntime-web ${ortVersion} wasm, 2 threads${ort2.isolated ? '' : ' (not isolated: 1)'} | ${f(o.ort_web_2t_ms)} | ${o.ratio_vs_ort_2t.toFixed(2)} | ${f(l.ort_web_2t_ms)} | ${l.ratio_vs_ort_2t.toFixed(2)} |`);
  if (ROUNDS > 1) {
    console.log(`\nsegany ÷ onnxruntime-web 1 thread, per round (medians pool all ${ROUNDS} rounds above):`);
    r.round_ratios_vs_ort_1t.forEach((q, k) => console.log(`  round ${k + 1}${k % 2 ? ' (onnxruntime-web first)' : ''}: objects ${q.objects.toFixed(2)}, long ${q.long.toFixed(2)}`));
  }
  const q = (x) => x.toFixed(2);
  console.log(`\nPaired (the page and onnxruntime-web 1 thread open side by side, each click made on both in turn), segany ÷ onnxruntime-web: ratio of medians (median of the click-by-click ratios)`);
  console.log(`  all ${ROUNDS} rounds: objects ${q(r.paired.objects.ratio_of_medians)} (${q(r.paired.objects.median_click_ratio)}), long ${q(r.paired.long.ratio_of_medians)} (${q(r.paired.long.median_click_ratio)})`);
  if (ROUNDS > 1) {
    for (let k = 0; k < ROUNDS; k++) {
      const [po, pl] = [r.paired.objects.rounds[k], r.paired.long.rounds[k]];
      console.log(`  round ${k + 1}: objects ${q(po.ratio_of_medians)} (${q(po.median_click_ratio)}), long ${q(pl.ratio_of_medians)} (${q(pl.median_click_ratio)})`);
    }
  }
  console.log(`\n${file}`);
} finally {
  await browser.close();
  ort.server.close();
  await segany.stop();
}
