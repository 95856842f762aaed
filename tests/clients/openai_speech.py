#!/usr/bin/env python3
"""openai-python's `client.audio.speech` against Hearth (`/v1/audio/speech`, the Piper voice
en_US-joe-medium), heard back by Hearth's own Whisper (`/v1/audio/transcriptions`, tiny.en).

    HEARTH_BASE_URL=http://127.0.0.1:5000 .venv/bin/python tests/clients/openai_speech.py

Checks: ten sentences spoken with the voice's own noise scales and transcribed back have a word
error rate of at most 15 % (the round trip); `with_streaming_response…stream_to_file` writes a
WAV that `soxi` reads (22,050 Hz, mono, 16-bit); `flac` holds the same samples; `opus` is an Ogg/Opus file libsndfile
reads and Hearth's Whisper hears; `pcm` is 16-bit
at 24 kHz and arrives in pieces, one per sentence; a seed repeats the audio exactly, and noise
scales of 0 do without one; `speed` 2 makes it about half as long; OpenAI's voice names and the voice's own
name speak; bad input (empty or 5,000-character `input`, `mp3`, an unknown voice, `speed` 10, an
unknown field) is a 400 naming the field, and the server keeps answering.
"""
import io
import subprocess
import tempfile
import wave

import numpy as np
import openai
import soundfile

import hearth_common as H
from hearth_common import edits, expect, ok, words

# Harvard sentences (phonetically balanced, public domain) and everyday speech.
SENTENCES = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "The weather today is sunny with a light breeze from the west.",
]
VOICE = "en_US-joe-medium"


def speak(client, text, **kw):
    audio = client.audio.speech.create(model="tts-1", voice=kw.pop("voice", "alloy"), input=text, **kw)
    body = H.check_last(client, "/v1/audio/speech")
    expect(body == audio.content, "the recorded body", "the client's bytes", len(body))
    return audio.content


def wav_samples(data):
    with wave.open(io.BytesIO(data)) as w:
        expect((w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 22050), "WAV format",
               "mono 16-bit 22,050 Hz", (w.getnchannels(), w.getsampwidth(), w.getframerate()))
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


def main():
    client = H.openai_client()
    tmp = tempfile.mkdtemp()

    # The round trip: Hearth speaks with the voice's defaults, Hearth's Whisper listens.
    errors = total = 0
    for i, sentence in enumerate(SENTENCES):
        data = speak(client, sentence, voice=VOICE, response_format="wav", extra_body={"seed": 1000 + i})
        samples = wav_samples(data)
        seconds = len(samples) / 22050
        expect(0.8 < seconds < 8, f"{sentence!r}: length", "a spoken sentence", seconds)
        heard = client.audio.transcriptions.create(model="whisper-1", file=("speech.wav", data, "audio/wav")).text
        H.check_last(client, "/v1/audio/transcriptions")
        e = edits(words(sentence), words(heard))
        errors, total = errors + e, total + len(words(sentence))
        print(f"  {sentence!r} → {heard!r} ({seconds:.2f} s)")
    wer = errors / total
    expect(wer <= 0.15, "round-trip word error rate", "≤ 0.15", wer)
    ok(f"{len(SENTENCES)} sentences spoken by Piper in Hearth, heard back with word error rate {wer:.3f}")

    # stream_to_file, read by soxi.
    path = f"{tmp}/speech.wav"
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input="Hello there. This file is for soxi.", response_format="wav"
    ) as response:
        response.stream_to_file(path)
    H.check_last(client, "/v1/audio/speech")
    info = {k: subprocess.run(["soxi", f"-{k}", path], check=True, capture_output=True, text=True).stdout.strip()
            for k in ("r", "c", "b", "D")}
    expect(info["r"] == "22050" and info["c"] == "1" and info["b"] == "16" and float(info["D"]) > 1.0,
           "soxi", "22050 Hz, 1 channel, 16 bits, over a second", info)
    ok(f"stream_to_file wrote a WAV soxi reads: {info}")

    # Determinism: a seed repeats the audio; zero noise needs none. Formats hold the same samples.
    text = "Rice is often served in round bowls."
    a = speak(client, text, response_format="wav", extra_body={"seed": 7})
    b = speak(client, text, response_format="wav", extra_body={"seed": 7})
    c = speak(client, text, response_format="wav", extra_body={"seed": 8})
    expect(a == b and a != c, "seeded speech", "the same seed the same bytes, another seed other bytes",
           (len(a), len(b), len(c)))
    quiet = {"noise_scale": 0, "noise_w": 0}
    wav = speak(client, text, response_format="wav", extra_body=quiet)
    expect(wav == speak(client, text, response_format="wav", extra_body=quiet), "noise scales 0",
           "the same bytes twice", "different")
    flac = speak(client, text, response_format="flac", extra_body=quiet)
    expect(flac[:4] == b"fLaC", "flac magic", b"fLaC", flac[:4])
    decoded, rate = soundfile.read(io.BytesIO(flac), dtype="int16")
    expect(rate == 22050 and np.array_equal(decoded, wav_samples(wav)), "flac", "the WAV's samples", rate)
    opus = speak(client, text, response_format="opus", extra_body=quiet)
    expect(opus[:4] == b"OggS" and b"OpusHead" in opus[:64], "opus", "an Ogg/Opus file", opus[:40])
    decoded, rate = soundfile.read(io.BytesIO(opus), dtype="float32")
    # libsndfile decodes at the Opus rate nearest the header's input rate (22,050 → 24 kHz).
    expect(abs(len(decoded) / rate - len(wav_samples(wav)) / 22050) < 0.03, "opus read by libsndfile",
           "as long as the WAV", (rate, len(decoded), len(wav_samples(wav))))
    heard = client.audio.transcriptions.create(model="whisper-1", file=("speech.opus", opus, "audio/ogg")).text
    H.check_last(client)
    heard_wav = client.audio.transcriptions.create(model="whisper-1", file=("speech.wav", wav, "audio/wav")).text
    H.check_last(client)
    # tiny.en mishears this sentence a little either way; the codec must not add to it.
    expect(edits(words(heard_wav), words(heard)) <= 1, "opus heard back", f"what the WAV gives: {heard_wav!r}", heard)
    pcm = speak(client, text, response_format="pcm", extra_body=quiet)
    expect(len(pcm) % 2 == 0 and abs(len(pcm) / 2 / 24000 - len(wav_samples(wav)) / 22050) < 0.01,
           "pcm", "16-bit samples at 24 kHz, as long as the WAV", len(pcm))
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input="One sentence. Then another one. And a third.", response_format="pcm"
    ) as response:
        pieces = [p for p in response.iter_bytes() if p]
    H.check_last(client, "/v1/audio/speech")
    expect(len(pieces) >= 3, "streamed pcm", "a piece per sentence", len(pieces))
    slow = len(wav_samples(wav))
    fast = len(wav_samples(speak(client, text, response_format="wav", speed=2.0, extra_body=quiet)))
    # Each phoneme's frames round up, so twice as fast is a little over half as long.
    expect(0.45 < fast / slow < 0.7, "speed 2", "a little over half as long", fast / slow)
    for voice in ("echo", "nova", VOICE):
        expect(len(speak(client, "Hi.", voice=voice)) > 1000, f"voice {voice}", "audio", "none")
    speak(client, "Hi.", voice={"id": VOICE})
    ok("seeds repeat, flac and pcm hold the same samples, pcm streams, speed works, voices resolve")

    for kwargs, param in (
        ({"input": ""}, "input"),
        ({"input": "word " * 1000}, "input"),
        ({"input": "Hi.", "response_format": "mp3"}, "response_format"),
        ({"input": "Hi.", "voice": "nobody"}, "voice"),
        ({"input": "Hi.", "speed": 10}, "speed"),
        ({"input": "Hi.", "extra_body": {"pitch": 2}}, "pitch"),
    ):
        args = {"model": "tts-1", "voice": "alloy", **kwargs}
        try:
            client.audio.speech.create(**args)
            H.fail(f"{kwargs} was accepted")
        except openai.BadRequestError:
            body = H.check_last(client, "/v1/audio/speech")
            expect(body["error"]["param"] == param, f"{list(kwargs)}", f"a 400 about `{param}`", body)
    expect(len(speak(client, "Still here.")) > 1000, "after the errors", "audio", "none")
    ok("bad input is a 400 naming the field; the server keeps speaking")


if __name__ == "__main__":
    H.run(main)
