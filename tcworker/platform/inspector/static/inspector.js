// The inspector's page script: credentials, cancel / rerun, refreshing, and the log follower.
// Everything untrusted reaches the DOM through textContent (never innerHTML of data), so task
// output and metadata cannot inject markup. Server-rendered parts marked data-live are swapped
// for their fresh version on every refresh (the server escaped them).
(function () {
  "use strict";

  const CRED_KEY = "tcworker-inspector-credentials";
  const MAX_LOG_CHARS = 2 * 1024 * 1024; // the tail kept on screen; older output is dropped

  // -- credentials (sessionStorage: gone when the tab closes) ---------------------------------

  function loadCredentials() {
    try {
      const value = JSON.parse(sessionStorage.getItem(CRED_KEY) || "null");
      return value && value.clientId && value.accessToken ? value : null;
    } catch (err) {
      return null;
    }
  }

  function showCredentials() {
    const summary = document.getElementById("cred-summary");
    const creds = loadCredentials();
    if (summary) summary.textContent = creds ? `credentials: ${creds.clientId}` : "credentials: none";
    const form = document.getElementById("cred-form");
    if (form && creds) {
      form.elements.clientId.value = creds.clientId;
      form.elements.certificate.value = creds.certificate || "";
    }
  }

  function setupCredentials() {
    const form = document.getElementById("cred-form");
    if (!form) return;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const creds = {
        clientId: form.elements.clientId.value.trim(),
        accessToken: form.elements.accessToken.value.trim(),
        certificate: form.elements.certificate.value.trim(),
      };
      if (creds.certificate) {
        try { JSON.parse(creds.certificate); } catch (err) {
          report(true, `certificate is not JSON: ${err.message}`);
          return;
        }
      }
      if (creds.clientId && creds.accessToken) sessionStorage.setItem(CRED_KEY, JSON.stringify(creds));
      form.elements.accessToken.value = "";
      showCredentials();
      document.getElementById("credentials").open = false;
    });
    document.getElementById("cred-forget").addEventListener("click", () => {
      sessionStorage.removeItem(CRED_KEY);
      form.reset();
      showCredentials();
    });
    showCredentials();
  }

  // -- cancel / rerun through the platform's own API ------------------------------------------

  function report(isError, text) {
    const out = document.getElementById("action-result");
    if (!out) return;
    out.className = isError ? "error" : "ok";
    out.textContent = text;
  }

  async function callApi(method, path) {
    const headers = {};
    const creds = loadCredentials();
    if (creds) headers.Authorization = await window.tcHawk.header({ method, url: path, credentials: creds });
    const response = await fetch(path, { method, headers, cache: "no-store" });
    let body = null;
    try { body = await response.json(); } catch (err) { body = null; }
    return { response, body };
  }

  function setupActions() {
    for (const button of document.querySelectorAll("button[data-action]")) {
      button.addEventListener("click", async () => {
        const action = button.dataset.action;
        const apiName = action === "cancel" ? "cancelTask" : "rerunTask";
        const path = `/api/queue/v1/task/${encodeURIComponent(button.dataset.taskId)}/${action}`;
        button.disabled = true;
        report(false, `${apiName}…`);
        try {
          const { response, body } = await callApi("POST", path);
          if (response.ok) {
            const state = body && body.status ? body.status.state : "?";
            report(false, `${apiName}: done, the task is now ${state}`);
          } else {
            const code = body && body.code ? body.code : response.statusText;
            const message = body && body.message ? body.message : "";
            const hint = loadCredentials() ? "" : "\n(no credentials entered: open “credentials” above)";
            report(true, `${apiName} failed: ${response.status} ${code}\n${message}${hint}`);
          }
        } catch (err) {
          report(true, `${apiName} failed: ${err.message}`);
        } finally {
          button.disabled = false;
          refresh();
        }
      });
    }
  }

  // -- ANSI colours -----------------------------------------------------------------------------

  // SGR state → classes / inline colours; other escape sequences are dropped. Sequences split
  // across chunks are held back until complete.
  class AnsiRenderer {
    constructor(target) {
      this.target = target;
      this.pending = "";
      this.style = {};
      this.nodes = [];
      this.chars = 0;
      this.dropped = false;
    }

    reset() {
      this.target.textContent = "";
      this.pending = "";
      this.style = {};
      this.nodes = [];
      this.chars = 0;
      this.dropped = false;
    }

    write(text) {
      let data = this.pending + text;
      this.pending = "";
      const cut = data.lastIndexOf("\x1b");
      if (cut !== -1 && cut > data.length - 64 && !/^\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])/.test(data.slice(cut))) {
        this.pending = data.slice(cut);
        data = data.slice(0, cut);
      }
      data = data.replace(/\r+\n/g, "\n").replace(/\r/g, "");
      const fragment = document.createDocumentFragment();
      const pattern = /\x1b\[([0-?]*)[ -/]*([@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]/g;
      let last = 0;
      let match;
      while ((match = pattern.exec(data)) !== null) {
        if (match.index > last) this.emit(fragment, data.slice(last, match.index));
        if (match[2] === "m") this.sgr(match[1]);
        last = pattern.lastIndex;
      }
      if (last < data.length) this.emit(fragment, data.slice(last));
      const atBottom = this.target.scrollTop + this.target.clientHeight >= this.target.scrollHeight - 8;
      this.target.appendChild(fragment);
      this.trim();
      if (atBottom) this.target.scrollTop = this.target.scrollHeight;
    }

    emit(fragment, text) {
      if (!text) return;
      const s = this.style;
      let node;
      if (!s.fg && !s.bg && !s.bold && !s.dim && !s.italic && !s.underline) {
        node = document.createTextNode(text);
      } else {
        node = document.createElement("span");
        node.textContent = text;
        for (const flag of ["bold", "dim", "italic", "underline"]) if (s[flag]) node.classList.add(`ansi-${flag}`);
        for (const [key, prop] of [["fg", "color"], ["bg", "backgroundColor"]]) {
          const c = s[key];
          if (c === undefined) continue;
          if (typeof c === "number") node.classList.add(`ansi-${key}-${c}`);
          else node.style[prop] = c;
        }
      }
      fragment.appendChild(node);
      this.nodes.push([node, text.length]);
      this.chars += text.length;
    }

    trim() {
      let i = 0;
      while (this.chars > MAX_LOG_CHARS && i < this.nodes.length - 1) {
        const [node, length] = this.nodes[i++];
        node.remove();
        this.chars -= length;
        this.dropped = true;
      }
      if (i) this.nodes.splice(0, i);
      this.target.classList.toggle("trimmed", this.dropped);
    }

    sgr(params) {
      const codes = params === "" ? [0] : params.split(";").map((p) => (p === "" ? 0 : parseInt(p, 10)));
      let s = this.style;
      for (let i = 0; i < codes.length; i++) {
        const c = codes[i];
        if (c === 0) s = this.style = {};
        else if (c === 1) s.bold = true;
        else if (c === 2) s.dim = true;
        else if (c === 3) s.italic = true;
        else if (c === 4) s.underline = true;
        else if (c === 22) { s.bold = false; s.dim = false; }
        else if (c === 23) s.italic = false;
        else if (c === 24) s.underline = false;
        else if (c >= 30 && c <= 37) s.fg = c - 30;
        else if (c >= 90 && c <= 97) s.fg = c - 90 + 8;
        else if (c === 39) delete s.fg;
        else if (c >= 40 && c <= 47) s.bg = c - 40;
        else if (c >= 100 && c <= 107) s.bg = c - 100 + 8;
        else if (c === 49) delete s.bg;
        else if (c === 38 || c === 48) {
          const key = c === 38 ? "fg" : "bg";
          if (codes[i + 1] === 5 && codes[i + 2] !== undefined) {
            const n = codes[i + 2] & 255;
            s[key] = n < 16 ? n : xterm256(n);
            i += 2;
          } else if (codes[i + 1] === 2 && codes[i + 4] !== undefined) {
            s[key] = `rgb(${codes[i + 2] & 255}, ${codes[i + 3] & 255}, ${codes[i + 4] & 255})`;
            i += 4;
          }
        }
      }
    }
  }

  function xterm256(n) {
    if (n >= 232) {
      const v = 8 + (n - 232) * 10;
      return `rgb(${v}, ${v}, ${v})`;
    }
    const i = n - 16;
    const level = (x) => (x === 0 ? 0 : 55 + x * 40);
    return `rgb(${level(Math.floor(i / 36))}, ${level(Math.floor(i / 6) % 6)}, ${level(i % 6)})`;
  }

  // -- the log follower ---------------------------------------------------------------------------

  // Generic over where the log is: data-kind="stream" follows a live URL (a reference artifact
  // to the worker's live-log server), resuming with ?offset=<bytes received> after a drop;
  // "static" reads the stored log once (streamed into the page as it downloads). A stream that
  // the server closed is the whole log, so it is not read again from storage afterwards.
  class LogFollower {
    constructor(pre, status) {
      this.renderer = new AnsiRenderer(pre);
      this.status = status;
      this.run = null;
      this.bytes = 0;
      this.busy = false;
      this.complete = false;
      this.streamEnded = false;
      this.controller = null;
      this.decoder = new TextDecoder();
      this.error = "";
    }

    reset() {
      if (this.controller) this.controller.abort();
      this.renderer.reset();
      this.bytes = 0;
      this.complete = false;
      this.streamEnded = false;
      this.decoder = new TextDecoder();
      this.error = "";
    }

    update(source) {
      const { kind, url, run, resolved } = source.dataset;
      if (run !== this.run) {
        this.reset();
        this.run = run;
      }
      if (this.streamEnded && !this.busy && (resolved === "true" || kind === "static")) {
        this.complete = true; // the live stream ended and the run is over: that was the whole log
        this.error = "";
      }
      this.show();
      if (this.busy || this.complete || !url) return;
      // A stream that ended while the run still runs may have been closed early by the server:
      // ask again from the bytes already shown (an ended log just ends again at once).
      if (kind === "stream") this.read(url, true);
      else if (kind === "static") {
        if (this.bytes) this.reset();
        this.run = run;
        this.read(url, false);
      }
    }

    state() {
      if (this.complete) return "complete";
      if (this.busy) return "following";
      return this.error ? "error" : "waiting";
    }

    show() {
      const pre = document.getElementById("log");
      pre.dataset.state = this.state();
      pre.dataset.bytes = String(this.bytes);
      const note = document.getElementById("log-note") || document.createElement("p");
      note.id = "log-note";
      note.className = this.error ? "error" : "hint";
      note.textContent = this.error
        ? `log: ${this.error} (retrying)`
        : `${this.bytes} bytes${this.renderer.dropped ? " (only the tail is shown)" : ""} · ${this.state()}`;
      if (!note.parentNode) pre.parentNode.insertBefore(note, pre);
    }

    async read(url, live) {
      this.busy = true;
      this.controller = new AbortController();
      let target = url;
      if (live && this.bytes) target += (url.includes("?") ? "&" : "?") + `offset=${this.bytes}`;
      this.show();
      try {
        const response = await fetch(target, { signal: this.controller.signal, cache: "no-store" });
        if (!response.ok) {
          let detail = response.statusText;
          try { detail = (await response.json()).message || detail; } catch (err) { /* not JSON */ }
          throw new Error(`${response.status} ${detail}`);
        }
        this.error = "";
        const reader = response.body.getReader();
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          this.bytes += value.length;
          this.renderer.write(this.decoder.decode(value, { stream: true }));
          this.show();
        }
        this.renderer.write(this.decoder.decode());
        if (live) this.streamEnded = true;
        else this.complete = true;
      } catch (err) {
        if (err.name === "AbortError") return;
        this.error = err.message;
        if (!live) {
          this.renderer.reset();
          this.bytes = 0;
          this.decoder = new TextDecoder();
        }
      } finally {
        this.busy = false;
        this.show();
      }
    }
  }

  // -- refreshing ---------------------------------------------------------------------------------

  let follower = null;
  let timer = null;
  let refreshing = false;

  function schedule() {
    clearTimeout(timer);
    const period = parseInt(document.body.dataset.refresh || "0", 10);
    if (period > 0) timer = setTimeout(refresh, period);
  }

  async function refresh() {
    if (refreshing) return;
    refreshing = true;
    try {
      const response = await fetch(location.href, { cache: "no-store", headers: { Accept: "text/html" } });
      if (response.ok) {
        const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
        for (const node of fresh.querySelectorAll("[data-live][id]")) {
          const current = document.getElementById(node.id);
          if (current) current.replaceWith(document.adoptNode(node));
        }
        document.body.dataset.refresh = fresh.body.dataset.refresh || "0";
        document.title = fresh.title;
        follow();
      }
    } catch (err) {
      /* the platform may be restarting: try again at the next tick */
    } finally {
      refreshing = false;
      schedule();
    }
  }

  function follow() {
    const source = document.getElementById("log-source");
    const pre = document.getElementById("log");
    if (!source || !pre) return;
    if (!follower) follower = new LogFollower(pre, source);
    follower.update(source);
  }

  document.addEventListener("DOMContentLoaded", () => {
    setupCredentials();
    setupActions();
    follow();
    schedule();
  });
})();
