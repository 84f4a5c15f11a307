"""Functional categories of reasoning words (paper §5 / App. D), and a rule-based annotator.

Every word of a reasoning chain gets exactly one of six categories (our name → the paper's key):

- SymbMath  (SYMBOLIC_MATH):  numbers, variables, operators and symbolic expressions (3, x, +, =, \\frac, 12.5, %, $).
- VerbalMath (VERBAL_MATH):   mathematical operations, relations and quantities said in words (plus, times, half,
  twice, total, sum, divide, each, per, percent, more, than, remaining, equals, average, twelve …).
- EntName   (ENTITY_NAME):    names of the problem's entities: people, objects, units, things counted (Tom, apples,
  pages, dollars, minutes, boxes …), the nouns the quantities are about.
- CoRef     (COREFERENCE):    words that refer back to entities already mentioned: pronouns and anaphoric
  determiners (he, she, they, it, his, her, their, them, this, that, these, those, former, latter …).
- MetaDisc  (META_DISCOURSE): words that organise or comment on the reasoning rather than carry its content
  (first, next, then, so, therefore, let's, we, need, step, now, finally, answer, calculate, find, which, because …).
- Grammar   (FUNCTION):       remaining function words and punctuation that carry syntax only (the, a, of, to, is,
  and, in, ",", "." …).

Tie-break (ours: the paper's appendix could not be consulted offline): a word that fits several categories takes
the first in CATEGORIES, SymbMath > VerbalMath > EntName > CoRef > MetaDisc > Grammar. The lexicons below overlap on
purpose (e.g. "each" is VerbalMath and CoRef, "that" is CoRef and Grammar-like); the priority settles them.

Rule-based labelling (`rule_labels`), in priority order:

1. SymbMath: a word containing a digit, a LaTeX command (\\frac, \\[, \\$), an unambiguous math symbol (+ = < > ^ % $
   × ÷ …), a math name (sqrt, pi, log …), or a single-letter variable (any single letter except the words a, A, I,
   which count only next to an operator). Ambiguous characters depend on their neighbours: "-", "*", "/" and ":"
   are SymbMath between mathematical words ("3 - 2", "3:4"; "-" also before a number it touches, "-5"; "/" next to
   one it touches, "$5/hour"), and a bracket pair is SymbMath when its content starts with one, or it follows one
   directly ("f(x)", "\\boxed{18}"); otherwise they are punctuation.
2. VerbalMath: the VERBAL_MATH lexicon.
3. EntName: the UNITS lexicon (singular or plural; "second" only after a number or per/a/each/every), and names: a
   capitalised word that is capitalised mid-sentence in the question, or in the chain and in no lexicon, or that
   opens a sentence of the question and is in no lexicon ("Tom has 3 apples." names Tom; "in Step 2" names none).
4. CoRef: the COREFERENCE lexicon.  5. MetaDisc: the META_DISCOURSE lexicon.
6. Grammar: the FUNCTION_WORDS lexicon, and any other punctuation or symbol.
7. Fallback for a word that fits nothing specific: EntName if it is a noun-like content word of the question, or
   of the chain right after a number or a possessive ("5 apples", "his friends"), or a name's lower-case form;
   noun-like = in no lexicon, not ending in -ly, and directly after a number, a number word, a determiner or a
   possessive (3, the, his, each, Tom's, farmers'), or after a preposition unless it is a long -ing/-ed form ("for
   breakfast", not "by dividing"). Plural and singular forms match. Anything else (mostly content verbs and
   adverbs: bought, gives, quickly) is MetaDisc.

Lexicon words are matched lower-cased, with ’ read as ', and contractions/possessives by their first part too
("he's" → he, "Tom's" → tom, "let's" is listed as is).
"""

from __future__ import annotations

import bisect
import re
from typing import Protocol

from src.distill.lengths import unit_spans

CATEGORIES: tuple[str, ...] = ("SymbMath", "VerbalMath", "EntName", "CoRef", "MetaDisc", "Grammar")

PAPER_KEYS: dict[str, str] = {
    "SymbMath": "SYMBOLIC_MATH",
    "VerbalMath": "VERBAL_MATH",
    "EntName": "ENTITY_NAME",
    "CoRef": "COREFERENCE",
    "MetaDisc": "META_DISCOURSE",
    "Grammar": "FUNCTION",
}

DEFINITIONS: dict[str, str] = {
    "SymbMath": "Numbers, variables, operators and symbolic or LaTeX expressions (3, x, +, =, \\frac, 12.5, %, $).",
    "VerbalMath": "Mathematical operations, relations and quantities said in words "
    "(plus, times, half, twice, total, sum, divide, each, per, percent, more than, remaining, equals, average).",
    "EntName": "Names of the problem's entities: people, objects, units and things counted "
    "(Tom, apples, pages, dollars, minutes, boxes), the nouns the quantities are about.",
    "CoRef": "Words that refer back to entities already mentioned: pronouns and anaphoric determiners "
    "(he, she, they, it, his, her, their, them, this, that, these, those, the former).",
    "MetaDisc": "Words that organise or comment on the reasoning rather than carry its content "
    "(first, next, then, so, therefore, thus, let's, we need to, step, now, finally, answer, calculate, find, "
    "note, means, which, because).",
    "Grammar": "Remaining function words and punctuation that carry syntax only "
    "(the, a, of, to, is, and, in, ',', '.').",
}

# Math names written as words that are symbols, not verbal math (a LaTeX command is matched by its backslash).
MATH_WORDS = frozenset(
    "pi sqrt frac dfrac tfrac cdot div log ln sin cos tan exp mod gcd lcm alpha beta gamma delta theta lambda "
    "mu sigma infinity".split()
)

# Characters that are always mathematical symbols (operators, relations, currency, degrees, super-/subscripts).
MATH_SYMBOLS = frozenset("+=<>^%$×÷·±√≤≥≠≈∞∑∏∫π−∗⋅°€£¥²³½¼¾⅓⅔")

# Characters that are math or punctuation depending on their neighbours.
BINARY_OPS = frozenset("-–*/:")
OPEN_BRACKETS = {"(": ")", "[": "]", "{": "}"}
CLOSE_BRACKETS = {v: k for k, v in OPEN_BRACKETS.items()}

# Operators next to which a, A or I is a variable ("a = 3").
VARIABLE_CONTEXT = frozenset("=+^<>×÷·≤≥≠−")

NUMBER_WORDS = frozenset(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred hundreds thousand "
    "thousands million millions billion billions dozen dozens".split()
)

# Operations, relations and quantities in words (number words included).
VERBAL_MATH = NUMBER_WORDS | frozenset(
    """
    plus minus times multiply multiplies multiplied multiplying multiplication product products divide divides
    divided dividing division quotient add adds added adding addition subtract subtracts subtracted subtracting
    subtraction sum sums total totals totaling totalling difference differences remainder remaining remain remains
    left leftover rest equal equals equaled equalled equally equivalent half halves halved twice double doubles
    doubled triple tripled thrice quadruple once quarter quarters third thirds fourth fourths fifth fifths percent
    percentage percentages per each every average averages mean median more less fewer greater larger smaller
    bigger higher lower than most least fewest few several many much increase increases increased decrease
    decreases decreased ratio ratios rate rates fraction fractions proportion square squared squares cube cubed
    root roots power powers exponent multiple multiples factor factors altogether combined together overall number
    numbers amount amounts quantity quantities count counts value values digit digits odd even evenly extra
    additional maximum minimum max min round rounded approximately equation equations expression
    """.split()
)

# Units of measure and money (singular and plural forms both listed or derived).
UNITS = frozenset(
    """
    dollar dollars cent cents penny pennies euro euros pound pounds yen minute minutes hour hours day days week
    weeks month months year years decade decades century centuries second seconds hr hrs sec secs mile miles
    kilometer kilometers kilometre kilometres km meter meters metre metres centimeter centimeters cm mm foot feet
    inch inches yard yards kg kilogram kilograms gram grams ounce ounces oz lb lbs liter liters litre litres ml
    gallon gallons quart quarts pint pints cup cups mph
    """.split()
)
# Units that are also ordinary words: a unit only after a number or per/a/each/every ("1 second", "per second").
CONTEXT_UNITS = frozenset({"second"})
UNIT_CONTEXT = frozenset({"per", "a", "an", "each", "every", "one"})

# Pronouns and anaphoric determiners.
COREFERENCE = frozenset(
    """
    he she it they him her them his hers its their theirs himself herself itself themselves this that these those
    former latter both each one ones same other others who whom whose
    """.split()
)

# Organisation of, and comment on, the reasoning; the reasoner's and reader's own voice (I, we, you).
META_DISCOURSE = frozenset(
    """
    first firstly second secondly next then so therefore thus hence now finally lastly step steps answer answers
    calculate calculates calculated calculating calculation calculations compute computes computed computing
    computation find finds finding determine determines determining figure note notice noting means meaning which
    because since let let's lets i me my we us our you your need needs needed know known given recall remember
    check checking verify verifying confirm confirmed wait hmm okay ok alright well actually also however
    consequently result results conclude conclusion final question problem asks asked ask want wants solve solving
    solution think thinking see look start starting begin get gets got yes no correct right true false indeed
    instead here above below following previous previously again what how why where when simplify simplifying
    substitute substituting plug plugging rewrite sure maybe perhaps probably seems case information formula
    boxed summary
    """.split()
)

# Function words that carry syntax only.
FUNCTION_WORDS = frozenset(
    """
    a an the of to in on at by for with from into onto over under about after before between through during
    without within up down out off as via across around among upon toward towards along against beyond behind near
    and or but nor if while whereas although though unless until either neither whether is are was were be been
    being am do does did doing done have has had having will would shall should can could may might must not
    there all some any very just only such own too yet still already ever 's s don't doesn't didn't isn't aren't
    wasn't weren't can't cannot couldn't won't wouldn't shouldn't hasn't haven't hadn't
    """.split()
)

LEXICON_WORDS = VERBAL_MATH | UNITS | COREFERENCE | META_DISCOURSE | FUNCTION_WORDS | MATH_WORDS

# Words after which a content word is taken for a noun: determiners, possessives, quantifiers ("the building")...
DETERMINERS = frozenset(
    "a an the his her their its my our your each every per some many several all these those this that no any "
    "few more much other another both same".split()
)
POSSESSIVES = frozenset("his her their its my our your".split())
# ... and prepositions, though not for -ing/-ed forms ("for breakfast", but "by dividing").
PREPOSITIONS = frozenset("of for with at in on from by into".split())

# Words that end with one of these open no sentence after them: the next word may be capitalised as a sentence start.
SENTENCE_OPENERS = frozenset('.!?:*#-"“(>')

_WORD = re.compile(
    r"\\(?:[A-Za-z]+|[^\sA-Za-z])"  # a LaTeX command or escape: \frac, \[, \$
    r"|[^\W_]+(?:(?:(?<=\d)[.,/](?=\d)|['’](?=[^\W_]))[^\W_]+)*"  # letters/digits: 12.5, 1,000, 3/4, don't, Tom's
    r"|\S"  # any other single character: a symbol or punctuation
)


class Annotator(Protocol):
    """Labels each word of `words(text)` with one of CATEGORIES."""

    def labels(self, text: str, question: str) -> list[str]: ...


def words(text: str) -> list[tuple[int, int]]:
    """Character spans of the words of `text`: runs of letters/digits, LaTeX commands, single other characters.

    Numbers and contractions stay whole (12.5, 1,000, 3/4, don't, Tom's); "3+4=7." gives 3 + 4 = 7 . ;
    whitespace belongs to no word. TokenSkip's units are LLMLingua-2's words instead (`tokenskip.lingua_words`).
    """
    return [m.span() for m in _WORD.finditer(text)]


def key(word: str) -> str:
    """A word as the lexicons list it: lower case, ’ read as '."""
    return word.lower().replace("’", "'")


def base(word: str) -> str:
    """The part of a word before its apostrophe ("he's" → "he", "Tom's" → "tom")."""
    return key(word).split("'")[0]


def in_lexicon(word: str, lexicon: frozenset[str]) -> bool:
    """Whether `word` or (for a contraction or possessive) its first part is in `lexicon`."""
    k = key(word)
    return k in lexicon or ("'" in k and base(word) in lexicon)


def forms(word: str) -> set[str]:
    """The lower-cased base of `word` and its candidate singulars, so that "boxes", "box" and "Box's" meet."""
    w = base(word)
    out = {w}
    if len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
        out.add(w[:-1])
        if w.endswith("es"):
            out.add(w[:-2])
        if w.endswith("ies"):
            out.add(w[:-3] + "y")
    return out


def is_number(word: str) -> bool:
    """A word with a digit in it (3, 12.5, 1,000, 3/4, 5th, 3x, ½)."""
    return any(c.isnumeric() for c in word)


def is_capitalised(word: str) -> bool:
    """A capitalised word of two letters or more that is not all capitals (Tom, McDonald's; not I, NOTE)."""
    return len(word) > 1 and word[0].isupper() and any(c.islower() for c in word[1:])


def core_math(word: str) -> bool:
    """A word that is mathematical by itself, whatever its neighbours."""
    if word.startswith("\\") and len(word) > 1:
        return True
    if is_number(word) or key(word) in MATH_WORDS:
        return True
    if len(word) == 1:
        return word in MATH_SYMBOLS or (word.isalpha() and word not in "aAI")
    return False


def symbolic(toks: list[str], gaps: list[bool]) -> list[bool]:
    """Which words are SymbMath; `gaps[i]` says whether whitespace separates word i-1 from word i."""
    n = len(toks)
    math = [core_math(t) for t in toks]
    for i, t in enumerate(toks):  # a, A, I next to an operator are variables
        if t in ("a", "A", "I") and any(0 <= j < n and toks[j] in VARIABLE_CONTEXT for j in (i - 1, i + 1)):
            math[i] = True
    core = list(math)

    def mathy(j: int) -> bool:
        return 0 <= j < n and (core[j] or toks[j] in OPEN_BRACKETS or toks[j] in CLOSE_BRACKETS)

    def touching(j: int) -> bool:  # word j is glued to word j - 1
        return 0 < j < n and not gaps[j]

    for i, t in enumerate(toks):
        if t not in BINARY_OPS:
            continue
        left, right = mathy(i - 1), mathy(i + 1)
        if t == ":":
            math[i] = left and right and touching(i) and touching(i + 1)
        elif t == "/":
            math[i] = (left and touching(i)) or (right and touching(i + 1))
        else:
            math[i] = left and right
            if t in "-–" and not math[i] and touching(i + 1) and i + 1 < n and is_number(toks[i + 1]):
                math[i] = not (touching(i) and toks[i - 1][-1].isalpha())  # "-5", but not "day-5"
    for open_, close in bracket_pairs(toks):
        inside = open_ + 1 if open_ is not None else close - 1  # the first word inside (the last, if unopened)
        after = open_ is not None and touching(open_) and core[open_ - 1]  # f(x), \boxed{18}, 2(3 + 4)
        is_math = after or (0 <= inside < n and inside != close and math[inside])
        for j in (open_, close):
            if j is not None:
                math[j] = is_math
    return math


def bracket_pairs(toks: list[str]) -> list[tuple[int | None, int | None]]:
    """(open, close) indices of matching brackets; None for the missing side of an unmatched one."""
    pairs: list[tuple[int | None, int | None]] = []
    stack: list[int] = []
    for i, t in enumerate(toks):
        if t in OPEN_BRACKETS:
            stack.append(i)
        elif t in CLOSE_BRACKETS:
            match = next((k for k in range(len(stack) - 1, -1, -1) if toks[stack[k]] == CLOSE_BRACKETS[t]), None)
            if match is None:
                pairs.append((None, i))
            else:
                pairs.extend((j, None) for j in stack[match + 1 :])  # opened inside, never closed
                pairs.append((stack[match], i))
                del stack[match:]
    pairs.extend((i, None) for i in stack)
    return pairs


def sentence_starts(toks: list[str], spans: list[tuple[int, int]], text: str) -> list[bool]:
    """Whether each word opens a sentence, a line or a list item (so its capital says nothing)."""
    starts = []
    for i, (a, _) in enumerate(spans):
        if i == 0:
            starts.append(True)
            continue
        gap = text[spans[i - 1][1] : a]
        starts.append("\n" in gap or toks[i - 1] in SENTENCE_OPENERS)
    return starts


def noun_like(toks: list[str], i: int) -> bool:
    """Whether word i reads as a noun: a plain content word after a number, determiner, possessive or preposition."""
    w = toks[i]
    k = key(w)
    if i == 0 or not w[0].isalpha() or len(w) < 2 or in_lexicon(w, LEXICON_WORDS) or core_math(w):
        return False
    if k.endswith("ly"):
        return False
    prev = key(toks[i - 1])
    possessive = prev.endswith("'s") or (prev == "'" and i > 1 and toks[i - 2].endswith("s"))  # Tom's, farmers'
    if is_number(prev) or prev in NUMBER_WORDS or prev in DETERMINERS or possessive:
        return True
    verb_form = len(k) >= 5 and (k.endswith("ing") or k.endswith("ed"))
    return prev in PREPOSITIONS and not verb_form


def names(question: str, chain_toks: list[str], chain_starts: list[bool]) -> set[str]:
    """Bases of the entities' names: words capitalised mid-sentence, or opening a question sentence in no lexicon."""
    q_spans = words(question)
    q_toks = [question[a:b] for a, b in q_spans]
    found = set()
    for toks, starts, from_question in (
        (q_toks, sentence_starts(q_toks, q_spans, question), True),
        (chain_toks, chain_starts, False),
    ):
        for t, start in zip(toks, starts):
            if not is_capitalised(t):
                continue
            plain = not in_lexicon(t, LEXICON_WORDS)
            if (not start and (from_question or plain)) or (start and from_question and plain):
                found.add(base(t))
    return found


def entity_vocabulary(question: str, chain_toks: list[str]) -> set[str]:
    """Forms of the noun-like content words of the question, and of chain words right after a number or possessive."""
    q_toks = [question[a:b] for a, b in words(question)]
    vocab: set[str] = set()
    for i in range(len(q_toks)):
        if noun_like(q_toks, i):
            vocab |= forms(q_toks[i])
    for i in range(1, len(chain_toks)):
        prev = key(chain_toks[i - 1])
        owned = prev in POSSESSIVES or prev.endswith("'s")
        if (is_number(prev) or owned) and noun_like(chain_toks, i):
            vocab |= forms(chain_toks[i])
    return vocab


def is_unit(toks: list[str], i: int) -> bool:
    """A unit of measure or money; an ambiguous one ("second") only after a number or per/a/each."""
    w = toks[i]
    if not forms(w) & UNITS:
        return False
    if key(w) not in CONTEXT_UNITS:
        return True
    return i > 0 and (is_number(toks[i - 1]) or key(toks[i - 1]) in UNIT_CONTEXT)


def rule_labels(text: str, question: str = "") -> list[str]:
    """One category per word of `words(text)`, by lexicons, patterns and the question's nouns (module docstring)."""
    spans = words(text)
    toks = [text[a:b] for a, b in spans]
    gaps = [i == 0 or spans[i - 1][1] < spans[i][0] for i in range(len(spans))]
    starts = sentence_starts(toks, spans, text)
    math = symbolic(toks, gaps)
    named = names(question, toks, starts)
    vocab = entity_vocabulary(question, toks) | named
    labels = []
    for i, t in enumerate(toks):
        if math[i]:
            label = "SymbMath"
        elif in_lexicon(t, VERBAL_MATH):
            label = "VerbalMath"
        elif is_unit(toks, i) or (is_capitalised(t) and base(t) in named):
            label = "EntName"
        elif in_lexicon(t, COREFERENCE):
            label = "CoRef"
        elif in_lexicon(t, META_DISCOURSE):
            label = "MetaDisc"
        elif in_lexicon(t, FUNCTION_WORDS) or not any(c.isalnum() for c in t):
            label = "Grammar"
        elif forms(t) & vocab:
            label = "EntName"
        else:
            label = "MetaDisc"
        labels.append(label)
    return labels


def unit_categories(text: str, units: list[str], labels: list[str], spans: list[tuple[int, int]]) -> list[str]:
    """The category of each unit (pruner token or word) of `text`, from its words' `spans` and `labels`.

    A unit takes the label of the word it overlaps most (the first on a tie), so sub-word pieces take their word's
    label; a unit that overlaps no word (whitespace) is Grammar.
    """
    if len(labels) != len(spans):
        raise ValueError(f"{len(labels)} labels for {len(spans)} words")
    starts = [a for a, _ in spans]
    out = []
    for a, b in unit_spans(text, units):
        best, best_overlap = "Grammar", 0
        w = max(bisect.bisect_right(starts, a) - 1, 0)  # the last word starting at or before the unit
        while w < len(spans) and spans[w][0] < b:
            overlap = min(b, spans[w][1]) - max(a, spans[w][0])
            if overlap > best_overlap:
                best, best_overlap = labels[w], overlap
            w += 1
        out.append(best)
    return out


class RuleAnnotator:
    """The offline, deterministic annotator: `rule_labels`."""

    def labels(self, text: str, question: str = "") -> list[str]:
        return rule_labels(text, question)
