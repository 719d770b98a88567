// medaudit slice browser. Reads the JSON data block and builds every element with DOM APIs; data
// only ever reaches the page through textContent / attributes, never through innerHTML.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("audit-data").textContent);
  var C = data.cases;
  var reportOf = new Map(), metaOf = new Map(), thumbOf = new Map(), slicesOf = new Map();
  data.reports.forEach(function (r) { reportOf.set(r[0], r[1]); metaOf.set(r[0], r[2]); });
  data.thumbs.forEach(function (t) { thumbOf.set(t[0], t[1]); });
  var byRank = new Map();
  data.slices.forEach(function (s) {
    s.markOf = new Map(s.marks.map(function (m) { return [m[0], m[1]]; }));
    byRank.set(String(s.rank), s);
    s.rows.forEach(function (p) {
      if (!slicesOf.has(p)) slicesOf.set(p, []);
      slicesOf.get(p).push(s.rank);
    });
  });

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function button(cls, text, onclick) {
    var b = el("button", cls, text);
    b.type = "button";
    b.addEventListener("click", onclick);
    return b;
  }
  // text with [start, end) spans wrapped in <mark>, built from text nodes only
  function markedText(parent, text, spans) {
    var at = 0;
    (spans || []).forEach(function (sp) {
      if (sp[0] < at) return;
      parent.appendChild(document.createTextNode(text.slice(at, sp[0])));
      parent.appendChild(el("mark", null, text.slice(sp[0], sp[1])));
      at = sp[1];
    });
    parent.appendChild(document.createTextNode(text.slice(at)));
  }

  // ---- slice table: sort and filter ------------------------------------------------------------
  var tbody = document.querySelector("#slice-table tbody");
  var rows = Array.prototype.slice.call(tbody.querySelectorAll("tr.slice-row"));
  var sortKey = "rank", sortDir = 1;
  function num(row, key) {
    var v = row.dataset[key];
    return v === "" || v === undefined ? NaN : Number(v);
  }
  function sortRows() {
    rows.sort(function (a, b) {
      var x = num(a, sortKey), y = num(b, sortKey);
      if (isNaN(x) && isNaN(y)) return num(a, "rank") - num(b, "rank");
      if (isNaN(x)) return 1;  // missing values last in both directions
      if (isNaN(y)) return -1;
      return (x - y) * sortDir || num(a, "rank") - num(b, "rank");
    });
    rows.forEach(function (r) { tbody.appendChild(r); });
    document.querySelectorAll("#slice-table th[data-key]").forEach(function (th) {
      th.setAttribute("aria-sort", th.dataset.key === sortKey ? (sortDir > 0 ? "ascending" : "descending") : "none");
    });
  }
  document.querySelectorAll("#slice-table th[data-key] button").forEach(function (b) {
    b.addEventListener("click", function () {
      var key = b.parentNode.dataset.key;
      sortDir = key === sortKey ? -sortDir : (key === "rank" ? 1 : -1);
      sortKey = key;
      sortRows();
    });
  });
  var fTerm = document.getElementById("filter-term");
  var fSize = document.getElementById("filter-size");
  var fErr = document.getElementById("filter-error");
  var fCount = document.getElementById("filter-count");
  function applyFilter() {
    var term = fTerm.value.trim().toLowerCase();
    var minSize = Number(fSize.value) || 0, minErr = Number(fErr.value) || 0, shown = 0;
    rows.forEach(function (r) {
      var terms = JSON.parse(r.dataset.terms);
      var ok = num(r, "size") >= minSize && (minErr <= 0 || num(r, "error") >= minErr);
      if (term) ok = ok && terms.some(function (t) { return t.toLowerCase().indexOf(term) >= 0; });
      r.hidden = !ok;
      if (ok) shown++;
    });
    fCount.textContent = shown + " of " + rows.length + " slices shown";
  }
  [fTerm, fSize, fErr].forEach(function (i) { i.addEventListener("input", applyFilter); });
  document.querySelectorAll(".chip[data-term]").forEach(function (c) {
    c.addEventListener("click", function () {
      fTerm.value = c.dataset.term;
      applyFilter();
      document.getElementById("slices").scrollIntoView();
    });
  });

  // ---- one slice at a time, with its members paged -----------------------------------------------
  var details = document.querySelectorAll("div.slice[data-rank]");
  var pages = new Map();
  function memberCard(s, i) {
    var p = s.rows[i], card = el("div", "member");
    card.dataset.caseId = C.id[p];
    var thumb = thumbOf.get(p);
    if (thumb) {
      var img = el("img", "thumb");
      img.alt = "case " + C.id[p];
      img.src = thumb;
      card.appendChild(img);
    } else {
      card.appendChild(el("div", "thumb none", "no thumbnail"));
    }
    var body = el("div", "member-body"), head = el("div", "member-head");
    var err = C.label[p] !== C.pred[p];
    head.appendChild(el("span", "rankno", "#" + (i + 1)));
    head.appendChild(el("strong", "case-id", C.id[p]));
    head.appendChild(el("span", "badge " + (err ? "err" : "ok"), err ? "error" : "correct"));
    head.appendChild(el("span", "field", "label " + C.label[p]));
    head.appendChild(el("span", "field", "prediction " + C.pred[p] + " (p = " + (C.prob[p] === null ? "–" : C.prob[p].toFixed(2)) + ")"));
    head.appendChild(el("span", "field", "membership " + (s.score[i] / 1000).toFixed(3)));
    body.appendChild(head);
    var meta = metaOf.get(p);
    if (meta && meta.length) {
      body.appendChild(el("div", "meta", data.meta_columns.map(function (c, j) {
        return c + ": " + (meta[j] === null ? "–" : meta[j]);
      }).join(" · ")));
    }
    if (reportOf.has(p)) {
      var rep = el("p", "report");
      markedText(rep, reportOf.get(p), s.markOf.get(p));
      body.appendChild(rep);
    } else {
      body.appendChild(el("p", "muted", "report text not embedded (only the best " +
        data.limits.reports_per_slice + " members of each slice when the audit has more than " +
        data.limits.all_reports_up_to + " cases)"));
    }
    card.appendChild(body);
    return card;
  }
  function renderPage(rank) {
    var s = byRank.get(rank), st = pages.get(rank);
    var box = document.querySelector('div.slice[data-rank="' + rank + '"] .members');
    var n = s.rows.length, last = Math.max(0, Math.ceil(n / st.size) - 1);
    st.page = Math.min(Math.max(st.page, 0), last);
    box.replaceChildren();
    var pager = el("div", "pager");
    pager.appendChild(button("first", "« first", function () { st.page = 0; renderPage(rank); }));
    pager.appendChild(button("prev", "‹ previous", function () { st.page--; renderPage(rank); }));
    var from = n ? st.page * st.size + 1 : 0, to = Math.min(n, (st.page + 1) * st.size);
    pager.appendChild(el("span", "status", "page " + (st.page + 1) + " of " + (last + 1) +
      " · cases " + from + "–" + to + " of " + n));
    pager.appendChild(button("next", "next ›", function () { st.page++; renderPage(rank); }));
    pager.appendChild(button("last", "last »", function () { st.page = last; renderPage(rank); }));
    var sel = el("select", "page-size");
    [10, 25, 50, 100].forEach(function (k) {
      var o = el("option", null, k + " per page");
      o.value = String(k);
      o.selected = k === st.size;
      sel.appendChild(o);
    });
    sel.addEventListener("change", function () { st.size = Number(sel.value); st.page = 0; renderPage(rank); });
    pager.appendChild(sel);
    pager.querySelector(".first").disabled = pager.querySelector(".prev").disabled = st.page === 0;
    pager.querySelector(".next").disabled = pager.querySelector(".last").disabled = st.page === last;
    box.appendChild(pager);
    var list = el("div", "member-list");
    for (var i = st.page * st.size; i < to; i++) list.appendChild(memberCard(s, i));
    if (!n) list.appendChild(el("p", "muted", "no case to show"));
    box.appendChild(list);
  }
  function openSlice(rank, scroll) {
    details.forEach(function (d) { d.hidden = d.dataset.rank !== rank; });
    rows.forEach(function (r) { r.classList.toggle("open", r.dataset.rank === rank); });
    if (!byRank.has(rank)) return;
    if (!pages.has(rank)) pages.set(rank, {page: 0, size: 10});
    renderPage(rank);
    if (scroll) document.getElementById("slice-" + rank).scrollIntoView();
  }
  rows.forEach(function (r) {
    r.addEventListener("click", function (ev) {
      ev.preventDefault();
      openSlice(r.dataset.rank, true);
      history.replaceState(null, "", "#slice-" + r.dataset.rank);
    });
  });

  // ---- search over the embedded report text ------------------------------------------------------
  var box = document.getElementById("search-box"), out = document.getElementById("search-results");
  var MAX_HITS = 100;
  // a case-insensitive match found in the report text itself, so its offsets are the text's: the
  // offsets in text.toLowerCase() differ where lower-casing changes a length ("İ" becomes two units)
  function escapeRe(s) { return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"); }
  // a snippet bound moved off the middle of a surrogate pair (an emoji is two UTF-16 code units)
  function low(text, i) { var c = text.charCodeAt(i); return c >= 0xDC00 && c <= 0xDFFF; }
  function search() {
    var q = box.value.trim();
    out.replaceChildren();
    if (q.length < 2) return;
    var rx = new RegExp(escapeRe(q), "i"), hits = [];
    data.reports.forEach(function (r) {
      var m = rx.exec(r[1]);
      if (m) hits.push([r[0], r[1], m.index, m[0].length]);
    });
    out.appendChild(el("p", "muted hit-count", hits.length + " report" + (hits.length === 1 ? "" : "s") +
      " match" + (hits.length > MAX_HITS ? " (first " + MAX_HITS + " shown)" : "")));
    var ul = el("ul", "hits");
    hits.slice(0, MAX_HITS).forEach(function (h) {
      var li = el("li", "hit");
      li.appendChild(el("strong", "case-id", C.id[h[0]]));
      li.appendChild(document.createTextNode(" label " + C.label[h[0]] + ", prediction " + C.pred[h[0]] + " · "));
      var ranks = slicesOf.get(h[0]) || [];
      if (!ranks.length) li.appendChild(el("span", "muted", "in no slice"));
      ranks.forEach(function (rank) {
        li.appendChild(button("goto", "slice " + rank, function () { openSlice(String(rank), true); }));
      });
      var from = Math.max(0, h[2] - 80), to = Math.min(h[1].length, h[2] + h[3] + 80);
      if (from > 0 && low(h[1], from)) from--;
      if (to < h[1].length && low(h[1], to)) to++;
      var snip = el("div", "snippet");
      markedText(snip, (from ? "…" : "") + h[1].slice(from, to) + (to < h[1].length ? "…" : ""),
        [[h[2] - from + (from ? 1 : 0), h[2] - from + (from ? 1 : 0) + h[3]]]);
      li.appendChild(snip);
      ul.appendChild(li);
    });
    out.appendChild(ul);
  }
  box.addEventListener("input", search);

  sortRows();
  applyFilter();
  var m = /^#slice-(\d+)$/.exec(location.hash);
  openSlice(m && byRank.has(m[1]) ? m[1] : (rows.length ? rows[0].dataset.rank : ""), false);
  document.body.dataset.ready = "1";
})();
