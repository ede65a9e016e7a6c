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
// `?decoder_workers=1` (the worker alone). `--rounds N` repeats all five runs N times,
// onnxruntime-web first in every other round, and reports each round's ratios.
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

async function ourPage(browser, url) {
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
  const times = {};
  for (const [scenario, restart] of Object.entries(SCENARIOS)) {
    await page.keyboard.press('Escape');
    const t = [];
    for (const [i, [fx, fy]] of walk.entries()) {
      if (restart(i)) await page.keyboard.press('Escape');
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
      t.push(Number(await page.locator('.sg-app').getAttribute('data-decode-ms')));
      await page.mouse.move(box.x + box.width + 50, box.y); // off the canvas: no hover decodes between clicks
    }
    times[scenario] = t.slice(WARMUP);
  }
  await page.close();
  return { size, times };
}


async function ortPage(browser, url, [h, w], threads) {
  const page = await browser.newPage();
  await page.goto(url);
  await page.waitForFunction(() => typeof ort !== 'undefined');
  const result = await page.evaluate(async ({ h, w, threads, walk, warmup, perObject }) => {
    ort.env.wasm.wasmPaths = '/ort/';
    ort.env.wasm.numThreads = threads;
    const session = await ort.InferenceSession.create('/model.onnx', { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
    // Any embedding times the same; a fixed pseudo-random one.
    const embedding = new Float32Array(256 * 64 * 64);
    let s = 1;
    for (let i = 0; i < embedding.length; i++) { s = (s * 1103515245 + 12345) % 2147483648; embedding[i] = s / 2147483648 - 0.5; }
    const scale = 1024 / Math.max(h, w);
    const times = {};
    for (const [scenario, restart] of [['objects', (i) => i > 0 && i % perObject === 0], ['long', () => false]]) {
    let points = [];
    let mask = new Float32Array(256 * 256);
    let hasMask = 0;
    const t = [];
    for (const [i, [fx, fy]] of walk.entries()) {
      if (restart(i)) { points = []; mask = new Float32Array(256 * 256); hasMask = 0; }
      points.push([fx * w * scale, fy * h * scale]);
      // No box: the official demo pads one (0, 0) point with label -1.
      const coords = new Float32Array([...points.flat(), 0, 0]);
      const labels = new Float32Array([...points.map(() => 1), -1]);
      const feeds = {
        image_embeddings: new ort.Tensor('float32', embedding, [1, 256, 64, 64]),
        point_coords: new ort.Tensor('float32', coords, [1, points.length + 1, 2]),
        point_labels: new ort.Tensor('float32', labels, [1, points.length + 1]),
        mask_input: new ort.Tensor('float32', mask, [1, 1, 256, 256]),
        has_mask_input: new ort.Tensor('float32', new Float32Array([hasMask]), [1]),
        orig_im_size: new ort.Tensor('float32', new Float32Array([h, w]), [2]),
      };
      const t0 = performance.now();
      const out = await session.run(feeds);
      t.push(performance.now() - t0);
      const iou = out.iou_predictions.data;
      const best = iou.indexOf(Math.max(...iou));
      mask = out.low_res_masks.data.slice(best * 65536, (best + 1) * 65536);
      hasMask = 1;
    }
    times[scenario] = t.slice(warmup);
    }
    return { times, isolated: self.crossOriginIsolated };
  }, { h, w, threads, walk, warmup: WARMUP, perObject: PER_OBJECT });
  await page.close();
  return result;
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
    scenarios: {},
  };
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
  console.log(`\n${file}`);
} finally {
  await browser.close();
  ort.server.close();
  await segany.stop();
}
