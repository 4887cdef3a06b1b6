"""Decoding of raw media with PyAV (`av`, which bundles FFmpeg): 16 kHz mono audio and frames at a fixed rate.

torchcodec is avoided on purpose (it needs FFmpeg libraries of its own): audio is stored as wav bytes in an
`Audio(decode=False)` column and decoded here with soundfile; frames are stored as `Image` (PIL).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

SAMPLING_RATE = 16_000
# The longest clip (seconds of media per row or per `predict` input) that hf_mmkd decodes: 10 minutes of 16 kHz
# float32 audio are 38 MB, an hour would be 230 MB plus the decoder's buffers and a backbone's activations over
# it. The length is read from the container's header before anything is decoded, and decoding stops at the
# limit when a header does not say; `prepare_media.py --max-clip-seconds` changes it, `predict --start/--end`
# cut a longer file.
MAX_CLIP_SECONDS = 600.0


class MediaError(ValueError):
    """A media file is missing, corrupt or has no usable stream; the message names the file."""


def _open(path: Path):
    import av

    if path.is_dir():
        raise MediaError(f"{path} is a folder, not a media file (an audio or video file was expected)")
    if not path.is_file():
        raise MediaError(f"media file not found: {path}")
    try:
        return av.open(str(path))
    except Exception as err:  # av.error.InvalidDataError and friends
        raise MediaError(f"cannot open media file {path}: {err}") from err


def _duration(container, stream) -> float | None:
    """Seconds of `stream` as its container's header declares them (None when it does not say)."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def _too_long(path: Path, seconds: float, max_seconds: float) -> MediaError:
    return MediaError(f"{path}: the clip is {seconds:.1f} s long, more than the {max_seconds:g} s that hf_mmkd "
                      "decodes per clip (memory); cut it with start/end (predict: --start/--end) or raise the limit "
                      "(prepare_media.py --max-clip-seconds)")


def _check_clip(path: Path, duration: float | None, start: float | None, end: float | None,
                max_seconds: float) -> None:
    """Refuse a segment longer than `max_seconds`, from the header's duration (before decoding anything)."""
    stop = end if end is not None else duration
    if stop is not None and stop - (start or 0.0) > max_seconds:
        raise _too_long(path, stop - (start or 0.0), max_seconds)


def load_audio(path, start: float | None = None, end: float | None = None,
               max_seconds: float = MAX_CLIP_SECONDS) -> np.ndarray:
    """Decode the first audio stream of `path`, resampled to 16 kHz mono float32, cut to [start, end) seconds.
    A segment longer than `max_seconds` is refused (from the header, else as soon as decoding passes it)."""
    import av

    path = Path(path)
    with _open(path) as container:
        if not container.streams.audio:
            raise MediaError(f"{path} has no audio stream")
        stream = container.streams.audio[0]
        _check_clip(path, _duration(container, stream), start, end, max_seconds)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLING_RATE)
        chunks = []
        lo_s = 0 if start is None else start
        stop = int((lo_s + max_seconds + 1) * SAMPLING_RATE) if end is None else int(end * SAMPLING_RATE) + 1
        total = 0
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
                    total += len(chunks[-1])
                if total >= stop:  # the segment is complete (or longer than the limit): decode no further
                    break
            else:
                for out in resampler.resample(None):  # flush
                    chunks.append(out.to_ndarray().reshape(-1))
        except av.error.FFmpegError as err:
            raise MediaError(f"cannot decode the audio of {path}: {err}") from err
        if end is None and total / SAMPLING_RATE - lo_s > max_seconds:
            raise _too_long(path, total / SAMPLING_RATE - lo_s, max_seconds)
    wave = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if not len(wave):
        raise MediaError(f"{path}: the audio stream has no samples (zero-length audio)")
    lo = 0 if start is None else int(round(start * SAMPLING_RATE))
    hi = len(wave) if end is None else int(round(end * SAMPLING_RATE))
    if lo >= len(wave) or hi <= lo:
        raise MediaError(f"{path}: segment [{start}, {end}) s lies outside its {len(wave) / SAMPLING_RATE:.2f} s of audio")
    return wave[lo:hi]


def load_frames(path, start: float | None = None, end: float | None = None, fps: float = 1.0,
                max_frames: int = 16, size: int = 224,
                max_seconds: float = MAX_CLIP_SECONDS) -> tuple[list, list[float]]:
    """Sample frames of `path` at `fps` (times start + (k + 0.5) / fps, at most `max_frames`, at least one).

    Returns (PIL images fitted inside size x size, their times in seconds). Each target time takes the first
    decoded frame at or after it, so the rate is fixed whatever the container's frame rate.
    """
    import av

    path = Path(path)
    with _open(path) as container:
        if not container.streams.video:
            raise MediaError(f"{path} has no video stream")
        stream = container.streams.video[0]
        duration = _duration(container, stream)
        _check_clip(path, duration, start, end, max_seconds)
        t0 = 0.0 if start is None else float(start)
        t1 = (duration if end is None else float(end)) or t0
        count = max(1, min(max_frames, int(np.floor((t1 - t0) * fps))))
        targets = [t0 + (k + 0.5) / fps for k in range(count)]
        if count == 1:
            targets = [t0 + (t1 - t0) / 2]
        images, times = [], []
        try:
            for frame in container.decode(stream):
                t = float(frame.pts * stream.time_base) if frame.pts is not None else None
                if t is None:
                    continue
                while targets and t >= targets[0] - 1e-6:
                    img = frame.to_image()
                    img.thumbnail((size, size))
                    images.append(img)
                    times.append(round(t, 3))
                    targets.pop(0)
                if not targets:
                    break
        except av.error.FFmpegError as err:
            raise MediaError(f"cannot decode the video of {path}: {err}") from err
    if not images:
        span = "" if start is None and end is None else f" in [{start}, {end}) s"
        raise MediaError(f"{path}: no decodable video frame{span}")
    return images, times


def encode_wav(wave: np.ndarray, sampling_rate: int = SAMPLING_RATE) -> bytes:
    """float32 waveform -> 16-bit PCM wav bytes (what the `audio` column stores)."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(wave, -1.0, 1.0), sampling_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def decode_wav(value) -> np.ndarray:
    """An `audio` cell (`{"bytes": ..., "path": ...}` from `Audio(decode=False)`, or raw bytes) -> float32 mono."""
    import soundfile as sf

    data = value.get("bytes") if isinstance(value, dict) else value
    if data is None and isinstance(value, dict) and value.get("path"):
        data = Path(value["path"]).read_bytes()
    name = value.get("path") if isinstance(value, dict) else None
    if not data:
        raise ValueError(f"audio cell {name!r} holds no bytes")
    try:
        wave, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as err:  # soundfile.LibsndfileError: truncated or not a wav
        raise ValueError(f"audio cell {name!r} is not readable audio (corrupt or truncated): {err}") from err
    if sr != SAMPLING_RATE:
        raise ValueError(f"audio cell {name!r} is at {sr} Hz, expected 16000")
    return wave.mean(1)  # (samples, channels) -> (samples,)


def _is_still_image(container) -> bool:
    """FFmpeg opens a PNG/JPEG/... (whatever its file name) as a one-frame "video" of an image demuxer."""
    names = set(str(getattr(container.format, "name", "")).split(","))
    return any(n == "image2" or n.endswith("_pipe") for n in names)


def probe(path) -> tuple[bool, bool]:
    """(has an audio stream, has a video stream) of a media file; MediaError if missing, corrupt, a still image
    (e.g. a PNG renamed .mp4), or without audio and video."""
    path = Path(path)
    with _open(path) as container:
        if _is_still_image(container):
            raise MediaError(f"{path} is a still image ({container.format.name}), not an audio or video file")
        has_audio, has_video = bool(container.streams.audio), bool(container.streams.video)
    if not (has_audio or has_video):
        raise MediaError(f"{path} has neither an audio nor a video stream")
    return has_audio, has_video


MEDIA_CSV_COLUMNS = ("id", "media", "start", "end", "text", "label", "split")
MAX_FRAMES = 1024  # frames per row: each one is a full image through the vision backbone
MAX_FRAME_SIZE = 4096


def check_sampling(fps: float, max_frames: int, frame_size: int) -> None:
    """Frame sampling options: a positive, finite rate, and a frame count and size that fit in memory."""
    if not (np.isfinite(fps) and fps > 0):
        raise ValueError(f"--fps must be a positive number of frames per second, got {fps:g}")
    if not 1 <= max_frames <= MAX_FRAMES:
        raise ValueError(f"--max-frames must lie in [1, {MAX_FRAMES}], got {max_frames}")
    if not 1 <= frame_size <= MAX_FRAME_SIZE:
        raise ValueError(f"--frame-size must lie in [1, {MAX_FRAME_SIZE}] pixels, got {frame_size}")


def _check_segment(start: float | None, end: float | None) -> None:
    """start/end seconds of a CSV row: finite, start >= 0 and end > start."""
    for name, value in (("start", start), ("end", end)):
        if value is not None and not np.isfinite(value):
            raise ValueError(f"{name} {value} is not a finite number of seconds")
    if start is not None and start < 0:
        raise ValueError(f"start {start:g} s is negative (seconds from the beginning of the file)")
    if end is not None and end <= (start or 0.0):
        raise ValueError(f"end {end:g} s is not after start {start or 0.0:g} s")


def read_media_csv(csv_path, label_range: tuple[float, float] | None = None, *, label_column: str = "label",
                   task: str = "regression", class_names: list[str] | None = None) -> tuple[list[dict], list | None]:
    """`(rows, class names)` of a media CSV: id, media (path, relative to the CSV's folder or absolute), optional
    start/end seconds (empty = whole file), text, the label (column `label_column`), split (train / validation /
    test). Errors name the line and the row id.

    Regression: a label must be a finite number, inside `label_range` (e.g. (-3, 3)) if given. Classification: a
    label is a class name of `class_names` or a class id; without `class_names`, ids stay ids (names "0", "1",
    ...) and text labels are named in sorted order (both are printed by `prepare_media.py`).
    """
    import csv

    csv_path = Path(csv_path)
    try:
        text = csv_path.read_text(encoding="utf-8-sig")  # a byte-order mark (Excel's "UTF-8 CSV") is not a column name
    except UnicodeDecodeError as err:
        raise ValueError(f"CSV file {csv_path} is not UTF-8 text ({err.reason} at byte {err.start}); save it as "
                         "UTF-8") from None
    with io.StringIO(text, newline="") as f:
        reader = csv.DictReader(f, strict=True)
        missing = [c for c in ("id", "media", label_column, "split") if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{csv_path}: missing column(s) {missing}; expected {list(MEDIA_CSV_COLUMNS)} "
                             f"(the label column is {label_column!r}: --label-column)")
        rows = []
        for line, row in _records(reader, csv_path):
            where = f"{csv_path}, line {line} (id {row.get('id')!r})"
            try:
                media = Path(row["media"])
                rows.append({
                    "id": row["id"],
                    "media": media if media.is_absolute() else csv_path.parent / media,
                    "start": float(row["start"]) if row.get("start") else None,
                    "end": float(row["end"]) if row.get("end") else None,
                    "text": (row.get("text") or "").strip() or None,
                    "label": float(row[label_column]) if task == "regression" else (row[label_column] or "").strip(),
                    "split": {"valid": "validation", "dev": "validation"}.get(row["split"], row["split"]),
                    "line": line,
                })
                _check_segment(rows[-1]["start"], rows[-1]["end"])
            except (TypeError, ValueError) as err:
                raise ValueError(f"{where}: {err}") from err
            label = rows[-1]["label"]
            if task == "regression" and not np.isfinite(label):
                raise ValueError(f"{where}: label {label} is not a finite number")
            if task == "regression" and label_range is not None and not label_range[0] <= label <= label_range[1]:
                raise ValueError(f"{where}: label {label:g} lies outside the label range "
                                 f"[{label_range[0]:g}, {label_range[1]:g}]")
            if rows[-1]["split"] not in ("train", "validation", "test"):
                raise ValueError(f"{csv_path}, line {line}: split {row['split']!r} is not train/validation/test")
    if not rows:
        raise ValueError(f"{csv_path} has a header but no rows: add one row per clip ({', '.join(MEDIA_CSV_COLUMNS)})")
    if not any(r["split"] == "train" for r in rows):
        raise ValueError(f"{csv_path}: no row has split 'train' (splits given: "
                         f"{', '.join(sorted({r['split'] for r in rows}))}); a prepared data set needs train rows")
    ids = [r["id"] for r in rows]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise ValueError(f"{csv_path}: duplicate id(s) {sorted(dup)[:5]}")
    if task == "classification":
        class_names = _class_ids(rows, csv_path, class_names)
    return rows, class_names


def _records(reader, csv_path: Path):
    """`(line, row)` of a `csv.DictReader(strict=True)`, the line where each record starts; a quote that is never
    closed (which a lenient reader turns into one field holding the rest of the file) names its line."""
    import csv

    while True:
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise ValueError(f"{csv_path}, line {line}: {err} (a quote opened there is never closed?)") from None
        yield line, row


def _class_ids(rows: list[dict], csv_path: Path, class_names: list[str] | None) -> list[str] | None:
    """Replace each row's label text by its class id; return the class names (None: the ids name themselves)."""
    texts = [r["label"] for r in rows]
    if class_names is None and all(t.isdigit() for t in texts):
        ids = [int(t) for t in texts]
    else:
        if class_names is None:
            class_names = sorted(set(texts))
        index = {n: i for i, n in enumerate(class_names)}
        ids = []
        for r, t in zip(rows, texts):
            if t in index:
                ids.append(index[t])
            elif t.isdigit() and int(t) < len(class_names):
                ids.append(int(t))
            else:
                raise ValueError(f"{csv_path}, line {r['line']} (id {r['id']!r}): label {t!r} is neither a class "
                                 f"name ({', '.join(class_names)}) nor a class id")
    for r, i in zip(rows, ids):
        r["label"] = i
    return class_names


LABEL_FEATURES = {"regression": ("label", "float32"), "classification": ("classification_label", "int64")}


def media_features(task: str = "regression"):
    from datasets import Audio, Features, Image, List, Value

    column, dtype = LABEL_FEATURES[task]
    return Features({
        "id": Value("string"), "source": Value("string"), "start": Value("float32"), "end": Value("float32"),
        "raw_text": Value("string"), "audio": Audio(sampling_rate=SAMPLING_RATE, decode=False),
        "frames": List(Image()), "frame_times": List(Value("float32")),
        "has_text": Value("bool"), "has_audio": Value("bool"), "has_vision": Value("bool"), column: Value(dtype),
    })


def build_media_dataset(rows: list[dict], fps: float = 1.0, max_frames: int = 16, size: int = 224,
                        skip_bad: bool = False, task: str = "regression", max_seconds: float = MAX_CLIP_SECONDS):
    """Decode every row's media -> (`DatasetDict` by split, list of "id: reason" for skipped rows). The label
    goes to `label` (regression) or `classification_label` (classification).

    A missing or corrupt file raises MediaError naming it, unless `skip_bad` (then the row is skipped and
    reported). A file without a video stream gives has_vision False; without audio, has_audio False.
    """
    from datasets import Dataset, DatasetDict, Value

    check_sampling(fps, max_frames, size)
    features = media_features(task)
    label_column = LABEL_FEATURES[task][0]
    by_split: dict[str, dict[str, list]] = {}
    skipped = []
    for row in rows:
        try:
            has_audio, has_video = probe(row["media"])
            audio = frames = times = None
            if has_audio:
                wave = load_audio(row["media"], row["start"], row["end"], max_seconds)
                audio = {"bytes": encode_wav(wave), "path": f"{row['id']}.wav"}
            if has_video:
                frames, times = load_frames(row["media"], row["start"], row["end"], fps, max_frames, size, max_seconds)
        except MediaError as err:
            if not skip_bad:
                raise MediaError(f"row {row['id']!r}: {err}") from err
            skipped.append(f"{row['id']}: {err}")
            continue
        cols = by_split.setdefault(row["split"], {k: [] for k in features})
        values = {
            "id": row["id"], "source": Path(row["media"]).name, "start": row["start"], "end": row["end"],
            "raw_text": row["text"], "audio": audio, "frames": frames, "frame_times": times,
            "has_text": row["text"] is not None, "has_audio": audio is not None, "has_vision": frames is not None,
            label_column: row["label"],
        }
        for k, v in values.items():
            cols[k].append(v)
    if not by_split:
        raise ValueError("no usable row: every media file was skipped")
    # The Audio feature's encoder needs torchcodec; build the struct column plainly, then cast (no re-encoding).
    plain = features.copy()
    plain["audio"] = {"bytes": Value("binary"), "path": Value("string")}
    out = DatasetDict()
    for split in ("train", "validation", "test"):
        if split in by_split:
            ds = Dataset.from_dict(by_split[split], features=plain)
            out[split] = ds.cast_column("audio", features["audio"])
    return out, skipped

