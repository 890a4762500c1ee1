// The library's upload, enhanced: a drop zone, one request per file with its own progress bar,
// and each file's result as soon as it is known (a ZIP gives one row per member). Without this
// script the form posts every file at once and the server answers with a page of results.
// Every name and reason from the server is set as text (textContent), never as markup.
(function () {
  "use strict";
  var form = document.getElementById("upload-form");
  if (!form || !window.XMLHttpRequest || !window.FormData) return;
  var input = document.getElementById("files");
  var zone = document.getElementById("dropzone");
  var list = document.getElementById("upload-results");
  var grid = document.getElementById("library-grid");
  var csrf = form.querySelector("input[name=csrf_token]").value;
  var uploadUrl = form.getAttribute("data-upload-url");
  var libraryUrl = form.getAttribute("data-library-url");
  var words = { created: "new", existing: "already in your library", rejected: "refused" };
  var queue = [];
  var busy = false;

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function link(href, text) {
    var a = el("a", "", text);
    a.href = href;
    return a;
  }

  function imageUrl(id) { return libraryUrl + "/" + encodeURIComponent(id); }

  function showResult(row, r) {
    row.className = "result status-" + r.status;
    row.setAttribute("data-status", r.status);
    row.textContent = "";
    row.appendChild(el("span", "filename", r.filename));
    row.appendChild(document.createTextNode(": "));
    row.appendChild(el("strong", "", words[r.status] || r.status));
    if (r.reason) {
      row.appendChild(document.createTextNode(": "));
      row.appendChild(el("span", "reason", r.reason));
    }
    if (r.image_id && r.status !== "rejected") {
      row.appendChild(document.createTextNode(" · "));
      row.appendChild(link(imageUrl(r.image_id), r.image_id));
    }
    if (r.near_duplicate_of) {
      row.appendChild(document.createTextNode(" · looks like your image "));
      row.appendChild(link(imageUrl(r.near_duplicate_of), r.near_duplicate_of));
    }
    if (r.status === "created") addToGrid(r);
  }

  function addToGrid(r) {
    if (!grid || document.getElementById("image-" + r.image_id)) return;
    var fig = el("figure", "library-item");
    fig.id = "image-" + r.image_id;
    var a = link(imageUrl(r.image_id));
    var img = el("img");
    img.src = imageUrl(r.image_id) + "/thumb";
    img.alt = "";
    img.id = "thumb-" + r.image_id;
    a.appendChild(img);
    fig.appendChild(a);
    var cap = el("figcaption");
    cap.appendChild(link(imageUrl(r.image_id), r.image_id));
    cap.appendChild(el("span", "badge status-active", "active"));
    fig.appendChild(cap);
    grid.insertBefore(fig, grid.firstChild);
    var summary = document.getElementById("library-summary");
    if (summary) {
      var total = parseInt(summary.getAttribute("data-total") || "0", 10) + 1;
      summary.setAttribute("data-total", String(total));
      summary.textContent = total + (total === 1 ? " image" : " images") + ", newest first";
    }
  }

  function failed(row, name, text) {
    showResult(row, { filename: name, status: "rejected", reason: text });
  }

  function send(file) {
    var row = el("li", "result pending");
    row.appendChild(el("span", "filename", file.name));
    var bar = el("progress");
    bar.max = 100;
    bar.value = 0;
    row.appendChild(bar);
    list.appendChild(row);
    queue.push({ file: file, row: row, bar: bar });
    next();
  }

  // One upload at a time: the server checks each file in turn anyway, and the bars stay honest.
  function next() {
    if (busy || !queue.length) return;
    busy = true;
    var job = queue.shift();
    var body = new FormData();
    body.append("csrf_token", csrf);
    body.append("file", job.file, job.file.name);
    var xhr = new XMLHttpRequest();
    xhr.open("POST", uploadUrl);
    xhr.setRequestHeader("X-CSRF-Token", csrf);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.onprogress = function (e) {
      if (e.lengthComputable) job.bar.value = Math.round(100 * e.loaded / e.total);
    };
    xhr.onload = function () {
      var data = null;
      try { data = JSON.parse(xhr.responseText); } catch (err) { data = null; }
      if (xhr.status === 200 && data && data.results) {
        if (!data.results.length) failed(job.row, job.file.name, "the server received no file");
        data.results.forEach(function (r, i) {
          var row = job.row;
          if (i > 0) {  // the further members of a ZIP
            row = el("li", "result");
            job.row.parentNode.insertBefore(row, job.row.nextSibling);
          }
          showResult(row, r);
        });
      } else {
        failed(job.row, job.file.name, (data && data.detail) || ("the server answered " + xhr.status));
      }
      busy = false;
      next();
    };
    xhr.onerror = function () {
      failed(job.row, job.file.name, "the upload was interrupted; try again");
      busy = false;
      next();
    };
    xhr.send(body);
  }

  function sendAll(files) {
    for (var i = 0; i < files.length; i++) send(files[i]);
  }

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    sendAll(input.files);
    input.value = "";
  });
  input.addEventListener("change", function () {
    sendAll(input.files);
    input.value = "";
  });
  var hint = zone.querySelector(".drop-hint");
  if (hint) hint.hidden = false;
  zone.addEventListener("dragover", function (e) {
    e.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", function () { zone.classList.remove("over"); });
  zone.addEventListener("drop", function (e) {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer && e.dataTransfer.files) sendAll(e.dataTransfer.files);
  });
})();
