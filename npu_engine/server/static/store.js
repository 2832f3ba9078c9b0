// Conversations, kept in this browser (localStorage): listable and deletable, never sent anywhere
// but to this server, with each prompt.

const ITEM = "npu-engine.conversations";

export class Conversations {
  constructor(storage = localStorage) {
    this.storage = storage;
    this.all = this.read();
  }

  read() {
    try {
      const found = JSON.parse(this.storage.getItem(ITEM) || "{}");
      return found && typeof found === "object" ? found : {};
    } catch {
      return {}; // an unreadable entry is not worth an error: start again
    }
  }

  save() {
    try {
      this.storage.setItem(ITEM, JSON.stringify(this.all));
    } catch {
      // Full storage: drop the oldest conversation and try once more.
      const oldest = this.list().at(-1);
      if (oldest) {
        delete this.all[oldest.id];
        this.storage.setItem(ITEM, JSON.stringify(this.all));
      }
    }
  }

  // Newest first.
  list() {
    return Object.values(this.all).sort((a, b) => b.updated - a.updated);
  }

  create() {
    const id = `c${Date.now().toString(36)}${Math.random().toString(36).slice(2, 7)}`;
    const now = Date.now();
    this.all[id] = { id, title: "New chat", created: now, updated: now, messages: [] };
    return this.all[id];
  }

  get(id) {
    return this.all[id] || null;
  }

  add(conversation, message) {
    conversation.messages.push(message);
    if (conversation.title === "New chat" && message.role === "user") {
      conversation.title = message.content.trim().split("\n")[0].slice(0, 60) || "New chat";
    }
    conversation.updated = Date.now();
    this.all[conversation.id] = conversation;
    this.save();
  }

  remove(id) {
    delete this.all[id];
    this.save();
  }
}
