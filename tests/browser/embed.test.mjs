// The README's "Embed in your labeling tool" snippet, as a user pastes it: served from another
// origin than segany's, pointed at the real server.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { startServer, launch, decodeRle, ROOT } from './harness.mjs';

async function readmeSnippet() {
  const readme = await readFile(path.join(ROOT, 'README.md'), 'utf8');
  const section = readme.split('## Embed in your labeling tool')[1];
  assert.ok(section, 'README has the section');
  const m = section.match(/```html\n([\s\S]*?)```/);
  assert.ok(m, 'the section has an html example');
  return m[1];
}

describe("the README's embedding example", () => {
  let segany, host, browser;

  before(async () => {
    segany = await startServer();
    const html = (await readmeSnippet()).replaceAll('http://127.0.0.1:8080', segany.url);
    host = createServer((req, res) => {
      res.setHeader('content-type', 'text/html; charset=utf-8');
      res.end(`<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,"><body>${html}</body>`);
    });
    await new Promise((r) => host.listen(0, '127.0.0.1', r));
    browser = await launch();
  });

  after(async () => {
    await browser?.close();
    host?.close();
    await segany?.stop();
  });

  it('segments and commits from another origin', async () => {
    const page = await browser.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    await page.addInitScript(() => {
      window.__commits = [];
      document.addEventListener('object-commit', (e) => window.__commits.push(e.detail));
      document.addEventListener('error', (e) => window.__commits.push({ error: e.detail?.message }));
    });
    // localhost vs 127.0.0.1: a different origin for the browser.
    await page.goto(`http://localhost:${host.address().port}/`);
    await page.waitForFunction(() => window.__commits.length > 0, null, { timeout: 120_000 });
    const [object] = await page.evaluate(() => window.__commits);
    assert.equal(object.error, undefined, object.error);
    assert.equal(object.name, 'dog');
    assert.deepEqual(object.segmentation.size, [320, 480]);
    const mask = decodeRle(object.segmentation);
    assert.equal(mask.reduce((a, v) => a + v, 0), object.area);
    assert.deepEqual(errors, []);
  });
});
