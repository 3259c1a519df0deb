// The Talk view (`#/talk`): choose or create an avatar, call it over WebRTC, hold to talk, hear the
// answer and read both sides' transcript as it streams; the portrait moves with the answer's level.

import { api, session } from "./api.js";
import { $, clearError, showError } from "./ui.js";

let call = null; // {pc, channel, stream, micTrack, level} while a call is up
let portraitUrl = null;

function line(who, text = "") {
  const entry = document.createElement("p");
  entry.className = `talk-line talk-${who}`;
  entry.innerHTML = `<b>${who === "user" ? "You" : "Avatar"}:</b> <span></span>`;
  entry.querySelector("span").textContent = text;
  $("#talk-transcript").append(entry);
  entry.scrollIntoView({ block: "nearest" });
  return entry.querySelector("span");
}

async function loadAvatars(selected = "") {
  const list = await api("/v1/avatars?limit=100");
  const select = $("#talk-avatar");
  select.innerHTML = '<option value="">(no avatar)</option>';
  for (const avatar of list.data) {
    const option = document.createElement("option");
    option.value = avatar.id;
    option.textContent = avatar.name;
    select.append(option);
  }
  select.value = selected;
  await showPortrait();
}

async function showPortrait() {
  const id = $("#talk-avatar").value;
  const image = $("#talk-portrait");
  if (portraitUrl) URL.revokeObjectURL(portraitUrl);
  portraitUrl = null;
  image.hidden = true;
  if (!id) return;
  const response = await fetch(`/v1/avatars/${encodeURIComponent(id)}/portrait`, {
    headers: { Authorization: `Bearer ${session.token}` },
  });
  if (!response.ok) return; // an avatar without a portrait
  portraitUrl = URL.createObjectURL(await response.blob());
  image.src = portraitUrl;
  image.hidden = false;
}

async function createAvatar(event) {
  event.preventDefault();
  clearError();
  const form = event.target;
  const body = { name: form.name.value.trim() };
  for (const field of ["instructions", "voice", "greeting", "portrait_prompt"]) {
    if (form[field].value.trim()) body[field] = form[field].value.trim();
  }
  try {
    const avatar = await api("/v1/avatars", { method: "POST", json: body });
    form.reset();
    await loadAvatars(avatar.id);
  } catch (error) {
    showError(error);
  }
}

/** The answer's loudness drives the portrait: a gentle scale and glow while the avatar speaks. */
function followLevel(stream) {
  const context = new AudioContext();
  const analyser = context.createAnalyser();
  analyser.fftSize = 512;
  context.createMediaStreamSource(stream).connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  const portrait = $("#talk-stage");
  const tick = () => {
    if (!call) return context.close();
    analyser.getFloatTimeDomainData(samples);
    const rms = Math.sqrt(samples.reduce((sum, x) => sum + x * x, 0) / samples.length);
    const level = Math.min(1, rms * 8);
    portrait.style.setProperty("--level", level.toFixed(3));
    portrait.dataset.speaking = level > 0.05 ? "yes" : "no";
    portrait.dataset.peak = Math.max(Number(portrait.dataset.peak || 0), level).toFixed(3);
    requestAnimationFrame(tick);
  };
  tick();
}

function onEvent(event) {
  if (event.type === "conversation.item.input_audio_transcription.completed") {
    line("user", event.transcript);
  } else if (event.type === "response.created") {
    call.answer = line("avatar");
  } else if (event.type === "response.output_audio_transcript.delta" || event.type === "response.output_text.delta") {
    if (!call.answer) call.answer = line("avatar");
    call.answer.textContent += event.delta;
  } else if (event.type === "response.done") {
    if (event.response.status === "cancelled" && call.answer) call.answer.textContent += " …";
    call.answer = null;
  } else if (event.type === "conversation.item.added" && event.item.role === "assistant" && !call.answer) {
    const text = (event.item.content || []).map((part) => part.text || "").join(" ");
    if (text) line("avatar", text); // the avatar's greeting
  } else if (event.type === "error") {
    showError(new Error(`${event.error.code}: ${event.error.message}`));
  }
}

async function startCall() {
  clearError();
  const pc = new RTCPeerConnection();
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  const micTrack = stream.getAudioTracks()[0];
  micTrack.enabled = false; // press to talk
  pc.addTrack(micTrack, stream);
  const player = $("#talk-audio");
  pc.ontrack = (event) => {
    player.srcObject = event.streams[0] || new MediaStream([event.track]);
    player.play().catch(() => {});
    followLevel(player.srcObject);
  };
  const channel = pc.createDataChannel("oai-events");
  call = { pc, channel, stream, micTrack, answer: null };
  channel.onmessage = (message) => onEvent(JSON.parse(message.data));
  await pc.setLocalDescription(await pc.createOffer());
  const avatar = $("#talk-avatar").value;
  const url = `/v1/realtime/calls?model=llm${avatar ? `&avatar=${encodeURIComponent(avatar)}` : ""}`;
  const response = await fetch(url, {
    method: "POST",
    body: pc.localDescription.sdp,
    headers: { Authorization: `Bearer ${session.token}`, "Content-Type": "application/sdp" },
  });
  if (!response.ok) {
    const body = await response.json().catch(() => null);
    hangUp();
    throw new Error(body && body.error ? body.error.message : `${response.status} ${response.statusText}`);
  }
  call.location = response.headers.get("Location");
  await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
  $("#talk-start").hidden = true;
  $("#talk-stop").hidden = false;
  $("#talk-hold").disabled = false;
}

function hangUp() {
  if (!call) return;
  const ended = call;
  call = null;
  if (ended.location) api(`${ended.location}/hangup`, { method: "POST" }).catch(() => {});
  ended.stream.getTracks().forEach((track) => track.stop());
  ended.pc.close();
  $("#talk-start").hidden = false;
  $("#talk-stop").hidden = true;
  $("#talk-hold").disabled = true;
  $("#talk-stage").style.setProperty("--level", "0");
}

function hold(on) {
  if (call) call.micTrack.enabled = on;
  $("#talk-hold").classList.toggle("on", on);
}

export function initTalk() {
  $("#talk-avatar").addEventListener("change", () => showPortrait().catch(showError));
  $("#talk-new").addEventListener("submit", createAvatar);
  $("#talk-start").addEventListener("click", () => startCall().catch(showError));
  $("#talk-stop").addEventListener("click", hangUp);
  const button = $("#talk-hold");
  button.addEventListener("pointerdown", () => hold(true));
  for (const name of ["pointerup", "pointerleave", "pointercancel"]) button.addEventListener(name, () => hold(false));
  button.addEventListener("keydown", (event) => event.key === " " && hold(true));
  button.addEventListener("keyup", (event) => event.key === " " && hold(false));
}

export function showTalk() {
  loadAvatars($("#talk-avatar").value).catch(showError);
}

export function stopTalk() {
  hangUp();
}
