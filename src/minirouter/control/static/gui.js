// minirouter GUI: every change goes through /api/v1 with the session cookie and the CSRF token.
//
// The pages are rendered by the server; this script only
//  - submits forms as JSON to the API and shows its 422 "fields" messages beside each field,
//  - runs the delete / rollback / revoke buttons after a confirmation dialog,
//  - logs in and out, filters tables as one types, and shows times in local time.
// No inline script anywhere (the Content-Security-Policy forbids it): everything is wired here
// from data-* attributes.
"use strict";

(() => {
  const NOTICE_KEY = "minirouter-notice";

  // -- talking to the API ----------------------------------------------------------------------

  function csrfToken(form) {
    const field = form && form.querySelector('input[name="csrf_token"]');
    if (field && field.value) return field.value;
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  function loginUrl() {
    const next = location.pathname + location.search;
    return "/login?next=" + encodeURIComponent(next);
  }

  // One API call: {status, body (parsed JSON or null), headers}. A 401 means the session ended
  // (logged out elsewhere, password changed, user deleted): go to the login page.
  async function callApi(method, url, body, options = {}) {
    const headers = { Accept: "application/json" };
    if (method !== "GET") headers["X-CSRF-Token"] = options.csrf || csrfToken(null);
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (options.ifMatch) headers["If-Match"] = '"' + options.ifMatch + '"';
    let response;
    try {
      response = await fetch(url, {
        method,
        headers,
        body: body !== undefined ? JSON.stringify(body) : undefined,
        credentials: "same-origin",
        cache: "no-store",
      });
    } catch (err) {
      return { status: 0, body: { error: "the control plane cannot be reached: " + err.message, fields: {} } };
    }
    let parsed = null;
    const type = response.headers.get("Content-Type") || "";
    if (type.includes("json")) {
      try { parsed = await response.json(); } catch (_) { parsed = null; }
    }
    if (response.status === 401 && !options.noRedirect) {
      location.assign(loginUrl());
    }
    return { status: response.status, body: parsed, headers: response.headers };
  }

  function problem(result) {
    const body = result.body || {};
    if (result.status === 412) {
      const etag = (result.headers && result.headers.get("ETag")) || "";
      return "The config changed since this page was loaded" +
        (etag ? " (it is now at revision " + etag.replace(/"/g, "") + ")" : "") +
        ". Nothing was written: reload the page to see the current version.";
    }
    if (result.status === 403) return body.error || "Not allowed.";
    return body.error || ("The request failed (HTTP " + result.status + ").");
  }

  // -- notices -----------------------------------------------------------------------------------

  function showNotice(text, kind = "ok") {
    const box = document.getElementById("notice");
    if (!box) return;
    box.textContent = text;
    box.className = "notice " + kind;
    box.hidden = false;
  }

  // A message for the next page (after a redirect or reload), kept for this tab only.
  function noticeNextPage(text) {
    try { sessionStorage.setItem(NOTICE_KEY, text); } catch (_) { /* private mode */ }
  }

  function showPendingNotice() {
    let text = null;
    try {
      text = sessionStorage.getItem(NOTICE_KEY);
      sessionStorage.removeItem(NOTICE_KEY);
    } catch (_) { /* private mode */ }
    if (text) showNotice(text, "ok");
  }

  function fill(template, body) {
    return (template || "").replace(/\{(\w+)\}/g, (_, key) => (body && body[key] != null ? body[key] : ""));
  }

  // -- reading a form into the API's JSON --------------------------------------------------------

  // Whether a control counts: one inside a data-when="name=value" block only when that holds.
  function conditionHolds(form, condition) {
    const [name, wanted] = condition.split("=");
    const control = form.elements.namedItem(name);
    if (!control) return false;
    let value;
    if (control instanceof RadioNodeList) value = control.value;
    else if (control.type === "checkbox") value = control.checked ? control.value : "";
    else value = control.value;
    return value === wanted;
  }

  function isActive(form, el) {
    const block = el.closest("[data-when]");
    return !block || conditionHolds(form, block.dataset.when);
  }

  function refreshConditions(form) {
    for (const block of form.querySelectorAll("[data-when]")) {
      block.hidden = !conditionHolds(form, block.dataset.when);
    }
  }

  function setPath(target, path, value) {
    const parts = path.split(".");
    let node = target;
    for (const part of parts.slice(0, -1)) {
      if (typeof node[part] !== "object" || node[part] === null) node[part] = {};
      node = node[part];
    }
    node[parts[parts.length - 1]] = value;
  }

  function numberOr(text, integer) {
    // Not a number: sent as typed, so that the API's message says what is wrong with it.
    if (integer && /^[+-]?\d+$/.test(text)) return parseInt(text, 10);
    const n = Number(text);
    return text !== "" && Number.isFinite(n) ? n : text;
  }

  function splitLines(text) {
    return text.split(/\r?\n/).map((line, i) => [i + 1, line.trim()]).filter(([, line]) => line);
  }

  // Returns [body, clientErrors]; clientErrors maps a field to a message for input the form
  // itself cannot turn into JSON (a header line without ":", malformed JSON).
  function readForm(form) {
    const body = {};
    const errors = {};
    let extra = null;
    for (const el of form.querySelectorAll("[data-field]")) {
      if (!isActive(form, el)) continue;
      const name = el.dataset.field;
      const type = el.dataset.type || "str";
      const raw = el.value;
      const text = raw.trim();
      switch (type) {
        case "bool":
          setPath(body, name, el.checked);
          break;
        case "present":  // a checkbox that makes an object exist (e.g. health: {} = defaults)
          if (el.checked) setPath(body, name, {});
          break;
        case "raw":  // passwords: exactly as typed
          if (raw !== "") setPath(body, name, raw);
          break;
        case "int":
        case "number":
          if (text) setPath(body, name, numberOr(text, type === "int"));
          break;
        case "list": {
          const items = text.split(/[\s,]+/).filter(Boolean);
          if (items.length) setPath(body, name, items);
          break;
        }
        case "headers": {
          const headers = {};
          for (const [n, line] of splitLines(raw)) {
            const at = line.indexOf(":");
            if (at <= 0) {
              errors[name] = "line " + n + ': expected "Name: value"';
              continue;
            }
            headers[line.slice(0, at).trim()] = line.slice(at + 1).trim();
          }
          if (Object.keys(headers).length) setPath(body, name, headers);
          break;
        }
        case "targets": {
          const targets = [];
          for (const [n, line] of splitLines(raw)) {
            const parts = line.split(/\s+/);
            if (parts.length === 1) targets.push(parts[0]);
            else if (parts.length === 2) targets.push({ address: parts[0], weight: numberOr(parts[1], true) });
            else errors[name] = "line " + n + ": expected host:port and an optional weight";
          }
          if (targets.length) setPath(body, name, targets);
          break;
        }
        case "json":
          if (!text) break;
          try {
            extra = JSON.parse(text);
            if (typeof extra !== "object" || extra === null || Array.isArray(extra)) {
              errors[name] = "expected a JSON object, e.g. {\"retries\": 2}";
              extra = null;
            }
          } catch (err) {
            errors[name] = "not valid JSON: " + err.message;
          }
          break;
        default:
          if (text) setPath(body, name, text);
      }
    }
    // The JSON box holds the fields without an input; an input wins over the same key there.
    if (extra) for (const [key, value] of Object.entries(extra)) if (!(key in body)) body[key] = value;
    return [body, errors];
  }

  // -- showing errors beside the fields ----------------------------------------------------------

  function clearErrors(form) {
    for (const slot of form.querySelectorAll("[data-error-for]")) {
      slot.hidden = true;
      slot.textContent = "";
    }
    for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
    const summary = form.querySelector("[data-form-errors]");
    if (summary) {
      summary.hidden = true;
      summary.textContent = "";
    }
  }

  function escapeAttr(value) {
    return window.CSS && CSS.escape ? CSS.escape(value) : value.replace(/["\\]/g, "\\$&");
  }

  // The error slot for an API field path: the field itself, else its nearest parent that has one
  // ("targets[1].weight" -> "targets", "headers.X-Foo" -> "headers"), else the JSON box.
  function slotFor(form, key) {
    let path = key;
    while (path) {
      const slot = form.querySelector('[data-error-for="' + escapeAttr(path) + '"]');
      if (slot) return [slot, path];
      const parent = path.match(/^(.*?)(\[\d+\]|\.[^.[\]]*)$/);
      if (!parent) break;
      path = parent[1];
    }
    const json = form.querySelector('[data-error-for="*"]');
    return json ? [json, "*"] : [null, null];
  }

  function describe(key, slotPath, control) {
    if (key === slotPath || slotPath === "*" && key === "*") return "";
    let rest = slotPath === "*" ? key : key.slice(slotPath.length);
    const lines = control && control.tagName === "TEXTAREA";
    rest = rest.replace(/^\[(\d+)\]\.?/, (_, i) => (lines ? "line " : "item ") + (Number(i) + 1) + " ");
    rest = rest.replace(/^\./, "").trim();
    return rest ? rest + ": " : "";
  }

  function showErrors(form, message, fields) {
    clearErrors(form);
    const summary = form.querySelector("[data-form-errors]");
    const unplaced = [];
    let first = null;
    for (const [key, text] of Object.entries(fields || {})) {
      const [slot, slotPath] = key === "<root>" ? [null, null] : slotFor(form, key);
      if (!slot) {
        unplaced.push((key === "<root>" ? "" : key + ": ") + text);
        continue;
      }
      const control = form.querySelector('[data-field="' + escapeAttr(slotPath) + '"]') ||
        form.querySelector('[name="' + escapeAttr(slotPath) + '"]');
      const line = document.createElement("span");
      line.textContent = describe(key, slotPath, control) + text;
      slot.append(line);
      slot.hidden = false;
      if (control) {
        control.setAttribute("aria-invalid", "true");
        // An error inside a closed <details> must not stay hidden.
        const details = control.closest("details");
        if (details) details.open = true;
        if (!first) first = control;
      }
    }
    if (summary) {
      const count = Object.keys(fields || {}).length;
      const head = document.createElement("p");
      head.textContent = count ? message + (message.endsWith(".") ? "" : ".") +
        (count > unplaced.length ? " See the marked field" + (count - unplaced.length === 1 ? "" : "s") + " below." : "") : message;
      summary.append(head);
      if (unplaced.length) {
        const list = document.createElement("ul");
        for (const text of unplaced) {
          const item = document.createElement("li");
          item.textContent = text;
          list.append(item);
        }
        summary.append(list);
      }
      summary.hidden = false;
    }
    (first || summary || form).focus();
  }

  // -- forms --------------------------------------------------------------------------------------

  const renderers = {};

  async function submitApiForm(form, submitter) {
    const [body, clientErrors] = readForm(form);
    if (Object.keys(clientErrors).length) {
      showErrors(form, "Not sent: some fields cannot be read", clientErrors);
      return;
    }
    if (submitter) submitter.disabled = true;
    form.setAttribute("aria-busy", "true");
    try {
      const result = await callApi(form.dataset.method || "POST", form.dataset.url, body, {
        ifMatch: form.dataset.ifMatch,
        csrf: csrfToken(form),
      });
      if (result.status >= 200 && result.status < 300) {
        clearErrors(form);
        const render = renderers[form.dataset.render];
        if (render) {
          render(form, result.body || {}, body);
          return;
        }
        noticeNextPage(fill(form.dataset.done || "Saved.", result.body));
        location.assign(form.dataset.next || location.href);
        return;
      }
      if (result.status === 401) return;
      const fields = (result.body && result.body.fields) || {};
      let message = problem(result);
      if (result.status === 422) message = "Not saved: the API refused some fields";
      if (result.status === 409 && Object.keys(fields).length) message = "Not saved: " + message;
      showErrors(form, message, fields);
    } finally {
      form.removeAttribute("aria-busy");
      if (submitter) submitter.disabled = false;
    }
  }

  function wireApiForm(form) {
    refreshConditions(form);
    form.addEventListener("change", () => refreshConditions(form));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      submitApiForm(form, event.submitter || form.querySelector('[type="submit"]'));
    });
  }

  // The match tester: the winner and every candidate with its reason.
  renderers.match = (form, result) => {
    const box = document.querySelector("[data-match-result]");
    const winner = box.querySelector("[data-winner]");
    const rows = box.querySelector("[data-candidates]");
    winner.replaceChildren();
    rows.replaceChildren();
    if (result.route) {
      const strong = document.createElement("strong");
      strong.textContent = result.route;
      const where = result.redirect
        ? " — redirects (" + result.redirect.code + ") to " + result.redirect.to
        : " — forwards " + result.path + " to upstream " + result.upstream;
      winner.append("Winner: route ", strong, where + ".");
      winner.className = "winner ok";
    } else {
      winner.textContent = "No route matches: the router answers 404.";
      winner.className = "winner none";
    }
    for (const candidate of result.candidates || []) {
      const tr = document.createElement("tr");
      if (candidate.reason === "winner") tr.className = "is-winner";
      else if (!candidate.matched) tr.className = "no-match";
      const th = document.createElement("th");
      th.scope = "row";
      const link = document.createElement("a");
      link.href = "/routes/" + encodeURIComponent(candidate.route);
      link.textContent = candidate.route;
      th.append(link);
      const matched = document.createElement("td");
      matched.textContent = candidate.matched ? "yes" : "no";
      const reason = document.createElement("td");
      reason.textContent = candidate.reason;
      tr.append(th, matched, reason);
      rows.append(tr);
    }
    if (!rows.children.length) {
      const tr = document.createElement("tr");
      const td = document.createElement("td");
      td.colSpan = 3;
      td.textContent = "There are no routes.";
      tr.append(td);
      rows.append(tr);
    }
    box.hidden = false;
    box.querySelector("h2").setAttribute("tabindex", "-1");
    box.querySelector("h2").focus();
  };

  // A new token: shown this once, in a box to copy it from.
  renderers.token = (form, result) => {
    const box = document.querySelector("[data-token-box]");
    box.querySelector("[data-token-name]").textContent = result.name;
    box.querySelector("[data-token-value]").value = result.token;
    box.hidden = false;
    form.reset();
    addTokenRow(form, result);
    box.focus();
  };

  // The new token's row in the list (without its secret), so that no reload is needed: a
  // reload would also drop the box above, the one place the token is shown.
  function addTokenRow(form, record) {
    const body = document.querySelector("#tokens-table tbody");
    if (!body) return;
    for (const row of body.querySelectorAll("tr.empty")) row.remove();
    const tr = document.createElement("tr");
    tr.dataset.item = record.name;
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = record.name;
    const role = document.createElement("td");
    role.dataset.label = "Role";
    const badge = document.createElement("span");
    badge.className = "badge role-" + record.role;
    badge.textContent = record.role;
    role.append(badge);
    const created = document.createElement("td");
    created.dataset.label = "Created";
    created.textContent = "just now";
    const by = document.createElement("td");
    by.dataset.label = "By";
    by.textContent = record.created_by || "—";
    const actions = document.createElement("td");
    actions.className = "row-actions";
    const revoke = document.createElement("button");
    revoke.type = "button";
    revoke.className = "small danger";
    revoke.textContent = "Revoke";
    revoke.setAttribute("aria-label", "Revoke token " + record.name);
    Object.assign(revoke.dataset, {
      action: form.dataset.url + "/" + encodeURIComponent(record.name),
      method: "DELETE",
      confirm: "Revoke token " + record.name + "? Requests with it are refused from now on.",
      confirmLabel: "Revoke token",
      done: "Revoked token " + record.name + ".",
    });
    actions.append(revoke);
    tr.append(th, role, created, by, actions);
    body.append(tr);
  }

  // -- buttons that change something: confirm first ---------------------------------------------

  function confirmThen(button) {
    const dialog = document.getElementById("confirm");
    const ok = document.getElementById("confirm-ok");
    const error = document.getElementById("confirm-error");
    document.getElementById("confirm-title").textContent = button.dataset.confirmLabel || "Are you sure?";
    document.getElementById("confirm-text").textContent = button.dataset.confirm || "";
    ok.textContent = button.dataset.confirmLabel || "Confirm";
    error.hidden = true;
    ok.disabled = false;
    ok.onclick = async () => {
      ok.disabled = true;
      const body = button.dataset.body ? JSON.parse(button.dataset.body) : undefined;
      const result = await callApi(button.dataset.method || "POST", button.dataset.action, body, {
        ifMatch: button.dataset.ifMatch,
      });
      if (result.status >= 200 && result.status < 300) {
        noticeNextPage(fill(button.dataset.done || "Done.", result.body));
        dialog.close();
        if (button.dataset.next) location.assign(button.dataset.next);
        else location.reload();
        return;
      }
      if (result.status === 401) return;
      const fields = (result.body && result.body.fields) || {};
      const details = Object.entries(fields).map(([k, v]) => k + ": " + v).join("; ");
      error.textContent = problem(result) + (details ? " (" + details + ")" : "");
      error.hidden = false;
      ok.disabled = true;  // the same request would fail the same way
    };
    dialog.showModal();
  }

  // -- log in, log out ---------------------------------------------------------------------------

  function wireLogin(form) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const name = form.elements.namedItem("name").value.trim();
      const password = form.elements.namedItem("password").value;
      const missing = {};
      if (!name) missing.name = "enter your name";
      if (!password) missing.password = "enter your password";
      if (Object.keys(missing).length) {
        showErrors(form, "Cannot log in yet", missing);
        return;
      }
      const button = form.querySelector('[type="submit"]');
      button.disabled = true;
      try {
        const result = await callApi("POST", "/api/v1/session", { name, password }, { noRedirect: true });
        if (result.status === 200) {
          location.assign(form.dataset.next || "/");
          return;
        }
        const message = result.status === 401 ? "Wrong name or password." : problem(result);
        showErrors(form, message, (result.body && result.body.fields) || {});
        if (result.status === 401) form.elements.namedItem("password").select();
      } finally {
        button.disabled = false;
      }
    });
  }

  function wireLogout(form) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      await callApi("DELETE", "/api/v1/session", undefined, { csrf: csrfToken(form), noRedirect: true });
      location.assign("/login");
    });
  }

  // -- upstream targets' health: kept current from the API -----------------------------------------

  const HEALTH_POLL_MS = 3000;  // the cores' heartbeats come every 2 s

  // A block with data-health-url holds badges (data-health-upstream / -address); its URL answers
  // either {upstreams: {id: [target]}} (GET /health) or {upstream, targets} (one upstream).
  function wireHealth(box) {
    let timer = null;
    let busy = false;
    const schedule = () => {
      clearTimeout(timer);
      timer = setTimeout(refresh, HEALTH_POLL_MS);
    };
    async function refresh() {
      if (document.hidden || busy) return;  // resumed when the tab is shown again
      busy = true;
      try {
        const result = await callApi("GET", box.dataset.healthUrl);
        const body = result.body;
        if (result.status === 200 && body) {
          const byUpstream = body.upstreams || { [body.upstream]: body.targets || [] };
          for (const badge of box.querySelectorAll("[data-health-upstream]")) {
            const targets = byUpstream[badge.dataset.healthUpstream] || [];
            const health = targets.find((t) => t.address === badge.dataset.healthAddress);
            if (!health) continue;
            badge.textContent = health.text;
            badge.className = "badge health " + health.state;
            badge.title = health.up + " up, " + health.down + " down, " + health.cores +
              " live core" + (health.cores === 1 ? "" : "s");
          }
        }
      } finally {
        busy = false;
        schedule();
      }
    }
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) refresh();
    });
    schedule();
  }

  // -- small things --------------------------------------------------------------------------------

  // Filter a table's rows as one types (the form still searches on the server with Enter).
  function wireFilter(input) {
    const table = document.querySelector(input.dataset.filter);
    const count = document.querySelector("[data-filter-count]");
    if (!table) return;
    const rows = Array.from(table.tBodies[0].rows).filter((row) => !row.classList.contains("empty"));
    const total = count ? count.textContent.replace(/^\d+ of /, "") : "";
    input.addEventListener("input", () => {
      const words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
      let shown = 0;
      for (const row of rows) {
        const text = row.textContent.toLowerCase();
        row.hidden = !words.every((word) => text.includes(word));
        if (!row.hidden) shown += 1;
      }
      if (count && total) count.textContent = shown + " of " + total;
    });
  }

  function localTimes() {
    for (const el of document.querySelectorAll("time[data-local]")) {
      const when = new Date(el.getAttribute("datetime"));
      if (!Number.isNaN(when.getTime())) {
        el.title = el.textContent;
        el.textContent = when.toLocaleString();
      }
    }
  }

  function wireCopy(button) {
    button.addEventListener("click", async () => {
      const input = document.querySelector(button.dataset.copy);
      input.focus();
      input.select();
      try {
        await navigator.clipboard.writeText(input.value);
        button.textContent = "Copied";
      } catch (_) {
        // No clipboard API (plain http off localhost): the text is selected for Ctrl+C.
        button.textContent = "Selected: press Ctrl+C";
      }
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    showPendingNotice();
    localTimes();
    for (const form of document.querySelectorAll("form[data-api-form]")) wireApiForm(form);
    for (const form of document.querySelectorAll("form[data-login]")) wireLogin(form);
    for (const form of document.querySelectorAll("form[data-logout]")) wireLogout(form);
    for (const input of document.querySelectorAll("input[data-filter]")) wireFilter(input);
    for (const button of document.querySelectorAll("[data-copy]")) wireCopy(button);
    for (const box of document.querySelectorAll("[data-health-url]")) wireHealth(box);
    document.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-action]");
      if (button) confirmThen(button);
      const cancel = event.target.closest("[data-dialog-cancel]");
      if (cancel) cancel.closest("dialog").close();
    });
  });

  // For dashboard.js.
  window.minirouter = { callApi, showNotice };
})();
