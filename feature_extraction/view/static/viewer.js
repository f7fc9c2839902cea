// crcrs view: the patient list, the deep-zoom slide, its overlays, tile scores and top tiles.
// Every number comes from data.js and slides/<key>.js (written by the Python side from the
// project's own scores); ids are written with textContent only, never as HTML.
(function () {
  "use strict";
  const data = window.CRCRS_VIEW;
  const $ = (id) => document.getElementById(id);
  const state = { key: null, slide: null, overlay: null, mark: null, kind: "attention" };
  const payloads = {};
  const waiting = {};

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }
  function fmt(v, signed) {
    if (v === null || v === undefined) return "n/a";
    const s = Math.abs(v) >= 1e-3 || v === 0 ? v.toFixed(4) : v.toExponential(3);
    return signed && v > 0 ? "+" + s : s;
  }
  function message(text) {
    const box = $("message");
    box.textContent = text || "";
    box.hidden = !text;
  }

  const viewer = OpenSeadragon({
    id: "viewer",
    prefixUrl: "static/openseadragon/images/",
    drawer: "canvas",
    imageSmoothingEnabled: false,
    crossOriginPolicy: false,
    showNavigator: false,
    gestureSettingsMouse: { clickToZoom: false },
    maxZoomPixelRatio: 4,
  });

  // -- the patient list --------------------------------------------------------------------
  function outcome(p) {
    if (p.time === null || p.event === null) return "unknown";
    return `${fmt(p.time).replace(/\.?0+$/, "")} ${data.time_unit || ""}, ${p.event ? "event" : "censored"}`;
  }
  function buildList() {
    const body = document.querySelector("#patients tbody");
    const keyOf = {};
    for (const [key, s] of Object.entries(data.slides)) keyOf[s.patient_id + "\u0000" + s.slide_id] = key;
    for (const p of data.patients) {
      const row = el("tr", undefined, p.risk_group);
      row.append(el("td", p.patient_id), el("td", fmt(p.crcrs, true)));
      row.append(el("td", p.risk_group, "group"), el("td", outcome(p)));
      body.append(row);
      const slides = el("tr");
      const cell = el("td");
      cell.colSpan = 4;
      for (const sid of p.slides) {
        const key = keyOf[p.patient_id + "\u0000" + sid];
        const button = el("button", sid);
        button.dataset.key = key;
        button.addEventListener("click", () => openSlide(key));
        cell.append(button);
      }
      slides.append(cell);
      body.append(slides);
    }
  }

  // -- slide data (a script, so that file:// pages load it too) ---------------------------
  window.crcrsSlide = function (payload) {
    payloads[payload.key] = payload;
    if (waiting[payload.key]) waiting[payload.key](payload);
  };
  function slidePayload(key) {
    if (payloads[key]) return Promise.resolve(payloads[key]);
    return new Promise((resolve, reject) => {
      waiting[key] = resolve;
      const tag = document.createElement("script");
      tag.src = `slides/${key}.js`;
      tag.onerror = () => reject(new Error(`slide data for ${key} did not load`));
      document.head.append(tag);
    });
  }

  async function openSlide(key, then) {
    const info = data.slides[key];
    document.querySelectorAll("#patients button").forEach((b) => b.classList.toggle("current", b.dataset.key === key));
    $("title").textContent = `${info.patient_id} / ${info.slide_id}`;
    document.body.dataset.ready = "";
    message("");
    state.key = key;
    state.slide = null;
    state.overlay = null;
    clearMark();
    $("legend").replaceChildren();
    $("top-strip").replaceChildren();
    $("tile-info").replaceChildren(el("p", "Click a tile to see its scores.", "note"));
    if (info.error) {
      viewer.close();
      message(info.error);
      return;
    }
    let payload;
    try {
      payload = await slidePayload(key);
    } catch (err) {
      message(err.message);
      return;
    }
    if (payload.error) message(payload.error);
    state.slide = payload;
    viewer.addOnceHandler("open", () => {
      showOverlay();
      showTop(payload);
      if (then) then();
    });
    viewer.open(info.dzi);
  }

  // -- overlays ----------------------------------------------------------------------------
  function showOverlay() {
    const key = state.key;
    const kind = $("kind").value;
    if (state.overlay) {
      viewer.world.removeItem(state.overlay);
      state.overlay = null;
    }
    showLegend(kind);
    if (kind === "none" || !state.slide || state.slide.error) {
      document.body.dataset.ready = key + ":none";
      return;
    }
    viewer.addTiledImage({
      tileSource: { type: "image", url: `overlay/${key}/${kind}.png`, buildPyramid: false },
      x: 0,
      y: 0,
      width: state.slide.overlay_width,
      opacity: Number($("opacity").value),
      success: (event) => {
        if (state.key !== key) return viewer.world.removeItem(event.item);
        state.overlay = event.item;
        const done = () => (document.body.dataset.ready = key + ":" + kind);
        if (event.item.getFullyLoaded()) done();
        else event.item.addOnceHandler("fully-loaded-change", done);
      },
      error: () => message(`the ${kind} overlay did not load`),
    });
  }
  function showLegend(kind) {
    const box = $("legend");
    box.replaceChildren();
    if (kind === "none" || !state.slide || !state.slide.legends) return;
    if (kind === "phenotype") {
      data.phenotypes.classes.forEach((name, k) => {
        const swatch = el("span", undefined, "swatch");
        swatch.style.background = data.phenotypes.colours[k];
        box.append(swatch, el("span", name));
      });
      box.append(el("span", "tile phenotypes from the table given (--phenotypes)", "note"));
      return;
    }
    const lg = state.slide.legends[kind];
    const bar = el("span", undefined, "bar");
    bar.style.background = `linear-gradient(to right, ${lg.colours.join(", ")})`;
    const unit = kind === "attention" ? " x uniform" : "";
    box.append(el("span", fmt(lg.low, kind === "contribution")), bar, el("span", fmt(lg.high, kind === "contribution") + unit));
    const note = `${lg.meaning}; colour scale: percentiles ${lg.percentiles.join("-")} of the patient's tiles`;
    box.append(el("span", note, "note"));
    if (kind === "contribution" && state.slide.reference !== null) {
      box.append(el("span", `reference ${fmt(state.slide.reference, true)} (CRCRS = reference + sum of contributions)`, "note reference"));
    }
  }
  $("kind").addEventListener("change", showOverlay);
  $("opacity").addEventListener("input", () => {
    if (state.overlay) state.overlay.setOpacity(Number($("opacity").value));
  });

  // -- a tile's scores ---------------------------------------------------------------------
  function tileAt(x0, y0) {
    const edge = state.slide.tile_edge;
    const tiles = state.slide.tiles;
    for (let i = 0; i < tiles.length; i++) {
      const t = tiles[i];
      if (x0 >= t[0] && x0 < t[0] + edge && y0 >= t[1] && y0 < t[1] + edge) return i;
    }
    return null;
  }
  function clearMark() {
    if (state.mark) viewer.removeOverlay(state.mark);
    state.mark = null;
  }
  function showTile(i) {
    const s = state.slide;
    const box = $("tile-info");
    box.replaceChildren();
    clearMark();
    if (i === null) {
      box.append(el("p", "No tile of the model here.", "note"));
      return;
    }
    const t = s.tiles[i];
    const w = data.slides[state.key].width;
    state.mark = el("div", undefined, "tile-mark");
    viewer.addOverlay(state.mark, new OpenSeadragon.Rect(t[0] / w, t[1] / w, s.tile_edge / w, s.tile_edge / w));
    const rows = [
      ["slide", s.slide_id], ["tile (feature row)", t[2]], ["level-0 x, y", `${t[0]}, ${t[1]}`],
      ["attention", fmt(t[3]), t[3]], ["attention x uniform", fmt(t[3] * s.n_patient_tiles), t[3] * s.n_patient_tiles],
      ["contribution", fmt(t[4], true), t[4]], ["patient CRCRS", fmt(s.crcrs, true), s.crcrs],
    ];
    if (s.reference !== null) rows.push(["reference", fmt(s.reference, true), s.reference]);
    if (s.phenotype) {
      const k = s.phenotype[i];
      rows.push(["phenotype", k >= 0 ? data.phenotypes.classes[k] : "none given"]);
    }
    const table = el("table");
    for (const [name, text, value] of rows) {
      const row = el("tr");
      const cell = el("td", text);
      cell.dataset.name = name;
      if (value !== undefined) cell.dataset.value = String(value);
      row.append(el("th", name), cell);
      table.append(row);
    }
    box.append(table);
  }
  viewer.addHandler("canvas-click", (event) => {
    if (!event.quick || !state.slide || state.slide.error) return;
    const p = viewer.viewport.pointFromPixel(event.position);
    const w = data.slides[state.key].width;
    showTile(tileAt(p.x * w, p.y * w));
  });

  // -- the top tiles -----------------------------------------------------------------------
  function goTo(tile) {
    const jump = () => {
      const w = data.slides[state.key].width;
      const e = state.slide.tile_edge;
      viewer.viewport.fitBounds(new OpenSeadragon.Rect((tile.x - e) / w, (tile.y - e) / w, (3 * e) / w, (3 * e) / w));
      showTile(tileAt(tile.x + e / 2, tile.y + e / 2));
    };
    if (tile.key === state.key) jump();
    else openSlide(tile.key, jump);
  }
  function showTop(payload) {
    const strip = $("top-strip");
    strip.replaceChildren();
    for (const [i, tile] of (payload.top || []).entries()) {
      if (!tile.key) continue;
      const fig = el("figure");
      const img = el("img");
      img.src = `region/${tile.key}/${tile.bag_index}.jpg`;
      img.alt = `top tile ${i + 1}`;
      const cap = el("figcaption", `#${i + 1} ${tile.slide_id}\natt ${fmt(tile.attention * payload.n_patient_tiles)}x contr ${fmt(tile.contribution, true)}`);
      fig.append(img, cap);
      fig.addEventListener("click", () => goTo(tile));
      strip.append(fig);
    }
  }

  if (data.phenotypes) {
    const option = el("option", "phenotype");
    option.value = "phenotype";
    $("kind").append(option);
  }
  buildList();
  window.crcrsView = { viewer, state, openSlide, showTile, tileAt };
  const first = Object.keys(data.slides)[0];
  if (first) openSlide(first);
})();
