#!/usr/bin/env python3
"""openai-python's `client.audio.transcriptions.create` against Hearth (`/v1/audio/transcriptions`,
Whisper tiny.en), on speech no one recorded for it: sentences spoken by espeak-ng.

    HEARTH_BASE_URL=http://127.0.0.1:5000 .venv/bin/python tests/clients/openai_transcriptions.py

Checks: the word error rate over the sentences is at most 15 %; `json` validates against OpenAI's
CreateTranscriptionResponseJson (with `usage.seconds` the clip's length); `text` is the same
text; `stream=true` sends deltas that join to the done event's text; `srt` and `vtt` parse as subtitles whose cue holds that text and whose times cover the clip;
FLAC, Ogg/Vorbis, MP3 and Ogg/Opus transcribe too; `verbose_json` validates against CreateTranscriptionResponseVerboseJson (`english`, the clip's
duration, timed segments, and with `timestamp_granularities=["word"]` timed words in order that
spell the text); bad input (not audio, an empty file, no file, word timestamps without
`verbose_json`, an unknown field, a JSON body)
is a 400 naming the field, and the server keeps answering.
"""
import re
import subprocess
import tempfile
import wave

import openai

import hearth_common as H
from hearth_common import edits, expect, ok, words

SENTENCES = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "The box was thrown beside the parked truck.",
    "The quick brown fox jumps over the lazy dog.",
    "The weather today is sunny with a light breeze from the west.",
]


def speak(text, path):
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "120", "-g", "4", "-w", path, text], check=True)
    with wave.open(path) as w:
        return w.getnframes() / w.getframerate()


def main():
    client = H.openai_client()
    tmp = tempfile.mkdtemp()
    errors = total = 0
    for i, sentence in enumerate(SENTENCES):
        path = f"{tmp}/s{i}.wav"
        seconds = speak(sentence, path)
        with open(path, "rb") as f:
            result = client.audio.transcriptions.create(model="whisper-1", file=f)
        body = H.check_last(client, "/v1/audio/transcriptions")
        expect(abs(body["usage"]["seconds"] - seconds) < 0.05, "usage.seconds", seconds, body["usage"])
        e = edits(words(sentence), words(result.text))
        errors, total = errors + e, total + len(words(sentence))
        print(f"  {sentence!r} → {result.text!r}")
    wer = errors / total
    expect(wer <= 0.15, "word error rate", "≤ 0.15", wer)
    ok(f"{len(SENTENCES)} espeak-ng sentences, word error rate {wer:.3f}")

    path = f"{tmp}/s0.wav"
    with open(path, "rb") as f:
        as_json = client.audio.transcriptions.create(model="whisper-1", file=f).text
    H.check_last(client)
    with open(path, "rb") as f:
        text = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="text")
    H.check_last(client)
    expect(text.strip() == as_json, "response_format text", as_json, text)
    seconds = speak(SENTENCES[0], path)
    for fmt, sep in (("srt", ","), ("vtt", ".")):
        with open(path, "rb") as f:
            subs = client.audio.transcriptions.create(model="whisper-1", file=f, response_format=fmt)
        H.check_last(client)
        times = re.findall(rf"(\d\d):(\d\d):(\d\d){re.escape(sep)}(\d\d\d) --> (\d\d):(\d\d):(\d\d){re.escape(sep)}(\d\d\d)", subs)
        expect(len(times) >= 1, f"{fmt} cues", "at least one", subs)
        spans = [(h1 * 3600 + m1 * 60 + s1 + ms1 / 1000, h2 * 3600 + m2 * 60 + s2 + ms2 / 1000)
                 for h1, m1, s1, ms1, h2, m2, s2, ms2 in (map(int, t) for t in times)]
        # Whisper's timed segments: from within the first second, in order, inside the clip.
        expect(spans[0][0] <= 1.0 and all(a < b for a, b in spans) and spans[-1][1] <= seconds + 0.02
               and all(spans[i][1] <= spans[i + 1][0] for i in range(len(spans) - 1)),
               f"{fmt} cue times", f"ordered spans within 0 → {seconds:.2f} s", spans)
        cue_text = " ".join(line for line in subs.splitlines()
                            if line and "-->" not in line and not line.isdigit() and line != "WEBVTT")
        e = edits(words(as_json), words(cue_text)) / max(1, len(words(as_json)))
        expect(e <= 0.3, f"{fmt} text", as_json, cue_text)
        if fmt == "vtt":
            expect(subs.startswith("WEBVTT"), "vtt header", "WEBVTT", subs[:20])
        else:
            expect(subs.startswith("1\n"), "srt numbering", "1", subs[:20])
    ok("json, text, srt and vtt agree")

    with open(path, "rb") as f:
        verbose = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="verbose_json")
    body = H.check_last(client, "/v1/audio/transcriptions")
    import openapi_check
    openapi_check.validate("CreateTranscriptionResponseVerboseJson", body)
    expect(body["language"] == "english" and abs(body["duration"] - seconds) < 0.05 and "words" not in body,
           "verbose_json", f"english, {seconds:.2f} s, segments only", {k: body[k] for k in ("language", "duration")})
    segs = body["segments"]
    expect(len(segs) >= 1 and all(s["start"] < s["end"] for s in segs) and segs[-1]["end"] <= seconds + 0.02
           and [s["id"] for s in segs] == list(range(len(segs)))
           and all(0 < s["compression_ratio"] < 2.4 and 0 <= s["no_speech_prob"] <= 1 for s in segs),
           "verbose_json segments", "numbered, timed, scored", segs)
    expect(edits(words(verbose.text), words(" ".join(s["text"] for s in segs))) == 0, "segments' text",
           verbose.text, [s["text"] for s in segs])
    with open(path, "rb") as f:
        timed = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="verbose_json",
                                                   timestamp_granularities=["word", "segment"])
    body = H.check_last(client, "/v1/audio/transcriptions")
    openapi_check.validate("CreateTranscriptionResponseVerboseJson", body)
    ws = body["words"]
    expect(len(ws) >= 5 and all(0 <= w["start"] <= w["end"] <= seconds + 0.05 for w in ws)
           and all(a["end"] <= b["start"] + 1e-6 for a, b in zip(ws, ws[1:])), "timed words",
           "in order, inside the clip", ws)
    expect(edits(words(timed.text), words(" ".join(w["word"] for w in ws))) == 0 and len(body["segments"]) >= 1,
           "the words", timed.text, [w["word"] for w in ws])
    with open(path, "rb") as f:
        only_words = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="verbose_json",
                                                        timestamp_granularities=["word"])
    body = H.check_last(client)
    expect("segments" not in body and [w["word"] for w in body["words"]] == [w["word"] for w in ws],
           "words only", "the same words, no segments", list(body))
    with open(path, "rb") as f:
        client.audio.transcriptions.create(model="whisper-1", file=f, response_format="verbose_json", temperature=0.7)
    body = H.check_last(client)
    expect(all(s["temperature"] == 0.7 for s in body["segments"]), "temperature 0.7", "segments sampled at 0.7",
           [s["temperature"] for s in body["segments"]])
    ok(f"verbose_json: {len(segs)} segment(s); word timestamps: {len(ws)} words, "
       f"{ws[0]['word']!r} at {ws[0]['start']:.2f} s … {ws[-1]['word']!r} ending {ws[-1]['end']:.2f} s")

    with open(path, "rb") as f:
        events = list(client.audio.transcriptions.create(model="whisper-1", file=f, stream=True))
    chunks = H.check_last(client, "/v1/audio/transcriptions")
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    done = [e for e in events if e.type == "transcript.text.done"]
    expect(len(done) == 1 and events[-1].type == "transcript.text.done", "the stream's end", "one done event, last",
           [e.type for e in events])
    expect(len(deltas) > 1 and "".join(deltas) == done[0].text == as_json, "streamed text",
           "deltas joining to the done text, the JSON answer's", (deltas, done[0].text))
    ok(f"stream=true: {len(deltas)} deltas, {len(chunks)} events")

    # The same speech in other containers and codecs (espeak-ng's 22,050 Hz, resampled by the server).
    import soundfile
    fox = f"{tmp}/s3.wav"
    with open(fox, "rb") as f:
        wav_text = client.audio.transcriptions.create(model="whisper-1", file=f).text
    H.check_last(client)
    samples, rate = soundfile.read(fox, dtype="float32")
    for fmt, subtype, ext in (("FLAC", None, "flac"), ("OGG", "VORBIS", "ogg"), ("MP3", "MPEG_LAYER_III", "mp3")):
        other = f"{tmp}/s3.{ext}"
        soundfile.write(other, samples, rate, format=fmt, subtype=subtype)
        with open(other, "rb") as f:
            heard = client.audio.transcriptions.create(model="whisper-1", file=f).text
        H.check_last(client)
        if ext == "flac":
            expect(heard == wav_text, "FLAC (lossless)", wav_text, heard)
        e = edits(words(SENTENCES[3]), words(heard)) / len(words(SENTENCES[3]))
        expect(e <= 0.2, f"{ext}: word error rate", "≤ 0.2", (heard, e))
    opus = f"{tmp}/s3.opus"
    # Opus runs at 8, 12, 16, 24 or 48 kHz: espeak-ng's 22,050 Hz is resampled to 48 kHz first.
    import numpy as np
    at_48k = np.interp(np.arange(round(len(samples) * 48000 / rate)) * rate / 48000, np.arange(len(samples)),
                       samples).astype("float32")
    # At libsndfile's highest bitrate: the check is the container and the codec, not how a
    # low bitrate blurs tiny.en's hearing.
    soundfile.write(opus, at_48k, 48000, format="OGG", subtype="OPUS", compression_level=0.0)
    with open(opus, "rb") as f:
        heard = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="verbose_json")
    body = H.check_last(client)
    e = edits(words(SENTENCES[3]), words(heard.text)) / len(words(SENTENCES[3]))
    expect(e <= 0.2 and abs(body["duration"] - len(samples) / rate) < 0.05, "Ogg/Opus",
           "the sentence, as long as the WAV", (heard.text, body["duration"], len(samples) / rate))
    ok("FLAC, Ogg/Vorbis, MP3 and Ogg/Opus (libsndfile's) transcribe")

    def expect_400(call, param, what):
        try:
            call()
            H.fail(f"{what}: succeeded")
        except openai.BadRequestError as e:
            body = H.check_last(client)
            expect(body["error"]["param"] == param, f"{what}: error.param", param, body["error"])
    expect_400(lambda: client.audio.transcriptions.create(model="whisper-1", file=("notes.txt", b"not audio at all")),
               "file", "a text file")
    expect_400(lambda: client.audio.transcriptions.create(model="whisper-1", file=("empty.wav", b"")), "file",
               "an empty file")
    with open(path, "rb") as f:
        data = f.read()
    expect_400(lambda: client.audio.transcriptions.create(model="whisper-1", file=("a.wav", data),
                                                          timestamp_granularities=["word"]),
               "timestamp_granularities", "word timestamps without verbose_json")
    expect_400(lambda: client.audio.transcriptions.create(model="whisper-1", file=("a.wav", data),
                                                          extra_body={"colour": "blue"}), "colour", "an unknown field")
    expect_400(lambda: client.audio.transcriptions.create(model="whisper-1", file=("a.wav", data), temperature=1.5),
               "temperature", "temperature 1.5")
    try:
        client.post("/audio/transcriptions", cast_to=object, body={"model": "whisper-1"})
        H.fail("a JSON body: succeeded")
    except openai.BadRequestError:
        H.check_last(client)
    ok("bad input is a 400 naming the field")


if __name__ == "__main__":
    H.run(main)
