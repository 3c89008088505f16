// emoray report: the index's sortable table and a session page's timeline, in sync with its
// video.  Written for this report (no library, no network); the data comes from the page's
// <script id="session-data" type="application/json"> block (pipelines/report/lanes.py).
(function () {
  "use strict";

  var SVG = "http://www.w3.org/2000/svg";
  var COLORS = {
    angry: "#d62728", disgust: "#6b8e23", fear: "#9467bd", happy: "#f2b701",
    sad: "#1f77b4", surprise: "#ff7f0e", neutral: "#8fa3ad"
  };
  var UNCERTAIN = "#ececec";

  // --- index: click a heading to sort by it (again: the other way) -----------------------
  function sortable(table) {
    var heads = table.querySelectorAll("th");
    heads.forEach(function (th, column) {
      function sort() {
        var ascending = th.getAttribute("aria-sort") !== "ascending";
        heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        var numeric = th.dataset.sort === "num";
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = a.cells[column].dataset.key, y = b.cells[column].dataset.key;
          if (x === "" || y === "") { return (x === "") - (y === ""); }  // blanks last
          var order = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
          return ascending ? order : -order;
        });
        rows.forEach(function (row) { body.appendChild(row); });
      }
      th.addEventListener("click", sort);
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter") { sort(); }
      });
    });
  }

  // --- session page ------------------------------------------------------------------------
  function el(tag, attrs, parent) {
    var node = tag.indexOf("svg:") === 0 ? document.createElementNS(SVG, tag.slice(4))
      : document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") { node.textContent = attrs[k]; } else { node.setAttribute(k, attrs[k]); }
    });
    if (parent) { parent.appendChild(node); }
    return node;
  }

  function clock(t) {
    t = Math.max(0, Math.round(t));
    var h = Math.floor(t / 3600), m = Math.floor(t / 60) % 60, s = t % 60;
    var mm = h ? String(m).padStart(2, "0") : String(m);
    return (h ? h + ":" : "") + mm + ":" + String(s).padStart(2, "0");
  }

  function timeline(data) {
    var root = document.getElementById("timeline");
    var video = document.getElementById("player");
    var duration = data.duration || 1;
    var n = data.t0.length;
    // Each bucket is drawn over its share of the axis: from its centre ± half the spacing.
    var centre = [], half = [];
    for (var i = 0; i < n; i++) {
      centre.push(data.t0[i] === null ? null : (data.t0[i] + data.t1[i]) / 2);
    }
    var spacing = n > 1 ? duration / n : (data.t1[0] - data.t0[0]);
    for (i = 0; i < n; i++) { half.push(spacing / 2); }
    var cursor = 0;

    function lane(name, height, title) {
      var row = el("div", { "class": "lane" }, root);
      var label = el("div", { "class": "label", text: name }, row);
      if (title) { label.title = title; }
      var plot = el("div", { "class": "plot", style: "height:" + height + "px" }, row);
      plot.addEventListener("click", function (e) {
        var box = plot.getBoundingClientRect();
        seek((e.clientX - box.left) / box.width * duration);
      });
      return plot;
    }

    function svg(plot, cls) {
      return el("svg:svg", { viewBox: "0 0 " + duration + " 1", preserveAspectRatio: "none",
                             "class": cls || "" }, plot);
    }

    // Runs of consecutive buckets where every series has a value.
    function runs(series) {
      var out = [], start = null;
      for (var i = 0; i <= n; i++) {
        var ok = i < n && centre[i] !== null && series.every(function (s) {
          return s[i] !== null;
        });
        if (ok && start === null) { start = i; }
        if (!ok && start !== null) { out.push([start, i]); start = null; }
      }
      return out;
    }

    function stacked(name, probs, title, none) {
      var plot = lane(name, 54, title);
      if (!probs) {
        el("span", { "class": "empty", text: none }, plot);
        return;
      }
      var g = svg(plot);
      runs(probs).forEach(function (run) {
        var below = [];
        for (var i = run[0]; i < run[1]; i++) { below.push(1); }
        data.emotions.forEach(function (emotion, k) {
          var upper = [], lower = [];
          for (var i = run[0]; i < run[1]; i++) {
            var y0 = below[i - run[0]], y1 = y0 - probs[k][i];
            below[i - run[0]] = y1;
            var x0 = centre[i] - half[i], x1 = centre[i] + half[i];
            upper.push(x0 + "," + y1, x1 + "," + y1);
            lower.unshift(x1 + "," + y0, x0 + "," + y0);
          }
          el("svg:polygon", { points: upper.concat(lower).join(" "),
                              fill: COLORS[emotion] }, g);
        });
      });
    }

    function lines(plot, series, scale) {
      var g = svg(plot);
      series.forEach(function (s) {
        runs([s.values]).forEach(function (run) {
          var points = [];
          for (var i = run[0]; i < run[1]; i++) { points.push(centre[i] + "," + scale(s.values[i])); }
          if (points.length === 1) { points.push((centre[run[0]] + half[run[0]]) + "," + scale(s.values[run[0]])); }
          el("svg:polyline", { points: points.join(" "), "class": "line " + s.cls }, g);
        });
      });
      return g;
    }

    function bands(plot, values, cls) {
      var g = svg(plot, "blocks");
      for (var i = 0; i < n; i++) {
        if (centre[i] !== null && values[i]) {
          el("svg:rect", { x: centre[i] - half[i], width: 2 * half[i], y: 0, height: 1,
                           "class": cls, "fill-opacity": Math.min(1, 0.25 + values[i]) }, g);
        }
      }
    }

    // Time axis.
    var axis = lane("time", 18);
    axis.classList.add("axis");
    var steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600];
    var step = steps.find(function (s) { return duration / s <= 10; }) || 3600;
    for (var t = 0; t <= duration; t += step) {
      var edge = t === 0 ? " first" : t + step > duration && duration - t < step / 2 ? " last" : "";
      el("span", { "class": "tick" + edge, style: "left:" + (100 * t / duration) + "%",
                   text: clock(t) }, axis);
    }

    // Tasks and moments.
    if (data.tasks.length) {
      var tasks = lane("tasks", 22);
      data.tasks.forEach(function (task) {
        el("span", { "class": "task", text: task.task, title: task.task,
                     style: "left:" + (100 * task.start / duration) + "%;width:" +
                            (100 * (task.end - task.start) / duration) + "%" }, tasks);
      });
    }
    var moments = data.moments;
    var markers = lane("moments", 26, data.has_moments ? "" :
                       "this output has no moments (findings)");
    if (!data.has_moments) {
      el("span", { "class": "empty", text: "no moments in this output" }, markers);
    } else if (!moments.length) {
      el("span", { "class": "empty", text: "no moments found in this session" }, markers);
    }
    moments.forEach(function (m, index) {
      var button = el("button", {
        "class": "moment kind-" + m.kind, "data-index": index, "data-start": m.start_s,
        title: m.kind + " at " + clock(m.start_s) + (m.evidence ? ": " + m.evidence : ""),
        style: "left:" + (100 * m.start_s / duration) + "%", text: "◆"
      }, markers);
      button.addEventListener("click", function (e) { e.stopPropagation(); seek(m.start_s); });
    });

    // The estimate: its label (grey: uncertain), fused probabilities, each source alone.
    var label = lane("dominant", 14, "most frequent label; grey: not confident enough");
    var strip = svg(label, "blocks");
    for (i = 0; i < n; i++) {
      if (centre[i] !== null) {
        el("svg:rect", { x: centre[i] - half[i], width: 2 * half[i], y: 0, height: 1,
                         fill: data.dominant[i] ? COLORS[data.dominant[i]] : UNCERTAIN }, strip);
      }
    }
    stacked("fused", data.fused, "face × voice (product rule), or the one present",
            "no estimate in any window");
    stacked("face", data.face, "the face model alone", "no face in any window");
    stacked("voice", data.voice, "the voice model alone, on the participant's speech",
            "no speech of this face in any window");
    if (data.offscreen_voice) {
      stacked("off-screen voice", data.offscreen_voice,
              "the voice model on speech no face on screen was seen speaking");
    }

    var va = Object.keys(data.va);
    if (va.length) {
      var plot = lane("valence / arousal", 60, "−1 (bottom) … +1 (top); solid: fused, " +
                      "dotted: face, dashed: voice");
      var series = va.map(function (k) {
        var cls = (k.indexOf("arousal") >= 0 ? "arousal" : "valence") +
          (k.indexOf("face_") === 0 ? " face" : k.indexOf("voice_") === 0 ? " voice" : "");
        return { values: data.va[k], cls: cls };
      });
      el("svg:line", { x1: 0, x2: duration, y1: 0.5, y2: 0.5, "class": "zero" }, svg(plot));
      lines(plot, series, function (v) { return (1 - v) / 2; });
    }
    if (data.confidence) {
      lines(lane("confidence", 30, "0 (bottom) … 1 (top)"),
            [{ values: data.confidence, cls: "confidence" }], function (v) { return 1 - v; });
    }
    if (data.speech) {
      var speech = lane("speech", 22, "share of the window with speech");
      var g = svg(speech);
      for (i = 0; i < n; i++) {
        if (centre[i] !== null && data.speech[i]) {
          el("svg:rect", { x: centre[i] - half[i], width: 2 * half[i], y: 1 - data.speech[i],
                           height: data.speech[i], "class": "speech" }, g);
        }
      }
    }
    data.speakers.forEach(function (speaker) {
      bands(lane(speaker.label + " speaking", 12), speaker.values, "speaking");
    });
    if (data.offscreen) {
      bands(lane("off-screen speech", 12), data.offscreen, "offscreen");
    }

    // The legend and the playhead over every lane.
    var legend = el("div", { "class": "legend" }, root);
    data.emotions.forEach(function (e) {
      el("span", { "class": "swatch", style: "background:" + COLORS[e] }, legend);
      el("span", { text: e + " " }, legend);
    });
    el("span", { "class": "swatch", style: "background:" + UNCERTAIN }, legend);
    el("span", { text: "uncertain · " + data.rows + " · " + data.windows + " windows drawn as " +
                 data.points + " points" }, legend);
    var overlay = el("div", { "class": "overlay" }, root);
    var playhead = el("div", { id: "playhead", "class": "playhead" }, overlay);

    function now() { return video ? video.currentTime : cursor; }
    function place() {
      playhead.style.left = (100 * Math.min(now(), duration) / duration) + "%";
      var current = -1;
      moments.forEach(function (m, k) { if (m.start_s <= now() + 0.25) { current = k; } });
      document.querySelectorAll(".moment.current, #moments tr.current").forEach(
        function (node) { node.classList.remove("current"); });
      if (current >= 0) {
        document.querySelectorAll('[data-index="' + current + '"]').forEach(
          function (node) { node.classList.add("current"); });
      }
    }
    function seek(t) {
      cursor = Math.max(0, Math.min(t, duration));
      if (video) { video.currentTime = cursor; }
      place();
    }
    function follow() {
      place();
      if (video && !video.paused && !video.ended) { window.requestAnimationFrame(follow); }
    }
    if (video) {
      ["timeupdate", "seeked", "loadedmetadata"].forEach(function (e) {
        video.addEventListener(e, place);
      });
      video.addEventListener("play", follow);
    }
    place();

    // The list of moments, each a link into the video.
    var list = document.getElementById("moments");
    if (moments.length) {
      var table = el("table", {}, list);
      var head = el("tr", {}, el("thead", {}, table));
      ["at", "kind", "score", "task", "evidence"].forEach(function (h) {
        el("th", { text: h }, head);
      });
      var body = el("tbody", {}, table);
      moments.forEach(function (m, index) {
        var row = el("tr", { "data-index": index }, body);
        var at = el("button", { "class": "seek", text: clock(m.start_s) + "–" + clock(m.end_s) },
                    el("td", {}, row));
        at.addEventListener("click", function () { seek(m.start_s); });
        el("td", { text: m.kind }, row);
        el("td", { text: m.score === null ? "" : m.score.toFixed(2) }, row);
        el("td", { text: m.task || "" }, row);
        el("td", { text: m.evidence || "" }, row);
      });
    }

    document.addEventListener("keydown", function (e) {
      if (e.target.tagName === "INPUT" || e.ctrlKey || e.metaKey || e.altKey) { return; }
      if (e.key === " " && video && e.target !== video) {  // a focused player does it itself
        e.preventDefault();
        if (video.paused) {
          var started = video.play();
          if (started) {
            started.catch(function (err) { console.info("play refused: " + err.message); });
          }
        } else { video.pause(); }
      } else if (e.key === "n" || e.key === "p") {
        var t = now(), target = null;
        moments.forEach(function (m) {
          if (e.key === "n" && m.start_s > t + 0.25 && target === null) { target = m.start_s; }
          if (e.key === "p" && m.start_s < t - 0.25) { target = m.start_s; }
        });
        if (target !== null) { seek(target); }
      }
    });
  }

  document.querySelectorAll("table.sortable").forEach(sortable);
  var block = document.getElementById("session-data");
  if (block) {
    var started = performance.now();
    timeline(JSON.parse(block.textContent));
    document.body.dataset.drawnMs = String(Math.round(performance.now() - started));
  }
  document.body.dataset.ready = "true";
})();
