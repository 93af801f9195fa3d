"""A synthetic multimodal sentiment data set in the MVSA layout, for demos and tests without the real data.

Every post pairs a short tweet-like text with a drawn image, and its label needs both modalities:
text-borne posts carry their sentiment in the words over a neutral picture, image-borne posts carry it in a
smiling or frowning face under a factual caption, "both" posts agree in the two, ironic posts say the opposite of
what the face shows (praise over a frown is sarcasm, a complaint over a grin a joke; the face tells the sentiment),
and neutral posts are neutral in both. A text-only or image-only model therefore tops out at 70% of the designed
labels, while a model that fuses the two can get all of them. A fixed share of every split is mislabelled, as an
annotator's mistakes would be: nothing in a post tells which label was drawn, so the best achievable accuracy
on any split is 1 - MISLABELLED_FRACTION, which leaves room for settings to matter. Output is byte-identical for
the same seed and arguments.
"""

from __future__ import annotations

import argparse
import colorsys
import json
import os
import random
import shutil
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageChops, ImageDraw

DEMO_VERSION = 3
DATASET_FOLDER = "demo"
SPLIT_FOLDER = "10-flod-1"  # the original code's spelling, kept so the MVSA readers work unchanged
TRANSLATION_FILE = "demo_translation.json"
IMAGE_FOLDER = "dataset_image"
GENERATION_FILE = "generation.json"
COMPLETE_MARKER = "COMPLETE"
SPLITS = ("train", "dev", "test")
JPEG_QUALITY = 90
CACHE_DIR_VARIABLE = "CLMLF_CACHE_DIR"

LABEL_OF_SENTIMENT = {"positive": 0, "neutral": 1, "negative": 2}
LABEL_NAMES = {label: sentiment for sentiment, label in LABEL_OF_SENTIMENT.items()}

TEXT_BORNE = "text_borne"
IMAGE_BORNE = "image_borne"
BOTH = "both"
IRONIC = "ironic"
NEUTRAL = "neutral"
# The best a single modality can do on the designed labels: the words are right on text-borne, both and neutral
# posts (0.30 + 0.15 + 0.25 = 0.70) and wrong on ironic ones; the face is right on everything but text-borne posts
# (1 - 0.30 = 0.70), which look neutral to it. Neutral at 25% keeps every label at a quarter or more.
KIND_FRACTIONS = {TEXT_BORNE: 0.30, IMAGE_BORNE: 0.15, BOTH: 0.15, IRONIC: 0.15, NEUTRAL: 0.25}
# Share of every split whose label is replaced by one of the two other labels, drawn uniformly.
MISLABELLED_FRACTION = 0.10

WORDS_PER_TEXT = (8, 16)
# Drawing at twice the size and downsampling gives anti-aliased edges, which PIL's primitives lack.
SUPERSAMPLE = 2
NOISE_AMPLITUDE = 10
NEUTRAL_SUBJECTS = ("face", "house", "tree", "car")


@dataclass(frozen=True)
class DemoSizes:
    # Few training posts leave room for the contrastive terms; dev as large as train keeps seed-to-seed noise in the
    # dev score (which ranks every trial) small.
    train: int = 300
    dev: int = 300
    test: int = 300

    def __post_init__(self) -> None:
        for split in SPLITS:
            count = getattr(self, split)
            if not isinstance(count, int) or count < 1:
                raise ValueError(f"demo split {split!r} needs at least one post, got {count!r}")

    @property
    def total(self) -> int:
        return self.train + self.dev + self.test


@dataclass(frozen=True)
class DemoPost:
    id: str
    split: str
    kind: str
    text_sentiment: str
    image_sentiment: str
    image_subject: str
    text: str
    text_translation: str
    # The label written to the split file: the designed sentiment's, except on mislabelled posts.
    emotion_label: int

    @property
    def sentiment(self) -> str:
        """The designed sentiment: the face's where it shows one (it wins over contradicting words), else the words'."""
        return self.image_sentiment if self.image_sentiment != "neutral" else self.text_sentiment

    @property
    def designed_label(self) -> int:
        return LABEL_OF_SENTIMENT[self.sentiment]

    @property
    def mislabelled(self) -> bool:
        return self.emotion_label != self.designed_label


# Every vocabulary entry is a group of synonyms: the text uses one member, the translation another, which is
# how the translation becomes a paraphrase rather than a copy.
TOPICS = [
    ("the concert", "the show"),
    ("my new job", "my new position"),
    ("this weekend", "these last two days"),
    ("the game last night", "last night's match"),
    ("our trip to the coast", "our journey to the seaside"),
    ("dinner with friends", "supper with my mates"),
    ("the new album", "the latest record"),
    ("my exam result", "my test score"),
    ("the weather", "the forecast"),
    ("this movie", "this film"),
    ("the service at this cafe", "the service in this coffee shop"),
    ("my flight home", "my plane ride home"),
    ("the team's performance", "the way the team played"),
    ("the new phone", "my new mobile"),
    ("the hotel room", "our hotel suite"),
    ("the city marathon", "the marathon downtown"),
    ("my birthday party", "my birthday celebration"),
    ("the festival", "the street fair"),
    ("the train ride", "the rail journey"),
    ("the season finale", "the last episode of the season"),
    ("the food at the wedding", "the wedding dinner"),
    ("the date last night", "last night's date"),
    ("the road trip", "the drive across the state"),
    ("the latest update", "the new software update"),
    ("the restaurant downtown", "the diner in town"),
]
INTENSIFIERS = [
    ("so", "really"),
    ("absolutely", "totally"),
    ("truly", "genuinely"),
    ("incredibly", "extremely"),
    ("just", "simply"),
]
SENTIMENT_VOCABULARY: dict[str, dict[str, list[tuple[str, ...]]]] = {
    "positive": {
        "adj": [
            ("amazing", "incredible"),
            ("wonderful", "marvelous"),
            ("great", "excellent"),
            ("beautiful", "lovely"),
            ("fantastic", "fabulous"),
            ("awesome", "superb"),
            ("brilliant", "outstanding"),
            ("perfect", "flawless"),
            ("delightful", "charming"),
            ("fun", "enjoyable"),
        ],
        "feel": [
            ("I love", "I adore"),
            ("I am so happy about", "I am really glad about"),
            ("I am thrilled with", "I am over the moon about"),
            ("I am grateful for", "I am thankful for"),
            ("I really enjoyed", "I truly enjoyed"),
        ],
        "mood": [
            ("happy", "joyful"),
            ("so excited", "thrilled"),
            ("cheerful", "upbeat"),
            ("proud", "really proud"),
            ("delighted", "pleased"),
        ],
        "exclaim": [
            ("best day ever", "best day in ages"),
            ("yay", "hooray"),
            ("wow", "oh wow"),
            ("so good", "so nice"),
        ],
        "hashtag": [
            ("#happy",),
            ("#blessed",),
            ("#goodvibes",),
            ("#love",),
            ("#grateful",),
            ("#bestday",),
            ("#smile",),
            ("#winning",),
        ],
    },
    "negative": {
        "adj": [
            ("terrible", "awful"),
            ("horrible", "dreadful"),
            ("disappointing", "underwhelming"),
            ("miserable", "wretched"),
            ("annoying", "irritating"),
            ("frustrating", "exasperating"),
            ("depressing", "gloomy"),
            ("disgusting", "revolting"),
            ("pathetic", "lousy"),
            ("boring", "dull"),
        ],
        "feel": [
            ("I hate", "I cannot stand"),
            ("I am so sad about", "I am really upset about"),
            ("I am sick of", "I am fed up with"),
            ("I am so angry about", "I am furious about"),
            ("I am heartbroken over", "I am devastated by"),
            ("I am disgusted by", "I am appalled by"),
        ],
        "mood": [
            ("sad", "unhappy"),
            ("angry", "upset"),
            ("miserable", "gloomy"),
            ("so disappointed", "let down"),
            ("frustrated", "annoyed"),
        ],
        "exclaim": [
            ("worst day ever", "worst day in ages"),
            ("ugh", "argh"),
            ("seriously", "come on"),
            ("not again", "never again"),
        ],
        "hashtag": [
            ("#sad",),
            ("#fail",),
            ("#worstday",),
            ("#angry",),
            ("#disappointed",),
            ("#ugh",),
            ("#fml",),
            ("#nothappy",),
        ],
    },
}
# Each pair is one sentence in two wordings; a post's text takes one and its translation the other.
SENTIMENT_TEMPLATES = [
    ("{feel} {topic}, it was {intens} {adj}", "{Topic} was {intens} {adj} and {feel} it"),
    ("{Topic} was {intens} {adj} today", "Today {topic} was {intens} {adj}"),
    ("{Exclaim}! {Topic} was {intens} {adj}", "{Exclaim}, {topic} was {intens} {adj}!"),
    ("Can't believe how {adj} {topic} was", "I cannot believe how {adj} {topic} turned out"),
    ("Never expected {topic} to be this {adj}", "I never thought {topic} would be so {adj}"),
    ("Still thinking about {topic}, {intens} {adj}", "{Topic} was {intens} {adj}, I keep thinking about it"),
    ("Honestly {topic} felt {adj} and I am {mood}", "I am {mood} because {topic} felt {adj}"),
    ("{Topic} left me feeling {mood}, it was {intens} {adj}", "It was {intens} {adj}, {topic} made me feel {mood}"),
    ("Words cannot describe how {adj} {topic} was", "{Topic} was {adj} beyond words"),
    ("{Exclaim}, {feel} {topic}", "{feel} {topic}, {exclaim}"),
]

NEUTRAL_VOCABULARY: dict[str, list[tuple[str, ...]]] = {
    "place": [
        ("the station", "the train station"),
        ("the library", "the public library"),
        ("the post office", "the postal office"),
        ("the supermarket", "the grocery store"),
        ("the office", "the workplace"),
        ("the bank", "the bank branch"),
        ("the airport", "the terminal"),
        ("the gym", "the fitness centre"),
        ("the pharmacy", "the chemist"),
        ("the bus stop", "the bus shelter"),
        ("the town hall", "city hall"),
        ("the hardware store", "the DIY shop"),
        ("the dentist", "the dental clinic"),
        ("the car park", "the parking garage"),
    ],
    "time": [
        ("at 5 today", "at five this afternoon"),
        ("tomorrow morning", "tomorrow before noon"),
        ("on Tuesday", "this Tuesday"),
        ("at 9:30", "at half past nine"),
        ("this evening", "tonight"),
        ("after lunch", "in the early afternoon"),
        ("next week", "in a week"),
        ("on Friday", "this Friday"),
        ("at noon", "at 12 o'clock"),
    ],
    "past": [
        ("this morning", "earlier today"),
        ("yesterday", "the day before"),
        ("last night", "yesterday evening"),
        ("at 8 today", "at eight this morning"),
        ("on Monday", "this Monday"),
    ],
    "item": [
        ("some groceries", "a few groceries"),
        ("a parcel", "a package"),
        ("the documents", "the paperwork"),
        ("two tickets", "a pair of tickets"),
        ("a new charger", "a replacement charger"),
        ("printer paper", "paper for the printer"),
        ("the keys", "the spare keys"),
        ("a prescription", "my prescription"),
        ("the library books", "the borrowed books"),
        ("a few stamps", "some stamps"),
    ],
    "agenda": [
        ("the schedule", "the timetable"),
        ("the budget", "the spending plan"),
        ("next month's plan", "the plan for next month"),
        ("the quarterly report", "the report for the quarter"),
        ("the project timeline", "the timeline of the project"),
        ("the meeting minutes", "the notes from the meeting"),
        ("the seating chart", "the seating plan"),
    ],
    "city": [
        ("Leeds",),
        ("Denver",),
        ("Lyon",),
        ("Osaka",),
        ("Porto",),
        ("Austin",),
        ("Gdansk",),
        ("Perth",),
        ("Dublin",),
        ("Calgary",),
    ],
    "vehicle": [
        ("bus", "coach"),
        ("train", "rail service"),
        ("tram", "streetcar"),
        ("ferry", "boat"),
        ("subway", "metro"),
    ],
    "hashtag": [
        ("#monday",),
        ("#commute",),
        ("#update",),
        ("#dailylife",),
        ("#travel",),
        ("#weekend",),
        ("#news",),
        ("#work",),
        ("#errands",),
    ],
}
NEUTRAL_TEMPLATES = [
    ("Just got back from {place}, picked up {item} on the way", "Picked up {item} on the way back from {place}"),
    ("Meeting {time} at {place} to go over {agenda}", "We meet at {place} {time} to discuss {agenda}"),
    ("Heading to {place} {time} to drop off {item}", "Going to drop off {item} at {place} {time}"),
    ("The {vehicle} to {city} leaves from {place} {time}", "{Time} the {vehicle} for {city} departs from {place}"),
    ("Reminder that {place} is closed {time} for maintenance", "{Place} will be closed {time} for maintenance work"),
    ("Picked up {item} at {place} {past}", "{Past} I collected {item} from {place}"),
    ("Reading the news on the {vehicle} to {city}", "On the {vehicle} to {city}, reading the news"),
    (
        "Our team meets {time} in room {room} to review {agenda}",
        "Review of {agenda} with the team in room {room} {time}",
    ),
    ("Took the {vehicle} to {place} {past}", "{Past} I rode the {vehicle} to {place}"),
    ("Waiting at {place} for the {vehicle} to {city}", "At {place}, waiting for the {vehicle} heading to {city}"),
    ("Remember to bring {item} to {place} {time}", "Bring {item} to {place} {time}, do not forget"),
    ("Updated my notes on {agenda} before the call {time}", "Before the call {time} I updated my notes on {agenda}"),
    ("Moving to {city} next month, the boxes are packed", "The boxes are packed for the move to {city} next month"),
    ("The printer in room {room} needs new toner", "Room {room} printer needs a toner refill"),
    ("Checked the timetable for the {vehicle} to {city}", "Looked up when the {vehicle} to {city} runs"),
]
MENTIONS = [
    "@sarah_k",
    "@mike_travels",
    "@citynews",
    "@jen_writes",
    "@daily_dan",
    "@the_real_tom",
    "@lucy_m",
    "@weekend_crew",
    "@alex99",
    "@metro_info",
]


def _capitalised(phrase: str) -> str:
    return phrase[:1].upper() + phrase[1:]


def _choose_wordings(
    vocabulary: dict[str, list[tuple[str, ...]]], rng: random.Random
) -> tuple[dict[str, str], dict[str, str]]:
    """One synonym group per slot; the text's wording of each, and the translation's (a different member)."""
    text_slots: dict[str, str] = {}
    translation_slots: dict[str, str] = {}
    for slot, groups in vocabulary.items():
        if slot == "hashtag":
            continue
        group = rng.choice(groups)
        member = rng.randrange(len(group))
        text_slots[slot] = group[member]
        translation_slots[slot] = group[(member + 1) % len(group)]
    return text_slots, translation_slots


def _render(template: str, slots: dict[str, str]) -> str:
    return template.format(**slots, **{_capitalised(slot): _capitalised(value) for slot, value in slots.items()})


def _compose_text(sentiment: str, rng: random.Random) -> tuple[str, str]:
    """A tweet-like text of the given sentiment and its paraphrase (the stand-in for a back-translation)."""
    if sentiment == "neutral":
        vocabulary, templates, endings = NEUTRAL_VOCABULARY, NEUTRAL_TEMPLATES, ["", ".", "."]
    else:
        vocabulary = {**SENTIMENT_VOCABULARY[sentiment], "topic": TOPICS, "intens": INTENSIFIERS}
        templates, endings = SENTIMENT_TEMPLATES, ["", "!", "!!", "."]
    hashtags = [group[0] for group in vocabulary["hashtag"]]
    for _ in range(100):
        text_slots, translation_slots = _choose_wordings(vocabulary, rng)
        room = str(rng.randint(101, 499))
        text_slots["room"] = translation_slots["room"] = room
        text_form, translation_form = rng.choice(templates)
        if rng.random() < 0.5:
            text_form, translation_form = translation_form, text_form
        text_core = _render(text_form, text_slots)
        translation_core = _render(translation_form, translation_slots)
        ending = rng.choice(endings)
        if text_core.endswith(("!", "?", ".")):
            ending = ""
        mention = rng.choice(MENTIONS) if rng.random() < 0.35 else ""
        chosen_tags = rng.sample(hashtags, rng.choice([0, 1, 1, 2]))
        while len(" ".join([mention, text_core, *chosen_tags]).split()) < WORDS_PER_TEXT[0]:
            chosen_tags.append(rng.choice([tag for tag in hashtags if tag not in chosen_tags]))
        text = " ".join(part for part in [mention, text_core + ending, *chosen_tags] if part)
        translation_ending = "" if translation_core.endswith(("!", "?", ".")) else "."
        translation = " ".join([translation_core + translation_ending, *chosen_tags])
        if WORDS_PER_TEXT[0] <= len(text.split()) <= WORDS_PER_TEXT[1] and translation != text:
            return text, translation
    raise RuntimeError(f"could not compose a {sentiment} text of {WORDS_PER_TEXT} words in 100 tries")


@dataclass(frozen=True)
class _Palette:
    background_top: tuple[int, int, int]
    background_bottom: tuple[int, int, int]
    face: tuple[int, int, int]
    outline: tuple[int, int, int]
    features: tuple[int, int, int]


def _colour(hue: float, lightness: float, saturation: float) -> tuple[int, int, int]:
    red, green, blue = colorsys.hls_to_rgb(hue % 1.0, min(max(lightness, 0.0), 1.0), min(max(saturation, 0.0), 1.0))
    return round(red * 255), round(green * 255), round(blue * 255)


def _palette(sentiment: str, rng: random.Random) -> _Palette:
    """Global colour cues that even a randomly initialised CNN picks up: warm and bright for positive,
    blue-grey and dark for negative, muted mid-tones for neutral."""
    uniform = rng.uniform
    if sentiment == "positive":
        hue, lightness, saturation = uniform(-0.03, 0.09), uniform(0.74, 0.86), uniform(0.75, 1.0)
        return _Palette(
            background_top=_colour(hue, lightness, saturation),
            background_bottom=_colour(hue + uniform(0.0, 0.04), lightness - uniform(0.04, 0.12), saturation),
            face=_colour(uniform(0.125, 0.16), uniform(0.52, 0.6), uniform(0.9, 1.0)),
            outline=_colour(uniform(0.05, 0.09), uniform(0.3, 0.4), uniform(0.7, 0.9)),
            features=_colour(uniform(0.04, 0.08), uniform(0.12, 0.2), uniform(0.5, 0.8)),
        )
    if sentiment == "negative":
        hue, lightness = uniform(0.58, 0.76), uniform(0.07, 0.2)
        saturation = uniform(0.0, 0.08) if rng.random() < 0.3 else uniform(0.2, 0.5)
        return _Palette(
            background_top=_colour(hue, lightness + uniform(0.0, 0.06), saturation),
            background_bottom=_colour(hue, lightness, saturation),
            face=_colour(uniform(0.55, 0.64), uniform(0.36, 0.5), uniform(0.15, 0.4)),
            outline=_colour(uniform(0.58, 0.66), uniform(0.15, 0.25), uniform(0.2, 0.4)),
            features=_colour(uniform(0.6, 0.68), uniform(0.04, 0.1), uniform(0.3, 0.6)),
        )
    hue, lightness, saturation = uniform(0.2, 0.5), uniform(0.42, 0.55), uniform(0.12, 0.3)
    return _Palette(
        background_top=_colour(hue, lightness + uniform(0.0, 0.06), saturation),
        background_bottom=_colour(hue + uniform(-0.03, 0.03), lightness - uniform(0.0, 0.06), saturation),
        face=_colour(uniform(0.07, 0.12), uniform(0.6, 0.68), uniform(0.15, 0.3)),
        outline=_colour(uniform(0.07, 0.12), uniform(0.3, 0.4), uniform(0.1, 0.25)),
        features=_colour(uniform(0.05, 0.12), uniform(0.18, 0.26), uniform(0.1, 0.2)),
    )


def _gradient(size: int, top: tuple[int, int, int], bottom: tuple[int, int, int]) -> Image.Image:
    mask = Image.linear_gradient("L").resize((size, size))
    return Image.composite(Image.new("RGB", (size, size), bottom), Image.new("RGB", (size, size), top), mask)


def _draw_distractors(draw: ImageDraw.ImageDraw, canvas: int, rng: random.Random) -> None:
    """A few small shapes in colours unrelated to the label, so no single region or colour gives it away."""
    for _ in range(rng.randint(2, 5)):
        extent = canvas * rng.uniform(0.04, 0.1)
        x, y = rng.uniform(0, canvas - extent), rng.uniform(0, canvas - extent)
        colour = _colour(rng.random(), rng.uniform(0.3, 0.7), rng.uniform(0.2, 0.7))
        shape = rng.choice(["ellipse", "rectangle", "triangle"])
        if shape == "ellipse":
            draw.ellipse((x, y, x + extent, y + extent), fill=colour)
        elif shape == "rectangle":
            draw.rectangle((x, y, x + extent, y + extent * rng.uniform(0.5, 1.0)), fill=colour)
        else:
            draw.polygon([(x, y + extent), (x + extent, y + extent), (x + extent / 2, y)], fill=colour)


def _draw_face(draw: ImageDraw.ImageDraw, canvas: int, sentiment: str, palette: _Palette, rng: random.Random) -> None:
    radius = canvas * rng.uniform(0.28, 0.38)
    margin = radius + canvas * 0.03
    cx = min(max(canvas / 2 + canvas * rng.uniform(-0.12, 0.12), margin), canvas - margin)
    cy = min(max(canvas / 2 + canvas * rng.uniform(-0.12, 0.12), margin), canvas - margin)
    line = max(2, round(radius * 0.08))
    draw.ellipse(
        (cx - radius, cy - radius, cx + radius, cy + radius),
        fill=palette.face,
        outline=palette.outline,
        width=max(2, round(radius * 0.06)),
    )
    eye_y = cy - radius * rng.uniform(0.2, 0.3)
    eye_dx = radius * rng.uniform(0.3, 0.4)
    eye_rx, eye_ry = radius * 0.09, radius * rng.uniform(0.11, 0.15)
    for eye_x in (cx - eye_dx, cx + eye_dx):
        draw.ellipse((eye_x - eye_rx, eye_y - eye_ry, eye_x + eye_rx, eye_y + eye_ry), fill=palette.features)
    if sentiment == "positive":
        if rng.random() < 0.5:
            for side in (-1, 1):
                cheek_x, cheek_y, cheek_r = cx + side * radius * 0.58, cy + radius * 0.15, radius * 0.12
                draw.ellipse(
                    (cheek_x - cheek_r, cheek_y - cheek_r, cheek_x + cheek_r, cheek_y + cheek_r),
                    fill=_colour(rng.uniform(0.96, 1.0), 0.7, 0.8),
                )
        mouth_box = (cx - radius * 0.55, cy - radius * 0.35, cx + radius * 0.55, cy + radius * 0.6)
        if rng.random() < 0.5:
            draw.chord(mouth_box, 15, 165, fill=palette.features)
        else:
            draw.arc(mouth_box, 15, 165, fill=palette.features, width=line)
    elif sentiment == "negative":
        for side in (-1, 1):
            eye_x = cx + side * eye_dx
            # Inner ends raised: the sad brow.
            inner = (eye_x - side * radius * 0.15, eye_y - radius * 0.33)
            outer = (eye_x + side * radius * 0.15, eye_y - radius * 0.2)
            draw.line([inner, outer], fill=palette.features, width=line)
        mouth_box = (cx - radius * 0.5, cy + radius * 0.25, cx + radius * 0.5, cy + radius * 0.95)
        draw.arc(mouth_box, 200, 340, fill=palette.features, width=line)
        if rng.random() < 0.5:
            tear_x, tear_y, tear_r = cx + rng.choice([-1, 1]) * eye_dx, eye_y + radius * 0.3, radius * 0.07
            draw.ellipse(
                (tear_x - tear_r, tear_y - tear_r, tear_x + tear_r, tear_y + tear_r * 1.6),
                fill=_colour(0.57, 0.72, 0.8),
            )
    else:
        mouth_y = cy + radius * rng.uniform(0.35, 0.45)
        tilt = radius * rng.uniform(-0.04, 0.04)
        half_width = radius * rng.uniform(0.28, 0.4)
        draw.line(
            [(cx - half_width, mouth_y - tilt), (cx + half_width, mouth_y + tilt)], fill=palette.features, width=line
        )


def _muted(rng: random.Random, hue: float | None = None) -> tuple[int, int, int]:
    return _colour(rng.random() if hue is None else hue, rng.uniform(0.35, 0.6), rng.uniform(0.1, 0.3))


def _draw_house(draw: ImageDraw.ImageDraw, canvas: int, rng: random.Random) -> None:
    width = canvas * rng.uniform(0.38, 0.55)
    height = width * rng.uniform(0.65, 0.85)
    left = rng.uniform(canvas * 0.05, canvas * 0.95 - width)
    bottom = canvas * rng.uniform(0.78, 0.92)
    top = bottom - height
    draw.rectangle((left, top, left + width, bottom), fill=_muted(rng))
    roof_height = width * rng.uniform(0.35, 0.5)
    draw.polygon(
        [(left - width * 0.08, top), (left + width * 1.08, top), (left + width / 2, top - roof_height)],
        fill=_muted(rng, hue=rng.uniform(0.0, 0.08)),
    )
    door_width = width * 0.2
    door_left = left + width * rng.uniform(0.15, 0.65)
    draw.rectangle((door_left, bottom - height * 0.5, door_left + door_width, bottom), fill=_muted(rng, hue=0.08))
    window = width * 0.16
    window_left = left + width * 0.72 if door_left < left + width * 0.5 else left + width * 0.1
    draw.rectangle(
        (window_left, top + height * 0.2, window_left + window, top + height * 0.2 + window),
        fill=_colour(0.55, 0.6, 0.25),
    )


def _draw_tree(draw: ImageDraw.ImageDraw, canvas: int, rng: random.Random) -> None:
    trunk_width = canvas * rng.uniform(0.06, 0.1)
    trunk_x = rng.uniform(canvas * 0.3, canvas * 0.7)
    bottom = canvas * rng.uniform(0.85, 0.95)
    trunk_top = bottom - canvas * rng.uniform(0.3, 0.4)
    draw.rectangle(
        (trunk_x - trunk_width / 2, trunk_top, trunk_x + trunk_width / 2, bottom),
        fill=_muted(rng, hue=rng.uniform(0.06, 0.1)),
    )
    crown = canvas * rng.uniform(0.18, 0.26)
    leaves = _muted(rng, hue=rng.uniform(0.25, 0.38))
    for dx, dy in [(0.0, -0.6), (-0.55, -0.1), (0.55, -0.1), (0.0, 0.1)]:
        x, y = trunk_x + dx * crown, trunk_top + dy * crown
        draw.ellipse((x - crown * 0.75, y - crown * 0.75, x + crown * 0.75, y + crown * 0.75), fill=leaves)


def _draw_car(draw: ImageDraw.ImageDraw, canvas: int, rng: random.Random) -> None:
    length = canvas * rng.uniform(0.55, 0.75)
    height = length * rng.uniform(0.22, 0.3)
    left = rng.uniform(canvas * 0.05, canvas * 0.95 - length)
    bottom = canvas * rng.uniform(0.7, 0.85)
    body = _muted(rng)
    draw.rounded_rectangle((left, bottom - height, left + length, bottom), radius=height * 0.3, fill=body)
    cabin_left = left + length * rng.uniform(0.2, 0.3)
    draw.polygon(
        [
            (cabin_left, bottom - height),
            (cabin_left + length * 0.1, bottom - height * 1.9),
            (cabin_left + length * 0.45, bottom - height * 1.9),
            (cabin_left + length * 0.55, bottom - height),
        ],
        fill=body,
    )
    wheel = height * 0.45
    for wheel_x in (left + length * 0.22, left + length * 0.78):
        draw.ellipse((wheel_x - wheel, bottom - wheel, wheel_x + wheel, bottom + wheel), fill=(40, 40, 44))


def _add_noise(image: Image.Image, rng: random.Random) -> Image.Image:
    # randbytes is seeded by `rng`, unlike PIL's effect_noise, so the noise is reproducible.
    width, height = image.size
    noise = Image.frombytes("RGB", image.size, rng.randbytes(3 * width * height))
    noise = noise.point(lambda value: value * 2 * NOISE_AMPLITUDE // 255)
    return ImageChops.add(image, noise, scale=1.0, offset=-NOISE_AMPLITUDE)


def draw_demo_image(sentiment: str, subject: str, image_size: int, rng: random.Random) -> Image.Image:
    """An RGB image of `subject` ("face", "house", "tree" or "car") whose look carries `sentiment`."""
    if subject != "face" and sentiment != "neutral":
        raise ValueError(f"only faces carry sentiment; got a {sentiment} {subject}")
    canvas = image_size * SUPERSAMPLE
    palette = _palette(sentiment, rng)
    image = _gradient(canvas, palette.background_top, palette.background_bottom)
    draw = ImageDraw.Draw(image)
    _draw_distractors(draw, canvas, rng)
    if subject == "face":
        _draw_face(draw, canvas, sentiment, palette, rng)
    elif subject == "house":
        _draw_house(draw, canvas, rng)
    elif subject == "tree":
        _draw_tree(draw, canvas, rng)
    elif subject == "car":
        _draw_car(draw, canvas, rng)
    else:
        raise ValueError(f"unknown image subject {subject!r}; known: {', '.join(NEUTRAL_SUBJECTS)}")
    image = image.resize((image_size, image_size), Image.Resampling.LANCZOS)
    return _add_noise(image, rng)


def _kind_counts(size: int) -> dict[str, int]:
    """Largest-remainder rounding of KIND_FRACTIONS, so every split has the same mix of kinds."""
    exact = {kind: fraction * size for kind, fraction in KIND_FRACTIONS.items()}
    counts = {kind: int(value) for kind, value in exact.items()}
    # Ties go to the kind listed first, so the counts never depend on floating-point noise in the remainders.
    order = list(KIND_FRACTIONS)
    by_remainder = sorted(order, key=lambda kind: (round(counts[kind] - exact[kind], 9), order.index(kind)))
    for kind in by_remainder[: size - sum(counts.values())]:
        counts[kind] += 1
    return counts


def _plan_split(size: int, rng: random.Random) -> list[tuple[str, str, int]]:
    """(kind, designed sentiment, label) for each post of one split, shuffled; sentiment-bearing kinds are half
    positive; exactly round(MISLABELLED_FRACTION * size) posts get another label than their sentiment's."""
    plan: list[tuple[str, str]] = []
    for kind, count in _kind_counts(size).items():
        if kind == NEUTRAL:
            plan += [(kind, "neutral")] * count
            continue
        positives = count // 2 + (count % 2 if rng.random() < 0.5 else 0)
        plan += [(kind, "positive")] * positives + [(kind, "negative")] * (count - positives)
    rng.shuffle(plan)
    mislabelled = set(rng.sample(range(size), round(MISLABELLED_FRACTION * size)))
    labelled = []
    for index, (kind, sentiment) in enumerate(plan):
        label = LABEL_OF_SENTIMENT[sentiment]
        if index in mislabelled:
            label = rng.choice([other for other in LABEL_OF_SENTIMENT.values() if other != label])
        labelled.append((kind, sentiment, label))
    return labelled


def _modality_sentiments(kind: str, sentiment: str) -> tuple[str, str]:
    """(text, image) sentiment of a post of this kind whose designed sentiment is `sentiment`."""
    opposite = {"positive": "negative", "negative": "positive", "neutral": "neutral"}[sentiment]
    text_sentiment = {TEXT_BORNE: sentiment, BOTH: sentiment, IRONIC: opposite}.get(kind, "neutral")
    image_sentiment = sentiment if kind in (IMAGE_BORNE, BOTH, IRONIC) else "neutral"
    return text_sentiment, image_sentiment


def _make_post(
    post_id: str, split: str, kind: str, sentiment: str, label: int, seed: int
) -> tuple[DemoPost, random.Random]:
    text_sentiment, image_sentiment = _modality_sentiments(kind, sentiment)
    # Separate streams per post and per modality: changing one post or the text templates leaves the rest alone.
    text_rng = random.Random(f"clmlf-demo-text:{seed}:{post_id}")
    image_rng = random.Random(f"clmlf-demo-image:{seed}:{post_id}")
    subject = "face" if image_sentiment != "neutral" else image_rng.choice(NEUTRAL_SUBJECTS)
    text, translation = _compose_text(text_sentiment, text_rng)
    post = DemoPost(post_id, split, kind, text_sentiment, image_sentiment, subject, text, translation, label)
    return post, image_rng


def _write_json(path: Path, content: Any) -> None:
    path.write_text(json.dumps(content, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def generate_demo_dataset(
    data_root: Path, *, seed: int = 0, sizes: DemoSizes = DemoSizes(), image_size: int = 96
) -> Path:
    """Write the demo set to `<data_root>/demo/` in the MVSA layout and return `data_root`.

    Refuses to write into an existing `demo/` folder, so old and new posts never mix.
    """
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32 pixels for the faces to be drawn, got {image_size}")
    data_root = Path(data_root)
    directory = data_root / DATASET_FOLDER
    if directory.exists():
        raise FileExistsError(f"{directory} already exists; delete it or choose another output folder")
    (directory / SPLIT_FOLDER).mkdir(parents=True)
    (directory / IMAGE_FOLDER).mkdir()

    rng = random.Random(f"clmlf-demo:{seed}")
    # Sampled from a range much wider than the post count, so ids have gaps like the real releases.
    ids = [str(number) for number in rng.sample(range(1, 20 * sizes.total + 1), sizes.total)]
    posts: list[DemoPost] = []
    for split in SPLITS:
        for kind, sentiment, label in _plan_split(getattr(sizes, split), rng):
            post, image_rng = _make_post(ids[len(posts)], split, kind, sentiment, label, seed)
            image = draw_demo_image(post.image_sentiment, post.image_subject, image_size, image_rng)
            image.save(directory / IMAGE_FOLDER / f"{post.id}.jpg", format="JPEG", quality=JPEG_QUALITY)
            posts.append(post)

    for split in SPLITS:
        records = [
            {"id": post.id, "text": post.text, "emotion_label": post.emotion_label}
            for post in posts
            if post.split == split
        ]
        _write_json(directory / SPLIT_FOLDER / f"{split}.json", records)
    translations = [
        {"id": post.id, "text_translation": post.text_translation} for post in sorted(posts, key=lambda p: int(p.id))
    ]
    _write_json(directory / TRANSLATION_FILE, translations)
    _write_json(
        directory / GENERATION_FILE,
        {
            "version": DEMO_VERSION,
            "seed": seed,
            "sizes": asdict(sizes),
            "image_size": image_size,
            "jpeg_quality": JPEG_QUALITY,
            "kind_fractions": KIND_FRACTIONS,
            "mislabelled_fraction": MISLABELLED_FRACTION,
            "kind_counts": {
                split: dict(Counter(post.kind for post in posts if post.split == split)) for split in SPLITS
            },
            "label_counts": {
                split: dict(Counter(LABEL_NAMES[post.emotion_label] for post in posts if post.split == split))
                for split in SPLITS
            },
            # Right on every post but the mislabelled ones: what a model that recovers each designed label scores.
            "best_achievable_accuracy": {
                split: sum(not post.mislabelled for post in posts if post.split == split) / getattr(sizes, split)
                for split in SPLITS
            },
            "posts": [
                {
                    "id": post.id,
                    "split": post.split,
                    "kind": post.kind,
                    "text_sentiment": post.text_sentiment,
                    "image_sentiment": post.image_sentiment,
                    "image_subject": post.image_subject,
                    "designed_label": post.designed_label,
                }
                for post in posts
            ],
        },
    )
    # Written last: its presence is what tells a finished folder from an interrupted one.
    (directory / COMPLETE_MARKER).write_text(f"demo data set version {DEMO_VERSION}, seed {seed}\n", encoding="utf-8")
    return data_root


def default_cache_dir() -> Path:
    configured = os.environ.get(CACHE_DIR_VARIABLE)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "clmlf"


def is_complete_demo_dataset(data_root: Path) -> bool:
    return (Path(data_root) / DATASET_FOLDER / COMPLETE_MARKER).is_file()


def ensure_demo_dataset(cache_dir: Path | None = None, *, seed: int = 0) -> Path:
    """The data root (the folder that contains `demo/`) of the default-sized demo set for `seed`, generated
    into `<cache_dir>/demo-v{DEMO_VERSION}-seed{seed}/` on first use.

    Safe when many processes call it at once: each generates into its own temporary sibling folder and renames
    it into place; the rename is atomic, so a loser deletes its copy and uses the winner's.
    """
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    data_root = cache_dir / f"demo-v{DEMO_VERSION}-seed{seed}"
    if is_complete_demo_dataset(data_root):
        return data_root
    if data_root.exists() and any(data_root.iterdir()):
        raise RuntimeError(
            f"{data_root} exists but has no {DATASET_FOLDER}/{COMPLETE_MARKER}, so it is not a finished demo data "
            "set (this function never leaves one there); delete the folder and try again"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{data_root.name}.partial-", dir=cache_dir))
    try:
        # mkdtemp makes the folder private; the cache may be shared with other users' trials.
        staging.chmod(0o755)
        generate_demo_dataset(staging, seed=seed)
        try:
            os.rename(staging, data_root)
        except OSError:
            if not is_complete_demo_dataset(data_root):
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return data_root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m clmlf.demo_data",
        description="Generate the synthetic demo data set (text + image sentiment posts) in the MVSA layout.",
    )
    parser.add_argument("--output", type=Path, required=True, help="data root; the set is written to OUTPUT/demo/")
    parser.add_argument("--seed", type=int, default=0)
    defaults = DemoSizes()
    parser.add_argument("--train", type=int, default=defaults.train, help="number of training posts")
    parser.add_argument("--dev", type=int, default=defaults.dev, help="number of development posts")
    parser.add_argument("--test", type=int, default=defaults.test, help="number of test posts")
    parser.add_argument("--image-size", type=int, default=96, help="side of the square images in pixels")
    args = parser.parse_args(argv)
    try:
        sizes = DemoSizes(train=args.train, dev=args.dev, test=args.test)
        data_root = generate_demo_dataset(args.output, seed=args.seed, sizes=sizes, image_size=args.image_size)
    except (ValueError, FileExistsError) as error:
        parser.error(str(error))
    generation = json.loads((data_root / DATASET_FOLDER / GENERATION_FILE).read_text(encoding="utf-8"))
    print(f"wrote {sizes.total} posts to {data_root / DATASET_FOLDER}")
    for split in SPLITS:
        print(
            f"  {split}: kinds {generation['kind_counts'][split]}, labels {generation['label_counts'][split]}, "
            f"best achievable accuracy {generation['best_achievable_accuracy'][split]:.3f}"
        )


if __name__ == "__main__":
    main()
