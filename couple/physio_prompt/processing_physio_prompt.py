"""Processor of the physio-facial prompt model: a face video → sampled face crops + the rPPG time-frequency map.

`PhysioPromptProcessor(videos=[...])` reads each clip (a video file, streamed one frame at a time, or frames with
their ``fps``), tracks the face (`facet_vlm.physio.face_tracking`), extracts the pulse from the forehead and cheeks
with an unsupervised rPPG method (POS or CHROM, over every frame) and returns ``pixel_values`` (B, T, 3, S, S) in
[0, 1] and ``tfr_values`` (B, 1, F, T') as a `BatchFeature`. `PhysioPromptProcessor.pulse` gives the pulse, the heart
rate and its quality (SNR, low-confidence flag, heart rate over time), and `PhysioPromptProcessor.analyze` both in
one pass over the video (what the video pipeline uses). `facet_vlm.physio` is imported inside the methods so that
importing this module stays cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from typing import Any

import numpy as np
from transformers import BatchFeature

from facet_vlm.errors import ConfigError
from facet_vlm.processing_utils import SettingsProcessor

VideoLike = str | PathLike | np.ndarray
RPPG_METHODS = ("pos", "chrom")
TFR_METHODS = ("stft", "morlet")
FACE_DETECTORS = ("auto", "mtcnn", "skin")


class PhysioPromptProcessor(SettingsProcessor):
    """Face video → `pixel_values` and `tfr_values` for `PhysioPromptForEmotionRecognition`.

    Args:
        image_size: side of the face crops (the ViT's image size).
        num_frames: crops sampled uniformly over the clip.
        tfr_size: (frequency bins, time columns) of the pulse map.
        tfr_method: "stft" or "morlet"; rppg_method: "pos" or "chrom" (see `facet_vlm.physio`): the rPPG method
            whose waveform becomes the model's pulse map.
        face_detector: "auto" (MTCNN, with a reported skin-colour fallback), "mtcnn" or "skin".
        heart_rate_method: the rPPG method of the heart rate, SNR and pulse signal `pulse` and `analyze` report
            (what the pipeline and ``predict.py`` print), computed on the same tracked skin regions. "chrom" by
            default, as `facet_vlm.physio.measure_pulse`: on the UBFC-rPPG development subjects CHROM on these
            regions was at least as good as POS in every comparison (``docs/rppg.md``), while the model's inputs
            keep `rppg_method`.
    """

    fields = ("image_size", "num_frames", "tfr_size", "tfr_method", "rppg_method", "face_detector",
              "heart_rate_method")

    def __init__(self, image_size: int = 224, num_frames: int = 8, tfr_size: Sequence[int] = (64, 64),
                 tfr_method: str = "stft", rppg_method: str = "pos", face_detector: str = "auto",
                 heart_rate_method: str = "chrom"):
        if image_size < 1 or num_frames < 1:
            raise ConfigError(f"image_size={image_size}, num_frames={num_frames}: both must be positive")
        if tfr_method not in TFR_METHODS or rppg_method not in RPPG_METHODS:
            raise ConfigError(f"tfr_method={tfr_method!r}, rppg_method={rppg_method!r}: use one of {TFR_METHODS} "
                              f"and one of {RPPG_METHODS}")
        self.image_size, self.num_frames = int(image_size), int(num_frames)
        self.tfr_size = [int(v) for v in tfr_size]
        if face_detector not in FACE_DETECTORS:
            raise ConfigError(f"face_detector={face_detector!r}: use one of {FACE_DETECTORS}")
        self.tfr_method, self.rppg_method, self.face_detector = tfr_method, rppg_method, face_detector
        if heart_rate_method not in RPPG_METHODS:
            raise ConfigError(f"heart_rate_method={heart_rate_method!r}: use one of {RPPG_METHODS}")
        self.heart_rate_method = heart_rate_method

    @classmethod
    def from_config(cls, config: Any, **overrides: Any) -> PhysioPromptProcessor:
        """Settings matching a `PhysioPromptConfig` (the crop size is the ViT's image size); `overrides` win."""
        return cls(**{"image_size": config.vision_config.image_size, **overrides})

    @staticmethod
    def read(video: VideoLike, fps: float | None = None) -> tuple[np.ndarray, float]:
        """All RGB uint8 frames (T, H, W, 3) and the frame rate of a video path, or of frames given with `fps`.

        This holds the whole clip in memory; `process_video`, `pulse` and `analyze` stream a file instead.
        """
        if isinstance(video, np.ndarray):
            return PhysioPromptProcessor._checked_frames(video, fps), float(fps)
        from facet_vlm.physio import read_video

        frames, found_fps = read_video(video)
        return frames, float(fps or found_fps)

    @staticmethod
    def _checked_frames(video: np.ndarray, fps: float | None) -> np.ndarray:
        if fps is None or fps <= 0:
            raise ConfigError("frames given as an array need their frame rate: pass fps=...")
        if video.ndim != 4 or video.shape[-1] != 3:
            raise ConfigError(f"frames must be (T, H, W, 3) RGB, got shape {video.shape}")
        return video

    def _analysis(self, video: VideoLike, fps: float | None) -> tuple[dict[str, np.ndarray], Any]:
        """The model arrays and the `rppg_method` `PulseResult` of one pass over a clip."""
        from facet_vlm.physio import physio_analysis

        if isinstance(video, np.ndarray):
            self._checked_frames(video, fps)
        return physio_analysis(video, fps, num_frames=self.num_frames, image_size=self.image_size,
                               tfr_size=tuple(self.tfr_size), tfr_method=self.tfr_method,
                               rppg_method=self.rppg_method, face_detector=self.face_detector)

    def analyze(self, video: VideoLike, fps: float | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """One pass over a clip (a file is streamed): the model arrays of `process_video` and the pulse of `pulse`."""
        arrays, result = self._analysis(video, fps)
        if self.heart_rate_method != result.method:  # the same regions' trace, the reported method
            from facet_vlm.physio import pulse_from_trace

            result = pulse_from_trace(result.trace, result.fps, self._pulse_config(), result.face)
        return arrays, self._pulse_dict(result)

    def _pulse_config(self) -> Any:
        from facet_vlm.physio import MODEL_DETECT_EVERY_S, PulseConfig

        return PulseConfig(method=self.heart_rate_method, detector=self.face_detector,
                           detect_every_s=MODEL_DETECT_EVERY_S)

    def process_video(self, video: VideoLike, fps: float | None = None) -> dict[str, np.ndarray]:
        """The arrays of one clip (no batch axis): ``pixel_values`` (T, 3, S, S) and ``tfr_values`` (1, F, T');
        the reported heart rate of `analyze` is not computed."""
        return self._analysis(video, fps)[0]

    def pulse(self, video: VideoLike, fps: float | None = None) -> dict[str, Any]:
        """The rPPG pulse of one clip: ``signal`` (float32, one value per frame), ``fps``, ``heart_rate`` (bpm) and
        its quality: ``snr_db``, ``low_confidence`` with its ``reasons``, ``heart_rate_over_time`` and ``face`` (how
        the skin regions were found); see `facet_vlm.physio.PulseResult`."""
        from facet_vlm.physio import measure_pulse

        if isinstance(video, np.ndarray):
            self._checked_frames(video, fps)
        return self._pulse_dict(measure_pulse(video, fps, self._pulse_config()))

    @staticmethod
    def checked_reference(reference: Any, shape: tuple[int, ...]) -> np.ndarray:
        """`reference` as a float32 array of a clip's ``tfr_values`` shape (a ``(F, T')`` map gets its channel
        axis), or a ConfigError naming both shapes."""
        reference = np.asarray(reference, dtype=np.float32)
        if reference.shape == tuple(shape[1:]):
            reference = reference[None]
        if reference.shape != tuple(shape):
            raise ConfigError(f"pulse_reference has shape {reference.shape}; this processor's pulse maps are "
                              f"{tuple(shape)} (make it with PhysioPromptProcessor.pulse_reference)")
        return reference

    @staticmethod
    def _pulse_dict(result: Any) -> dict[str, Any]:
        return {"signal": np.asarray(result.signal, dtype=np.float32), "fps": result.fps,
                "heart_rate": result.heart_rate, "snr_db": result.snr_db, "low_confidence": result.low_confidence,
                "reasons": list(result.reasons), "heart_rate_over_time": result.windows.to_dict(),
                "face": result.face.to_dict(), "method": result.method}

    @staticmethod
    def _video_list(videos: VideoLike | Sequence[VideoLike], fps: float | Sequence[float] | None
                    ) -> tuple[list[VideoLike], list[float | None]]:
        single = isinstance(videos, str | PathLike) or (isinstance(videos, np.ndarray) and videos.ndim == 4)
        videos = [videos] if single else list(videos)
        if not videos:
            raise ConfigError("PhysioPromptProcessor: no videos given")
        rates = list(fps) if isinstance(fps, Sequence) else [fps] * len(videos)
        if len(rates) != len(videos):
            raise ConfigError(f"{len(rates)} frame rates for {len(videos)} videos")
        return videos, rates

    def pulse_reference(self, videos: VideoLike | Sequence[VideoLike], fps: float | Sequence[float] | None = None
                        ) -> np.ndarray:
        """A person's reference pulse map, for a model with ``pulse_reference="person_mean"``: the mean
        ``tfr_values`` (1, F, T') over several clips of that person (unlabelled; they should not all show one
        emotion, or the reference takes it away). Pass it to ``__call__`` / the pipeline as ``pulse_reference``.

        Raises:
            ConfigError: fewer than 2 clips (a single clip would be its own reference: a map of zeros).
        """
        videos, rates = self._video_list(videos, fps)
        if len(videos) < 2:
            raise ConfigError("a person's pulse reference needs at least 2 of their clips (one clip would be its own "
                              "reference), got 1")
        maps = [self.process_video(video, rate)["tfr_values"] for video, rate in zip(videos, rates)]
        return np.mean(maps, axis=0).astype(np.float32)

    def __call__(self, videos: VideoLike | Sequence[VideoLike], fps: float | Sequence[float] | None = None,
                 labels: Sequence[Sequence[int]] | None = None, return_tensors: str | None = "pt",
                 pulse_reference: np.ndarray | None = None) -> BatchFeature:
        """One clip or a list of clips → a batch; `labels` ((valence, arousal) pairs) are added as ``labels``;
        `pulse_reference` (`pulse_reference`, for a model trained with ``pulse_reference="person_mean"``) is
        subtracted from every clip's ``tfr_values`` (all clips are taken to be of that person)."""
        videos, rates = self._video_list(videos, fps)
        arrays = [self.process_video(video, rate) for video, rate in zip(videos, rates)]
        data = {name: np.stack([item[name] for item in arrays]) for name in arrays[0]}
        if pulse_reference is not None:
            data["tfr_values"] = data["tfr_values"] - self.checked_reference(pulse_reference,
                                                                             data["tfr_values"].shape[1:])
        if labels is not None:
            data["labels"] = np.asarray(labels, dtype=np.int64).reshape(len(videos), -1)
        return BatchFeature(data=data, tensor_type=return_tensors)


__all__ = ["PhysioPromptProcessor"]
