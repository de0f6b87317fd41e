// The page: the prejoin screen and the call (grid, chat, controls, stats).
// It only shows state and sends commands; the app and its engine decide.

import { invoke, listen, describe } from "./api.js";
import { VideoPipe } from "./video.js";
import { Room, Tile, layoutGrid } from "./room.js";
import { installIcons } from "./icons.js";

const $ = (id) => document.getElementById(id);
const video = new VideoPipe();
window.parleyVideo = video;

const state = {
  info: null,
  devices: null,
  inCall: false,
  micOn: true,
  camOn: true,
  room: null,
  // A link that came in during a call, filled in once it ends.
  pendingLink: null,
  // Set once start-up is done (links wait until then), and while a join
  // is being started.
  ready: false,
  joining: false,
};

function notice(text, kind = "info") {
  const box = $("notice");
  box.textContent = text;
  box.dataset.kind = kind;
  box.hidden = !text;
  clearTimeout(notice.timer);
  if (text && kind === "info") notice.timer = setTimeout(() => (box.hidden = true), 6000);
}

// ---------- prejoin ----------

function fillDevices(view) {
  state.devices = view;
  const kinds = { camera: view.cameras, microphone: view.microphones, speaker: view.speakers };
  for (const select of document.querySelectorAll("select[data-kind]")) {
    const kind = select.dataset.kind;
    const list = kinds[kind];
    select.replaceChildren(
      ...list.map((d) => new Option(d.name, d.id)),
    );
    if (list.length === 0) select.append(new Option(`No ${kind} found`, ""));
    select.disabled = list.length === 0;
    const chosen = view.selected[kind];
    if (chosen) select.value = chosen.id;
  }
  if (view.errors.length) notice(`Some devices could not be listed: ${view.errors.join("; ")}`, "warn");
}

async function chooseDevice(event) {
  const select = event.target;
  try {
    await invoke("select_device", { kind: select.dataset.kind, id: select.value });
    fillDevices(await invoke("list_devices"));
  } catch (err) {
    notice(describe(err), "warn");
  }
}

function serverChoice() {
  if ($("server-host").checked) return { kind: "host" };
  return { kind: "url", url: $("server-url").value.trim() };
}

function showServerChoice() {
  const host = $("server-host").checked;
  $("server-url").disabled = host;
  // A room hosted here lets anyone on the network in: no token.
  $("token").hidden = host;
  $("host-info").hidden = !host || !$("host-info").textContent;
}

async function startPreview() {
  try {
    await invoke("start_preview", { camera: state.camOn });
  } catch (err) {
    notice(describe(err), "warn");
  }
}

function setPreviewCamera(on) {
  state.camOn = on;
  $("pre-cam").setAttribute("aria-pressed", String(on));
  showPreviewPicture(false);
  startPreview();
}

function showPreviewPicture(shown) {
  $("preview-off").textContent = state.camOn ? "Starting camera…" : "Camera off";
  $("preview-off").hidden = shown;
  $("preview-canvas").hidden = !shown;
}

function setPreviewMic(on) {
  state.micOn = on;
  $("pre-mic").setAttribute("aria-pressed", String(on));
}

async function saveProcessing() {
  const audio_processing = {};
  for (const box of document.querySelectorAll("[data-setting]")) audio_processing[box.dataset.setting] = box.checked;
  try {
    await invoke("save_settings", { audioProcessing: audio_processing });
  } catch (err) {
    notice(describe(err), "warn");
  }
}

async function testConnection() {
  const server = serverChoice();
  let url = server.url;
  const table = $("doctor");
  try {
    if (server.kind === "host") url = (await invoke("host")).local_url;
    if (!url) throw new Error("Type the server's address first.");
    $("test-connection").disabled = true;
    table.hidden = false;
    table.tBodies[0].replaceChildren(row(["Checking every way to the server…", "", ""]));
    const token = server.kind === "url" ? $("token").value.trim() || null : null;
    const checks = await invoke("test_connection", { url, token });
    table.tBodies[0].replaceChildren(
      ...checks.map((c) => row([c.name, c.ok ? "✓ works" : "✗ fails", c.ok ? `${Math.round(c.ms ?? 0)} ms, ${c.detail ?? ""}` : c.detail ?? ""], c.ok)),
    );
  } catch (err) {
    table.tBodies[0].replaceChildren(row([describe(err), "", ""], false));
  } finally {
    $("test-connection").disabled = false;
  }
}

function row(cells, ok) {
  const tr = document.createElement("tr");
  if (ok !== undefined) tr.className = ok ? "ok" : "bad";
  for (const text of cells) {
    const td = document.createElement("td");
    td.textContent = text;
    tr.append(td);
  }
  return tr;
}

async function join(request) {
  $("join-error").hidden = true;
  $("join").disabled = true;
  state.joining = true;
  try {
    if (request.server.kind === "host") {
      const host = await invoke("host");
      showHostInfo(host);
    }
    // The room listens before the call starts: its first events come fast.
    enterCall(request);
    await invoke("join", { request });
  } catch (err) {
    if (state.inCall) backToPrejoin();
    $("join-error").textContent = describe(err);
    $("join-error").hidden = false;
  } finally {
    $("join").disabled = false;
    state.joining = false;
  }
}

function showHostInfo(host) {
  const lan = host.lan_urls.length ? host.lan_urls.join("  ") : "no network address found";
  $("host-info").textContent = `Others on your network join at ${lan}`;
  showServerChoice();
}

function submitJoin(event) {
  event.preventDefault();
  const server = serverChoice();
  join({
    server,
    room: $("room").value.trim(),
    name: $("name").value.trim(),
    token: server.kind === "url" ? $("token").value.trim() || null : null,
    camera_on: state.camOn,
    muted: !state.micOn,
  });
}

// ---------- call ----------

function enterCall(request) {
  state.inCall = true;
  $("prejoin").hidden = true;
  $("call").hidden = false;
  $("room-label").textContent = request.room;
  state.room = new Room({
    grid: $("grid"),
    video,
    self: { name: request.name, micOn: !request.muted, camOn: request.camera_on },
    onUnread: (count) => {
      $("unread").textContent = String(count);
      $("unread").hidden = count === 0;
    },
    messages: $("messages"),
  });
  setMic(!request.muted, false);
  setCam(request.camera_on, false);
  banner("Connecting…");
}

async function leaveCall() {
  try {
    await invoke("leave");
  } catch {
    backToPrejoin();
  }
}

// A link from a later start of the app (a parley:// link clicked while
// this window is open): join from it, or keep it for after this call.
function openLink(link) {
  if (!state.ready) {
    state.pendingLink = link;
    return;
  }
  if (state.inCall || state.joining) {
    state.pendingLink = link;
    notice(`A link to room ${link.room} came in: it is filled in when you leave this call.`, "warn");
    return;
  }
  fillFromLink(link);
  // Through the form, so its checks (a name is needed) apply.
  $("join-form").requestSubmit();
}

function fillFromLink(link) {
  $("server-url-choice").checked = true;
  $("server-url").value = link.server;
  showServerChoice();
  $("room").value = link.room;
  if (link.name) $("name").value = link.name;
  $("token").value = link.token ?? "";
}

// The server wants a (different) access token: say why next to the field.
function askForToken(reason) {
  $("server-url-choice").checked = true;
  showServerChoice();
  $("join-error").textContent = reason;
  $("join-error").hidden = false;
  $("token").focus();
  $("token").select();
}

function backToPrejoin(reason) {
  state.inCall = false;
  state.room?.destroy();
  state.room = null;
  $("call").hidden = true;
  $("prejoin").hidden = false;
  $("chat").hidden = true;
  $("stats").hidden = true;
  banner("");
  if (reason && reason !== "left") notice(reason, "warn");
  if (state.pendingLink) {
    fillFromLink(state.pendingLink);
    state.pendingLink = null;
  }
  video.attach("local", $("preview-canvas"), (frame) => showPreviewPicture(frame !== null));
  showPreviewPicture(false);
  startPreview();
}

function banner(text, kind = "info") {
  const box = $("banner");
  box.textContent = text;
  box.dataset.kind = kind;
  box.hidden = !text;
}

async function setMic(on, send = true) {
  state.micOn = on;
  $("mic").setAttribute("aria-pressed", String(on));
  $("mic").title = on ? "Mute (Ctrl+D)" : "Unmute (Ctrl+D)";
  state.room?.setSelf({ micOn: on });
  if (send) await invoke("set_muted", { muted: !on }).catch((e) => notice(describe(e), "warn"));
}

async function setCam(on, send = true) {
  state.camOn = on;
  $("cam").setAttribute("aria-pressed", String(on));
  state.room?.setSelf({ camOn: on });
  if (send) await invoke("set_camera", { enabled: on }).catch((e) => notice(describe(e), "warn"));
}

function toggleChat(open = $("chat").hidden) {
  $("chat").hidden = !open;
  if (open) {
    state.room?.markRead();
    $("chat-input").focus();
  }
}

async function sendChat(event) {
  event.preventDefault();
  const input = $("chat-input");
  const text = input.value.trim();
  if (!text) return;
  try {
    const clientId = await invoke("send_chat", { text });
    state.room?.addOwnPending(clientId, text);
    input.value = "";
  } catch (err) {
    notice(describe(err), "warn");
  }
}

function onCallState(payload) {
  switch (payload.state) {
    case "joined":
      banner("");
      break;
    case "reconnecting":
      banner(`Connection lost. Reconnecting (attempt ${payload.attempt})…`, "warn");
      break;
    case "ended": {
      const tokenRefused = payload.refused?.startsWith("token_");
      if (state.inCall) backToPrejoin(tokenRefused ? undefined : payload.detail);
      if (tokenRefused) askForToken(payload.detail);
      break;
    }
    default:
      break;
  }
}

function onMedia(line) {
  switch (line.type) {
    case "cli_video_device_error":
      banner(`Camera problem: ${line.error}`, "warn");
      break;
    case "cli_audio_device_error":
      banner(`${line.kind === "speaker" ? "Speaker" : "Microphone"} problem: ${line.error}`, "warn");
      break;
    case "cli_audio_device":
      if (line.fallback) notice(`${line.kind === "speaker" ? "Speaker" : "Microphone"} lost; now using ${line.name}.`, "warn");
      break;
    case "cli_muted_talking":
      notice("You are muted. Press Ctrl+D to unmute.");
      break;
    case "cli_media_error":
      banner(`Media problem: ${line.error}`, "warn");
      break;
    case "cli_path":
      state.room?.setPath(line);
      break;
    default:
      break;
  }
  state.room?.onMedia(line);
}

function keyboard(event) {
  const typing = event.target instanceof HTMLInputElement || event.target instanceof HTMLTextAreaElement;
  const key = event.key.toLowerCase();
  if (event.ctrlKey && !event.shiftKey && key === "d") {
    event.preventDefault();
    state.inCall ? setMic(!state.micOn) : setPreviewMic(!state.micOn);
  } else if (event.ctrlKey && !event.shiftKey && key === "e") {
    event.preventDefault();
    state.inCall ? setCam(!state.camOn) : setPreviewCamera(!state.camOn);
  } else if (event.ctrlKey && event.shiftKey && key === "c" && state.inCall) {
    event.preventDefault();
    toggleChat();
  } else if (event.ctrlKey && event.shiftKey && key === "s" && state.inCall) {
    event.preventDefault();
    $("stats").hidden = !$("stats").hidden;
  } else if (key === "escape" && !typing) {
    $("device-menu").hidden = true;
  }
}

async function exportDiagnostics() {
  try {
    const path = await invoke("export_diagnostics");
    notice(`Diagnostics saved to ${path}`);
  } catch (err) {
    notice(describe(err), "warn");
  }
}

/** `--bench-frames`: the synthetic tiles in the call grid, nothing else. */
function showBench(tiles) {
  $("call").hidden = false;
  $("room-label").textContent = "frame delivery benchmark";
  const grid = $("grid");
  for (const { id, width, height } of tiles) {
    grid.append(new Tile(id, `${width}×${height}`, video, () => {}).root);
  }
  layoutGrid(grid, tiles.length);
  new ResizeObserver(() => layoutGrid(grid, tiles.length)).observe(grid);
}

// ---------- start ----------

async function main() {
  installIcons();
  // Before app_info: from that call on, links from later starts come as events.
  await listen("open-link", openLink);
  const info = await invoke("app_info");
  state.info = info;
  window.parleyInfo = info;
  $("version").textContent = `Parley ${info.version}`;
  if (info.profile_notice) notice(info.profile_notice, "warn");
  const profile = info.profile;
  $("name").value = profile.display_name ?? "";
  const last = profile.last_server;
  if (last?.kind === "url") {
    $("server-url-choice").checked = true;
    $("server-url").value = last.url;
  } else {
    $("server-host").checked = true;
  }
  $("room").value = profile.recent_rooms?.[0] ?? "";
  $("recent-rooms").replaceChildren(...(profile.recent_rooms ?? []).map((r) => new Option(r)));
  for (const box of document.querySelectorAll("[data-setting]")) box.checked = profile.audio_processing[box.dataset.setting];
  showServerChoice();

  for (const select of document.querySelectorAll("select[data-kind]")) select.addEventListener("change", chooseDevice);
  for (const radio of document.querySelectorAll("input[name=server]")) radio.addEventListener("change", showServerChoice);
  for (const box of document.querySelectorAll("[data-setting]")) box.addEventListener("change", saveProcessing);
  $("join-form").addEventListener("submit", submitJoin);
  $("test-connection").addEventListener("click", testConnection);
  $("export").addEventListener("click", exportDiagnostics);
  $("pre-cam").addEventListener("click", () => setPreviewCamera(!state.camOn));
  $("pre-mic").addEventListener("click", () => setPreviewMic(!state.micOn));
  $("mic").addEventListener("click", () => setMic(!state.micOn));
  $("cam").addEventListener("click", () => setCam(!state.camOn));
  $("leave").addEventListener("click", leaveCall);
  $("chat-button").addEventListener("click", () => toggleChat());
  $("chat-close").addEventListener("click", () => toggleChat(false));
  $("chat-form").addEventListener("submit", sendChat);
  $("stats-button").addEventListener("click", () => ($("stats").hidden = !$("stats").hidden));
  $("devices-button").addEventListener("click", () => ($("device-menu").hidden = !$("device-menu").hidden));
  document.addEventListener("keydown", keyboard);

  await listen("call-state", onCallState);
  await listen("server", (message) => state.room?.onServer(message));
  await listen("media", onMedia);
  await listen("stats", (stats) => state.room?.onStats(stats, $("stats")));
  await listen("refused", (error) => notice(`Not sent: ${error}`, "warn"));
  await listen("level", (level) => {
    // RFC 6464: 0 is loudest, 127 silence; show -60..0 dBov.
    const fill = Math.max(0, Math.min(1, (60 - level) / 60));
    $("mic-meter").style.width = `${Math.round(fill * 100)}%`;
    state.room?.setLevel(fill);
  });

  video.attach("local", $("preview-canvas"), (frame) => showPreviewPicture(frame !== null));
  showPreviewPicture(false);
  await video.connect(info);
  fillDevices(await invoke("list_devices"));
  if (info.bench_tiles.length) {
    showBench(info.bench_tiles);
    return;
  }
  $("prejoin").hidden = false;
  state.ready = true;
  // A link handed over while the app started is newer than its own flags.
  const link = info.opened_link ?? state.pendingLink;
  state.pendingLink = null;
  if (link) {
    openLink(link);
  } else if (info.auto_join) {
    // Filled in too, so a refused join can be mended and tried again.
    if (info.auto_join.server.kind === "url") {
      $("server-url-choice").checked = true;
      $("server-url").value = info.auto_join.server.url;
      showServerChoice();
    }
    $("room").value = info.auto_join.room;
    $("name").value = info.auto_join.name;
    $("token").value = info.auto_join.token ?? "";
    join(info.auto_join);
  } else {
    startPreview();
  }
}

main().catch((err) => notice(`Parley could not start: ${describe(err)}`, "error"));
