// derain review page: the zoomable viewer and the decision buttons (served by derain.web.review).
const viewer = document.getElementById('viewer'), big = document.getElementById('big');
let current = null;  // {name, frames, index, kind}
function src(c) { return c.kind === 'clean' ? `/img/${c.name}/clean` : `/img/${c.name}/${c.kind}/${c.frames[c.index]}`; }
function show() {
  big.src = src(current);
  document.getElementById('where').textContent =
    `${current.name}: ${current.kind}, frame ${current.frames[current.index]} (${current.index + 1}/${current.frames.length})`;
  document.getElementById('frame').max = current.frames.length - 1;
  document.getElementById('frame').value = current.index;
}
function zoom() {
  const z = Number(document.getElementById('zoom').value);
  document.getElementById('zoomed').textContent = z + 'x';
  if (big.naturalWidth) { big.style.width = big.naturalWidth * z + 'px'; }
}
big.addEventListener('load', zoom);
document.getElementById('zoom').addEventListener('input', zoom);
document.getElementById('frame').addEventListener('input', e => { current.index = Number(e.target.value); show(); });
document.querySelectorAll('#viewer [data-kind]').forEach(b => b.addEventListener('click', () => { current.kind = b.dataset.kind; show(); }));
document.getElementById('close').addEventListener('click', () => viewer.classList.remove('open'));
document.addEventListener('keydown', e => {
  if (!viewer.classList.contains('open')) return;
  if (e.key === 'Escape') viewer.classList.remove('open');
  if (e.key === 'ArrowRight' && current.index < current.frames.length - 1) { current.index++; show(); }
  if (e.key === 'ArrowLeft' && current.index > 0) { current.index--; show(); }
});
document.querySelectorAll('.seq .strip img').forEach(img => img.addEventListener('click', () => {
  const seq = img.closest('.seq'), frames = JSON.parse(seq.dataset.frames);
  current = {name: seq.dataset.name, frames, index: Math.max(0, frames.indexOf(img.dataset.frame)), kind: img.dataset.kind};
  viewer.classList.add('open'); show();
}));
async function refreshCounts() {
  const r = await fetch('/api/sequences'); const data = await r.json().catch(() => ({detail: r.statusText}));
  document.getElementById('counts').textContent = r.ok ? data.summary : data.detail;
}
document.querySelectorAll('.seq .actions button').forEach(b => b.addEventListener('click', async () => {
  const seq = b.closest('.seq'), message = seq.querySelector('.message'), label = seq.querySelector('.decision');
  const body = {name: seq.dataset.name, decision: b.dataset.decision};
  if (b.dataset.more) body.more = Number(b.dataset.more);
  message.textContent = '';
  const r = await fetch('/api/decision', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)});
  const answer = await r.json().catch(() => ({detail: r.statusText}));
  if (!r.ok) { message.textContent = answer.detail; return; }
  label.dataset.decision = answer.decision;
  label.textContent = answer.decision + (answer.decision === 'rebuild' ? ' +' + answer.more : '');
  await refreshCounts();
}));
