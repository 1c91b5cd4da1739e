"""The judge's shipped probe sets: judge_server/probe_sets/heldout.jsonl and
dev.jsonl, written by `python -m orchestrator.judge.probe_sets`.

Each row is a problem (prompt, reference answer, inline rubric, domain) with
three completions of known quality: correct; wrong, a *plausible* mistake
named in `flaw` (a dropped carry, a sign, a unit, a fence-post count, a
confident false explanation), worded and formatted like the correct one so
only the mistake tells them apart; and off_topic, text about something else
in the same format. Four domains: arithmetic (and word problems), everyday
reasoning, science explanations, and reasoning-gym families (their questions
and the verifier's references, traces from orchestrator/data/task_traces).

The two sets share no problem and no wording: each has its own templates of
questions, its own ways of writing the working and the final answer (with
and without the <reasoning>/<answer> tags), its own rubric wording and
off-topic texts, and its own seed. The development set is for choosing
judge prompts and settings; the held-out set is only ever measured, so its
figures predict how the judge orders completions it was not tuned on.

Deterministic: the same code writes the same bytes.
"""

import json
import pathlib
import random
from collections.abc import Callable

import judge_server
from orchestrator.data import task_traces, tasks, templates

DIR = pathlib.Path(judge_server.__file__).parent / "probe_sets"
SETS = ("heldout", "dev")
ABOUT = {
    "heldout": "HELD-OUT judge probes: only ever measured (grar judge "
               "validate's default). Never use them to choose judge prompts "
               "or settings, nor to train a judge. Written by python -m "
               "orchestrator.judge.probe_sets.",
    "dev": "DEVELOPMENT judge probes: for choosing judge prompts and "
           "settings. Problems and wordings unlike the held-out set's. "
           "Written by python -m orchestrator.judge.probe_sets.",
}
# Problems per domain in each set.
SIZES = {"heldout": {"arithmetic": 45, "everyday": 40, "science": 30,
                     "reasoning_gym": 45},
         "dev": {"arithmetic": 15, "everyday": 15, "science": 12,
                 "reasoning_gym": 15}}
SEEDS = {"heldout": 33, "dev": 3303}
# reasoning-gym families with worked traces, and the split name each set
# draws them under (tasks.generate seeds on it).
FAMILIES = {"heldout": ("lcm", "basic_arithmetic", "leg_counting",
                        "count_bits", "letter_counting"),
            "dev": ("gcd", "leg_counting", "letter_counting")}

_TAGS = (templates.REASONING_START, templates.REASONING_END,
         templates.ANSWER_START, templates.ANSWER_END)


# --- how a completion is written ----------------------------------------------

def _tags(working: str, answer: str) -> str:
  r0, r1, a0, a1 = _TAGS
  return f"{r0}{working}{r1}\n{a0}{answer}{a1}"


def _tags_tight(working: str, answer: str) -> str:
  r0, r1, a0, a1 = _TAGS
  return f"{r0}\n{working}\n{r1}{a0} {answer} {a1}"


# Each set's ways of writing the working and the answer: (name, writer).
FORMATS: dict[str, tuple[tuple[str, Callable[[str, str], str]], ...]] = {
    "heldout": (
        ("tags", _tags),
        ("tags_tight", _tags_tight),
        ("prose", lambda w, a: f"{w} So the answer is {a}."),
        ("final_line", lambda w, a: f"{w}\n\nFinal answer: {a}"),
    ),
    "dev": (
        ("tags", _tags),
        ("therefore", lambda w, a: f"{w} Therefore: {a}."),
        ("markdown", lambda w, a: f"**Working.** {w}\n\n**Answer:** {a}"),
    ),
}
OPENERS = {"heldout": ("", "Let me work through it. ", "Here is my working: "),
           "dev": ("Step by step: ", "Working it out. ", "")}


# --- rubrics ------------------------------------------------------------------

def _rubric(answer: str, method: str, pitfall: str) -> dict:
  return {"criteria": [
      {"text": answer, "category": "essential", "weight": 5,
       "polarity": "positive"},
      {"text": method, "category": "important", "weight": 3,
       "polarity": "positive"},
      {"text": pitfall, "category": "pitfall", "weight": 2,
       "polarity": "negative"}]}


RUBRICS = {
    "heldout": {
        "arithmetic": _rubric(
            "The final answer is the correct value, equal to the reference "
            "answer.",
            "Every calculation in the working is carried out correctly.",
            "Makes an arithmetic slip: a dropped carry, a wrong sign, a wrong "
            "unit or a misplaced decimal point."),
        "everyday": _rubric(
            "The final answer is correct and agrees with the reference "
            "answer.",
            "The reasoning uses the facts given in the question correctly.",
            "Miscounts or reverses a relation, e.g. an off-by-one count or "
            "the wrong person in a comparison."),
        "science": _rubric(
            "The final answer is scientifically correct and matches the "
            "reference answer.",
            "The explanation states the right scientific reason.",
            "States a scientific falsehood as if it were fact."),
        "reasoning_gym": _rubric(
            "The final answer is exactly the reference answer.",
            "Each step of the working follows correctly from the previous "
            "one.",
            "A step of the working contains a calculation error."),
    },
    "dev": {
        "arithmetic": _rubric(
            "Gets the right number: the final answer matches the reference.",
            "The arithmetic shown is free of errors.",
            "Contains a computational mistake such as a lost carry or sign."),
        "everyday": _rubric(
            "Arrives at the right conclusion, the one in the reference.",
            "Reads the situation in the question correctly.",
            "Counts one too many or one too few, or mixes up who is who."),
        "science": _rubric(
            "Gives the correct answer, as in the reference.",
            "Explains the science behind the answer accurately.",
            "Confidently explains with a misconception."),
        "reasoning_gym": _rubric(
            "Outputs the answer given as the reference.",
            "The intermediate results are computed correctly.",
            "Has an error in an intermediate result."),
    },
}


# --- arithmetic and word problems ---------------------------------------------
# Each maker: rng, set name -> (prompt, reference, correct working, wrong
# working, wrong answer, flaw); the correct answer is the reference.

def _digits_sum_without_carry(a: int, b: int) -> int:
  out, place = 0, 1
  while a or b:
    out += ((a % 10 + b % 10) % 10) * place
    a, b, place = a // 10, b // 10, place * 10
  return out


def _add(rng, which):
  while True:
    # Hundreds that sum below ten: the slip is an inner carry, not a lost
    # leading digit.
    a, b = rng.randint(100, 499), rng.randint(100, 499)
    wrong = _digits_sum_without_carry(a, b)
    if wrong != a + b:
      break
  prompt = {"heldout": (f"What is {a} + {b}?",
                        f"A library had {a} books and was given {b} more. "
                        "How many books does it have now?"),
            "dev": (f"Compute the sum of {a} and {b}.",
                    f"A farm picked {a} apples on Monday and {b} on Tuesday. "
                    "How many apples in total?")}[which]
  return (rng.choice(prompt), str(a + b), f"{a} + {b} = {a + b}.",
          f"{a} + {b} = {wrong}.", str(wrong), "dropped carry")


def _subtract(rng, which):
  a = rng.randint(2, 40)
  b = a + rng.randint(3, 40)
  prompt = {"heldout": (f"What is {a} - {b}?",
                        f"It was {a} degrees at noon and the temperature fell "
                        f"by {b} degrees by midnight. What was the "
                        "temperature at midnight, in degrees?"),
            "dev": (f"Evaluate {a} minus {b}.",
                    f"A diver at {a} metres above a reef descends {b} metres. "
                    "Where is she relative to the reef, in metres (negative "
                    "is below)?")}[which]
  return (rng.choice(prompt), str(a - b),
          f"{a} - {b} = -({b} - {a}) = {a - b}.",
          f"{a} - {b} = {b} - {a} = {b - a}.", str(b - a), "sign")


def _multiply(rng, which):
  n, k = rng.randint(6, 19), rng.randint(12, 48)
  wrong = n * k + k
  prompt = {"heldout": f"Each crate holds {k} bottles. How many bottles are "
                       f"in {n} crates?",
            "dev": f"A cinema has {n} rows of {k} seats. How many seats is "
                   "that?"}[which]
  return (prompt, str(n * k), f"{n} * {k} = {n * k}.",
          f"{n} * {k} = {wrong}.", str(wrong), "multiplication slip")


def _units(rng, which):
  if which == "heldout":
    m = rng.randint(2, 30) + rng.choice((0, 0.5))
    value, wrong = round(m * 100), round(m * 10)
    m_text = f"{m:g}"
    return (f"A ribbon is {m_text} metres long. How long is it in "
            "centimetres?", f"{value} cm",
            f"1 metre is 100 centimetres, so {m_text} * 100 = {value} cm.",
            f"1 metre is 10 centimetres, so {m_text} * 10 = {wrong} cm.",
            f"{wrong} cm", "unit")
  litres = rng.randint(2, 9)
  return (f"How many millilitres are there in {litres} litres?",
          f"{litres * 1000} ml",
          f"A litre is 1000 ml, so {litres} * 1000 = {litres * 1000} ml.",
          f"A litre is 100 ml, so {litres} * 100 = {litres * 100} ml.",
          f"{litres * 100} ml", "unit")


def _percent(rng, which):
  p, x = rng.choice((10, 20, 25, 30, 40, 60, 75)), rng.randint(2, 30) * 20
  value, wrong = p * x // 100, p * x // 10
  prompt = {"heldout": f"What is {p}% of {x}?",
            "dev": f"A shop takes {p} percent off a {x} dollar coat. How "
                   "many dollars is the discount?"}[which]
  return (prompt, str(value), f"{p}% of {x} is {p} * {x} / 100 = {value}.",
          f"{p}% of {x} is {p} * {x} / 10 = {wrong}.", str(wrong),
          "misplaced decimal point")


def _clock(rng, which):
  h, m = rng.randint(6, 10), rng.randint(35, 55)
  d = rng.randint(70 - m, 55)
  total = m + d
  right = f"{h + 1}:{total - 60:02d}"
  wrong = f"{h}:{total - 60:02d}"
  prompt = {"heldout": f"A bus leaves at {h}:{m:02d} and the ride takes {d} "
                       "minutes. At what time does it arrive?",
            "dev": f"A film starts at {h}:{m:02d} and runs for {d} minutes. "
                   "When does it end?"}[which]
  return (prompt, right,
          f"{m} + {d} = {total} minutes past {h}, which is {right}.",
          f"{m} + {d} = {total}, that is {total - 60} minutes, so {wrong}.",
          wrong, "hour not carried")


ARITHMETIC = (_add, _subtract, _multiply, _units, _percent, _clock)


# --- everyday reasoning ---------------------------------------------------------

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday",
        "Sunday")
NAMES = {"heldout": ("Asha", "Bruno", "Chen", "Dalia", "Emeka", "Freya",
                     "Goran", "Hana"),
         "dev": ("Iris", "Jonas", "Kemi", "Luca", "Mira", "Nils")}


def _weekday(rng, which):
  start, n = rng.randrange(7), rng.randint(3, 40)
  right, wrong = DAYS[(start + n) % 7], DAYS[(start + n + 1) % 7]
  prompt = {"heldout": f"Today is {DAYS[start]}. What day of the week will "
                       f"it be in {n} days?",
            "dev": f"If a parcel posted on a {DAYS[start]} arrives {n} days "
                   "later, on what weekday does it arrive?"}[which]
  weeks, rest = divmod(n, 7)
  return (prompt, right,
          f"{n} days is {weeks} weeks and {rest} days; {rest} days after "
          f"{DAYS[start]} is {right}.",
          f"Counting today as the first day, {n} days takes us to {wrong}.",
          wrong, "off by one day")


def _change(rng, which):
  cents = rng.randint(105, 1895)
  note = 20
  price = f"{cents // 100}.{cents % 100:02d}"
  right_c = note * 100 - cents
  wrong_c = right_c + 100
  right, wrong = (f"{c // 100}.{c % 100:02d}" for c in (right_c, wrong_c))
  prompt = {"heldout": f"Groceries cost ${price} and you pay with a $20 note. "
                       "How much change do you get, in dollars?",
            "dev": f"A ticket costs {price} dollars. Paying with a 20 dollar "
                   "bill, how much change comes back?"}[which]
  return (prompt, right, f"20.00 - {price} = {right}.",
          f"20.00 - {price}: borrowing gives {wrong}.", wrong,
          "borrowing slip")


def _fence(rng, which):
  gap = rng.choice((2, 3, 4, 5))
  length = gap * rng.randint(4, 15)
  right, wrong = length // gap + 1, length // gap
  prompt = {"heldout": f"A straight fence {length} metres long has a post "
                       f"every {gap} metres, including one at each end. How "
                       "many posts are there?",
            "dev": f"Trees are planted every {gap} metres along a {length} "
                   "metre path, with a tree at both ends. How many "
                   "trees?"}[which]
  return (prompt, str(right),
          f"{length} / {gap} = {length // gap} gaps, and one more post than "
          f"gaps: {right}.",
          f"{length} / {gap} = {wrong}, one post for each stretch: {wrong}.",
          str(wrong), "fence-post error")


def _ordering(rng, which):
  a, b, c = rng.sample(NAMES[which], 3)
  if which == "heldout":
    prompt = (f"{a} is older than {b}, and {b} is older than {c}. Who is the "
              "youngest?")
    return (prompt, c, f"{a} > {b} > {c} in age, so {c} is the youngest.",
            f"{a} is older than {b} and {b} than {c}, so {a} is the "
            "youngest.", a, "reversed comparison")
  prompt = (f"{a} finished ahead of {b}, and {b} finished ahead of {c}. Who "
            "came last?")
  return (prompt, c, f"The order is {a}, {b}, {c}, so {c} came last.",
          f"{a} beat {b} who beat {c}, which puts {a} last.", a,
          "reversed comparison")


def _age(rng, which):
  name1, name2 = rng.sample(NAMES[which], 2)
  x, y, z = rng.randint(6, 30), rng.randint(2, 9), rng.randint(2, 10)
  prompt = {"heldout": f"{name1} is {x} years old. {name2} is {y} years "
                       f"older than {name1}. How old will {name2} be in {z} "
                       "years?",
            "dev": f"{name1} is {x}. {name2} is {y} years older. What age "
                   f"will {name2} be {z} years from now?"}[which]
  return (prompt, str(x + y + z),
          f"{name2} is {x} + {y} = {x + y} now, and {x + y} + {z} = "
          f"{x + y + z} in {z} years.",
          f"{name2} is {x} + {y} = {x + y} years old.", str(x + y),
          "missed a step")


def _pages(rng, which):
  per_day = rng.randint(12, 40)
  pages = per_day * rng.randint(3, 12) + rng.randint(1, per_day - 1)
  right, wrong = pages // per_day + 1, pages // per_day
  prompt = {"heldout": f"A book has {pages} pages. Reading {per_day} pages a "
                       "day, how many days does it take to finish it?",
            "dev": f"A printer prints {per_day} pages a minute. How many "
                   f"whole minutes does a {pages}-page job need?"}[which]
  return (prompt, str(right),
          f"{pages} / {per_day} = {pages // per_day} remainder "
          f"{pages % per_day}, and the rest needs one more: {right}.",
          f"{pages} / {per_day} = {wrong}.", str(wrong), "rounded down")


EVERYDAY = (_weekday, _change, _fence, _ordering, _age, _pages)


# --- science explanations --------------------------------------------------------
# (question, reference, correct explanation, wrong answer, false explanation)

SCIENCE = (
    ("Which gas do plants take in from the air for photosynthesis?",
     "carbon dioxide",
     "Photosynthesis combines carbon dioxide and water into sugar using "
     "light, releasing oxygen.", "oxygen",
     "Plants breathe in oxygen to build sugar and release carbon dioxide as "
     "waste during photosynthesis."),
    ("Why do we see lightning before we hear thunder?",
     "light travels faster than sound",
     "Light travels at about 300,000 km/s, sound at about 343 m/s, so the "
     "flash arrives long before the sound.",
     "thunder is made after the lightning",
     "Thunder only forms a few seconds after the flash, once the cloud has "
     "cooled down."),
    ("What happens to the boiling point of water at high altitude?",
     "it decreases",
     "Air pressure is lower at altitude, so water's vapour pressure reaches "
     "it at a lower temperature.", "it increases",
     "Thin air holds heat poorly, so water has to get hotter before it "
     "boils."),
    ("Which planet is closest to the Sun?", "Mercury",
     "Mercury orbits at about 0.39 AU, closer than any other planet.",
     "Venus", "Venus is the hottest planet, which shows it is the closest to "
     "the Sun."),
    ("What is the chemical symbol for sodium?", "Na",
     "Sodium's symbol comes from its Latin name natrium.", "So",
     "Symbols are the first two letters of the English name, so sodium is "
     "So."),
    ("Why does ice float on water?", "ice is less dense than water",
     "Water expands as it freezes into an open crystal lattice, so ice is "
     "less dense than liquid water.", "air bubbles hold it up",
     "Ice is denser than water, but bubbles of trapped air keep it at the "
     "surface."),
    ("What is the main cause of the seasons on Earth?",
     "the tilt of Earth's axis",
     "The 23.4 degree tilt changes how directly sunlight strikes each "
     "hemisphere during the year.", "the distance from the Sun",
     "Earth is closer to the Sun in summer and farther away in winter, which "
     "makes the seasons."),
    ("Which blood cells carry oxygen around the body?", "red blood cells",
     "Red blood cells contain haemoglobin, which binds oxygen in the lungs.",
     "white blood cells",
     "White blood cells pick up oxygen in the lungs and deliver it to the "
     "organs."),
    ("What kind of energy does a stretched spring store?",
     "elastic potential energy",
     "Deforming the spring stores energy in its elastic deformation, "
     "released when it springs back.", "kinetic energy",
     "A stretched spring stores kinetic energy in its coils even while it "
     "is held still."),
    ("What is the pH of pure water at 25 degrees Celsius?", "7",
     "Pure water self-ionises equally into H+ and OH-, each at 1e-7 mol/L, "
     "so pH = 7.", "0",
     "Pure water contains no acid at all, so its pH is zero."),
    ("Why does a metal spoon feel colder than a wooden one at the same "
     "temperature?", "metal conducts heat away faster",
     "Both are at room temperature, but metal conducts heat from the hand "
     "much faster, so it feels colder.", "metal is colder",
     "Metals always sit at a lower temperature than wood in the same room."),
    ("What force keeps the Moon in orbit around Earth?", "gravity",
     "Earth's gravity pulls the Moon toward it, bending its path into an "
     "orbit.", "magnetism",
     "Earth's magnetic field holds the Moon in place as it goes around."),
    ("Which organelle is the site of aerobic respiration in cells?",
     "mitochondria",
     "Mitochondria run the Krebs cycle and oxidative phosphorylation that "
     "make most ATP.", "nucleus",
     "The nucleus burns glucose to power the cell, which is why it is the "
     "control centre."),
    ("What is the freezing point of water in Fahrenheit?", "32",
     "Water freezes at 0 degrees Celsius, which is 32 degrees Fahrenheit.",
     "0", "Both temperature scales put the freezing point of water at zero."),
    ("Why is the sky blue on a clear day?",
     "air scatters blue light more than red",
     "Rayleigh scattering by air molecules is stronger for short "
     "wavelengths, so blue light is scattered across the sky.",
     "it reflects the ocean",
     "The sky is a mirror of the oceans, which cover most of the planet."),
    ("How many chromosomes does a typical human body cell have?", "46",
     "Human somatic cells are diploid with 23 pairs, 46 chromosomes.", "23",
     "Each body cell has 23 chromosomes, one from each parent's cell."),
    ("What is the unit of electrical resistance?", "ohm",
     "Resistance is measured in ohms, volts per ampere.", "watt",
     "Resistance is measured in watts, since it is the power a wire uses."),
    ("Which is the most abundant gas in Earth's atmosphere?", "nitrogen",
     "Dry air is about 78 % nitrogen and 21 % oxygen.", "oxygen",
     "Most of the air is oxygen, which is why we can breathe it."),
    ("Do heavier objects fall faster than lighter ones in a vacuum?",
     "no, they fall at the same rate",
     "Without air resistance every object accelerates at g, about 9.8 m/s², "
     "whatever its mass.", "yes, heavier ones fall faster",
     "Gravity pulls harder on a heavier object, so it always falls "
     "faster."),
    ("What is the chemical formula of table salt?", "NaCl",
     "Table salt is sodium chloride, one sodium ion per chloride ion.",
     "NaCl2", "Chlorine always comes in pairs, so salt is NaCl2."),
    ("Why do we have day and night?", "Earth rotates on its axis",
     "Earth spins once about every 24 hours, turning each side toward and "
     "away from the Sun.", "the Sun goes around Earth",
     "The Sun circles Earth once a day, lighting one side at a time."),
    ("What type of rock forms from cooled lava?", "igneous",
     "Igneous rock forms when molten rock, magma or lava, cools and "
     "solidifies.", "sedimentary",
     "Lava settles in layers as it cools, which makes sedimentary rock."),
    ("Which vitamin does skin make in sunlight?", "vitamin D",
     "Ultraviolet B light converts a cholesterol precursor in skin into "
     "vitamin D.", "vitamin C",
     "Sunlight makes skin produce vitamin C, which is why summer fruit is "
     "not needed."),
    ("What is the speed of light in a vacuum, roughly, in km/s?", "300000",
     "Light travels at about 299,792 km/s, roughly 300,000 km/s.", "30000",
     "Light covers about 30,000 km each second in empty space."),
    ("Why does a ball thrown upward slow down?",
     "gravity pulls it downward",
     "Gravity accelerates the ball downward at about 9.8 m/s², reducing its "
     "upward speed.", "it runs out of force",
     "The throw gives the ball a force that gets used up as it rises."),
    ("What is the powerhouse pigment that makes leaves green?",
     "chlorophyll",
     "Chlorophyll absorbs red and blue light and reflects green.",
     "carotene", "Carotene is the pigment that colours leaves green."),
    ("How many bones are in the adult human body?", "206",
     "An adult skeleton has 206 bones after several fuse in childhood.",
     "300", "Adults keep all of their roughly 300 bones from birth."),
    ("Which particle in an atom has no electric charge?", "neutron",
     "Neutrons are neutral; protons are positive and electrons negative.",
     "electron", "Electrons carry no charge, which lets them orbit freely."),
    ("What process turns liquid water into vapour below its boiling "
     "point?", "evaporation",
     "At the surface, faster molecules escape into the air: evaporation.",
     "condensation",
     "Condensation is when liquid water turns into vapour in the air."),
    ("Why do astronauts float in the International Space Station?",
     "they are in free fall",
     "The station and astronauts fall around Earth together, so they feel "
     "weightless though gravity is still about 90 % as strong.",
     "there is no gravity in space",
     "Gravity stops a short way above Earth, so there is none at the "
     "station."),
    ("What is the hardest natural substance?", "diamond",
     "Diamond's network of strong carbon-carbon bonds makes it the hardest "
     "natural material.", "quartz",
     "Quartz tops the hardness scale and scratches every other mineral."),
    ("Which part of the plant absorbs most water?", "the roots",
     "Root hairs take up water from the soil by osmosis.", "the leaves",
     "Leaves soak up rain directly, which is where plants get most water."),
    ("What is the boiling point of water at sea level in Celsius?", "100",
     "At one atmosphere water boils at 100 degrees Celsius.", "90",
     "Water boils at 90 degrees Celsius at sea level, as kettles show."),
    ("What gas do humans exhale more of than they inhale?",
     "carbon dioxide",
     "Cells make carbon dioxide in respiration, and the lungs breathe it "
     "out.", "nitrogen",
     "The body produces nitrogen while digesting, so we breathe out more of "
     "it."),
    ("Which layer of the atmosphere contains the ozone layer?",
     "the stratosphere",
     "Ozone is concentrated about 15-35 km up, in the stratosphere.",
     "the troposphere",
     "The ozone layer is in the troposphere, just above the clouds."),
    ("What is Newton's third law in one phrase?",
     "every action has an equal and opposite reaction",
     "Forces come in pairs: if A pushes B, B pushes A equally hard in the "
     "opposite direction.", "force equals mass times acceleration",
     "The third law says force equals mass times acceleration."),
    ("Why does salt melt ice on roads?",
     "it lowers the freezing point of water",
     "Dissolved salt lowers the freezing point, so the ice melts at "
     "temperatures just below 0 °C.", "it heats the ice",
     "Salt reacts with ice and releases heat that melts it."),
    ("What is the closest star to Earth?", "the Sun",
     "The Sun is 8 light minutes away; the next star is over 4 light years "
     "away.", "Proxima Centauri",
     "Proxima Centauri is the closest star, closer than anything else in "
     "the sky."),
    ("What do herbivores eat?", "plants",
     "Herbivores are animals adapted to eat plant material.", "meat",
     "Herbivores are the hunters that eat other animals."),
    ("Which metal is liquid at room temperature?", "mercury",
     "Mercury melts at about -39 °C, so it is liquid at room temperature.",
     "aluminium",
     "Aluminium is the metal that stays liquid at room temperature."),
    ("What is the shape of Earth's orbit around the Sun?",
     "a slightly elliptical ellipse close to a circle",
     "Earth's orbit is an ellipse with eccentricity about 0.017, nearly "
     "circular.", "a square",
     "Earth's orbit has four corners, one for each season."),
    ("Why does a straw look bent in a glass of water?",
     "light refracts at the water surface",
     "Light bends as it passes between water and air, shifting where the "
     "straw appears.", "the water bends the straw",
     "Water pressure physically bends the straw where it enters the "
     "water."),
)


# --- reasoning-gym families --------------------------------------------------------

def _slip(reference: int, rng) -> int:
  """A near miss: one off, or ten off for larger numbers; never negative
  for a non-negative reference."""
  steps = [1, -1] + ([10, -10] if abs(reference) >= 20 else [])
  step = rng.choice(steps)
  if reference >= 0 and reference + step < 0:
    step = -step
  return reference + step


def _gym(which, n, rng) -> list[tuple]:
  families = FAMILIES[which]
  per = [n // len(families) + (i < n % len(families))
         for i in range(len(families))]
  made = []
  for family, count in zip(families, per):
    for row in tasks.generate(family, count, SEEDS[which], f"probe-{which}"):
      trace = task_traces.TRACES[family](row["metadata"])
      reference = row["answer"]
      wrong = str(_slip(int(reference), rng))
      assert tasks.score_answer(family, row["metadata"], row["prompt"],
                                reference, wrong) < 1.0
      head, sep, tail = trace.rpartition(reference)
      made.append((row["prompt"], reference, trace, head + wrong + tail
                   if sep else f"{trace} So {wrong}.", wrong,
                   "slip in the last step", family))
  return made


# --- off-topic text -----------------------------------------------------------------
# (working, answer): text about something else, written like a solution.

OFF_TOPIC = {
    "heldout": (
        ("My sourdough starter needs feeding twice a day with equal weights "
         "of flour and water.", "Feed it at 9 and at 21"),
        ("The hiking trail climbs 400 metres through pine forest before the "
         "lake.", "Bring water"),
        ("Our football team won 3 of its last 5 matches, mostly at home.",
         "A good season"),
        ("Tulips grow best in well drained soil with plenty of sun.",
         "Plant them in autumn"),
        ("The museum's map exhibition opens next month in the east wing.",
         "Tickets are free"),
        ("I prefer tea to coffee in the morning, with a splash of milk.",
         "Tea"),
        ("The new phone's battery lasts about 2 days of light use.",
         "Worth buying"),
        ("Knitting a scarf takes around 200 rows of simple stitches.",
         "Blue wool"),
    ),
    "dev": (
        ("Parking downtown costs more on weekdays than at weekends.",
         "Take the tram"),
        ("The cat sleeps most of the afternoon on the sunny windowsill.",
         "On the windowsill"),
        ("This recipe needs 250 g of butter and two eggs.", "Bake at 180"),
        ("The band's second album sold better than its first.", "Track 4"),
        ("Autumn leaves turn red and gold before they fall.", "October"),
    ),
}


def _write_three(rng, which, prompt, reference, right_work, wrong_work,
                 wrong_answer):
  name, writer = rng.choice(FORMATS[which])
  opener = rng.choice(OPENERS[which])
  off_work, off_answer = rng.choice(OFF_TOPIC[which])
  return name, {
      "correct": writer(opener + right_work, reference),
      "wrong": writer(opener + wrong_work, wrong_answer),
      "off_topic": writer(off_work, off_answer),
  }


def build(which: str) -> list[dict]:
  """The rows of set `which` (SETS), in order: a header row {"about"} and
  then the problems, domain by domain."""
  rng = random.Random(f"judge-probes/{which}/{SEEDS[which]}")
  sizes = SIZES[which]
  problems = []  # (domain, prompt, reference, right, wrong, wrong answer,
  #               flaw)
  for domain, makers in (("arithmetic", ARITHMETIC), ("everyday", EVERYDAY)):
    for i in range(sizes[domain]):
      problems.append((domain, *makers[i % len(makers)](rng, which)))
  order = sorted(range(len(SCIENCE)),
                 key=lambda i: random.Random(f"science/{i}").random())
  dev_count = SIZES["dev"]["science"]
  chosen = order[:dev_count] if which == "dev" else order[dev_count:]
  assert len(chosen) >= sizes["science"], "SCIENCE has too few items"
  for i in chosen[:sizes["science"]]:
    q, ref, right, wrong_answer, wrong = SCIENCE[i]
    problems.append(("science", q, ref, right, wrong, wrong_answer,
                     "confident false explanation"))
  for made in _gym(which, sizes["reasoning_gym"], rng):
    problems.append(("reasoning_gym", *made[:6]))
  rows = [{"about": ABOUT[which]}]
  for k, (domain, prompt, reference, right, wrong, wrong_answer,
          flaw) in enumerate(problems):
    fmt, texts = _write_three(rng, which, prompt, reference, right, wrong,
                              wrong_answer)
    rows.append({"id": f"{which}-{k:03d}", "domain": domain, "prompt": prompt,
                 "reference": reference, "rubric": RUBRICS[which][domain],
                 **texts, "flaw": flaw, "format": fmt})
  return rows


def main() -> None:
  prompts = {}
  for which in SETS:
    rows = build(which)
    prompts[which] = {tasks.normalised(r["prompt"]) for r in rows[1:]}
    path = DIR / f"{which}.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n"
                            for r in rows), encoding="utf-8")
    print(f"{path}: {len(rows) - 1} problems")
  shared = prompts["heldout"] & prompts["dev"]
  assert not shared, f"a problem in both sets: {sorted(shared)[:3]}"


if __name__ == "__main__":
  main()
