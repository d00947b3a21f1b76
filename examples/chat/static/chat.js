// The chat page: wires the forms of index.html to the ChatService's WebSocket methods
// (join, leave, say, whisper) and shows what the hub sends (joined, left, message, private).
//
// The page is in one room at a time (the service allows more); joining another room
// leaves the current one first. User text is always inserted as text, never as HTML.

import { connect } from "./triosvc.js";

const $ = (id) => document.getElementById(id);

const client = connect();
let room = null; // the room we are in, or null
let nickname = null; // ours, once we have joined a room
const members = new Set(); // who is in our room

// -- connection --------------------------------------------------------------------------

setStatus("connecting", "connecting…");
client.ready.then(() => {
    setStatus("connected", "connected");
    $("join").disabled = false;
    $("nickname").focus();
});
client.on("close", ({ code }) => {
    setStatus("disconnected", `disconnected (${code}): reload the page to reconnect`);
    for (const element of document.querySelectorAll("input, button")) {
        element.disabled = true;
    }
});

// -- what the hub sends ------------------------------------------------------------------

client.on("joined", (data) => {
    if (data.room === room) {
        members.add(data.nickname);
        showMembers();
    }
    addLine("system", `${data.nickname} joined ${data.room}`);
});

client.on("left", (data) => {
    if (data.room === room) {
        members.delete(data.nickname);
        showMembers();
    }
    addLine("system", `${data.nickname} left ${data.room}`);
});

client.on("message", (data) => addLine("message", data.text, data.nickname));

client.on("private", (data) => addLine("private", data.text, `private from ${data.from}`));

// -- what the forms do -------------------------------------------------------------------

$("join-form").addEventListener("submit", (event) => {
    event.preventDefault();
    run(async () => {
        const target = $("room").value.trim();
        if (room !== null && room !== target) {
            await leave();
        }
        const joined = await client.call("join", { room: target, nickname: $("nickname").value });
        room = joined.room;
        nickname = joined.nickname;
        members.clear();
        joined.members.forEach((name) => members.add(name));
        showRoom();
        $("text").focus();
    });
});

$("leave").addEventListener("click", () => run(leave));

$("say-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("text");
    if (!input.value.trim()) return;
    run(async () => {
        await client.call("say", { room, text: input.value });
        input.value = ""; // the message comes back to us from the hub, like everyone else's
    });
});

$("whisper-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("whisper-text");
    if (!input.value.trim()) return;
    run(async () => {
        const sent = await client.call("whisper", {
            to_nickname: $("whisper-to").value,
            text: input.value,
        });
        addLine("private", sent.text, `private to ${sent.to}`);
        input.value = "";
    });
});

async function leave() {
    await client.call("leave", { room });
    room = null;
    members.clear();
    showRoom();
}

// -- showing things ----------------------------------------------------------------------

/** Run an action; show its error (a TriosvcError: excType and value) if it fails. */
async function run(action) {
    const error = $("error");
    try {
        await action();
        error.hidden = true;
    } catch (failure) {
        error.textContent = failure.excType ? `${failure.excType}: ${failure.value}` : `${failure}`;
        error.hidden = false;
    }
}

function setStatus(state, text) {
    $("status").dataset.state = state;
    $("status").textContent = text;
}

function showRoom() {
    $("current-room").textContent = room === null ? "not in a room" : `# ${room}`;
    $("nickname").disabled = room !== null; // the service keeps our nickname while in a room
    $("leave").disabled = room === null;
    $("text").disabled = $("send").disabled = room === null;
    for (const id of ["whisper-to", "whisper-text", "whisper-send"]) {
        $(id).disabled = nickname === null;
    }
    showMembers();
}

function showMembers() {
    const list = $("members");
    list.replaceChildren(
        ...[...members].sort().map((name) => {
            const item = document.createElement("li");
            item.textContent = name;
            if (name === nickname) item.classList.add("me");
            return item;
        }),
    );
}

/** Add a line to #messages: "12:03 ada: hello" (or "12:03 ada joined lobby" without `who`). */
function addLine(kind, text, who = null) {
    const item = document.createElement("li");
    item.className = kind;
    const time = document.createElement("time");
    const now = new Date();
    time.dateTime = now.toISOString();
    time.textContent = [now.getHours(), now.getMinutes()]
        .map((n) => String(n).padStart(2, "0"))
        .join(":");
    const body = document.createElement("span"); // the line without its time
    body.className = "body";
    if (who !== null) {
        const name = document.createElement("b");
        name.textContent = who;
        body.append(name, ": ");
    }
    body.append(text);
    item.append(time, " ", body);
    const list = $("messages");
    list.append(item);
    list.scrollTop = list.scrollHeight;
}
