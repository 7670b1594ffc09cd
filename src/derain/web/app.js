// derain web page: send each chosen image to the local server, show before/after with a slider.
const results = document.getElementById('results');

function card(file) {
  const box = document.createElement('section');
  box.className = 'result';
  box.innerHTML = '<h2></h2><p class="status">deraining…</p>';
  box.querySelector('h2').textContent = file.name;
  results.prepend(box);
  return box;
}

async function derain(file) {
  const box = card(file), status = box.querySelector('.status');
  const weights = document.getElementById('weights').value;
  const url = `/api/derain?name=${encodeURIComponent(file.name)}&weights=${encodeURIComponent(weights)}`;
  const limit = Number(document.body.dataset.maxUpload);
  if (file.size > limit) {  // the server would refuse it from its size; say so without sending it
    status.textContent = `${file.name}: ${Math.round(file.size / 2 ** 20)} MB is over this page's ` +
      `${limit / 2 ** 20} MB limit; use derain run for large files`;
    status.classList.add('error'); return;
  }
  let r;
  try {
    // an image type (or raw bytes): the server takes no form posts, which other sites could send
    const type = file.type.startsWith('image/') ? file.type : 'application/octet-stream';
    r = await fetch(url, {method: 'POST', body: file, headers: {'Content-Type': type}});
  } catch (err) {
    status.textContent = 'the derain server did not answer: ' + err; status.classList.add('error'); return;
  }
  if (!r.ok) {
    const answer = await r.json().catch(() => ({detail: r.statusText}));
    status.textContent = answer.detail; status.classList.add('error'); return;
  }
  const out = URL.createObjectURL(await r.blob());
  status.textContent = `${weights}: ${Number(r.headers.get('X-Derain-Seconds')).toFixed(2)} s`;
  const compare = document.createElement('div');
  compare.className = 'compare';
  compare.innerHTML = '<img class="before" alt="rainy"><img class="after" alt="derained">' +
    '<div class="labels"><span>rainy</span><span>derained</span></div>' +
    '<input type="range" min="0" max="100" value="50" aria-label="before / after">';
  compare.querySelector('.before').src = URL.createObjectURL(file);
  compare.querySelector('.after').src = out;
  compare.querySelector('input').addEventListener('input', e => {
    compare.querySelector('.after').style.clipPath = `inset(0 0 0 ${e.target.value}%)`;
  });
  const link = document.createElement('a');
  link.href = out; link.download = file.name.replace(/\.[^.]*$/, '') + '_derained.png';
  link.textContent = 'download ' + link.download;
  box.append(compare, document.createElement('br'), link);
}

async function derainAll(files) { for (const f of files) await derain(f); }

document.getElementById('files').addEventListener('change', e => derainAll([...e.target.files]));
const drop = document.getElementById('drop');
drop.addEventListener('dragover', e => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', e => { e.preventDefault(); drop.classList.remove('over'); derainAll([...e.dataTransfer.files]); });
