"""Makes the known-item retrieval example for bert_jax.search from the bundled corpora.

    python examples/search/make_example.py [--seed=1234] [--out=examples/search]

Writes, deterministically for a seed:
  documents.jsonl  300 documents {"id", "text"}: 150 runs of consecutive Austen
                   paragraphs (one chapter each) and 150 runs of consecutive KJV
                   verses (one book each), no two overlapping. Lengths are mixed
                   on purpose: over a third exceed 200 model tokens, so
                   chunking decides which part of a document a query meets.
  queries.jsonl    100 queries {"id", "query", "relevant": [doc id], "sentence"}:
                   a clause of 8-30 words that occurs in exactly one
                   document, paraphrased mechanically: punctuation and case
                   dropped, archaic words modernised from a fixed table (thou ->
                   you, spake -> spoke, ...), half of the words found in a small
                   synonym table swapped (said -> replied, house -> home, ...),
                   ~30% of the words dropped, a few neighbouring words swapped.
                   "sentence" keeps the original.

Data: data/austen.txt.gz (one chapter per document, one paragraph per line) and
data/kjv.txt.gz (one book per document, one verse per line); see data/README.md.
Then:
    python -m bert_jax.search index --model=MODEL --documents=examples/search/documents.jsonl --index=/tmp/ex
    python -m bert_jax.search evaluate --index=/tmp/ex --queries=examples/search/queries.jsonl --k=10
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "..", "data")
# Chapters per novel in austen.txt.gz, in file order (Northanger Abbey's first document is
# the author's "Advertisement", numbered 0 here).
NOVELS = [("sense", 50, 1), ("pride", 61, 1), ("mansfield", 48, 1), ("emma", 55, 1), ("northanger", 32, 0),
          ("persuasion", 24, 1)]
BOOKS = ("genesis exodus leviticus numbers deuteronomy joshua judges ruth 1samuel 2samuel 1kings 2kings "
         "1chronicles 2chronicles ezra nehemiah esther job psalms proverbs ecclesiastes songofsolomon isaiah "
         "jeremiah lamentations ezekiel daniel hosea joel amos obadiah jonah micah nahum habakkuk zephaniah "
         "haggai zechariah malachi matthew mark luke john acts romans 1corinthians 2corinthians galatians "
         "ephesians philippians colossians 1thessalonians 2thessalonians 1timothy 2timothy titus philemon "
         "hebrews james 1peter 2peter 1john 2john 3john jude revelation").split()
DOCS_PER_CORPUS = 150
NUM_QUERIES = 100
# Target words per document: short, medium (still one 200-token chunk), long (2-4 chunks).
# Words run ~1.35 MiniLM tokens each here, and a run overshoots its target by part of a line.
LENGTHS = [((40, 90), 0.40), ((90, 120), 0.35), ((220, 420), 0.25)]
DROP_RATE = 0.3
# Archaic forms a modern reader would type otherwise: the lexical gap a paraphrase opens.
MODERN = {"thou": "you", "thee": "you", "thy": "your", "thine": "your", "ye": "you", "hath": "has",
          "hast": "have", "doth": "does", "dost": "do", "art": "are", "wilt": "will", "shalt": "shall",
          "saith": "says", "spake": "spoke", "unto": "to", "thereof": "of it", "wherefore": "why",
          "behold": "look", "begat": "fathered", "whither": "where", "hither": "here", "thence": "from there",
          "yea": "yes", "nay": "no", "brethren": "brothers", "kine": "cows", "raiment": "clothing",
          "sojourn": "stay", "smote": "struck", "slew": "killed"}
# Everyday synonyms for frequent content words of both corpora, each swapped with probability
# SYNONYM_RATE: a query rarely repeats every word of what it looks for.
SYNONYMS = {"said": "replied", "came": "arrived", "went": "left", "house": "home", "king": "ruler",
            "lord": "master", "children": "offspring", "son": "boy", "sons": "boys", "daughter": "girl",
            "daughters": "girls", "land": "country", "people": "folk", "city": "town", "heart": "soul",
            "love": "affection", "told": "informed", "brought": "carried", "gave": "handed", "took": "seized",
            "thought": "believed", "happy": "glad", "young": "youthful", "lady": "woman", "friend": "companion",
            "friends": "companions", "sister": "sibling", "brother": "sibling", "wife": "spouse", "evil": "wicked",
            "morning": "dawn", "evening": "dusk", "night": "darkness", "dear": "beloved", "speak": "talk",
            "hear": "listen", "heard": "listened", "saw": "noticed", "see": "notice", "looked": "glanced",
            "began": "started", "answered": "responded", "cried": "exclaimed", "walked": "strolled",
            "room": "chamber", "letter": "note", "fear": "dread", "strong": "mighty", "servant": "helper",
            "holy": "sacred", "feelings": "emotions", "happiness": "joy", "pleasure": "delight",
            "family": "household", "soon": "shortly", "certainly": "surely", "perhaps": "maybe",
            "indeed": "truly", "really": "truly", "always": "forever", "great": "big", "little": "small",
            "good": "fine", "man": "fellow", "men": "fellows", "woman": "female", "mother": "mum",
            "father": "dad", "world": "earth", "life": "existence", "eat": "dine", "gold": "riches"}
SYNONYM_RATE = 0.5
SENTENCE = re.compile(r"(?<=[.!?;:])\s+")


def read_corpus(name: str) -> list[list[str]]:
  """Documents of a bundled corpus, each a list of lines (paragraphs or verses)."""
  with gzip.open(os.path.join(DATA, name), "rt", encoding="utf-8") as f:
    return [doc.split("\n") for doc in f.read().strip("\n").split("\n\n")]


def target_words(rng: random.Random) -> int:
  ranges, weights = zip(*LENGTHS)
  low, high = rng.choices(ranges, weights)[0]
  return rng.randint(low, high)


def take_run(rng: random.Random, lines: list[str], used: list[tuple[int, int]]) -> tuple[int, int] | None:
  """[start, end) of consecutive lines reaching a target length, overlapping no used run."""
  goal = target_words(rng)
  for _ in range(50):
    start = rng.randrange(len(lines))
    end, words = start, 0
    while end < len(lines) and words < goal:
      words += len(lines[end].split())
      end += 1
    if words > 600:  # one huge paragraph: too far past any target
      continue
    if all(end <= s or start >= e for s, e in used):
      return start, end
  return None


def austen_documents(rng: random.Random) -> list[dict]:
  chapters = read_corpus("austen.txt.gz")
  names = [(novel, first + i) for novel, count, first in NOVELS for i in range(count)]
  assert len(names) == len(chapters), (len(names), len(chapters))
  docs = []
  for index in sorted(rng.sample(range(len(chapters)), DOCS_PER_CORPUS)):
    run = take_run(rng, chapters[index], [])
    if run is None:
      continue
    novel, chapter = names[index]
    start, end = run
    docs.append({"id": f"{novel}-ch{chapter:02d}-p{start + 1}", "text": " ".join(chapters[index][start:end])})
  return docs


def kjv_documents(rng: random.Random) -> list[dict]:
  books = read_corpus("kjv.txt.gz")
  assert len(books) == len(BOOKS)
  # Books drawn in proportion to their verses, so Genesis gives more documents than Jude.
  used: dict[int, list[tuple[int, int]]] = {}
  docs = []
  while len(docs) < DOCS_PER_CORPUS:
    book = rng.choices(range(len(books)), [len(b) for b in books])[0]
    run = take_run(rng, books[book], used.setdefault(book, []))
    if run is None:
      continue
    used[book].append(run)
    start, end = run
    docs.append({"id": f"{BOOKS[book]}-v{start + 1}-{end}", "text": " ".join(books[book][start:end]),
                 "_order": (book, start)})
  docs.sort(key=lambda d: d.pop("_order"))
  return docs


def paraphrase(rng: random.Random, sentence: str) -> str:
  """Lower case, no punctuation, archaic words modernised, some synonyms, ~30% of the words dropped,
  a few neighbours swapped."""
  words = [w for w in re.findall(r"[\w'-]+", sentence.lower()) if w.strip("'-")]
  words = [SYNONYMS[w] if w in SYNONYMS and rng.random() < SYNONYM_RATE else w for w in words]
  words = " ".join(MODERN.get(w, w) for w in words).split()
  kept = [w for w in words if rng.random() >= DROP_RATE]
  if len(kept) < 5:
    kept = words[:]
    rng.shuffle(kept)
    kept = kept[:max(5, round(len(words) * (1 - DROP_RATE)))]
  for _ in range(max(1, len(kept) // 6)):
    i = rng.randrange(len(kept) - 1)
    kept[i], kept[i + 1] = kept[i + 1], kept[i]
  return " ".join(kept)


def make_queries(rng: random.Random, docs: list[dict]) -> list[dict]:
  queries = []
  for doc in rng.sample(docs, len(docs)):
    if len(queries) == NUM_QUERIES:
      break
    sentences = [s for s in SENTENCE.split(doc["text"]) if 8 <= len(s.split()) <= 30]
    # Only a sentence found in no other document has exactly one right answer.
    sentences = [s for s in sentences if sum(s in other["text"] for other in docs) == 1]
    if not sentences:
      continue
    sentence = rng.choice(sentences)
    queries.append({"id": f"q{len(queries) + 1:03d}", "query": paraphrase(rng, sentence), "relevant": [doc["id"]],
                    "sentence": sentence})
  return queries


def write_jsonl(path: str, records: list[dict]) -> None:
  with open(path, "w", encoding="utf-8") as f:
    for record in records:
      f.write(json.dumps(record, ensure_ascii=False) + "\n")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--seed", type=int, default=1234)
  parser.add_argument("--out", default=HERE)
  args = parser.parse_args()
  rng = random.Random(args.seed)
  docs = austen_documents(rng) + kjv_documents(rng)
  assert len({d["id"] for d in docs}) == len(docs)
  queries = make_queries(rng, docs)
  write_jsonl(os.path.join(args.out, "documents.jsonl"), docs)
  write_jsonl(os.path.join(args.out, "queries.jsonl"), queries)
  words = sorted(len(d["text"].split()) for d in docs)
  print(f"{len(docs)} documents ({words[0]}-{words[-1]} words, median {words[len(words) // 2]}), "
        f"{len(queries)} queries -> {args.out}")


if __name__ == "__main__":
  main()
