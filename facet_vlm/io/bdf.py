"""Reader and writer of EDF (16-bit) and BDF (24-bit, BioSemi) physiological recordings, through pyEDFlib.

MAHNOB-HCI ships its peripheral signals as BDF (``Part_1_S_Trial1_emotion.bdf``: 47 channels at 256 Hz, the ECG
in ``EXG1``..``EXG3``, the trigger in ``Status``). Decoding and encoding are pyEDFlib's (the maintained EDFlib
bindings); this module adds a typed result (`BioSignals`), channel selection by label, and a check of the 256-byte
fixed header before pyEDFlib opens the file, so that a bad file gets a `FormatError` that names the file and the
problem (wrong magic, short or truncated file, a header number that is not a number) instead of EDFlib's generic
"not EDF(+) or BDF(+) compliant".

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


def check_header(path: str | PathLike) -> tuple[str, int]:
    """The kind (``"BDF"``/``"EDF"``) and the number of signals of a file whose fixed header and size are sound.

    Raises:
        FormatError: the file is unreadable, shorter than its header, has an unknown magic, a header number that
            is not a number, or fewer data bytes than its header declares.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as file:
            head = file.read(_FIXED_HEADER_BYTES)
            if len(head) < _FIXED_HEADER_BYTES:
                raise FormatError(f"only {len(head)} bytes; an EDF/BDF header alone is 256 bytes", path)
            kind = {BDF_MAGIC: "BDF", EDF_MAGIC: "EDF"}.get(head[:8])
            if kind is None:
                raise FormatError(f"starts with {head[:8]!r}, neither the BDF magic {BDF_MAGIC!r} nor the EDF "
                                  f"{EDF_MAGIC!r}", path)
            header_bytes = int(_number(head[184:192], "header bytes", path, integer=True))
            n_records = int(_number(head[236:244], "number of data records", path, integer=True))
            _number(head[244:252], "record duration", path)
            n_signals = int(_number(head[252:256], "number of signals", path, integer=True))
            if n_signals <= 0 or header_bytes != _FIXED_HEADER_BYTES * (n_signals + 1):
                raise FormatError(f"header declares {n_signals} signals and {header_bytes} header bytes; "
                                  "they do not match", path)
            if size < header_bytes:
                raise FormatError(f"truncated header: {size} bytes, the header needs {header_bytes}", path)
            file.seek(_FIXED_HEADER_BYTES + n_signals * 216)  # samples per record: after 216 bytes of fields
            counts = file.read(8 * n_signals)
    except OSError as error:
        raise FormatError(f"cannot read the file ({error.strerror})", path) from error
    samples = [int(_number(counts[i * 8:(i + 1) * 8], f"samples per record of signal {i}", path, integer=True))
               for i in range(n_signals)]
    record_bytes = sum(samples) * (3 if kind == "BDF" else 2)
    if record_bytes <= 0 or (n_records >= 0 and size - header_bytes < n_records * record_bytes):
        raise FormatError(f"truncated data: header declares {n_records} records of {record_bytes} bytes, the file "
                          f"holds {(size - header_bytes) // max(record_bytes, 1)}", path)
    return kind, n_signals


def read_bdf(path: str | PathLike, channels: list[str] | tuple[str, ...] | None = None) -> BioSignals:
    """Read an EDF or BDF file (chosen by its header magic, not its extension).

    Args:
        path: the ``.bdf`` / ``.edf`` file.
        channels: labels to decode (others are skipped, which saves time on 47-channel MAHNOB files);
            ``None`` decodes all but EDF+/BDF+ annotation channels.

    Raises:
        FormatError: a truncated file, an unknown magic, a header field that is not a number, a missing channel, or
            a file that pyEDFlib refuses (its reason is quoted).
    """
    import pyedflib

    path = Path(path)
    kind, _ = check_header(path)
    try:
        reader = pyedflib.EdfReader(str(path))
    except OSError as error:
        raise FormatError(f"pyEDFlib cannot read it: {error}", path) from None
    try:
        labels = [label.strip() for label in reader.getSignalLabels()]
        wanted = [label for label in labels if label not in _ANNOTATION_LABELS] if channels is None else list(channels)
        missing = [label for label in wanted if label not in labels]
        if missing:
            raise FormatError(f"no channel(s) {missing}; the file has {labels}", path)
        result = BioSignals(labels=[], signals=[], sample_rates=[], physical_dimensions=[], kind=kind,
                            start=reader.getStartdatetime(), patient=reader.patient.decode("latin-1").strip()
                            if isinstance(reader.patient, bytes) else str(reader.patient).strip(),
                            recording=str(reader.recording.decode("latin-1") if isinstance(reader.recording, bytes)
                                          else reader.recording).strip(), path=str(path))
        for label in wanted:
            i = labels.index(label)
            result.labels.append(label)
            result.signals.append(reader.readSignal(i, digital=False).astype(np.float64))
            result.sample_rates.append(float(reader.getSampleFrequency(i)))
            result.physical_dimensions.append(reader.getPhysicalDimension(i).strip())
            result.transducers.append(reader.getTransducer(i).strip())
            result.prefilters.append(reader.getPrefilter(i).strip())
    finally:
        reader.close()
    return result


def read_bdf_labels(path: str | PathLike) -> list[str]:
    """Channel labels of an EDF/BDF file, reading only its header."""
    path = Path(path)
    _, count = check_header(path)
    with path.open("rb") as file:
        file.seek(_FIXED_HEADER_BYTES)
        labels = file.read(16 * count)
    return [_text(labels[i * 16:(i + 1) * 16]) for i in range(count)]


def write_bdf(path: str | PathLike, signals: dict[str, np.ndarray] | list[np.ndarray],
              sample_rates: float | list[float], labels: list[str] | None = None,
              physical_dimensions: str | list[str] = "uV", kind: str = "BDF", record_seconds: float = 1.0,
              physical_ranges: list[tuple[float, float]] | None = None, patient: str = "X X X X",
              recording: str = "Startdate X X X X", start: _dt.datetime | None = None) -> Path:
    """Write signals to a BDF (24-bit) or EDF (16-bit) file with pyEDFlib.

    Each channel's physical range defaults to its own min..max (widened when flat, rounded outward to what the
    8-character header field holds), so quantisation uses the full digital range. A channel whose length is not a
    whole number of records is zero-padded to the next record.

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
    import pyedflib

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
    headers, padded = [], []
    for i, array in enumerate(arrays):
        low, high = physical_ranges[i] if physical_ranges is not None else (float(array.min()), float(array.max()))
        if high <= low:
            low, high = low - 1.0, low + 1.0
        # The header holds the range rounded outward; pyEDFlib quantises with what it holds, so reading inverts.
        headers.append({"label": labels[i], "dimension": units[i], "sample_frequency": rates[i],
                        "physical_min": float(_format_bound(low, -1)), "physical_max": float(_format_bound(high, 1)),
                        "digital_min": digital_min, "digital_max": digital_max,
                        "transducer": "Active electrode" if kind == "BDF" else "", "prefilter": ""})
        values = np.zeros(n_records * per_record[i])
        values[: len(array)] = array
        padded.append(values)
    path = Path(path)
    writer = pyedflib.EdfWriter(str(path), n, file_type=pyedflib.FILETYPE_BDF if kind == "BDF"
                                else pyedflib.FILETYPE_EDF)
    try:
        if record_seconds != 1.0:  # EDFlib's default; setting it anyway only adds a warning
            writer.setDatarecordDuration(record_seconds)
        writer.setSignalHeaders(headers)
        writer.setStartdatetime(start or _dt.datetime(2009, 7, 9, 17, 53, 46))
        writer.writeSamples(padded)
    finally:
        writer.close()
    # In plain EDF/BDF the patient and recording fields are free text; EDFlib writes EDF+-style sub-fields there,
    # so the given text replaces them.
    with path.open("r+b") as file:
        file.seek(8)
        file.write(_field(patient, 80, "patient") + _field(recording, 80, "recording"))
    return path


def _field(value: object, size: int, what: str) -> bytes:
    encoded = str(value).encode("latin-1", errors="replace")
    if len(encoded) > size:
        raise ValueError(f"{what} {value!r} does not fit the {size}-character EDF/BDF header field")
    return encoded.ljust(size, b" ")


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
