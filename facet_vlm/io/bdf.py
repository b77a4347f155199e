"""Reader and writer of EDF (16-bit) and BDF (24-bit, BioSemi) physiological recordings.

MAHNOB-HCI ships its peripheral signals as BDF (``Part_1_S_Trial1_emotion.bdf``: 47 channels at 256 Hz, the ECG
in ``EXG1``..``EXG3``, the trigger in ``Status``). Both formats share one layout: a 256-byte fixed header, a
256-byte header per signal, then data records that hold ``samples_per_record[i]`` little-endian integers of each
signal in turn (2 bytes in EDF, 3 in BDF). Digital values map to physical units linearly through each signal's
digital and physical minimum and maximum.

The writer exists so that tests and the synthetic data generator can make real files; it writes plain EDF/BDF
(no EDF+ annotations).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import numpy as np

from ..errors import FormatError

BDF_MAGIC = b"\xffBIOSEMI"
EDF_MAGIC = b"0       "
_FIXED_HEADER_BYTES = 256
_SIGNAL_HEADER_BYTES = 256
# (name, width) of the per-signal header fields, in file order; each field is stored for all signals in turn.
_SIGNAL_FIELDS = (("label", 16), ("transducer", 80), ("physical_dimension", 8), ("physical_min", 8),
                  ("physical_max", 8), ("digital_min", 8), ("digital_max", 8), ("prefilter", 80),
                  ("samples_per_record", 8), ("reserved", 32))
_ANNOTATION_LABELS = ("EDF Annotations", "BDF Annotations")


@dataclass
class BioSignals:
    """The decoded content of an EDF/BDF file.

    Attributes:
        labels: channel names in file order (``"EXG1"``, ``"Status"``...).
        signals: one float64 array per channel in physical units, in file order.
        sample_rates: samples per second of each channel.
        physical_dimensions: units of each channel (``"uV"``...).
        kind: ``"BDF"`` or ``"EDF"``.
        start: recording start date and time from the header.
        patient: the header's patient field.
        recording: the header's recording field.
        transducers, prefilters: the per-channel free-text header fields.
        path: the file it came from, if any.
    """

    labels: list[str]
    signals: list[np.ndarray]
    sample_rates: list[float]
    physical_dimensions: list[str]
    kind: str = "BDF"
    start: _dt.datetime | None = None
    patient: str = ""
    recording: str = ""
    transducers: list[str] = field(default_factory=list)
    prefilters: list[str] = field(default_factory=list)
    path: str | None = None

    def index(self, label: str) -> int:
        """Position of the channel called ``label`` (exact match first, then case-insensitive)."""
        if label in self.labels:
            return self.labels.index(label)
        lowered = [name.lower() for name in self.labels]
        if label.lower() in lowered:
            return lowered.index(label.lower())
        raise KeyError(f"{self.path or 'signals'}: no channel {label!r}; channels are {self.labels}")

    def channel(self, label: str) -> tuple[np.ndarray, float]:
        """The samples and sample rate of the channel called ``label``."""
        position = self.index(label)
        return self.signals[position], self.sample_rates[position]


def _text(raw: bytes) -> str:
    return raw.decode("latin-1").strip()


def _number(raw: bytes, what: str, path: Path, integer: bool = False) -> float:
    text = _text(raw)
    try:
        return int(text) if integer else float(text)
    except ValueError:
        raise FormatError(f"header field {what} is {text!r}, not a number; the file is not valid EDF/BDF",
                          path) from None


def _parse_start(date: str, time: str) -> _dt.datetime | None:
    try:
        day, month, year = (int(part) for part in date.split("."))
        hour, minute, second = (int(part) for part in time.split("."))
    except ValueError:
        return None
    # EDF spec: two-digit years 85..99 are 19xx, 00..84 are 20xx.
    year += 1900 if year >= 85 else 2000
    try:
        return _dt.datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None


def read_bdf(path: str | PathLike, channels: list[str] | tuple[str, ...] | None = None) -> BioSignals:
    """Read an EDF or BDF file (chosen by its header magic, not its extension).

    Args:
        path: the ``.bdf`` / ``.edf`` file.
        channels: labels to decode (others are skipped, which saves time on 47-channel MAHNOB files);
            ``None`` decodes all but EDF+/BDF+ annotation channels.

    Raises:
        FormatError: a truncated file, an unknown magic, a header field that is not a number or a missing channel.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise FormatError(f"cannot read the file ({error.strerror})", path) from error
    if len(raw) < _FIXED_HEADER_BYTES:
        raise FormatError(f"only {len(raw)} bytes; an EDF/BDF header alone is 256 bytes", path)
    magic = raw[:8]
    if magic == BDF_MAGIC:
        kind, width = "BDF", 3
    elif magic == EDF_MAGIC:
        kind, width = "EDF", 2
    else:
        raise FormatError(f"starts with {magic!r}, neither the BDF magic {BDF_MAGIC!r} nor the EDF {EDF_MAGIC!r}",
                          path)
    patient, recording = _text(raw[8:88]), _text(raw[88:168])
    start = _parse_start(_text(raw[168:176]), _text(raw[176:184]))
    header_bytes = int(_number(raw[184:192], "header bytes", path, integer=True))
    n_records = int(_number(raw[236:244], "number of data records", path, integer=True))
    record_seconds = _number(raw[244:252], "record duration", path)
    n_signals = int(_number(raw[252:256], "number of signals", path, integer=True))
    if n_signals <= 0:
        raise FormatError(f"declares {n_signals} signals", path)
    if header_bytes != _FIXED_HEADER_BYTES * (n_signals + 1):
        raise FormatError(f"header size field says {header_bytes} bytes but {n_signals} signals need "
                          f"{_FIXED_HEADER_BYTES * (n_signals + 1)}", path)
    if len(raw) < header_bytes:
        raise FormatError(f"truncated header: {len(raw)} bytes, the header needs {header_bytes}", path)
    fields: dict[str, list[bytes]] = {}
    offset = _FIXED_HEADER_BYTES
    for name, size in _SIGNAL_FIELDS:
        fields[name] = [raw[offset + i * size: offset + (i + 1) * size] for i in range(n_signals)]
        offset += size * n_signals
    labels = [_text(value) for value in fields["label"]]
    samples = [int(_number(value, f"samples per record of {labels[i]!r}", path, integer=True))
               for i, value in enumerate(fields["samples_per_record"])]
    if any(count <= 0 for count in samples):
        raise FormatError(f"a channel declares no samples per record: {dict(zip(labels, samples))}", path)
    record_bytes = sum(samples) * width
    available = (len(raw) - header_bytes) // record_bytes
    if n_records < 0:  # -1 = unknown while recording; the file size tells.
        n_records = available
    if available < n_records:
        raise FormatError(f"truncated data: header declares {n_records} records of {record_bytes} bytes, the file "
                          f"holds {available}", path)
    if record_seconds <= 0:
        raise FormatError(f"record duration is {record_seconds} s", path)
    wanted = [label for label in labels if label not in _ANNOTATION_LABELS] if channels is None else list(channels)
    missing = [label for label in wanted if label not in labels]
    if missing:
        raise FormatError(f"no channel(s) {missing}; the file has {labels}", path)
    data = np.frombuffer(raw, dtype=np.uint8, count=n_records * record_bytes, offset=header_bytes)
    data = data.reshape(n_records, record_bytes)
    starts = np.concatenate([[0], np.cumsum(samples)]) * width
    result = BioSignals(labels=[], signals=[], sample_rates=[], physical_dimensions=[], kind=kind, start=start,
                        patient=patient, recording=recording, path=str(path))
    for label in wanted:
        i = labels.index(label)
        block = data[:, starts[i]:starts[i + 1]].reshape(-1, width)
        digital = _decode(block, width)
        d_min = _number(fields["digital_min"][i], f"digital minimum of {label!r}", path)
        d_max = _number(fields["digital_max"][i], f"digital maximum of {label!r}", path)
        p_min = _number(fields["physical_min"][i], f"physical minimum of {label!r}", path)
        p_max = _number(fields["physical_max"][i], f"physical maximum of {label!r}", path)
        if d_max == d_min:
            raise FormatError(f"channel {label!r} has equal digital minimum and maximum ({d_min})", path)
        gain = (p_max - p_min) / (d_max - d_min)
        result.labels.append(label)
        result.signals.append((digital - d_min) * gain + p_min)
        result.sample_rates.append(samples[i] / record_seconds)
        result.physical_dimensions.append(_text(fields["physical_dimension"][i]))
        result.transducers.append(_text(fields["transducer"][i]))
        result.prefilters.append(_text(fields["prefilter"][i]))
    return result


def read_bdf_labels(path: str | PathLike) -> list[str]:
    """Channel labels of an EDF/BDF file, reading only its header."""
    path = Path(path)
    try:
        with path.open("rb") as file:
            head = file.read(_FIXED_HEADER_BYTES)
            if len(head) < _FIXED_HEADER_BYTES or head[:8] not in (BDF_MAGIC, EDF_MAGIC):
                raise FormatError("not an EDF/BDF file (short or wrong header)", path)
            count = int(_number(head[252:256], "number of signals", path, integer=True))
            labels = file.read(16 * count)
    except OSError as error:
        raise FormatError(f"cannot read the file ({error.strerror})", path) from error
    if len(labels) < 16 * count:
        raise FormatError("truncated signal header", path)
    return [_text(labels[i * 16:(i + 1) * 16]) for i in range(count)]


def _decode(block: np.ndarray, width: int) -> np.ndarray:
    """Little-endian signed integers of ``width`` bytes (rows of ``block``) as float64."""
    if width == 2:
        return block.copy().view("<i2").reshape(-1).astype(np.float64)
    values = block[:, 0].astype(np.int32) | (block[:, 1].astype(np.int32) << 8) | (block[:, 2].astype(np.int32) << 16)
    values = np.where(values >= 1 << 23, values - (1 << 24), values)
    return values.astype(np.float64)


def _field(value: object, size: int, what: str) -> bytes:
    encoded = str(value).encode("latin-1", errors="replace")
    if len(encoded) > size:
        raise ValueError(f"{what} {value!r} does not fit the {size}-character EDF/BDF header field")
    return encoded.ljust(size, b" ")


def write_bdf(path: str | PathLike, signals: dict[str, np.ndarray] | list[np.ndarray],
              sample_rates: float | list[float], labels: list[str] | None = None,
              physical_dimensions: str | list[str] = "uV", kind: str = "BDF", record_seconds: float = 1.0,
              physical_ranges: list[tuple[float, float]] | None = None, patient: str = "X X X X",
              recording: str = "Startdate X X X X", start: _dt.datetime | None = None) -> Path:
    """Write signals to a BDF (24-bit) or EDF (16-bit) file.

    Each channel's physical range defaults to its own min..max (widened when flat), so quantisation uses the full
    digital range. A channel whose length is not a whole number of records is zero-padded to the next record.

    Args:
        path: output file.
        signals: ``{label: samples}`` or a list of 1-D arrays (then ``labels`` names them).
        sample_rates: one rate for all channels or one per channel; ``rate * record_seconds`` must be whole.
        labels: channel names when ``signals`` is a list.
        physical_dimensions: unit(s) written to the header.
        kind: ``"BDF"`` or ``"EDF"``.
        record_seconds: duration of one data record.
        physical_ranges: optional ``(min, max)`` per channel.
        patient, recording, start: header text fields.
    """
    kind = kind.upper()
    if kind not in ("BDF", "EDF"):
        raise ValueError(f"kind must be 'BDF' or 'EDF', got {kind!r}")
    if isinstance(signals, dict):
        labels, arrays = list(signals), [np.asarray(value, dtype=np.float64) for value in signals.values()]
    else:
        arrays = [np.asarray(value, dtype=np.float64) for value in signals]
        labels = list(labels) if labels is not None else [f"ch{i + 1}" for i in range(len(arrays))]
    n = len(arrays)
    if n == 0 or len(labels) != n:
        raise ValueError(f"need one label per signal, got {len(labels)} labels for {n} signals")
    rates = [float(sample_rates)] * n if np.isscalar(sample_rates) else [float(r) for r in sample_rates]
    units = [physical_dimensions] * n if isinstance(physical_dimensions, str) else list(physical_dimensions)
    per_record = [round(rate * record_seconds) for rate in rates]
    if any(abs(count - rate * record_seconds) > 1e-6 or count <= 0 for count, rate in zip(per_record, rates)):
        raise ValueError(f"sample rates {rates} times record_seconds={record_seconds} must be positive integers")
    n_records = max(int(np.ceil(len(a) / count)) for a, count in zip(arrays, per_record))
    digital_min, digital_max = (-(1 << 23), (1 << 23) - 1) if kind == "BDF" else (-32768, 32767)
    ranges = []
    for i, array in enumerate(arrays):
        low, high = physical_ranges[i] if physical_ranges is not None else (float(array.min()), float(array.max()))
        if high <= low:
            low, high = low - 1.0, low + 1.0
        ranges.append((low, high))
    start = start or _dt.datetime(2009, 7, 9, 17, 53, 46)
    header = bytearray()
    header += BDF_MAGIC if kind == "BDF" else EDF_MAGIC
    header += _field(patient, 80, "patient") + _field(recording, 80, "recording")
    header += start.strftime("%d.%m.%y").encode() + start.strftime("%H.%M.%S").encode()
    header += _field(_FIXED_HEADER_BYTES * (n + 1), 8, "header bytes")
    header += _field("24BIT" if kind == "BDF" else "", 44, "reserved")
    header += _field(n_records, 8, "records") + _field(_format_number(record_seconds), 8, "duration")
    header += _field(n, 4, "signals")
    columns = {
        "label": labels, "transducer": ["Active electrode" if kind == "BDF" else ""] * n,
        "physical_dimension": units, "physical_min": [_format_bound(r[0], -1) for r in ranges],
        "physical_max": [_format_bound(r[1], 1) for r in ranges], "digital_min": [digital_min] * n,
        "digital_max": [digital_max] * n, "prefilter": [""] * n, "samples_per_record": per_record,
        "reserved": [""] * n,
    }
    for name, size in _SIGNAL_FIELDS:
        for value in columns[name]:
            header += _field(value, size, name)
    width = 3 if kind == "BDF" else 2
    blocks = []
    for array, count, (low, high) in zip(arrays, per_record, ranges):
        padded = np.zeros(n_records * count)
        padded[: len(array)] = array
        # The header holds the range rounded outward; quantise with those values so reading inverts writing.
        low, high = float(_format_bound(low, -1)), float(_format_bound(high, 1))
        digital = np.round((padded - low) / (high - low) * (digital_max - digital_min) + digital_min)
        digital = np.clip(digital, digital_min, digital_max).astype(np.int64)
        as_bytes = np.stack([(digital >> (8 * b)) & 0xFF for b in range(width)], axis=-1).astype(np.uint8)
        blocks.append(as_bytes.reshape(n_records, count * width))
    path = Path(path)
    path.write_bytes(bytes(header) + np.concatenate(blocks, axis=1).tobytes())
    return path


def _format_number(value: float) -> str:
    """A number in at most 8 characters, as the header needs, keeping as many digits as fit."""
    for digits in range(8, 0, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 8:
            return text
    raise ValueError(f"{value} cannot be written in 8 characters")


def _format_bound(value: float, direction: int) -> str:
    """:func:`_format_number` rounded outward (``direction`` -1: not above ``value``; +1: not below it)."""
    text, nudged = _format_number(value), value
    while (float(text) - value) * direction < 0:
        nudged += direction * max(abs(float(text) - value), abs(value) * 1e-12, 1e-300)
        text = _format_number(nudged)
    return text
