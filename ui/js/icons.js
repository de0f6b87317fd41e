// Line icons drawn inline (no icon font, no emoji: both may be missing on
// a fresh Linux desktop).

const PATHS = {
  mic: "M12 3a3 3 0 0 0-3 3v6a3 3 0 0 0 6 0V6a3 3 0 0 0-3-3zM5 11a7 7 0 0 0 14 0M12 18v3",
  cam: "M3 7h12v10H3zM15 10l6-3v10l-6-3",
  gear: "M12 9a3 3 0 1 0 0 6 3 3 0 0 0 0-6zM4 12h2M18 12h2M12 4v2M12 18v2M6.3 6.3l1.4 1.4M16.3 16.3l1.4 1.4M6.3 17.7l1.4-1.4M16.3 7.7l1.4-1.4",
  chat: "M4 5h16v11H9l-5 4z",
  stats: "M5 19V11M10 19V5M15 19v-6M20 19V8",
};

function icon(name) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.classList.add("icon");
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("d", PATHS[name]);
  svg.append(path);
  return svg;
}

const BUTTONS = {
  "pre-mic": "mic",
  "pre-cam": "cam",
  mic: "mic",
  cam: "cam",
  "devices-button": "gear",
  "chat-button": "chat",
  "stats-button": "stats",
};

export function installIcons() {
  for (const [id, name] of Object.entries(BUTTONS)) {
    const button = document.getElementById(id);
    const badge = button.querySelector(".badge");
    button.replaceChildren(icon(name));
    if (badge) button.append(badge);
  }
}
