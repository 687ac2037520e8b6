// xdlm dashboard: draw the figures embedded in a page, drive the trajectory viewer, and reload the
// page's #live part while its runs are live.
"use strict";

function drawPlots(root) {
  if (typeof Plotly === "undefined") return;
  root.querySelectorAll("script[data-plot]").forEach(function (node) {
    var figure = JSON.parse(node.textContent);
    var target = document.getElementById(node.dataset.plot);
    if (target) Plotly.react(target, figure.data, figure.layout, {responsive: true, displaylogo: false});
  });
}

function setupTrajectory(root) {
  var node = root.querySelector("#trajectory-data");
  if (!node) return;
  var traj = JSON.parse(node.textContent);
  var slider = root.querySelector("#step-slider");
  var box = root.querySelector("#tokens");
  var label = root.querySelector("#step-label");
  function show(j) {
    var frame = traj.frames[j];
    box.textContent = "";
    frame.forEach(function (tok) {
      var span = document.createElement("span");
      span.className = "tok ev-" + tok.event + (tok.mask ? " mask" : "");
      span.textContent = tok.mask ? "\u2591" : tok.text;
      span.title = tok.mask ? "[MASK] (" + tok.event + ")" : tok.event;
      box.appendChild(span);
    });
    var counts = {};
    traj.events.forEach(function (e) { counts[e] = 0; });
    frame.forEach(function (tok) { counts[tok.event] += 1; });
    var what = j === 0 ? "prior draw" : traj.events.filter(function (e) { return e !== "kept"; })
      .map(function (e) { return counts[e] + " " + e; }).join(", ");
    label.textContent = "step " + j + " / " + (traj.frames.length - 1) + "  (t = " + traj.times[j].toFixed(3) + "): " + what;
    slider.value = j;
  }
  slider.addEventListener("input", function () { show(+slider.value); });
  root.querySelector("#step-prev").addEventListener("click", function () { show(Math.max(0, +slider.value - 1)); });
  root.querySelector("#step-next").addEventListener("click", function () { show(Math.min(traj.frames.length - 1, +slider.value + 1)); });
  show(+slider.value);
}

async function refresh() {
  var live = document.getElementById("live");
  var ticked = Array.from(live.querySelectorAll("input[type=checkbox]:checked")).map(function (c) { return c.value; });
  var response = await fetch(window.location.href, {headers: {"X-Dashboard-Refresh": "1"}});
  if (!response.ok) return;
  var doc = new DOMParser().parseFromString(await response.text(), "text/html");
  var fresh = doc.getElementById("live");
  if (!fresh) return;
  live.innerHTML = fresh.innerHTML;
  live.querySelectorAll("input[type=checkbox]").forEach(function (c) { c.checked = ticked.indexOf(c.value) >= 0; });
  document.body.dataset.live = doc.body.dataset.live;
  document.getElementById("live-state").textContent = doc.getElementById("live-state").textContent;
  drawPlots(live);
  setupTrajectory(live);
}

document.addEventListener("DOMContentLoaded", function () {
  drawPlots(document);
  setupTrajectory(document);
  var every = parseFloat(document.body.dataset.refresh || "10") * 1000;
  setInterval(function () { if (document.body.dataset.live === "1") refresh().catch(function () {}); }, every);
});
