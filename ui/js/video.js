// Pictures from the app: received as binary messages (see
// src-tauri/src/frames.rs for the layout), drawn with WebGL2 (YUV to RGB in
// a shader) as soon as the message task ends, and acknowledged so the app
// sends more. Drawing at once rather than on the next animation frame cut
// delivery p95 from 27 ms to 5 ms (docs/benchmarks.md); the compositor still
// shows the canvas at its next refresh. Nothing queues: a picture that
// arrives before the previous one of its tile was drawn replaces it.

import { invoke, Channel } from "./api.js";

const HEADER = 32;
const MAGIC = 0x46594c50; // "PLYF" little-endian

const VERTEX = `#version 300 es
in vec2 position;
out vec2 uv;
void main() {
  uv = vec2((position.x + 1.0) * 0.5, (1.0 - position.y) * 0.5);
  gl_Position = vec4(position, 0.0, 1.0);
}`;

// BT.601 limited range, what the H.264 decoder gives.
const FRAGMENT = `#version 300 es
precision mediump float;
uniform sampler2D planeY;
uniform sampler2D planeU;
uniform sampler2D planeV;
in vec2 uv;
out vec4 color;
void main() {
  float y = (texture(planeY, uv).r - 0.0625) * 1.164;
  float u = texture(planeU, uv).r - 0.5;
  float v = texture(planeV, uv).r - 0.5;
  color = vec4(y + 1.596 * v, y - 0.392 * u - 0.813 * v, y + 2.017 * u, 1.0);
}`;

function compile(gl, type, source) {
  const shader = gl.createShader(type);
  gl.shaderSource(shader, source);
  gl.compileShader(shader);
  if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS)) {
    throw new Error(gl.getShaderInfoLog(shader));
  }
  return shader;
}

/** Draws I420 pictures on one canvas. */
class GlRenderer {
  constructor(canvas) {
    const gl = canvas.getContext("webgl2", {
      alpha: false,
      antialias: false,
      depth: false,
      preserveDrawingBuffer: false,
    });
    if (!gl) throw new Error("WebGL2 is not available");
    this.gl = gl;
    const program = gl.createProgram();
    gl.attachShader(program, compile(gl, gl.VERTEX_SHADER, VERTEX));
    gl.attachShader(program, compile(gl, gl.FRAGMENT_SHADER, FRAGMENT));
    gl.linkProgram(program);
    if (!gl.getProgramParameter(program, gl.LINK_STATUS)) {
      throw new Error(gl.getProgramInfoLog(program));
    }
    gl.useProgram(program);
    const quad = gl.createBuffer();
    gl.bindBuffer(gl.ARRAY_BUFFER, quad);
    gl.bufferData(gl.ARRAY_BUFFER, new Float32Array([-1, -1, 1, -1, -1, 1, 1, 1]), gl.STATIC_DRAW);
    const position = gl.getAttribLocation(program, "position");
    gl.enableVertexAttribArray(position);
    gl.vertexAttribPointer(position, 2, gl.FLOAT, false, 0, 0);
    gl.pixelStorei(gl.UNPACK_ALIGNMENT, 1);
    this.textures = ["planeY", "planeU", "planeV"].map((name, unit) => {
      const texture = gl.createTexture();
      gl.activeTexture(gl.TEXTURE0 + unit);
      gl.bindTexture(gl.TEXTURE_2D, texture);
      for (const p of [gl.TEXTURE_MIN_FILTER, gl.TEXTURE_MAG_FILTER]) gl.texParameteri(gl.TEXTURE_2D, p, gl.LINEAR);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
      gl.uniform1i(gl.getUniformLocation(program, name), unit);
      return texture;
    });
    this.width = 0;
    this.height = 0;
    this.kind = "webgl2";
  }

  draw(frame) {
    const { gl } = this;
    const { width, height, data, offset } = frame;
    this.last = frame;
    const cw = width >> 1;
    const ch = height >> 1;
    const planes = [
      [width, height, new Uint8Array(data, offset, width * height)],
      [cw, ch, new Uint8Array(data, offset + width * height, cw * ch)],
      [cw, ch, new Uint8Array(data, offset + width * height + cw * ch, cw * ch)],
    ];
    const resized = width !== this.width || height !== this.height;
    planes.forEach(([w, h, bytes], unit) => {
      gl.activeTexture(gl.TEXTURE0 + unit);
      gl.bindTexture(gl.TEXTURE_2D, this.textures[unit]);
      if (resized) gl.texImage2D(gl.TEXTURE_2D, 0, gl.R8, w, h, 0, gl.RED, gl.UNSIGNED_BYTE, bytes);
      else gl.texSubImage2D(gl.TEXTURE_2D, 0, 0, 0, w, h, gl.RED, gl.UNSIGNED_BYTE, bytes);
    });
    this.width = width;
    this.height = height;
    const canvas = gl.canvas;
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    gl.viewport(0, 0, width, height);
    gl.drawArrays(gl.TRIANGLE_STRIP, 0, 4);
  }

  /** Grey levels on a grid over the last picture as drawn, for tests. The
   *  drawing buffer is not kept after compositing, so it is drawn again
   *  and read in the same task. */
  sample(grid) {
    const { gl } = this;
    if (this.last) this.draw(this.last);
    const values = [];
    const pixel = new Uint8Array(4);
    for (let gy = 1; gy <= grid; gy++) {
      for (let gx = 1; gx <= grid; gx++) {
        const x = Math.floor((gx / (grid + 1)) * gl.drawingBufferWidth);
        const y = Math.floor((gy / (grid + 1)) * gl.drawingBufferHeight);
        gl.readPixels(x, y, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, pixel);
        values.push(Math.round((pixel[0] + pixel[1] + pixel[2]) / 3));
      }
    }
    return values;
  }
}

/** The same pictures on a 2D canvas, converted in JavaScript: slow, for
 *  machines whose WebView has no WebGL2. */
class CanvasRenderer {
  constructor(canvas) {
    this.canvas = canvas;
    this.context = canvas.getContext("2d");
    this.image = null;
    this.kind = "2d";
  }

  draw({ width, height, data, offset }) {
    if (this.canvas.width !== width || this.canvas.height !== height) {
      this.canvas.width = width;
      this.canvas.height = height;
    }
    if (!this.image || this.image.width !== width || this.image.height !== height) {
      this.image = this.context.createImageData(width, height);
    }
    const src = new Uint8Array(data, offset);
    const out = this.image.data;
    const cw = width >> 1;
    const uBase = width * height;
    const vBase = uBase + cw * (height >> 1);
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const c = (y >> 1) * cw + (x >> 1);
        const yy = (src[y * width + x] - 16) * 1.164;
        const u = src[uBase + c] - 128;
        const v = src[vBase + c] - 128;
        const o = (y * width + x) * 4;
        out[o] = yy + 1.596 * v;
        out[o + 1] = yy - 0.392 * u - 0.813 * v;
        out[o + 2] = yy + 2.017 * u;
        out[o + 3] = 255;
      }
    }
    this.context.putImageData(this.image, 0, 0);
  }

  sample(grid) {
    const values = [];
    for (let gy = 1; gy <= grid; gy++) {
      for (let gx = 1; gx <= grid; gx++) {
        const x = Math.floor((gx / (grid + 1)) * this.canvas.width);
        const y = Math.floor((gy / (grid + 1)) * this.canvas.height);
        const [r, g, b] = this.context.getImageData(x, y, 1, 1).data;
        values.push(Math.round((r + g + b) / 3));
      }
    }
    return values;
  }
}

function makeRenderer(canvas) {
  try {
    return new GlRenderer(canvas);
  } catch (err) {
    console.warn("WebGL2 unavailable, drawing in 2D:", err);
    return new CanvasRenderer(canvas);
  }
}

const nowUs = () => (performance.timeOrigin + performance.now()) * 1000;

/** Every tile's canvas and newest picture; the transport; the figures. */
export class VideoPipe {
  constructor() {
    this.views = new Map(); // tile id -> { canvas, renderer, onFrame }
    this.pending = new Map(); // tile id -> newest undrawn frame
    this.acks = 0;
    this.stats = { received: 0, drawn: 0, replaced: 0, latencies: [] };
    this.sendAck = () => {};
    this.transport = "none";
    this.scheduled = false;
    this.decoder = new TextDecoder();
  }

  async connect(info) {
    this.transport = info.frame_transport;
    if (info.frame_transport === "websocket" && info.frame_url) {
      this.connectSocket(info.frame_url);
    } else {
      const channel = new Channel();
      channel.onmessage = (data) => this.receive(data instanceof ArrayBuffer ? data : new Uint8Array(data).buffer);
      this.sendAck = (count) => invoke("frames_ack", { count }).catch(() => {});
      await invoke("frames_subscribe", { channel });
    }
    setInterval(() => this.report(), 5000);
  }

  connectSocket(url) {
    const socket = new WebSocket(url);
    socket.binaryType = "arraybuffer";
    socket.onmessage = (event) => this.receive(event.data);
    socket.onopen = () => {
      this.sendAck = (count) => socket.readyState === 1 && socket.send(String(count));
    };
    socket.onclose = () => {
      this.sendAck = () => {};
      setTimeout(() => this.connectSocket(url), 1000);
    };
  }

  receive(buffer) {
    const view = new DataView(buffer);
    if (buffer.byteLength < HEADER || view.getUint32(0, true) !== MAGIC) return;
    const width = view.getUint32(8, true);
    const height = view.getUint32(12, true);
    const sentUs = Number(view.getBigUint64(16, true));
    const idLength = view.getUint16(24, true);
    const tile = this.decoder.decode(new Uint8Array(buffer, HEADER, idLength));
    const frame = { width, height, sentUs, data: buffer, offset: HEADER + idLength };
    this.stats.received++;
    if (this.pending.has(tile)) {
      this.stats.replaced++;
      this.acks++;
    }
    this.pending.set(tile, frame);
    if (!this.scheduled) {
      this.scheduled = true;
      // Coalesces pictures that arrive in one task; draws before the next.
      queueMicrotask(() => this.drawPending());
    }
  }

  drawPending() {
    this.scheduled = false;
    for (const [tile, frame] of this.pending) {
      this.acks++;
      const view = this.views.get(tile);
      if (!view) continue;
      if (frame.width === 0) {
        view.onFrame?.(null);
        continue;
      }
      view.renderer.draw(frame);
      view.onFrame?.(frame);
      this.stats.drawn++;
      const latency = (nowUs() - frame.sentUs) / 1000;
      if (this.stats.latencies.length < 20000) this.stats.latencies.push(latency);
    }
    this.pending.clear();
    if (this.acks > 0) {
      this.sendAck(this.acks);
      this.acks = 0;
    }
  }

  /** Shows `tile` on `canvas`; `onFrame(frame | null)` hears each picture. */
  attach(tile, canvas, onFrame) {
    this.views.set(tile, { canvas, renderer: makeRenderer(canvas), onFrame });
  }

  detach(tile) {
    this.views.delete(tile);
    this.pending.delete(tile);
  }

  sample(tile, grid = 4) {
    const view = this.views.get(tile);
    return view ? view.renderer.sample(grid) : null;
  }

  report() {
    const sorted = [...this.stats.latencies].sort((a, b) => a - b);
    const at = (q) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] : null);
    const stats = {
      transport: this.transport,
      received: this.stats.received,
      drawn: this.stats.drawn,
      replaced_in_page: this.stats.replaced,
      latency_ms: { p50: at(0.5), p95: at(0.95), max: sorted.at(-1) ?? null, samples: sorted.length },
      tiles: this.views.size,
      renderers: [...new Set([...this.views.values()].map((view) => view.renderer.kind))],
    };
    this.stats.latencies = [];
    window.parleyFrameStats = stats;
    invoke("frame_stats", { stats }).catch(() => {});
  }
}
