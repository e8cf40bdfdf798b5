// The chat playground: model and autonomy level, streamed replies (POST /v1/requests with stream: true),
// cancel, and the conversation history from GET /v1/requests.
import { errorFrom, get, post, raw } from "./api.js";
import { emptyState, errorBox, field, h, replace, when } from "./dom.js";
import { hasScope } from "./session.js";
import { sseEvents } from "./sse.js";

const LEVELS = [
  ["", "Tenant default"], ["no_ai", "No AI"], ["assisted", "Assisted"], ["collaborator", "Collaborator"],
  ["expert", "Expert"], ["agent", "Agent"],
];

const uuid = () => (crypto.randomUUID ? crypto.randomUUID()
  : Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join(""));

function newConversation() {
  return { id: `conv_${uuid().replaceAll("-", "").slice(0, 20)}`, messages: [] };
}

let conversation = newConversation();

const inputMessages = (request) => (request.input && Array.isArray(request.input.messages) ? request.input.messages : []);

export async function chatView(main) {
  const canWrite = hasScope("requests:write");
  const historyList = h("div", { id: "history", "aria-live": "polite" });
  const transcript = h("ol", { id: "transcript", class: "transcript", "aria-label": "Conversation" });
  const status = h("div", { id: "chat-status", "aria-live": "polite" });
  const model = h("select", { id: "model", name: "model" });
  const level = h("select", { id: "autonomy", name: "autonomy_level" },
    LEVELS.map(([value, label]) => h("option", { value }, label)));
  const maxTokens = h("input", { id: "max-tokens", type: "number", min: "1", max: "4096", value: "64" });
  const message = h("textarea", { id: "message", name: "message", rows: "3", required: true,
    placeholder: "Ask something…" });
  const send = h("button", { type: "submit", id: "send", class: "primary" }, "Send");
  const cancel = h("button", { type: "button", id: "cancel", disabled: true }, "Cancel");
  const convLabel = h("code", { id: "conversation-id" }, conversation.id);
  let running = null;  // { id }

  const composer = h("form", { id: "composer", class: "composer" },
    field("Message", message),
    h("div", { class: "row" }, send, cancel));
  composer.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) composer.requestSubmit();
  });
  composer.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (!running && message.value.trim()) submit(message.value.trim());
  });
  cancel.addEventListener("click", async () => {
    if (!running || !running.id) return;
    cancel.disabled = true;
    try {
      await post(`/v1/requests/${encodeURIComponent(running.id)}/cancel`);
    } catch (err) {
      replace(status, errorBox(err));
    }
  });

  const fresh = h("button", { type: "button", id: "new-conversation", onclick: () => {
    conversation = newConversation();
    convLabel.textContent = conversation.id;
    renderTranscript();
    replace(status);
    message.focus();
  } }, "New conversation");

  replace(main, h("section", { class: "chat" },
    h("aside", { class: "history card", "aria-labelledby": "history-title" },
      h("h2", { id: "history-title" }, "Conversations"), fresh, historyList),
    h("div", { class: "conversation card" },
      h("h1", {}, "Chat playground"),
      h("div", { class: "controls" },
        field("Model", model), field("Autonomy level", level), field("Max tokens", maxTokens)),
      h("p", { class: "muted small" }, "Conversation ", convLabel),
      transcript,
      canWrite ? composer : h("p", { class: "notice" }, "Your role can read requests but not send them."),
      status)));

  function renderTranscript() {
    replace(transcript, conversation.messages.length ? conversation.messages.map(bubble)
      : h("li", { class: "empty" }, "No messages yet. Type one below and press Send (Ctrl+Enter)."));
  }

  function bubble(m) {
    return h("li", { class: `msg ${m.role}` }, h("div", { class: "who" }, m.role === "user" ? "You" : "Assistant"),
      h("div", { class: "text" }, m.content));
  }

  async function loadModels() {
    try {
      const models = await get("/v1/models");
      replace(model, models.data.map((m) => h("option", { value: m.id }, m.id)));
    } catch (err) {
      replace(status, errorBox(err));
    }
  }

  // The requests behind the list, newest first: a page of 100 at first, older pages on demand.
  let historyRows = [];
  let historyCursor = null;

  async function loadHistory(older = false) {
    try {
      const query = older && historyCursor ? `&cursor=${encodeURIComponent(historyCursor)}` : "";
      const page = await get(`/v1/requests?limit=100${query}`);
      historyRows = older ? historyRows.concat(page.data) : page.data;
      historyCursor = page.next_cursor;
      renderHistory(historyRows);
    } catch (err) {
      replace(historyList, errorBox(err));
    }
  }

  function renderHistory(rows) {
    const groups = new Map();
    for (const r of rows) {  // newest first
      const key = r.conversation_id || r.id;
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(r);
    }
    if (!groups.size) {
      replace(historyList, emptyState("No requests yet. Your conversations show up here."));
      return;
    }
    replace(historyList, h("ul", { class: "list" }, [...groups.entries()].map(([key, reqs]) => {
      const latest = reqs[0];
      const first = inputMessages(latest).find((m) => m.role === "user");
      const title = first ? first.content.slice(0, 60) : latest.id;
      return h("li", {}, h("button", {
        type: "button", class: "history-item", "data-conversation": key,
        "data-request-ids": reqs.map((r) => r.id).join(" "),
        "aria-current": key === conversation.id ? "true" : false,
        onclick: () => open(key, latest),
      }, h("span", { class: "title" }, title),
      h("span", { class: "meta" }, `${reqs.length} request${reqs.length > 1 ? "s" : ""} · ${latest.status} · ${when(latest.created_at)}`)));
    })));
    if (historyCursor) {  // older conversations: the next page of requests, appended
      historyList.append(h("button", { type: "button", id: "history-older", class: "link",
        onclick: () => loadHistory(true) }, "Show older conversations"));
    }
  }

  function open(key, latest) {
    const messages = [...inputMessages(latest)];
    if (latest.output && latest.output.text) messages.push({ role: "assistant", content: latest.output.text });
    conversation = { id: latest.conversation_id || newConversation().id, messages };
    convLabel.textContent = conversation.id;
    renderTranscript();
    replace(status, latest.conversation_id ? null
      : h("p", { class: "muted" }, `Request ${key} had no conversation id; replies start a new conversation.`));
    loadHistory();
  }

  async function submit(content) {
    replace(status);
    const userMsg = { role: "user", content };
    if (!conversation.messages.length) transcript.replaceChildren();
    const userEl = bubble(userMsg);
    transcript.append(userEl);
    const textEl = h("div", { class: "text" });
    const item = h("li", { class: "msg assistant streaming", "data-status": "queued" },
      h("div", { class: "who" }, "Assistant"), textEl);
    transcript.append(item);
    message.value = "";
    send.disabled = true;
    running = { id: null };
    const body = { messages: [...conversation.messages, userMsg], conversation_id: conversation.id, stream: true,
      max_tokens: Number(maxTokens.value) || 64 };
    if (level.value) body.autonomy_level = level.value;
    let text = "";
    let final = null;
    try {
      let res = await raw("/v1/requests", { method: "POST", body: JSON.stringify(body),
        headers: { Accept: "text/event-stream", "Idempotency-Key": uuid() } });
      if (!res.ok) throw await errorFrom(res);
      running.id = (res.headers.get("Location") || "").split("/").pop();
      item.dataset.requestId = running.id;
      item.dataset.status = "running";
      cancel.disabled = false;
      for (let attempt = 0; !final && attempt < 6; attempt += 1) {
        if (attempt > 0) {  // the stream dropped: resume after the text we have
          res = await raw(`/v1/requests/${encodeURIComponent(running.id)}/stream?after=${text.length}`);
          if (!res.ok) throw await errorFrom(res);
        }
        try {
          for await (const ev of sseEvents(res.body)) {
            if (ev.event === "token") {
              const d = JSON.parse(ev.data);
              text = text.slice(0, d.position - d.delta.length) + d.delta;
              textEl.textContent = text;
            } else if (ev.event === "restart") {
              text = "";
              textEl.textContent = "";
            } else if (ev.event === "done") {
              final = JSON.parse(ev.data);
            }
          }
        } catch (err) {
          if (attempt === 5) throw err;
        }
      }
      if (!final) final = await get(`/v1/requests/${encodeURIComponent(running.id)}`);
      finish(final);
    } catch (err) {
      replace(status, errorBox(err));
      if (!running.id) {  // refused at submit: nothing was created; give the text back
        item.remove();
        userEl.remove();
        message.value = content;
        if (!conversation.messages.length) renderTranscript();
      } else {
        item.dataset.status = "error";
        item.classList.remove("streaming");
      }
    } finally {
      running = null;
      send.disabled = false;
      cancel.disabled = true;
      message.focus();
    }

    function finish(done) {
      item.classList.remove("streaming");
      item.dataset.status = done.status;
      if (done.output && typeof done.output.text === "string") {
        text = done.output.text;
        textEl.textContent = text;
      }
      const notes = [];
      if (done.status === "canceled") notes.push("Canceled: the text generated so far is shown.");
      if (done.status === "awaiting_approval") notes.push("This draft awaits a human decision (approve, edit or reject).");
      if (done.autonomy && done.autonomy.no_ai) notes.push("No AI: the model was not invoked.");
      if (done.error) replace(status, errorBox(done.error));
      if (notes.length) item.append(h("p", { class: "note" }, notes.join(" ")));
      item.append(h("div", { class: "meta" }, `${done.status}${done.usage ? ` · ${done.usage.total_tokens} tokens` : ""}`
        + ` · ${model.value || "model"} · `, h("code", {}, done.id)));
      conversation.messages.push(userMsg);
      if (text) conversation.messages.push({ role: "assistant", content: text });
      loadHistory();
    }
  }

  renderTranscript();
  await Promise.all([loadModels(), loadHistory()]);
  if (canWrite) message.focus();
}
