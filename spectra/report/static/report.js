/* spectra report: table sorting and filtering, ESD enlarge-on-click, hover titles on chart points.
   Plain DOM, no libraries. Names from the checkpoint are only ever set with textContent. */
(function () {
  "use strict";
  var data = {};
  try { data = JSON.parse(document.getElementById("spectra-data").textContent); } catch (e) { data = {}; }

  /* ---------------------------------------------------------------- table */
  var table = document.getElementById("layer-table");
  var tbody = table ? table.tBodies[0] : null;
  var headers = table ? Array.prototype.slice.call(table.tHead.rows[0].cells) : [];

  function sortBy(index, numeric, dir) {
    var rows = Array.prototype.slice.call(tbody.rows);
    rows.sort(function (a, b) {
      var x = a.cells[index].getAttribute("data-sort"), y = b.cells[index].getAttribute("data-sort");
      if (x === "" && y === "") return 0;
      if (x === "") return 1;              // missing values always last
      if (y === "") return -1;
      var c = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y, undefined, {numeric: true});
      return dir === "ascending" ? c : -c;
    });
    var frag = document.createDocumentFragment();
    rows.forEach(function (r) { frag.appendChild(r); });
    tbody.appendChild(frag);
  }

  headers.forEach(function (th, i) {
    var btn = th.querySelector("button");
    if (!btn) return;
    btn.addEventListener("click", function () {
      var dir = th.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
      headers.forEach(function (h) { h.setAttribute("aria-sort", "none"); });
      th.setAttribute("aria-sort", dir);
      sortBy(i, th.classList.contains("num"), dir);
    });
  });

  var nameBox = document.getElementById("layer-filter");
  var kindBox = document.getElementById("kind-filter");
  var flagBox = document.getElementById("flag-filter");
  var countEl = document.getElementById("layer-count");

  function matchesFlag(tr, flag) {
    if (!flag) return true;
    var w = tr.getAttribute("data-warning"), s = tr.getAttribute("data-status");
    if (flag === "flagged") return w !== "" || s !== "success";
    return w === flag || s === flag;
  }

  function applyFilter() {
    if (!tbody) return;
    var q = (nameBox.value || "").trim().toLowerCase(), kind = kindBox.value, flag = flagBox.value, shown = 0;
    Array.prototype.forEach.call(tbody.rows, function (tr) {
      var ok = tr.getAttribute("data-name").toLowerCase().indexOf(q) !== -1 &&
        (!kind || tr.getAttribute("data-kind") === kind) && matchesFlag(tr, flag);
      tr.classList.toggle("hidden", !ok);
      if (ok) shown += 1;
    });
    countEl.textContent = shown + " of " + tbody.rows.length + " layers";
  }
  [nameBox, kindBox, flagBox].forEach(function (el) {
    if (el) el.addEventListener(el.tagName === "INPUT" ? "input" : "change", applyFilter);
  });

  function showLayer(name) {
    if (!tbody) return;
    nameBox.value = name; kindBox.value = ""; flagBox.value = "";
    applyFilter();
    var row = null;
    Array.prototype.forEach.call(tbody.rows, function (tr) { if (tr.getAttribute("data-name") === name) row = tr; });
    document.getElementById("layers").scrollIntoView();
    if (row) { row.classList.remove("flash"); void row.offsetWidth; row.classList.add("flash"); }
  }
  Array.prototype.forEach.call(document.querySelectorAll(".layer-link"), function (b) {
    b.addEventListener("click", function () { showLayer(b.getAttribute("data-layer")); });
  });

  /* ---------------------------------------------------------------- chart points */
  var labels = data.labels || {};
  function addTitle(el, name) {
    var t = document.createElementNS("http://www.w3.org/2000/svg", "title");
    t.textContent = name;
    el.appendChild(t);
    el.addEventListener("click", function () { showLayer(name); });
  }
  Object.keys(labels).forEach(function (gid) {
    var g = document.getElementById(gid), names = labels[gid];
    if (!g || !names.length) return;
    if (names.length === 1) { addTitle(g, names[0]); return; }   // one layer: the whole group
    var marks = g.querySelectorAll("use");                        // scatter: one <use> per point, in order
    for (var i = 0; i < marks.length && i < names.length; i++) addTitle(marks[i], names[i]);
  });

  /* ---------------------------------------------------------------- ESD grid */
  var dialog = document.getElementById("esd-dialog");
  Array.prototype.forEach.call(document.querySelectorAll(".esd-card"), function (card) {
    card.addEventListener("click", function () {
      document.getElementById("esd-dialog-title").textContent = card.getAttribute("data-name");
      var body = document.getElementById("esd-dialog-body");
      while (body.firstChild) body.removeChild(body.firstChild);
      body.appendChild(card.querySelector("svg").cloneNode(true));
      body.appendChild(card.querySelector(".esd-details").cloneNode(true));
      if (dialog.showModal) dialog.showModal(); else dialog.setAttribute("open", "");
    });
  });
  if (dialog) dialog.addEventListener("click", function (ev) { if (ev.target === dialog) dialog.close(); });
  var flaggedOnly = document.getElementById("esd-flagged");
  if (flaggedOnly) flaggedOnly.addEventListener("change", function () {
    Array.prototype.forEach.call(document.querySelectorAll(".esd-card"), function (card) {
      card.classList.toggle("hidden", flaggedOnly.checked && card.getAttribute("data-flagged") !== "yes");
    });
  });
  document.documentElement.setAttribute("data-script", "ran");   // the CSP let the page's own script run
})();
