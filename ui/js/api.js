// The app's commands and events (window.__TAURI__, injected by the shell).

const tauri = window.__TAURI__;

export const invoke = (command, args) => tauri.core.invoke(command, args);
export const listen = (event, handler) => tauri.event.listen(event, (e) => handler(e.payload));
export const Channel = tauri.core.Channel;

/** A command error as a sentence. */
export function describe(error) {
  if (error && typeof error === "object") return error.message ?? String(error.kind).replaceAll("_", " ");
  return String(error);
}
