"""The paper's Figure 8b at our scale: steer a sparse-feature VLM by editing Sparse CLIP features, and measure it.

    python -m benchmarks.eval_vlm_steering                       # outputs/embedded/vlm on outputs/embedded/sparse
    python -m benchmarks.eval_vlm_steering --vlm DIR --sets fashion_mnist --num_images 100

Protocol (the paper's): held-out images whose label names a concept (corpus TEST split; Fashion-MNIST classes
by default, the closest thing here to ImageNet classes, and scikit-learn digits). For each image, the VLM
answers "What's in the picture?" from the image's Sparse CLIP activations; then the TRUE label is
suppressed (its top-K features through the Sparse CLIP text tower set to 0) and a RANDOM OTHER label is
boosted (its top-K features set to SS), for K in {1, 2, 4} and SS in {1, 2, 4}, and the VLM answers again.
SS is in units of the image's own largest activation (`strength_scale="max"`, the Space's convention; the
paper's absolute scale is specific to its model), or raw values with `--strength_scale absolute`.

Measured, before vs after, averaged over images:
- SBERT cosine (all-MiniLM-L6-v2 through sentence-transformers) of the answer to the true label and to the
  boosted label;
- "steered": the answer is closer (SBERT) to the boosted label than to the true label;
- label word rates: answers that contain the true label / the boosted label as a word;
- corruption rate: an answer is corrupted when it is (a) unfinished (no <eos> within the token budget),
  (b) abnormally long (more words than the 99th percentile of the training captions' word counts),
  or (c) degenerate (empty, a word repeated 3+ times in a row, or a two-word phrase repeated 3+ times).
Also suppression alone (no boost), K in {1, 2, 4, 16, 64}: the rate at which the true label word disappears, and a
control (the same number of features of another label suppressed instead).

Writes `results.json`, `results.md` (table + which of the paper's findings hold) and `steering.png`.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from modeling_sparse_clip.constants import DATA_CACHE_DIR, FEATURE_CACHE_DIR

logger = logging.getLogger(__name__)

RESULTS_DIR = Path(__file__).parent / "results" / "vlm_steering"
CONCEPT_SOURCES = ("fashion_mnist", "sklearn_digits")


@dataclass
class SteeringEvalArguments:
    vlm: str = field(default="outputs/embedded/vlm", metadata={"help": "the trained sparse-feature VLM folder"})
    sparse_clip_model: str | None = field(default=None, metadata={"help": "default: the Sparse CLIP recorded in the VLM's config"})
    sets: list[str] = field(default_factory=lambda: ["fashion_mnist", "sklearn_digits"], metadata={"help": f"test-split sources among {CONCEPT_SOURCES}"})
    num_images: int = field(default=200, metadata={"help": "held-out images per set (balanced over labels)"})
    top_ks: list[int] = field(default_factory=lambda: [1, 2, 4])
    strengths: list[float] = field(default_factory=lambda: [1.0, 2.0, 4.0])
    suppress_top_ks: list[int] = field(default_factory=lambda: [1, 2, 4, 16, 64], metadata={"help": "K of the suppression-only sweep"})
    strength_scale: str = field(default="max", metadata={"help": "max (SS x the image's largest activation) | absolute"})
    seed: int = field(default=0)
    data_cache_dir: str = field(default=str(DATA_CACHE_DIR))
    feature_cache_dir: str = field(default=str(FEATURE_CACHE_DIR), metadata={"help": "where the encoder caches the image tower's outputs"})
    output_dir: str = field(default=str(RESULTS_DIR))


# -- the concept each held-out image names --------------------------------------------------------
def concept_of(source: str, label: str) -> str:
    """The label as it is written in the image's captions ("a photo of a ankle boot." -> "ankle boot"; digits -> "7")."""
    if source not in CONCEPT_SOURCES:
        raise ValueError(f"No concept labels for source {source!r}; use one of {CONCEPT_SOURCES}.")
    return label.lower()


def mentions(text: str, word: str) -> bool:
    """`word` occurs in `text` as a whole word/phrase ("shirt" is not in "t-shirt/top")."""
    return re.search(rf"(?<![\w/-]){re.escape(word.lower())}(?![\w/-])", text.lower()) is not None


def select_concept_images(test_split, sources: list[str], num_images: int, seed: int):
    """{source: (rows of the test split, their concept words)}, balanced over labels, deterministic."""
    columns = test_split.select_columns(["source", "label"]).to_dict()
    rng = np.random.default_rng(seed)
    selected = {}
    for source in sources:
        by_label: dict[str, list[int]] = {}
        for i, (s, label) in enumerate(zip(columns["source"], columns["label"])):
            if s == source and label:
                by_label.setdefault(label, []).append(i)
        if not by_label:
            raise ValueError(f"The test split has no labelled {source} images: is the source installed (`make sources`)?")
        per_label = max(1, num_images // len(by_label))
        rows = []
        for label in sorted(by_label):
            pool = by_label[label]
            rows += [int(r) for r in rng.choice(pool, size=min(per_label, len(pool)), replace=False)]
        rows.sort()
        selected[source] = (rows, [concept_of(source, columns["label"][r]) for r in rows])
    return selected


# -- corruption ------------------------------------------------------------------------------------
def word_count_limit(train_captions: list[list[str]], percentile: float = 99.0) -> int:
    """"Abnormally long" = more words than this percentile of the training answers (first captions)."""
    counts = [len(caps[0].split()) for caps in train_captions if caps]
    return int(np.ceil(np.percentile(counts, percentile)))


def is_degenerate(text: str) -> bool:
    words = text.split()
    if not words:
        return True
    if any(words[i] == words[i + 1] == words[i + 2] for i in range(len(words) - 2)):
        return True
    bigrams = [tuple(words[i : i + 2]) for i in range(len(words) - 1)]
    return any(bigrams[i] == bigrams[i + 2] == bigrams[i + 4] for i in range(len(bigrams) - 4))


def corrupted(text: str, finished: bool, max_words: int) -> bool:
    return (not finished) or len(text.split()) > max_words or is_degenerate(text)


# -- measurement -----------------------------------------------------------------------------------
class SBERT:
    """all-MiniLM-L6-v2 through sentence-transformers (offline, from the PyPI package), memoised."""

    def __init__(self):
        from sentence_transformers import SentenceTransformer

        from modeling_sparse_clip.pretrained_towers import minilm_path

        self.model = SentenceTransformer(minilm_path(), device="cpu")
        self.cache: dict[str, np.ndarray] = {}

    def embed(self, texts: list[str]) -> np.ndarray:
        missing = sorted({t for t in texts if t not in self.cache})
        if missing:
            vectors = self.model.encode(missing, batch_size=128, normalize_embeddings=True, show_progress_bar=False)
            self.cache.update(zip(missing, vectors))
        return np.stack([self.cache[t] for t in texts])

    def cosine(self, a: list[str], b: list[str]) -> np.ndarray:
        return np.sum(self.embed(a) * self.embed(b), axis=1)


def summarize(answers, finished, truths, targets, sbert: SBERT, max_words: int) -> dict:
    sim_true = sbert.cosine(answers, truths)
    sim_target = sbert.cosine(answers, targets)
    return {
        "sim_true": float(sim_true.mean()),
        "sim_boost": float(sim_target.mean()),
        "steered": float(np.mean(sim_target > sim_true)),
        "true_word": float(np.mean([mentions(a, t) for a, t in zip(answers, truths)])),
        "boost_word": float(np.mean([mentions(a, t) for a, t in zip(answers, targets)])),
        "corruption": float(np.mean([corrupted(a, f, max_words) for a, f in zip(answers, finished)])),
    }


def evaluate_set(captioner, encoder, activations: np.ndarray, truths: list[str], args: SteeringEvalArguments, sbert: SBERT, max_words: int) -> dict:
    from modeling_sparse_clip.interpret import SteeringEdit, concept_features, steer

    labels = sorted(set(truths))
    rng = np.random.default_rng(args.seed)
    targets = [str(rng.choice([l for l in labels if l != t])) for t in truths]
    top = {w: [f for f, _ in concept_features(encoder, w, max(args.top_ks + args.suppress_top_ks))] for w in labels}
    before = captioner.generate(activations)
    base = summarize(before.texts, before.finished, truths, targets, sbert, max_words)
    result = {"images": len(truths), "labels": labels, "features_of": top, "before": base, "configs": [], "suppress_only": [],
              "examples": []}
    had = [mentions(b, t) for b, t in zip(before.texts, truths)]
    for k in args.suppress_top_ks:
        # control: the same number of features of another label (the boost target) suppressed instead
        after = captioner.generate(np.stack([steer(a, SteeringEdit(suppress=top[t][:k])) for a, t in zip(activations, truths)]))
        control = captioner.generate(np.stack([steer(a, SteeringEdit(suppress=top[g][:k])) for a, g in zip(activations, targets)]))
        removed = [h and not mentions(a, t) for h, a, t in zip(had, after.texts, truths)]
        removed_control = [h and not mentions(a, t) for h, a, t in zip(had, control.texts, truths)]
        result["suppress_only"].append({
            "top_k": k, "captions_naming_label_before": int(sum(had)),
            "label_removed": float(sum(removed) / max(1, sum(had))),
            "label_removed_control": float(sum(removed_control) / max(1, sum(had))),
            "after": summarize(after.texts, after.finished, truths, targets, sbert, max_words),
        })
    for k in args.top_ks:
        for ss in args.strengths:
            edits = [SteeringEdit(suppress=top[t][:k], boost=top[g][:k], strength=ss, strength_scale=args.strength_scale)
                     for t, g in zip(truths, targets)]
            after = captioner.generate(np.stack([steer(a, e) for a, e in zip(activations, edits)]))
            result["configs"].append({"top_k": k, "strength": ss, **summarize(after.texts, after.finished, truths, targets, sbert, max_words)})
            if k == 2 and ss == 2.0 or (k == max(args.top_ks) and ss == max(args.strengths)):
                result["examples"] += [{"top_k": k, "strength": ss, "true": t, "boost": g, "before": b, "after": a}
                                       for t, g, b, a in list(zip(truths, targets, before.texts, after.texts))[:: max(1, len(truths) // 6)]]
    return result


# -- the paper's claims, checked on the numbers ------------------------------------------------------
def findings(result: dict) -> list[dict]:
    base, configs = result["before"], result["configs"]
    by = {(c["top_k"], c["strength"]): c for c in configs}
    moved = [c for c in configs if c["sim_true"] < base["sim_true"] and c["sim_boost"] > base["sim_boost"]]
    small = [by[k, 2.0] for k in (1, 2) if (k, 2.0) in by]
    gentle = [c for c in configs if c["top_k"] == min(c2["top_k"] for c2 in configs) and c["strength"] == min(c2["strength"] for c2 in configs)]
    strongest = by.get((max(c["top_k"] for c in configs), max(c["strength"] for c in configs)))
    out = [{
        "claim": "steering lowers the answer's similarity to the true label and raises it to the boosted label",
        "evidence": f"{len(moved)} of {len(configs)} (K, SS) settings move both ways",
        "holds": len(moved) == len(configs),
    }]
    if small:
        rate = float(np.mean([c["steered"] for c in small]))
        rates = ", ".join("K={}: {:.0f}%".format(c["top_k"], 100 * c["steered"]) for c in small)
        out.append({
            "claim": "SS = 2 on 1-2 features steers reliably",
            "evidence": f"answers closer to the boosted than to the true label: {rates} (before steering: {100 * base['steered']:.0f}%)",
            "holds": rate >= 0.5,
        })
    if strongest and gentle:
        g = gentle[0]
        out.append({
            "claim": "large SS on many features corrupts the outputs",
            "evidence": f"corruption {100 * strongest['corruption']:.1f}% at K={strongest['top_k']}, SS={strongest['strength']:g} vs "
                        f"{100 * g['corruption']:.1f}% at K={g['top_k']}, SS={g['strength']:g} ({100 * base['corruption']:.1f}% unsteered)",
            "holds": strongest["corruption"] > g["corruption"] + 0.02,
        })
    return out


def markdown(report: dict) -> str:
    lines = [f"# VLM steering (paper Figure 8b at our scale)\n",
             f"VLM `{report['meta']['vlm']}` on Sparse CLIP `{report['meta']['sparse_clip_model']}`; SS scale: "
             f"`{report['meta']['strength_scale']}`; corruption: unfinished, > {report['meta']['max_words']} words "
             f"(99th percentile of training answers) or degenerate; {report['meta']['seconds']:.0f} s.\n"]
    for name, res in report["sets"].items():
        b = res["before"]
        lines += [f"## {name} ({res['images']} held-out test images, {len(res['labels'])} labels)\n",
                  "Suppress the true label, boost a random other label. SBERT cosine of the answer to each label "
                  "(before -> after); steered = answer closer to the boosted label than to the true one.\n",
                  "| K | SS | sim(true) | sim(boost) | steered % | true word % | boost word % | corrupted % |",
                  "|---|---|---|---|---|---|---|---|",
                  f"| - | unsteered | {b['sim_true']:.3f} | {b['sim_boost']:.3f} | {100 * b['steered']:.1f} | {100 * b['true_word']:.1f} | "
                  f"{100 * b['boost_word']:.1f} | {100 * b['corruption']:.1f} |"]
        for c in res["configs"]:
            lines.append(f"| {c['top_k']} | {c['strength']:g} | {b['sim_true']:.3f} -> {c['sim_true']:.3f} | {b['sim_boost']:.3f} -> {c['sim_boost']:.3f} | "
                         f"{100 * c['steered']:.1f} | {100 * c['true_word']:.1f} | {100 * c['boost_word']:.1f} | {100 * c['corruption']:.1f} |")
        lines += ["", "Suppression alone (no boost): share of the answers naming the true label that no longer do; control = the "
                  "same number of features of another label suppressed instead.\n",
                  "| K | answers naming the label before | label removed % | control: removed % | sim(true) after | corrupted % |", "|---|---|---|---|---|---|"]
        for s in res["suppress_only"]:
            lines.append(f"| {s['top_k']} | {s['captions_naming_label_before']} | {100 * s['label_removed']:.1f} | {100 * s['label_removed_control']:.1f} | "
                         f"{s['after']['sim_true']:.3f} | {100 * s['after']['corruption']:.1f} |")
        lines += ["", "Paper findings, checked on these numbers:\n"]
        lines += [f"- {'HOLDS' if f['holds'] else 'does NOT hold'}: {f['claim']} ({f['evidence']})." for f in res["findings"]]
        lines += ["", "Examples (true / boosted label: before -> after):\n"]
        lines += [f"- K={e['top_k']}, SS={e['strength']:g}, {e['true']} / {e['boost']}: \"{e['before']}\" -> \"{e['after']}\"" for e in res["examples"]]
        lines.append("")
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(report["sets"])
    fig, axes = plt.subplots(len(sets), 2, figsize=(11, 3.6 * len(sets)), squeeze=False)
    for row, name in enumerate(sets):
        res = report["sets"][name]
        base = res["before"]
        ks = sorted({c["top_k"] for c in res["configs"]})
        colours = plt.cm.viridis(np.linspace(0.1, 0.8, len(ks)))
        ax_sim, ax_bad = axes[row]
        for k, colour in zip(ks, colours):
            cs = sorted((c for c in res["configs"] if c["top_k"] == k), key=lambda c: c["strength"])
            ss = [c["strength"] for c in cs]
            ax_sim.plot(ss, [c["sim_boost"] for c in cs], "-o", color=colour, label=f"boosted label, K={k}")
            ax_sim.plot(ss, [c["sim_true"] for c in cs], "--s", color=colour, label=f"true label, K={k}")
            ax_bad.plot(ss, [100 * c["corruption"] for c in cs], "-o", color=colour, label=f"K={k}")
        ax_sim.axhline(base["sim_true"], color="black", ls="--", lw=1, label="true label, unsteered")
        ax_sim.axhline(base["sim_boost"], color="grey", ls=":", lw=1, label="boosted label, unsteered")
        ax_sim.set(title=f"{name}: SBERT similarity of the answer", xlabel="steering strength SS", ylabel="cosine", xticks=sorted({c['strength'] for c in res['configs']}))
        ax_sim.legend(fontsize=7, ncol=2)
        ax_bad.axhline(100 * base["corruption"], color="black", ls="--", lw=1, label="unsteered")
        ax_bad.set_ylim(0, max(5.0, 105 * max(c["corruption"] for c in res["configs"])))
        ax_bad.set(title=f"{name}: corrupted answers", xlabel="steering strength SS", ylabel="%", xticks=sorted({c['strength'] for c in res['configs']}))
        ax_bad.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: SteeringEvalArguments) -> dict:
    from modeling_sparse_clip.data import build_corpus
    from modeling_sparse_clip.encoding import SparseCLIPEncoder
    from modeling_sparse_clip.vlm import SparseFeatureCaptioner, SparseFeatureVLMConfig
    from modeling_sparse_clip.vlm.feature_cache import cached_image_activations

    started = time.time()
    if not (Path(args.vlm) / "config.json").exists():
        raise FileNotFoundError(f"No VLM at {args.vlm}: train it with `sparse-clip-train-vlm vlm_embedded`.")
    sparse_clip = args.sparse_clip_model or SparseFeatureVLMConfig.from_pretrained(args.vlm).sparse_clip_model
    if not sparse_clip or not Path(sparse_clip).is_dir():
        raise FileNotFoundError(f"The Sparse CLIP of this VLM ({sparse_clip}) is not here: pass --sparse_clip_model.")
    encoder = SparseCLIPEncoder.from_pretrained(sparse_clip, cache_dir=args.feature_cache_dir)
    captioner = SparseFeatureCaptioner.from_pretrained(args.vlm, encoder=encoder, batch_size=256)
    corpus = build_corpus(cache_dir=args.data_cache_dir)
    max_words = word_count_limit(corpus["train"].select_columns(["text"]).to_dict()["text"])
    sbert = SBERT()
    report = {"sets": {}}
    for source, (rows, truths) in select_concept_images(corpus["test"], args.sets, args.num_images, args.seed).items():
        subset = corpus["test"].select(rows)
        activations = cached_image_activations(encoder, subset).to_dense().numpy()
        result = evaluate_set(captioner, encoder, activations, truths, args, sbert, max_words)
        result["findings"] = findings(result)
        report["sets"][source] = result
    report["meta"] = {**asdict(args), "sparse_clip_model": captioner.vlm.config.sparse_clip_model, "max_words": max_words,
                      "seconds": time.time() - started}
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2))
    (out / "results.md").write_text(markdown(report))
    plot(report, out / "steering.png")
    return report


def main(argv=None):
    from transformers import HfArgumentParser

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    (args,) = HfArgumentParser(SteeringEvalArguments).parse_args_into_dataclasses(args=argv)
    report = run(args)
    print(markdown(report))


if __name__ == "__main__":
    main()
