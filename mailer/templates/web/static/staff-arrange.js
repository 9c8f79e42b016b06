// The story order on an edition's page, without a page reload per move.
//
// Progressive enhancement: without this script every Up, Down and Lead button is a plain form
// that reloads the page. With it, a story can be dragged, or moved with the same buttons
// (keyboard included: focus stays on the button pressed), and the whole new order is saved
// with one POST to the page's data-order-url; the previews reload with the new rendering.
(function () {
  "use strict";
  var list = document.querySelector("ol.articles[data-order-url]");
  if (!list) { return; }
  var status = document.getElementById("order-status");
  var frames = document.querySelectorAll("iframe.preview-frame");
  var dragged = null;

  function items() { return Array.prototype.slice.call(list.children); }

  function relabel() {
    var all = items();
    all.forEach(function (li, i) {
      var lead = li.querySelector(".tag-lead");
      if (lead) { lead.hidden = i !== 0; }
      li.querySelectorAll("button[name=action]").forEach(function (b) {
        if (b.value === "up" || b.value === "top") { b.hidden = i === 0; }
        if (b.value === "down") { b.hidden = i === all.length - 1; }
      });
    });
  }

  function save(message) {
    var body = new URLSearchParams();
    body.set("csrf_token", list.dataset.csrf);
    body.set("order", items().map(function (li) { return li.dataset.articleId; }).join(","));
    status.textContent = "Saving…";
    fetch(list.dataset.orderUrl, {method: "POST", body: body, credentials: "same-origin",
                                  headers: {"Accept": "application/json"}})
      .then(function (response) {
        return response.json().then(function (data) { return [response.ok, data]; });
      })
      .then(function (result) {
        if (!result[0]) { status.textContent = "Not saved: " + result[1].error; return; }
        status.textContent = message;
        frames.forEach(function (frame) {
          var url = new URL(frame.src, document.baseURI);
          url.searchParams.set("v", result[1].version);
          frame.src = url.toString();
        });
      })
      .catch(function () { status.textContent = "Not saved: reload the page and try again."; });
  }

  list.addEventListener("click", function (event) {
    var button = event.target.closest("button[name=action]");
    if (!button || ["up", "down", "top"].indexOf(button.value) < 0) { return; }
    event.preventDefault();
    var li = button.closest("li");
    if (button.value === "up" && li.previousElementSibling) {
      list.insertBefore(li, li.previousElementSibling);
    } else if (button.value === "down" && li.nextElementSibling) {
      list.insertBefore(li.nextElementSibling, li);
    } else if (button.value === "top") {
      list.insertBefore(li, list.firstElementChild);
    }
    relabel();
    if (button.hidden) {  // (it moved to an end: keep the focus on the story's tools)
      var other = li.querySelector("button[name=action]:not([hidden])");
      if (other) { other.focus(); }
    } else {
      button.focus();
    }
    save("Moved “" + li.dataset.title + "” to position " + (items().indexOf(li) + 1) + ".");
  });

  items().forEach(function (li) {
    li.draggable = true;
    li.addEventListener("dragstart", function (event) {
      dragged = li;
      li.classList.add("dragging");
      event.dataTransfer.effectAllowed = "move";
      event.dataTransfer.setData("text/plain", li.dataset.articleId);
    });
    li.addEventListener("dragend", function () {
      li.classList.remove("dragging");
      dragged = null;
    });
    li.addEventListener("dragover", function (event) {
      if (!dragged || dragged === li) { return; }
      event.preventDefault();
      var box = li.getBoundingClientRect();
      var after = event.clientY > box.top + box.height / 2;
      list.insertBefore(dragged, after ? li.nextElementSibling : li);
    });
  });
  list.addEventListener("dragover", function (event) {
    if (dragged) { event.preventDefault(); }
  });
  list.addEventListener("drop", function (event) {
    event.preventDefault();
    if (!dragged) { return; }
    relabel();
    save("Moved “" + dragged.dataset.title + "” to position " +
         (items().indexOf(dragged) + 1) + ".");
  });
}());
