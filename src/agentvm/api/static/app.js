// agentvm dashboard: hosts per cluster coloured by agent state, live from /api/v1/events.
//
// Reads GET /api/v1/status (agencies -> clusters -> hosts) and GET /api/v1/events, then listens to the
// server-sent events stream; every event re-fetches the status (debounced). Tolerant of missing fields and
// of both host shapes: {state, vm: {powerState}, hookPending: bool} and status-v1.json's {status, phase,
// powerState, hookPending: "provisioned"|null, path, state?, problems?, runsOn?}. A host's colour is its
// `state` when the server sends one (status-v1's green/yellow/red/maintenance/flapping/misplaced: the
// controller knows maintenance mode and standby from vCenter, when it gave up on a flapping agent, and when
// an agent VM runs on another host), else derived from its issues and status. agentvm's own findings
// (`problems`) are listed with the issues. Builds the DOM with textContent only (names come from vCenter:
// no HTML).
"use strict";

(function () {
  const STATES = ["green", "yellow", "red", "maintenance", "flapping", "misplaced"];
  // issue kinds that mean "the host is in maintenance mode or standby": not a failure
  const MAINTENANCE_KINDS = ["HostInMaintenanceMode", "VmRequiresHostOutOfMaintenanceMode", "HostInStandbyMode"];
  const MAX_EVENTS = 200;
  const POLL_MS = 10000; // a fallback in case the stream is down
  const DEBOUNCE_MS = 200;

  const view = {
    status: null,
    events: [],
    lastEventId: 0,
    selected: null, // host moid (or name when there is no moid)
    refetchTimer: null,
    fetching: false,
    again: false,
  };

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key.startsWith("data-")) node.setAttribute(key, String(value));
      else if (key === "onclick") node.addEventListener("click", value);
      else node.setAttribute(key, String(value));
    }
    for (const child of children) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const list = (value) => (Array.isArray(value) ? value : []);
  const text = (value, fallback = "") => (value === undefined || value === null || value === "" ? fallback : String(value));
  function stateOf(host) {
    if (!host) return "unknown";
    if (STATES.includes(host.state)) return host.state; // the server's word wins (status-v1 `state`)
    if (list(host.issues).some((i) => i && MAINTENANCE_KINDS.includes(i.kind))) return "maintenance";
    if (STATES.includes(host.status)) return host.status;
    return "unknown"; // no agent on this host yet, or a state this page does not know
  }
  const powerOf = (host) => text((host.vm && host.vm.powerState) || host.powerState);
  const hookOf = (host) => (host.hookPending === true ? "pending" : host.hookPending ? `pending (${host.hookPending})` : "");
  const hostId = (host) => text(host.moid, text(host.name));
  const byName = (a, b) => text(a.name).localeCompare(text(b.name), undefined, { numeric: true });

  function shortName(host) {
    const name = text(host.name, text(host.moid, "?"));
    const slash = name.lastIndexOf("/");
    return slash >= 0 ? name.slice(slash + 1) : name;
  }

  // -- data --------------------------------------------------------------------------------------------

  async function fetchStatus() {
    if (view.fetching) {
      view.again = true; // an event came while fetching: fetch once more after this one
      return;
    }
    view.fetching = true;
    try {
      const response = await fetch("/api/v1/status", { cache: "no-store", headers: { Accept: "application/json" } });
      if (!response.ok) {
        let message = `status: HTTP ${response.status}`;
        try {
          const body = await response.json();
          if (body && body.error) message = `status: ${body.error}`;
        } catch (_) {
          /* not JSON: keep the HTTP status */
        }
        throw new Error(message);
      }
      view.status = await response.json();
      showError(null);
      $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
      render();
    } catch (error) {
      showError(error && error.message ? error.message : String(error));
    } finally {
      view.fetching = false;
      if (view.again) {
        view.again = false;
        scheduleStatus();
      }
    }
  }

  function scheduleStatus() {
    clearTimeout(view.refetchTimer);
    view.refetchTimer = setTimeout(fetchStatus, DEBOUNCE_MS);
  }

  async function fetchEvents() {
    try {
      const response = await fetch("/api/v1/events?limit=100", { cache: "no-store" });
      if (!response.ok) return;
      const body = await response.json();
      for (const event of list(body && body.events)) addEvent(event);
      renderEvents();
    } catch (_) {
      /* the stream will bring new ones */
    }
  }

  function addEvent(event) {
    if (!event || typeof event !== "object") return false;
    const id = Number(event.id) || 0;
    if (id && id <= view.lastEventId) return false; // already seen (the list and the stream overlap)
    if (id) view.lastEventId = id;
    view.events.push(event);
    if (view.events.length > MAX_EVENTS) view.events.splice(0, view.events.length - MAX_EVENTS);
    return true;
  }

  function connectStream() {
    if (!window.EventSource) return;
    const source = new EventSource("/api/v1/events?stream=1");
    source.onopen = () => setLive(true);
    source.onerror = () => setLive(false); // EventSource reconnects by itself, with Last-Event-ID
    source.onmessage = (message) => {
      let event;
      try {
        event = JSON.parse(message.data);
      } catch (_) {
        return;
      }
      if (addEvent(event)) renderEvents();
      scheduleStatus();
    };
  }

  function setLive(on) {
    const live = $("live");
    live.className = on ? "live on" : "live off";
    live.textContent = on ? "live" : "reconnecting…";
  }

  function showError(message) {
    const box = $("error");
    box.hidden = !message;
    box.textContent = message || "";
  }

  // -- rendering ---------------------------------------------------------------------------------------

  // one Status document, or a StatusList of one per (vCenter, solution) (agentvm run -f A -f B)
  const docsOf = (status) =>
    status && status.kind === "StatusList" ? list(status.items).filter(Boolean) : [status || {}];

  // who leads this vCenter's solution and since when, and what this replica does (status `leadership`)
  function leaderText(doc) {
    const l = doc.leadership;
    if (!l || typeof l !== "object") return text(doc.error);
    const leader = l.leader && typeof l.leader === "object" ? l.leader : null;
    const who = leader
      ? `replica ${text(leader.replica, "?")} (pid ${text(leader.pid, "?")} on ${text(leader.host, "?")}) since ${text(leader.since, "?")}`
      : "nobody";
    const me = l.role === "leader" ? "this replica leads" : `this replica: ${text(l.role, "?")}${l.why ? ` (${text(l.why)})` : ""}`;
    return `led by ${who}; ${me}`;
  }

  function allHosts(status) {
    const hosts = [];
    const docs = docsOf(status);
    const standalone = docs.flatMap((doc) => list(doc.standalone)).filter(Boolean);
    for (const agency of [...docs.flatMap((doc) => list(doc.agencies)), ...standalone.flatMap((h) => list(h.agencies))]) {
      for (const cluster of list(agency && agency.clusters)) {
        for (const host of list(cluster && cluster.hosts)) {
          if (host) hosts.push({ agency, cluster, host });
        }
      }
    }
    return hosts;
  }

  function render() {
    const docs = docsOf(view.status);
    const root = $("agencies");
    const counts = Object.fromEntries(STATES.map((s) => [s, 0]));
    root.replaceChildren();
    for (const doc of docs) {
      const agencies = list(doc.agencies);
      if (docs.length > 1 || doc.leadership) {
        const role = doc.leadership && typeof doc.leadership === "object" ? text(doc.leadership.role) : "";
        root.append(
          el(
            "div",
            { class: "controller", "data-solution": text(doc.solution), "data-vcenter": text(doc.vcenter), "data-role": role },
            el("strong", {}, `${text(doc.solution, "solution")} on ${text(doc.vcenter, "vCenter")}`),
            " ",
            el("span", { class: "leader" }, leaderText(doc)),
          ),
        );
      }
      const standalone = list(doc.standalone).filter(Boolean);
      if (agencies.length === 0 && standalone.length === 0) {
        root.append(el("p", { class: "empty" }, "No agency yet: run `agentvm apply -f SPEC`."));
      }
      renderAgencies(root, agencies, counts);
      if (standalone.length) renderStandalone(root, standalone, counts);
    }
    renderSummary(counts);
    renderDetail();
  }

  // a spec with esxi: hosts (status `standalone`): the hosts grouped as "standalone", each with its own
  // agencies, an unreachable one with the reason
  function renderStandalone(root, hosts, counts) {
    const down = hosts.filter((h) => !h.reachable).length;
    const group = el(
      "section",
      { class: "standalone-group" },
      el("h2", {}, "standalone", " ", el("span", { class: "counts" }, `${hosts.length} host${hosts.length === 1 ? "" : "s"}${down ? `, ${down} unreachable` : ""}`)),
    );
    for (const host of hosts) {
      group.append(
        el(
          "div",
          { class: host.reachable ? "standalone" : "standalone unreachable", "data-host": text(host.name), "data-reachable": String(Boolean(host.reachable)) },
          el("strong", {}, text(host.name, "(host)")),
          " ",
          el("span", { class: "path" }, text(host.url)),
          host.reachable ? null : el("span", { class: "error" }, ` unreachable: ${text(host.error, "no reason given")}`),
        ),
      );
      renderAgencies(group, list(host.agencies), counts);
    }
    root.append(group);
  }

  function renderAgencies(root, agencies, counts) {
    for (const agency of agencies) {
      if (!agency) continue;
      const section = el(
        "section",
        { class: "agency", "data-name": text(agency.name) },
        el(
          "h2",
          {},
          text(agency.name, "(unnamed agency)"),
          " ",
          el("span", { class: `pill state-${STATES.includes(agency.status) ? agency.status : "unknown"}` }, text(agency.status, "?")),
        ),
      );
      const clusters = list(agency.clusters).filter(Boolean).sort(byName);
      if (clusters.length === 0) section.append(el("p", { class: "empty" }, "No cluster in scope."));
      for (const cluster of clusters) {
        const hosts = list(cluster.hosts).filter(Boolean).sort(byName);
        const clusterCounts = Object.fromEntries(STATES.map((s) => [s, 0]));
        const grid = el("div", { class: "hosts", role: "list" });
        for (const host of hosts) {
          const state = stateOf(host);
          if (state in counts) {
            counts[state] += 1;
            clusterCounts[state] += 1;
          }
          grid.append(hostTile(host, state));
        }
        section.append(
          el(
            "div",
            { class: "cluster", "data-name": text(cluster.name) },
            el(
              "h3",
              {},
              text(cluster.name, cluster.standalone ? "standalone" : "(cluster)"),
              " ",
              el("span", { class: "path" }, text(cluster.path)),
              " ",
              el("span", { class: "counts" }, countsText(clusterCounts, hosts.length)),
            ),
            hosts.length ? grid : el("p", { class: "empty" }, "No host."),
          ),
        );
      }
      root.append(section);
    }
  }

  function countsText(counts, total) {
    const parts = STATES.filter((s) => counts[s]).map((s) => `${counts[s]} ${s}`);
    return `${total} host${total === 1 ? "" : "s"}${parts.length ? ": " + parts.join(", ") : ""}`;
  }

  // EAM's issues and agentvm's own findings (problems: VmOnWrongHost, Flapping), one list
  const troublesOf = (host) => [...list(host.issues), ...list(host.problems)].filter(Boolean);
  const runsOnText = (host) =>
    host.runsOn && typeof host.runsOn === "object" ? text(host.runsOn.name, text(host.runsOn.moid)) : "";

  function hostTile(host, state) {
    const id = hostId(host);
    const issues = troublesOf(host);
    const away = runsOnText(host);
    const tile = el(
      "button",
      {
        type: "button",
        role: "listitem",
        class: `host state-${state}${id === view.selected ? " selected" : ""}`,
        "data-moid": text(host.moid),
        "data-state": state,
        title: `${text(host.name, id)}: ${state}${issues.length ? ` (${issues.length} issue${issues.length === 1 ? "" : "s"})` : ""}`,
        onclick: () => select(id),
      },
      el("span", { class: "name" }, shortName(host)),
      el("span", { class: "vm" }, away ? `VM on ${away}` : powerOf(host) || (host.vm ? "VM" : "no VM")),
      issues.length ? el("span", { class: "badge", "aria-label": "issues" }, String(issues.length)) : null,
      hookOf(host) ? el("span", { class: "hook", title: `hook ${hookOf(host)}` }, "⧗") : null,
      host.network && host.network.state === "error"
        ? el("span", { class: "net", title: `network: ${text(host.network.message)}` }, "⚠ network")
        : null,
    );
    return tile;
  }

  function renderSummary(counts) {
    const summary = $("summary");
    summary.replaceChildren(
      ...STATES.map((s) => el("span", { class: `count state-${s}`, "data-state": s }, `${counts[s]} ${s}`)),
    );
  }

  function select(id) {
    view.selected = view.selected === id ? null : id;
    render();
  }

  function findSelected() {
    if (!view.selected) return null;
    return allHosts(view.status).find(({ host }) => hostId(host) === view.selected) || null;
  }

  function hostEvents(host) {
    const moid = text(host.moid);
    const names = [text(host.name), text(host.path)].filter(Boolean);
    return view.events.filter((e) => (moid && e.host === moid) || names.includes(e.host_name) || names.includes(e.host));
  }

  function renderDetail() {
    const panel = $("detail");
    const found = findSelected();
    if (!found) {
      panel.hidden = true;
      return;
    }
    const { host, cluster, agency } = found;
    const vm = host.vm || {};
    const state = stateOf(host);
    panel.hidden = false;
    panel.dataset.moid = text(host.moid);
    $("detail-title").replaceChildren(shortName(host), " ", el("span", { class: `pill state-${state}` }, state));
    $("detail-path").textContent = [text(agency.name), text(host.path, text(cluster.path, text(cluster.name)))]
      .filter(Boolean)
      .join(" · ");
    const facts = [
      ["host", `${text(host.name, "?")}${host.moid ? ` (${host.moid})` : ""}`],
      ["agent VM", vm.name || vm.moid ? `${text(vm.name, "?")}${vm.moid ? ` (${vm.moid})` : ""}` : "none"],
      ["power", powerOf(host) || "unknown"],
      ["address", text(host.address, "none")],
      ["hook", hookOf(host) || "none"],
    ];
    if (runsOnText(host)) facts.push(["runs on", runsOnText(host)]);
    if (host.network && host.network.state) {
      // hostNetwork: the host's fabric port group, trunk and switch membership as agentvm last found them
      facts.push(["network", host.network.message ? `${host.network.state}: ${host.network.message}` : text(host.network.state)]);
    }
    if (host.phase) facts.push(["phase", text(host.phase)]);
    $("detail-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
    const issues = troublesOf(host);
    $("detail-issues").replaceChildren(
      ...(issues.length
        ? issues.map((i) =>
            el(
              "li",
              { class: "issue", "data-kind": text(i.kind) },
              el("strong", {}, text(i.kind, "issue")),
              i.key !== undefined ? ` #${i.key}` : "",
              el("div", { class: "message" }, text(i.message)),
              i.fix ? el("div", { class: "fix" }, "fix: ", text(i.fix)) : null,
              !i.fix && i.remedy ? el("div", { class: "fix" }, "remedy: ", text(i.remedy)) : null,
            ),
          )
        : [el("li", { class: "none" }, "none")]),
    );
    const events = hostEvents(host).slice(-20).reverse();
    $("detail-events").replaceChildren(...(events.length ? events.map(eventItem) : [el("li", { class: "none" }, "none")]));
  }

  function eventItem(event) {
    const when = event.time ? new Date(Number(event.time) * 1000).toLocaleTimeString() : "";
    return el(
      "li",
      { class: `event level-${text(event.level, "info")}`, "data-id": text(event.id) },
      el("time", {}, when),
      " ",
      el("span", { class: "type" }, text(event.type)),
      " ",
      text(event.message),
    );
  }

  function renderEvents() {
    $("events").replaceChildren(...view.events.slice(-50).reverse().map(eventItem));
    if (view.selected) renderDetail();
  }

  // -- start -------------------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("detail-close").addEventListener("click", () => select(view.selected));
    document.addEventListener("keydown", (e) => {
      if (e.key === "Escape" && view.selected) select(view.selected);
    });
    fetchEvents().then(connectStream);
    fetchStatus();
    setInterval(fetchStatus, POLL_MS);
  });

  // for tests and the curious: window.agentvm.view
  window.agentvm = { view, render, fetchStatus };
})();
