// The page's calls to its own server. Every call carries the API key when there is one; a 401
// asks for the key once (a dialog), keeps it for this tab (sessionStorage), and tries again.

const KEY_ITEM = "npu-engine.api-key";

export class Api {
  constructor(askKey) {
    this.askKey = askKey; // (refused) => Promise<string | null>: the key typed, null if cancelled
    this.asking = null; // the question being asked, shared by the calls refused meanwhile
  }

  get key() {
    return sessionStorage.getItem(KEY_ITEM) || "";
  }

  headers(extra = {}) {
    const headers = { ...extra };
    if (this.key) headers.Authorization = `Bearer ${this.key}`;
    return headers;
  }

  // fetch with the key; on 401, ask for a key and try again (until it is accepted or cancelled).
  // Calls refused together share one question; a call refused with a key since replaced retries.
  async call(path, options = {}) {
    for (;;) {
      const used = this.key;
      const response = await fetch(path, { ...options, headers: this.headers(options.headers || {}) });
      if (response.status !== 401) return response;
      if (this.key !== used) continue;
      if (!this.asking) {
        this.asking = this.askKey(Boolean(used)).then((key) => {
          if (key) sessionStorage.setItem(KEY_ITEM, key);
          return key;
        }).finally(() => { this.asking = null; });
      }
      const key = await this.asking;
      if (!key) return response;
    }
  }

  async json(path, options = {}) {
    const response = await this.call(path, options);
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(errorText(body, response.status));
    return body;
  }

  post(path, body) {
    return this.json(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
  }

  // A streamed chat completion: calls onStart(response) once the status line is in, onText(text)
  // for each piece, and returns the last chunk's `npu_engine` object (who answered, the receipt).
  async streamChat(body, { onStart, onText, signal }) {
    const response = await this.call("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
      signal,
    });
    if (!response.ok) {
      const failure = await response.json().catch(() => ({}));
      throw new Error(errorText(failure, response.status));
    }
    onStart(response);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let answered = null;
    let usage = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const data = line.slice(6);
          if (data === "[DONE]") return { answered, usage };
          const chunk = JSON.parse(data);
          if (chunk.error) throw new Error(chunk.error.message || "the stream failed");
          if (chunk.usage) usage = chunk.usage;
          if (chunk.npu_engine) answered = chunk.npu_engine;
          const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
          if (delta && delta.content) onText(delta.content);
        }
      }
    }
    return { answered, usage };
  }
}

export function errorText(body, status) {
  const error = body && body.error;
  const message = typeof error === "string" ? error : error && error.message;
  return message ? `${message} (HTTP ${status})` : `HTTP ${status}`;
}
