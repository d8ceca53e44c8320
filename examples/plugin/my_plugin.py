"""An mmrag-rft plugin: a reward, a dataset, a backend and a command (README, Extending)."""
import json
import re

import typer

from mmrag_rft.data.datasets import Dataset, Reader, register_dataset
from mmrag_rft.data.jsonl import open_text
from mmrag_rft.data.schema import Candidate, DataError, Sample
from mmrag_rft.models.loading import register_engine
from mmrag_rft.rewards import completion_text, register_reward


# 1. A reward: a function in TRL's reward signature, registered for stage 2 under a name.
def brevity(completions, **kwargs):
    return [1.0 if len(completion_text(c)) <= 300 else 0.0 for c in completions]


register_reward("brevity", 2, lambda config: brevity)


# 2. A dataset: its loader, how its files are recognised, and which metrics score it.
def load_quiz(path, *, skip_bad=False, report=None, limit=None):
    with open_text(path) as f:
        for n, line in enumerate(f, 1):
            row = json.loads(line)
            if "quiz_q" not in row:
                raise DataError("missing field", file=str(path), row=n, field="quiz_q")
            yield Sample(qid=str(row["id"]), question=row["quiz_q"], answers=[row["a"]], dataset="quiz",
                         candidates=[Candidate(id=f"{row['id']}-{i}", modality="text", text=t)
                                     for i, t in enumerate(row["facts"])],
                         gold_ids=[f"{row['id']}-{row['gold']}"])
            if limit and n >= limit:
                return


register_dataset(Dataset("quiz", "quiz rows: quiz_q, facts, gold, a", metric_set="webqa", answer_metric="f1",
                         readers=(Reader("quiz", load_quiz, detect=lambda obj: "quiz_q" in obj),)))


# 3. A backend: anything with PolicyBackend's two methods, registered as an engine.
class OverlapBackend:
    """Judges evidence by word overlap with the question and answers with the best piece's last word."""

    supports_images = False

    def __init__(self, spec):
        self.model_id = f"overlap:{spec}"

    @staticmethod
    def _parts(prompt):
        text = prompt.messages[-1]["content"]
        return text if isinstance(text, str) else " ".join(p.get("text", "") for p in text)

    def score_yes_no(self, prompts, reuse_prefix=True):
        out = []
        for p in prompts:
            question, _, evidence = self._parts(p).lower().partition("evidence")
            q, ev = set(re.findall(r"\w+", question)), set(re.findall(r"\w+", evidence))
            out.append(min(1.0, 2 * len(q & ev) / max(1, len(q))))
        return out

    def generate(self, prompts, *, max_new_tokens, temperature=0.0, top_p=1.0, num_return_sequences=1, seed=None):
        outs = []
        for p in prompts:
            last = self._parts(p).split()[-1].strip(".") if self._parts(p).split() else ""
            outs.append(["</think><rank>[1]</rank><answer>" + last + "</answer>"] * num_return_sequences)
        return outs


register_engine("overlap", lambda spec, kw: OverlapBackend(spec), model_folders=False)


# 4. A command: `register(app)` adds it to `mmrag`.
def register(app: typer.Typer) -> None:
    @app.command("quiz-count")
    def quiz_count(path: str) -> None:
        """Count the questions in a quiz file."""
        from mmrag_rft.data.loaders import load_samples

        print(f"{sum(1 for _ in load_samples(path))} quiz questions")
