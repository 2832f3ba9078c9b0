"""The router: from a prompt (or chat messages) to a task, a tier and a decoding strategy, with the
signals behind the decision in words.

Signals are what a person would look at: code given in the prompt (fenced blocks, code-like lines,
its size), programming languages and identifiers, what the request asks to do (create, explain,
review or change code), how many parts a request has, questions, and everyday wording that says the
prompt is not about code at all. Their vocabularies, the weight each signal carries for each task,
the task-to-tier mapping and the thresholds live in a JSON rules file (`models/router.json` shipped;
`$NPU_ENGINE_ROUTER_RULES` or `<engine home>/router.json` to override) that a user can edit, or
refit on their own labelled prompts with `npu-bench routing --fit`.
"""

import json
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from npu_engine.catalog import Profile
from npu_engine.data import read_json
from npu_engine.errors import UserInputError
from npu_engine.generation import Message, as_messages

Task = Literal["explain", "general", "snippet", "complex", "review", "edit"]
TASKS: tuple[Task, ...] = ("explain", "general", "snippet", "complex", "review", "edit")
Strategy = Literal["plain", "speculative", "prompt_lookup"]

FENCE = "```"
INLINE_CODE = re.compile(r"`[^`\n]+`")
# Every pattern here runs in time linear in the prompt (prompts may be as long as the 1 MiB body
# limit): no quantifier can backtrack over what another has taken (possessive `*+` where a greedy
# one would be retried), and the two shapes that regular expressions can only find by retrying at
# every start (fenced blocks, and calls ending a line) are found by `fenced` and `is_code_line`.
CODE_LINE_START = re.compile(
    r"""^\s*+(?:def\s|class\s|import\s|from\s\S++\simport|function\s|const\s|let\s|var\s|\#include|return\b
    |fn\s|func\s|pub\s|public\s|private\s|package\s|using\s|SELECT\s|INSERT\s|UPDATE\s|DELETE\s|CREATE\s
    |ALTER\s|for\s*+\(|while\s*+\(|if\s*+\(|@\w+|[}\])];?$)|[;{]\s*+$|=>""",
    re.VERBOSE,
)
CALL_END = re.compile(r"\s*+[:{]?\s*+$")  # what may follow a call that ends a line
WORD_PAREN = re.compile(r"\w\(")
IDENTIFIER = re.compile(r"\b[a-z]+_[a-z0-9_]+\b|\b[a-z]+[A-Z]\w*\b|\b\w+\(\)|\b[a-z_]+\.[a-z_]+\(")
QUESTION_START = re.compile(r"^\s*+(?:what|why|how|when|where|which|who|is|are|can|does|do|should)\b", re.I)

# The router reads at most this many characters from each end of a prompt. Every pattern is
# linear, but a dozen scans of a 1 MiB prompt still took a second or two of the interpreter;
# the ends of a long prompt (the request, and the code or the question after it) decide its task.
SCAN_CHARS = 32 * 1024

# A conversation moves to another tier only for a turn routed there with at least this confidence
# (rules files written before it existed get this value). On bench/routing's 316 prompts, routes
# under 0.6 were right for 17 of 20, routes at 0.6 or over for 294 of 296: moving costs the next
# tier a cold read of the whole conversation, so an unsure turn stays where the session is.
SWITCH_CONFIDENCE = 0.6
# Routes of recently seen user messages, so that a conversation's earlier turns (routed again on
# every request: see Router.route) cost a lookup, and the optional classifier is asked once each.
REMEMBERED_ROUTES = 256


def scanned(text: str) -> str:
    """What the router reads of `text`: all of it, or its first and last SCAN_CHARS characters."""
    if len(text) <= 2 * SCAN_CHARS:
        return text
    return text[:SCAN_CHARS] + "\n" + text[-SCAN_CHARS:]


def fenced(text: str) -> tuple[list[str], str]:
    r"""The fenced code blocks of `text` and the prose around them (each block replaced by a space).

    A block opens at three backticks and the rest of their line, and runs to the next three
    backticks or, unclosed, to the end of the text. A scan rather than the regular expression
    ```[^\n]*\n(.*?)(?:```|\Z) it matches exactly: that one, retried at every backtick of a
    long line without a line end, takes time quadratic in the prompt."""
    blocks: list[str] = []
    prose: list[str] = []
    at = 0
    while (start := text.find(FENCE, at)) >= 0:
        newline = text.find("\n", start + len(FENCE))
        if newline < 0:  # and no later fence has a line end after it either
            break
        close = text.find(FENCE, newline + 1)
        end = len(text) if close < 0 else close
        blocks.append(text[newline + 1 : end])
        prose.append(text[at:start])
        prose.append(" ")
        at = len(text) if close < 0 else close + len(FENCE)
    prose.append(text[at:])
    return blocks, "".join(prose)


def is_code_line(line: str) -> bool:
    r"""Whether one line of prose looks like code: a keyword or a closing bracket first, `;` or `{`
    last, an arrow, or a call ending the line (`name(...)`, then at most `:` or `{`).

    The call is found by its last `)` and the `name(` after the `)` before it: the same lines as
    \w+\([^)]*\)\s*[:{]?\s*$, whose search would rescan the line from every word character."""
    if CODE_LINE_START.search(line):
        return True
    close = line.rfind(")")
    if close < 0 or not CALL_END.match(line, close + 1):
        return False
    return WORD_PAREN.search(line, line.rfind(")", 0, close) + 1, close) is not None


@dataclass(frozen=True)
class Route:
    task: Task
    tier: str
    strategy: Strategy
    confidence: float  # the chosen task's probability under the rules, 0..1
    signals: tuple[str, ...]  # what decided it, in words
    scores: dict[str, float]  # each task's probability
    stage: Literal["rules", "model"] = "rules"

    def describe(self) -> str:
        why = "; ".join(self.signals) or "no strong signal"
        return (
            f"task {self.task} -> tier {self.tier}, {self.strategy} decoding "
            f"(confidence {self.confidence:.2f}, by {self.stage}): {why}"
        )


@dataclass(frozen=True)
class RouterRules:
    """The contents of a rules file (see the module's docstring)."""

    lexicons: dict[str, tuple[str, ...]]
    weights: dict[str, dict[str, float]]  # task -> feature -> weight ("bias" included)
    tiers: dict[str, str]
    tier_fallbacks: dict[str, list[str]]  # tiers to use, in order, when a profile lacks one
    long_edit_chars: int
    long_edit_tier: str
    low_confidence: float
    feature_words: dict[str, str]
    switch_confidence: float = SWITCH_CONFIDENCE

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "RouterRules":
        try:
            rules = cls(
                lexicons={name: tuple(words) for name, words in raw["lexicons"].items()},
                weights={task: dict(w) for task, w in raw["weights"].items()},
                tiers=dict(raw["tiers"]),
                tier_fallbacks={tier: list(names) for tier, names in raw.get("tier_fallbacks", {}).items()},
                long_edit_chars=int(raw["long_edit_chars"]),
                long_edit_tier=str(raw["long_edit_tier"]),
                low_confidence=float(raw["low_confidence"]),
                feature_words=dict(raw["feature_words"]),
                switch_confidence=float(raw.get("switch_confidence", SWITCH_CONFIDENCE)),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise UserInputError(f"router rules: missing or invalid field {error}") from None
        missing = [task for task in TASKS if task not in rules.weights or task not in rules.tiers]
        if missing:
            raise UserInputError(f"router rules: no weights or tier for task(s) {', '.join(missing)}")
        return rules

    def to_dict(self) -> dict[str, Any]:
        return {
            "tiers": self.tiers,
            "tier_fallbacks": self.tier_fallbacks,
            "long_edit_chars": self.long_edit_chars,
            "long_edit_tier": self.long_edit_tier,
            "low_confidence": self.low_confidence,
            "switch_confidence": self.switch_confidence,
            "lexicons": {name: list(words) for name, words in self.lexicons.items()},
            "feature_words": self.feature_words,
            "weights": self.weights,
        }


def load_rules(path: Path | None = None) -> RouterRules:
    """The rules in `path`, else the shipped default."""
    if path is None:
        return RouterRules.from_dict(read_json("models", "router.json"))
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserInputError(f"cannot read router rules {path}: {error}") from None
    return RouterRules.from_dict(raw)


TRIE_DEPTH = 100  # longer phrases would nest groups past what the regex compiler recurses through


def _phrase_pattern(words: Sequence[str]) -> re.Pattern[str]:
    """Any of `words` as a whole word, ignoring case, the longest where several match."""
    if all(word.isascii() and len(word) <= TRIE_DEPTH for word in words):
        alternatives = _trie_pattern(words)
    else:  # case-folding outside ASCII is not a simple lower(): a flat alternation, slower
        alternatives = "|".join(sorted((re.escape(w) for w in words), key=len, reverse=True))
    return re.compile(r"(?<![\w#+])(?:" + alternatives + r")(?![\w#+])", re.IGNORECASE)


def _trie_pattern(words: Sequence[str]) -> str:
    r"""`words` as one alternation shaped as a trie (`c(?:\+\+|\#)` for "c++" and "c#").

    A flat alternation tries every word at every position of the text, so a lexicon of 200 words
    made 1 MiB of punctuation take seconds; a trie tries one branch per character. It finds the
    phrases the flat alternation sorted longest first does: under IGNORECASE an ASCII character
    and its lower case match the same text, so at most one branch can go on at each step, and a
    phrase that ends where a longer one could go on is tried after it (a greedy `?`)."""
    root: dict[str, Any] = {}
    for word in words:
        node = root
        for char in word.lower():
            node = node.setdefault(char, {})
        node[""] = {}  # a phrase ends here
    firsts = "".join(re.escape(char) for char in root if char)
    # One character class looked at first spares trying every branch where no phrase can start.
    return (f"(?=[{firsts}])" if firsts and "" not in root else "") + _node_pattern(root)


def _node_pattern(node: dict[str, Any]) -> str:
    branches = [re.escape(char) + _node_pattern(child) for char, child in node.items() if char]
    if not branches:
        return ""
    either = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    return f"(?:{either})?" if "" in node else either


class Features:
    """Turns a prompt into named numeric signals, with the words that set each one."""

    def __init__(self, rules: RouterRules) -> None:
        self._lexicons = {name: _phrase_pattern(words) for name, words in rules.lexicons.items() if words}

    def __call__(self, text: str) -> tuple[dict[str, float], dict[str, list[str]]]:
        blocks, prose = fenced(scanned(text))
        code_like = [line for line in prose.splitlines() if line.strip() and is_code_line(line)]
        code_lines = len(code_like) + sum(block.count("\n") + 1 for block in blocks)
        code_chars = sum(len(block) for block in blocks) + sum(len(line) for line in code_like)
        head = prose.strip()[:80]
        found: dict[str, list[str]] = {}
        for name, pattern in self._lexicons.items():
            found[name] = [m.group(0).lower() for m in pattern.finditer(prose)]
            found[f"{name}_lead"] = [m.group(0).lower() for m in pattern.finditer(head)]
        words = len(prose.split())
        features = {
            "code_block": 1.0 if blocks else 0.0,
            "code_given": 1.0 if blocks or code_lines >= 2 else 0.0,
            "code_lines": math.log1p(code_lines),
            "code_chars": math.log1p(code_chars) / 5,
            "inline_code": min(len(INLINE_CODE.findall(prose)), 3) / 3,
            "identifiers": min(len(IDENTIFIER.findall(prose)), 4) / 4,
            "question": 1.0 if prose.rstrip().endswith("?") or QUESTION_START.match(prose) else 0.0,
            "words": math.log1p(words) / 3,
            "commas_and": min(prose.count(",") + len(re.findall(r"\band\b", prose, re.I)), 8) / 8,
        }
        for name in self._lexicons:
            features[name] = min(len(set(found[name])), 4) / 2
            features[f"{name}_lead"] = 1.0 if found[f"{name}_lead"] else 0.0
        return features, found


def scores(rules: RouterRules, features: dict[str, float]) -> dict[str, float]:
    """Each task's probability: a softmax over the weighted sums of the signals."""
    logits = {
        task: rules.weights[task].get("bias", 0.0)
        + sum(rules.weights[task].get(name, 0.0) * value for name, value in features.items())
        for task in TASKS
    }
    top = max(logits.values())
    exp = {task: math.exp(value - top) for task, value in logits.items()}
    total = sum(exp.values())
    return {task: value / total for task, value in exp.items()}


def user_turns(messages: Sequence[Message]) -> list[str]:
    """The contents of the user messages, in order."""
    return [m.get("content", "") for m in messages if m.get("role") == "user"]


def prompt_text(prompt: str | Sequence[Message]) -> str:
    """What the router reads: the last user message (the request being answered)."""
    messages = as_messages(prompt)
    users = user_turns(messages)
    return users[-1] if users else (messages[-1].get("content", "") if messages else "")


class Router:
    """Decides routes with the rules; when they are unsure (confidence under the rules'
    `low_confidence`) and a `classifier` is given, asks it (the fast tier's model) instead."""

    def __init__(
        self,
        rules: RouterRules | None = None,
        profile: Profile | None = None,
        classifier: Callable[[str], Task | None] | None = None,
    ) -> None:
        self.rules = rules or load_rules()
        self.profile = profile
        self.classifier = classifier
        self._features = Features(self.rules)
        self._remembered: OrderedDict[str, Route] = OrderedDict()
        self._lock = threading.Lock()  # the server routes requests from several threads

    def route(self, prompt: str | Sequence[Message]) -> Route:
        """The route of the last user message; in a conversation, on the tier its earlier turns
        were on unless this turn is routed elsewhere with at least `switch_confidence`.

        The session's tier is found again from the messages themselves (each user turn routed in
        order, as the requests before this one were), so any client's conversation keeps its tier
        and its kept prompt without the engine holding sessions."""
        messages = as_messages(prompt)
        users = user_turns(messages)
        if len(users) < 2:
            return self._routed(prompt_text(messages))
        session = self._routed(users[0])
        for text in users[1:]:
            session = self._continued(session, self._routed(text))
        return session

    def _continued(self, session: Route, turn: Route) -> Route:
        """`turn`, or `turn` kept on the `session`'s tier where it is too unsure to move it."""
        decided = turn.stage == "model" or turn.confidence >= self.rules.switch_confidence
        if turn.tier == session.tier or decided:  # the fast model's answer is asked for a reason
            return turn
        strategy: Strategy = (
            "prompt_lookup" if turn.strategy == "prompt_lookup" else self._drafted(session.tier)
        )
        kept = (
            f"the conversation stays on {session.tier}: {turn.tier} at confidence "
            f"{turn.confidence:.2f} is under the {self.rules.switch_confidence:.2f} that moves it"
        )
        return replace(turn, tier=session.tier, strategy=strategy, signals=(*turn.signals, kept))

    def _routed(self, text: str) -> Route:
        """The route of one user message (remembered: see REMEMBERED_ROUTES)."""
        with self._lock:
            if (known := self._remembered.get(text)) is not None:
                self._remembered.move_to_end(text)
                return known
        routed = self._route_text(text)
        with self._lock:
            self._remembered[text] = routed
            if len(self._remembered) > REMEMBERED_ROUTES:
                self._remembered.popitem(last=False)
        return routed

    def _route_text(self, text: str) -> Route:
        features, found = self._features(text)
        probabilities = scores(self.rules, features)
        task: Task = max(TASKS, key=lambda t: probabilities[t])
        confidence = probabilities[task]
        stage: Literal["rules", "model"] = "rules"
        signals = self._signals(task, features, found)
        if self.classifier is not None and confidence < self.rules.low_confidence:
            asked = self.classifier(text)
            if asked is not None:
                if asked != task:
                    signals = (
                        f"rules were unsure ({task} at {confidence:.2f}); the fast model said {asked}",
                    )
                task, stage = asked, "model"
        tier = self.rules.tiers[task]
        code_chars = sum(len(block) for block in fenced(scanned(text))[0])
        if task == "edit" and code_chars >= self.rules.long_edit_chars:
            tier = self.rules.long_edit_tier
            signals += (f"long edit ({code_chars} characters of code) goes to {tier}",)
        tier, signals = self._in_profile(tier, signals)
        return Route(
            task, tier, self._strategy(task, tier, features), confidence, signals, probabilities, stage
        )

    def route_completion(self) -> Route:
        """The route of a raw or fill-in-the-middle completion: code to continue, so the snippet
        task's tier, decoded plainly or with the tier's draft (never prompt lookup: an infill
        repeats little of its prompt)."""
        task: Task = "snippet"
        tier, signals = self._in_profile(self.rules.tiers[task], ("a raw completion continues code",))
        strategy = self._strategy(task, tier, {"code_given": 0.0})
        return Route(task, tier, strategy, 1.0, signals, {t: float(t == task) for t in TASKS})

    def _in_profile(self, tier: str, signals: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
        """`tier`, or its stand-in where the profile has no such tier (router rules: tier_fallbacks)."""
        if self.profile is None or tier in self.profile.tiers:
            return tier, signals
        present = [t for t in self.rules.tier_fallbacks.get(tier, []) if t in self.profile.tiers]
        if not present:
            raise UserInputError(
                f"profile {self.profile.name!r} has no {tier} tier and no stand-in for it "
                "(router rules: tier_fallbacks)"
            )
        return present[0], (
            *signals,
            f"profile {self.profile.name!r} has no {tier} tier: {present[0]} stands in",
        )

    def _strategy(self, task: Task, tier: str, features: dict[str, float]) -> Strategy:
        if task == "edit" and features["code_given"]:
            return "prompt_lookup"  # the answer repeats much of the code it was given
        return self._drafted(tier)

    def _drafted(self, tier: str) -> Strategy:
        """Speculative where the profile gives `tier` a draft model, else plain."""
        if self.profile is not None and tier in self.profile.tiers and self.profile.tiers[tier].draft:
            return "speculative"
        return "plain"

    def _signals(
        self, task: Task, features: dict[str, float], found: dict[str, list[str]]
    ) -> tuple[str, ...]:
        """The signals that pushed hardest towards `task`, in words."""
        weights = self.rules.weights[task]
        pushes = sorted(
            ((weights.get(name, 0.0) * value, name) for name, value in features.items() if value),
            reverse=True,
        )
        said = []
        for push, name in pushes[:4]:
            if push <= 0.2:
                break
            words = self.rules.feature_words.get(name, name.replace("_", " "))
            evidence = sorted(set(found.get(name, [])))[:4]
            said.append(f"{words}" + (f" ({', '.join(evidence)})" if evidence else ""))
        return tuple(said)


def route(
    prompt: str | Sequence[Message], rules: RouterRules | None = None, profile: Profile | None = None
) -> Route:
    """Route one prompt with the default (or given) rules."""
    return Router(rules, profile).route(prompt)


CLASSIFY_PROMPT = (
    "Classify the request below into exactly one category and answer with that one word only.\n"
    "explain: explain code or a technical concept\n"
    "general: not about programming\n"
    "snippet: write a small, self-contained piece of code\n"
    "complex: build a multi-part program, a design or a system\n"
    "review: critique given code without rewriting it\n"
    "edit: change, fix, refactor, port or extend given code\n\n"
    "Request:\n{request}\n\nCategory:"
)


def model_classifier(generate: Callable[[str], str]) -> Callable[[str], Task | None]:
    """The optional second stage: ask a model (the fast tier's, through `generate`) for the task;
    None when its answer names no task."""

    def classify(text: str) -> Task | None:
        answer = generate(CLASSIFY_PROMPT.format(request=text[:2000])).strip().lower()
        return next((task for task in TASKS if answer.startswith(task)), None)

    return classify
