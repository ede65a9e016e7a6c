// The example labeling tool around two <segany-segmenter> widgets: pick an image for the focused
// pane from the list, segment, keep objects with the chosen class; annotations are kept as one
// COCO dataset in localStorage (saved on every commit and with "Save") and shown again whenever
// an image is opened.
const STORE = 'segany-example-coco';
const panes = [...document.querySelectorAll('.pane')];
const widgets = panes.map((p) => p.querySelector('segany-segmenter'));
const classes = [...document.querySelectorAll('#class option')].map((o) => o.textContent);
let focused = 0;
/** Per pane: the image shown and the class of each object the widget kept (by its id). */
const state = panes.map(() => ({ file: null, categories: new Map() }));

function load() {
  try {
    const coco = JSON.parse(localStorage.getItem(STORE));
    if (coco?.images && coco?.annotations) return coco;
  } catch { /* start afresh */ }
  return { images: [], annotations: [], categories: classes.map((name, i) => ({ id: i + 1, name })) };
}
let coco = load();

function log(text) {
  const el = document.getElementById('log');
  el.textContent = `${text}\n${el.textContent}`.slice(0, 4000);
}

function imageEntry(file, width, height) {
  let image = coco.images.find((i) => i.file_name === file);
  if (!image) {
    image = { id: coco.images.reduce((m, i) => Math.max(m, i.id), 0) + 1, file_name: file, width, height };
    coco.images.push(image);
  }
  return image;
}

/** The pane's objects become its image's annotations, and everything is stored. */
async function save(pane) {
  const { file, categories } = state[pane];
  if (!file) return;
  const image = coco.images.find((i) => i.file_name === file);
  if (!image) return;
  const objects = await widgets[pane].getObjects();
  let next = coco.annotations.reduce((m, a) => Math.max(m, a.id), 0) + 1;
  coco.annotations = coco.annotations.filter((a) => a.image_id !== image.id);
  for (const o of objects) {
    const name = categories.get(o.id) ?? (classes.includes(o.name) ? o.name : document.getElementById('class').value);
    coco.annotations.push({
      id: next++, image_id: image.id, category_id: classes.indexOf(name) + 1,
      segmentation: o.segmentation, area: o.area, bbox: o.bbox, score: o.score, iscrowd: 0,
    });
  }
  localStorage.setItem(STORE, JSON.stringify(coco));
  document.getElementById('count').textContent = `${coco.annotations.length} annotations`;
}

function open(pane, file) {
  state[pane] = { file, categories: new Map(), restored: false };
  panes[pane].querySelector('.name').textContent = file.split('/').pop();
  widgets[pane].setImage(file);
  markActive();
}

/** The image list shows which image the focused pane has. */
function markActive() {
  for (const b of document.querySelectorAll('#images button')) b.classList.toggle('active', b.dataset.src === state[focused].file);
}

widgets.forEach((w, pane) => {
  w.addEventListener('ready', async (e) => {
    log(`${w.id}: ready ${e.detail.width}×${e.detail.height}`);
    const image = imageEntry(state[pane].file, e.detail.width, e.detail.height);
    // Show what was saved for this image before, named by class.
    const saved = coco.annotations.filter((a) => a.image_id === image.id);
    if (saved.length && !state[pane].restored) {
      state[pane].restored = true;
      await w.loadObjects(saved.map((a) => ({
        name: coco.categories.find((c) => c.id === a.category_id)?.name ?? 'other',
        score: a.score ?? 0, segmentation: a.segmentation,
      })));
      log(`${w.id}: ${saved.length} saved annotations shown`);
    }
  });
  w.addEventListener('mask-change', (e) => log(`${w.id}: mask ${e.detail.selected ?? '–'} area ${e.detail.area}`));
  w.addEventListener('object-commit', (e) => {
    state[pane].categories.set(e.detail.id, document.getElementById('class').value);
    log(`${w.id}: kept object ${e.detail.id} (${e.detail.area} px)`);
    save(pane);
  });
  w.addEventListener('error', (e) => log(`${w.id}: error ${e.detail.message}`));
  panes[pane].addEventListener('pointerdown', () => {
    focused = pane;
    panes.forEach((p, i) => p.classList.toggle('focused', i === pane));
    markActive();
  });
});

document.getElementById('images').addEventListener('click', (e) => {
  const src = e.target.closest('button')?.dataset.src;
  if (src) open(focused, src);
});
document.getElementById('add').addEventListener('click', () => widgets[focused].commit(document.getElementById('class').value));
document.getElementById('save').addEventListener('click', () => Promise.all(panes.map((_, i) => save(i))));
document.getElementById('download').addEventListener('click', () => {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob([JSON.stringify(coco, null, 2)], { type: 'application/json' }));
  a.download = 'annotations.coco.json';
  a.click();
});

document.getElementById('count').textContent = `${coco.annotations.length} annotations`;
open(1, 'examples/truck.jpg');
open(0, 'examples/dog.jpg');
