// The grid map (一张图): SVG drawn from /console/map, no tile server. Cells are shaded
// by a value per cell; drag pans, the wheel and +/- zoom, a click on a cell calls onCell.
const SVG = 'http://www.w3.org/2000/svg';
const SCALE = 10000; // projected units per degree of latitude

function el(name, attrs = {}) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

export class GridMap {
  constructor(data, { label, onCell }) {
    this.data = data;
    this.onCell = onCell;
    const [minLon, minLat, maxLon, maxLat] = data.bbox;
    this.lon0 = minLon;
    this.lat0 = maxLat;
    this.kx = Math.cos(((minLat + maxLat) / 2) * Math.PI / 180) * SCALE;
    this.home = [0, 0, (maxLon - minLon) * this.kx, (maxLat - minLat) * SCALE];
    this.view = [...this.home];
    this.svg = el('svg', { class: 'grid-map', role: 'img', 'aria-label': label,
      preserveAspectRatio: 'xMidYMid meet' });
    this.cellLayer = el('g', { class: 'cells' });
    this.cellPaths = new Map();
    for (const cell of data.cells) {
      const path = el('path', { d: this.pathOf(cell.rings), 'data-cell': cell.cell_id,
        class: 's0' });
      this.cellPaths.set(cell.cell_id, path);
      this.cellLayer.append(path);
    }
    const villages = el('g', { class: 'villages' });
    for (const v of data.villages) villages.append(el('path', { d: this.pathOf(v.rings) }));
    const towns = el('g', { class: 'towns' });
    for (const town of data.towns) towns.append(el('path', { d: this.pathOf(town.rings) }));
    const fontSize = (this.home[2] / 45).toFixed(1);
    const labels = el('g', { class: 'labels', 'font-size': fontSize,
      'stroke-width': (fontSize / 8).toFixed(1) });
    for (const town of data.towns) {
      const [x, y] = this.centreOf(town.rings);
      const text = el('text', { x, y, 'text-anchor': 'middle' });
      text.textContent = town.name;
      labels.append(text);
    }
    this.hlLayer = el('g', { class: 'highlights' });
    this.svg.append(this.cellLayer, villages, towns, this.hlLayer, labels);
    this.applyView();
    this.listen();
  }

  pathOf(rings) {
    let d = '';
    for (const ring of rings) {
      ring.forEach(([lon, lat], i) => {
        const x = ((lon - this.lon0) * this.kx).toFixed(1);
        const y = ((this.lat0 - lat) * SCALE).toFixed(1);
        d += `${i ? 'L' : 'M'}${x} ${y}`;
      });
      d += 'Z';
    }
    return d;
  }

  // the middle of the largest ring's bounding box, in projected units
  centreOf(rings) {
    let best = null;
    for (const ring of rings) {
      const xs = ring.map(([lon]) => (lon - this.lon0) * this.kx);
      const ys = ring.map(([, lat]) => (this.lat0 - lat) * SCALE);
      const box = [Math.min(...xs), Math.min(...ys), Math.max(...xs), Math.max(...ys)];
      const area = (box[2] - box[0]) * (box[3] - box[1]);
      if (!best || area > best.area) best = { box, area };
    }
    const [x0, y0, x1, y1] = best.box;
    return [((x0 + x1) / 2).toFixed(1), ((y0 + y1) / 2).toFixed(1)];
  }

  applyView() { this.svg.setAttribute('viewBox', this.view.map((v) => v.toFixed(1)).join(' ')); }

  zoom(factor, cx = 0.5, cy = 0.5) {
    const [x, y, w, h] = this.view;
    const nw = Math.min(Math.max(w / factor, this.home[2] / 200), this.home[2] * 4);
    const nh = nw * (h / w);
    this.view = [x + (w - nw) * cx, y + (h - nh) * cy, nw, nh];
    this.applyView();
  }

  pan(dxFrac, dyFrac) {
    const [x, y, w, h] = this.view;
    this.view = [x + dxFrac * w, y + dyFrac * h, w, h];
    this.applyView();
  }

  reset() { this.view = [...this.home]; this.applyView(); }

  listen() {
    let drag = null;
    this.svg.addEventListener('pointerdown', (e) => {
      drag = { x: e.clientX, y: e.clientY, moved: 0 };
    });
    this.svg.addEventListener('pointermove', (e) => {
      if (!drag) return;
      const rect = this.svg.getBoundingClientRect();
      const dx = e.clientX - drag.x;
      const dy = e.clientY - drag.y;
      drag.moved += Math.abs(dx) + Math.abs(dy);
      drag.x = e.clientX;
      drag.y = e.clientY;
      if (drag.moved > 4) {
        const s = Math.max(this.view[2] / rect.width, this.view[3] / rect.height);
        this.view[0] -= dx * s;
        this.view[1] -= dy * s;
        this.applyView();
      }
    });
    this.svg.addEventListener('pointerup', (e) => {
      const moved = drag ? drag.moved : 0;
      drag = null;
      const cell = e.target.getAttribute && e.target.getAttribute('data-cell');
      if (moved <= 4 && cell) this.onCell(cell);
    });
    this.svg.addEventListener('pointerleave', () => { drag = null; });
    this.svg.addEventListener('wheel', (e) => {
      e.preventDefault();
      const rect = this.svg.getBoundingClientRect();
      this.zoom(e.deltaY < 0 ? 1.25 : 0.8, (e.clientX - rect.left) / rect.width,
        (e.clientY - rect.top) / rect.height);
    }, { passive: false });
  }

  // values: Map cell_id -> number; the class s0..s5 picks the shade.
  shade(values, breaks) {
    for (const [id, path] of this.cellPaths) {
      const v = values.get(id) || 0;
      let s = 0;
      while (s < breaks.length && v >= breaks[s]) s += 1;
      const cls = `s${s}`;
      if (path.getAttribute('class') !== cls) path.setAttribute('class', cls);
    }
  }

  highlight(cellIds) {
    this.hlLayer.replaceChildren();
    for (const id of cellIds) {
      const path = this.cellPaths.get(id);
      if (path) {
        const copy = path.cloneNode(false);
        copy.setAttribute('class', 'hl');
        copy.removeAttribute('data-cell');
        this.hlLayer.append(copy);
      }
    }
  }
}
