// U-Partners' live updates, the product's only script: every few seconds the inbox asks how many
// messages arrived since the newest it shows (and shows a banner), and a case's page fetches its
// timeline's entries again (and swaps them in when they changed); it also gives the inbox's bulk
// bar its "select all" box, a send box its character counter, and reply boxes their ready-made
// answers. Nothing else on the page moves: what the user typed, selected or
// scrolled stays. Without JavaScript the pages work as they are.
(function () {
  "use strict";
  var EVERY = 10000; // milliseconds

  function poll(task) {
    var busy = false;
    setInterval(function () {
      if (busy || document.hidden) return;
      busy = true;
      task().catch(function () {}).then(function () { busy = false; });
    }, EVERY);
  }

  var banner = document.querySelector("[data-live-inbox]");
  if (banner) {
    poll(function () {
      var url = banner.dataset.liveInbox + "?after=" + encodeURIComponent(banner.dataset.after);
      return fetch(url, { credentials: "same-origin" })
        .then(function (answer) { return answer.ok ? answer.json() : { new: 0 }; })
        .then(function (news) {
          if (news.new > 0) {
            banner.querySelector("span").textContent = news.label;
            banner.hidden = false;
          }
        });
    });
  }

  // The inbox's bulk bar: one box ticks or clears every message of the page (without
  // JavaScript the box stays hidden and each message is ticked on its own).
  var pickAll = document.querySelector("[data-pick-all]");
  if (pickAll) {
    var boxes = document.querySelectorAll('input[type=checkbox][form="bulk"]');
    pickAll.closest("label").hidden = false;
    pickAll.addEventListener("change", function () {
      boxes.forEach(function (box) { box.checked = pickAll.checked; });
    });
  }

  // A send box's character counter ("120 of 4096 characters"): a long reply costs the contact
  // several SMS. The template comes translated from the page.
  document.querySelectorAll("textarea[data-counter]").forEach(function (box) {
    var counter = document.getElementById(box.dataset.counter);
    function show() {
      counter.textContent = counter.dataset.template.replace("{count}", box.value.length);
    }
    counter.hidden = false;
    box.addEventListener("input", show);
    show();
  });

  // Ready-made answers: a reply box's search loads the matching answers under it (a small page
  // fragment); "Insert" puts one's text in the box, to edit before sending, and says which
  // answer the reply started from. Without JavaScript the search opens the answers page.
  document.querySelectorAll("form[data-answers]").forEach(function (form) {
    var results = form.parentNode.querySelector(".answer-results");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var query = new URLSearchParams(new FormData(form));
      query.set("fragment", "1");
      fetch(form.action + "?" + query, { credentials: "same-origin" })
        .then(function (answer) { return answer.text(); })
        .then(function (html) { results.innerHTML = html; });
    });
    results.addEventListener("click", function (event) {
      var button = event.target.closest("button[data-answer]");
      var box = document.getElementById(form.dataset.answers);
      if (!button || !box) return;
      box.value = button.dataset.text;
      box.form.elements.answer.value = button.dataset.answer;
      box.dispatchEvent(new Event("input"));
      box.focus();
    });
  });

  var timeline = document.querySelector("[data-live-timeline]");
  if (timeline) {
    poll(function () {
      return fetch(timeline.dataset.liveTimeline, { credentials: "same-origin" })
        .then(function (answer) { return answer.ok ? answer.text() : null; })
        .then(function (html) {
          if (html === null) return;
          var fresh = document.createElement("ol");
          fresh.innerHTML = html;
          if (fresh.innerHTML !== timeline.innerHTML) timeline.innerHTML = fresh.innerHTML;
        });
    });
  }
})();
