// dealscout review: keyboard, the title counter, photo zoom, live progress. No build step,
// no library; text from the server is set with textContent, never parsed as HTML.
"use strict";

function typing(event) {
  const t = event.target;
  return t instanceof HTMLInputElement || t instanceof HTMLTextAreaElement ||
    t instanceof HTMLSelectElement || t.isContentEditable;
}

function gridKeys() {
  const cards = Array.from(document.querySelectorAll("#grid .card"));
  let at = -1;
  const select = (i) => {
    if (!cards.length) return;
    at = Math.max(0, Math.min(cards.length - 1, i));
    cards.forEach((card, n) => card.classList.toggle("selected", n === at));
    cards[at].scrollIntoView({ block: "nearest" });
  };
  const decide = (what) => {
    if (at < 0) return;
    const form = document.getElementById("decide");
    form.action = "/item/" + cards[at].dataset.id + "/" + what + location.search;
    form.submit();
  };
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (typing(event)) {
      if (event.key === "Escape") event.target.blur();
      return;
    }
    const keys = {
      j: () => select(at + 1),
      k: () => select(at - 1),
      a: () => decide("approve"),
      r: () => decide("reject"),
      e: () => at >= 0 && cards[at].querySelector("a.open").click(),
      Enter: () => at >= 0 && cards[at].querySelector("a.open").click(),
      "/": () => document.getElementById("search").focus(),
    };
    if (keys[event.key]) {
      event.preventDefault();
      keys[event.key]();
    }
  });
  const filters = document.getElementById("filters");
  filters.addEventListener("submit", (event) => {
    event.preventDefault(); // a short URL: only the filters that are set
    const params = new URLSearchParams();
    for (const [key, value] of new FormData(filters)) {
      if (value && !(key === "sort" && value === "item")) params.append(key, value);
    }
    location.href = "/" + (params.toString() ? "?" + params : "");
  });
  for (const id of ["attention", "state", "sort"]) {
    document.getElementById(id).addEventListener("change", () => filters.requestSubmit());
  }
}

function itemKeys() {
  const click = (id) => {
    const el = document.getElementById(id);
    if (el && !el.disabled) el.click();
  };
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (typing(event)) {
      if (event.key === "Escape") event.target.blur();
      return;
    }
    const keys = {
      j: () => click("next"),
      k: () => click("previous"),
      a: () => click("approve"),
      r: () => click("reject"),
      e: () => {
        const title = document.getElementById("title");
        if (!title) return;
        title.focus();
        title.setSelectionRange(title.value.length, title.value.length);
      },
      "/": () => { location.href = "/" + location.search + (location.search ? "&" : "?") + "focus=search"; },
      Escape: () => document.getElementById("zoom").classList.add("hidden"),
    };
    if (keys[event.key]) {
      event.preventDefault();
      keys[event.key]();
    }
  });
  const title = document.getElementById("title");
  const count = document.getElementById("title-count");
  if (title && count) {
    const update = () => {
      const n = Array.from(title.value).length; // characters, as the server counts them
      count.textContent = n + "/80";
      count.classList.toggle("over", n > 80);
    };
    title.addEventListener("input", update);
    update();
  }
  const zoom = document.getElementById("zoom");
  for (const img of document.querySelectorAll("img.zoomable")) {
    img.addEventListener("click", () => {
      zoom.querySelector("img").src = img.src;
      zoom.classList.remove("hidden");
    });
  }
  zoom.addEventListener("click", () => zoom.classList.add("hidden"));
}

function liveProgress() {
  const box = document.getElementById("progress");
  const refresh = async () => {
    try {
      const reply = await fetch(box.dataset.live, { credentials: "same-origin" });
      if (reply.ok) {
        const doc = new DOMParser().parseFromString(await reply.text(), "text/html");
        box.replaceChildren(...doc.body.childNodes); // server-escaped markup, no scripts run
      }
    } catch (e) { /* the server stopped: keep the last numbers */ }
  };
  setInterval(refresh, 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  if (page === "grid") {
    gridKeys();
    if (new URLSearchParams(location.search).get("focus") === "search") {
      document.getElementById("search").focus();
    }
  } else if (page === "item") {
    itemKeys();
  } else if (page === "progress") {
    liveProgress();
  }
});
