"""Label sets of the supported data sets and the emotion prompts FACET-VLM turns into class text embeddings.

Everything here is data: a new label set is a new entry in `LABEL_SETS` (and, if its names are new, in
`CLASS_DESCRIPTIONS`); no code changes.
"""

from __future__ import annotations

#: Six basic expressions, in the order used by every 3D FER paper on BU-3DFE / Bosphorus / BU-4DFE.
BASIC_EXPRESSIONS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")

#: BU-3DFE / BU-4DFE two-letter expression codes (file names such as ``F0001_HA04WH_F3D.wrl``).
BU3DFE_CODES = {"AN": "anger", "DI": "disgust", "FE": "fear", "HA": "happiness", "SA": "sadness",
                "SU": "surprise", "NE": "neutral"}

#: Bosphorus expression codes (``bs000_E_HAPPY_0.bnt``).
BOSPHORUS_CODES = {"ANGER": "anger", "DISGUST": "disgust", "FEAR": "fear", "HAPPY": "happiness",
                   "SADNESS": "sadness", "SURPRISE": "surprise"}

#: BU-4DFE sequence folder names (``F001/Happy/000.wrl``).
BU4DFE_FOLDERS = {"Angry": "anger", "Disgust": "disgust", "Fear": "fear", "Happy": "happiness", "Sad": "sadness",
                  "Surprise": "surprise"}

LABEL_SETS: dict[str, tuple[str, ...]] = {
    "basic6": BASIC_EXPRESSIONS,
    "basic7": BASIC_EXPRESSIONS + ("neutral",),
    # BP4D-Spontaneous tasks T1..T8, named by their target emotion.
    "bp4d_tasks": ("happiness", "sadness", "surprise", "embarrassment", "fear", "pain", "anger", "disgust"),
    # 4DME micro-expression emotion classes.
    "4dme": ("positive", "negative", "surprise", "repression", "others"),
    "valence": ("low valence", "high valence"),
    "arousal": ("low arousal", "high arousal"),
    # MAHNOB-HCI emotion tags (the self-reported discrete emotion of a session).
    "mahnob_emotions": ("neutral", "anger", "disgust", "fear", "happiness", "sadness", "surprise", "amusement",
                        "anxiety"),
}

#: Default label set per data set.
DATASET_LABEL_SET = {"synthetic": "basic6", "bu3dfe": "basic6", "bosphorus": "basic6", "bu4dfe": "basic6",
                     "bp4d": "bp4d_tasks", "4dme": "4dme", "mahnob": "valence", "deap": "valence"}

#: Words a prompt may use for a class; the first one is the class name itself.
CLASS_DESCRIPTIONS: dict[str, tuple[str, ...]] = {
    "anger": ("anger", "an angry expression", "lowered brows and pressed lips"),
    "disgust": ("disgust", "a disgusted expression", "a wrinkled nose and raised upper lip"),
    "fear": ("fear", "a fearful expression", "raised brows, wide eyes and stretched lips"),
    "happiness": ("happiness", "a happy smile", "raised cheeks and pulled lip corners"),
    "sadness": ("sadness", "a sad expression", "raised inner brows and lowered lip corners"),
    "surprise": ("surprise", "a surprised expression", "raised brows and a dropped jaw"),
    "neutral": ("neutral", "a neutral expression", "relaxed facial muscles"),
    "embarrassment": ("embarrassment", "an embarrassed expression", "a controlled smile and averted gaze"),
    "pain": ("pain", "a pained expression", "a tightened face and closed eyes"),
    "positive": ("a positive emotion", "a subtle smile", "a brief pull of the lip corners"),
    "negative": ("a negative emotion", "a subtle frown", "a brief lowering of the brows"),
    "repression": ("repression", "a suppressed expression", "a brief tightening of the lips"),
    "others": ("another emotion", "an ambiguous expression", "a subtle facial movement"),
    "amusement": ("amusement", "an amused expression", "a broad smile"),
    "anxiety": ("anxiety", "an anxious expression", "tense brows and lips"),
    "low valence": ("unpleasant feelings", "a displeased face", "a negative mood"),
    "high valence": ("pleasant feelings", "a pleased face", "a positive mood"),
    "low arousal": ("calm", "a calm relaxed face", "low excitement"),
    "high arousal": ("excitement", "an excited tense face", "high excitement"),
}

#: Prompt templates; ``{}`` receives one class description. The ensemble per class is every template times every
#: description, averaged after encoding (open_clip's zero-shot recipe).
PROMPT_TEMPLATES: tuple[str, ...] = (
    "a 3D scan of a face showing {}.",
    "a rendering of a face with {}.",
    "a photo of a person with {}.",
    "a depth map of a face showing {}.",
)


def label_set(name: str) -> tuple[str, ...]:
    """The class names of a label set, e.g. ``label_set("basic6")``."""
    if name not in LABEL_SETS:
        raise KeyError(f"unknown label set {name!r}; known: {', '.join(sorted(LABEL_SETS))}")
    return LABEL_SETS[name]


def class_prompts(class_name: str, templates: tuple[str, ...] | list[str] = PROMPT_TEMPLATES) -> list[str]:
    """All prompts of one class: every template filled with every description of the class."""
    descriptions = CLASS_DESCRIPTIONS.get(class_name, (class_name,))
    return [template.format(description) for template in templates for description in descriptions]


def id2label(labels: tuple[str, ...] | list[str]) -> dict[int, str]:
    return dict(enumerate(labels))
