// Recording from the microphone into a WAV file, the audio format the `stt` service takes.

const RATE = 16000; // what speech models want; smaller uploads too

/** Whether this browser can record here (it needs a secure context: https or localhost). */
export const canRecord = () =>
  Boolean(window.isSecureContext && navigator.mediaDevices?.getUserMedia && window.MediaRecorder);

/** Start recording; `stop()` on the result gives a Blob of 16-bit PCM mono WAV at 16 kHz. */
export async function startRecording() {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  const recorder = new MediaRecorder(stream);
  const chunks = [];
  recorder.addEventListener("dataavailable", (event) => chunks.push(event.data));
  recorder.start();
  return {
    async stop() {
      const stopped = new Promise((resolve) => recorder.addEventListener("stop", resolve, { once: true }));
      recorder.stop();
      await stopped;
      stream.getTracks().forEach((track) => track.stop());
      // MediaRecorder gives WebM or Ogg; the browser decodes it, and we resample and encode WAV.
      const encoded = await new Blob(chunks, { type: recorder.mimeType }).arrayBuffer();
      const context = new AudioContext();
      try {
        const decoded = await context.decodeAudioData(encoded);
        return wav(await resample(decoded));
      } finally {
        context.close();
      }
    },
  };
}

async function resample(buffer) {
  const frames = Math.max(1, Math.ceil(buffer.duration * RATE));
  const offline = new OfflineAudioContext(1, frames, RATE); // one channel: the channels are mixed down
  const source = offline.createBufferSource();
  source.buffer = buffer;
  source.connect(offline.destination);
  source.start();
  return (await offline.startRendering()).getChannelData(0);
}

function wav(samples) {
  const view = new DataView(new ArrayBuffer(44 + samples.length * 2));
  const text = (offset, value) => [...value].forEach((c, i) => view.setUint8(offset + i, c.charCodeAt(0)));
  text(0, "RIFF");
  view.setUint32(4, 36 + samples.length * 2, true);
  text(8, "WAVE");
  text(12, "fmt ");
  view.setUint32(16, 16, true); // the size of this chunk
  view.setUint16(20, 1, true); // PCM
  view.setUint16(22, 1, true); // mono
  view.setUint32(24, RATE, true);
  view.setUint32(28, RATE * 2, true); // bytes per second
  view.setUint16(32, 2, true); // bytes per frame
  view.setUint16(34, 16, true); // bits per sample
  text(36, "data");
  view.setUint32(40, samples.length * 2, true);
  samples.forEach((sample, i) => {
    const clamped = Math.max(-1, Math.min(1, sample));
    view.setInt16(44 + i * 2, clamped < 0 ? clamped * 0x8000 : clamped * 0x7fff, true);
  });
  return new Blob([view], { type: "audio/wav" });
}
