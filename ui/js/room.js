// The room as the page shows it: who is here (from the server's messages),
// their tiles in a grid sized to the window, chat, and the stats overlay.

import { invoke } from "./api.js";

const LOCAL = "local";
const SUBSCRIBE_DEBOUNCE_MS = 250;

function initials(name) {
  return name
    .split(/\s+/)
    .filter(Boolean)
    .slice(0, 2)
    .map((w) => w[0].toUpperCase())
    .join("");
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** One participant's tile. */
export class Tile {
  constructor(id, name, video, onResize) {
    this.id = id;
    this.root = el("div", "tile");
    this.root.dataset.tile = id;
    this.canvas = el("canvas");
    this.avatar = el("div", "avatar", initials(name) || "?");
    this.label = el("div", "name");
    this.nameText = el("span", "", name);
    this.mutedIcon = el("span", "muted-icon", "muted");
    this.mutedIcon.hidden = true;
    this.label.append(this.nameText, this.mutedIcon);
    this.quality = el("div", "quality");
    this.quality.hidden = true;
    this.root.append(this.canvas, this.avatar, this.label, this.quality);
    this.hasPicture = false;
    this.cameraOn = true;
    this.video = video;
    video.attach(id, this.canvas, (frame) => {
      this.hasPicture = frame !== null;
      this.refresh();
    });
    this.observer = new ResizeObserver(() => onResize(this));
    this.observer.observe(this.root);
    this.refresh();
  }

  setName(name) {
    this.nameText.textContent = name;
    this.avatar.textContent = initials(name) || "?";
  }

  setMuted(muted) {
    this.mutedIcon.hidden = !muted;
    this.root.classList.toggle("is-muted", muted);
  }

  setCamera(on) {
    this.cameraOn = on;
    this.refresh();
  }

  setSpeaking(speaking) {
    this.root.classList.toggle("speaking", speaking);
  }

  setQuality(quality) {
    this.quality.hidden = !quality;
    this.quality.textContent = quality ?? "";
    this.quality.dataset.quality = quality ?? "";
  }

  refresh() {
    const showVideo = this.cameraOn && this.hasPicture;
    this.canvas.hidden = !showVideo;
    this.avatar.hidden = showVideo;
  }

  /** The tile's size in device pixels. */
  pixelSize() {
    const rect = this.root.getBoundingClientRect();
    const scale = window.devicePixelRatio || 1;
    return { width: Math.round(rect.width * scale), height: Math.round(rect.height * scale) };
  }

  destroy() {
    this.observer.disconnect();
    this.video.detach(this.id);
    this.root.remove();
  }
}

/** Columns and rows that make `count` tiles as large as possible at 16:9. */
export function layoutGrid(grid, count) {
  const { width, height } = grid.getBoundingClientRect();
  if (!count || !width || !height) return;
  let best = { columns: 1, size: 0 };
  for (let columns = 1; columns <= count; columns++) {
    const rows = Math.ceil(count / columns);
    const tileWidth = Math.min(width / columns, ((height / rows) * 16) / 9);
    if (tileWidth > best.size) best = { columns, size: tileWidth };
  }
  grid.style.setProperty("--columns", String(best.columns));
  grid.style.setProperty("--tile-width", `${Math.floor(best.size) - 8}px`);
}

export class Room {
  constructor({ grid, video, self, onUnread, messages }) {
    this.grid = grid;
    this.video = video;
    this.messages = messages;
    this.onUnread = onUnread;
    this.unread = 0;
    this.participants = new Map(); // id -> { name, tracks: Map(trackId -> track) }
    this.tiles = new Map(); // tile id -> Tile
    this.pendingChat = new Map(); // client_id -> <li>
    this.selfId = null;
    this.self = self;
    this.subscribeTimers = new Map();
    this.path = null;
    this.lastStats = null;
    const local = new Tile(LOCAL, `${self.name} (you)`, video, () => {});
    local.root.classList.add("self");
    this.tiles.set(LOCAL, local);
    this.grid.append(local.root);
    this.setSelf(self);
    this.layoutObserver = new ResizeObserver(() => this.layout());
    this.layoutObserver.observe(this.grid);
    this.layout();
  }

  destroy() {
    this.layoutObserver.disconnect();
    for (const tile of this.tiles.values()) tile.destroy();
    this.tiles.clear();
    for (const timer of this.subscribeTimers.values()) clearTimeout(timer);
    this.messages.replaceChildren();
  }

  setSelf({ micOn, camOn }) {
    const tile = this.tiles.get(LOCAL);
    if (micOn !== undefined) {
      this.self.micOn = micOn;
      tile?.setMuted(!micOn);
    }
    if (camOn !== undefined) {
      this.self.camOn = camOn;
      tile?.setCamera(camOn);
    }
  }

  setLevel(fill) {
    this.tiles.get(LOCAL)?.root.style.setProperty("--level", String(this.self.micOn ? fill : 0));
  }

  setPath(line) {
    this.path = line;
  }

  // ----- participants and tiles -----

  tileId(participantId) {
    return `${participantId}/camera`;
  }

  addParticipant(info) {
    const tracks = new Map(info.tracks.map((t) => [t.id, t]));
    this.participants.set(info.id, { name: info.name, tracks });
    const id = this.tileId(info.id);
    let tile = this.tiles.get(id);
    if (!tile) {
      tile = new Tile(id, info.name, this.video, (t) => this.resized(info.id, t));
      tile.root.dataset.participant = info.id;
      this.tiles.set(id, tile);
      this.grid.append(tile.root);
    }
    this.updateTile(info.id);
    this.layout();
  }

  removeParticipant(participantId) {
    this.participants.delete(participantId);
    const id = this.tileId(participantId);
    this.tiles.get(id)?.destroy();
    this.tiles.delete(id);
    this.layout();
  }

  updateTile(participantId) {
    const participant = this.participants.get(participantId);
    const tile = this.tiles.get(this.tileId(participantId));
    if (!participant || !tile) return;
    const mic = [...participant.tracks.values()].find((t) => t.kind === "audio");
    const cam = [...participant.tracks.values()].find((t) => t.kind === "video");
    tile.setMuted(!mic || mic.muted);
    tile.setCamera(Boolean(cam) && !cam.muted);
    tile.setName(participant.name);
  }

  /** Asks the SFU for the layer this tile's size needs (debounced). */
  resized(participantId, tile) {
    clearTimeout(this.subscribeTimers.get(participantId));
    this.subscribeTimers.set(
      participantId,
      setTimeout(() => {
        const { width, height } = tile.pixelSize();
        invoke("subscribe_tile", {
          participantId,
          trackId: "camera",
          width: Math.max(1, width),
          height: Math.max(1, height),
          visible: width > 0 && height > 0,
        }).catch(() => {});
      }, SUBSCRIBE_DEBOUNCE_MS),
    );
  }

  layout() {
    layoutGrid(this.grid, this.tiles.size);
  }

  // ----- server messages -----

  onServer(message) {
    switch (message.type) {
      case "joined":
        this.selfId = message.participant_id;
        for (const id of [...this.participants.keys()]) this.removeParticipant(id);
        for (const p of message.participants) this.addParticipant(p);
        this.messages.replaceChildren();
        for (const chat of message.chat_history) this.addChat(chat, false);
        break;
      case "participant_joined":
        this.addParticipant(message.participant);
        break;
      case "participant_left":
        this.removeParticipant(message.participant_id);
        break;
      case "track_published": {
        const p = this.participants.get(message.participant_id);
        if (p) {
          p.tracks.set(message.track.id, message.track);
          this.updateTile(message.participant_id);
        }
        break;
      }
      case "track_unpublished": {
        const p = this.participants.get(message.participant_id);
        if (p) {
          p.tracks.delete(message.track_id);
          this.updateTile(message.participant_id);
        }
        break;
      }
      case "track_muted": {
        const track = this.participants.get(message.participant_id)?.tracks.get(message.track_id);
        if (track) {
          track.muted = message.muted;
          this.updateTile(message.participant_id);
        }
        break;
      }
      case "active_speakers": {
        const speaking = new Set(message.speakers.map((s) => s.participant_id));
        for (const [id, tile] of this.tiles) {
          const participant = id === LOCAL ? this.selfId : id.split("/")[0];
          tile.setSpeaking(speaking.has(participant));
        }
        break;
      }
      case "chat_message":
        this.addChat(message, true);
        break;
      default:
        break;
    }
  }

  onMedia() {}

  // ----- chat -----

  addOwnPending(clientId, text) {
    const item = this.chatItem(this.self.name, text, Date.now(), true);
    item.classList.add("pending");
    this.pendingChat.set(clientId, item);
    this.messages.append(item);
    item.scrollIntoView({ block: "end" });
  }

  chatItem(name, text, ts, own) {
    const item = el("li", own ? "own" : "");
    const head = el("div", "meta");
    head.append(el("strong", "", name), el("time", "", new Date(ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })));
    item.append(head, el("p", "", text));
    return item;
  }

  addChat(chat, live) {
    const own = chat.participant_id === this.selfId;
    const pending = this.pendingChat.get(chat.client_id);
    if (pending) {
      pending.classList.remove("pending");
      this.pendingChat.delete(chat.client_id);
      return;
    }
    const item = this.chatItem(chat.name, chat.text, chat.ts_ms, own);
    item.dataset.seq = chat.seq;
    this.messages.append(item);
    item.scrollIntoView({ block: "end" });
    const panelOpen = !document.getElementById("chat").hidden;
    if (live && !own) {
      if (!panelOpen) {
        this.unread++;
        this.onUnread(this.unread);
      }
      if (!document.hasFocus()) invoke("notify", { title: chat.name, body: chat.text }).catch(() => {});
    }
  }

  markRead() {
    this.unread = 0;
    this.onUnread(0);
  }

  // ----- stats -----

  onStats(stats, overlay) {
    this.lastStats = stats;
    const rtt = stats.connection?.rtt_ms;
    for (const remote of stats.remote ?? []) {
      if (remote.kind !== "video") continue;
      const tile = this.tiles.get(`${remote.participant_id}/${remote.track_id}`);
      const loss = remote.transport?.loss ?? 0;
      let quality = "good";
      if (loss > 0.08 || (rtt ?? 0) > 400) quality = "poor";
      else if (loss > 0.02 || (rtt ?? 0) > 200) quality = "fair";
      tile?.setQuality(quality);
    }
    if (overlay.hidden) return;
    const lines = [];
    const c = stats.connection ?? {};
    lines.push(["Path", c.local_candidate ? `${c.local_candidate} / ${c.transport}` : "connecting"]);
    lines.push(["Round trip", rtt != null ? `${Math.round(rtt)} ms` : "–"]);
    lines.push(["Send estimate", c.estimate_bps ? `${(c.estimate_bps / 1e6).toFixed(2)} Mbit/s` : "–"]);
    const sent = (stats.published ?? []).reduce((sum, p) => sum + (p.bitrate_bps ?? 0), 0);
    lines.push(["Sending", `${(sent / 1e6).toFixed(2)} Mbit/s`]);
    for (const remote of stats.remote ?? []) {
      if (!remote.active) continue;
      const name = this.participants.get(remote.participant_id)?.name ?? remote.participant_id;
      const t = remote.transport ?? {};
      const size = remote.video?.width ? `, ${remote.video.width}×${remote.video.height}` : "";
      lines.push([
        `${name} ${remote.kind}`,
        `${((t.bitrate_bps ?? 0) / 1e3).toFixed(0)} kbit/s, loss ${((t.loss ?? 0) * 100).toFixed(1)}%${size}`,
      ]);
    }
    const frames = stats.frames;
    if (frames) lines.push(["Pictures to screen", `${frames.sent} sent, ${frames.replaced} skipped`]);
    const table = el("table");
    for (const [k, v] of lines) {
      const tr = el("tr");
      tr.append(el("th", "", k), el("td", "", v));
      table.append(tr);
    }
    overlay.replaceChildren(table);
  }
}
