"""Video files as streams of RGB frames: checked before decoding, decoded one frame at a time, and written.

FFmpeg (behind ``cv2.VideoCapture``) opens far more than videos: a plain text file goes through its ``tty``
demuxer, which renders the characters as "ANSI art" frames at 25 fps, and an image opens as a one-frame clip. A
pulse measured on those is meaningless, so :func:`check_video_file` first looks at the file's leading bytes and
accepts only the containers of :data:`VIDEO_SIGNATURES`; the decoded stream is then refused if FFmpeg reports the
``ansi`` text codec. Frames are then yielded one by one (:func:`iter_video_frames`), so a caller that keeps only
per-frame summaries (the rPPG trace, a few face crops) uses memory independent of the clip's length.

Frames are RGB ``uint8`` arrays ``(H, W, 3)``; OpenCV's BGR order is converted at the file boundary only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import cv2
import numpy as np

from ..errors import FormatError

#: Leading-byte signatures of the video containers accepted: ``(name, offset, bytes)``. A file matches when its
#: bytes at ``offset`` equal ``bytes``. QuickTime/MP4 family: the ``ftyp`` box (ISO/IEC 14496-12) or, in old
#: QuickTime files, a top-level ``moov``/``mdat``/``wide``/``free``/``skip`` box; AVI: ``RIFF`` with the ``AVI ``
#: form type (``AVIX`` for OpenDML extensions); Matroska/WebM: the EBML magic; MPEG program stream: a pack header;
#: MPEG elementary video and H.264/H.265 Annex-B streams: a start code; MPEG transport stream: the 0x47 sync byte
#: (checked again 188 bytes later); Ogg, FLV, ASF/WMV, YUV4MPEG2 and NUT by their magic strings.
VIDEO_SIGNATURES: tuple[tuple[str, int, bytes], ...] = (
    ("MP4/QuickTime", 4, b"ftyp"),
    ("QuickTime", 4, b"moov"),
    ("QuickTime", 4, b"mdat"),
    ("QuickTime", 4, b"wide"),
    ("QuickTime", 4, b"free"),
    ("QuickTime", 4, b"skip"),
    ("AVI", 8, b"AVI "),
    ("AVI", 8, b"AVIX"),
    ("Matroska/WebM", 0, b"\x1a\x45\xdf\xa3"),
    ("MPEG program stream", 0, b"\x00\x00\x01\xba"),
    ("MPEG video", 0, b"\x00\x00\x01\xb3"),
    ("H.264/H.265 stream", 0, b"\x00\x00\x00\x01"),
    ("Ogg", 0, b"OggS"),
    ("FLV", 0, b"FLV"),
    ("ASF/WMV", 0, b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"),
    ("YUV4MPEG2", 0, b"YUV4MPEG2"),
    ("NUT", 0, b"nut/multimedia container"),
)
#: What a few common non-video files start with, to say what the file looks like instead.
_OTHER_SIGNATURES = ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
                     (b"%PDF", "a PDF document"), (b"PK\x03\x04", "a ZIP archive"), (b"RIFF", "a RIFF file "
                     "that is not an AVI (e.g. WAV audio)"), (b"ID3", "an MP3 audio file"))
_TEXT_CODEC = "ansi"


def _describe(head: bytes) -> str:
    for magic, name in _OTHER_SIGNATURES:
        if head.startswith(magic):
            return name
    if not head:
        return "an empty file"
    try:
        head.decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        return "unknown binary data"


def video_container(path: str | PathLike) -> str:
    """The container name of :data:`VIDEO_SIGNATURES` that the file's leading bytes match.

    Raises:
        FormatError: the file is missing, or its first bytes match no video container (the message says what the
            file looks like: text, an image, ...).
    """
    path = Path(path)
    if not path.is_file():
        raise FormatError("video file not found", path)
    with path.open("rb") as handle:
        head = handle.read(512)
    for name, offset, magic in VIDEO_SIGNATURES:
        if head[offset:offset + len(magic)] == magic:
            return name
    if head[:1] == b"\x47" and head[188:189] == b"\x47":
        return "MPEG transport stream"
    accepted = ", ".join(dict.fromkeys(name for name, _, _ in VIDEO_SIGNATURES))
    raise FormatError(f"not a video file: it looks like {_describe(head)}, and its first bytes match no video "
                      f"container ({accepted}, MPEG-TS)", path)


@dataclass(frozen=True)
class VideoInfo:
    """What a video file declares about itself.

    Attributes:
        path: the file.
        container: the container :func:`video_container` recognised.
        fps: frame rate the container declares.
        frame_count: number of frames the container declares (an estimate for some containers; the decoded count
            can differ by a few frames).
        width, height: frame size in pixels.
        codec: FourCC of the video stream as FFmpeg reports it (e.g. ``"avc1"``, ``"FFV1"``).
    """

    path: str
    container: str
    fps: float
    frame_count: int
    width: int
    height: int
    codec: str


def _fourcc(value: float) -> str:
    code = int(value)
    return "".join(chr((code >> 8 * i) & 0xFF) for i in range(4)).strip("\x00 ")


def _open(path: Path) -> tuple[cv2.VideoCapture, VideoInfo]:
    container = video_container(path)
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise FormatError(f"OpenCV cannot open this {container} file (unknown codec or damaged file)", path)
    info = VideoInfo(str(path), container, float(capture.get(cv2.CAP_PROP_FPS) or 0.0),
                     max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)),
                     int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                     _fourcc(capture.get(cv2.CAP_PROP_FOURCC)))
    if info.codec.lower() == _TEXT_CODEC:
        capture.release()
        raise FormatError("not a video file: FFmpeg decodes it as text rendered to frames (codec 'ansi')", path)
    if info.fps <= 0:
        capture.release()
        raise FormatError("the video does not declare a frame rate", path)
    return capture, info


def probe_video(path: str | PathLike) -> VideoInfo:
    """Check a video file and return what it declares, without decoding frames.

    Raises:
        FormatError: missing, not a video container, undecodable, text, or no frame rate.
    """
    capture, info = _open(Path(path))
    capture.release()
    return info


class VideoStream:
    """A video file opened for streaming: ``info`` at once, then ``for frame in stream`` (RGB ``uint8``).

    The stream can be iterated once; each frame is decoded when asked for, so memory does not grow with the
    clip's length. ``frames_read`` counts the frames yielded so far.

    Args:
        path: the video file.
        max_frames: stop after this many frames (``None``: the whole clip).

    Raises:
        FormatError: the file is not a decodable video (see :func:`probe_video`), or (when iterated to the end) it
            holds no decodable frame.
    """

    def __init__(self, path: str | PathLike, max_frames: int | None = None):
        self.path = Path(path)
        self._capture, self.info = _open(self.path)
        self.max_frames = max_frames
        self.frames_read = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        try:
            while self.max_frames is None or self.frames_read < self.max_frames:
                ok, frame = self._capture.read()
                if not ok:
                    break
                self.frames_read += 1
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        finally:
            self._capture.release()
        if self.frames_read == 0:
            raise FormatError("the video holds no decodable frame", self.path)


def iter_video_frames(path: str | PathLike, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """RGB ``uint8`` frames ``(H, W, 3)`` of a video file, decoded one at a time (see :class:`VideoStream`)."""
    return iter(VideoStream(path, max_frames))


def read_video(path: str | PathLike, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """All frames of a video file as RGB ``uint8`` ``(T, H, W, 3)`` and its frame rate.

    This holds the whole clip in memory (T x H x W x 3 bytes: 4.5 GB for 67 s of 640x480 at 30 fps); the rPPG
    functions take a path and stream it instead (:func:`facet_vlm.physio.measure_pulse`). Use ``max_frames`` for
    long clips.

    Raises:
        FormatError: the file is missing, is not a video, cannot be decoded, or holds no frame.
    """
    stream = VideoStream(path, max_frames)
    return np.stack(list(stream)), stream.info.fps


#: Codecs tried in order by :func:`write_video`: lossless FFV1 (keeps the sub-level pulse), then MJPG.
VIDEO_CODECS = ("FFV1", "MJPG")


class VideoWriter:
    """Write RGB ``uint8`` frames one at a time to an ``.avi`` (context manager), with the first codec of ``codecs``
    this OpenCV build supports; ``codec`` says which.

    Raises:
        RuntimeError: this OpenCV build can write none of ``codecs``.
    """

    def __init__(self, path: str | PathLike, fps: float, size: tuple[int, int], codecs: tuple[str, ...] = VIDEO_CODECS):
        width, height = size
        for codec in codecs:
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), float(fps), (width, height))
            if writer.isOpened():
                self._writer, self.codec, self.size = writer, codec, (width, height)
                return
            writer.release()
        raise RuntimeError(f"this OpenCV build can write none of the codecs {codecs}")

    def write(self, frame: np.ndarray) -> None:
        if frame.shape[1::-1] != self.size:
            raise ValueError(f"frame of size {frame.shape[1::-1]} in a {self.size} video")
        self._writer.write(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        self._writer.release()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def write_video(path: str | PathLike, frames: np.ndarray, fps: float) -> str:
    """Write RGB ``uint8`` frames to an ``.avi`` with the first codec of :data:`VIDEO_CODECS` this build supports.

    Returns the FourCC used.
    """
    frames = np.asarray(frames)
    with VideoWriter(path, fps, (frames.shape[2], frames.shape[1])) as writer:
        for frame in frames:
            writer.write(frame)
    return writer.codec
